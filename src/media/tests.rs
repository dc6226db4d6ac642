//! Sans-IO tests of the media core: routers fed datagrams and time by the test, two of
//! them back to back for real ICE, DTLS and SRTP with no sockets.

use std::time::{Duration, Instant};

use str0m::format::{Codec, PayloadParams};
use str0m::media::{KeyframeRequestKind, MediaKind};
use tokio::sync::mpsc;

use super::codecs::publish_codecs;
use super::direct::source_codecs;
use super::router::{MediaError, MediaEvent, Role, Router, SourcePacket};
use crate::testkit::exchange_datagrams;
use crate::testkit::stamp::{read_intact, stamped_packet};

#[test]
fn packets_are_piped_to_threads_until_their_last_consumer_leaves() {
    let mut router = Router::new(vec!["127.0.0.1:5000".parse().unwrap()], Duration::from_secs(1));
    let now = Instant::now();
    router.add_source(7);
    let send = |router: &mut Router, seq: u64| {
        router.inject(7, &SourcePacket::synthetic(MediaKind::Audio, seq, vec![1u8; 20], now), now);
        router.poll_piped().map(|p| (p.thread, p.key, p.packet.seq)).collect::<Vec<_>>()
    };
    assert_eq!(send(&mut router, 1), []);
    router.open_pipe(7, 1);
    router.open_pipe(7, 1);
    router.open_pipe(7, 2);
    router.open_pipe(8, 1); // an unknown stream: ignored
    assert_eq!(send(&mut router, 2), [(1, 7, 2), (2, 7, 2)]);
    router.close_pipe(7, 1);
    router.close_pipe(7, 2);
    assert_eq!(send(&mut router, 3), [(1, 7, 3)]);
    router.close_pipe(7, 1);
    assert_eq!(send(&mut router, 4), []);
}

#[test]
fn keyframe_requests_within_the_interval_are_merged_and_sent_late_not_dropped() {
    let mut router = Router::new(vec!["127.0.0.1:5000".parse().unwrap()], Duration::from_secs(1));
    let t0 = Instant::now();
    let ms = |n| t0 + Duration::from_millis(n);
    router.add_source(7);
    let requested = |router: &mut Router, at: Instant| {
        router.handle_timeout(at);
        std::iter::from_fn(|| router.poll_event()).filter(|e| *e == MediaEvent::KeyframeRequested { key: 7 }).count()
    };
    router.request_keyframe(7, KeyframeRequestKind::Pli, t0);
    assert_eq!(requested(&mut router, t0), 1);
    // Two more players join within the interval: one request, when the interval ends.
    router.request_keyframe(7, KeyframeRequestKind::Pli, ms(50));
    router.request_keyframe(7, KeyframeRequestKind::Fir, ms(80));
    assert_eq!(requested(&mut router, ms(100)), 0);
    assert_eq!(router.next_timeout(), Some(ms(200)));
    assert_eq!(requested(&mut router, ms(200)), 1);
    assert_eq!(requested(&mut router, ms(500)), 0, "a merged request is sent once");
    router.request_keyframe(7, KeyframeRequestKind::Pli, ms(600));
    assert_eq!(requested(&mut router, ms(600)), 1);
}

#[test]
fn garbage_datagrams_are_counted_not_fatal() {
    let mut router = Router::new(vec!["127.0.0.1:40000".parse().unwrap()], Duration::from_secs(1));
    let now = Instant::now();
    for junk in [&b""[..], b"\xff\xff\xff", &[0u8; 1500][..], b"\x16\xfe\xfd hello"] {
        router.handle_datagram(now, "127.0.0.1:5000".parse().unwrap(), "127.0.0.1:40000".parse().unwrap(), junk);
    }
    assert_eq!(router.stats().datagrams_dropped, 4);
}

#[test]
fn answer_rejects_unparsable_sdp_and_unknown_streams() {
    let mut router = Router::new(vec!["127.0.0.1:40000".parse().unwrap()], Duration::from_secs(1));
    let now = Instant::now();
    assert!(matches!(router.answer(1, Role::Producer(1), "not sdp", now), Err(MediaError::BadSdp(_))));
    router.add_source(7);
    let offer = router.offer(2, Role::Consumer(7), "127.0.0.1:40001".parse().unwrap(), now).unwrap();
    assert!(matches!(router.answer(3, Role::Consumer(99), &offer, now), Err(MediaError::StreamNotFound)));
    assert_eq!(router.stats().peers, 1);
}

#[test]
fn an_offer_giving_one_payload_type_to_two_codecs_is_answered_without_the_second() {
    // Found by fuzzing: a BUNDLE whose audio section maps 97 (RTX for Opus) while the
    // video section uses 97 as VP8's RTX. str0m claimed 97 twice and panicked, taking the
    // media thread down with every peer on it. Now VP8 goes without RTX.
    let chrome = include_str!("../../tests/data/sdp/chrome-play.sdp");
    let offer = chrome.replacen("m=audio 9 UDP/TLS/RTP/SAVPF 111 ", "m=audio 9 UDP/TLS/RTP/SAVPF 111 97 ", 1).replacen(
        "a=rtpmap:111 opus/48000/2\r\n",
        "a=rtpmap:111 opus/48000/2\r\na=rtpmap:97 rtx/48000\r\na=fmtp:97 apt=111\r\n",
        1,
    );
    assert!(offer.contains("a=fmtp:97 apt=111") && offer.contains("a=fmtp:97 apt=96"), "offer built");
    let mut router = Router::new(vec![SERVER.parse().unwrap()], Duration::from_secs(1));
    router.add_source(7);
    let answer = router.answer(1, Role::Consumer(7), &offer, Instant::now()).expect("an answer, not a refusal");
    let video = &answer[answer.find("m=video").expect("video section")..];
    assert!(video.contains("a=rtpmap:96 VP8/90000"), "VP8 kept: {video}");
    assert!(!video.contains("apt=96"), "VP8 without RTX: {video}");
}

// ---- two routers wired back to back, no sockets: the sans-IO payoff ----------

const SERVER: &str = "127.0.0.1:40000";

/// Deliver every queued datagram to the other router and advance time 1 ms per
/// round, `rounds` times; returns the events each side reported.
fn pump(a: &mut Router, b: &mut Router, now: &mut Instant, rounds: usize) -> (Vec<MediaEvent>, Vec<MediaEvent>) {
    let (mut ea, mut eb) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        exchange_datagrams(a, b, *now);
        ea.extend(std::iter::from_fn(|| a.poll_event()));
        eb.extend(std::iter::from_fn(|| b.poll_event()));
        *now += Duration::from_millis(1);
        a.handle_timeout(*now);
        b.handle_timeout(*now);
    }
    (ea, eb)
}

fn stamped(kind: MediaKind, seq: u64, now: Instant) -> SourcePacket {
    stamped_packet(kind, seq, if kind == MediaKind::Video { 1000 } else { 100 }, now)
}

/// A client router publishing source 1 and playing it back into stream 2 through a
/// server router (ICE, DTLS and SRTP all real, only the network is a loop).
fn publish_and_play() -> (Router, Router, Instant, mpsc::UnboundedReceiver<SourcePacket>) {
    publish_and_play_numbered(None, None)
}

/// Opus and VP8 (with RTX) renumbered, as another WebRTC stack would number them.
fn numbered(opus: u8, vp8: u8, vp8_rtx: u8) -> Vec<PayloadParams> {
    source_codecs()
        .iter()
        .map(|p| match p.spec().codec {
            Codec::Opus => PayloadParams::new(opus.into(), None, p.spec()),
            _ => PayloadParams::new(vp8.into(), Some(vp8_rtx.into()), p.spec()),
        })
        .collect()
}

/// [`publish_and_play`] with the publisher's and the player's offers numbering their
/// codecs as given (`None`: str0m's defaults, which are the server's too).
fn publish_and_play_numbered(
    publisher: Option<Vec<PayloadParams>>,
    player: Option<Vec<PayloadParams>>,
) -> (Router, Router, Instant, mpsc::UnboundedReceiver<SourcePacket>) {
    let mut now = Instant::now();
    let mut client = Router::new(vec!["127.0.0.1:50000".parse().unwrap()], Duration::from_secs(5));
    let mut server = Router::new(vec![SERVER.parse().unwrap()], Duration::from_secs(5));
    client.add_source(1);
    let codecs = publisher.unwrap_or_else(|| client.consumer_codecs(1).unwrap());
    let offer = client.offer_codecs(10, Role::Consumer(1), "127.0.0.1:40001".parse().unwrap(), codecs, now).unwrap();
    let answer = server.answer(20, Role::Producer(100), &offer, now).unwrap();
    client.apply_answer(10, &answer, now).unwrap();
    let (_, server_events) = pump(&mut client, &mut server, &mut now, 50);
    assert!(server_events.contains(&MediaEvent::Connected { peer: 20 }), "publisher never connected");

    let tap = {
        let (tx, rx) = mpsc::unbounded_channel();
        client.tap(2, tx);
        rx
    };
    let codecs = player.unwrap_or_else(|| publish_codecs(None));
    let offer = client.offer_codecs(11, Role::Producer(2), "127.0.0.1:40002".parse().unwrap(), codecs, now).unwrap();
    let answer = server.answer(21, Role::Consumer(100), &offer, now).unwrap();
    client.apply_answer(11, &answer, now).unwrap();
    let (_, server_events) = pump(&mut client, &mut server, &mut now, 50);
    assert!(server_events.contains(&MediaEvent::Connected { peer: 21 }), "player never connected");
    (client, server, now, tap)
}

fn send_and_receive(
    client: &mut Router,
    server: &mut Router,
    now: &mut Instant,
    tap: &mut mpsc::UnboundedReceiver<SourcePacket>,
    seqs: std::ops::Range<u64>,
) -> usize {
    let mut intact = 0;
    for seq in seqs.clone() {
        client.inject(1, &stamped(MediaKind::Video, seq, *now), *now);
        client.inject(1, &stamped(MediaKind::Audio, seq, *now), *now);
        pump(client, server, now, 2);
    }
    pump(client, server, now, 20);
    while let Ok(p) = tap.try_recv() {
        let stamp = read_intact(&p.payload).expect("payload changed in transit");
        assert_eq!(stamp.kind, p.kind);
        intact += 1;
    }
    intact
}

#[test]
fn forwards_between_routers_without_sockets() {
    let (mut client, mut server, mut now, mut tap) = publish_and_play();
    let intact = send_and_receive(&mut client, &mut server, &mut now, &mut tap, 1..101);
    assert!(intact >= 195, "{intact} of 200 packets arrived intact");
    assert!(server.stats().packets_forwarded >= 195);
}

#[test]
fn players_numbering_codecs_unlike_the_publisher_get_every_packet() {
    // Publisher as aiortc numbers (Opus 111, VP8 112/113), player as Firefox (109, 120/124):
    // a matcher keyed by payload type numbers finds no common codec here.
    let (mut client, mut server, mut now, mut tap) =
        publish_and_play_numbered(Some(numbered(111, 112, 113)), Some(numbered(109, 120, 124)));
    let intact = send_and_receive(&mut client, &mut server, &mut now, &mut tap, 1..101);
    assert!(intact >= 195, "{intact} of 200 packets arrived intact");
    // And the other way round, with numbers that collide with the server's defaults.
    let (mut client, mut server, mut now, mut tap) =
        publish_and_play_numbered(Some(numbered(96, 111, 97)), Some(numbered(100, 109, 101)));
    let intact = send_and_receive(&mut client, &mut server, &mut now, &mut tap, 1..101);
    assert!(intact >= 195, "{intact} of 200 packets arrived intact");
}

#[test]
fn garbage_from_a_connected_peer_is_survived() {
    let (mut client, mut server, mut now, mut tap) = publish_and_play();
    // Datagrams that look like STUN, DTLS, RTP and RTCP from the publisher's own
    // address, random otherwise (a fixed-seed xorshift: the same every run).
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let source = "127.0.0.1:40001".parse().unwrap();
    for i in 0..20_000 {
        let len = (next() % 1500) as usize;
        let mut d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if let Some(first) = d.first_mut() {
            *first = [0x00, 0x01, 0x16, 0x17, 0x80, 0x90, 0x81][i % 7];
        }
        if d.len() > 8 && i % 3 == 0 {
            d[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        }
        server.handle_datagram(now, source, SERVER.parse().unwrap(), &d);
    }
    pump(&mut client, &mut server, &mut now, 5);
    let intact = send_and_receive(&mut client, &mut server, &mut now, &mut tap, 1000..1100);
    assert!(intact >= 195, "after the garbage only {intact} of 200 packets arrived");
}

/// A client whose remote answers `setup:active` (making it the DTLS server, as
/// webrtc-rs based servers answer) starts its ICE checks at once and connects.
#[test]
fn a_client_made_dtls_server_by_the_answer_still_checks_and_connects() {
    let mut now = Instant::now();
    let mut client = Router::new(vec!["127.0.0.1:50000".parse().unwrap()], Duration::from_secs(5));
    let mut server = Router::new(vec![SERVER.parse().unwrap()], Duration::from_secs(5));
    client.add_source(1);
    let codecs = client.consumer_codecs(1).unwrap();
    let offer = client.offer_codecs(10, Role::Consumer(1), "127.0.0.1:40001".parse().unwrap(), codecs, now).unwrap();
    // Offered as `passive`, the server takes the active role and answers so.
    let answer =
        server.answer(20, Role::Producer(100), &offer.replace("a=setup:actpass", "a=setup:passive"), now).unwrap();
    assert!(answer.contains("a=setup:active"), "{answer}");
    client.apply_answer(10, &answer, now).unwrap();
    assert!(client.poll_transmit().is_some(), "no ICE check went out after the answer");
    let (client_events, server_events) = pump(&mut client, &mut server, &mut now, 500);
    assert!(client_events.contains(&MediaEvent::Connected { peer: 10 }), "{client_events:?} {server_events:?}");
    assert!(server_events.contains(&MediaEvent::Connected { peer: 20 }), "{server_events:?}");
}

/// The engine ends with its last handle: its threads stop and its ports are free again
/// (an engine that outlived its handles kept its peers' ICE alive for good).
#[test]
fn the_engine_stops_when_its_last_handle_goes() {
    let lo = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    let options = super::engine::Options { threads: 2, ..Default::default() };
    let (media, _events) = super::engine::start(&[(lo, lo)], 0..=0, options).unwrap();
    let ports: Vec<u16> = media.addrs().iter().map(|a| a.port()).collect();
    let second = media.clone();
    drop(media);
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(10);
    for port in ports {
        while crate::media::udp::bind(std::net::SocketAddr::new(lo, port)).is_err() {
            assert!(Instant::now() < deadline, "port {port} still held after the last handle went");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

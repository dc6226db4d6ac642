//! NACK/RTX across a lossy hop: the server advertises an address on which a UDP proxy
//! listens; the proxy drops every 7th RTP datagram from the publisher to the server (odd, so that both
//! the alternating video and audio packets are hit).
//! The server NACKs, the publisher retransmits from its RTX cache, and a player still
//! receives every video packet, bytes intact.

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hopcast::wcs::protocol::StreamStatus;
use str0m::media::MediaKind;

/// Forwards between clients (on `front`) and `server`, one back socket per client, and
/// drops every `nth` original RTP datagram going to the server; with `drop_rtx` it also
/// drops every retransmission (payload type `RTX_PT`), as a control.
struct LossyProxy {
    running: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
}

impl LossyProxy {
    fn start(front: SocketAddr, server: SocketAddr, nth: u64, drop_rtx: bool) -> LossyProxy {
        let running = Arc::new(AtomicBool::new(true));
        let dropped = Arc::new(AtomicU64::new(0));
        let front = Arc::new(UdpSocket::bind(front).expect("bind proxy front"));
        front.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let (run, drop_count) = (running.clone(), dropped.clone());
        std::thread::spawn(move || {
            let mut backs: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
            let mut rtp_seen = 0u64;
            let mut buf = [0u8; 2048];
            while run.load(Ordering::Relaxed) {
                if let Ok((n, client)) = front.recv_from(&mut buf) {
                    let back = backs.entry(client).or_insert_with(|| {
                        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
                        back.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
                        let (back2, front2, run2) = (back.clone(), front.clone(), run.clone());
                        std::thread::spawn(move || {
                            let mut buf = [0u8; 2048];
                            while run2.load(Ordering::Relaxed) {
                                if let Ok(n) = back2.recv(&mut buf) {
                                    let _ = front2.send_to(&buf[..n], client);
                                }
                            }
                        });
                        back
                    });
                    // RTP (not RTCP: payload types 200-207 follow the marker bit there).
                    let is_rtp = n > 12 && (128..192).contains(&buf[0]) && !(200..=207).contains(&buf[1]);
                    let rtx = is_rtp && buf[1] & 0x7f == RTX_PT;
                    // Originals: every nth is lost. Retransmissions pass (or, as the
                    // control, are all lost): one loss each, as str0m NACKs a packet once.
                    if rtx && drop_rtx {
                        drop_count.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if is_rtp && !rtx {
                        rtp_seen += 1;
                        if rtp_seen.is_multiple_of(nth) {
                            drop_count.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                    let _ = back.send_to(&buf[..n], server);
                }
            }
        });
        LossyProxy { running, dropped }
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.running.store(false, Ordering::Relaxed);
    }
}

/// str0m's default RTX payload type for VP8, which the synthetic publisher offers.
const RTX_PT: u8 = 97;

/// Publish through the proxy, play directly, send 300 video packets: the sequence
/// numbers (of the first 280) of the video packets that never reached the player.
async fn missing_video_packets(drop_rtx: bool) -> Vec<u64> {
    // The server binds 127.0.0.2 and advertises 127.0.0.3, where the proxy listens.
    let port = UdpSocket::bind("127.0.0.2:0").unwrap().local_addr().unwrap().port();
    let port_arg = port.to_string();
    let ports =
        ["--ws-port", "0", "--wss-port", "0", "--http-port", "0", "--https-port", "0", "--media-port", &port_arg];
    let server = Server::start_with_ports(&ports, &["--set", "ip_local=127.0.0.2", "--set", "ip=127.0.0.3"]);
    let proxy = LossyProxy::start(
        SocketAddr::from(([127, 0, 0, 3], port)),
        SocketAddr::from(([127, 0, 0, 2], port)),
        7,
        drop_rtx,
    );

    let cm = client_media();
    let media = &cm.media;
    let (source, _session, _published) = publish_source(&server, media, "lossy").await;
    let viewer = connect(&server).await;
    let sink = media.next_id();
    let mut tap = media.tap(sink);
    let mut player = viewer.play(media, "lossy", sink).await.unwrap();
    player.wait_for(StreamStatus::Playing, Duration::from_secs(10)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    send_packets(media, source, 1, 300).await;
    let got = collect(&mut tap, Duration::from_secs(2)).await;
    verify_intact(&got);
    let mut video: Vec<u64> = got
        .iter()
        .filter(|p| p.kind == MediaKind::Video)
        .map(|p| u64::from_be_bytes(p.payload[1..9].try_into().unwrap()))
        .collect();
    video.sort_unstable();
    video.dedup();
    let dropped = proxy.dropped.load(Ordering::Relaxed);
    assert!(dropped >= 25, "the proxy dropped only {dropped} packets");
    // The NACKs the server sent the publisher show in /metrics and in the stream's
    // WCS metrics (str0m reports them once a second: the 2 s above cover it).
    let (_, text) = http(server.http, "GET", "/metrics", None);
    let nacks =
        text.lines().find_map(|l| l.strip_prefix("hopcast_media_nacks_sent_total ")?.trim().parse::<f64>().ok());
    assert!(nacks >= Some(1.0), "no NACKs counted in /metrics:\n{text}");
    let find = r#"{"name":"lossy","published":true,"display":["metrics"]}"#;
    let (_, body) = http(server.http, "POST", "/rest-api/stream/find", Some(find));
    assert!(json(&body)[0]["metrics"]["VIDEO_NACK"].as_u64() >= Some(1), "{body}");
    // A loss is noticed when later packets arrive: leave the tail out of the check.
    (1..=280).filter(|s| video.binary_search(s).is_err()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_packets_are_retransmitted_on_request() {
    let missing = missing_video_packets(false).await;
    assert!(missing.is_empty(), "{} video packets never arrived despite NACK/RTX: {missing:?}", missing.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_retransmissions_the_losses_stay() {
    // The control: the same loss with every RTX packet dropped too must show gaps,
    // or the test above would pass without any retransmission.
    let missing = missing_video_packets(true).await;
    assert!(missing.len() >= 5, "only {} video packets missing without RTX", missing.len());
}

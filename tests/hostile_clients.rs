//! Hostile clients, each attack at a size that fits CI, against real server processes:
//! costly and broken SDP offers while media flows, half-sent requests and silent
//! sockets, clients that do not read, oversized data, cross-site REST calls, relays as
//! port scanners, and a remote server that hangs.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use hopcast::wcs::client::SignalingClient;
use hopcast::wcs::protocol::{ClientMessage, ServerMessage, StreamInfo, StreamRequest, StreamStatus};
use str0m::media::MediaKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

fn recorded_offer() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sdp/chrome-publish.sdp")).unwrap()
}

/// A valid browser offer padded with `a=ssrc` lines (what made str0m's parser take
/// seconds) up to `lines` lines.
fn padded_offer(lines: usize) -> String {
    let mut sdp = recorded_offer().trim_end().to_string();
    for i in sdp.lines().count()..lines {
        sdp.push_str(&format!("\r\na=ssrc:{} cname:padding{i}", 1000 + i));
    }
    sdp + "\r\n"
}

/// Send a publish request and return the server's first word on it: its status, or
/// PENDING when the answer (`setRemoteSDP`) comes first.
async fn publish_status(client: &SignalingClient, name: &str, sdp: String) -> StreamInfo {
    let id = uuid::Uuid::new_v4().to_string();
    let mut rx = client.subscribe(&id);
    let req = StreamRequest { media_session_id: id, name: name.into(), published: true, sdp, ..Default::default() };
    client.send(ClientMessage::PublishStream(req.clone()));
    tokio::time::timeout(WAIT, async {
        loop {
            match rx.recv().await {
                Some(ServerMessage::StreamStatus(s)) => return s,
                Some(ServerMessage::SetRemoteSdp { .. }) => {
                    return StreamInfo::for_request(&client.session_id, &req, true);
                }
                Some(_) => continue,
                None => panic!("connection closed"),
            }
        }
    })
    .await
    .expect("no status")
}

async fn tcp_from(source: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Whether the server closed `stream` within `within` (EOF or reset on read).
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue, // e.g. a 408 answer before the close
            }
        }
    };
    tokio::time::timeout(within, read).await.is_ok()
}

/// A raw HTTP/1.1 exchange: returns the whole response (head and body).
async fn raw_http(port: u16, request: &str) -> String {
    let mut stream = TcpStream::connect(addr(port)).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response)).await.unwrap().unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn costly_and_broken_offers_neither_stall_media_nor_leak_internals() {
    // One media thread: the offers' peers and the live stream's share it.
    let server = Server::start(&["--set", "media.threads=1"]);
    let ClientMedia { media, .. } = client_media();
    let (source, _publisher_session, _publisher) = publish_source(&server, &media, "live").await;
    let session = connect(&server).await;
    let sink = media.next_id();
    let mut tap = media.tap(sink);
    let mut player = session.play(&media, "live", sink).await.unwrap();
    player.wait_for(StreamStatus::Playing, WAIT).await.unwrap();

    // The attack: offers of 20,000 lines (before the limits, each one held the media
    // thread for about a second), offers right at the limits, and unparsable ones.
    let attacker = connect(&server).await;
    let huge = padded_offer(20_000);
    let many = format!("{}{}", recorded_offer(), "a=x:1\r\n".repeat(2000));
    let attack = tokio::spawn(async move {
        let mut reasons = Vec::new();
        for i in 0..3 {
            reasons.push(publish_status(&attacker, &format!("huge{i}"), huge.clone()).await);
            reasons.push(publish_status(&attacker, &format!("many{i}"), many.clone()).await);
            reasons.push(publish_status(&attacker, &format!("at-limit{i}"), padded_offer(1000)).await);
            let garbage = format!("v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\nm=video 9 BOGUS/{i}\r\n\u{1}\u{7f}%%%");
            reasons.push(publish_status(&attacker, &format!("garbage{i}"), garbage).await);
        }
        reasons
    });
    // Meanwhile the publisher sends and the player must get every packet, promptly.
    let mut sent = HashMap::new();
    let mut seq = 1000;
    while !attack.is_finished() || sent.len() < 400 {
        sent.insert(seq, Instant::now());
        media.inject(source, packet(MediaKind::Video, seq, 1000));
        seq += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let reasons = attack.await.unwrap();
    let got = collect(&mut tap, Duration::from_secs(1)).await;
    let (video, _) = verify_intact(&got);
    assert!(video >= sent.len() * 95 / 100, "the player got {video} of {} packets during the attack", sent.len());
    let seq_of = |p: &hopcast::media::SourcePacket| hopcast::testkit::stamp::read_stamp(&p.payload).map(|s| s.seq);
    let worst = got.iter().filter_map(|p| Some(p.arrival.duration_since(*sent.get(&seq_of(p)?)?))).max();
    // Before the fix a 20,000-line offer stalled forwarding for about a second each.
    assert!(worst.unwrap() < Duration::from_millis(300), "a packet took {worst:?} through the server");

    for s in &reasons {
        let info = s.info.clone().unwrap_or_default();
        assert!(!info.contains("0x"), "internal address in a reason: {info}");
        match s.name.trim_end_matches(char::is_numeric) {
            "huge" => assert!(s.status == StreamStatus::Failed && info.ends_with("bytes (limit 65536)"), "{info}"),
            "many" => {
                assert!(s.status == StreamStatus::Failed && info.ends_with(" lines (limit 1000)"), "{info}");
            }
            "at-limit" => assert_eq!(s.status, StreamStatus::Pending, "an offer at the limits is answered: {info}"),
            _ => assert_eq!(
                (s.status, info.as_str()),
                (StreamStatus::Failed, "Invalid SDP: not a valid session description")
            ),
        }
    }
    let refused = &stats(&server)["refused"];
    assert_eq!(refused["sdp"], 6, "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_are_capped_and_timed_out_while_others_get_in() {
    let server = Server::start(&["--set", "limits.connections_per_ip=20", "--set", "limits.handshake_timeout_ms=1000"]);
    // 30 connections from one address, each with half a request head: 20 are held,
    // 10 refused at once.
    let mut held = Vec::new();
    for _ in 0..30 {
        let mut stream = tcp_from("127.0.0.2", addr(server.http)).await;
        let _ = stream.write_all(b"GET /rest-api/stats HTTP/1.1\r\nHost: x\r\n").await;
        held.push(stream);
    }
    // Other clients get in meanwhile: REST, signaling, TLS.
    let (code, _) = http(server.http, "GET", "/rest-api/stats", None);
    assert_eq!(code, 200);
    let session = connect(&server).await;
    assert!(!session.session_id.is_empty());
    let refused = &stats(&server)["refused"];
    assert!(refused["connections"].as_u64().unwrap() >= 10, "{refused}");

    // Each silent phase ends at the deadline: request heads, TLS handshakes, and a
    // WebSocket that never sends `connection`.
    let mut tls = tcp_from("127.0.0.3", addr(server.wss)).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url()).await.unwrap();
    let started = Instant::now();
    for stream in held.iter_mut() {
        assert!(closed_by_server(stream, Duration::from_secs(5)).await, "a half-sent request stayed open");
    }
    assert!(closed_by_server(&mut tls, Duration::from_secs(5)).await, "a silent TLS connection stayed open");
    let close = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Close(frame) = m {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    });
    assert_eq!(close.await.expect("the silent WebSocket stayed open"), Some(1008));
    assert!(started.elapsed() < Duration::from_secs(5));
    eventually("the held connections are released", || stats(&server)["connections"].as_u64().unwrap() <= 2).await;
    // The established session was not touched.
    assert!(!session.is_closed());
    let refused = &stats(&server)["refused"];
    assert!(refused["handshakes"].as_u64().unwrap() >= 1, "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_dropped_and_others_stay() {
    // Keep-alive bound: 4 x 500 ms.
    let server = Server::start(&[
        "--set",
        "keep_alive.server_interval=500",
        "--set",
        "keep_alive.probes=4",
        "--set",
        "limits.session_queue=64",
    ]);
    let bystander = connect(&server).await;

    // A WebSocket client with a tiny receive buffer that asks for 15 KB answers
    // (`connection` echoes its data) and never reads one.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr(server.ws)).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(server.ws_url(), stream).await.unwrap();
    let (mut sink, _never_read) = ws.split();
    let data = "x".repeat(15_000);
    let hello = format!(r#"{{"message":"connection","data":[{{"appKey":"defaultApp","custom":{{"pad":"{data}"}}}}]}}"#);
    let flood = tokio::spawn(async move {
        for _ in 0..2000 {
            let send = sink.send(Message::Text(hello.clone().into()));
            match tokio::time::timeout(Duration::from_secs(1), send).await {
                Ok(Ok(())) => {}
                _ => break, // the server stopped reading us, or closed
            }
        }
    });
    eventually("the slow reader is dropped", || stats(&server)["sessions"] == 1).await;
    flood.abort();
    let refused = &stats(&server)["refused"];
    assert!(refused["slowReaders"].as_u64().unwrap() >= 1, "{refused}");
    assert!(!bystander.is_closed(), "a well-behaved client was dropped too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_data_and_too_many_connecting_peers_are_refused_with_reasons() {
    let server = Server::start(&["--set", "limits.connecting_per_ip=3"]);

    // Connection data over limits.custom_size: a fail warning, then the close.
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url()).await.unwrap();
    let big = format!(
        r#"{{"message":"connection","data":[{{"appKey":"defaultApp","custom":{{"pad":"{}"}}}}]}}"#,
        "y".repeat(20_000)
    );
    ws.send(Message::Text(big.into())).await.unwrap();
    let mut fail = None;
    while let Some(Ok(m)) = tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
        match m {
            Message::Text(t) => {
                if let Ok(ServerMessage::Fail(f)) = ServerMessage::decode(t.as_str()) {
                    fail = Some(f.info);
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    let fail = fail.expect("no fail warning");
    assert!(fail.starts_with("Connection data too large: ") && fail.ends_with("(limit 16384)"), "{fail}");

    let client = connect(&server).await;
    let s = publish_status(&client, &"n".repeat(600), recorded_offer()).await;
    assert_eq!(s.status, StreamStatus::Failed);
    assert_eq!(s.info.as_deref(), Some("Failed by error: stream name or mediaSessionId too long (limit 512 bytes)"));
    let s = publish_status(&client, "wide", format!("{}a=x:{}\r\n", recorded_offer(), "z".repeat(70_000))).await;
    assert!(
        s.info.as_deref().unwrap().starts_with("Invalid SDP: ")
            && s.info.as_deref().unwrap().ends_with("(limit 65536)")
    );

    // Peers that never connect (nobody does ICE for these offers): three sessions of
    // one address hold three, the fourth is refused.
    let mut sessions = Vec::new();
    for i in 0..4 {
        let session = connect(&server).await;
        let s = publish_status(&session, &format!("pending{i}"), recorded_offer()).await;
        let expected = if i < 3 { StreamStatus::Pending } else { StreamStatus::Failed };
        assert_eq!(s.status, expected, "offer {i}: {:?}", s.info);
        if i == 3 {
            assert_eq!(s.info.as_deref(), Some(hopcast::state::registry::TOO_MANY_PENDING_FROM_ADDRESS));
        }
        sessions.push(session);
    }
    let refused = &stats(&server)["refused"];
    assert_eq!((refused["connectionData"].as_u64(), refused["names"].as_u64()), (Some(1), Some(1)), "{refused}");
    assert_eq!((refused["sdp"].as_u64(), refused["connecting"].as_u64()), (Some(1), Some(1)), "{refused}");

    // Listings do not hand out other clients' data.
    let (code, body) = http(server.http, "GET", "/rest-api/connection/find_all", None);
    assert_eq!(code, 200);
    assert!(!body.contains("custom") && body.contains("appKey"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_posts_are_refused_and_cors_follows_the_allow_list() {
    let server = Server::start(&["--set", "rest.cors_origins=https://ok.example"]);
    let post = |content_type: &str| {
        let body = r#"{"mediaSessionId":"x"}"#;
        format!(
            "POST /rest-api/stream/terminate HTTP/1.1\r\nHost: h\r\nOrigin: https://evil.example\r\n\
             Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    // What a page on another site can send without a preflight: refused before any work.
    for simple in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
        let response = raw_http(server.http, &post(simple)).await;
        assert!(response.starts_with("HTTP/1.1 415"), "{simple}: {response}");
        assert!(response.contains(r#"{"error":"Content-Type must be application/json"}"#), "{response}");
    }
    // JSON goes through (and this id does not exist).
    assert!(raw_http(server.http, &post("application/json; charset=utf-8")).await.starts_with("HTTP/1.1 404"));

    let preflight = |origin: &str| {
        format!(
            "OPTIONS /rest-api/pull/push HTTP/1.1\r\nHost: h\r\nOrigin: {origin}\r\n\
             Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n"
        )
    };
    let ok = raw_http(server.http, &preflight("https://ok.example")).await.to_ascii_lowercase();
    assert!(ok.contains("access-control-allow-origin: https://ok.example"), "{ok}");
    let evil = raw_http(server.http, &preflight("https://evil.example")).await.to_ascii_lowercase();
    assert!(!evil.contains("access-control-allow-origin"), "{evil}");
    assert!(!ok.contains("allow-credentials") && !evil.contains("allow-credentials"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_are_capped_and_do_not_tell_what_a_target_answered() {
    let s2 = Server::start(&[]);
    let s1 = Server::start(&["--set", "limits.relays=2", "--set", "limits.relays_per_stream=1"]);
    let ClientMedia { media, .. } = client_media();
    let (_a, _sa, _pa) = publish_source(&s1, &media, "a").await;
    let (_b, _sb, _pb) = publish_source(&s1, &media, "b").await;
    let relay = |local: &str, remote: &str, uri: &str| {
        let body = format!(r#"{{"uri":"{uri}","localStreamName":"{local}","remoteStreamName":"{remote}"}}"#);
        let (code, text) = http(s1.http, "POST", "/rest-api/pull/push", Some(&body));
        (code, json(&text))
    };
    assert_eq!(relay("a", "a1", &s2.ws_url()).0, 200);
    let (code, body) = relay("a", "a2", &s2.ws_url());
    assert_eq!(
        (code, body["error"].as_str().unwrap()),
        (429, "Relay limit reached: 1 push relays of 'a' (limits.relays_per_stream)")
    );
    assert_eq!(relay("b", "b1", &s2.ws_url()).0, 200);
    let (code, body) = relay("b", "b2", "ws://127.0.0.1:9/");
    assert_eq!((code, body["error"].as_str().unwrap()), (429, "Relay limit reached: 2 relays (limits.relays)"));
    assert_eq!(stats(&s1)["refused"]["relays"], 2);

    // A closed port, a port that speaks HTTP but not WebSocket there, and a TLS port
    // answering plain text: one and the same answer.
    let s3 = Server::start(&[]);
    let (_c, _sc, _pc) = publish_source(&s3, &media, "c").await;
    let targets = [
        "ws://127.0.0.1:9/".to_string(),
        format!("ws://127.0.0.1:{}/rest-api/stats", s2.http),
        format!("ws://127.0.0.1:{}/", s2.wss),
    ];
    for (i, uri) in targets.iter().enumerate() {
        let body = format!(r#"{{"uri":"{uri}","localStreamName":"c","remoteStreamName":"t{i}"}}"#);
        let (code, text) = http(s3.http, "POST", "/rest-api/pull/push", Some(&body));
        assert_eq!(code, 500, "{uri}: {text}");
        assert_eq!(json(&text)["error"], "Failed to connect to origin stream: cannot reach the remote server", "{uri}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_remote_fails_its_relay_within_the_bound_and_the_relay_heals() {
    let s2 = Server::start(&[]);
    let s1 = Server::start(&["--set", "relay.reconnect_max_ms=500"]);
    let ClientMedia { media, .. } = client_media();
    let (_source, _session, _publisher) = publish_source(&s1, &media, "cam").await;
    let body = format!(r#"{{"uri":"{}","localStreamName":"cam","remoteStreamName":"far"}}"#, s2.ws_url());
    let (code, text) = http(s1.http, "POST", "/rest-api/pull/push", Some(&body));
    assert_eq!(code, 200, "{text}");
    let status = |s: &Server| {
        let (code, body) = http(s.http, "GET", "/rest-api/pull/find_all", None);
        (code == 200).then(|| json(&body)[0]["status"].as_str().unwrap_or_default().to_string())
    };

    // Stopped, not dead: its sockets stay open and say nothing.
    struct Resume(u32);
    impl Drop for Resume {
        fn drop(&mut self) {
            unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
        }
    }
    let stopped = Resume(s2.pid());
    assert!(hopcast::testkit::process::stop_process(s2.pid()), "server 2 did not stop");
    let started = Instant::now();
    eventually("the relay reports the hung remote", || status(&s1).as_deref() == Some("FAILED")).await;
    let took = started.elapsed();
    // README: a silent remote is lost after 10 s of silence (about 12 s in all). Before,
    // the relay stayed PUBLISHING for 25 s.
    assert!(took < Duration::from_secs(16), "FAILED after {took:?}");
    drop(stopped);
    eventually("the relay heals", || status(&s1).as_deref() == Some("PUBLISHING")).await;
}

/// Garbage datagrams at the rate one client core can send them, at the media port, from
/// many addresses: shaped like STUN, DTLS, RTP and RTCP, and random. They are counted
/// and dropped; a player keeps receiving the stream intact while they arrive, and the
/// server keeps no state for any of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_at_line_rate_do_not_stop_media() {
    let server = Server::start(&[]);
    let cm = client_media();
    let (source, _session, _published) = publish_source(&server, &cm.media, "cam").await;
    let viewer = connect(&server).await;
    let sink = cm.media.next_id();
    let mut tap = cm.media.tap(sink);
    let mut player = viewer.play(&cm.media, "cam", sink).await.unwrap();
    player.wait_for(StreamStatus::Playing, WAIT).await.unwrap();
    let peers = media_peers(&server);
    let dropped_before = stats(&server)["media"]["datagramsDropped"].as_u64().unwrap();

    let target = server.media;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // 32 senders on distinct loopback addresses and ports.
            let sockets: Vec<std::net::UdpSocket> = (0..32)
                .map(|i| std::net::UdpSocket::bind(format!("127.0.{}.{}:0", 1 + i / 8, 2 + i % 8)).unwrap())
                .collect();
            let (mut sent, mut x) = (0u64, 0x2545_f491_4f6c_dd1du64);
            let mut datagram = [0u8; 1200];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for b in datagram.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
                // First bytes as STUN (0-3), DTLS (20-63), RTP/RTCP (128-191), or random.
                datagram[0] = [0x00, 0x01, 22, 23, 0x80, 0x81, 0xc8, datagram[0]][(x >> 8) as usize % 8];
                let len = 20 + (x >> 16) as usize % 1180;
                let _ = sockets[sent as usize % sockets.len()].send_to(&datagram[..len], target);
                sent += 1;
            }
            sent
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_packets(&cm.media, source, 1, 200).await;
    let got = collect(&mut tap, Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = flood.join().unwrap();
    let (video, audio) = verify_intact(&got);
    let dropped = stats(&server)["media"]["datagramsDropped"].as_u64().unwrap() - dropped_before;
    println!("{sent} garbage datagrams sent, {dropped} counted as dropped; player got {video} video, {audio} audio of 200 each");
    assert!(sent > 20_000, "the flood was too small to mean anything: {sent}");
    assert!(dropped > sent / 4, "garbage not counted: {dropped} of {sent}");
    assert!(video >= 180 && audio >= 180, "media starved by garbage: video {video}, audio {audio} of 200");
    assert_eq!(media_peers(&server), peers, "garbage made the server hold peers");
    // Still serving new sessions.
    assert_plays(&server, &cm.media, "cam", source, 1000).await;
}

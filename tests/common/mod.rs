//! Test harness: real hopcast server processes on loopback, a client-side media engine,
//! synthetic RTP, and a tiny HTTP client for the REST API.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hopcast::media::{MediaEvent, MediaHandle, SourcePacket, StreamKey};
use hopcast::testkit::process::{ServerProcess, ANY_PORTS};
use hopcast::testkit::stamp::{read_intact, stamped_packet};
use hopcast::wcs::client::SignalingClient;
use str0m::media::MediaKind;
use tokio::sync::mpsc;

pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A hopcast process (killed and reaped on drop), logging to target/tmp/server-logs.
pub struct Server(ServerProcess);

impl std::ops::Deref for Server {
    type Target = ServerProcess;
    fn deref(&self) -> &ServerProcess {
        &self.0
    }
}

impl std::ops::DerefMut for Server {
    fn deref_mut(&mut self) -> &mut ServerProcess {
        &mut self.0
    }
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        Self::start_with_ports(&ANY_PORTS, extra)
    }

    pub fn start_with_ports(ports: &[&str], extra: &[&str]) -> Server {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("server-logs");
        let args: Vec<&str> = ports.iter().chain(extra).copied().collect();
        let binary = PathBuf::from(env!("CARGO_BIN_EXE_hopcast"));
        Server(ServerProcess::start_in(&binary, &args, &dir, "hopcast=debug,info").unwrap())
    }
}

/// The client side: a media engine of our own (like a relay agent or load generator).
pub struct ClientMedia {
    pub media: MediaHandle,
    pub events: mpsc::UnboundedReceiver<MediaEvent>,
}

pub fn client_media() -> ClientMedia {
    let (media, events) = hopcast::testkit::client_media();
    ClientMedia { media, events }
}

pub async fn connect(server: &Server) -> Arc<SignalingClient> {
    SignalingClient::connect(&server.ws_url(), None).await.expect("connect")
}

pub fn packet(kind: MediaKind, seq: u64, len: usize) -> SourcePacket {
    stamped_packet(kind, seq, len, Instant::now())
}

/// Inject `count` video and audio packets, 2 ms apart.
pub async fn send_packets(media: &MediaHandle, key: StreamKey, first: u64, count: u64) {
    for seq in first..first + count {
        media.inject(key, packet(MediaKind::Video, seq, 1000));
        media.inject(key, packet(MediaKind::Audio, seq, 120));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Collect what a tap receives for `within`.
pub async fn collect(tap: &mut mpsc::UnboundedReceiver<SourcePacket>, within: Duration) -> Vec<SourcePacket> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Some(p)) = tokio::time::timeout_at(deadline, tap.recv()).await {
        got.push(p);
    }
    got
}

/// Check received packets' stamps and bytes; returns (video, audio) counts.
pub fn verify_intact(got: &[SourcePacket]) -> (usize, usize) {
    let (mut video, mut audio) = (0, 0);
    for p in got {
        let stamp = read_intact(&p.payload).expect("payload bytes changed in transit");
        assert_eq!(stamp.kind, p.kind, "packet arrived on the wrong track");
        if stamp.kind == MediaKind::Video {
            video += 1
        } else {
            audio += 1
        }
    }
    (video, audio)
}

/// Minimal HTTP/1.1 request: returns (status, body).
pub fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let (status, body) = hopcast::testkit::process::http_request(port, method, path, body);
    assert_ne!(status, 0, "HTTP request failed: {body}");
    (status, body)
}

pub fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// A CA, and a server certificate for 127.0.0.1 signed by it, as PEM files.
pub fn test_pki(dir: &std::path::Path) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    (write("ca.pem", ca.pem()), write("cert.pem", cert.pem()), write("key.pem", key.serialize_pem()))
}

/// Publish a synthetic source (from `media`) on `server` under `name`; waits for PUBLISHING.
pub async fn publish_source(
    server: &Server,
    media: &MediaHandle,
    name: &str,
) -> (StreamKey, Arc<SignalingClient>, hopcast::wcs::client::ClientStream) {
    let source = media.next_id();
    media.add_source(source);
    let session = connect(server).await;
    let mut stream = session.publish(media, name, source).await.unwrap();
    stream.wait_for(hopcast::wcs::protocol::StreamStatus::Publishing, Duration::from_secs(10)).await.unwrap();
    (source, session, stream)
}

/// WebRTC peers the server's media engine holds (from `/rest-api/stats`): leaks show here.
pub fn media_peers(server: &Server) -> u64 {
    let (code, body) = http(server.http, "GET", "/rest-api/stats", None);
    assert_eq!(code, 200, "{body}");
    json(&body)["media"]["peers"].as_u64().unwrap()
}

/// Poll until the server holds `expected` media peers (a fail-safe bound, not a timing test).
pub async fn expect_media_peers(server: &Server, expected: u64) {
    let mut last = 0;
    for _ in 0..100 {
        last = media_peers(server);
        if last == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server holds {last} media peers, expected {expected}");
}

/// Poll until `check` holds (the fail-safe bound is generous: this is not a timing test).
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..300 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never happened: {what}");
}

/// `/rest-api/stats` as JSON.
pub fn stats(server: &Server) -> serde_json::Value {
    let (code, body) = http(server.http, "GET", "/rest-api/stats", None);
    assert_eq!(code, 200, "{body}");
    json(&body)
}

/// Run a scenario script (node, python) that prints one JSON line last, with `"ok"`;
/// returns that result, failing with the script's log unless it exited 0 and said ok.
pub fn script_result(command: &mut std::process::Command, what: &str) -> serde_json::Value {
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let result: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no result from {what}\nstdout:\n{stdout}\nstderr:\n{stderr}"));
    assert!(output.status.success() && result["ok"] == true, "{what} failed: {result}\nlog:\n{stderr}");
    result
}

/// Play `name` on `server` and check that packets injected into `source` arrive intact.
pub async fn assert_plays(server: &Server, media: &MediaHandle, name: &str, source: StreamKey, first_seq: u64) {
    let session = connect(server).await;
    let sink = media.next_id();
    let mut tap = media.tap(sink);
    let mut player = session.play(media, name, sink).await.unwrap();
    player.wait_for(hopcast::wcs::protocol::StreamStatus::Playing, Duration::from_secs(10)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_packets(media, source, first_seq, 100).await;
    let (video, audio) = verify_intact(&collect(&mut tap, Duration::from_secs(2)).await);
    assert!(video >= 90 && audio >= 90, "{name}: video {video}, audio {audio} of 100 each");
    player.stop();
}

/// What a player's tap received of a burst: sequence numbers (the player's own).
#[derive(Debug)]
pub struct Received {
    pub first: u64,
    pub last: u64,
}

/// Send 100 video and audio packets from `source` (seq from `first_seq`) and check that
/// the player behind `tap` gets at least 90 of each, intact; returns the video seqs seen.
pub async fn received_after(
    media: &MediaHandle,
    source: StreamKey,
    tap: &mut mpsc::UnboundedReceiver<SourcePacket>,
    first_seq: u64,
) -> Received {
    while tap.try_recv().is_ok() {}
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_packets(media, source, first_seq, 100).await;
    let got = collect(tap, Duration::from_secs(2)).await;
    let (video, audio) = verify_intact(&got);
    assert!(video >= 90 && audio >= 90, "video {video}, audio {audio} of 100 each");
    let seqs = got.iter().filter(|p| p.kind == MediaKind::Video).map(|p| p.seq);
    Received { first: seqs.clone().min().unwrap(), last: seqs.max().unwrap() }
}

/// A cluster node (`cdn_role=role`) meeting on the NATS server at `nats_url`, with
/// `extra` flags.
pub fn cdn_node(nats_url: &str, role: &str, extra: &[&str]) -> Server {
    let (role, nats) = (format!("cdn_role={role}"), format!("cdn.nats_url={nats_url}"));
    let mut args = vec!["--set", "cdn_enabled=true", "--set", &role, "--set", &nats];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// Remove every payload type of `codec` (and its RTX) from the offer's video section.
pub fn strip_codec(sdp: &str, codec: &str) -> String {
    let mut pts: Vec<String> = sdp
        .lines()
        .filter_map(|l| l.strip_prefix("a=rtpmap:"))
        .filter(|l| l.split_whitespace().nth(1).is_some_and(|c| c.starts_with(&format!("{codec}/"))))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    let rtx: Vec<String> = sdp
        .lines()
        .filter_map(|l| l.strip_prefix("a=fmtp:"))
        .filter(|l| pts.iter().any(|p| l.ends_with(&format!("apt={p}"))))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    pts.extend(rtx);
    let drop_line = |l: &str| {
        ["a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"].iter().any(|p| {
            l.strip_prefix(p).and_then(|r| r.split_whitespace().next()).is_some_and(|pt| pts.iter().any(|x| x == pt))
        })
    };
    sdp.lines()
        .filter(|l| !drop_line(l))
        .map(|l| {
            if l.starts_with("m=video") {
                l.split(' ').filter(|t| !pts.iter().any(|p| p == t)).collect::<Vec<_>>().join(" ")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\r\n"
}

/// A REST hook backend that admits connections whose `custom.token` is `token`
/// (refusing others with "Bad token") and everything else.
pub struct TokenBackend;

impl TokenBackend {
    pub async fn start(token: &'static str) -> std::net::SocketAddr {
        use axum::extract::Path;
        use axum::http::StatusCode;
        use axum::Json;
        let hook = move |Path(method): Path<String>, Json(body): Json<serde_json::Value>| async move {
            match method.as_str() {
                "connect" if body["custom"]["token"] != token => {
                    (StatusCode::FORBIDDEN, Json(serde_json::json!({ "reason": "Bad token" })))
                }
                _ => (StatusCode::OK, Json(serde_json::json!({}))),
            }
        };
        let app = axum::Router::new().route("/app/{method}", axum::routing::post(hook));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }
}

//! Operating hopcast: `/metrics` parsed by the Prometheus project's own parser (Python
//! `prometheus_client`, in the venv `scripts/test` makes) while media flows; `/health`,
//! `/ready` and `/?action=stat`; JSON logs that follow one stream from publish to stop.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use hopcast::wcs::protocol::StreamStatus;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);
const TOKEN: &str = "metrics-secret";

/// The exposition parsed by `prometheus_client`: (name, labels, value) per sample.
fn parse(text: &str) -> Vec<(String, Value, f64)> {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/aiortc/.venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/test (it makes the venv)", python.display());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/monitor/parse_metrics.py");
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "not parsable: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    let samples: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    samples
        .into_iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), s["labels"].clone(), s["value"].as_f64().unwrap()))
        .collect()
}

fn scrape(server: &Server) -> Vec<(String, Value, f64)> {
    let (code, _, body) = hopcast::testkit::process::http_exchange(
        server.http,
        "GET",
        "/metrics",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        None,
    );
    assert_eq!(code, 200, "{body}");
    parse(&body)
}

/// The value of sample `name` whose labels include `labels`.
fn value(samples: &[(String, Value, f64)], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l[*k] == *v))
        .map(|(_, _, v)| *v)
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_media_and_are_guarded() {
    let server = Server::start(&["--set", &format!("rest.token={TOKEN}")]);
    // Guarded like the REST API; health and readiness are open.
    assert_eq!(http(server.http, "GET", "/metrics", None).0, 401);
    let (code, body) = http(server.http, "GET", "/health", None);
    assert_eq!((code, json(&body)["status"].as_str()), (200, Some("ok")));
    let (code, body) = http(server.http, "GET", "/ready", None);
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["checks"]["mediaThreads"], true);

    let cm = client_media();
    let (source, _session, _published) = publish_source(&server, &cm.media, "cam").await;
    let mut players = Vec::new();
    for _ in 0..2 {
        let session = connect(&server).await;
        let sink = cm.media.next_id();
        let tap = cm.media.tap(sink);
        let mut player = session.play(&cm.media, "cam", sink).await.unwrap();
        player.wait_for(StreamStatus::Playing, WAIT).await.unwrap();
        players.push((session, player, tap));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = scrape(&server);
    assert_eq!(value(&before, "hopcast_sessions", &[]), 3.0);
    assert_eq!(value(&before, "hopcast_streams", &[("role", "published"), ("protocol", "wcs")]), 1.0);
    assert_eq!(value(&before, "hopcast_streams", &[("role", "played"), ("protocol", "wcs")]), 2.0);
    assert_eq!(value(&before, "hopcast_media_peers", &[]), 3.0);

    send_packets(&cm.media, source, 1, 100).await;
    for (_, _, tap) in players.iter_mut() {
        let (video, audio) = verify_intact(&collect(tap, Duration::from_secs(2)).await);
        assert!(video >= 90 && audio >= 90, "video {video}, audio {audio}");
    }
    let after = scrape(&server);
    let moved = |name: &str| value(&after, name, &[]) - value(&before, name, &[]);
    // 100 video + 100 audio packets in (video 1000 bytes, audio 120), two copies out.
    assert!(
        moved("hopcast_media_packets_received_total") >= 190.0,
        "{}",
        moved("hopcast_media_packets_received_total")
    );
    assert!(moved("hopcast_media_bytes_received_total") >= 190.0 * 500.0);
    assert!(moved("hopcast_media_packets_forwarded_total") >= 380.0);
    assert!(moved("hopcast_media_bytes_forwarded_total") >= 2.0 * moved("hopcast_media_bytes_received_total") * 0.9);
    assert!(moved("hopcast_media_datagrams_sent_total") >= 380.0);
    assert!(value(&after, "hopcast_media_send_calls_total", &[]) > 0.0);
    assert!(value(&after, "hopcast_media_keyframe_requests_sent_total", &[]) >= 1.0, "players joining ask for one");
    assert!(value(&after, "hopcast_media_thread_busy_seconds_total", &[("thread", "0")]) > 0.0);
    // The latency histogram: cumulative buckets that end at the count, a positive sum,
    // and at least one sample per packet forwarded in between.
    let latency = "hopcast_media_forward_latency_seconds";
    let buckets: Vec<(f64, f64)> = after
        .iter()
        .filter(|(n, _, _)| *n == format!("{latency}_bucket"))
        .map(|(_, l, v)| (l["le"].as_str().unwrap().parse::<f64>().unwrap(), *v))
        .collect();
    assert!(buckets.len() > 10, "{buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1), "{buckets:?}");
    let count = value(&after, &format!("{latency}_count"), &[]);
    assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, count));
    assert!(count - value(&before, &format!("{latency}_count"), &[]) >= 190.0);
    assert!(value(&after, &format!("{latency}_sum"), &[]) > 0.0);
    // Refusals have a reason label each, with no stream names anywhere.
    assert_eq!(value(&after, "hopcast_refused_total", &[("reason", "hooks")]), 0.0);
    assert!(after.iter().all(|(_, l, _)| !l.to_string().contains("cam")));

    // Every series the Grafana dashboard asks for exists.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let exprs: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap()))
        .collect();
    assert!(exprs.len() >= 12);
    let auth = format!("Bearer {TOKEN}");
    let (_, _, text) =
        hopcast::testkit::process::http_exchange(server.http, "GET", "/metrics", &[("Authorization", &auth)], None);
    for expr in exprs {
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("hopcast_"))
        {
            // A sample, or a family with no series yet (no relays here).
            let known = after.iter().any(|(n, _, _)| n == word) || text.contains(&format!("# TYPE {word} "));
            assert!(known, "the dashboard asks for {word}, which /metrics lacks");
        }
    }

    // WCS's summary page.
    let stat = |query: &str| {
        let auth = format!("Bearer {TOKEN}");
        let (code, _, body) = hopcast::testkit::process::http_exchange(
            server.http,
            "GET",
            &format!("/?{query}"),
            &[("Authorization", &auth)],
            None,
        );
        (code, body)
    };
    let (code, text) = stat("action=stat");
    assert_eq!(code, 200);
    assert!(text.contains("streams_webrtc_in=1\n") && text.contains("streams_webrtc_out=2\n"), "{text}");
    let (code, body) = stat("action=stat&format=json");
    assert_eq!((code, json(&body)["streams_viewers"].as_u64()), (200, Some(2)), "{body}");
    assert_eq!(http(server.http, "GET", "/?action=stat", None).0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_follow_a_stream_from_publish_to_stop() {
    let server = Server::start(&["--set", "log.format=json"]);
    let cm = client_media();
    let (_source, _session, mut published) = publish_source(&server, &cm.media, "followed").await;
    let viewer = connect(&server).await;
    let mut played = viewer.play(&cm.media, "followed", cm.media.next_id()).await.unwrap();
    played.wait_for(StreamStatus::Playing, WAIT).await.unwrap();
    played.stop_and_wait(WAIT).await.expect("player stopped");
    published.stop_and_wait(WAIT).await.expect("publisher stopped");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let log = std::fs::read_to_string(&server.log).unwrap();
    let events: Vec<Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(events.len() > 5, "{log}");
    let of = |message: &str, field: &str, value: &str| {
        events
            .iter()
            .find(|e| e["message"] == message && e[field] == value)
            .cloned()
            .unwrap_or_else(|| panic!("no '{message}' event with {field}={value} in:\n{log}"))
    };
    let publish = of("publish", "stream", "followed");
    let play = of("play", "stream", "followed");
    assert_eq!(publish["media_session"], published.media_session_id.as_str());
    assert_eq!(play["media_session"], played.media_session_id.as_str());
    // Each stop is found by the mediaSessionId the publish and play events gave.
    for id in [&published.media_session_id, &played.media_session_id] {
        let stop = of("stopped by its client", "media_session", id);
        assert_eq!(stop["stream"], "followed");
    }
    // The session's id rides along in the span list.
    assert!(publish["spans"].as_array().is_some_and(|s| s.iter().any(|s| s["name"] == "session")), "{publish}");
}

/// WCS's per-stream metrics against what the test sent: a paced 800 kbit/s, 30 fps
/// synthetic stream (keyframes three times larger every 2 s, so about 826 kbit/s of
/// video payload) and 50 audio packets of 120 bytes a second (48 kbit/s); rates within
/// 15 %, the frame rate within 3, then a VP8 keyframe's picture size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_metrics_match_what_was_sent() {
    let server = Server::start(&[]);
    let (media, _events) = hopcast::testkit::client_media();
    let epoch = std::time::Instant::now();
    let mut source = hopcast::testkit::synthetic::SyntheticSource::new(media.clone(), 800_000, epoch);
    let session = connect(&server).await;
    let mut published = session.publish(&media, "measured", source.key).await.unwrap();
    published.wait_for(StreamStatus::Publishing, WAIT).await.unwrap();
    let viewer = connect(&server).await;
    let mut player = viewer.play(&media, "measured", media.next_id()).await.unwrap();
    player.wait_for(StreamStatus::Playing, WAIT).await.unwrap();
    let until = std::time::Instant::now() + Duration::from_millis(2500);
    while std::time::Instant::now() < until {
        let next = source.tick(std::time::Instant::now());
        tokio::time::sleep_until(next.into()).await;
    }
    let find = r#"{"name":"measured","published":true,"display":["metrics"]}"#;
    let (code, body) = http(server.http, "POST", "/rest-api/stream/find", Some(find));
    assert_eq!(code, 200, "{body}");
    let m = json(&body)[0]["metrics"].clone();
    let near = |name: &str, expected: f64, tolerance: f64| {
        let got = m[name].as_f64().unwrap_or_else(|| panic!("no {name} in {m}"));
        assert!((got - expected).abs() <= tolerance, "{name}: {got}, expected {expected} ± {tolerance}; {m}");
    };
    near("VIDEO_RATE", 826_000.0, 0.15 * 826_000.0);
    near("AUDIO_RATE", 48_000.0, 0.15 * 48_000.0);
    near("VIDEO_FPS", 30.0, 3.0);
    assert_eq!(
        (m["VIDEO_LOST"].as_u64(), m["AUDIO_LOST"].as_u64(), m["PLAYERS"].as_u64()),
        (Some(0), Some(0), Some(1)),
        "{m}"
    );
    assert!(m["VIDEO_PLI"].as_u64() >= Some(1), "the player joining asked for a keyframe: {m}");
    assert!(m.get("VIDEO_WIDTH").is_none(), "synthetic payloads carry no picture size: {m}");
    // The player's own entry: what it was sent (str0m's counts of payload bytes)
    // and what it reported back.
    let of_player = format!(r#"{{"mediaSessionId":"{}"}}"#, player.media_session_id);
    let (code, body) = http(server.http, "POST", "/rest-api/stream/metrics", Some(&of_player));
    assert_eq!(code, 200, "{body}");
    let p = json(&body);
    let near_p = |name: &str, expected: f64, tolerance: f64| {
        let got = p[name].as_f64().unwrap_or_else(|| panic!("no {name} in {p}"));
        assert!((got - expected).abs() <= tolerance, "player {name}: {got}, expected {expected} ± {tolerance}; {p}");
    };
    near_p("VIDEO_RATE", 826_000.0, 0.15 * 826_000.0);
    near_p("AUDIO_RATE", 48_000.0, 0.15 * 48_000.0);
    assert_eq!(p["VIDEO_LOST"].as_u64(), Some(0), "{p}");

    // A VP8 keyframe (RFC 7741 descriptor, then a 640x480 frame header).
    let vp8 = [0x90, 0x80, 0x81, 0x23, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01];
    let (next_seq, _) = source.sent();
    let packet = hopcast::media::SourcePacket {
        timestamp: 90_000 * 10,
        marker: true,
        ..hopcast::media::SourcePacket::synthetic(
            str0m::media::MediaKind::Video,
            next_seq + 1,
            vp8.to_vec(),
            std::time::Instant::now(),
        )
    };
    media.inject(source.key, packet);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = format!(r#"{{"mediaSessionId":"{}"}}"#, published.media_session_id);
    let (code, body) = http(server.http, "POST", "/rest-api/stream/metrics", Some(&metrics));
    assert_eq!(code, 200, "{body}");
    let m = json(&body);
    assert_eq!((m["VIDEO_WIDTH"].as_u64(), m["VIDEO_HEIGHT"].as_u64()), (Some(640), Some(480)), "{m}");
    assert!(m["VIDEO_K_FRAMES"].as_u64() >= Some(1), "{m}");
    let (code, _) = http(server.http, "POST", "/rest-api/stream/metrics", Some(r#"{"mediaSessionId":"nope"}"#));
    assert_eq!(code, 404);
}

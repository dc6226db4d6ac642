//! Start-up configuration, TLS listeners, session keep-alive and the REST view of
//! streams and connections, against real server processes.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use hopcast::media::Role;
use hopcast::wcs::client::SignalingClient;
use hopcast::wcs::protocol::{reason, ClientMessage, StreamStatus};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

fn run_binary(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hopcast")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_bad_value_stops_the_start_naming_the_key() {
    let (code, stderr) = run_binary(&["--set", "wss.port=eighty"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("'wss.port'") && stderr.contains("eighty"), "{stderr}");

    let dir = std::env::temp_dir().join(format!("hopcast-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("flashphoner.properties");
    std::fs::write(&file, "# WCS file\nrtmp_port=1935\nwcs_agent_ssl=perhaps\n").unwrap();
    let (code, stderr) = run_binary(&["--config", file.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("'wcs_agent_ssl'") && stderr.contains("perhaps"), "{stderr}");

    let (code, stderr) = run_binary(&["--config", "/no/such/flashphoner.properties"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("/no/such/flashphoner.properties"), "{stderr}");
}

#[test]
fn unknown_keys_are_warned_about_once_and_the_file_is_used() {
    let dir = std::env::temp_dir().join(format!("hopcast-cfg2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("flashphoner.properties");
    std::fs::write(&file, "rtmp_port=1935\nhls_enabled=true\nkeep_alive.probes=3\n").unwrap();
    let server = Server::start(&["--config", file.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(200));
    let log = std::fs::read_to_string(&server.log).unwrap();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("does not use")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("rtmp_port") && warnings[0].contains("hls_enabled"));
    assert!(!warnings[0].contains("keep_alive.probes"));
}

#[test]
fn help_documents_every_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_hopcast")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for (key, _, _) in hopcast::config::KEYS {
        assert!(help.contains(key), "--help does not mention {key}");
    }
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for (key, default, _) in hopcast::config::KEYS {
        let shown = if default.is_empty() { "(empty)" } else { default };
        assert!(readme.contains(&format!("| `{key}` | {shown} |")), "README's table lacks {key} = {shown}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_and_https_use_the_configured_certificate() {
    let dir = std::env::temp_dir().join(format!("hopcast-pki-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = test_pki(&dir);
    let server = Server::start(&["--set", &format!("tls.cert={cert}"), "--set", &format!("tls.key={key}")]);
    let tls = hopcast::net::tls::client_config(Some(std::path::Path::new(&ca))).unwrap();
    let client = SignalingClient::connect(&format!("wss://127.0.0.1:{}/websocket", server.wss), Some(tls.clone()))
        .await
        .expect("wss connect with our CA");
    assert!(!client.session_id.is_empty());

    // Without the CA the certificate is refused.
    let untrusted = hopcast::net::tls::client_config(None).unwrap();
    let refused = SignalingClient::connect(&format!("wss://127.0.0.1:{}/", server.wss), Some(untrusted)).await;
    assert!(matches!(refused, Err(hopcast::wcs::client::ClientError::Connect(_))), "{:?}", refused.err());

    // https REST answers over the same certificate.
    let connector = tokio_rustls::TlsConnector::from(tls);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.https)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut stream = connector.connect(name, tcp).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /rest-api/connection/find_all HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(&client.session_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_certificate_is_made_when_none_is_configured() {
    let server = Server::start(&[]);
    // Trust nothing but accept the handshake's certificate to prove TLS is served.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.wss)).await.unwrap();
    let tls = hopcast::net::tls::client_config(None).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let err = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.expect_err("self-signed must not verify");
    assert!(err.to_string().contains("certificate"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_session_is_dropped_and_its_streams_end() {
    let server = Server::start(&["--set", "keep_alive.server_interval=200", "--set", "keep_alive.probes=2"]);
    // A raw client that never answers pings.
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url()).await.unwrap();
    let hello = ClientMessage::Connection(Default::default()).encode();
    ws.send(Message::Text(hello.into())).await.unwrap();
    // It has a stream (PENDING: it never does ICE), which must end with the session.
    let cm = client_media();
    let offer = cm.media.offer(cm.media.next_id(), Role::Producer(cm.media.next_id())).await.unwrap();
    let publish = hopcast::wcs::protocol::StreamRequest {
        media_session_id: "silent-1".into(),
        name: "silent".into(),
        published: true,
        has_audio: true,
        has_video: true,
        sdp: offer,
        media_provider: "WebRTC".into(),
        custom: None,
    };
    ws.send(Message::Text(ClientMessage::PublishStream(publish).encode().into())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (code, body) = http(server.http, "POST", "/rest-api/stream/find", Some(r#"{"name":"silent"}"#));
    assert_eq!((code, json(&body)[0]["status"].as_str()), (200, Some("PENDING")), "{body}");
    let mut pings = 0;
    let closed = tokio::time::timeout(WAIT, async {
        while let Some(Ok(frame)) = ws.next().await {
            match frame {
                Message::Text(t) if t.contains(r#""message":"ping""#) => pings += 1,
                Message::Close(_) => return true,
                _ => {}
            }
        }
        true
    })
    .await;
    assert_eq!(closed, Ok(true), "the server kept a silent session");
    assert!(pings >= 2, "only {pings} pings before the drop");
    let (code, _) = http(server.http, "GET", "/rest-api/connection/find_all", None);
    assert_eq!(code, 404);
    let (code, body) = http(server.http, "GET", "/rest-api/stream/find_all", None);
    assert_eq!(code, 404, "the dropped session's stream is still listed: {body}");
    expect_media_peers(&server, 0).await;

    // A client that answers pings stays.
    let client = connect(&server).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!client.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_shows_real_stream_state_and_terminates() {
    let server = Server::start(&[]);
    let cm = client_media();
    let media = &cm.media;
    let (_source, publisher, mut published) = publish_source(&server, media, "rest-cam").await;
    let viewer = connect(&server).await;
    let mut player = viewer.play(media, "rest-cam", media.next_id()).await.unwrap();
    player.wait_for(StreamStatus::Playing, WAIT).await.unwrap();

    let (code, body) =
        http(server.http, "POST", "/rest-api/stream/find", Some(r#"{"name":"rest-cam","published":true}"#));
    assert_eq!(code, 200);
    let found = json(&body);
    assert_eq!(found.as_array().unwrap().len(), 1);
    assert_eq!(found[0]["mediaSessionId"], published.media_session_id.as_str());
    assert_eq!(found[0]["status"], "PUBLISHING");
    assert_eq!(found[0]["sessionId"], publisher.session_id.as_str());
    let (_, body) = http(server.http, "POST", "/rest-api/stream/find", Some(r#"{"published":false}"#));
    assert_eq!(json(&body)[0]["status"], "PLAYING");

    let terminate = format!(r#"{{"mediaSessionId":"{}"}}"#, published.media_session_id);
    assert_eq!(http(server.http, "POST", "/rest-api/stream/terminate", Some(&terminate)).0, 200);
    let ended = published.next_status().await.unwrap();
    assert_eq!((ended.status, ended.info.as_deref()), (StreamStatus::Unpublished, Some(reason::REST_TERMINATE)));
    let stopped = player.next_status().await.unwrap();
    assert_eq!((stopped.status, stopped.info.as_deref()), (StreamStatus::Stopped, Some(reason::PUBLISHER_STOP)));

    let (_, body) = http(server.http, "GET", "/rest-api/connection/find_all", None);
    assert_eq!(json(&body).as_array().unwrap().len(), 2);
    let terminate = format!(r#"{{"sessionId":"{}"}}"#, viewer.session_id);
    assert_eq!(http(server.http, "POST", "/rest-api/connection/terminate", Some(&terminate)).0, 200);
    tokio::time::timeout(WAIT, viewer.wait_closed()).await.expect("terminated connection stayed open");
    let (_, body) = http(server.http, "GET", "/rest-api/connection/find_all", None);
    assert_eq!(json(&body).as_array().unwrap().len(), 1, "{body}");
}

/// SIGTERM: the server stops accepting, tells its WebSocket clients it is going away
/// (close 1001), ends their streams, and exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_sessions_as_going_away_and_exits_cleanly() {
    let mut server = Server::start(&[]);
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url()).await.unwrap();
    let hello = r#"{"message":"connection","data":[{"appKey":"defaultApp"}]}"#;
    ws.send(Message::Text(hello.into())).await.unwrap();
    let _user_data = ws.next().await;
    let status = tokio::task::block_in_place(|| server.terminate(Duration::from_secs(10)));
    assert!(status.is_some_and(|s| s.success()), "exit status {status:?}");
    let mut code = None;
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Close(frame) = m {
            code = frame.map(|f| u16::from(f.code));
            break;
        }
    }
    assert_eq!(code, Some(1001));
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains("server stopping"), "{log}");
}

/// A signal that arrives as soon as the server said it is up stops it gracefully: the
/// handlers are installed before the ready line (they were installed just after it, and a
/// SIGTERM in between killed the process, seen once in a loaded test run).
#[test]
fn sigterm_right_after_the_ready_line_is_a_graceful_stop() {
    for _ in 0..5 {
        let mut server = Server::start(&[]);
        let status = server.terminate(Duration::from_secs(10));
        assert!(status.is_some_and(|s| s.success()), "exit status {status:?}");
    }
}

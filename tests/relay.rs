//! Server-to-server relays with real server processes on loopback: push, pull, chains
//! of three, keyframe requests across hops, errors, and faults (remote killed and
//! restarted, publisher stopped, terminate during setup).

mod common;

use std::time::Duration;

use common::*;
use hopcast::media::{MediaEvent, StreamKey};
use hopcast::wcs::protocol::{reason, StreamStatus};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);
const FAST_RECONNECT: [&str; 2] = ["--set", "relay.reconnect_max_ms=500"];

fn rest(server: &Server, method: &str, body: &str) -> (u16, Value) {
    let (code, text) = http(server.http, "POST", &format!("/rest-api/{method}"), Some(body));
    (code, if text.is_empty() { Value::Null } else { json(&text) })
}

fn push(from: &Server, to: &Server, local: &str, remote: &str) -> (u16, Value) {
    let body = format!(r#"{{"uri":"{}","localStreamName":"{local}","remoteStreamName":"{remote}"}}"#, to.ws_url());
    rest(from, "pull/push", &body)
}

fn stream_status(server: &Server, name: &str) -> Option<String> {
    let (code, body) = rest(server, "stream/find", &format!(r#"{{"name":"{name}","published":true}}"#));
    (code == 200).then(|| body[0]["status"].as_str().unwrap().to_string())
}

fn relay_field(server: &Server, field: &str) -> Option<Value> {
    let (code, body) = http(server.http, "GET", "/rest-api/pull/find_all", None);
    (code == 200).then(|| json(&body)[0][field].clone())
}

async fn keyframe_requested(events: &mut tokio::sync::mpsc::UnboundedReceiver<MediaEvent>, source: StreamKey) -> bool {
    tokio::time::timeout(WAIT, async {
        while let Some(e) = events.recv().await {
            if e == (MediaEvent::KeyframeRequested { key: source }) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_relays_media_and_keyframe_requests_and_terminates() {
    let (s1, s2) = (Server::start(&[]), Server::start(&[]));
    let mut cm = client_media();
    let (source, _session, _published) = publish_source(&s1, &cm.media, "origin").await;

    let (code, relay) = push(&s1, &s2, "origin", "copy");
    assert_eq!(code, 200, "{relay}");
    assert_eq!(relay["status"], "PUBLISHING");
    assert_eq!(relay["localStreamName"], "origin");
    assert_eq!(relay["remoteStreamName"], "copy");
    assert!(!relay["remoteMediaSessionId"].as_str().unwrap().is_empty());
    assert_eq!(stream_status(&s2, "copy").as_deref(), Some("PUBLISHING"));

    // A player joining on server 2 makes both hops ask for a keyframe.
    send_packets(&cm.media, source, 1, 20).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    while cm.events.try_recv().is_ok() {}
    assert_plays(&s2, &cm.media, "copy", source, 100).await;
    assert!(keyframe_requested(&mut cm.events, source).await, "no keyframe request reached the publisher");

    let (code, found) = rest(&s1, "pull/find", r#"{"remoteStreamName":"copy","direction":"push"}"#);
    assert_eq!((code, found[0]["uri"].as_str()), (200, Some(s2.ws_url().as_str())));
    assert_eq!(rest(&s1, "pull/find", r#"{"direction":"pull"}"#).0, 404);
    let (code, ended) = rest(&s1, "pull/terminate", r#"{"remoteStreamName":"copy"}"#);
    assert_eq!(code, 200);
    assert_eq!(
        (ended[0]["status"].as_str(), ended[0]["info"].as_str()),
        (Some("STOPPED"), Some("Stopped by rest /terminate"))
    );
    assert_eq!(stream_status(&s2, "copy"), None, "terminate left the remote stream published");
    assert_eq!(http(s1.http, "GET", "/rest-api/pull/find_all", None).0, 404);
    // Only the origin's publisher remains on server 1: the relay's local leg is gone.
    let (_, streams) = rest(&s1, "stream/find_all", "{}");
    assert_eq!(streams.as_array().unwrap().len(), 1, "{streams}");
    expect_media_peers(&s1, 1).await;
    expect_media_peers(&s2, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_republishes_a_remote_stream_locally() {
    let (s1, s2) = (Server::start(&[]), Server::start(&[]));
    let mut cm = client_media();
    let (source, _session, _published) = publish_source(&s1, &cm.media, "far").await;
    let body = format!(r#"{{"uri":"{}","remoteStreamName":"far","localStreamName":"near"}}"#, s1.ws_url());
    let (code, relay) = rest(&s2, "pull/pull", &body);
    assert_eq!(code, 200, "{relay}");
    assert_eq!(relay["status"], "PLAYING");
    eventually("the pulled stream is published on server 2", || {
        stream_status(&s2, "near").as_deref() == Some("PUBLISHING")
    })
    .await;

    send_packets(&cm.media, source, 1, 20).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    while cm.events.try_recv().is_ok() {}
    assert_plays(&s2, &cm.media, "near", source, 100).await;
    assert!(keyframe_requested(&mut cm.events, source).await, "no keyframe request reached the publisher");

    let (code, _) = rest(&s2, "pull/terminate", r#"{"localStreamName":"near"}"#);
    assert_eq!(code, 200);
    assert_eq!(stream_status(&s2, "near"), None);
    expect_media_peers(&s2, 0).await;
    expect_media_peers(&s1, 1).await;
    // Server 1 no longer has the agent's player.
    let (code, _) = rest(&s1, "stream/find", r#"{"published":false}"#);
    assert_eq!(code, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_three_servers_carries_the_stream() {
    let (s1, s2, s3) = (Server::start(&[]), Server::start(&[]), Server::start(&[]));
    let cm = client_media();
    let (source, _session, _published) = publish_source(&s1, &cm.media, "a").await;
    assert_eq!(push(&s1, &s2, "a", "b").0, 200);
    assert_eq!(push(&s2, &s3, "b", "c").0, 200);
    assert_plays(&s3, &cm.media, "c", source, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_relay_requests_are_refused_with_reasons() {
    let (s1, s2) = (Server::start(&[]), Server::start(&[]));
    let cm = client_media();
    let _source = publish_source(&s1, &cm.media, "mine").await;
    let _taken = publish_source(&s2, &cm.media, "taken").await;
    let error = |(code, body): (u16, Value)| (code, body["error"].as_str().unwrap_or_default().to_string());

    assert_eq!(
        error(rest(&s1, "pull/push", r#"{"localStreamName":"mine","remoteStreamName":"x"}"#)),
        (400, "Missing field 'uri'".into())
    );
    assert_eq!(
        error(rest(&s1, "pull/push", r#"{"uri":"ws://h:1","localStreamName":"","remoteStreamName":"x"}"#)).0,
        400
    );
    let (code, msg) =
        error(rest(&s1, "pull/push", r#"{"uri":"ftp://nope","localStreamName":"mine","remoteStreamName":"x"}"#));
    assert!(code == 400 && msg.starts_with("Bad URI"), "{code} {msg}");
    assert_eq!(error(push(&s1, &s2, "nobody", "x")).0, 404);

    assert_eq!(push(&s1, &s2, "mine", "once").0, 200);
    assert_eq!(error(push(&s1, &s2, "mine", "once")).0, 409);
    let body = format!(r#"{{"uri":"{}","remoteStreamName":"mine","localStreamName":"taken"}}"#, s1.ws_url());
    assert_eq!(error(rest(&s2, "pull/pull", &body)).0, 409);

    // Nobody listens there: 500 with the reason, listed as FAILED.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let body = format!(r#"{{"uri":"ws://127.0.0.1:{dead}","localStreamName":"mine","remoteStreamName":"void"}}"#);
    let (code, msg) = error(rest(&s1, "pull/push", &body));
    assert!(code == 500 && msg.starts_with("Failed to connect to origin stream"), "{code} {msg}");
    let (code, found) = rest(&s1, "pull/find", r#"{"remoteStreamName":"void"}"#);
    assert_eq!((code, found[0]["status"].as_str()), (200, Some("FAILED")));

    // The remote refuses (its name is taken): reported back the same way.
    let (code, msg) = error(push(&s1, &s2, "mine", "taken"));
    assert_eq!((code, msg.as_str()), (500, "Stream name is already in use"));
    let (_, found) = rest(&s1, "pull/find", r#"{"remoteStreamName":"taken"}"#);
    assert_eq!(
        (found[0]["status"].as_str(), found[0]["info"].as_str()),
        (Some("FAILED"), Some("Stream name is already in use"))
    );

    // Failed relays hold nothing: only the working one has a local leg.
    let (_, players) = rest(&s1, "stream/find", r#"{"published":false}"#);
    assert_eq!(players.as_array().unwrap().len(), 1, "{players}");
    assert_eq!(error(rest(&s1, "pull/terminate", "{}")).0, 400);
    assert_eq!(error(rest(&s1, "pull/terminate", r#"{"remoteStreamName":"never"}"#)).0, 404);
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Arguments that give a server the same ports each time it is started.
fn fixed_ports() -> Vec<String> {
    let media_port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let flags = ["--ws-port", "--wss-port", "--http-port", "--https-port"];
    let mut args: Vec<String> = flags.iter().flat_map(|f| [f.to_string(), free_tcp_port().to_string()]).collect();
    args.extend(["--media-port".to_string(), media_port.to_string()]);
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_of_a_pull_wait_while_the_remote_is_gone_and_resume_with_it() {
    let args = fixed_ports();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mut s1, s2) = (Server::start_with_ports(&a, &[]), Server::start(&FAST_RECONNECT));
    let cm = client_media();
    let (first, _a, _p1) = publish_source(&s1, &cm.media, "far").await;
    let body = format!(r#"{{"uri":"{}","remoteStreamName":"far","localStreamName":"near"}}"#, s1.ws_url());
    assert_eq!(rest(&s2, "pull/pull", &body).0, 200);
    let session = connect(&s2).await;
    let sink = cm.media.next_id();
    let mut tap = cm.media.tap(sink);
    let mut player = session.play(&cm.media, "near", sink).await.unwrap();
    player.wait_for(StreamStatus::Playing, WAIT).await.unwrap();
    let before = received_after(&cm.media, first, &mut tap, 1).await;

    // The remote server dies: the player is told, and stays.
    s1.kill();
    let problem = player.wait_for(StreamStatus::PlaybackProblem, WAIT).await.unwrap();
    assert!(problem.info.is_some_and(|i| !i.is_empty()), "no reason given");
    assert_eq!(stream_status(&s2, "near").as_deref(), Some("PENDING"));

    // It comes back and the stream is published there again: the relay resumes, and
    // the same player plays on, its sequence numbers going on from where they stopped.
    let s1 = Server::start_with_ports(&a, &[]);
    let (second, _b, p2) = publish_source(&s1, &cm.media, "far").await;
    player.wait_for(StreamStatus::Playing, Duration::from_secs(20)).await.unwrap();
    let after = received_after(&cm.media, second, &mut tap, 1).await;
    assert!(after.first > before.last && after.first <= before.last + 50, "{before:?} then {after:?}");
    assert_eq!(stream_status(&s2, "near").as_deref(), Some("PUBLISHING"));

    // The publisher stops: the stream has ended there, so it ends here, with the reason.
    p2.stop();
    let ended = player.wait_for(StreamStatus::Stopped, WAIT).await.unwrap();
    assert_eq!(ended.info.as_deref(), Some(reason::PUBLISHER_STOP));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_heals_after_the_remote_server_restarts() {
    let s1 = Server::start(&FAST_RECONNECT);
    let args = fixed_ports();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut s2 = Server::start_with_ports(&a, &[]);
    let cm = client_media();
    let (source, _session, _published) = publish_source(&s1, &cm.media, "live").await;
    assert_eq!(push(&s1, &s2, "live", "mirror").0, 200);

    s2.kill();
    eventually("the relay reports the loss", || relay_field(&s1, "status") == Some(Value::from("FAILED"))).await;
    // Server 1 stays healthy meanwhile.
    assert_plays(&s1, &cm.media, "live", source, 1).await;

    let s2 = Server::start_with_ports(&a, &[]);
    eventually("the relay is back", || relay_field(&s1, "status") == Some(Value::from("PUBLISHING"))).await;
    assert!(relay_field(&s1, "reconnects").unwrap().as_u64().unwrap() >= 1);
    eventually("the stream is back on server 2", || stream_status(&s2, "mirror").as_deref() == Some("PUBLISHING"))
        .await;
    assert_plays(&s2, &cm.media, "mirror", source, 1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_publisher_ends_the_relay_and_the_remote_stream() {
    let (s1, s2) = (Server::start(&[]), Server::start(&[]));
    let cm = client_media();
    let (_source, _session, published) = publish_source(&s1, &cm.media, "short").await;
    assert_eq!(push(&s1, &s2, "short", "short-copy").0, 200);
    published.stop();
    eventually("the relay is gone", || http(s1.http, "GET", "/rest-api/pull/find_all", None).0 == 404).await;
    eventually("the remote stream is unpublished", || stream_status(&s2, "short-copy").is_none()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_during_setup_answers_and_leaks_nothing() {
    let s1 = Server::start(&[]);
    let cm = client_media();
    let _source = publish_source(&s1, &cm.media, "slow").await;
    // A "server" that accepts TCP and never says a word.
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = mute.local_addr().unwrap().port();
    let http_port = s1.http;
    let pushing = std::thread::spawn(move || {
        let body = format!(r#"{{"uri":"ws://127.0.0.1:{port}","localStreamName":"slow","remoteStreamName":"x"}}"#);
        http(http_port, "POST", "/rest-api/pull/push", Some(&body))
    });
    eventually("the relay is listed as connecting", || relay_field(&s1, "status") == Some(Value::from("PENDING")))
        .await;
    let (code, _) = rest(&s1, "pull/terminate", r#"{"remoteStreamName":"x"}"#);
    assert_eq!(code, 200);
    let (code, body) = pushing.join().unwrap();
    assert_eq!(code, 500, "{body}");
    assert!(json(&body)["error"].as_str().unwrap().contains("terminated"), "{body}");
    assert_eq!(http(s1.http, "GET", "/rest-api/pull/find_all", None).0, 404);
    let (code, _) = rest(&s1, "stream/find", r#"{"published":false}"#);
    assert_eq!(code, 404, "a local leg was left behind");
    expect_media_peers(&s1, 1).await;
    drop(mute);
}

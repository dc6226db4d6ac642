//! Graceful shutdown with real server processes: SIGTERM tells every client why its
//! streams end, ends relays on their remotes, and exits within `shutdown.grace_ms`; a
//! hung remote cannot hold the exit past that bound; a second signal exits at once.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hopcast::wcs::protocol::{reason, StreamStatus};

const WAIT: Duration = Duration::from_secs(10);
/// `shutdown.grace_ms`'s default, and the slack a test allows for the process to end.
const GRACE: Duration = Duration::from_secs(5);
const SLACK: Duration = Duration::from_secs(2);

fn rest(server: &Server, method: &str, body: &str) -> (u16, serde_json::Value) {
    let (code, text) = http(server.http, "POST", &format!("/rest-api/{method}"), Some(body));
    (code, if text.is_empty() { serde_json::Value::Null } else { json(&text) })
}

/// Players of `name` on `server`.
fn players_of(server: &Server, name: &str) -> usize {
    let (code, body) = rest(server, "stream/find", &format!(r#"{{"name":"{name}","published":false}}"#));
    if code == 200 {
        body.as_array().map_or(0, |a| a.len())
    } else {
        0
    }
}

/// The server's log without its colour codes.
fn log_of(server: &Server) -> String {
    let log = std::fs::read_to_string(&server.log).unwrap_or_default();
    let mut plain = String::with_capacity(log.len());
    let mut rest = log.as_str();
    while let Some(at) = rest.find('\x1b') {
        plain.push_str(&rest[..at]);
        rest = &rest[at..];
        rest = rest.find('m').map_or("", |end| &rest[end + 1..]);
    }
    plain.push_str(rest);
    plain
}

/// Does one line of `log` hold every one of `parts`?
fn logged(log: &str, parts: &[&str]) -> bool {
    log.lines().any(|line| parts.iter().all(|p| line.contains(p)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_tells_clients_and_relay_remotes_then_exits() {
    let (mut s1, s2) = (Server::start(&[]), Server::start(&[]));
    let cm = client_media();
    // On server 1: a publisher, a player of it, a push of it to server 2, and a pull
    // from server 2 of a stream published there.
    let (_source, _publisher_session, mut published) = publish_source(&s1, &cm.media, "cam").await;
    let viewer = connect(&s1).await;
    let mut played = viewer.play(&cm.media, "cam", cm.media.next_id()).await.unwrap();
    played.wait_for(StreamStatus::Playing, WAIT).await.unwrap();
    let push = format!(r#"{{"uri":"{}","localStreamName":"cam","remoteStreamName":"far"}}"#, s2.ws_url());
    assert_eq!(rest(&s1, "pull/push", &push).0, 200);
    let (_source2, _session2, _published2) = publish_source(&s2, &cm.media, "there").await;
    let pull = format!(r#"{{"uri":"{}","localStreamName":"here","remoteStreamName":"there"}}"#, s2.ws_url());
    assert_eq!(rest(&s1, "pull/pull", &pull).0, 200);
    // On server 2: a player of the pushed stream.
    let far_viewer = connect(&s2).await;
    let mut far = far_viewer.play(&cm.media, "far", cm.media.next_id()).await.unwrap();
    far.wait_for(StreamStatus::Playing, WAIT).await.unwrap();
    assert_eq!(players_of(&s2, "there"), 1, "server 1's pull plays on server 2");

    let asked = Instant::now();
    let status = tokio::task::block_in_place(|| s1.terminate(GRACE + SLACK));
    assert!(status.is_some_and(|s| s.success()), "exit status {status:?} after {:?}", asked.elapsed());

    // Server 1's own clients were told, each with the reason, before the close.
    let last = |s: Option<hopcast::wcs::protocol::StreamInfo>| s.map(|s| (s.status, s.info.unwrap_or_default()));
    let why = reason::SERVER_SHUTDOWN.to_string();
    assert_eq!(last(published.next_status().await), Some((StreamStatus::Unpublished, why.clone())));
    assert_eq!(last(played.next_status().await), Some((StreamStatus::Stopped, why)));
    // The push was unpublished on server 2 (not dropped with its connection): its player
    // stopped, and server 2 logged the agent's own unpublish.
    let stopped = tokio::time::timeout(WAIT, far.next_status()).await.expect("far player told");
    assert_eq!(last(stopped), Some((StreamStatus::Stopped, reason::PUBLISHER_STOP.to_string())));
    // The pull stopped playing on server 2 the same way.
    eventually("the pull's player gone from server 2", || players_of(&s2, "there") == 0).await;
    let log = log_of(&s2);
    assert!(logged(&log, &["stopped by its client", "stream=far", "Unpublished"]), "{log}");
    assert!(logged(&log, &["stopped by its client", "stream=there", "Stopped"]), "{log}");
    let s1_log = log_of(&s1);
    assert!(logged(&s1_log, &["relays ended", "relays=2"]), "{s1_log}");
}

/// A relay whose remote hangs (SIGSTOP) cannot hold the stop past the grace; a second
/// signal ends the process at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_remote_cannot_hold_the_exit_and_a_second_signal_ends_it() {
    for second_signal in [false, true] {
        let (mut s1, s2) = (Server::start(&[]), Server::start(&[]));
        let cm = client_media();
        let (_source, _session, _published) = publish_source(&s1, &cm.media, "cam").await;
        let push = format!(r#"{{"uri":"{}","localStreamName":"cam","remoteStreamName":"far"}}"#, s2.ws_url());
        assert_eq!(rest(&s1, "pull/push", &push).0, 200);
        // Hang it once the push publishes there: a relay still connecting has nothing to
        // wait for.
        eventually("the push publishing on server 2", || {
            let (code, body) = rest(&s2, "stream/find", r#"{"name":"far","published":true}"#);
            code == 200 && body[0]["status"] == "PUBLISHING"
        })
        .await;
        assert!(hopcast::testkit::process::stop_process(s2.pid()), "server 2 did not stop");
        let asked = Instant::now();
        let status = if second_signal {
            unsafe { libc::kill(s1.pid() as i32, libc::SIGTERM) };
            tokio::time::sleep(Duration::from_millis(300)).await;
            // The relay's unpublish waits for the hung remote: still stopping.
            tokio::task::block_in_place(|| s1.terminate(Duration::from_secs(1)))
        } else {
            tokio::task::block_in_place(|| s1.terminate(GRACE + SLACK))
        };
        unsafe { libc::kill(s2.pid() as i32, libc::SIGCONT) };
        let code = status.and_then(|s| s.code());
        if second_signal {
            assert_eq!(code, Some(130), "after {:?}", asked.elapsed());
            assert!(logged(&log_of(&s1), &["second signal"]));
        } else {
            assert_eq!(code, Some(0), "after {:?}", asked.elapsed());
        }
    }
}

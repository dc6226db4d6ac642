//! The cluster, for real: a `nats-server` process, one origin and three edges on
//! loopback. A publisher on the origin is played on every edge with no REST call in
//! between; pulls are shared and released after the last player; a killed edge leaves
//! the node list; an unknown name fails as WCS says.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use hopcast::wcs::client::ClientError;
use hopcast::wcs::protocol::{reason, StreamStatus};
use serde_json::Value;

/// A nats-server child process on a free loopback port, killed on drop.
struct Nats {
    child: Child,
    url: String,
}

impl Nats {
    fn start() -> Nats {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("nats-server is missing: apt-get install nats-server (see README)");
        let child = Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Nats { child, url: format!("nats://127.0.0.1:{port}") }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node(nats: &Nats, role: &str) -> Server {
    Server::start(&[
        "--set",
        "cdn_enabled=true",
        "--set",
        &format!("cdn_role={role}"),
        "--set",
        &format!("cdn.nats_url={}", nats.url),
        "--set",
        "cdn_nodes_timeout=2",
        "--set",
        "cdn.pull_linger_ms=500",
    ])
}

fn get(server: &Server, path: &str) -> (u16, Value) {
    let (code, body) = http(server.http, "GET", path, None);
    (code, if body.is_empty() { Value::Null } else { json(&body) })
}

fn node_count(server: &Server) -> usize {
    get(server, "/rest-api/cdn/show_nodes").1.as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_pull_on_demand_share_the_pull_and_release_it() {
    let nats = Nats::start();
    let origin = node(&nats, "origin");
    let edges: Vec<Server> = (0..3).map(|_| node(&nats, "edge")).collect();
    eventually("every node hears every other", || node_count(&origin) == 4).await;

    let ClientMedia { media, .. } = client_media();
    let (source, _session, _publisher) = publish_source(&origin, &media, "cam").await;

    // Players on every edge, two on the first: no REST call, the edge pulls by itself.
    let mut players = Vec::new();
    for edge in edges.iter().chain([&edges[0]]) {
        let session = connect(edge).await;
        let sink = media.next_id();
        let tap = media.tap(sink);
        let mut player = session.play(&media, "cam", sink).await.unwrap();
        player.wait_for(StreamStatus::Playing, Duration::from_secs(10)).await.unwrap();
        players.push((session, player, tap));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_packets(&media, source, 1, 100).await;
    for (_, _, tap) in players.iter_mut() {
        let (video, audio) = verify_intact(&collect(tap, Duration::from_secs(2)).await);
        assert!(video >= 90 && audio >= 90, "video {video}, audio {audio} of 100 each");
    }
    for edge in &edges {
        let (code, relays) = get(edge, "/rest-api/pull/find_all");
        assert_eq!(code, 200, "{relays}");
        let relays = relays.as_array().unwrap();
        // One pull per edge, however many players it had.
        assert_eq!(relays.len(), 1, "{relays:?}");
        assert_eq!((relays[0]["direction"].as_str(), relays[0]["status"].as_str()), (Some("pull"), Some("PLAYING")));
        let (_, routes) = get(edge, "/rest-api/cdn/show_routes");
        assert!(routes.as_object().unwrap().values().any(|v| v == "cam"), "{routes}");
    }
    // The players stop: after the linger, each edge lets its pull go.
    for (_, player, _) in &players {
        player.stop();
    }
    for edge in &edges {
        eventually("the pull is released", || get(edge, "/rest-api/pull/find_all").0 == 404).await;
    }

    // A name no origin has: the answer WCS gives for an unknown stream.
    let session = connect(&edges[1]).await;
    let sink = media.next_id();
    let refused = session.play(&media, "nobody-publishes-this", sink).await.err();
    assert_eq!(refused, Some(ClientError::Failed(reason::STREAM_NOT_FOUND.into())));

    // An edge killed: it leaves everyone's node list after the timeout.
    let mut edges = edges;
    edges.remove(0).kill();
    eventually("the killed edge leaves the node list", || node_count(&origin) == 3).await;
}

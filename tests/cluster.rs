//! The cluster, for real: a `nats-server` process, one origin and three edges on
//! loopback. A publisher on the origin is played on every edge with no REST call in
//! between; pulls are shared and released after the last player; a killed edge leaves
//! the node list; an unknown name fails as WCS says.

mod common;

use std::time::Duration;

use common::*;
use hopcast::testkit::process::NatsServer as Nats;
use hopcast::wcs::client::ClientError;
use hopcast::wcs::protocol::{reason, StreamStatus};
use serde_json::Value;

fn node(nats: &Nats, role: &str) -> Server {
    node_lingering(nats, role, 500)
}

/// A node keeping pulls `linger_ms` after their last player.
fn node_lingering(nats: &Nats, role: &str, linger_ms: u64) -> Server {
    let linger = format!("cdn.pull_linger_ms={linger_ms}");
    cdn_node(&nats.url, role, &["--set", "cdn_nodes_timeout=2", "--set", &linger])
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
    let (source, _session, publisher) = publish_source(&origin, &media, "cam").await;

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

    // Warm-up: pulled before any player, kept without one, until the origin stops it.
    let (code, body) = http(edges[2].http, "POST", "/rest-api/cdn/warmup", Some(r#"{"streamName":"cam"}"#));
    assert_eq!(code, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(1500)).await; // three lingers, no player
    assert_eq!(get(&edges[2], "/rest-api/pull/find_all").0, 200, "the warm pull was released");
    let (code, body) = http(edges[2].http, "POST", "/rest-api/cdn/warmup", Some(r#"{"streamName":"ghost"}"#));
    assert_eq!((code, json(&body)["error"].as_str()), (404, Some("no origin in the cluster has 'ghost'")));

    // A name no origin has: the answer WCS gives for an unknown stream.
    let session = connect(&edges[1]).await;
    let sink = media.next_id();
    let refused = session.play(&media, "nobody-publishes-this", sink).await.err();
    assert_eq!(refused, Some(ClientError::Failed(reason::STREAM_NOT_FOUND.into())));

    // The publisher stops: the warm pull goes with it.
    publisher.stop();
    eventually("the warm pull ends with its stream", || get(&edges[2], "/rest-api/pull/find_all").0 == 404).await;

    // An edge killed: it leaves everyone's node list after the timeout.
    let mut edges = edges;
    edges.remove(0).kill();
    eventually("the killed edge leaves the node list", || node_count(&origin) == 3).await;
}

fn node_ids_by_uri(server: &Server) -> Vec<(String, String)> {
    let (_, nodes) = get(server, "/rest-api/cdn/show_nodes");
    nodes
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| (n["uri"].as_str().unwrap().into(), n["id"].as_str().unwrap().into()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_origins_one_name_bad_records_and_a_nats_restart() {
    let nats = Nats::start();
    let (o1, o2, edge) = (node(&nats, "origin"), node(&nats, "origin"), node(&nats, "edge"));
    eventually("every node hears every other", || node_count(&edge) == 3).await;

    // Two origins publish one name: the edge pulls from the one with the lowest id, as
    // every edge would.
    let ClientMedia { media, .. } = client_media();
    let (s1, _a, _pa) = publish_source(&o1, &media, "dup").await;
    let (s2, _b, _pb) = publish_source(&o2, &media, "dup").await;
    eventually("the edge hears both origins have it", || {
        let (_, nodes) = get(&edge, "/rest-api/cdn/show_nodes");
        let has = |n: &&Value| n["streams"].as_array().is_some_and(|s| s.iter().any(|s| s == "dup"));
        nodes.as_array().into_iter().flatten().filter(has).count() == 2
    })
    .await;
    let session = connect(&edge).await;
    let sink = media.next_id();
    let mut tap = media.tap(sink);
    let mut player = session.play(&media, "dup", sink).await.unwrap();
    player.wait_for(StreamStatus::Playing, Duration::from_secs(10)).await.unwrap();
    let (_, relays) = get(&edge, "/rest-api/pull/find_all");
    let pulled_from = relays[0]["uri"].as_str().unwrap().to_string();
    let lowest = node_ids_by_uri(&edge)
        .into_iter()
        .filter(|(uri, _)| *uri == o1.ws_url() || *uri == o2.ws_url())
        .min_by(|a, b| a.1.cmp(&b.1))
        .unwrap();
    assert_eq!(pulled_from, lowest.0);
    let source = if pulled_from == o1.ws_url() { s1 } else { s2 };

    // A malformed record from "another node": a warning, nothing else.
    let raw = async_nats::connect(nats.url.as_str()).await.unwrap();
    raw.publish("hopcast.node.bogus", "{not json".into()).await.unwrap();
    raw.publish("hopcast.node.bogus", r#"{"id":"","origin":true}"#.into()).await.unwrap();
    raw.flush().await.unwrap();
    eventually("the edge warns about the bad record", || {
        std::fs::read_to_string(&edge.log).unwrap().contains("ignoring a cluster record")
    })
    .await;
    assert_eq!(node_count(&edge), 3);

    // NATS dies: the running pull keeps flowing (relays do not need NATS), and a play
    // of a name the edge lacks fails with WCS's reason instead of hanging.
    let port = nats.port;
    drop(raw);
    drop(nats);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    received_after(&media, source, &mut tap, 1).await;
    let lookup = session.play(&media, "only-after-restart", media.next_id()).await;
    assert!(
        matches!(lookup, Err(ClientError::Failed(ref why)) if why == reason::STREAM_NOT_FOUND),
        "{:?}",
        lookup.err()
    );
    player.stop();

    // NATS restarted on the same address: the nodes come back, new plays work.
    let _nats = Nats::start_on(port);
    let (source, _c, _pc) = publish_source(&o1, &media, "after-restart").await;
    eventually("the edge hears of the new stream", || {
        let (_, nodes) = get(&edge, "/rest-api/cdn/show_nodes");
        nodes
            .as_array()
            .into_iter()
            .flatten()
            .any(|n| n["streams"].as_array().unwrap().iter().any(|s| s == "after-restart"))
    })
    .await;
    assert_plays(&edge, &media, "after-restart", source, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_nats_is_unreachable_starts_and_serves_alone() {
    let server = Server::start(&[
        "--set",
        "cdn_enabled=true",
        "--set",
        "cdn_role=edge",
        "--set",
        "cdn.nats_url=nats://127.0.0.1:9",
    ]);
    // Up and serving (a local publisher and player work), not in a cluster.
    let ClientMedia { media, .. } = client_media();
    let (source, _s, _p) = publish_source(&server, &media, "local").await;
    assert_plays(&server, &media, "local", source, 1).await;
    assert_eq!(get(&server, "/rest-api/cdn/show_nodes").0, 404);
    // And a bad role is refused at start, naming the key.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_hopcast"))
        .args(["--set", "cdn_enabled=true", "--set", "cdn_role=transcoder"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cdn_role"));
    // And a NATS URL that does not parse stops the start with the key's name.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_hopcast"))
        .args(["--set", "cdn_enabled=true", "--set", "cdn.nats_url=nats://[not-a-host"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1), "{}", String::from_utf8_lossy(&bad.stderr));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cdn.nats_url"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_dies_its_players_wait_and_resume_from_the_new_origin() {
    let nats = Nats::start();
    // A linger far longer than the test: only the lost origin can release the pull.
    let (mut o1, o2, edge) = (node(&nats, "origin"), node(&nats, "origin"), node_lingering(&nats, "edge", 600_000));
    eventually("every node hears every other", || node_count(&edge) == 3).await;
    let ClientMedia { media, .. } = client_media();
    let (s1, _a, _p1) = publish_source(&o1, &media, "moving").await;
    let session = connect(&edge).await;
    let sink = media.next_id();
    let mut tap = media.tap(sink);
    let mut player = session.play(&media, "moving", sink).await.unwrap();
    player.wait_for(StreamStatus::Playing, Duration::from_secs(10)).await.unwrap();
    let before = received_after(&media, s1, &mut tap, 1).await;

    // The origin dies: the edge's player hears PLAYBACK_PROBLEM with a reason, not
    // silence, and not a final status: it waits for the stream to come back.
    o1.kill();
    let problem = player.wait_for(StreamStatus::PlaybackProblem, Duration::from_secs(20)).await.unwrap();
    assert!(problem.info.is_some_and(|i| !i.is_empty()), "no reason given");

    // The stream comes back on the other origin: the same player resumes, no new play,
    // and its sequence numbers go on from where they stopped.
    let (source, _b, _p2) = publish_source(&o2, &media, "moving").await;
    player.wait_for(StreamStatus::Playing, Duration::from_secs(20)).await.unwrap();
    let after = received_after(&media, source, &mut tap, 1).await;
    assert!(after.first > before.last && after.first <= before.last + 50, "{before:?} then {after:?}");
    let (_, relays) = get(&edge, "/rest-api/pull/find_all");
    assert_eq!(relays[0]["uri"].as_str(), Some(o2.ws_url().as_str()), "{relays}");
    assert!(relays[0]["reconnects"].as_u64() >= Some(1), "{relays}");

    // A player joining now plays too.
    assert_plays(&edge, &media, "moving", source, 1000).await;
    let (_, relays) = get(&edge, "/rest-api/pull/find_all");
    assert_eq!(relays[0]["uri"].as_str(), Some(o2.ws_url().as_str()), "{relays}");
}

/// A node stopped with SIGTERM says it leaves: the others forget it at once, long before
/// the silence timeout would (60 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_leaves_the_cluster_at_once() {
    let nats = Nats::start();
    let slow_expiry = ["--set", "cdn_nodes_timeout=60"];
    let mut origin = cdn_node(&nats.url, "origin", &slow_expiry);
    let edge = cdn_node(&nats.url, "edge", &slow_expiry);
    eventually("the nodes hear each other", || node_count(&edge) == 2).await;
    let status = tokio::task::block_in_place(|| origin.terminate(Duration::from_secs(10)));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let mut left = false;
    for _ in 0..50 {
        if node_count(&edge) == 1 {
            left = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(left, "the edge still lists the stopped origin 5 s later");
}

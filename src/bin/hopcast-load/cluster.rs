//! The cluster: time from `playStream` on an edge that does not have the stream to the
//! player's first keyframe (the edge looks the origin up, pulls over a relay, asks for a
//! keyframe across the hop). A real nats-server, one origin, three edges; every trial is
//! a cold pull (`cdn.pull_linger_ms=0`, and the next trial waits for the release).

use std::time::Duration;

use hopcast::testkit::process::{http_request, NatsServer};
use tokio::sync::watch;

use crate::common::*;

pub async fn run(trials: usize, players: usize, seconds: u64) {
    let nats = NatsServer::start();
    let settings = |role: &str| {
        vec![
            "--set".to_string(),
            "cdn_enabled=true".into(),
            "--set".into(),
            format!("cdn_role={role}"),
            "--set".into(),
            format!("cdn.nats_url={}", nats.url),
            "--set".into(),
            "cdn.pull_linger_ms=0".into(),
        ]
    };
    let start = |role: &str| {
        let args = settings(role);
        start_server(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let origin = start("origin");
    let edges: Vec<_> = (0..3).map(|_| start("edge")).collect();
    // Let every node hear the others.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut client = Client::new();
    let (_stop_tx, stop_rx) = watch::channel(false);
    let (_rec_tx, rec_rx) = watch::channel(false);
    let (_done_tx, done_rx) = watch::channel(false);
    let _publisher = client.publish(&origin.ws_url(), "cluster-src", 600_000, stop_rx).await;

    if players > 0 {
        let (one, cluster) = cost(&client, &origin, &edges, players, seconds).await;
        println!(
            "cluster: {players} players: {cluster:.1} µs of CPU (all 4 servers) per packet delivered, against {one:.1} µs on one server (same players, same run)"
        );
    }

    let (mut keyframe, mut packet) = (Vec::new(), Vec::new());
    for i in 0..trials {
        let edge = &edges[i % edges.len()];
        eprint!("\r  cluster: trial {}/{trials}   ", i + 1);
        let mut p = play(&client, &edge.ws_url(), "cluster-src", rec_rx.clone(), done_rx.clone()).await.expect("play");
        if let Some(t) = first_packet(&mut p).await {
            packet.push((ms(t) * 1000.0) as u32);
        }
        let got = tokio::time::timeout(WAIT, p.first.wait_for(|(_, k)| k.is_some())).await;
        if let Some(t) = got.ok().and_then(|r| r.ok()).and_then(|v| v.1) {
            keyframe.push((ms(t) * 1000.0) as u32);
        }
        p.leg.end();
        // Cold again: the edge releases the pull once its player is gone.
        for _ in 0..100 {
            if http_request(edge.http, "GET", "/rest-api/pull/find_all", None).0 == 404 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    eprintln!();
    let pct = |v: &mut Vec<u32>, p: f64| percentile(v, p) as f64 / 1000.0;
    println!(
        "cluster: play on an edge without the stream -> first packet p50 {:.1} ms, first keyframe p50 {:.1} ms, max {:.1} ms ({} cold pulls over 3 edges)",
        pct(&mut packet, 50.0),
        pct(&mut keyframe, 50.0),
        pct(&mut keyframe, 100.0),
        keyframe.len()
    );
}

/// Server CPU per packet a player received: all of them on the origin, then spread over
/// the edges (CPU of all four servers summed). Returns (one server, cluster), µs.
async fn cost(
    client: &Client,
    origin: &hopcast::testkit::process::ServerProcess,
    edges: &[hopcast::testkit::process::ServerProcess],
    players: usize,
    seconds: u64,
) -> (f64, f64) {
    let servers: Vec<&hopcast::testkit::process::ServerProcess> = std::iter::once(origin).chain(edges).collect();
    let mut results = Vec::new();
    for spread in [false, true] {
        let (rec_tx, rec_rx) = watch::channel(false);
        let (done_tx, done_rx) = watch::channel(false);
        let mut all = Vec::new();
        for i in 0..players {
            let url = if spread { edges[i % edges.len()].ws_url() } else { origin.ws_url() };
            match play(client, &url, "cluster-src", rec_rx.clone(), done_rx.clone()).await {
                Ok(p) => all.push(p),
                Err(e) => eprintln!("\nplayer failed: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let cpu0: Duration = servers.iter().filter_map(|s| s.cpu_time()).sum();
        let _ = rec_tx.send(true);
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let _ = rec_tx.send(false);
        let cpu = servers.iter().filter_map(|s| s.cpu_time()).sum::<Duration>().saturating_sub(cpu0);
        let _ = done_tx.send(true);
        let mut packets = 0;
        for p in all {
            packets += p.stats.await.unwrap_or_default().packets;
            p.leg.end();
        }
        results.push(cpu.as_secs_f64() * 1e6 / packets.max(1) as f64);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    (results[0], results[1])
}

//! Relay hops: a publisher on server 1, `/pull/push` to server 2 and on to server 3;
//! one player on each. Added delay per hop, time to the first keyframe at the far end,
//! and how long a relay takes to recover when its remote server restarts.

use std::path::Path;
use std::time::{Duration, Instant};

use hopcast::media::latency::Histogram;
use hopcast::testkit::process::latency_in;
use tokio::sync::watch;

use crate::common::*;

const FAST: [&str; 2] = ["--set", "relay.reconnect_max_ms=500"];

fn push(from: &hopcast::testkit::process::ServerProcess, to_url: &str, local: &str, remote: &str) {
    let body = format!(r#"{{"uri":"{to_url}","localStreamName":"{local}","remoteStreamName":"{remote}"}}"#);
    let (code, answer) = from.rest("pull/push", &body);
    assert_eq!(code, 200, "relay failed: {answer}");
}

fn free_port() -> String {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string()
}

pub async fn run(seconds: u64, bitrate: u64, keyframe_trials: usize, csv: &Path) {
    let s1 = start_server(&FAST);
    let ports: Vec<String> = (0..5).map(|_| free_port()).collect();
    let fixed = [
        "--ws-port",
        &ports[0],
        "--wss-port",
        &ports[1],
        "--http-port",
        &ports[2],
        "--https-port",
        &ports[3],
        "--media-port",
        &ports[4],
    ];
    let mut s2 = start_server_on(&fixed, &FAST);
    let s3 = start_server(&FAST);
    let mut client = Client::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (rec_tx, rec_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(false);
    let _publisher = client.publish(&s1.ws_url(), "origin", bitrate, stop_rx).await;
    push(&s1, &s2.ws_url(), "origin", "hop1");
    push(&s2, &s3.ws_url(), "hop1", "hop2");

    let mut players = Vec::new();
    for (server, name) in [(&s1, "origin"), (&s2, "hop1"), (&s3, "hop2")] {
        players.push(play(&client, &server.ws_url(), name, rec_rx.clone(), done_rx.clone()).await.expect("play"));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let servers = [s1.pid(), s2.pid(), s3.pid()];
    let waits0 = servers.map(media_thread_wait);
    let media_stats = || [&s1, &s2, &s3].map(|s| s.media_stats().unwrap_or_default());
    let media0 = media_stats();
    let _ = rec_tx.send(true);
    for s in 0..seconds {
        eprint!("\r  relay: measuring {}/{seconds} s   ", s + 1);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let _ = rec_tx.send(false);
    let waits = [0, 1, 2].map(|i| {
        let (w1, n1) = media_thread_wait(servers[i]);
        (w1.saturating_sub(waits0[i].0), n1.saturating_sub(waits0[i].1))
    });
    let media1 = media_stats();
    let since = |name: &str| [0, 1, 2].map(|i| latency_in(&media1[i], name).since(&latency_in(&media0[i], name)));
    let (forwarding, reading) = (since("forwardLatency"), since("readLatency"));
    let _ = done_tx.send(true);
    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    let mut loss = Vec::new();
    let mut arrivals = Vec::new();
    for p in players {
        let mut s = p.stats.await.unwrap_or_default();
        loss.push(1.0 - s.packets as f64 / s.expected().max(1) as f64);
        p50.push(percentile(&mut s.delays_us, 50.0) as f64 / 1000.0);
        p99.push(percentile(&mut s.delays_us, 99.0) as f64 / 1000.0);
        arrivals.push(s.arrivals);
    }
    let hops = [added_by_hop(&arrivals[0], &arrivals[1]), added_by_hop(&arrivals[1], &arrivals[2])];

    // A player starting at the far end (two hops): time to its first keyframe.
    // The sender must live: a closed channel would end the players at once.
    let (_done_tx, done_rx) = watch::channel(false);
    let mut keyframes = Vec::new();
    for i in 0..keyframe_trials {
        eprint!("\r  relay: first keyframe {}/{keyframe_trials}   ", i + 1);
        let mut p = play(&client, &s3.ws_url(), "hop2", rec_rx.clone(), done_rx.clone()).await.expect("play");
        if let Some(t) = first_keyframe(&mut p).await {
            keyframes.push(t);
        }
        p.leg.end();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Server 2 restarts: time until the relay into it publishes again.
    eprint!("\r  relay: restarting server 2          ");
    s2.kill();
    let lost = Instant::now();
    while Instant::now().duration_since(lost) < Duration::from_secs(10) {
        let (_, body) = s1.rest("pull/find", r#"{"remoteStreamName":"hop1"}"#);
        if body.contains("FAILED") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s2 = start_server_on(&fixed, &FAST);
    let restarted = Instant::now();
    let mut recovery = None;
    while restarted.elapsed() < Duration::from_secs(30) {
        let (_, body) = s1.rest("pull/find", r#"{"remoteStreamName":"hop1"}"#);
        if body.contains("PUBLISHING") {
            recovery = Some(restarted.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(true);
    drop(s2);
    eprintln!("\r                                              ");

    let (kf_median, kf_max) = median_max(keyframes.clone());
    println!("\nrelay hops (publisher on server 1, push to 2, push to 3; one player per server)");
    println!("{:>22} {:>10} {:>10} {:>8}", "player on", "p50 ms", "p99 ms", "loss %");
    for (i, name) in ["server 1 (direct)", "server 2 (1 hop)", "server 3 (2 hops)"].iter().enumerate() {
        println!("{:>22} {:>10.2} {:>10.2} {:>8.2}", name, p50[i], p99[i], loss[i] * 100.0);
    }
    for (i, hop) in hops.iter().enumerate() {
        println!(
            "added by hop {}->{} (per packet, {} packets): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            i + 1,
            i + 2,
            hop.packets,
            hop.p50_ms,
            hop.p99_ms,
            hop.max_ms
        );
    }
    println!("inside each server, per media packet (from /rest-api/stats):");
    for (i, (f, r)) in forwarding.iter().zip(&reading).enumerate() {
        let ms = |h: &Histogram, p: f64| h.percentile_us(p) as f64 / 1000.0;
        println!(
            "  server {}: kernel receipt -> every copy sent p50 {:.2} / p99 {:.2} / max {:.2} ms; of which waiting to be read p50 {:.2} / p99 {:.2} ms ({} packets)",
            i + 1,
            ms(f, 50.0),
            ms(f, 99.0),
            ms(f, 100.0),
            ms(r, 50.0),
            ms(r, 99.0),
            f.count()
        );
    }
    for (i, (wait, slices)) in waits.iter().enumerate() {
        println!(
            "server {} media thread: waited for a CPU {:.1} ms in all, {:.0} µs on average over {} wakeups",
            i + 1,
            ms(*wait),
            wait.as_secs_f64() * 1e6 / (*slices).max(1) as f64,
            slices
        );
    }
    println!(
        "first keyframe two hops away: median {kf_median:.0} ms, max {kf_max:.0} ms ({} of {keyframe_trials} trials)",
        keyframes.len()
    );
    match recovery {
        Some(r) => {
            println!("relay recovery after server 2 restart: {:.0} ms (reconnect backoff capped at 500 ms)", ms(r))
        }
        None => println!("relay recovery after server 2 restart: not within 30 s"),
    }
    let row = format!(
        "{},relay,{:.3},{:.3},{:.3},{:.3},{:.0},{:.0},{}",
        timestamp(),
        hops[0].p50_ms,
        hops[0].p99_ms,
        hops[1].p50_ms,
        hops[1].p99_ms,
        kf_median,
        kf_max,
        recovery.map(|r| format!("{:.0}", ms(r))).unwrap_or_else(|| "none".into())
    );
    append_csv(
        &csv.with_file_name("relay.csv"),
        "unix_time,scenario,hop1_p50_ms,hop1_p99_ms,hop2_p50_ms,hop2_p99_ms,first_keyframe_median_ms,first_keyframe_max_ms,recovery_ms",
        &row,
    );
}

struct HopDelay {
    packets: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// The delay a hop adds, packet by packet: the same packet's arrival at the player
/// behind the hop minus its arrival at the player before it (both players live in this
/// process, so the publisher's own jitter cancels out).
fn added_by_hop(before: &[(u64, u32)], after: &[(u64, u32)]) -> HopDelay {
    let before: std::collections::HashMap<u64, u32> = before.iter().copied().collect();
    let mut added: Vec<u32> =
        after.iter().filter_map(|(key, delay)| before.get(key).map(|b| delay.saturating_sub(*b))).collect();
    let max_ms = added.iter().max().copied().unwrap_or(0) as f64 / 1000.0;
    HopDelay {
        packets: added.len(),
        p50_ms: percentile(&mut added, 50.0) as f64 / 1000.0,
        p99_ms: percentile(&mut added, 99.0) as f64 / 1000.0,
        max_ms,
    }
}

/// (time runnable but waiting for a CPU, times scheduled) of a server's media thread.
fn media_thread_wait(pid: u32) -> (Duration, u64) {
    hopcast::testkit::process::thread_schedstat(pid, "hopcast-media").map(|(_, w, n)| (w, n)).unwrap_or_default()
}

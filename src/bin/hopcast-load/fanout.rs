//! Fan-out: one publisher, N players on one server. Figures come from the server
//! process's own CPU counters and from what the players received.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::sync::watch;

use hopcast::media::latency::Histogram;
use hopcast::testkit::process::{cpu_time, latency_in, rss};

use crate::baseline;
use crate::common::*;

pub struct FanoutResult {
    pub label: &'static str,
    pub players: usize,
    pub seconds: f64,
    pub packets: u64,
    pub bytes: u64,
    pub cpu: Duration,
    pub loss: f64,
    pub p50_us: u32,
    pub p99_us: u32,
    pub rss_per_player: i64,
    pub baseline_us: f64,
    /// Datagrams the server sent per system call (sendmmsg batching and GSO together).
    pub datagrams_per_call: f64,
    /// Datagrams per sendmmsg message: above 1 where UDP GSO joined a player's packets.
    pub datagrams_per_message: f64,
    /// Inside the server: kernel receipt of a packet to every copy of it sent.
    pub forwarding: Histogram,
}

impl FanoutResult {
    pub fn us_per_packet(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.packets.max(1) as f64
    }
    /// Forwarded packets per second per fully used core.
    pub fn pps_per_core(&self) -> f64 {
        1e6 / self.us_per_packet().max(1e-9)
    }
    pub fn gbps_per_core(&self) -> f64 {
        let avg = self.bytes as f64 / self.packets.max(1) as f64;
        self.pps_per_core() * avg * 8.0 / 1e9
    }
}

pub const HEADER: &str =
    "unix_time,scenario,players,seconds,packets,pps,cpu_s,us_per_packet,baseline_us,ratio,pps_per_core,gbps_per_core,loss_pct,p50_us,p99_us,rss_per_player_kib,datagrams_per_call,datagrams_per_message,server_p50_us,server_p99_us";

/// Where the fan-out runs: a hopcast this tool starts, driven over WCS's protocol or
/// over WHIP/WHEP; or any WHIP/WHEP server already running, whose CPU is read by PID.
#[derive(Clone)]
pub enum Target {
    Own { whip: bool },
    External { whip: String, whep: String, pid: u32 },
}

impl Target {
    fn label(&self) -> &'static str {
        match self {
            Target::Own { whip: false } => "fanout",
            Target::Own { whip: true } => "fanout-whip",
            Target::External { .. } => "fanout-external",
        }
    }
}

pub async fn run(target: &Target, players: usize, seconds: u64, bitrate: u64) -> FanoutResult {
    let server = match target {
        Target::Own { .. } => Some(start_server(&[])),
        Target::External { .. } => None,
    };
    let (publish_url, play_url, pid) = match (target, &server) {
        (Target::Own { whip: false }, Some(s)) => (s.ws_url(), s.ws_url(), s.pid()),
        (Target::Own { whip: true }, Some(s)) => {
            (format!("http://127.0.0.1:{}/whip", s.http), format!("http://127.0.0.1:{}/whep", s.http), s.pid())
        }
        (Target::External { whip, whep, pid }, _) => (whip.clone(), whep.clone(), *pid),
        _ => unreachable!("an own target has a server"),
    };
    let media_stats = || server.as_ref().and_then(|s| s.media_stats()).unwrap_or_default();
    let mut client = Client::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (rec_tx, rec_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(false);
    let publisher = client.publish(&publish_url, "bench", bitrate, stop_rx).await;
    let rss_before = rss(pid).unwrap_or(0) as i64;

    let mut all = Vec::new();
    for chunk in (0..players).collect::<Vec<_>>().chunks(16) {
        let joins = chunk.iter().map(|_| play(&client, &play_url, "bench", rec_rx.clone(), done_rx.clone()));
        for p in join_all(joins).await {
            match p {
                Ok(p) => all.push(p),
                Err(e) => eprintln!("\nplayer failed: {e}"),
            }
        }
        eprint!("\r  fan-out {players}: {}/{players} players playing   ", all.len());
    }
    // Players over WHEP have no PLAYING to wait for: wait for their first packets.
    for p in &all {
        let mut first = p.first.clone();
        let _ = tokio::time::timeout(WAIT, first.wait_for(|(packet, _)| packet.is_some())).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let media0 = media_stats();
    let cpu0 = cpu_time(pid).unwrap_or_default();
    let t0 = Instant::now();
    let _ = rec_tx.send(true);
    for s in 0..seconds {
        eprint!("\r  fan-out {players}: measuring {}/{seconds} s          ", s + 1);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let _ = rec_tx.send(false);
    let cpu = cpu_time(pid).unwrap_or_default().saturating_sub(cpu0);
    let media1 = media_stats();
    let (sent0, sent1) = (send_counters(&media0), send_counters(&media1));
    let forwarding = latency_in(&media1, "forwardLatency").since(&latency_in(&media0, "forwardLatency"));
    let elapsed = t0.elapsed().as_secs_f64();
    let rss_after = rss(pid).unwrap_or(0) as i64;
    let _ = done_tx.send(true);

    let mut packets = 0;
    let mut bytes = 0;
    let mut expected = 0;
    let mut delays = Vec::new();
    for p in all {
        let s = p.stats.await.unwrap_or_default();
        packets += s.packets;
        bytes += s.bytes;
        expected += s.expected();
        delays.extend(s.delays_us);
        p.leg.end();
    }
    let _ = stop_tx.send(true);
    let (video_sent, audio_sent) = publisher.pump.await.unwrap_or_default();
    // Stopped gracefully, not killed: an instrumented server (scripts/pgo) writes its
    // profile on exit; and it is idle while the baseline is measured.
    if let Some(mut server) = server {
        server.terminate(Duration::from_secs(5));
    }
    let in_pps = (video_sent + audio_sent) as f64 / (elapsed + 1.0 + players as f64 / 100.0).max(1.0);
    eprint!("\r  fan-out {players}: baseline...                    ");
    let avg = bytes as f64 / packets.max(1) as f64;
    let baseline_us = baseline::cost_per_packet(players, Duration::from_secs(seconds.min(5)), in_pps, avg as usize);
    eprintln!("\r                                                  ");
    FanoutResult {
        label: target.label(),
        players,
        seconds: elapsed,
        packets,
        bytes,
        cpu,
        loss: 1.0 - packets as f64 / expected.max(1) as f64,
        p50_us: percentile(&mut delays, 50.0),
        p99_us: percentile(&mut delays, 99.0),
        rss_per_player: (rss_after - rss_before) / players.max(1) as i64,
        baseline_us,
        datagrams_per_call: (sent1.0 - sent0.0) as f64 / (sent1.2 - sent0.2).max(1) as f64,
        datagrams_per_message: (sent1.0 - sent0.0) as f64 / (sent1.1 - sent0.1).max(1) as f64,
        forwarding,
    }
}

/// (datagrams, messages, send system calls) so far.
fn send_counters(stats: &serde_json::Value) -> (u64, u64, u64) {
    let field = |name: &str| stats.get(name).and_then(|v| v.as_u64()).unwrap_or(0);
    (field("datagramsSent"), field("messagesSent"), field("sendCalls"))
}

pub fn report(results: &[FanoutResult], csv: &Path) {
    let over = match results.first().map_or("fanout", |r| r.label) {
        "fanout-whip" => " over WHIP/WHEP",
        "fanout-external" => " against another server over WHIP/WHEP",
        _ => "",
    };
    println!("\nfan-out{over} (1 publisher, N players, one server)");
    println!(
        "{:>7} {:>10} {:>10} {:>9} {:>9} {:>7} {:>11} {:>9} {:>7} {:>9} {:>11} {:>11} {:>10} {:>10} {:>10}",
        "players",
        "pkts/s",
        "cpu µs/pkt",
        "base µs",
        "ratio",
        "loss%",
        "pkts/s/core",
        "Gb/s/core",
        "p50 ms",
        "p99 ms",
        "RSS/plyr",
        "dgrams/call",
        "dgrams/msg",
        "srv p50 ms",
        "srv p99 ms"
    );
    for r in results {
        let pps = r.packets as f64 / r.seconds;
        let ratio = r.us_per_packet() / r.baseline_us.max(1e-9);
        println!(
            "{:>7} {:>10.0} {:>10.2} {:>9.2} {:>8.2}x {:>7.2} {:>11.0} {:>9.2} {:>7.2} {:>9.2} {:>7} KiB {:>11.1} {:>10.2} {:>10.2} {:>10.2}",
            r.players,
            pps,
            r.us_per_packet(),
            r.baseline_us,
            ratio,
            r.loss * 100.0,
            r.pps_per_core(),
            r.gbps_per_core(),
            r.p50_us as f64 / 1000.0,
            r.p99_us as f64 / 1000.0,
            r.rss_per_player / 1024,
            r.datagrams_per_call,
            r.datagrams_per_message,
            r.forwarding.percentile_us(50.0) as f64 / 1000.0,
            r.forwarding.percentile_us(99.0) as f64 / 1000.0
        );
        let row = format!(
            "{},{},{},{:.1},{},{:.0},{:.3},{:.3},{:.3},{:.2},{:.0},{:.3},{:.3},{},{},{},{:.2},{:.2},{},{}",
            timestamp(),
            r.label,
            r.players,
            r.seconds,
            r.packets,
            pps,
            r.cpu.as_secs_f64(),
            r.us_per_packet(),
            r.baseline_us,
            ratio,
            r.pps_per_core(),
            r.gbps_per_core(),
            r.loss * 100.0,
            r.p50_us,
            r.p99_us,
            r.rss_per_player / 1024,
            r.datagrams_per_call,
            r.datagrams_per_message,
            r.forwarding.percentile_us(50.0),
            r.forwarding.percentile_us(99.0)
        );
        append_csv(csv, HEADER, &row);
    }
}

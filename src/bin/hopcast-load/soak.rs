//! Soak: churn sessions, publishers, players and relays on two servers for M minutes and
//! sample what a leak would grow (RSS, open files, threads, tokio tasks, WebRTC peers,
//! sessions). Samples are taken between cycles, after everything of the cycle has been
//! closed and given a moment to go, so a flat line means nothing is left behind.
//!
//! One cycle: a publisher on server A (WCS signaling, or WHIP every other cycle), three
//! WCS players and one WHEP player on A, a relay to server B (push from A, or pull by B,
//! alternating) with one player on B, two sessions that connect and leave, one that
//! vanishes without a close; then everything ends (the publisher every third cycle by
//! dropping its connection rather than unpublishing).

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use hopcast::testkit::process::{self, ServerProcess};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

const SETTINGS: [&str; 2] = ["--set", "relay.reconnect_max_ms=500"];

/// One sample of one server.
#[derive(Clone, Copy, Default)]
struct Sample {
    rss_kib: u64,
    fds: u64,
    threads: u64,
    tasks: u64,
    sessions: u64,
    streams: u64,
    relays: u64,
    peers: u64,
}

impl Sample {
    fn of(server: &ServerProcess) -> Sample {
        let pid = server.pid();
        let count = |dir: String| std::fs::read_dir(dir).map(|d| d.count() as u64).unwrap_or(0);
        let (code, body) = process::http_request(server.http, "GET", "/rest-api/stats", None);
        let stats: serde_json::Value =
            if code == 200 { serde_json::from_str(&body).unwrap_or_default() } else { Default::default() };
        let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
        Sample {
            rss_kib: server.rss().unwrap_or(0) / 1024,
            fds: count(format!("/proc/{pid}/fd")),
            threads: count(format!("/proc/{pid}/task")),
            tasks: n(&stats["tasks"]),
            sessions: n(&stats["sessions"]),
            streams: n(&stats["streams"]),
            relays: n(&stats["relays"]),
            peers: n(&stats["media"]["peers"]),
        }
    }

    fn fields(&self) -> [u64; 8] {
        [self.rss_kib, self.fds, self.threads, self.tasks, self.sessions, self.streams, self.relays, self.peers]
    }
}

const FIELDS: [&str; 8] = ["rss_kib", "fds", "threads", "tasks", "sessions", "streams", "relays", "peers"];

#[derive(Default)]
struct Tally {
    cycles: u64,
    plays: u64,
    failed: u64,
}

pub async fn run(minutes: f64, sample_every: Duration, pause: Duration, bitrate: u64, csv: &Path) {
    if let Some(dir) = csv.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::remove_file(csv);
    let header = format!("elapsed_s,server,{},cycles,plays,failed", FIELDS.join(","));
    let a = start_server(&SETTINGS);
    let b = start_server(&SETTINGS);
    let players = Client::new();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(minutes * 60.0);
    let mut tally = Tally::default();
    let mut samples: Vec<(f64, [Sample; 2])> = Vec::new();
    let mut next_sample = started;
    println!(
        "soak: {minutes} min of churn on two servers; samples every {} s into {}",
        sample_every.as_secs(),
        csv.display()
    );
    while Instant::now() < deadline {
        cycle(&a, &b, &players, tally.cycles, bitrate, &mut tally).await;
        tally.cycles += 1;
        tokio::time::sleep(pause).await;
        if Instant::now() >= next_sample {
            // Let the cycle's closes land: sessions, peers and tasks go asynchronously.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let t = started.elapsed().as_secs_f64();
            let s = [Sample::of(&a), Sample::of(&b)];
            for (name, s) in ["A", "B"].iter().zip(&s) {
                let values: Vec<String> = s.fields().iter().map(u64::to_string).collect();
                let row =
                    format!("{t:.0},{name},{},{},{},{}", values.join(","), tally.cycles, tally.plays, tally.failed);
                append_csv(csv, &header, &row);
            }
            eprint!(
                "\r  soak: {:.1}/{minutes} min, {} cycles, {} plays ({} failed); A: {} MiB, {} fds, {} peers   ",
                t / 60.0,
                tally.cycles,
                tally.plays,
                tally.failed,
                s[0].rss_kib / 1024,
                s[0].fds,
                s[0].peers
            );
            samples.push((t, s));
            next_sample += sample_every;
        }
    }
    eprintln!();
    report(&samples, &tally);
    // The churn has stopped: every session, stream, relay and peer must go. Sessions
    // whose client vanished go when their keep-alive or ICE gives up.
    let quiet = Instant::now();
    let left = loop {
        let s = [Sample::of(&a), Sample::of(&b)];
        let busy = s.iter().any(|s| s.sessions + s.streams + s.relays + s.peers > 0);
        if !busy || quiet.elapsed() > Duration::from_secs(120) {
            break s;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    for (name, (s, server)) in ["A", "B"].iter().zip(left.iter().zip([&a, &b])) {
        if s.sessions + s.streams > 0 {
            let (_, streams) = process::http_request(server.http, "GET", "/rest-api/stream/find_all", None);
            let (_, sessions) = process::http_request(server.http, "GET", "/rest-api/connection/find_all", None);
            println!("server {name} still holds streams {streams}\n  and sessions {sessions}");
        }
        println!(
            "after the churn, server {name} holds {} sessions, {} streams, {} relays, {} peers, {} tasks ({:.0} s later)",
            s.sessions,
            s.streams,
            s.relays,
            s.peers,
            s.tasks,
            quiet.elapsed().as_secs_f64()
        );
    }
}

/// One cycle of churn; the players' failures are counted, never fatal (a soak reports).
async fn cycle(a: &ServerProcess, b: &ServerProcess, players: &Client, i: u64, bitrate: u64, tally: &mut Tally) {
    let name = format!("soak{i}");
    // Even cycles: a WCS publisher and a push from A; odd: WHIP and a pull by B.
    let even = i.is_multiple_of(2);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (_rec_tx, rec_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(false);
    let mut publisher_client = Client::new();
    let publish_url = if even { a.ws_url() } else { format!("http://127.0.0.1:{}/whip", a.http) };
    let publisher = publisher_client.publish(&publish_url, &name, bitrate, stop_rx).await;

    // The relay: A pushes to B, or B pulls from A.
    let far = format!("{name}-far");
    let body = format!(
        r#"{{"uri":"{}","localStreamName":"{}","remoteStreamName":"{}"}}"#,
        if even { b.ws_url() } else { a.ws_url() },
        if even { &name } else { &far },
        if even { &far } else { &name }
    );
    let (relay_server, relay_call) = if even { (a, "pull/push") } else { (b, "pull/pull") };
    let (code, answer) = relay_server.rest(relay_call, &body);
    if code != 200 {
        eprintln!("\nsoak: {relay_call} refused: {code} {answer}");
        tally.failed += 1;
    }

    let whep = format!("http://127.0.0.1:{}/whep", a.http);
    let targets = [(a.ws_url(), &name), (a.ws_url(), &name), (a.ws_url(), &name), (whep, &name), (b.ws_url(), &far)];
    let mut held = Vec::new();
    for (url, stream) in &targets {
        tally.plays += 1;
        match play_until_media(players, url, stream, rec_rx.clone(), done_rx.clone()).await {
            Some(p) => held.push(p),
            None => tally.failed += 1,
        }
    }

    // Sessions that come and go without media: two polite, one that just vanishes.
    for polite in [true, true, false] {
        if let Ok((mut ws, _)) = tokio_tungstenite::connect_async(a.ws_url().as_str()).await {
            let hello = r#"{"message":"connection","data":[{"appKey":"defaultApp"}]}"#;
            let _ = ws.send(Message::Text(hello.into())).await;
            if polite {
                let _ = ws.close(None).await;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    for p in &held {
        p.leg.end();
    }
    let _ =
        relay_server.rest("pull/terminate", &format!(r#"{{"localStreamName":"{}"}}"#, if even { &name } else { &far }));
    let _ = done_tx.send(true);
    let _ = stop_tx.send(true);
    if !(i + 1).is_multiple_of(3) {
        publisher.end();
    }
    drop(publisher);
    drop(publisher_client);
    drop(held);
}

/// Play and wait for the first media packet (a player that never gets one failed).
async fn play_until_media(
    client: &Client,
    url: &str,
    name: &str,
    recording: watch::Receiver<bool>,
    done: watch::Receiver<bool>,
) -> Option<Player> {
    let mut player = match play(client, url, name, recording, done).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("\nsoak: play of {name} at {url} failed: {e}");
            return None;
        }
    };
    match first_packet(&mut player).await {
        Some(_) => Some(player),
        None => {
            eprintln!("\nsoak: no media for {name} at {url}");
            player.leg.end();
            None
        }
    }
}

/// The figures after warm-up against the end: medians of the first and last fifth of
/// the samples taken after the first fifth of the run.
fn report(samples: &[(f64, [Sample; 2])], tally: &Tally) {
    println!(
        "\nsoak: {} cycles, {} plays, {} failed; {} samples per server",
        tally.cycles,
        tally.plays,
        tally.failed,
        samples.len()
    );
    let warm = samples.len() / 5;
    let steady = &samples[warm.min(samples.len())..];
    let part = (steady.len() / 5).max(1);
    if steady.len() < 2 {
        println!("(too few samples for a trend)");
        return;
    }
    println!("{:>8} {:>10} {:>14} {:>14} {:>10}", "server", "figure", "after warm-up", "at the end", "growth");
    for (si, server) in ["A", "B"].iter().enumerate() {
        for (fi, field) in FIELDS.iter().enumerate() {
            let median = |range: &[(f64, [Sample; 2])]| {
                let mut v: Vec<u64> = range.iter().map(|(_, s)| s[si].fields()[fi]).collect();
                v.sort_unstable();
                v[v.len() / 2]
            };
            let (first, last) = (median(&steady[..part]), median(&steady[steady.len() - part..]));
            let growth = if first == 0 { 0.0 } else { (last as f64 - first as f64) / first as f64 * 100.0 };
            println!("{server:>8} {field:>10} {first:>14} {last:>14} {growth:>9.1}%");
        }
    }
}

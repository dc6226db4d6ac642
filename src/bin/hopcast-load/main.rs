//! hopcast-load: the load generator and benchmarks. It starts its own hopcast
//! processes (the `hopcast` binary next to it), drives them with publishers and players
//! built on the same client library as the relay agents, and reads the server's CPU
//! time and memory from /proc. Results print as tables and append to CSV files.

mod baseline;
mod cluster;
mod common;
mod fanout;
mod flood;
mod relay;
mod router_bench;
mod setup;
mod soak;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::sync::watch;

#[derive(Parser)]
#[command(version, about = "hopcast load generator and benchmarks")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publish a synthetic stream to a running server (for demos and manual tests).
    Publish {
        #[arg(long, default_value = "ws://127.0.0.1:8080/")]
        server: String,
        #[arg(long, default_value = "cam")]
        name: String,
        /// Stop after this many seconds (0: until Ctrl-C).
        #[arg(long, default_value_t = 0)]
        seconds: u64,
        #[arg(long, default_value_t = 600_000)]
        bitrate: u64,
    },
    /// Play a stream from a running server with N players (for demos and dashboards).
    Play {
        #[arg(long, default_value = "ws://127.0.0.1:8080/")]
        server: String,
        #[arg(long, default_value = "cam")]
        name: String,
        #[arg(long, default_value_t = 1)]
        players: usize,
        /// Stop after this many seconds (0: until Ctrl-C).
        #[arg(long, default_value_t = 0)]
        seconds: u64,
    },
    /// Every scenario: fan-out for each N, relay hops, setup.
    All(BenchArgs),
    /// 1 publisher, N players on one server, against the minimal-forwarder baseline.
    Fanout(BenchArgs),
    /// Publisher -> server 1 -> server 2 -> server 3.
    Relay(BenchArgs),
    /// Publish/play setup times and sessions per second.
    Setup(BenchArgs),
    /// The router alone in one thread, no sockets: user-space cost per forwarded packet.
    Router {
        #[arg(long, default_value_t = 100)]
        players: usize,
        /// Video packets injected (plus half as many audio packets).
        #[arg(long, default_value_t = 2000)]
        packets: u64,
        /// Video packets forwarded before measuring (800 = 4 s: the RTX caches are full).
        #[arg(long, default_value_t = 0)]
        warmup: u64,
        /// Evict the CPU caches before each measured round (untimed), as the time between
        /// a real server's wakeups does: the figure then includes fetching each consumer's
        /// state from memory.
        #[arg(long)]
        cold: bool,
    },
    /// The cluster: play on an edge that lacks the stream -> first keyframe (needs nats-server).
    Cluster {
        #[arg(long, default_value_t = 20)]
        trials: usize,
        /// Players for the CPU comparison with one server (0: skip it).
        #[arg(long, default_value_t = 60)]
        players: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Memory given back after a flood of players and sessions (RSS before, peak, after).
    Flood {
        #[arg(long, default_value_t = 200)]
        players: usize,
        /// Sessions carrying the largest `connection` data allowed.
        #[arg(long, default_value_t = 500)]
        sessions: usize,
        /// A setting for the server, as `hopcast --set` takes it (e.g. memory.trim=false).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Churn sessions, publishers, players and relays on two servers for a while and
    /// sample RSS, open files, threads, tasks and peers (a leak shows as growth).
    Soak {
        #[arg(long, default_value_t = 60.0)]
        minutes: f64,
        /// Seconds between samples.
        #[arg(long, default_value_t = 30)]
        sample_secs: u64,
        /// Pause between cycles, ms.
        #[arg(long, default_value_t = 1000)]
        pause_ms: u64,
        #[arg(long, default_value_t = 600_000)]
        bitrate: u64,
        #[arg(long, default_value = "target/bench/soak.csv")]
        csv: PathBuf,
    },
    /// Every scenario with tiny numbers: proves the benchmark still runs (CI).
    Smoke {
        #[arg(long, default_value = "target/bench/smoke.csv")]
        csv: PathBuf,
    },
}

#[derive(clap::Args, Clone)]
struct BenchArgs {
    /// Player counts for fan-out.
    #[arg(long, value_delimiter = ',', default_value = "10,100,500")]
    players: Vec<usize>,
    /// Measurement window per scenario, seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Publisher video bitrate, bits/s.
    #[arg(long, default_value_t = 600_000)]
    bitrate: u64,
    /// CSV file for fan-out rows (relay.csv and setup.csv go beside it).
    #[arg(long, default_value = "target/bench/fanout.csv")]
    csv: PathBuf,
    /// A setting for every server started, as `hopcast --set` takes it (e.g. media.gso=false).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Fan-out over WHIP/WHEP instead of WCS's protocol (against the hopcast started here).
    #[arg(long)]
    whip_whep: bool,
    /// Fan-out against another server's WHIP endpoint (with --whep and --pid): e.g.
    /// http://127.0.0.1:1985/rtc/v1/whip/?app=live&stream=bench
    #[arg(long, requires_all = ["whep", "pid"])]
    whip: Option<String>,
    /// That server's WHEP endpoint for the same stream.
    #[arg(long, requires_all = ["whip", "pid"])]
    whep: Option<String>,
    /// That server's process id, whose CPU time and memory are read from /proc.
    #[arg(long, requires_all = ["whip", "whep"])]
    pid: Option<u32>,
}

impl BenchArgs {
    fn target(&self) -> fanout::Target {
        match (&self.whip, &self.whep, self.pid) {
            (Some(whip), Some(whep), Some(pid)) => {
                fanout::Target::External { whip: whip.clone(), whep: whep.clone(), pid }
            }
            _ => fanout::Target::Own { whip: self.whip_whep },
        }
    }
}

fn main() {
    let args = Args::parse();
    if let Command::All(b) | Command::Fanout(b) | Command::Relay(b) | Command::Setup(b) = &args.command {
        let _ = common::SERVER_SETTINGS.set(b.set.clone());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async move {
        match args.command {
            Command::Publish { server, name, seconds, bitrate } => publish(server, name, seconds, bitrate).await,
            Command::Play { server, name, players, seconds } => play_for(server, name, players, seconds).await,
            Command::All(b) => {
                run_fanout(&b).await;
                relay::run(b.seconds, b.bitrate, 5, &b.csv).await;
                setup::run(20, 200, &b.csv).await;
            }
            Command::Fanout(b) => run_fanout(&b).await,
            Command::Relay(b) => relay::run(b.seconds, b.bitrate, 5, &b.csv).await,
            Command::Setup(b) => setup::run(20, 200, &b.csv).await,
            Command::Router { players, packets, warmup, cold } => router_bench::run(players, packets, warmup, cold),
            Command::Cluster { trials, players, seconds } => cluster::run(trials, players, seconds).await,
            Command::Flood { players, sessions, set } => {
                let _ = common::SERVER_SETTINGS.set(set);
                flood::run(players, sessions).await
            }
            Command::Soak { minutes, sample_secs, pause_ms, bitrate, csv } => {
                let (every, pause) = (Duration::from_secs(sample_secs), Duration::from_millis(pause_ms));
                soak::run(minutes, every, pause, bitrate, &csv).await
            }
            Command::Smoke { csv } => {
                let mut b = BenchArgs {
                    players: vec![2],
                    seconds: 1,
                    bitrate: 300_000,
                    csv,
                    set: Vec::new(),
                    whip_whep: false,
                    whip: None,
                    whep: None,
                    pid: None,
                };
                run_fanout(&b).await;
                b.whip_whep = true;
                run_fanout(&b).await;
                b.whip_whep = false;
                relay::run(1, b.bitrate, 1, &b.csv).await;
                setup::run(2, 4, &b.csv).await;
                router_bench::run(2, 50, 10, true);
                cluster::run(2, 2, 1).await;
                soak::run(
                    0.2,
                    Duration::from_secs(3),
                    Duration::ZERO,
                    b.bitrate,
                    &b.csv.with_file_name("soak-smoke.csv"),
                )
                .await;
            }
        }
    });
}

async fn run_fanout(b: &BenchArgs) {
    if let Some(dir) = b.csv.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let mut results = Vec::new();
    for &n in &b.players {
        results.push(fanout::run(&b.target(), n, b.seconds, b.bitrate).await);
    }
    fanout::report(&results, &b.csv);
}

async fn play_for(server: String, name: String, players: usize, seconds: u64) {
    let client = common::Client::new();
    let (_rec_tx, rec_rx) = watch::channel(false);
    let (_done_tx, done_rx) = watch::channel(false);
    let mut held = Vec::new();
    for _ in 0..players {
        match common::play(&client, &server, &name, rec_rx.clone(), done_rx.clone()).await {
            Ok(p) => held.push(p),
            Err(e) => eprintln!("hopcast-load: play of '{name}' failed: {e}"),
        }
    }
    println!("{} players of '{name}' on {server}", held.len());
    if seconds == 0 {
        let _ = tokio::signal::ctrl_c().await;
    } else {
        tokio::time::sleep(Duration::from_secs(seconds)).await;
    }
    for p in &held {
        p.leg.end();
    }
}

async fn publish(server: String, name: String, seconds: u64, bitrate: u64) {
    let mut client = common::Client::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let _publisher = client.publish(&server, &name, bitrate, stop_rx).await;
    println!("publishing '{name}' to {server} ({bitrate} bit/s video + audio)");
    if seconds == 0 {
        let _ = tokio::signal::ctrl_c().await;
    } else {
        tokio::time::sleep(Duration::from_secs(seconds)).await;
    }
    let _ = stop_tx.send(true);
}

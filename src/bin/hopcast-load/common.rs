//! What the scenarios share: starting servers, publishing a paced synthetic stream,
//! players that record loss and delay, percentiles, and the CSV file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hopcast::media::{MediaEvent, MediaHandle};
use hopcast::testkit::process::{ServerProcess, ANY_PORTS};
use hopcast::testkit::stamp::read_stamp;
use hopcast::testkit::synthetic::SyntheticSource;
use hopcast::wcs::client::{ClientStream, SignalingClient};
use hopcast::wcs::protocol::StreamStatus;
use hopcast::whip::client::{self as whip, WhipSession};
use str0m::media::MediaKind;
use tokio::sync::{mpsc, watch};

pub const WAIT: Duration = Duration::from_secs(20);

/// The `hopcast` binary next to this one.
pub fn server_binary() -> PathBuf {
    let me = std::env::current_exe().expect("current exe");
    me.with_file_name("hopcast")
}

/// `--set KEY=VALUE` settings given on the command line, passed to every server started.
pub static SERVER_SETTINGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

pub fn start_server(extra: &[&str]) -> ServerProcess {
    start_server_on(&ANY_PORTS, extra)
}

pub fn start_server_on(ports: &[&str], extra: &[&str]) -> ServerProcess {
    let dir = std::env::temp_dir().join("hopcast-load");
    let settings = SERVER_SETTINGS.get().into_iter().flatten().flat_map(|s| ["--set", s.as_str()]);
    let args: Vec<&str> = ports.iter().chain(extra).copied().chain(settings).collect();
    ServerProcess::start_in(&server_binary(), &args, &dir, "warn").unwrap_or_else(|e| {
        eprintln!("hopcast-load: {e}");
        std::process::exit(1)
    })
}

/// The load generator's own media engine (its players and publishers live here).
pub struct Client {
    pub media: MediaHandle,
    pub epoch: Instant,
    events: Option<mpsc::UnboundedReceiver<MediaEvent>>,
}

impl Client {
    pub fn new() -> Self {
        let (media, events) = hopcast::testkit::client_media();
        Client { media, epoch: Instant::now(), events: Some(events) }
    }

    /// Publish a paced synthetic stream to a WCS signaling URL (ws://, wss://) or a WHIP
    /// endpoint (http(s)://...; `/whip` gets the name appended); it runs until `stop`
    /// turns true.
    pub async fn publish(&mut self, url: &str, name: &str, bitrate: u64, stop: watch::Receiver<bool>) -> Publisher {
        let mut source = SyntheticSource::new(self.media.clone(), bitrate, self.epoch);
        let key = source.key;
        let leg = if is_http(url) {
            let endpoint = whip::endpoint(url, name);
            let peer = self.media.next_id();
            Leg::Whip(whip::publish(&self.media, &endpoint, None, tls(), peer, key).await.expect("WHIP publish"))
        } else {
            let session = SignalingClient::connect(url, None).await.expect("publisher connect");
            let mut stream = session.publish(&self.media, name, key).await.expect("publish");
            stream.wait_for(StreamStatus::Publishing, WAIT).await.expect("PUBLISHING");
            Leg::Wcs { session, stream }
        };
        let mut events = self.events.take().expect("one publisher per client");
        let mut stop = stop;
        let pump = tokio::spawn(async move {
            loop {
                let next = source.tick(Instant::now());
                tokio::select! {
                    _ = tokio::time::sleep_until(next.into()) => {}
                    Some(e) = events.recv() => if e == (MediaEvent::KeyframeRequested { key }) { source.request_keyframe() },
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
            source.sent()
        });
        Publisher { leg, pump }
    }
}

fn is_http(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

/// TLS trust for WHIP/WHEP over https, read from the system once for every player.
fn tls() -> Arc<rustls::ClientConfig> {
    static TLS: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    TLS.get_or_init(|| hopcast::net::tls::client_config(None).expect("TLS roots")).clone()
}

/// How a publisher or player talks to the server: WCS's protocol, or WHIP/WHEP.
pub enum Leg {
    Wcs { session: Arc<SignalingClient>, stream: ClientStream },
    Whip(WhipSession),
}

impl Leg {
    /// Stop and close (WHIP/WHEP: DELETE the resource, in the background).
    pub fn end(&self) {
        match self {
            Leg::Wcs { session, stream } => {
                stream.stop();
                session.close();
            }
            Leg::Whip(session) => {
                let session = session.clone();
                tokio::spawn(async move { session.delete().await });
            }
        }
    }
}

pub struct Publisher {
    leg: Leg,
    pub pump: tokio::task::JoinHandle<(u64, u64)>,
}

impl Publisher {
    /// Unpublish and close (WHIP: DELETE the resource).
    pub fn end(&self) {
        self.leg.end();
    }
}

/// What one player saw while recording.
#[derive(Default, Clone)]
pub struct PlayerStats {
    pub packets: u64,
    pub bytes: u64,
    /// Per kind: (lowest, highest) sequence seen while recording.
    pub video_range: Option<(u64, u64)>,
    pub audio_range: Option<(u64, u64)>,
    pub delays_us: Vec<u32>,
    /// (packet key, delay µs) per packet, the key from [`packet_key`]: hops compare these.
    pub arrivals: Vec<(u64, u32)>,
    /// Time from the play request to the first keyframe packet.
    pub first_keyframe: Option<Duration>,
}

impl PlayerStats {
    pub fn expected(&self) -> u64 {
        let span = |r: Option<(u64, u64)>| r.map(|(a, b)| b - a + 1).unwrap_or(0);
        span(self.video_range) + span(self.audio_range)
    }
}

/// A player in the load generator: plays `name` and records while `recording` is true.
pub struct Player {
    pub leg: Leg,
    pub stats: tokio::task::JoinHandle<PlayerStats>,
    /// Time from the play request to the first packet, and to the first keyframe packet.
    pub first: watch::Receiver<(Option<Duration>, Option<Duration>)>,
}

pub async fn play(
    client: &Client,
    url: &str,
    name: &str,
    recording: watch::Receiver<bool>,
    done: watch::Receiver<bool>,
) -> Result<Player, String> {
    let sink = client.media.next_id();
    let mut tap = client.media.tap(sink);
    let started = Instant::now();
    let leg = if is_http(url) {
        // WHEP: no status to wait for; the first packets tell (see `first`).
        let (endpoint, peer) = (whip::endpoint(url, name), client.media.next_id());
        Leg::Whip(whip::play(&client.media, &endpoint, None, tls(), peer, sink).await.map_err(|e| e.to_string())?)
    } else {
        let session = SignalingClient::connect(url, None).await.map_err(|e| e.to_string())?;
        let mut stream = session.play(&client.media, name, sink).await.map_err(|e| e.to_string())?;
        stream.wait_for(StreamStatus::Playing, WAIT).await.map_err(|e| e.to_string())?;
        Leg::Wcs { session, stream }
    };
    let epoch = client.epoch;
    let mut done = done;
    let (first_tx, first) = watch::channel((None, None));
    let stats = tokio::spawn(async move {
        let mut s = PlayerStats::default();
        let mut first_packet = None;
        loop {
            let packet = tokio::select! {
                p = tap.recv() => match p { Some(p) => p, None => break },
                _ = done.wait_for(|d| *d) => break,
            };
            let Some(stamp) = read_stamp(&packet.payload) else { continue };
            if first_packet.is_none() || (stamp.keyframe && s.first_keyframe.is_none()) {
                first_packet = first_packet.or(Some(started.elapsed()));
                if stamp.keyframe && s.first_keyframe.is_none() {
                    s.first_keyframe = Some(started.elapsed());
                }
                let _ = first_tx.send((first_packet, s.first_keyframe));
            }
            if !*recording.borrow() {
                continue;
            }
            // The time the datagram reached our media thread, not when this task ran.
            let arrived_ns = packet.arrival.saturating_duration_since(epoch).as_nanos() as u64;
            let delay = (arrived_ns.saturating_sub(stamp.sent_ns) / 1000) as u32;
            s.delays_us.push(delay);
            s.arrivals.push((packet_key(stamp.kind, stamp.seq), delay));
            s.packets += 1;
            s.bytes += packet.payload.len() as u64;
            let range = if stamp.kind == MediaKind::Video { &mut s.video_range } else { &mut s.audio_range };
            *range = Some(match *range {
                None => (stamp.seq, stamp.seq),
                Some((lo, hi)) => (lo.min(stamp.seq), hi.max(stamp.seq)),
            });
        }
        s
    });
    Ok(Player { leg, stats, first })
}

/// The `p`-th percentile (0-100) of `values`, sorting them.
/// One key per packet of a synthetic stream: its sequence and kind.
pub fn packet_key(kind: MediaKind, seq: u64) -> u64 {
    seq << 1 | u64::from(kind == MediaKind::Video)
}

pub fn percentile(values: &mut [u32], p: f64) -> u32 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    let rank = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    values[rank.min(values.len() - 1)]
}

/// Append one row (creating the file with a header).
pub fn append_csv(path: &Path, header: &str, row: &str) {
    use std::io::Write;
    let new = !path.exists();
    let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) else {
        eprintln!("hopcast-load: cannot write {}", path.display());
        return;
    };
    if new {
        let _ = writeln!(f, "{header}");
    }
    let _ = writeln!(f, "{row}");
}

pub fn timestamp() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Wait until `player` has received a keyframe; returns the time from its play request.
pub async fn first_keyframe(player: &mut Player) -> Option<Duration> {
    let got = tokio::time::timeout(WAIT, player.first.wait_for(|(_, k)| k.is_some())).await;
    got.ok()?.ok().and_then(|v| v.1)
}

/// Wait until `player` has received any packet; returns the time from its play request.
pub async fn first_packet(player: &mut Player) -> Option<Duration> {
    let got = tokio::time::timeout(WAIT, player.first.wait_for(|(p, _)| p.is_some())).await;
    got.ok()?.ok().and_then(|v| v.0)
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median and maximum of durations, in ms.
pub fn median_max(mut v: Vec<Duration>) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    v.sort();
    (ms(v[v.len() / 2]), ms(*v.last().unwrap()))
}

//! The I/O shell around the [`Router`](super::router::Router): media threads that each
//! own a router and its UDP sockets, feed it datagrams and time, send what it produces,
//! and take commands from the rest of the server through a channel ([`MediaHandle`]).
//!
//! On each media thread all server-side peers share one UDP port (one socket per
//! advertised IP). Client-side peers (offers) get an ephemeral socket each (see
//! `media::demux`).
//!
//! With several media threads, work spreads by peer, not by stream, so one stream's
//! fan-out uses every core: a stream lives on its home thread (chosen by its key) with
//! its producer; consumers go to the threads in turn. A thread with consumers of a
//! stream from elsewhere holds a mirror of it and opens a pipe: the home thread passes it
//! each packet once (an `Arc`ed payload, no copy), and the mirror thread seals and sends
//! the copies for its own consumers, in parallel with the home thread. Keyframe requests
//! travel back the same way; the subscription ends with the thread's last consumer of
//! the stream. No lock is taken per packet.

//!
//! - [`MediaHandle`] (`handle`): what the rest of the server holds: creates and removes
//!   peers on the right thread, placement of consumers, commands.
//! - `worker`: one media thread's loop around its router and sockets.

mod handle;
mod worker;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use str0m::format::PayloadParams;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

pub use handle::MediaHandle;

use super::latency::{Histogram, LatencySnapshot};
use super::router::{MediaError, MediaEvent, Offer, PeerId, Role, Router, RouterStats, SourcePacket, StreamKey};
use super::udp::{self, SendStats, Sender};
use worker::Worker;

/// How long a new peer may take to complete ICE and DTLS.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// What the handle asks a media thread to do.
enum Command {
    Answer {
        peer: PeerId,
        role: Role,
        offer: Offer,
        reply: oneshot::Sender<Result<String, MediaError>>,
    },
    Offer {
        peer: PeerId,
        role: Role,
        reply: oneshot::Sender<Result<String, MediaError>>,
    },
    ApplyAnswer {
        peer: PeerId,
        answer: String,
        reply: oneshot::Sender<Result<(), MediaError>>,
    },
    RemovePeer {
        peer: PeerId,
        close: bool,
    },
    AddSource {
        key: StreamKey,
    },
    RemoveStream {
        key: StreamKey,
    },
    Inject {
        key: StreamKey,
        packet: SourcePacket,
    },
    Tap {
        key: StreamKey,
        tap: mpsc::UnboundedSender<SourcePacket>,
    },
    RequestKeyframe {
        key: StreamKey,
    },
    PlayerFigures {
        peer: PeerId,
        reply: oneshot::Sender<Option<std::collections::BTreeMap<&'static str, u64>>>,
    },
    Figures {
        key: StreamKey,
        reply: oneshot::Sender<Option<std::collections::BTreeMap<&'static str, u64>>>,
    },
    Stats {
        reply: oneshot::Sender<MediaStats>,
    },
    /// The codecs a consumer of `key` can be offered, from the stream's home thread.
    Codecs {
        key: StreamKey,
        reply: oneshot::Sender<Result<Vec<PayloadParams>, MediaError>>,
    },
    Mirror {
        key: StreamKey,
        codecs: Vec<PayloadParams>,
    },
    OpenPipe {
        key: StreamKey,
        thread: usize,
    },
    ClosePipe {
        key: StreamKey,
        thread: usize,
    },
    /// Packets from a stream's home thread for the mirrors here; `received`: the kernel
    /// receive time of the earliest packet of the home thread's batch.
    Forward {
        packets: Vec<(StreamKey, SourcePacket)>,
        received: Option<SystemTime>,
    },
}

/// The engine's counters: the router's and the sockets'.
#[derive(Debug, Default, Clone)]
pub struct MediaStats {
    pub router: RouterStats,
    pub sent: SendStats,
    /// From a media packet's arrival in the kernel (SO_TIMESTAMPNS) to the moment every copy
    /// of it has been handed to the kernel: what the server adds to a hop, waits for a CPU
    /// included.
    pub forward_latency: LatencySnapshot,
    /// The part of `forward_latency` before the media thread read the packet: waiting in
    /// the socket for the thread to wake, or to finish what it was doing.
    pub read_latency: LatencySnapshot,
    /// Media threads these figures add up.
    pub threads: usize,
    /// Per media thread, in order: time spent working (not waiting), ns.
    pub busy_ns: Vec<u64>,
}

impl MediaStats {
    /// The sum of two threads' figures.
    fn add(mut self, other: &MediaStats) -> MediaStats {
        let (a, b) = (&mut self.router, &other.router);
        a.peers += b.peers;
        a.streams += b.streams;
        a.packets_in += b.packets_in;
        a.packets_forwarded += b.packets_forwarded;
        a.bytes_in += b.bytes_in;
        a.bytes_forwarded += b.bytes_forwarded;
        a.datagrams_dropped += b.datagrams_dropped;
        a.keyframe_requests_received += b.keyframe_requests_received;
        a.keyframe_requests_sent += b.keyframe_requests_sent;
        a.nacks_sent += b.nacks_sent;
        a.nacks_received += b.nacks_received;
        a.retransmissions += b.retransmissions;
        let (a, b) = (&mut self.sent, &other.sent);
        a.datagrams_sent += b.datagrams_sent;
        a.messages_sent += b.messages_sent;
        a.send_calls += b.send_calls;
        let merge = |a: &LatencySnapshot, b: &LatencySnapshot| {
            let mut h = Histogram::from_snapshot(a);
            h.merge(&Histogram::from_snapshot(b));
            h.snapshot()
        };
        self.forward_latency = merge(&self.forward_latency, &other.forward_latency);
        self.read_latency = merge(&self.read_latency, &other.read_latency);
        self.threads += other.threads;
        self.busy_ns.extend(&other.busy_ns);
        self
    }
}

/// How the engine uses the sockets and the cores.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Join runs of datagrams to one peer into UDP GSO messages (see `udp`).
    pub gso: bool,
    /// Media threads, each with its own UDP port (at least 1).
    pub threads: usize,
    /// Consumers of a stream kept on its home thread before the next ones spread.
    pub spread_after: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { gso: true, threads: 1, spread_after: 32 }
    }
}

/// Start the media threads: each binds its shared socket on every `(bind, advertised)`
/// IP pair, on the first port of `ports` free on all of them (so each thread has its
/// own port). Media events of all threads arrive on the returned receiver.
pub fn start(
    ips: &[(IpAddr, IpAddr)],
    ports: std::ops::RangeInclusive<u16>,
    options: Options,
) -> io::Result<(MediaHandle, mpsc::UnboundedReceiver<MediaEvent>)> {
    let count = options.threads.max(1);
    let mut bound = Vec::new();
    let mut first_port = *ports.start();
    for _ in 0..count {
        let sockets = bind_shared(ips, first_port..=*ports.end())?;
        // A fixed range continues after the port just taken; port 0 means any, each time.
        if first_port != 0 {
            first_port = sockets[0].0.port().saturating_add(1);
        }
        bound.push(sockets);
    }
    let shared_addrs: Vec<SocketAddr> = bound.iter().flatten().map(|(adv, _)| *adv).collect();
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..count).map(|_| mpsc::unbounded_channel()).unzip();
    let threads: Arc<[mpsc::UnboundedSender<Command>]> = senders.into();
    let (event_tx, event_rx) = mpsc::unbounded_channel();
    for (index, (sockets, commands)) in bound.into_iter().zip(receivers).enumerate() {
        let addrs: Vec<SocketAddr> = sockets.iter().map(|(adv, _)| *adv).collect();
        let client_ip = addrs[0].ip();
        let weak: Arc<[mpsc::WeakUnboundedSender<Command>]> = threads.iter().map(|t| t.downgrade()).collect();
        let (events, threads) = (event_tx.clone(), weak);
        std::thread::Builder::new().name("hopcast-media".into()).spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("media runtime");
            runtime.block_on(async move {
                let sockets = sockets
                    .into_iter()
                    .map(|(adv, s)| Ok((adv, UdpSocket::from_std(s)?)))
                    .collect::<io::Result<Vec<_>>>()
                    .expect("register media sockets");
                let worker = Worker {
                    router: Router::new(addrs, CONNECT_TIMEOUT),
                    index,
                    threads,
                    sockets,
                    client_ip,
                    events,
                    batch: Vec::new(),
                    sender: Sender::new(options.gso),
                    media_received: Vec::new(),
                    forwarded_received: Vec::new(),
                    forward_latency: Histogram::default(),
                    read_latency: Histogram::default(),
                    busy_ns: 0,
                };
                worker.run(commands).await;
            });
        })?;
    }
    let handle = MediaHandle::new(threads, shared_addrs, options.spread_after);
    Ok((handle, event_rx))
}

fn bind_shared(
    ips: &[(IpAddr, IpAddr)],
    ports: std::ops::RangeInclusive<u16>,
) -> io::Result<Vec<(SocketAddr, std::net::UdpSocket)>> {
    let mut last_error = io::Error::new(io::ErrorKind::AddrInUse, "no free media port");
    for port in ports {
        let mut bound = Vec::new();
        let mut chosen = port;
        for (bind, advertised) in ips {
            match udp::bind(SocketAddr::new(*bind, chosen)) {
                Ok(s) => {
                    chosen = s.local_addr()?.port();
                    bound.push((SocketAddr::new(*advertised, chosen), s));
                }
                Err(e) => {
                    last_error = e;
                    break;
                }
            }
        }
        if bound.len() == ips.len() {
            return Ok(bound);
        }
    }
    Err(last_error)
}

/// The media thread a stream and its producer live on, of `threads`.
fn home_thread(key: StreamKey, threads: usize) -> usize {
    (key % threads as u64) as usize
}

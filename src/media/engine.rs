//! The I/O shell around [`Router`]: one thread that owns the UDP sockets, feeds the
//! router datagrams and time, sends what it produces, and takes commands from the rest
//! of the server through a channel ([`MediaHandle`]).
//!
//! All server-side peers share one UDP port (one socket per advertised IP). Client-side
//! peers (offers) get an ephemeral socket each, see `router`'s module comment.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use str0m::media::KeyframeRequestKind;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::latency::{Histogram, LatencySnapshot};
use super::router::{Datagram, MediaError, MediaEvent, PeerId, Role, Router, RouterStats, SourcePacket, StreamKey};
use super::udp::{self, SendStats, Sender};

/// How long a new peer may take to complete ICE and DTLS.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Datagrams taken from the sockets before queued writes are released.
const RECV_BATCH: usize = 32;
/// Datagrams released by the router per send (they leave in one or more sendmmsg calls).
const SEND_BATCH: usize = 256;

enum Command {
    Answer { peer: PeerId, role: Role, offer: String, reply: oneshot::Sender<Result<String, MediaError>> },
    Offer { peer: PeerId, role: Role, reply: oneshot::Sender<Result<String, MediaError>> },
    ApplyAnswer { peer: PeerId, answer: String, reply: oneshot::Sender<Result<(), MediaError>> },
    RemovePeer { peer: PeerId, close: bool },
    AddSource { key: StreamKey },
    RemoveStream { key: StreamKey },
    Inject { key: StreamKey, packet: SourcePacket },
    Tap { key: StreamKey, tap: mpsc::UnboundedSender<SourcePacket> },
    RequestKeyframe { key: StreamKey },
    Stats { reply: oneshot::Sender<MediaStats> },
}

/// The engine's counters: the router's and the sockets'.
#[derive(Debug, Default, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaStats {
    #[serde(flatten)]
    pub router: RouterStats,
    #[serde(flatten)]
    pub sent: SendStats,
    /// From a media packet's arrival in the kernel (SO_TIMESTAMPNS) to the moment every copy
    /// of it has been handed to the kernel: what the server adds to a hop, waits for a CPU
    /// included.
    pub forward_latency: LatencySnapshot,
    /// The part of `forward_latency` before the media thread read the packet: waiting in
    /// the socket for the thread to wake, or to finish what it was doing.
    pub read_latency: LatencySnapshot,
}

/// Cheap, cloneable access to the media engine thread.
#[derive(Clone)]
pub struct MediaHandle {
    commands: mpsc::UnboundedSender<Command>,
    ids: Arc<AtomicU64>,
    shared_addrs: Arc<Vec<SocketAddr>>,
}

fn gone<T>(_: T) -> MediaError {
    MediaError::Webrtc("media engine stopped".into())
}

impl MediaHandle {
    /// A fresh id for a peer or a stream (one counter: ids never collide).
    pub fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Advertised addresses of the shared media socket(s).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.shared_addrs
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, MediaError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).map_err(gone)?;
        rx.await.map_err(gone)
    }

    pub async fn answer(&self, peer: PeerId, role: Role, offer: String) -> Result<String, MediaError> {
        self.call(|reply| Command::Answer { peer, role, offer, reply }).await?
    }

    pub async fn offer(&self, peer: PeerId, role: Role) -> Result<String, MediaError> {
        self.call(|reply| Command::Offer { peer, role, reply }).await?
    }

    pub async fn apply_answer(&self, peer: PeerId, answer: String) -> Result<(), MediaError> {
        self.call(|reply| Command::ApplyAnswer { peer, answer, reply }).await?
    }

    pub async fn stats(&self) -> Result<MediaStats, MediaError> {
        self.call(|reply| Command::Stats { reply }).await
    }

    fn send(&self, command: Command) {
        // Fails only when the engine has stopped, and then there is nothing left to do.
        let _ = self.commands.send(command);
    }

    pub fn remove_peer(&self, peer: PeerId, close: bool) {
        self.send(Command::RemovePeer { peer, close });
    }
    pub fn add_source(&self, key: StreamKey) {
        self.send(Command::AddSource { key });
    }
    pub fn remove_stream(&self, key: StreamKey) {
        self.send(Command::RemoveStream { key });
    }
    pub fn inject(&self, key: StreamKey, packet: SourcePacket) {
        self.send(Command::Inject { key, packet });
    }
    pub fn tap(&self, key: StreamKey) -> mpsc::UnboundedReceiver<SourcePacket> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.send(Command::Tap { key, tap: tx });
        rx
    }
    pub fn request_keyframe(&self, key: StreamKey) {
        self.send(Command::RequestKeyframe { key });
    }
}

/// How the engine uses the sockets.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Join runs of datagrams to one peer into UDP GSO messages (see `udp`).
    pub gso: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { gso: true }
    }
}

/// Bind the shared media socket on every `(bind, advertised)` IP pair, on the first
/// port of `ports` free on all of them, and start the engine thread. Media events
/// arrive on the returned receiver.
pub fn start(
    ips: &[(IpAddr, IpAddr)],
    ports: std::ops::RangeInclusive<u16>,
    options: Options,
) -> io::Result<(MediaHandle, mpsc::UnboundedReceiver<MediaEvent>)> {
    let sockets = bind_shared(ips, ports)?;
    let shared_addrs: Vec<SocketAddr> = sockets.iter().map(|(adv, _)| *adv).collect();
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (event_tx, event_rx) = mpsc::unbounded_channel();
    let client_ip = shared_addrs[0].ip();
    let addrs = shared_addrs.clone();
    std::thread::Builder::new().name("hopcast-media".into()).spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("media runtime");
        runtime.block_on(async move {
            let sockets = sockets
                .into_iter()
                .map(|(adv, s)| Ok((adv, UdpSocket::from_std(s)?)))
                .collect::<io::Result<Vec<_>>>()
                .expect("register media sockets");
            let engine = Engine {
                router: Router::new(addrs, CONNECT_TIMEOUT),
                sockets,
                client_ip,
                events: event_tx,
                batch: Vec::new(),
                sender: Sender::new(options.gso),
                media_received: Vec::new(),
                forward_latency: Histogram::default(),
                read_latency: Histogram::default(),
            };
            engine.run(cmd_rx).await;
        });
    })?;
    let handle =
        MediaHandle { commands: cmd_tx, ids: Arc::new(AtomicU64::new(1)), shared_addrs: Arc::new(shared_addrs) };
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

struct Engine {
    router: Router,
    /// (local advertised address, socket): the shared ones first, then one per client peer.
    sockets: Vec<(SocketAddr, UdpSocket)>,
    client_ip: IpAddr,
    events: mpsc::UnboundedSender<MediaEvent>,
    /// Reused buffer of outgoing datagrams.
    batch: Vec<Datagram>,
    sender: Sender,
    /// Kernel receive times of the media packets read since the last flush.
    media_received: Vec<SystemTime>,
    /// From a media packet's arrival in the kernel to the end of the send of its copies.
    forward_latency: Histogram,
    /// From a media packet's arrival in the kernel to its read by this thread.
    read_latency: Histogram,
}

impl Engine {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut buf = vec![0u8; 2048];
        loop {
            let now = Instant::now();
            let deadline = self.router.next_timeout().unwrap_or(now + Duration::from_secs(1));
            let sleep = tokio::time::sleep_until(deadline.max(now).into());
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(command) => self.handle_command(command),
                    None => break,
                },
                received = udp::recv_any(&self.sockets, &mut buf) => {
                    self.receive(&received, &buf[..received.len]);
                    // Take what else is queued: the router releases forwarded writes once
                    // per batch (see `Router::poll_transmit`).
                    for _ in 1..RECV_BATCH {
                        let Some(received) = udp::try_recv_any(&self.sockets, &mut buf) else { break };
                        self.receive(&received, &buf[..received.len]);
                    }
                },
                _ = sleep => self.router.handle_timeout(Instant::now()),
            }
            self.flush().await;
        }
    }

    /// One datagram from the network. Should a bug in the WebRTC stack panic on it, the
    /// datagram is lost and logged, but the media thread and every other peer live on.
    fn receive(&mut self, received: &udp::Received, data: &[u8]) {
        let (source, destination) = (received.source, self.sockets[received.socket].0);
        let router = &mut self.router;
        let media_before = router.stats().packets_in;
        let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            router.handle_datagram(Instant::now(), source, destination, data)
        }));
        if handled.is_err() {
            tracing::error!(%source, len = data.len(), "panic while handling a datagram; dropped");
        } else if self.router.stats().packets_in > media_before {
            self.media_received.push(received.at);
            self.read_latency.record(SystemTime::now().duration_since(received.at).unwrap_or_default());
        }
    }

    fn handle_command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Answer { peer, role, offer, reply } => {
                let _ = reply.send(self.router.answer(peer, role, &offer, now));
            }
            Command::Offer { peer, role, reply } => {
                let result = udp::bind(SocketAddr::new(self.client_ip, 0))
                    .and_then(|s| Ok((s.local_addr()?, UdpSocket::from_std(s)?)))
                    .map_err(|e| MediaError::Webrtc(format!("client socket: {e}")))
                    .and_then(|(local, socket)| {
                        let offer = self.router.offer(peer, role, local, now)?;
                        self.sockets.push((local, socket));
                        Ok(offer)
                    });
                let _ = reply.send(result);
            }
            Command::ApplyAnswer { peer, answer, reply } => {
                let _ = reply.send(self.router.apply_answer(peer, &answer, now));
            }
            Command::RemovePeer { peer, close } => self.router.remove_peer(peer, close, now),
            Command::AddSource { key } => self.router.add_source(key),
            Command::RemoveStream { key } => self.router.remove_stream(key),
            Command::Inject { key, packet } => self.router.inject(key, &packet, now),
            Command::Tap { key, tap } => self.router.tap(key, tap),
            Command::RequestKeyframe { key } => self.router.request_keyframe(key, KeyframeRequestKind::Pli, now),
            Command::Stats { reply } => {
                let _ = reply.send(MediaStats {
                    router: self.router.stats(),
                    sent: self.sender.stats,
                    forward_latency: self.forward_latency.snapshot(),
                    read_latency: self.read_latency.snapshot(),
                });
            }
        }
    }

    /// Send what the router queued, report its events, close released sockets.
    async fn flush(&mut self) {
        let mut batch = std::mem::take(&mut self.batch);
        loop {
            batch.clear();
            // A run of datagrams from one local address goes out together (see `udp`).
            while batch.len() < SEND_BATCH {
                let Some(d) = self.router.poll_transmit() else { break };
                if batch.first().is_some_and(|f: &Datagram| f.source != d.source) {
                    self.send_batch(&batch).await;
                    batch.clear();
                }
                batch.push(d);
            }
            if batch.is_empty() {
                break;
            }
            self.send_batch(&batch).await;
        }
        self.batch = batch;
        if !self.media_received.is_empty() {
            let sent = SystemTime::now();
            for at in self.media_received.drain(..) {
                self.forward_latency.record(sent.duration_since(at).unwrap_or_default());
            }
        }
        while let Some(event) = self.router.poll_event() {
            let _ = self.events.send(event);
        }
        for addr in self.router.take_released() {
            self.sockets.retain(|(a, _)| *a != addr);
        }
    }

    async fn send_batch(&mut self, batch: &[Datagram]) {
        let Some(first) = batch.first() else { return };
        let Some((_, socket)) = self.sockets.iter().find(|(addr, _)| *addr == first.source) else { return };
        self.sender.send(socket, batch).await;
    }
}

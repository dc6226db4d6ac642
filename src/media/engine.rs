//! The I/O shell around [`Router`]: media threads that each own a router and its UDP
//! sockets, feed it datagrams and time, send what it produces, and take commands from
//! the rest of the server through a channel ([`MediaHandle`]).
//!
//! On each media thread all server-side peers share one UDP port (one socket per
//! advertised IP). Client-side peers (offers) get an ephemeral socket each, see
//! `router`'s module comment.
//!
//! With several media threads, work spreads by peer, not by stream, so one stream's
//! fan-out uses every core: a stream lives on its home thread (chosen by its key) with
//! its producer; consumers go to the threads in turn. A thread with consumers of a
//! stream from elsewhere holds a mirror of it and subscribes: the home thread passes it
//! each packet once (an `Arc`ed payload, no copy), and the mirror thread seals and sends
//! the copies for its own consumers, in parallel with the home thread. Keyframe requests
//! travel back the same way; the subscription ends with the thread's last consumer of
//! the stream. No lock is taken per packet.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use str0m::format::PayloadParams;
use str0m::media::KeyframeRequestKind;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::latency::{Histogram, LatencySnapshot};
use super::router::{
    Datagram, MediaError, MediaEvent, Offer, PeerId, Role, Router, RouterStats, SourcePacket, StreamKey,
};
use super::udp::{self, SendStats, Sender};

/// How long a new peer may take to complete ICE and DTLS.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Datagrams taken from the sockets before queued writes are released.
const RECV_BATCH: usize = 32;
/// Datagrams released by the router per send (they leave in one or more sendmmsg calls).
const SEND_BATCH: usize = 256;

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
    Subscribe {
        key: StreamKey,
        thread: usize,
    },
    Unsubscribe {
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
    /// Media threads these figures add up.
    pub threads: usize,
}

impl MediaStats {
    /// The sum of two threads' figures.
    fn add(mut self, other: &MediaStats) -> MediaStats {
        let (a, b) = (&mut self.router, &other.router);
        a.peers += b.peers;
        a.streams += b.streams;
        a.packets_in += b.packets_in;
        a.packets_forwarded += b.packets_forwarded;
        a.datagrams_dropped += b.datagrams_dropped;
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
        self
    }
}

/// Cheap, cloneable access to the media threads.
#[derive(Clone)]
pub struct MediaHandle {
    threads: Arc<[mpsc::UnboundedSender<Command>]>,
    ids: Arc<AtomicU64>,
    shared_addrs: Arc<Vec<SocketAddr>>,
    placement: Arc<Mutex<Placement>>,
    spread_after: usize,
}

/// Where peers are, recorded before a peer is created: a removal that races with the
/// creation then finds it (and the creation is called off).
#[derive(Default)]
struct Placement {
    peers: HashMap<PeerId, Placed>,
    /// Consumers per stream.
    consumers: HashMap<StreamKey, usize>,
}

#[derive(Clone, Copy)]
struct Placed {
    thread: usize,
    /// The stream a consumer consumes.
    consumes: Option<StreamKey>,
    /// The stream's home thread passes its packets to `thread` on this peer's behalf.
    subscribed: bool,
}

impl Placement {
    fn insert(&mut self, peer: PeerId, thread: usize, consumes: Option<StreamKey>) {
        if let Some(key) = consumes {
            *self.consumers.entry(key).or_default() += 1;
        }
        self.peers.insert(peer, Placed { thread, consumes, subscribed: false });
    }

    fn remove(&mut self, peer: PeerId) -> Option<Placed> {
        let placed = self.peers.remove(&peer)?;
        if let Some(key) = placed.consumes {
            if let Some(n) = self.consumers.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.consumers.remove(&key);
                }
            }
        }
        Some(placed)
    }
}

/// The media thread a stream and its producer live on, of `threads`.
fn home_thread(key: StreamKey, threads: usize) -> usize {
    (key % threads as u64) as usize
}

fn gone<T>(_: T) -> MediaError {
    MediaError::Webrtc("media engine stopped".into())
}

impl MediaHandle {
    /// A fresh id for a peer or a stream (one counter: ids never collide).
    pub fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Advertised addresses of the shared media sockets (every thread's).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.shared_addrs
    }

    fn home(&self, key: StreamKey) -> usize {
        home_thread(key, self.threads.len())
    }

    /// The thread a new peer goes to: a producer to its stream's home; a stream's first
    /// `spread_after` consumers too (a small fan-out costs least on one thread), the
    /// ones after that to every thread in turn.
    fn place(&self, placement: &Placement, role: Role) -> usize {
        match role {
            Role::Producer(key) => self.home(key),
            Role::Consumer(key) => {
                let before = placement.consumers.get(&key).copied().unwrap_or(0);
                match before.checked_sub(self.spread_after) {
                    None => self.home(key),
                    // The first to spread goes to the next thread.
                    Some(k) => (self.home(key) + 1 + k) % self.threads.len(),
                }
            }
        }
    }

    fn placement(&self) -> std::sync::MutexGuard<'_, Placement> {
        self.placement.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn call_on<T>(
        &self,
        thread: usize,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, MediaError> {
        let (tx, rx) = oneshot::channel();
        self.threads[thread].send(make(tx)).map_err(gone)?;
        rx.await.map_err(gone)
    }

    fn send_to(&self, thread: usize, command: Command) {
        // Fails only when the engine has stopped, and then there is nothing left to do.
        let _ = self.threads[thread].send(command);
    }

    /// Create a peer on its thread: `make` builds the command that creates it.
    async fn create<T>(
        &self,
        peer: PeerId,
        role: Role,
        make: impl FnOnce(oneshot::Sender<Result<T, MediaError>>) -> Command,
    ) -> Result<T, MediaError> {
        let thread = {
            let mut placement = self.placement();
            let thread = self.place(&placement, role);
            let consumes = if let Role::Consumer(key) = role { Some(key) } else { None };
            placement.insert(peer, thread, consumes);
            thread
        };
        // A consumer away from its stream's home thread: (stream, home).
        let mirrored = match role {
            Role::Consumer(key) if self.home(key) != thread => Some((key, self.home(key))),
            _ => None,
        };
        let result = async {
            if let Some((key, home)) = mirrored {
                let codecs = self.call_on(home, |reply| Command::Codecs { key, reply }).await??;
                self.send_to(thread, Command::Mirror { key, codecs });
            }
            let (tx, rx) = oneshot::channel();
            {
                // Removed while we asked the home thread: do not create it. Subscribing
                // here, under the lock, orders it before the peer's unsubscribing.
                let mut placement = self.placement();
                let placed = placement.peers.get_mut(&peer).ok_or(MediaError::UnknownPeer)?;
                if let Some((key, home)) = mirrored {
                    self.send_to(home, Command::Subscribe { key, thread });
                    placed.subscribed = true;
                }
                self.threads[thread].send(make(tx)).map_err(gone)?;
            }
            rx.await.map_err(gone)?
        }
        .await;
        if result.is_err() {
            let mut placement = self.placement();
            if let Some(placed) = placement.remove(peer) {
                self.unsubscribe(&placed);
            }
        }
        result
    }

    /// The home thread no longer passes packets on for a peer that is gone.
    fn unsubscribe(&self, placed: &Placed) {
        if let (true, Some(key)) = (placed.subscribed, placed.consumes) {
            self.send_to(self.home(key), Command::Unsubscribe { key, thread: placed.thread });
        }
    }

    /// Answer a remote offer. The offer is parsed on tokio's blocking pool first: its
    /// cost grows with what the client sends, and media threads must keep forwarding.
    pub async fn answer(&self, peer: PeerId, role: Role, offer: String) -> Result<String, MediaError> {
        let parsed = tokio::task::spawn_blocking(move || Offer::parse(&offer));
        let offer = parsed.await.map_err(|e| MediaError::Webrtc(format!("SDP parser: {e}")))??;
        self.create(peer, role, |reply| Command::Answer { peer, role, offer, reply }).await
    }

    pub async fn offer(&self, peer: PeerId, role: Role) -> Result<String, MediaError> {
        self.create(peer, role, |reply| Command::Offer { peer, role, reply }).await
    }

    pub async fn apply_answer(&self, peer: PeerId, answer: String) -> Result<(), MediaError> {
        let thread = self.placement().peers.get(&peer).map(|p| p.thread).ok_or(MediaError::UnknownPeer)?;
        self.call_on(thread, |reply| Command::ApplyAnswer { peer, answer, reply }).await?
    }

    /// Every thread's figures, added up.
    pub async fn stats(&self) -> Result<MediaStats, MediaError> {
        let mut total = MediaStats::default();
        for thread in 0..self.threads.len() {
            total = total.add(&self.call_on(thread, |reply| Command::Stats { reply }).await?);
        }
        Ok(total)
    }

    pub fn remove_peer(&self, peer: PeerId, close: bool) {
        // Under the lock, so it cannot overtake a creation in flight (see `create`).
        let mut placement = self.placement();
        if let Some(placed) = placement.remove(peer) {
            self.send_to(placed.thread, Command::RemovePeer { peer, close });
            self.unsubscribe(&placed);
        }
    }
    pub fn add_source(&self, key: StreamKey) {
        self.send_to(self.home(key), Command::AddSource { key });
    }
    /// Forget a stream on its home thread and every mirror.
    pub fn remove_stream(&self, key: StreamKey) {
        for thread in 0..self.threads.len() {
            self.send_to(thread, Command::RemoveStream { key });
        }
    }
    pub fn inject(&self, key: StreamKey, packet: SourcePacket) {
        self.send_to(self.home(key), Command::Inject { key, packet });
    }
    pub fn tap(&self, key: StreamKey) -> mpsc::UnboundedReceiver<SourcePacket> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.send_to(self.home(key), Command::Tap { key, tap: tx });
        rx
    }
    pub fn request_keyframe(&self, key: StreamKey) {
        self.send_to(self.home(key), Command::RequestKeyframe { key });
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
        let (events, threads) = (event_tx.clone(), threads.clone());
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
                };
                engine.run(commands).await;
            });
        })?;
    }
    let handle = MediaHandle {
        threads,
        ids: Arc::new(AtomicU64::new(1)),
        shared_addrs: Arc::new(shared_addrs),
        placement: Arc::default(),
        spread_after: options.spread_after,
    };
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
    /// This thread's place in `threads`.
    index: usize,
    /// Every media thread's commands, this one's included.
    threads: Arc<[mpsc::UnboundedSender<Command>]>,
    /// (local advertised address, socket): the shared ones first, then one per client peer.
    sockets: Vec<(SocketAddr, UdpSocket)>,
    client_ip: IpAddr,
    events: mpsc::UnboundedSender<MediaEvent>,
    /// Reused buffer of outgoing datagrams.
    batch: Vec<Datagram>,
    sender: Sender,
    /// Kernel receive times of the media packets read since the last flush.
    media_received: Vec<SystemTime>,
    /// Packets forwarded here by home threads since the last flush, by the kernel receive
    /// time of the earliest packet in their batch: (time, packets).
    forwarded_received: Vec<(SystemTime, usize)>,
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
        let media_before = router.packets_in();
        let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            router.handle_datagram(Instant::now(), source, destination, data)
        }));
        if handled.is_err() {
            tracing::error!(%source, len = data.len(), "panic while handling a datagram; dropped");
        } else if self.router.packets_in() > media_before {
            self.media_received.push(received.at);
            self.read_latency.record(SystemTime::now().duration_since(received.at).unwrap_or_default());
        }
    }

    fn handle_command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Answer { peer, role, offer, reply } => {
                let _ = reply.send(self.router.answer_parsed(peer, role, offer, now));
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
                    threads: 1,
                });
            }
            Command::Codecs { key, reply } => {
                let _ = reply.send(self.router.consumer_codecs(key));
            }
            Command::Mirror { key, codecs } => self.router.mirror(key, codecs),
            Command::Subscribe { key, thread } => self.router.subscribe(key, thread),
            Command::Unsubscribe { key, thread } => self.router.unsubscribe(key, thread),
            Command::Forward { packets, received } => {
                self.router.forward_from_thread(&packets, now);
                if let Some(at) = received {
                    self.forwarded_received.push((at, packets.len()));
                }
            }
        }
    }

    /// Send what the router queued, report its events, close released sockets.
    async fn flush(&mut self) {
        // Other threads' share first: they seal and send in parallel with this one.
        self.pass_on();
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
        self.pass_on();
        let sent = SystemTime::now();
        for at in self.media_received.drain(..) {
            self.forward_latency.record(sent.duration_since(at).unwrap_or_default());
        }
        for (at, packets) in self.forwarded_received.drain(..) {
            for _ in 0..packets {
                self.forward_latency.record(sent.duration_since(at).unwrap_or_default());
            }
        }
        while let Some(event) = self.router.poll_event() {
            match event {
                // A mirror's consumer wants a keyframe: ask the stream's home thread.
                MediaEvent::KeyframeRequested { key } if self.home(key) != self.index => {
                    let _ = self.threads[self.home(key)].send(Command::RequestKeyframe { key });
                }
                event => {
                    let _ = self.events.send(event);
                }
            }
        }
        for addr in self.router.take_released() {
            self.sockets.retain(|(a, _)| *a != addr);
        }
    }

    fn home(&self, key: StreamKey) -> usize {
        home_thread(key, self.threads.len())
    }

    /// Hand the packets queued for other threads to them, one command per thread.
    fn pass_on(&mut self) {
        let received = self.media_received.first().copied();
        let mut per_thread: Vec<Vec<(StreamKey, SourcePacket)>> = Vec::new();
        for (thread, key, packet) in self.router.poll_outbox() {
            if per_thread.len() <= thread {
                per_thread.resize_with(thread + 1, Vec::new);
            }
            per_thread[thread].push((key, packet));
        }
        for (thread, packets) in per_thread.into_iter().enumerate() {
            if !packets.is_empty() {
                let _ = self.threads[thread].send(Command::Forward { packets, received });
            }
        }
    }

    async fn send_batch(&mut self, batch: &[Datagram]) {
        let Some(first) = batch.first() else { return };
        let Some((_, socket)) = self.sockets.iter().find(|(addr, _)| *addr == first.source) else { return };
        self.sender.send(socket, batch).await;
    }
}

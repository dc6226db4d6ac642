//! One media thread: its router, its sockets, and the loop that feeds the router
//! datagrams, commands and time, sends what it queued, pipes packets to other threads
//! and reports its events.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use str0m::media::KeyframeRequestKind;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::{home_thread, Command, MediaStats};
use crate::media::latency::Histogram;
use crate::media::router::{Datagram, MediaError, MediaEvent, Router, SourcePacket, StreamKey};
use crate::media::udp::{self, Sender};

/// Datagrams taken from the sockets before queued writes are released.
const RECV_BATCH: usize = 32;
/// Datagrams released by the router per send (they leave in one or more sendmmsg calls).
const SEND_BATCH: usize = 256;

pub(super) struct Worker {
    pub(super) router: Router,
    /// This thread's place in `threads`.
    pub(super) index: usize,
    /// Every media thread's commands, this one's included.
    /// Weak: the engine stops when the last [`MediaHandle`](crate::media::MediaHandle) goes, and a thread's own
    /// sender here would keep its channel open for good.
    pub(super) threads: Arc<[mpsc::WeakUnboundedSender<Command>]>,
    /// (local advertised address, socket): the shared ones first, then one per client peer.
    pub(super) sockets: Vec<(SocketAddr, UdpSocket)>,
    pub(super) client_ip: IpAddr,
    pub(super) events: mpsc::UnboundedSender<MediaEvent>,
    /// Reused buffer of outgoing datagrams.
    pub(super) batch: Vec<Datagram>,
    pub(super) sender: Sender,
    /// Kernel receive times of the media packets read since the last send.
    pub(super) media_received: Vec<SystemTime>,
    /// Packets forwarded here by home threads since the last send, by the kernel receive
    /// time of the earliest packet in their batch: (time, packets).
    pub(super) forwarded_received: Vec<(SystemTime, usize)>,
    /// From a media packet's arrival in the kernel to the end of the send of its copies.
    pub(super) forward_latency: Histogram,
    /// From a media packet's arrival in the kernel to its read by this thread.
    pub(super) read_latency: Histogram,
    /// Time spent working, from each wake-up to the end of what it led to.
    pub(super) busy_ns: u64,
}

/// Why the media thread woke up.
enum Wake {
    Command(Option<Command>),
    Datagram(udp::Received),
    Timer,
}

impl Worker {
    pub(super) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut buf = vec![0u8; 2048];
        loop {
            let now = Instant::now();
            let deadline = self.router.next_timeout().unwrap_or(now + Duration::from_secs(1));
            let sleep = tokio::time::sleep_until(deadline.max(now).into());
            let wake = tokio::select! {
                biased;
                command = commands.recv() => Wake::Command(command),
                received = udp::recv_any(&self.sockets, &mut buf) => Wake::Datagram(received),
                _ = sleep => Wake::Timer,
            };
            let woke = Instant::now();
            match wake {
                Wake::Command(Some(command)) => self.handle_command(command),
                Wake::Command(None) => break,
                Wake::Datagram(received) => {
                    self.receive(&received, &buf[..received.len]);
                    // Take what else is queued: the router releases forwarded writes once
                    // per batch (see `Router::poll_transmit`).
                    for _ in 1..RECV_BATCH {
                        let Some(received) = udp::try_recv_any(&self.sockets, &mut buf) else { break };
                        self.receive(&received, &buf[..received.len]);
                    }
                }
                Wake::Timer => self.router.handle_timeout(woke),
            }
            self.send_and_report().await;
            self.busy_ns += woke.elapsed().as_nanos() as u64;
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
                    busy_ns: vec![self.busy_ns],
                });
            }
            Command::PlayerFigures { peer, reply } => {
                let _ = reply.send(self.router.player_figures(peer));
            }
            Command::Figures { key, reply } => {
                let _ = reply.send(self.router.figures(key, now));
            }
            Command::Codecs { key, reply } => {
                let _ = reply.send(self.router.consumer_codecs(key));
            }
            Command::Mirror { key, codecs } => self.router.mirror(key, codecs),
            Command::OpenPipe { key, thread } => self.router.open_pipe(key, thread),
            Command::ClosePipe { key, thread } => self.router.close_pipe(key, thread),
            Command::Forward { packets, received } => {
                self.router.forward_piped(&packets, now);
                if let Some(at) = received {
                    self.forwarded_received.push((at, packets.len()));
                }
            }
        }
    }

    /// Send what the router queued, report its events, close released sockets.
    async fn send_and_report(&mut self) {
        // Other threads' share first: they seal and send in parallel with this one.
        self.pass_on();
        let mut batch = std::mem::take(&mut self.batch);
        loop {
            // A run of datagrams from one local address goes out together (see `udp`).
            while batch.len() < SEND_BATCH {
                let Some(d) = self.router.poll_transmit() else { break };
                if batch.first().is_some_and(|f: &Datagram| f.source != d.source) {
                    self.send_batch(&batch).await;
                    recycle(&mut batch);
                }
                batch.push(d);
            }
            if batch.is_empty() {
                break;
            }
            self.send_batch(&batch).await;
            recycle(&mut batch);
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
                    if let Some(home) = self.threads[self.home(key)].upgrade() {
                        let _ = home.send(Command::RequestKeyframe { key });
                    }
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

    /// Hand the packets piped to other threads to them, one command per thread.
    fn pass_on(&mut self) {
        let received = self.media_received.first().copied();
        let mut per_thread: Vec<Vec<(StreamKey, SourcePacket)>> = Vec::new();
        for piped in self.router.poll_piped() {
            if per_thread.len() <= piped.thread {
                per_thread.resize_with(piped.thread + 1, Vec::new);
            }
            per_thread[piped.thread].push((piped.key, piped.packet));
        }
        for (thread, packets) in per_thread.into_iter().enumerate() {
            if !packets.is_empty() {
                if let Some(thread) = self.threads[thread].upgrade() {
                    let _ = thread.send(Command::Forward { packets, received });
                }
            }
        }
    }

    async fn send_batch(&mut self, batch: &[Datagram]) {
        let Some(first) = batch.first() else { return };
        let Some((_, socket)) = self.sockets.iter().find(|(addr, _)| *addr == first.source) else { return };
        self.sender.send(socket, batch).await;
    }
}

/// Sent: str0m assembles later packets on this thread in their buffers (saving an
/// allocation and a free of ~1 kB per packet).
fn recycle(batch: &mut Vec<Datagram>) {
    for d in batch.drain(..) {
        str0m::net::recycle_send_buffer(d.contents);
    }
}

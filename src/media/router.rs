//! The media router, sans-IO: it owns the WebRTC peers of one media thread and forwards
//! each stream's packets from its producer to its consumers. It never touches a socket
//! or a clock: the shell (`media::engine`) feeds it datagrams and time and drains the
//! datagrams to send, the events to report and the next deadline.
//!
//! Vocabulary (mediasoup's): a *stream* has at most one *producer* (a peer sending us
//! media: a browser publishing, or a relay agent playing a remote stream into this
//! server) or a direct source (packets injected in-process, see `direct`), and any
//! number of *consumers* (peers we send to: browser players, relay agents publishing to
//! a remote server) and taps (in-process observers). Who each datagram is for is the
//! [`Demux`]'s business, what a peer does with it the [`Peer`]'s, each consumer's
//! rewriting its own (`consumer`), and packets for other media threads go through
//! [`pipe`](super::pipe)s.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::config::DtlsCert;
use str0m::format::PayloadParams;
use str0m::media::{KeyframeRequestKind, MediaKind, Pt};
use str0m::net::{DatagramRecv, Protocol, Receive};
use str0m::Input;
use tokio::sync::mpsc;

use super::codecs;
use super::consumer::ConsumerTrack;
use super::demux::Demux;
use super::peer::{Cause, Peer, PeerEvent};
use super::pipe::{Piped, Pipes};

pub use super::negotiation::{MediaError, Offer};

pub type PeerId = u64;
pub type StreamKey = u64;

/// What a peer does for the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Media comes in from this peer and feeds stream `key`.
    Producer(StreamKey),
    /// Stream `key`'s media goes out to this peer.
    Consumer(StreamKey),
}

/// One RTP packet of a stream, in the producer's payload-type numbering: what the
/// router forwards, what taps receive and what direct sources inject.
#[derive(Debug, Clone)]
pub struct SourcePacket {
    pub kind: MediaKind,
    pub pt: Pt,
    /// Extended (64-bit) sequence number.
    pub seq: u64,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: Arc<[u8]>,
    pub arrival: Instant,
    /// Which producer fed it (0 for direct sources): a new producer behind the same
    /// stream is a new source, and consumers carry their numbering over to it.
    pub source: u64,
}

/// Something the rest of the server must hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// ICE and DTLS are up: media can flow.
    Connected { peer: PeerId },
    /// The peer is gone for good.
    Failed { peer: PeerId, cause: Cause },
    /// The remote closed the connection (RTCP BYE / DTLS close_notify).
    Closed { peer: PeerId },
    /// A consumer wants a keyframe of a direct source.
    KeyframeRequested { key: StreamKey },
}

/// A datagram to send from local address `source`.
#[derive(Debug)]
pub struct Datagram {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

impl From<str0m::net::Transmit> for Datagram {
    fn from(t: str0m::net::Transmit) -> Self {
        Datagram { source: t.source, destination: t.destination, contents: t.contents.into() }
    }
}

/// The router's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RouterStats {
    pub peers: usize,
    pub streams: usize,
    pub packets_in: u64,
    pub packets_forwarded: u64,
    /// Payload bytes of the packets in, and of every copy forwarded.
    pub bytes_in: u64,
    pub bytes_forwarded: u64,
    pub datagrams_dropped: u64,
    /// Keyframe requests (PLI, FIR) from consumers, and those sent to producers.
    pub keyframe_requests_received: u64,
    pub keyframe_requests_sent: u64,
    /// NACKs sent to producers, and received from consumers (str0m answers those from
    /// its retransmission cache).
    pub nacks_sent: u64,
    pub nacks_received: u64,
    /// Packets retransmitted to consumers.
    pub retransmissions: u64,
}

const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(200);

/// Peer ids and stream keys are integers we hand out from one counter, never chosen by
/// the network, so they need no SipHash (whose cost showed in the profile): a
/// multiplicative hash spreads them well.
#[derive(Default, Clone, Copy)]
pub(super) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

pub(super) type IdMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<IdHasher>>;

#[derive(Default)]
pub(super) struct Stream {
    producer: Option<PeerId>,
    pub(super) codecs: Vec<PayloadParams>,
    consumers: Vec<PeerId>,
    pub(super) taps: Vec<mpsc::UnboundedSender<SourcePacket>>,
    last_keyframe_request: Option<Instant>,
    /// A request that came within the interval of the last one: sent when it has passed.
    keyframe_deferred: Option<KeyframeRequestKind>,
    /// Other media threads with consumers of this stream.
    pipes: Pipes,
    /// A copy of a stream whose producer lives on another media thread.
    mirror: bool,
    /// What its media looks like (WCS's per-stream metrics).
    figures: super::figures::StreamFigures,
}

pub struct Router {
    /// Advertised addresses of the shared server socket(s).
    pub(super) shared_addrs: Vec<SocketAddr>,
    pub(super) dtls_cert: DtlsCert,
    pub(super) connect_timeout: Duration,
    pub(super) peers: IdMap<Peer>,
    demux: Demux,
    streams: IdMap<Stream>,
    transmits: VecDeque<Datagram>,
    /// Packets for other media threads.
    piped: Vec<Piped>,
    events: VecDeque<MediaEvent>,
    /// Local addresses of client-side peers that are gone (the shell closes their sockets).
    released: Vec<SocketAddr>,
    /// Peers with written packets waiting for release (see `Router::poll_transmit`).
    unreleased: Vec<PeerId>,
    /// `unreleased` while it is being released; kept so neither list reallocates per batch.
    releasing: Vec<PeerId>,
    /// Every peer's next deadline, earliest first: no scan over all peers per wakeup.
    timers: BTreeSet<(Instant, PeerId)>,
    /// Streams with a deferred keyframe request, and when to send it.
    deferred_keyframes: Vec<(Instant, StreamKey)>,
    /// The time of the latest input, for releasing batched writes in `poll_transmit`.
    last_now: Instant,
    scratch: Vec<PeerEvent>,
    stats: RouterStats,
}

impl Router {
    pub fn new(shared_addrs: Vec<SocketAddr>, connect_timeout: Duration) -> Self {
        let provider = str0m::crypto::from_feature_flags();
        let dtls_cert = provider.dtls_provider.generate_certificate().expect("DTLS certificate");
        Router {
            shared_addrs,
            dtls_cert,
            connect_timeout,
            peers: IdMap::default(),
            demux: Demux::default(),
            streams: IdMap::default(),
            transmits: VecDeque::new(),
            piped: Vec::new(),
            events: VecDeque::new(),
            released: Vec::new(),
            unreleased: Vec::new(),
            releasing: Vec::new(),
            timers: BTreeSet::new(),
            deferred_keyframes: Vec::new(),
            last_now: Instant::now(),
            scratch: Vec::new(),
            stats: RouterStats::default(),
        }
    }

    /// Media packets taken in from producers so far (cheap: read per datagram).
    pub fn packets_in(&self) -> u64 {
        self.stats.packets_in
    }

    pub fn stats(&self) -> RouterStats {
        let streams = self.streams.values().filter(|s| !s.mirror).count();
        RouterStats { peers: self.peers.len(), streams, ..self.stats }
    }

    /// WCS's metrics of consumer `peer` (what it was sent and reported back).
    pub fn player_figures(&self, peer: PeerId) -> Option<std::collections::BTreeMap<&'static str, u64>> {
        self.peers.get(&peer).filter(|p| matches!(p.role, Role::Consumer(_))).map(|p| p.player_figures())
    }

    /// WCS's metrics of stream `key` (see [`super::figures`]), when it lives here.
    pub fn figures(&self, key: StreamKey, now: Instant) -> Option<std::collections::BTreeMap<&'static str, u64>> {
        self.streams.get(&key).filter(|s| !s.mirror).map(|s| s.figures.metrics(now))
    }

    /// The codecs consumers of `key` can be offered: the producer's, once negotiated,
    /// free to take each consumer's payload type numbers.
    pub fn consumer_codecs(&self, key: StreamKey) -> Result<Vec<PayloadParams>, MediaError> {
        let stream = self.streams.get(&key).ok_or(MediaError::StreamNotFound)?;
        if stream.codecs.is_empty() {
            return Err(MediaError::StreamNotFound);
        }
        Ok(codecs::renumberable(&stream.codecs))
    }

    /// A consumer's (producer PT, consumer PT) map for `kind`.
    #[cfg(test)]
    pub(crate) fn consumer_pt_map(&self, id: PeerId, kind: MediaKind) -> Option<Vec<(Pt, Pt)>> {
        let peer = self.peers.get(&id)?;
        peer.tracks.iter().find(|t| t.kind == kind).map(|t| t.pt_map.clone())
    }

    pub(super) fn insert_peer(&mut self, id: PeerId, peer: Peer) {
        match peer.dedicated {
            Some(local) => self.demux.add_dedicated(local, id),
            None => self.demux.add_shared(peer.ufrag.clone(), id),
        }
        match peer.role {
            Role::Producer(key) => self.streams.entry(key).or_default().producer = Some(id),
            Role::Consumer(key) => self.streams.entry(key).or_default().consumers.push(id),
        }
        self.peers.insert(id, peer);
    }

    /// After the SDP exchange: learn the producer's codecs, or map the consumer's
    /// payload types, and refuse a consumer that can take none of the stream's codecs.
    pub(super) fn finish_negotiation(&mut self, id: PeerId, now: Instant) -> Result<(), MediaError> {
        self.drain(id, now);
        let Some(peer) = self.peers.get_mut(&id) else { return Err(MediaError::UnknownPeer) };
        let negotiated = peer.negotiated();
        tracing::debug!(peer = id, mids = ?peer.mids, codecs = ?negotiated.iter().map(|(m, k, p)| (m, k, p.len())).collect::<Vec<_>>(), "negotiated");
        match peer.role {
            Role::Producer(key) => {
                let codecs: Vec<PayloadParams> = negotiated.into_iter().flat_map(|(_, _, p)| p).collect();
                let stream = self.streams.entry(key).or_default();
                let replaced = !stream.codecs.is_empty() && stream.codecs != codecs;
                stream.codecs = codecs;
                if replaced {
                    self.remap_consumers(key);
                }
                Ok(())
            }
            Role::Consumer(key) => {
                let source = self.streams.get(&key).map(|s| s.codecs.clone()).unwrap_or_default();
                peer.tracks = negotiated
                    .into_iter()
                    .map(|(mid, kind, accepted)| {
                        ConsumerTrack::new(
                            mid,
                            kind,
                            codecs::pt_map(&source, kind, &accepted),
                            codecs::clock_rate(&source, kind),
                        )
                    })
                    .collect();
                let source_kinds = |k: MediaKind| source.iter().any(|s| s.spec().codec.kind() == k);
                let unmatched = peer.tracks.iter().any(|t| t.pt_map.is_empty() && source_kinds(t.kind));
                let matched = peer.tracks.iter().any(|t| !t.pt_map.is_empty());
                if unmatched || !matched {
                    self.remove_peer(id, false, now);
                    return Err(MediaError::NoCommonCodecs);
                }
                Ok(())
            }
        }
    }

    /// A new producer numbers its codecs differently: map every consumer of `key` here
    /// again (a consumer that can take none of them receives nothing until it leaves).
    fn remap_consumers(&mut self, key: StreamKey) {
        let Some(stream) = self.streams.get(&key) else { return };
        let source = stream.codecs.clone();
        for cid in stream.consumers.clone() {
            let Some(peer) = self.peers.get_mut(&cid) else { continue };
            for (mid, kind, accepted) in peer.negotiated() {
                if let Some(track) = peer.tracks.iter_mut().find(|t| t.mid == mid) {
                    track.pt_map = codecs::pt_map(&source, kind, &accepted);
                }
            }
        }
    }

    // ---- streams spread over media threads ------------------------------------------

    /// Hold a copy of stream `key`, whose producer lives on another media thread, for
    /// consumers here; its packets arrive through [`Router::forward_piped`].
    pub fn mirror(&mut self, key: StreamKey, codecs: Vec<PayloadParams>) {
        let stream = self.streams.entry(key).or_default();
        if stream.producer.is_none() {
            stream.mirror = true;
            stream.codecs = codecs;
        }
    }

    /// One more consumer of `key` on media thread `thread`: pipe every packet of `key`
    /// there as well (see [`Router::poll_piped`]).
    pub fn open_pipe(&mut self, key: StreamKey, thread: usize) {
        if let Some(stream) = self.streams.get_mut(&key) {
            stream.pipes.open(thread);
        }
    }

    /// One consumer of `key` on `thread` fewer; the last one closes the pipe.
    pub fn close_pipe(&mut self, key: StreamKey, thread: usize) {
        if let Some(stream) = self.streams.get_mut(&key) {
            stream.pipes.close(thread);
        }
    }

    /// Packets another media thread piped here, for the mirrors.
    pub fn forward_piped(&mut self, packets: &[(StreamKey, SourcePacket)], now: Instant) {
        for (key, packet) in packets {
            self.forward(*key, packet);
        }
        self.last_now = now;
    }

    /// Packets for other media threads, queued by forwarding.
    pub fn poll_piped(&mut self) -> std::vec::Drain<'_, Piped> {
        self.piped.drain(..)
    }

    /// Stream `key`, made if new (for `direct`).
    pub(super) fn stream_mut(&mut self, key: StreamKey) -> &mut Stream {
        self.streams.entry(key).or_default()
    }

    /// Forget a stream; its producer and consumers (if any remain) stay until removed.
    pub fn remove_stream(&mut self, key: StreamKey) {
        self.streams.remove(&key);
    }

    /// Ask the stream's producer for a keyframe. Requests are merged to one per 200 ms
    /// (a burst of joining players costs the publisher one keyframe), but never dropped:
    /// one within the interval is sent when it has passed.
    pub fn request_keyframe(&mut self, key: StreamKey, kind: KeyframeRequestKind, now: Instant) {
        let Some(stream) = self.streams.get_mut(&key) else { return };
        if let Some(last) = stream.last_keyframe_request.filter(|t| now.duration_since(*t) < KEYFRAME_REQUEST_INTERVAL)
        {
            if stream.keyframe_deferred.replace(kind).is_none() {
                self.deferred_keyframes.push((last + KEYFRAME_REQUEST_INTERVAL, key));
            }
            return;
        }
        let Some(pid) = stream.producer else {
            stream.last_keyframe_request = Some(now);
            self.events.push_back(MediaEvent::KeyframeRequested { key });
            return;
        };
        let Some(peer) = self.peers.get_mut(&pid) else { return };
        let asked = peer.request_keyframe(kind);
        tracing::debug!(stream = key, producer = pid, receiving = asked, "keyframe request");
        if asked {
            self.stats.keyframe_requests_sent += 1;
            stream.figures.keyframe_requests += 1;
            stream.last_keyframe_request = Some(now);
            if !std::mem::replace(&mut peer.unreleased, true) {
                self.unreleased.push(pid);
            }
        }
        self.release_writes(now);
    }

    // ---- I/O -----------------------------------------------------------------------

    /// A datagram arrived at local address `destination` from `source`.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        let Ok(contents) = DatagramRecv::try_from(data) else {
            self.stats.datagrams_dropped += 1;
            return;
        };
        let Some(id) = self.demux.find(source, destination, data) else {
            self.stats.datagrams_dropped += 1;
            return;
        };
        let Some(peer) = self.peers.get_mut(&id) else { return };
        let input = Input::Receive(now, Receive { proto: Protocol::Udp, source, destination, contents });
        if !peer.receive(input) {
            self.stats.datagrams_dropped += 1;
            return;
        }
        if peer.dedicated.is_none() {
            self.demux.seen_at(source, id);
        }
        // Forwarded writes are released by `poll_transmit`, once per batch of datagrams:
        // each consumer then runs str0m's timeout handling once per batch, not per packet.
        self.last_now = now;
        self.drain(id, now);
    }

    /// The earliest time [`Router::handle_timeout`] must run.
    pub fn next_timeout(&self) -> Option<Instant> {
        let keyframes = self.deferred_keyframes.iter().map(|(t, _)| *t).min();
        self.timers.first().map(|(t, _)| *t).into_iter().chain(keyframes).min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = now;
        if self.deferred_keyframes.iter().any(|(t, _)| *t <= now) {
            let (due, later) = self.deferred_keyframes.drain(..).partition(|(t, _)| *t <= now);
            self.deferred_keyframes = later;
            for (_, key) in due {
                let kind = self.streams.get_mut(&key).and_then(|s| s.keyframe_deferred.take());
                if let Some(kind) = kind {
                    self.request_keyframe(key, kind, now);
                }
            }
        }
        let due: Vec<PeerId> = self.timers.iter().take_while(|(t, _)| *t <= now).map(|(_, id)| *id).collect();
        for id in due {
            let Some(peer) = self.peers.get_mut(&id) else { continue };
            if let Err(cause) = peer.handle_timeout(now) {
                self.fail_peer(id, cause, now);
                continue;
            }
            self.drain(id, now);
        }
        self.release_writes(now);
    }

    /// The next datagram to send (releasing writes queued since the last call first).
    pub fn poll_transmit(&mut self) -> Option<Datagram> {
        if !self.unreleased.is_empty() {
            self.release_writes(self.last_now);
        }
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }

    /// Dedicated local addresses no peer uses any more (the shell closes their sockets).
    pub fn take_released(&mut self) -> Vec<SocketAddr> {
        std::mem::take(&mut self.released)
    }

    /// Drop a peer; `close` first tells the remote (RTCP BYE, DTLS close_notify).
    pub fn remove_peer(&mut self, id: PeerId, close: bool, now: Instant) {
        if close && self.peers.get_mut(&id).is_some_and(|p| p.close()) {
            self.drain(id, now);
        }
        let Some(peer) = self.peers.remove(&id) else { return };
        if let Some(t) = peer.timer {
            self.timers.remove(&(t, id));
        }
        self.demux.remove(id, &peer.ufrag, peer.dedicated);
        if let Some(local) = peer.dedicated {
            self.released.push(local);
        }
        match peer.role {
            Role::Producer(key) => {
                if let Some(s) = self.streams.get_mut(&key).filter(|s| s.producer == Some(id)) {
                    s.producer = None;
                }
            }
            Role::Consumer(key) => {
                if let Some(s) = self.streams.get_mut(&key) {
                    s.consumers.retain(|c| *c != id);
                }
            }
        }
    }

    fn fail_peer(&mut self, id: PeerId, cause: Cause, now: Instant) {
        self.events.push_back(MediaEvent::Failed { peer: id, cause });
        self.remove_peer(id, false, now);
    }

    // ---- acting on what peers did ------------------------------------------------

    /// Poll one peer until it has nothing more to say, then act on what it did.
    pub(super) fn drain(&mut self, id: PeerId, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else { return };
        let mut events = std::mem::take(&mut self.scratch);
        peer.poll(&mut self.transmits, &mut events);
        let (role, due) = (peer.role, peer.deadline());
        if peer.timer != Some(due) {
            if let Some(old) = peer.timer.replace(due) {
                self.timers.remove(&(old, id));
            }
            self.timers.insert((due, id));
        }
        for event in events.drain(..) {
            match (event, role) {
                (PeerEvent::Connected, _) => {
                    self.events.push_back(MediaEvent::Connected { peer: id });
                    match role {
                        Role::Consumer(key) => self.request_keyframe(key, KeyframeRequestKind::Pli, now),
                        // A producer taking over a stream that has consumers: they need a
                        // keyframe of the new source before they can show it.
                        Role::Producer(key) => {
                            if self.streams.get(&key).is_some_and(|s| !s.consumers.is_empty() || !s.pipes.is_empty()) {
                                self.request_keyframe(key, KeyframeRequestKind::Pli, now);
                            }
                        }
                    }
                }
                (PeerEvent::Failed(cause), _) => self.fail_peer(id, cause, now),
                (PeerEvent::Closed, _) => {
                    self.events.push_back(MediaEvent::Closed { peer: id });
                    self.remove_peer(id, false, now);
                }
                (PeerEvent::Packet(mut packet), Role::Producer(key)) => {
                    self.stats.packets_in += 1;
                    self.stats.bytes_in += packet.payload.len() as u64;
                    if let Some(stream) = self.streams.get_mut(&key) {
                        let codec = (packet.kind == MediaKind::Video)
                            .then(|| stream.codecs.iter().find(|c| c.pt() == packet.pt).map(|c| c.spec().codec))
                            .flatten();
                        stream.figures.record(&packet, codec, now);
                    }
                    packet.source = id;
                    self.forward(key, &packet);
                }
                (PeerEvent::Repairs { nacks, .. }, Role::Producer(key)) => {
                    self.stats.nacks_sent += nacks;
                    if let Some(stream) = self.streams.get_mut(&key) {
                        stream.figures.nacks += nacks;
                    }
                }
                (PeerEvent::Repairs { nacks, resent }, Role::Consumer(_)) => {
                    self.stats.nacks_received += nacks;
                    self.stats.retransmissions += resent;
                }
                (PeerEvent::KeyframeRequest(kind), Role::Consumer(key)) => {
                    self.stats.keyframe_requests_received += 1;
                    self.request_keyframe(key, kind, now)
                }
                _ => {}
            }
        }
        self.scratch = events;
    }

    /// One packet of stream `key` to its taps, its pipes and every consumer here; the
    /// router only maps, each consumer rewrites for itself.
    pub(super) fn forward(&mut self, key: StreamKey, packet: &SourcePacket) {
        let Some(stream) = self.streams.get_mut(&key) else { return };
        if !stream.taps.is_empty() {
            stream.taps.retain(|t| t.send(packet.clone()).is_ok());
        }
        stream.pipes.send(key, packet, &mut self.piped);
        for &cid in &stream.consumers {
            let Some(peer) = self.peers.get_mut(&cid) else { continue };
            if peer.send(packet) {
                self.stats.packets_forwarded += 1;
                self.stats.bytes_forwarded += packet.payload.len() as u64;
                if !std::mem::replace(&mut peer.unreleased, true) {
                    self.unreleased.push(cid);
                }
            }
        }
    }

    /// Let written packets go: str0m emits them on a peer's next input.
    pub(super) fn release_writes(&mut self, now: Instant) {
        let mut releasing = std::mem::take(&mut self.releasing);
        while !self.unreleased.is_empty() {
            std::mem::swap(&mut self.unreleased, &mut releasing);
            for id in releasing.drain(..) {
                if self.peers.get_mut(&id).is_some_and(|p| p.release(now)) {
                    self.drain(id, now);
                }
            }
        }
        self.releasing = releasing;
    }
}

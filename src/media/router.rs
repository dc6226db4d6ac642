//! The media router, sans-IO: it owns every WebRTC peer (`str0m::Rtc`) of the process
//! and forwards RTP from each stream's producer to its consumers. It never touches a
//! socket or a clock: the shell (`media::engine`) feeds it datagrams and time and drains
//! the datagrams to send, the events to report and the next deadline.
//!
//! Vocabulary (mediasoup's): a *stream* has at most one *producer* (a peer sending us
//! media: a browser publishing, or a relay agent playing a remote stream into this
//! server) or a synthetic *source* (packets injected by the load generator and tests),
//! and any number of *consumers* (peers we send to: browser players, relay agents
//! publishing to a remote server) and *taps* (in-process observers of the packets).
//!
//! Server-side peers answer browser offers as ICE-lite and share the server's UDP
//! socket(s); the router tells them apart by the STUN USERNAME (our ufrag) and then by
//! remembered source address. Client-side peers (the offering side: relay agents, test
//! clients) each get a dedicated local address from the shell, because several of them
//! may talk to the same remote address and DTLS cannot be demultiplexed otherwise.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::config::DtlsCert;
use str0m::format::{Codec, CodecConfig, PayloadParams};
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Pt};
use str0m::net::{DatagramRecv, Protocol, Receive};
use str0m::rtp::{Extension, RtpWrite, Ssrc};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::sync::mpsc;

use super::codecs::{self, publish_codecs};
use super::sdp::{media_mids, preferred_video_codec, unify_msid, VideoCodec};
use crate::protocol::reason;

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaError {
    BadSdp(String),
    NoCommonCodecs,
    StreamNotFound,
    UnknownPeer,
    Webrtc(String),
}

impl std::fmt::Display for MediaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadSdp(e) => write!(f, "Invalid SDP: {e}"),
            Self::NoCommonCodecs => f.write_str(reason::NO_COMMON_CODECS),
            Self::StreamNotFound => f.write_str(reason::STREAM_NOT_FOUND),
            Self::UnknownPeer => f.write_str("Unknown media peer"),
            Self::Webrtc(e) => write!(f, "WebRTC error: {e}"),
        }
    }
}

/// One RTP packet of a stream, in the producer's payload-type numbering: what the
/// router forwards, what taps receive and what synthetic sources inject.
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
}

impl SourcePacket {
    /// A packet of a synthetic source (see [`source_codecs`]): one marked frame or audio
    /// packet per sequence number, timestamps 30 fps / 20 ms apart.
    pub fn synthetic(kind: MediaKind, seq: u64, payload: impl Into<Arc<[u8]>>, arrival: Instant) -> Self {
        let clock_step = if kind == MediaKind::Video { 3000 } else { 960 };
        SourcePacket {
            kind,
            pt: source_pt(kind),
            seq,
            timestamp: (seq as u32).wrapping_mul(clock_step),
            marker: true,
            payload: payload.into(),
            arrival,
        }
    }
}

/// Deliver every datagram `a` and `b` have queued to the other, at `now`: two routers
/// wired back to back in memory (the router's tests and `hopcast-load router`).
pub fn exchange_datagrams(a: &mut Router, b: &mut Router, now: Instant) {
    while let Some(d) = a.poll_transmit() {
        b.handle_datagram(now, d.source, d.destination, &d.contents);
    }
    while let Some(d) = b.poll_transmit() {
        a.handle_datagram(now, d.source, d.destination, &d.contents);
    }
}

/// A remote offer, parsed: the costly part of answering, done where it cannot hold up
/// forwarding (see `MediaHandle::answer`).
pub struct Offer {
    sdp: SdpOffer,
    mids: Vec<(Mid, MediaKind)>,
    preferred: Option<VideoCodec>,
}

impl Offer {
    pub fn parse(text: &str) -> Result<Offer, MediaError> {
        let mids = media_mids(text)
            .into_iter()
            .map(|(mid, video)| (Mid::from(mid.as_str()), if video { MediaKind::Video } else { MediaKind::Audio }))
            .collect();
        let preferred = preferred_video_codec(text);
        let sdp = SdpOffer::from_sdp_string(text).map_err(bad_sdp)?;
        Ok(Offer { sdp, mids, preferred })
    }
}

/// Something the signaling layer must hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// ICE and DTLS are up: media can flow.
    Connected { peer: PeerId },
    /// The peer is gone for good; `reason` is a protocol reason text.
    Failed { peer: PeerId, reason: &'static str },
    /// The remote closed the connection (RTCP BYE / DTLS close_notify).
    Closed { peer: PeerId },
    /// A consumer wants a keyframe of a synthetic source.
    KeyframeRequested { key: StreamKey },
}

/// A datagram to send from local address `source`.
#[derive(Debug)]
pub struct Datagram {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouterStats {
    pub peers: usize,
    pub streams: usize,
    pub packets_in: u64,
    pub packets_forwarded: u64,
    pub datagrams_dropped: u64,
}

/// Codecs of synthetic sources: Opus and VP8 with str0m's default payload types.
pub fn source_codecs() -> Vec<PayloadParams> {
    let all = CodecConfig::new_with_defaults();
    [Codec::Opus, Codec::Vp8].iter().filter_map(|c| all.find(|p| p.spec().codec == *c).copied()).collect()
}

/// Payload type a synthetic source uses for `kind`.
pub fn source_pt(kind: MediaKind) -> Pt {
    source_codecs().iter().find(|p| p.spec().codec.kind() == kind).map(|p| p.pt()).expect("default codecs")
}

const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(200);

/// Peer ids and stream keys are integers we hand out from one counter, never chosen by
/// the network, so they need no SipHash (whose cost showed in the profile): a
/// multiplicative hash spreads them well. Maps keyed by what the network sends
/// (addresses, ufrags) keep the default, flood-resistant hasher.
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

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

type IdMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<IdHasher>>;

struct OutTrack {
    kind: MediaKind,
    mid: Mid,
    /// (producer PT, consumer PT); a handful of entries, a scan beats a map.
    pt_map: Vec<(Pt, Pt)>,
    /// (first producer seq, first consumer seq): each consumer's sequence starts fresh,
    /// so SRTP's rollover counter starts at 0 whenever the player joins.
    seq_base: Option<(u64, u64)>,
}

struct Peer {
    rtc: Rtc,
    role: Role,
    mids: Vec<(Mid, MediaKind)>,
    tracks: Vec<OutTrack>,
    in_kinds: Vec<(Ssrc, MediaKind)>,
    pending_offer: Option<SdpPendingOffer>,
    ufrag: String,
    dedicated: Option<SocketAddr>,
    connected: bool,
    connect_deadline: Instant,
    timeout: Instant,
    /// The entry this peer has in `Router::timers`.
    timer: Option<Instant>,
    dirty: bool,
}

#[derive(Default)]
struct Stream {
    producer: Option<PeerId>,
    codecs: Vec<PayloadParams>,
    consumers: Vec<PeerId>,
    taps: Vec<mpsc::UnboundedSender<SourcePacket>>,
    last_keyframe_request: Option<Instant>,
    /// A request that came within the interval of the last one: sent when it has passed.
    keyframe_deferred: Option<KeyframeRequestKind>,
    /// Other media threads with consumers of this stream, and how many: each packet goes
    /// to those threads too.
    subscribers: Vec<(usize, u32)>,
    /// A copy of a stream whose producer lives on another media thread.
    mirror: bool,
}

pub struct Router {
    /// Advertised addresses of the shared server socket(s).
    shared_addrs: Vec<SocketAddr>,
    dtls_cert: DtlsCert,
    connect_timeout: Duration,
    peers: IdMap<Peer>,
    by_ufrag: HashMap<String, PeerId>,
    by_source: HashMap<SocketAddr, PeerId>,
    by_dedicated: HashMap<SocketAddr, PeerId>,
    streams: IdMap<Stream>,
    transmits: VecDeque<Datagram>,
    /// Packets for subscribed media threads: (thread, stream, packet).
    outbox: Vec<(usize, StreamKey, SourcePacket)>,
    events: VecDeque<MediaEvent>,
    released: Vec<SocketAddr>,
    dirty: Vec<PeerId>,
    /// Every peer's next deadline, earliest first: no scan over all peers per wakeup.
    timers: BTreeSet<(Instant, PeerId)>,
    /// Streams with a deferred keyframe request, and when to send it.
    deferred_keyframes: Vec<(Instant, StreamKey)>,
    /// The time of the latest input, for releasing batched writes in `poll_transmit`.
    last_now: Instant,
    scratch: Vec<Event>,
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
            by_ufrag: HashMap::new(),
            by_source: HashMap::new(),
            by_dedicated: HashMap::new(),
            streams: IdMap::default(),
            transmits: VecDeque::new(),
            outbox: Vec::new(),
            events: VecDeque::new(),
            released: Vec::new(),
            dirty: Vec::new(),
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

    // ---- negotiation -------------------------------------------------------------

    /// Answer a browser's offer as an ICE-lite server peer on the shared socket(s).
    pub fn answer(&mut self, id: PeerId, role: Role, offer: &str, now: Instant) -> Result<String, MediaError> {
        self.answer_parsed(id, role, Offer::parse(offer)?, now)
    }

    /// [`Router::answer`] for an offer parsed beforehand (off the media thread).
    pub fn answer_parsed(&mut self, id: PeerId, role: Role, offer: Offer, now: Instant) -> Result<String, MediaError> {
        let Offer { sdp: offer, mids, preferred } = offer;
        let codecs = match role {
            Role::Producer(_) => publish_codecs(preferred),
            Role::Consumer(key) => self.consumer_codecs(key)?,
        };
        let mut rtc = rtc_config(role, codecs, &self.dtls_cert).set_ice_lite(true).build(now);
        for addr in &self.shared_addrs {
            if let Ok(c) = Candidate::host(*addr, "udp") {
                rtc.add_local_candidate(c);
            }
        }
        let answer = rtc.sdp_api().accept_offer(offer).map_err(bad_sdp)?;
        let answer = unify_msid(&answer.to_sdp_string(), &msid_for(role));
        self.insert_peer(id, role, rtc, None, now);
        self.peers.get_mut(&id).expect("just inserted").mids = mids;
        self.finish_negotiation(id, now)?;
        Ok(answer)
    }

    /// Make an offer as a full-ICE client peer bound to the dedicated address `local`.
    pub fn offer(&mut self, id: PeerId, role: Role, local: SocketAddr, now: Instant) -> Result<String, MediaError> {
        let codecs = match role {
            Role::Producer(_) => publish_codecs(None),
            Role::Consumer(key) => self.consumer_codecs(key)?,
        };
        self.offer_codecs(id, role, local, codecs, now)
    }

    /// [`Router::offer`] with the given codecs, in the given numbering.
    fn offer_codecs(
        &mut self,
        id: PeerId,
        role: Role,
        local: SocketAddr,
        codecs: Vec<PayloadParams>,
        now: Instant,
    ) -> Result<String, MediaError> {
        let direction = if matches!(role, Role::Producer(_)) { Direction::RecvOnly } else { Direction::SendOnly };
        let kinds: Vec<(MediaKind, Direction)> = [MediaKind::Audio, MediaKind::Video]
            .into_iter()
            .filter(|k| codecs.iter().any(|p| p.spec().codec.kind() == *k))
            .map(|k| (k, direction))
            .collect();
        let mut rtc = rtc_config(role, codecs, &self.dtls_cert).build(now);
        let candidate = Candidate::host(local, "udp").map_err(|e| MediaError::Webrtc(e.to_string()))?;
        rtc.add_local_candidate(candidate);
        let mut api = rtc.sdp_api();
        let mut mids = Vec::new();
        for (kind, dir) in kinds {
            mids.push((api.add_media(kind, dir, Some(msid_for(role)), None, None), kind));
        }
        let (offer, pending) = api.apply().ok_or_else(|| MediaError::Webrtc("nothing to offer".into()))?;
        self.insert_peer(id, role, rtc, Some(local), now);
        let peer = self.peers.get_mut(&id).expect("just inserted");
        peer.mids = mids;
        peer.pending_offer = Some(pending);
        self.drain(id, now);
        Ok(offer.to_sdp_string())
    }

    /// Apply the remote answer to an offer made by [`Router::offer`].
    pub fn apply_answer(&mut self, id: PeerId, answer: &str, now: Instant) -> Result<(), MediaError> {
        let answer = SdpAnswer::from_sdp_string(answer).map_err(bad_sdp);
        let peer = self.peers.get_mut(&id).ok_or(MediaError::UnknownPeer)?;
        let pending = peer.pending_offer.take().ok_or(MediaError::UnknownPeer)?;
        let result = answer.and_then(|a| peer.rtc.sdp_api().accept_answer(pending, a).map_err(bad_sdp));
        if let Err(e) = result {
            self.remove_peer(id, false, now);
            return Err(e);
        }
        self.finish_negotiation(id, now)
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

    fn insert_peer(&mut self, id: PeerId, role: Role, mut rtc: Rtc, dedicated: Option<SocketAddr>, now: Instant) {
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        if let Some(addr) = dedicated {
            self.by_dedicated.insert(addr, id);
        } else {
            self.by_ufrag.insert(ufrag.clone(), id);
        }
        match role {
            Role::Producer(key) => self.streams.entry(key).or_default().producer = Some(id),
            Role::Consumer(key) => self.streams.entry(key).or_default().consumers.push(id),
        }
        let peer = Peer {
            rtc,
            role,
            mids: Vec::new(),
            tracks: Vec::new(),
            in_kinds: Vec::new(),
            pending_offer: None,
            ufrag,
            dedicated,
            connected: false,
            connect_deadline: now + self.connect_timeout,
            timeout: now,
            timer: None,
            dirty: false,
        };
        self.peers.insert(id, peer);
    }

    /// After the SDP exchange: learn the producer's codecs, or map the consumer's
    /// payload types, and refuse a consumer that can take none of the stream's codecs.
    fn finish_negotiation(&mut self, id: PeerId, now: Instant) -> Result<(), MediaError> {
        self.drain(id, now);
        let Some(peer) = self.peers.get_mut(&id) else { return Err(MediaError::UnknownPeer) };
        let negotiated: Vec<(Mid, MediaKind, Vec<PayloadParams>)> = peer
            .mids
            .iter()
            .filter_map(|(mid, kind)| {
                let media = peer.rtc.media(*mid)?;
                let params = peer.rtc.codec_config().params().iter().filter(|p| media.remote_pts().contains(&p.pt()));
                Some((*mid, *kind, params.copied().collect()))
            })
            .collect();
        tracing::debug!(peer = id, mids = ?peer.mids, codecs = ?negotiated.iter().map(|(m, k, p)| (m, k, p.len())).collect::<Vec<_>>(), "negotiated");
        match peer.role {
            Role::Producer(key) => {
                let stream = self.streams.entry(key).or_default();
                stream.codecs = negotiated.into_iter().flat_map(|(_, _, p)| p).collect();
                Ok(())
            }
            Role::Consumer(key) => {
                let source = self.streams.get(&key).map(|s| s.codecs.clone()).unwrap_or_default();
                peer.tracks = negotiated
                    .into_iter()
                    .map(|(mid, kind, accepted)| OutTrack {
                        kind,
                        mid,
                        pt_map: codecs::pt_map(&source, kind, &accepted),
                        seq_base: None,
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

    // ---- streams spread over media threads ------------------------------------------

    /// Hold a copy of stream `key`, whose producer lives on another media thread, for
    /// consumers here; its packets arrive through [`Router::forward_from_thread`].
    pub fn mirror(&mut self, key: StreamKey, codecs: Vec<PayloadParams>) {
        let stream = self.streams.entry(key).or_default();
        if stream.producer.is_none() {
            stream.mirror = true;
            stream.codecs = codecs;
        }
    }

    /// One more consumer of `key` on media thread `thread`: send every packet of `key`
    /// there as well (see [`Router::poll_outbox`]).
    pub fn subscribe(&mut self, key: StreamKey, thread: usize) {
        let Some(stream) = self.streams.get_mut(&key) else { return };
        match stream.subscribers.iter_mut().find(|(t, _)| *t == thread) {
            Some((_, consumers)) => *consumers += 1,
            None => stream.subscribers.push((thread, 1)),
        }
    }

    /// One consumer of `key` on `thread` fewer; the last one ends the subscription.
    pub fn unsubscribe(&mut self, key: StreamKey, thread: usize) {
        let Some(stream) = self.streams.get_mut(&key) else { return };
        if let Some(i) = stream.subscribers.iter().position(|(t, _)| *t == thread) {
            stream.subscribers[i].1 -= 1;
            if stream.subscribers[i].1 == 0 {
                stream.subscribers.swap_remove(i);
            }
        }
    }

    /// Packets another media thread forwarded for the mirrors here.
    pub fn forward_from_thread(&mut self, packets: &[(StreamKey, SourcePacket)], now: Instant) {
        for (key, packet) in packets {
            self.forward(*key, packet);
        }
        self.last_now = now;
    }

    /// Packets for other media threads, queued by forwarding: (thread, stream, packet).
    pub fn poll_outbox(&mut self) -> std::vec::Drain<'_, (usize, StreamKey, SourcePacket)> {
        self.outbox.drain(..)
    }

    // ---- synthetic sources and taps ---------------------------------------------

    /// Make `key` a stream fed by [`Router::inject`] with [`source_codecs`].
    pub fn add_source(&mut self, key: StreamKey) {
        self.streams.entry(key).or_default().codecs = source_codecs();
    }

    pub fn inject(&mut self, key: StreamKey, packet: &SourcePacket, now: Instant) {
        self.forward(key, packet);
        self.flush(now);
    }

    pub fn tap(&mut self, key: StreamKey, tap: mpsc::UnboundedSender<SourcePacket>) {
        self.streams.entry(key).or_default().taps.push(tap);
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
        let Some(mid) = peer.mids.iter().find(|(_, k)| *k == MediaKind::Video).map(|(m, _)| *m) else { return };
        // No receive stream yet means no video yet: its first frame is a keyframe anyway.
        let rx = peer.rtc.direct_api().stream_rx_by_mid(mid, None).is_some();
        tracing::debug!(stream = key, producer = pid, %mid, receiving = rx, "keyframe request");
        if let Some(rx) = peer.rtc.direct_api().stream_rx_by_mid(mid, None) {
            rx.request_keyframe(kind);
            stream.last_keyframe_request = Some(now);
            mark_dirty(&mut self.dirty, peer, pid);
        }
        self.flush(now);
    }

    // ---- I/O -----------------------------------------------------------------------

    /// A datagram arrived at local address `destination` from `source`.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        let Ok(contents) = DatagramRecv::try_from(data) else {
            self.stats.datagrams_dropped += 1;
            return;
        };
        let id = self
            .by_dedicated
            .get(&destination)
            .or_else(|| stun_local_ufrag(data).and_then(|u| self.by_ufrag.get(u)))
            .or_else(|| self.by_source.get(&source))
            .copied();
        let Some(id) = id else {
            self.stats.datagrams_dropped += 1;
            return;
        };
        let Some(peer) = self.peers.get_mut(&id) else { return };
        let input = Input::Receive(now, Receive { proto: Protocol::Udp, source, destination, contents });
        if !peer.rtc.accepts(&input) {
            self.stats.datagrams_dropped += 1;
            return;
        }
        if peer.dedicated.is_none() {
            self.by_source.insert(source, id);
        }
        if let Err(e) = peer.rtc.handle_input(input) {
            tracing::debug!(peer = id, error = %e, "input rejected");
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
            if !peer.connected && peer.connect_deadline <= now {
                self.fail_peer(id, reason::ICE_TIMEOUT, now);
                continue;
            }
            if peer.rtc.handle_input(Input::Timeout(now)).is_err() {
                self.fail_peer(id, reason::FAILED_BY_ERROR, now);
                continue;
            }
            self.drain(id, now);
        }
        self.flush(now);
    }

    /// The next datagram to send (releasing writes queued since the last call first).
    pub fn poll_transmit(&mut self) -> Option<Datagram> {
        if !self.dirty.is_empty() {
            self.flush(self.last_now);
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
        if close {
            if let Some(peer) = self.peers.get_mut(&id) {
                if peer.rtc.close().is_ok() {
                    self.drain(id, now);
                }
            }
        }
        let Some(peer) = self.peers.remove(&id) else { return };
        if let Some(t) = peer.timer {
            self.timers.remove(&(t, id));
        }
        self.by_ufrag.remove(&peer.ufrag);
        self.by_source.retain(|_, p| *p != id);
        if let Some(addr) = peer.dedicated {
            self.by_dedicated.remove(&addr);
            self.released.push(addr);
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

    fn fail_peer(&mut self, id: PeerId, reason: &'static str, now: Instant) {
        self.events.push_back(MediaEvent::Failed { peer: id, reason });
        self.remove_peer(id, false, now);
    }

    // ---- the run loop of one peer -------------------------------------------------------

    /// Poll one peer until it has nothing more to say, then act on its events.
    fn drain(&mut self, id: PeerId, now: Instant) {
        let mut events = std::mem::take(&mut self.scratch);
        let mut failed = None;
        if let Some(peer) = self.peers.get_mut(&id) {
            loop {
                match peer.rtc.poll_output() {
                    Ok(Output::Timeout(t)) => {
                        peer.timeout = t;
                        break;
                    }
                    Ok(Output::Transmit(t)) => self.transmits.push_back(Datagram {
                        source: t.source,
                        destination: t.destination,
                        contents: t.contents.into(),
                    }),
                    Ok(Output::Event(e)) => events.push(e),
                    Err(e) => {
                        tracing::debug!(peer = id, error = %e, "peer failed");
                        failed = Some(if peer.connected { reason::FAILED_BY_ERROR } else { reason::DTLS_ERROR });
                        break;
                    }
                }
            }
        }
        for event in events.drain(..) {
            self.handle_event(id, event, now);
        }
        self.scratch = events;
        if let Some(peer) = self.peers.get_mut(&id) {
            let due = if peer.connected { peer.timeout } else { peer.timeout.min(peer.connect_deadline) };
            if peer.timer != Some(due) {
                if let Some(old) = peer.timer.replace(due) {
                    self.timers.remove(&(old, id));
                }
                self.timers.insert((due, id));
            }
        }
        if let Some(reason) = failed {
            self.fail_peer(id, reason, now);
        }
    }

    fn handle_event(&mut self, id: PeerId, event: Event, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else { return };
        match event {
            Event::Connected => {
                peer.connected = true;
                self.events.push_back(MediaEvent::Connected { peer: id });
                if let Role::Consumer(key) = peer.role {
                    self.request_keyframe(key, KeyframeRequestKind::Pli, now);
                }
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.fail_peer(id, reason::ICE_TIMEOUT, now);
            }
            // Mids come from the SDP at negotiation; str0m announces them only later.
            Event::MediaAdded(_) => {}
            Event::RtpPacket(pkt) => {
                let Role::Producer(key) = peer.role else { return };
                if pkt.payload.is_empty() {
                    return;
                }
                let ssrc = pkt.header.ssrc;
                let kind = match peer.in_kinds.iter().find(|(s, _)| *s == ssrc) {
                    Some((_, k)) => *k,
                    None => {
                        let Some(mid) = peer.rtc.direct_api().stream_rx(&ssrc).map(|s| s.mid()) else { return };
                        let Some(kind) = peer.rtc.media(mid).map(|m| m.kind()) else { return };
                        peer.in_kinds.push((ssrc, kind));
                        kind
                    }
                };
                self.stats.packets_in += 1;
                let packet = SourcePacket {
                    kind,
                    pt: pkt.header.payload_type,
                    seq: *pkt.seq_no,
                    timestamp: pkt.header.timestamp,
                    marker: pkt.header.marker,
                    payload: pkt.payload,
                    arrival: pkt.timestamp,
                };
                self.forward(key, &packet);
            }
            Event::KeyframeRequest(req) => {
                if let Role::Consumer(key) = peer.role {
                    self.request_keyframe(key, req.kind, now);
                }
            }
            Event::Closed => {
                self.events.push_back(MediaEvent::Closed { peer: id });
                self.remove_peer(id, false, now);
            }
            _ => {}
        }
    }

    /// Write one packet to every connected consumer of `key` and hand it to the taps.
    fn forward(&mut self, key: StreamKey, packet: &SourcePacket) {
        let Some(stream) = self.streams.get_mut(&key) else { return };
        if !stream.taps.is_empty() {
            stream.taps.retain(|t| t.send(packet.clone()).is_ok());
        }
        for &(thread, _) in &stream.subscribers {
            self.outbox.push((thread, key, packet.clone()));
        }
        for &cid in &stream.consumers {
            let Some(peer) = self.peers.get_mut(&cid) else { continue };
            if !peer.connected {
                continue;
            }
            let Some(track) = peer.tracks.iter_mut().find(|t| t.kind == packet.kind) else { continue };
            let Some(&(_, pt)) = track.pt_map.iter().find(|(src, _)| *src == packet.pt) else { continue };
            let (src0, dst0) = *track.seq_base.get_or_insert((packet.seq, 1));
            if packet.seq < src0 {
                continue;
            }
            let mut api = peer.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(track.mid, None) else { continue };
            let write = RtpWrite::new(
                pt,
                (dst0 + packet.seq - src0).into(),
                packet.timestamp,
                packet.arrival,
                packet.payload.clone(),
            )
            .marker(packet.marker)
            .nackable(true);
            tx.write_rtp(write);
            self.stats.packets_forwarded += 1;
            mark_dirty(&mut self.dirty, peer, cid);
        }
    }

    /// Release what forwarding queued: str0m emits written packets on the next input.
    fn flush(&mut self, now: Instant) {
        while !self.dirty.is_empty() {
            let dirty = std::mem::take(&mut self.dirty);
            for id in dirty {
                let Some(peer) = self.peers.get_mut(&id) else { continue };
                peer.dirty = false;
                if peer.rtc.handle_input(Input::Timeout(now)).is_ok() {
                    self.drain(id, now);
                }
            }
        }
    }
}

/// An SDP error as clients may read it. The parser's own text names positions in our
/// memory (`PointerOffset(0x7f...)`): it goes to the debug log only.
fn bad_sdp(e: impl std::fmt::Display) -> MediaError {
    let text = e.to_string();
    if text.starts_with("SDP parse") || text.contains("0x") {
        tracing::debug!(error = %text, "unparsable SDP");
        return MediaError::BadSdp("not a valid session description".into());
    }
    MediaError::BadSdp(text)
}

fn mark_dirty(dirty: &mut Vec<PeerId>, peer: &mut Peer, id: PeerId) {
    if !peer.dirty {
        peer.dirty = true;
        dirty.push(id);
    }
}

fn msid_for(role: Role) -> String {
    match role {
        Role::Producer(key) | Role::Consumer(key) => format!("hopcast-{key}"),
    }
}

fn rtc_config(role: Role, codecs: Vec<PayloadParams>, cert: &DtlsCert) -> RtcConfig {
    let mut config = RtcConfig::new().set_rtp_mode(true).set_dtls_cert(cert.clone()).set_stats_interval(None);
    *config.codec_config() = CodecConfig::new_from_payload_params(codecs);
    if let Role::Consumer(_) = role {
        // Toward a consumer we run no bandwidth estimation and forward no header
        // extension values: transport-cc and abs-send-time would only cost per packet.
        // Producers keep the standard set, so browsers' own estimation gets its feedback.
        config = config.clear_extension_map().set_extension(4, Extension::RtpMid);
    }
    config
}

/// The local ufrag from a STUN request's USERNAME ("local:remote"), without a full parse.
fn stun_local_ufrag(data: &[u8]) -> Option<&str> {
    // STUN: 20-byte header, magic cookie at 4..8, then TLV attributes (4-byte aligned).
    if data.len() < 20 || data[0] >= 2 || data[4..8] != [0x21, 0x12, 0xa4, 0x42] {
        return None;
    }
    let mut at = 20;
    while at + 4 <= data.len() {
        let kind = u16::from_be_bytes([data[at], data[at + 1]]);
        let len = u16::from_be_bytes([data[at + 2], data[at + 3]]) as usize;
        let value = data.get(at + 4..at + 4 + len)?;
        if kind == 0x0006 {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next();
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_local_ufrag_from_stun_username() {
        let mut msg = vec![0x00, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
        msg.extend_from_slice(&[0; 12]);
        msg.extend_from_slice(&[0x00, 0x06, 0x00, 0x07]);
        msg.extend_from_slice(b"abc:xyz\0");
        assert_eq!(stun_local_ufrag(&msg), Some("abc"));
        assert_eq!(stun_local_ufrag(&msg[..22]), None);
        assert_eq!(stun_local_ufrag(b"\x80\x60garbage-rtp-packet......"), None);
    }

    #[test]
    fn packets_go_to_subscribed_threads_until_their_last_consumer_leaves() {
        let mut router = Router::new(vec!["127.0.0.1:5000".parse().unwrap()], Duration::from_secs(1));
        let now = Instant::now();
        router.add_source(7);
        let send = |router: &mut Router, seq: u64| {
            router.inject(7, &SourcePacket::synthetic(MediaKind::Audio, seq, vec![1u8; 20], now), now);
            router.poll_outbox().map(|(thread, key, p)| (thread, key, p.seq)).collect::<Vec<_>>()
        };
        assert_eq!(send(&mut router, 1), []);
        router.subscribe(7, 1);
        router.subscribe(7, 1);
        router.subscribe(7, 2);
        router.subscribe(8, 1); // an unknown stream: ignored
        assert_eq!(send(&mut router, 2), [(1, 7, 2), (2, 7, 2)]);
        router.unsubscribe(7, 1);
        router.unsubscribe(7, 2);
        assert_eq!(send(&mut router, 3), [(1, 7, 3)]);
        router.unsubscribe(7, 1);
        assert_eq!(send(&mut router, 4), []);
    }

    #[test]
    fn keyframe_requests_within_the_interval_are_merged_and_sent_late_not_dropped() {
        let mut router = Router::new(vec!["127.0.0.1:5000".parse().unwrap()], Duration::from_secs(1));
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        router.add_source(7);
        let requested = |router: &mut Router, at: Instant| {
            router.handle_timeout(at);
            std::iter::from_fn(|| router.poll_event())
                .filter(|e| *e == MediaEvent::KeyframeRequested { key: 7 })
                .count()
        };
        router.request_keyframe(7, KeyframeRequestKind::Pli, t0);
        assert_eq!(requested(&mut router, t0), 1);
        // Two more players join within the interval: one request, when the interval ends.
        router.request_keyframe(7, KeyframeRequestKind::Pli, ms(50));
        router.request_keyframe(7, KeyframeRequestKind::Fir, ms(80));
        assert_eq!(requested(&mut router, ms(100)), 0);
        assert_eq!(router.next_timeout(), Some(ms(200)));
        assert_eq!(requested(&mut router, ms(200)), 1);
        assert_eq!(requested(&mut router, ms(500)), 0, "a merged request is sent once");
        router.request_keyframe(7, KeyframeRequestKind::Pli, ms(600));
        assert_eq!(requested(&mut router, ms(600)), 1);
    }

    #[test]
    fn garbage_datagrams_are_counted_not_fatal() {
        let mut router = Router::new(vec!["127.0.0.1:40000".parse().unwrap()], Duration::from_secs(1));
        let now = Instant::now();
        for junk in [&b""[..], b"\xff\xff\xff", &[0u8; 1500][..], b"\x16\xfe\xfd hello"] {
            router.handle_datagram(now, "127.0.0.1:5000".parse().unwrap(), "127.0.0.1:40000".parse().unwrap(), junk);
        }
        assert_eq!(router.stats().datagrams_dropped, 4);
    }

    #[test]
    fn answer_rejects_unparsable_sdp_and_unknown_streams() {
        let mut router = Router::new(vec!["127.0.0.1:40000".parse().unwrap()], Duration::from_secs(1));
        let now = Instant::now();
        assert!(matches!(router.answer(1, Role::Producer(1), "not sdp", now), Err(MediaError::BadSdp(_))));
        router.add_source(7);
        let offer = router.offer(2, Role::Consumer(7), "127.0.0.1:40001".parse().unwrap(), now).unwrap();
        assert!(matches!(router.answer(3, Role::Consumer(99), &offer, now), Err(MediaError::StreamNotFound)));
        assert_eq!(router.stats().peers, 1);
    }

    // ---- two routers wired back to back, no sockets: the sans-IO payoff ----------

    const SERVER: &str = "127.0.0.1:40000";

    /// Deliver every queued datagram to the other router and advance time 1 ms per
    /// round, `rounds` times; returns the events each side reported.
    fn pump(a: &mut Router, b: &mut Router, now: &mut Instant, rounds: usize) -> (Vec<MediaEvent>, Vec<MediaEvent>) {
        let (mut ea, mut eb) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            exchange_datagrams(a, b, *now);
            ea.extend(std::iter::from_fn(|| a.poll_event()));
            eb.extend(std::iter::from_fn(|| b.poll_event()));
            *now += Duration::from_millis(1);
            a.handle_timeout(*now);
            b.handle_timeout(*now);
        }
        (ea, eb)
    }

    fn stamped(kind: MediaKind, seq: u64, now: Instant) -> SourcePacket {
        let mut payload = vec![if kind == MediaKind::Video { b'V' } else { b'A' }];
        payload.extend_from_slice(&seq.to_be_bytes());
        payload.resize(if kind == MediaKind::Video { 1000 } else { 100 }, seq as u8);
        SourcePacket::synthetic(kind, seq, payload, now)
    }

    /// A client router publishing source 1 and playing it back into stream 2 through a
    /// server router (ICE, DTLS and SRTP all real, only the network is a loop).
    fn publish_and_play() -> (Router, Router, Instant, mpsc::UnboundedReceiver<SourcePacket>) {
        publish_and_play_numbered(None, None)
    }

    /// Opus and VP8 (with RTX) renumbered, as another WebRTC stack would number them.
    fn numbered(opus: u8, vp8: u8, vp8_rtx: u8) -> Vec<PayloadParams> {
        source_codecs()
            .iter()
            .map(|p| match p.spec().codec {
                Codec::Opus => PayloadParams::new(opus.into(), None, p.spec()),
                _ => PayloadParams::new(vp8.into(), Some(vp8_rtx.into()), p.spec()),
            })
            .collect()
    }

    /// [`publish_and_play`] with the publisher's and the player's offers numbering their
    /// codecs as given (`None`: str0m's defaults, which are the server's too).
    fn publish_and_play_numbered(
        publisher: Option<Vec<PayloadParams>>,
        player: Option<Vec<PayloadParams>>,
    ) -> (Router, Router, Instant, mpsc::UnboundedReceiver<SourcePacket>) {
        let mut now = Instant::now();
        let mut client = Router::new(vec!["127.0.0.1:50000".parse().unwrap()], Duration::from_secs(5));
        let mut server = Router::new(vec![SERVER.parse().unwrap()], Duration::from_secs(5));
        client.add_source(1);
        let codecs = publisher.unwrap_or_else(|| client.consumer_codecs(1).unwrap());
        let offer =
            client.offer_codecs(10, Role::Consumer(1), "127.0.0.1:40001".parse().unwrap(), codecs, now).unwrap();
        let answer = server.answer(20, Role::Producer(100), &offer, now).unwrap();
        client.apply_answer(10, &answer, now).unwrap();
        let (_, server_events) = pump(&mut client, &mut server, &mut now, 50);
        assert!(server_events.contains(&MediaEvent::Connected { peer: 20 }), "publisher never connected");

        let tap = {
            let (tx, rx) = mpsc::unbounded_channel();
            client.tap(2, tx);
            rx
        };
        let codecs = player.unwrap_or_else(|| publish_codecs(None));
        let offer =
            client.offer_codecs(11, Role::Producer(2), "127.0.0.1:40002".parse().unwrap(), codecs, now).unwrap();
        let answer = server.answer(21, Role::Consumer(100), &offer, now).unwrap();
        client.apply_answer(11, &answer, now).unwrap();
        let (_, server_events) = pump(&mut client, &mut server, &mut now, 50);
        assert!(server_events.contains(&MediaEvent::Connected { peer: 21 }), "player never connected");
        (client, server, now, tap)
    }

    fn send_and_receive(
        client: &mut Router,
        server: &mut Router,
        now: &mut Instant,
        tap: &mut mpsc::UnboundedReceiver<SourcePacket>,
        seqs: std::ops::Range<u64>,
    ) -> usize {
        let mut intact = 0;
        for seq in seqs.clone() {
            client.inject(1, &stamped(MediaKind::Video, seq, *now), *now);
            client.inject(1, &stamped(MediaKind::Audio, seq, *now), *now);
            pump(client, server, now, 2);
        }
        pump(client, server, now, 20);
        while let Ok(p) = tap.try_recv() {
            let kind = p.kind;
            let seq = u64::from_be_bytes(p.payload[1..9].try_into().unwrap());
            assert_eq!(&p.payload[..], &stamped(kind, seq, *now).payload[..], "payload changed in transit");
            intact += 1;
        }
        intact
    }

    #[test]
    fn forwards_between_routers_without_sockets() {
        let (mut client, mut server, mut now, mut tap) = publish_and_play();
        let intact = send_and_receive(&mut client, &mut server, &mut now, &mut tap, 1..101);
        assert!(intact >= 195, "{intact} of 200 packets arrived intact");
        assert!(server.stats().packets_forwarded >= 195);
    }

    #[test]
    fn players_numbering_codecs_unlike_the_publisher_get_every_packet() {
        // Publisher as aiortc numbers (Opus 111, VP8 112/113), player as Firefox (109, 120/124):
        // a matcher keyed by payload type numbers finds no common codec here.
        let (mut client, mut server, mut now, mut tap) =
            publish_and_play_numbered(Some(numbered(111, 112, 113)), Some(numbered(109, 120, 124)));
        let intact = send_and_receive(&mut client, &mut server, &mut now, &mut tap, 1..101);
        assert!(intact >= 195, "{intact} of 200 packets arrived intact");
        // And the other way round, with numbers that collide with the server's defaults.
        let (mut client, mut server, mut now, mut tap) =
            publish_and_play_numbered(Some(numbered(96, 111, 97)), Some(numbered(100, 109, 101)));
        let intact = send_and_receive(&mut client, &mut server, &mut now, &mut tap, 1..101);
        assert!(intact >= 195, "{intact} of 200 packets arrived intact");
    }

    #[test]
    fn garbage_from_a_connected_peer_is_survived() {
        let (mut client, mut server, mut now, mut tap) = publish_and_play();
        // Datagrams that look like STUN, DTLS, RTP and RTCP from the publisher's own
        // address, random otherwise (a fixed-seed xorshift: the same every run).
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let source = "127.0.0.1:40001".parse().unwrap();
        for i in 0..20_000 {
            let len = (next() % 1500) as usize;
            let mut d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if let Some(first) = d.first_mut() {
                *first = [0x00, 0x01, 0x16, 0x17, 0x80, 0x90, 0x81][i % 7];
            }
            if d.len() > 8 && i % 3 == 0 {
                d[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
            }
            server.handle_datagram(now, source, SERVER.parse().unwrap(), &d);
        }
        pump(&mut client, &mut server, &mut now, 5);
        let intact = send_and_receive(&mut client, &mut server, &mut now, &mut tap, 1000..1100);
        assert!(intact >= 195, "after the garbage only {intact} of 200 packets arrived");
    }
}

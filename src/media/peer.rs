//! One WebRTC peer: a `str0m::Rtc` and its run loop. The router feeds it input and asks
//! it what happened ([`PeerEvent`]), the way str0m's `chat` example wraps `Rtc` in a
//! client; it never looks inside `Rtc` itself.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::config::DtlsCert;
use str0m::format::{CodecConfig, PayloadParams};
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid};
use str0m::rtp::{Extension, Ssrc};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};

use super::consumer::ConsumerTrack;
use super::router::{Datagram, MediaError, Offer, Role, SourcePacket};
use super::sdp::unify_msid;

/// Why a peer is gone for good: the media layer's own words (the signaling layer turns
/// them into the protocol's reason texts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// ICE never completed in time, or the remote stopped answering STUN.
    IceTimeout,
    /// DTLS (or ICE before it) failed while connecting.
    DtlsFailed,
    /// The WebRTC stack failed after the peer was up.
    Error,
}

/// What a peer did, for the router.
pub enum PeerEvent {
    Connected,
    Failed(Cause),
    /// The remote closed (RTCP BYE, DTLS close_notify).
    Closed,
    /// A media packet from a producer, in its payload type numbering.
    Packet(SourcePacket),
    /// A consumer's PLI or FIR.
    KeyframeRequest(KeyframeRequestKind),
    /// Since the last report: NACKs sent to a producer, or received from a consumer, and
    /// the retransmissions sent to a consumer.
    Repairs {
        nacks: u64,
        resent: u64,
    },
}

pub struct Peer {
    rtc: Rtc,
    pub role: Role,
    /// The audio and video sections, from the SDP (str0m announces them only later).
    pub mids: Vec<(Mid, MediaKind)>,
    /// A consumer's tracks, with its payload type map and sequence rebase.
    pub tracks: Vec<ConsumerTrack>,
    /// A producer's incoming SSRCs and their kind, learned from its first packets.
    in_kinds: Vec<(Ssrc, MediaKind)>,
    pending_offer: Option<SdpPendingOffer>,
    pub ufrag: String,
    /// The local address of a client-side peer (see `demux`).
    pub dedicated: Option<SocketAddr>,
    pub connected: bool,
    connect_deadline: Instant,
    /// When str0m next wants time.
    timeout: Instant,
    /// The entry this peer has in the router's timer set.
    pub timer: Option<Instant>,
    /// Written packets wait for a release (see `Peer::release`).
    pub unreleased: bool,
    /// NACK and retransmission totals str0m reported per section, to turn its running
    /// totals into increments.
    repairs: Vec<(Mid, u64, u64)>,
    /// A consumer's figures as str0m last reported them, per section (WCS's metrics of
    /// a player).
    egress: Vec<(Mid, PlayerFigures)>,
}

/// What a consumer was sent, from str0m's once-a-second report.
#[derive(Debug, Default, Clone, Copy)]
pub struct PlayerFigures {
    bytes: u64,
    at: Option<Instant>,
    bits_per_second: u64,
    nacks: u64,
    keyframe_requests: u64,
    lost: u64,
    rtt_ms: Option<u64>,
}

impl Peer {
    /// An ICE-lite server peer answering `offer` on the shared socket(s).
    pub fn answering(
        role: Role,
        offer: Offer,
        codecs: Vec<PayloadParams>,
        cert: &DtlsCert,
        shared: &[SocketAddr],
        now: Instant,
        connect_timeout: Duration,
    ) -> Result<(Peer, String), MediaError> {
        let mut rtc = rtc_config(role, codecs, cert).set_ice_lite(true).build(now);
        for addr in shared {
            if let Ok(c) = Candidate::host(*addr, "udp") {
                rtc.add_local_candidate(c);
            }
        }
        let Offer { sdp, mids, .. } = offer;
        let answer = rtc.sdp_api().accept_offer(sdp).map_err(super::negotiation::bad_sdp)?;
        let answer = unify_msid(&answer.to_sdp_string(), &msid_for(role));
        let mut peer = Peer::new(rtc, role, None, now, connect_timeout);
        peer.mids = mids;
        Ok((peer, answer))
    }

    /// A full-ICE client peer offering from its own local address.
    pub fn offering(
        role: Role,
        codecs: Vec<PayloadParams>,
        cert: &DtlsCert,
        local: SocketAddr,
        now: Instant,
        connect_timeout: Duration,
    ) -> Result<(Peer, String), MediaError> {
        let direction = if matches!(role, Role::Producer(_)) { Direction::RecvOnly } else { Direction::SendOnly };
        let kinds: Vec<MediaKind> = [MediaKind::Audio, MediaKind::Video]
            .into_iter()
            .filter(|k| codecs.iter().any(|p| p.spec().codec.kind() == *k))
            .collect();
        let mut rtc = rtc_config(role, codecs, cert).build(now);
        let candidate = Candidate::host(local, "udp").map_err(|e| MediaError::Webrtc(e.to_string()))?;
        rtc.add_local_candidate(candidate);
        let mut api = rtc.sdp_api();
        let mids: Vec<(Mid, MediaKind)> =
            kinds.into_iter().map(|k| (api.add_media(k, direction, Some(msid_for(role)), None, None), k)).collect();
        let (offer, pending) = api.apply().ok_or_else(|| MediaError::Webrtc("nothing to offer".into()))?;
        let mut peer = Peer::new(rtc, role, Some(local), now, connect_timeout);
        peer.mids = mids;
        peer.pending_offer = Some(pending);
        Ok((peer, offer.to_sdp_string()))
    }

    fn new(mut rtc: Rtc, role: Role, dedicated: Option<SocketAddr>, now: Instant, connect_timeout: Duration) -> Peer {
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        Peer {
            rtc,
            role,
            mids: Vec::new(),
            tracks: Vec::new(),
            in_kinds: Vec::new(),
            pending_offer: None,
            ufrag,
            dedicated,
            connected: false,
            connect_deadline: now + connect_timeout,
            timeout: now,
            timer: None,
            unreleased: false,
            repairs: Vec::new(),
            egress: Vec::new(),
        }
    }

    /// The remote's answer to [`Peer::offering`]'s offer.
    pub fn apply_answer(&mut self, answer: &str) -> Result<(), MediaError> {
        let pending = self.pending_offer.take().ok_or(MediaError::UnknownPeer)?;
        let answer = SdpAnswer::from_sdp_string(answer).map_err(super::negotiation::bad_sdp)?;
        self.rtc.sdp_api().accept_answer(pending, answer).map_err(super::negotiation::bad_sdp)
    }

    /// Per section: the codecs both sides agreed on, in this peer's numbering.
    pub fn negotiated(&self) -> Vec<(Mid, MediaKind, Vec<PayloadParams>)> {
        self.mids
            .iter()
            .filter_map(|(mid, kind)| {
                let media = self.rtc.media(*mid)?;
                let params = self.rtc.codec_config().params().iter().filter(|p| media.remote_pts().contains(&p.pt()));
                Some((*mid, *kind, params.copied().collect()))
            })
            .collect()
    }

    /// Feed a datagram; false when it is not this peer's.
    pub fn receive(&mut self, input: Input<'_>) -> bool {
        if !self.rtc.accepts(&input) {
            return false;
        }
        if let Err(e) = self.rtc.handle_input(input) {
            tracing::debug!(error = %e, "input rejected");
        }
        true
    }

    /// Time passes: fails a peer that did not connect in time.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), Cause> {
        if !self.connected && self.connect_deadline <= now {
            return Err(Cause::IceTimeout);
        }
        self.rtc.handle_input(Input::Timeout(now)).map_err(|_| Cause::Error)
    }

    /// str0m emits written packets on its next input: let them go. True when it worked.
    pub fn release(&mut self, now: Instant) -> bool {
        self.unreleased = false;
        self.rtc.release_written(now).is_ok()
    }

    /// When this peer next needs [`Peer::handle_timeout`].
    pub fn deadline(&self) -> Instant {
        if self.connected {
            self.timeout
        } else {
            self.timeout.min(self.connect_deadline)
        }
    }

    /// Tell the remote we are leaving (RTCP BYE, DTLS close_notify); true when sent.
    pub fn close(&mut self) -> bool {
        self.rtc.close().is_ok()
    }

    /// Ask a producer for a keyframe; false when it sends no video yet (its first frame
    /// is a keyframe anyway).
    pub fn request_keyframe(&mut self, kind: KeyframeRequestKind) -> bool {
        let Some(mid) = self.mids.iter().find(|(_, k)| *k == MediaKind::Video).map(|(m, _)| *m) else { return false };
        let mut api = self.rtc.direct_api();
        let Some(rx) = api.stream_rx_by_mid(mid, None) else { return false };
        rx.request_keyframe(kind);
        true
    }

    pub(super) fn rtc(&mut self) -> &mut Rtc {
        &mut self.rtc
    }

    /// Run str0m until it waits for time: datagrams go to `transmits`, what happened to
    /// `events`. A failure ends the polling with [`PeerEvent::Failed`].
    pub fn poll(&mut self, transmits: &mut VecDeque<Datagram>, events: &mut Vec<PeerEvent>) {
        // Forwarded packets first, without the large `Output` per packet.
        while let Some(t) = self.rtc.poll_written() {
            transmits.push_back(t.into());
        }
        // Nothing else happened: the timer, without a whole `Output`.
        if let Some(t) = self.rtc.poll_written_timeout() {
            self.timeout = t;
            return;
        }
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => transmits.push_back(t.into()),
                Ok(Output::Event(e)) => {
                    if let Some(event) = self.translate(e) {
                        events.push(event);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "peer failed");
                    events.push(PeerEvent::Failed(if self.connected { Cause::Error } else { Cause::DtlsFailed }));
                    return;
                }
            }
        }
    }

    fn translate(&mut self, event: Event) -> Option<PeerEvent> {
        match event {
            Event::Connected => {
                self.connected = true;
                Some(PeerEvent::Connected)
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                Some(PeerEvent::Failed(Cause::IceTimeout))
            }
            Event::RtpPacket(pkt) if matches!(self.role, Role::Producer(_)) && !pkt.payload.is_empty() => {
                let ssrc = pkt.header.ssrc;
                let kind = match self.in_kinds.iter().find(|(s, _)| *s == ssrc) {
                    Some((_, k)) => *k,
                    None => {
                        let mid = self.rtc.direct_api().stream_rx(&ssrc).map(|s| s.mid())?;
                        let kind = self.rtc.media(mid).map(|m| m.kind())?;
                        self.in_kinds.push((ssrc, kind));
                        kind
                    }
                };
                Some(PeerEvent::Packet(SourcePacket {
                    kind,
                    pt: pkt.header.payload_type,
                    seq: *pkt.seq_no,
                    timestamp: pkt.header.timestamp,
                    marker: pkt.header.marker,
                    payload: pkt.payload,
                    arrival: pkt.timestamp,
                    source: 0,
                }))
            }
            Event::KeyframeRequest(req) if matches!(self.role, Role::Consumer(_)) => {
                Some(PeerEvent::KeyframeRequest(req.kind))
            }
            Event::Closed => Some(PeerEvent::Closed),
            // Once a second (RtcConfig's stats interval): a producer's NACKs we sent, a
            // consumer's NACKs we received, as running totals per section.
            Event::MediaIngressStats(s) => self.repairs_since(s.mid, s.nacks, 0),
            Event::MediaEgressStats(s) => {
                self.record_egress(&s);
                self.repairs_since(s.mid, s.nacks, s.packets_resent)
            }
            _ => None,
        }
    }
}

impl Peer {
    fn record_egress(&mut self, s: &str0m::stats::MediaEgressStats) {
        let at = match self.egress.iter().position(|(m, _)| *m == s.mid) {
            Some(at) => at,
            None => {
                self.egress.push((s.mid, PlayerFigures::default()));
                self.egress.len() - 1
            }
        };
        let f = &mut self.egress[at].1;
        if let Some(last) = f.at.filter(|t| s.timestamp > *t) {
            let seconds = s.timestamp.duration_since(last).as_secs_f64();
            f.bits_per_second = (s.bytes.saturating_sub(f.bytes) as f64 * 8.0 / seconds) as u64;
        }
        f.bytes = s.bytes;
        f.at = Some(s.timestamp);
        f.nacks = s.nacks;
        f.keyframe_requests = s.plis + s.firs;
        f.lost = s.remote.as_ref().map_or(0, |r| r.packets_lost);
        f.rtt_ms = s.rtt.map(|r| r.as_millis() as u64);
    }

    /// WCS's metrics of a player: what it was sent and what it reported back.
    pub fn player_figures(&self) -> std::collections::BTreeMap<&'static str, u64> {
        let mut m = std::collections::BTreeMap::new();
        for (mid, f) in &self.egress {
            let Some(kind) = self.mids.iter().find(|(m, _)| m == mid).map(|(_, k)| *k) else { continue };
            let video = kind == MediaKind::Video;
            m.insert(if video { "VIDEO_RATE" } else { "AUDIO_RATE" }, f.bits_per_second);
            m.insert(if video { "VIDEO_LOST" } else { "AUDIO_LOST" }, f.lost);
            if video {
                m.insert("VIDEO_NACK", f.nacks);
                m.insert("VIDEO_PLI", f.keyframe_requests);
            }
            if let Some(rtt) = f.rtt_ms {
                m.insert("RTT_MS", rtt);
            }
        }
        m
    }

    fn repairs_since(&mut self, mid: Mid, nacks: u64, resent: u64) -> Option<PeerEvent> {
        let at = match self.repairs.iter().position(|(m, _, _)| *m == mid) {
            Some(at) => at,
            None => {
                self.repairs.push((mid, 0, 0));
                self.repairs.len() - 1
            }
        };
        let (_, last_nacks, last_resent) = &mut self.repairs[at];
        let nacks = nacks.saturating_sub(std::mem::replace(last_nacks, nacks));
        let resent = resent.saturating_sub(std::mem::replace(last_resent, resent));
        (nacks + resent > 0).then_some(PeerEvent::Repairs { nacks, resent })
    }
}

fn msid_for(role: Role) -> String {
    match role {
        Role::Producer(key) | Role::Consumer(key) => format!("hopcast-{key}"),
    }
}

/// How often str0m reports a peer's RTP statistics (NACK counts for `/metrics` and the
/// per-stream figures): a pass over its streams once a second, not per packet.
const STATS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

fn rtc_config(role: Role, codecs: Vec<PayloadParams>, cert: &DtlsCert) -> RtcConfig {
    let mut config =
        RtcConfig::new().set_rtp_mode(true).set_dtls_cert(cert.clone()).set_stats_interval(Some(STATS_INTERVAL));
    *config.codec_config() = CodecConfig::new_from_payload_params(codecs);
    if let Role::Consumer(_) = role {
        // Toward a consumer we run no bandwidth estimation and forward no header
        // extension values: transport-cc and abs-send-time would only cost per packet.
        // Producers keep the standard set, so browsers' own estimation gets its feedback.
        config = config.clear_extension_map().set_extension(4, Extension::RtpMid);
    }
    config
}

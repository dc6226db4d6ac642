//! Negotiation: answering offers (server side, ICE-lite) and making them (client side),
//! then learning a producer's codecs or mapping a consumer's payload types. SDP errors
//! are reported in words a client may read.

use std::net::SocketAddr;
use std::time::Instant;

use str0m::change::SdpOffer;
use str0m::format::PayloadParams;
use str0m::media::{MediaKind, Mid};

use super::codecs::publish_codecs;
use super::peer::Peer;
use super::router::{PeerId, Role, Router};
use super::sdp::{media_mids, preferred_video_codec, VideoCodec};

/// Why a media request failed, in the media layer's words; the signaling layer turns
/// these into the protocol's reason texts.
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
            Self::NoCommonCodecs => f.write_str("no codec of the stream is acceptable to the peer"),
            Self::StreamNotFound => f.write_str("no such stream"),
            Self::UnknownPeer => f.write_str("unknown media peer"),
            Self::Webrtc(e) => write!(f, "WebRTC error: {e}"),
        }
    }
}

/// An SDP error as clients may read it. The parser's own text names positions in our
/// memory (`PointerOffset(0x7f...)`): it goes to the debug log only.
pub(super) fn bad_sdp(e: impl std::fmt::Display) -> MediaError {
    let text = e.to_string();
    if text.starts_with("SDP parse") || text.contains("0x") {
        tracing::debug!(error = %text, "unparsable SDP");
        return unreadable_sdp();
    }
    MediaError::BadSdp(text)
}

/// The refusal for SDP we cannot make sense of, without the parser's internals.
fn unreadable_sdp() -> MediaError {
    MediaError::BadSdp("not a valid session description".into())
}

/// Runs str0m on a remote description. str0m asserts on some inconsistent descriptions
/// (a payload type claimed twice, found by fuzzing) instead of returning an error: such a
/// panic must cost this negotiation only, not the media thread and every peer on it.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, MediaError>) -> Result<T, MediaError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        tracing::error!(what, "panic in the WebRTC stack on a remote description; refused");
        Err(unreadable_sdp())
    })
}

/// A remote offer, parsed: the costly part of answering, done where it cannot hold up
/// forwarding (see `MediaHandle::answer`).
pub struct Offer {
    pub(super) sdp: SdpOffer,
    pub(super) mids: Vec<(Mid, MediaKind)>,
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

impl Router {
    /// Answer a browser's offer as an ICE-lite server peer on the shared socket(s).
    pub fn answer(&mut self, id: PeerId, role: Role, offer: &str, now: Instant) -> Result<String, MediaError> {
        self.answer_parsed(id, role, Offer::parse(offer)?, now)
    }

    /// [`Router::answer`] for an offer parsed beforehand (off the media thread).
    pub fn answer_parsed(&mut self, id: PeerId, role: Role, offer: Offer, now: Instant) -> Result<String, MediaError> {
        let codecs = match role {
            Role::Producer(_) => publish_codecs(offer.preferred),
            Role::Consumer(key) => self.consumer_codecs(key)?,
        };
        let (peer, answer) = guarded("offer", || {
            Peer::answering(role, offer, codecs, &self.dtls_cert, &self.shared_addrs, now, self.connect_timeout)
        })?;
        self.insert_peer(id, peer);
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
    pub(super) fn offer_codecs(
        &mut self,
        id: PeerId,
        role: Role,
        local: SocketAddr,
        codecs: Vec<PayloadParams>,
        now: Instant,
    ) -> Result<String, MediaError> {
        let (peer, offer) = Peer::offering(role, codecs, &self.dtls_cert, local, now, self.connect_timeout)?;
        self.insert_peer(id, peer);
        self.drain(id, now);
        Ok(offer)
    }

    /// Apply the remote answer to an offer made by [`Router::offer`].
    pub fn apply_answer(&mut self, id: PeerId, answer: &str, now: Instant) -> Result<(), MediaError> {
        let peer = self.peers.get_mut(&id).ok_or(MediaError::UnknownPeer)?;
        if let Err(e) = guarded("answer", || peer.apply_answer(answer)) {
            self.remove_peer(id, false, now);
            return Err(e);
        }
        // str0m starts ICE checks on a time input: without one now, a peer whose remote
        // answered `setup:active` (making us the DTLS server, as webrtc-rs servers do)
        // waited for checks that never came, and failed with an ICE timeout.
        if let Err(cause) = peer.handle_timeout(now) {
            self.remove_peer(id, false, now);
            return Err(MediaError::Webrtc(format!("{cause:?}")));
        }
        self.finish_negotiation(id, now)
    }
}

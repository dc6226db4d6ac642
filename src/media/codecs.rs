//! Codecs matched by what they are, never by payload type number.
//!
//! Every WebRTC stack numbers its codecs its own way (Chrome: Opus 111, VP8 96; Firefox:
//! Opus 109, VP8 120; aiortc, Safari, OBS and hardware encoders differ again). A stream
//! keeps its producer's numbering; each consumer gets the stream's codecs in a form str0m
//! may renumber to the consumer's offer, and a per-consumer map from producer to consumer
//! payload type built by codec identity (name, clock rate, channels and the fmtp that
//! matters: H.264 profile and packetization mode), which is str0m's `match_params`.

use str0m::format::{Codec, CodecConfig, PayloadParams};
use str0m::media::{MediaKind, Pt};

use super::sdp::VideoCodec;

/// Opus plus the video codec a publisher prefers (both VP8 and H264 when unknown).
pub fn publish_codecs(video: Option<VideoCodec>) -> Vec<PayloadParams> {
    let all = CodecConfig::new_with_defaults();
    let wanted = |c: Codec| {
        matches!(
            (c, video),
            (Codec::Opus, _)
                | (Codec::Vp8, None | Some(VideoCodec::Vp8))
                | (Codec::H264, None | Some(VideoCodec::H264))
        )
    };
    all.params().iter().filter(|p| wanted(p.spec().codec)).copied().collect()
}

/// The stream's codecs as a consumer's peer starts from: the same codecs and feedback,
/// but not yet bound to a number. Params copied out of the producer's negotiated
/// config carry str0m's negotiation lock, and a locked param keeps its number whatever
/// the consumer offers: a player numbering Opus 109 would then find no Opus at all.
pub fn renumberable(stream_codecs: &[PayloadParams]) -> Vec<PayloadParams> {
    stream_codecs
        .iter()
        .map(|p| {
            let mut fresh = PayloadParams::new(p.pt(), p.resend(), p.spec());
            fresh.set_fb_nack(p.fb_nack());
            fresh.set_fb_pli(p.fb_pli());
            fresh.set_fb_fir(p.fb_fir());
            fresh.set_fb_remb(p.fb_remb());
            fresh.set_fb_transport_cc(p.fb_transport_cc());
            fresh
        })
        .collect()
}

/// (producer PT, consumer PT) for each of the stream's `kind` codecs the consumer
/// accepted, matched by codec identity.
pub fn pt_map(stream_codecs: &[PayloadParams], kind: MediaKind, accepted: &[PayloadParams]) -> Vec<(Pt, Pt)> {
    let accepted = CodecConfig::new_from_payload_params(accepted.to_vec());
    stream_codecs
        .iter()
        .filter(|s| s.spec().codec.kind() == kind)
        .filter_map(|s| accepted.match_params(*s).map(|p| (s.pt(), p.pt())))
        .collect()
}

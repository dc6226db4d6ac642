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

/// The RTP clock rate of the stream's codecs of `kind` (90 kHz for video, 48 kHz for
/// Opus; the first codec's when there are several, which share a rate in practice).
pub fn clock_rate(stream_codecs: &[PayloadParams], kind: MediaKind) -> u32 {
    let first = stream_codecs.iter().find(|s| s.spec().codec.kind() == kind);
    first.map_or(if kind == MediaKind::Video { 90_000 } else { 48_000 }, |s| s.spec().clock_rate.get())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    use super::super::router::{MediaError, Role, Router};
    use super::*;

    /// Offers recorded from real stacks (tests/data/sdp/README.md says how): publishers
    /// (audio and video sent) and players (both received).
    fn sample(name: &str) -> String {
        let path = format!("{}/tests/data/sdp/{name}.sdp", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    const STACKS: [&str; 4] = ["chrome", "firefox", "safari", "aiortc"];

    /// What each payload type of an SDP is: "VP8", "OPUS", "H264/42e01f" (profile-level-id
    /// without the level, as profiles are what must match).
    fn codec_names(sdp: &str) -> HashMap<u8, String> {
        let mut names = HashMap::new();
        for line in sdp.lines() {
            if let Some((pt, rest)) = line.strip_prefix("a=rtpmap:").and_then(|l| l.split_once(' ')) {
                names.insert(pt.parse().unwrap(), rest.split('/').next().unwrap().to_ascii_uppercase());
            }
        }
        for line in sdp.lines() {
            if let Some((pt, fmtp)) = line.strip_prefix("a=fmtp:").and_then(|l| l.split_once(' ')) {
                let pt: u8 = pt.parse().unwrap();
                if let Some(id) = fmtp.split(';').find_map(|kv| kv.strip_prefix("profile-level-id=")) {
                    names.insert(pt, format!("H264/{}", &id[..4]));
                }
            }
        }
        names
    }

    /// The offer with every dynamic payload type number moved (m= lines, rtpmap, fmtp
    /// including apt= and RED's list, rtcp-fb): the same codecs, numbered otherwise.
    fn renumbered(sdp: &str, map: impl Fn(u8) -> u8) -> String {
        let dynamic = |pt: &str| pt.parse::<u8>().ok().filter(|p| *p >= 35).map(&map);
        let num = |pt: &str| dynamic(pt).map_or(pt.to_string(), |p| p.to_string());
        sdp.split("\r\n")
            .map(|line| {
                if let Some(m) = line.strip_prefix("m=") {
                    let mut parts: Vec<String> = m.split(' ').map(str::to_string).collect();
                    for p in parts.iter_mut().skip(3) {
                        *p = num(p);
                    }
                    return format!("m={}", parts.join(" "));
                }
                for attr in ["a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"] {
                    if let Some((pt, rest)) = line.strip_prefix(attr).and_then(|l| l.split_once(' ')) {
                        let rest = match rest.strip_prefix("apt=") {
                            Some(apt) => format!("apt={}", num(apt)),
                            None if rest.chars().next().is_some_and(|c| c.is_ascii_digit()) => {
                                rest.split('/').map(num).collect::<Vec<_>>().join("/")
                            }
                            None => rest.to_string(),
                        };
                        return format!("{attr}{} {rest}", num(pt));
                    }
                }
                line.to_string()
            })
            .collect::<Vec<_>>()
            .join("\r\n")
    }

    /// Answer `publisher` then `player` on one router; the player's per-kind PT maps.
    fn negotiate(publisher: &str, player: &str) -> Result<[Vec<(Pt, Pt)>; 2], MediaError> {
        let now = Instant::now();
        let mut router = Router::new(vec!["127.0.0.1:40000".parse().unwrap()], Duration::from_secs(5));
        router.answer(1, Role::Producer(7), publisher, now).expect("publisher answered");
        router.answer(2, Role::Consumer(7), player, now)?;
        Ok([MediaKind::Audio, MediaKind::Video].map(|k| router.consumer_pt_map(2, k).unwrap()))
    }

    /// Every mapped pair names the same codec on both sides; audio and the publisher's
    /// video codec are mapped.
    fn assert_maps_by_identity(what: &str, publisher: &str, player: &str, maps: &[Vec<(Pt, Pt)>; 2]) {
        let (from, to) = (codec_names(publisher), codec_names(player));
        for (kind, map) in ["audio", "video"].iter().zip(maps) {
            assert!(!map.is_empty(), "{what}: no {kind} codec mapped");
            for (src, dst) in map {
                let (a, b) = (&from[&**src], &to[&**dst]);
                assert_eq!(a, b, "{what}: {kind} PT {src} ({a}) mapped to {dst} ({b})");
            }
        }
    }

    #[test]
    fn every_recorded_publisher_plays_to_every_recorded_player() {
        for pub_stack in STACKS {
            let publisher = sample(&format!("{pub_stack}-publish"));
            let stream_video = preferred(&publisher);
            for play_stack in STACKS {
                let player = sample(&format!("{play_stack}-play"));
                let what = format!("{pub_stack} -> {play_stack}");
                let player_has = codec_names(&player).values().any(|n| n.starts_with(stream_video));
                match negotiate(&publisher, &player) {
                    Ok(maps) => {
                        assert!(player_has, "{what}: played {stream_video} the player did not offer");
                        assert_maps_by_identity(&what, &publisher, &player, &maps);
                    }
                    Err(e) => {
                        // Firefox without its OpenH264 plugin has no H.264: Safari's stream is H.264.
                        assert!(!player_has, "{what}: {e}");
                        assert_eq!(e, MediaError::NoCommonCodecs, "{what}");
                    }
                }
            }
        }
    }

    /// The codec name the publisher prefers (the server keeps only that one).
    fn preferred(offer: &str) -> &'static str {
        match super::super::sdp::preferred_video_codec(offer) {
            Some(VideoCodec::H264) => "H264",
            _ => "VP8",
        }
    }

    #[test]
    fn shuffled_payload_type_numbers_still_play() {
        let publisher = sample("chrome-publish");
        // Reverse the dynamic range of Chrome's own player offer, then rotate it: no codec
        // keeps its number, and Opus lands on numbers Chrome uses for video.
        for (what, map) in
            [("reversed", (|pt: u8| 35 + 127 - pt) as fn(u8) -> u8), ("rotated", |pt| 35 + (pt - 35 + 50) % 93)]
        {
            let player = renumbered(&sample("chrome-play"), map);
            let maps = negotiate(&publisher, &player).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_maps_by_identity(what, &publisher, &player, &maps);
            assert!(maps[1].iter().all(|(src, dst)| src != dst), "{what}: a number survived: {maps:?}");
        }
    }

    #[test]
    fn opus_without_fmtp_and_h264_by_profile() {
        // Opus with no fmtp line at all (aiortc, GStreamer) against Chrome's minptime/FEC.
        let player = sample("chrome-play").replace("a=fmtp:111 minptime=10;useinbandfec=1\r\n", "");
        let maps = negotiate(&sample("chrome-publish"), &player).unwrap();
        assert_eq!(maps[0], vec![(111.into(), 111.into())]);
        // An H.264 stream from Safari: the server keeps Constrained Baseline (42e0; it has
        // no Constrained High to offer, so Safari sends 42e0). A player offering that
        // profile alone, at its own level or another (levels are negotiable), gets its own
        // number; one offering another profile only is refused clearly.
        let publisher = sample("safari-publish");
        let names = codec_names(&publisher);
        let only_101 = sample("aiortc-play")
            .replace("m=video 9 UDP/TLS/RTP/SAVPF 97 98 99 100 101 102", "m=video 9 UDP/TLS/RTP/SAVPF 101 102");
        for level in ["1f", "34"] {
            let player = only_101.replace("profile-level-id=42e01f", &format!("profile-level-id=42e0{level}"));
            let maps = negotiate(&publisher, &player).unwrap_or_else(|e| panic!("42e0{level}: {e}"));
            assert!(!maps[1].is_empty(), "42e0{level}: nothing mapped");
            assert!(maps[1].iter().all(|(src, dst)| **dst == 101 && names[&**src] == "H264/42e0"), "{maps:?}");
        }
        for other in ["42001f", "4d001f", "640c1f", "64001f"] {
            let player = only_101.replace("profile-level-id=42e01f", &format!("profile-level-id={other}"));
            assert_eq!(negotiate(&publisher, &player).err(), Some(MediaError::NoCommonCodecs), "{other}");
        }
    }
}

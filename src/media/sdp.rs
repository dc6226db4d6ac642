//! Small text-level SDP helpers for what str0m leaves to the application: picking the
//! publisher's preferred video codec, and giving an answer's tracks one media stream
//! id and cname so browsers put audio and video in one `MediaStream` and lip-sync them.

/// Video codecs hopcast forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    Vp8,
    H264,
}

/// The first VP8 or H264 payload type in the offer's `m=video` format order: the codec
/// the offerer prefers. Answering with only that codec makes every publisher send one
/// codec, so a player needs just that one.
pub fn preferred_video_codec(offer: &str) -> Option<VideoCodec> {
    let mut in_video = false;
    let mut order: Vec<&str> = Vec::new();
    let mut names: Vec<(&str, &str)> = Vec::new();
    for line in offer.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            if in_video {
                break;
            }
            in_video = m.starts_with("video ");
            if in_video {
                order = m.split_whitespace().skip(3).collect();
            }
        } else if in_video {
            if let Some(rtpmap) = line.strip_prefix("a=rtpmap:") {
                if let Some((pt, codec)) = rtpmap.split_once(' ') {
                    names.push((pt, codec.split('/').next().unwrap_or("")));
                }
            }
        }
    }
    order.iter().find_map(|pt| {
        let name = names.iter().find(|(p, _)| p == pt)?.1;
        match name.to_ascii_uppercase().as_str() {
            "VP8" => Some(VideoCodec::Vp8),
            "H264" => Some(VideoCodec::H264),
            _ => None,
        }
    })
}

/// The `(mid, is_video)` of each audio and video section, in order. str0m announces
/// media (`MediaAdded`) only once DTLS is up, but routing needs the mids at answer time.
pub fn media_mids(sdp: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut kind = None;
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            kind = match m.split_whitespace().next() {
                Some("audio") => Some(false),
                Some("video") => Some(true),
                _ => None,
            };
        } else if let (Some(mid), Some(video)) = (line.strip_prefix("a=mid:"), kind) {
            out.push((mid.to_string(), video));
        }
    }
    out
}

/// Rewrite `a=msid:` and `a=ssrc:N msid:`/`cname:` lines to one stream id and cname.
pub fn unify_msid(sdp: &str, stream_id: &str) -> String {
    let mut out = String::with_capacity(sdp.len() + 64);
    for line in sdp.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let ending = &line[body.len()..];
        if let Some(rest) = body.strip_prefix("a=msid:") {
            let track = rest.split_whitespace().nth(1).unwrap_or("-");
            out.push_str(&format!("a=msid:{stream_id} {track}{ending}"));
        } else if let Some((ssrc, attr)) = body.strip_prefix("a=ssrc:").and_then(|r| r.split_once(' ')) {
            if let Some(value) = attr.strip_prefix("msid:") {
                let track = value.split_whitespace().nth(1).unwrap_or("-");
                out.push_str(&format!("a=ssrc:{ssrc} msid:{stream_id} {track}{ending}"));
            } else if attr.starts_with("cname:") {
                out.push_str(&format!("a=ssrc:{ssrc} cname:{stream_id}{ending}"));
            } else {
                out.push_str(line);
            }
        } else {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 98 96 102\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:98 VP9/90000\r\n\
        a=rtpmap:102 H264/90000\r\n";

    #[test]
    fn picks_first_supported_codec_in_offer_order() {
        assert_eq!(preferred_video_codec(OFFER), Some(VideoCodec::Vp8));
        let h264_first = OFFER.replace("98 96 102", "102 96");
        assert_eq!(preferred_video_codec(&h264_first), Some(VideoCodec::H264));
        assert_eq!(preferred_video_codec("v=0\r\nm=audio 9 X 111\r\n"), None);
    }

    #[test]
    fn lists_mids_of_audio_and_video_sections() {
        let sdp = "v=0\r\nm=audio 9 X 111\r\na=mid:0\r\nm=video 9 X 96\r\na=mid:1\r\nm=application 9 X\r\na=mid:2\r\n";
        assert_eq!(media_mids(sdp), vec![("0".to_string(), false), ("1".to_string(), true)]);
    }

    #[test]
    fn unifies_stream_ids_and_cnames() {
        let answer =
            "a=msid:aaa t1\r\na=ssrc:1 cname:x\r\na=ssrc:1 msid:aaa t1\r\na=msid:bbb t2\r\na=ssrc:2 cname:y\r\n";
        let out = unify_msid(answer, "S");
        assert_eq!(out, "a=msid:S t1\r\na=ssrc:1 cname:S\r\na=ssrc:1 msid:S t1\r\na=msid:S t2\r\na=ssrc:2 cname:S\r\n");
    }
}

//! What the router sees of one stream's media, for WCS's per-stream metrics
//! (`/rest-api/stream/find` with `display: ["metrics"]`): rates and frame rate over the
//! last whole second, keyframes, the picture size when the codec tells it (VP8), lost
//! packets (sequence gaps the publisher's retransmissions did not fill), keyframe
//! requests sent to the publisher. A few additions per packet; the bytes of a video
//! payload are looked at only for its first bytes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use str0m::format::Codec;
use str0m::media::MediaKind;

use super::SourcePacket;

const WINDOW: Duration = Duration::from_secs(1);

/// One kind's counters.
#[derive(Debug, Default, Clone)]
struct Track {
    packets: u64,
    bytes: u64,
    first_seq: Option<u64>,
    max_seq: u64,
    pt: Option<u8>,
    /// The current window: when it began, and its bytes and frames so far.
    window_start: Option<Instant>,
    window_bytes: u64,
    window_frames: u64,
    /// The last whole window's rates.
    bits_per_second: u64,
    frames_per_second: u64,
    last_packet: Option<Instant>,
}

impl Track {
    fn record(&mut self, packet: &SourcePacket, now: Instant) {
        self.packets += 1;
        self.bytes += packet.payload.len() as u64;
        self.first_seq = Some(self.first_seq.map_or(packet.seq, |s| s.min(packet.seq)));
        self.max_seq = self.max_seq.max(packet.seq);
        self.pt = Some(*packet.pt);
        self.last_packet = Some(now);
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.duration_since(start);
        if elapsed >= WINDOW {
            let seconds = elapsed.as_secs_f64();
            self.bits_per_second = (self.window_bytes as f64 * 8.0 / seconds) as u64;
            self.frames_per_second = (self.window_frames as f64 / seconds).round() as u64;
            self.window_start = Some(now);
            self.window_bytes = 0;
            self.window_frames = 0;
        }
        self.window_bytes += packet.payload.len() as u64;
        if packet.marker {
            self.window_frames += 1;
        }
    }

    /// Packets never received: the sequence span minus what arrived.
    fn lost(&self) -> u64 {
        self.first_seq.map_or(0, |first| (self.max_seq - first + 1).saturating_sub(self.packets))
    }

    /// A rate that is not refreshed by packets is stale: silence reads as zero.
    fn current(&self, value: u64, now: Instant) -> u64 {
        match self.last_packet {
            Some(t) if now.duration_since(t) <= 2 * WINDOW => value,
            _ => 0,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct StreamFigures {
    video: Track,
    audio: Track,
    keyframes: u64,
    size: Option<(u16, u16)>,
    /// Keyframe requests sent to the stream's publisher.
    pub keyframe_requests: u64,
    /// NACKs sent to the stream's publisher.
    pub nacks: u64,
}

impl StreamFigures {
    /// A packet from the stream's producer; `codec`: its video codec, when known.
    pub fn record(&mut self, packet: &SourcePacket, codec: Option<Codec>, now: Instant) {
        match packet.kind {
            MediaKind::Audio => self.audio.record(packet, now),
            MediaKind::Video => {
                self.video.record(packet, now);
                if codec == Some(Codec::Vp8) {
                    if let Some(size) = vp8_keyframe(&packet.payload) {
                        self.keyframes += 1;
                        if size != (0, 0) {
                            self.size = Some(size);
                        }
                    }
                } else if codec == Some(Codec::H264) && h264_starts_keyframe(&packet.payload) {
                    self.keyframes += 1;
                }
            }
        }
    }

    /// WCS's metric names (`VIDEO_RATE` in bits/s, ...); what is not known is left out.
    pub fn metrics(&self, now: Instant) -> BTreeMap<&'static str, u64> {
        let (v, a) = (&self.video, &self.audio);
        let mut m = BTreeMap::new();
        m.insert("VIDEO_RATE", v.current(v.bits_per_second, now));
        m.insert("AUDIO_RATE", a.current(a.bits_per_second, now));
        m.insert("VIDEO_FPS", v.current(v.frames_per_second, now));
        m.insert("VIDEO_K_FRAMES", self.keyframes);
        m.insert("VIDEO_PLI", self.keyframe_requests);
        m.insert("VIDEO_NACK", self.nacks);
        m.insert("VIDEO_LOST", v.lost());
        m.insert("AUDIO_LOST", a.lost());
        m.insert("VIDEO_PACKETS", v.packets);
        m.insert("AUDIO_PACKETS", a.packets);
        if let Some(pt) = v.pt {
            m.insert("VIDEO_CODEC", u64::from(pt));
        }
        if let Some(pt) = a.pt {
            m.insert("AUDIO_CODEC", u64::from(pt));
        }
        if let Some((w, h)) = self.size {
            m.insert("VIDEO_WIDTH", u64::from(w));
            m.insert("VIDEO_HEIGHT", u64::from(h));
        }
        m
    }
}

/// The picture size if `payload` (RTP payload, RFC 7741) starts a VP8 keyframe; (0, 0)
/// when it is a keyframe too short to say.
fn vp8_keyframe(payload: &[u8]) -> Option<(u16, u16)> {
    let first = *payload.first()?;
    // S: start of a partition; PID 0: the first one.
    if first & 0x10 == 0 || first & 0x07 != 0 {
        return None;
    }
    let mut at = 1;
    if first & 0x80 != 0 {
        let ext = *payload.get(1)?;
        at = 2;
        if ext & 0x80 != 0 {
            // PictureID: one byte, or two when its M bit is set.
            at += if payload.get(at)? & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if ext & 0x30 != 0 {
            at += 1; // TID/KEYIDX
        }
    }
    let frame = payload.get(at..)?;
    // The frame tag's P bit: 0 for a keyframe.
    if frame.first()? & 0x01 != 0 {
        return None;
    }
    match frame.get(3..10) {
        Some([0x9d, 0x01, 0x2a, w0, w1, h0, h1]) => {
            Some((u16::from_le_bytes([*w0, *w1]) & 0x3fff, u16::from_le_bytes([*h0, *h1]) & 0x3fff))
        }
        _ => Some((0, 0)),
    }
}

/// Does `payload` (RTP payload, RFC 6184) begin an H.264 IDR picture? (A single IDR NAL
/// unit, the first fragment of one, or an aggregate holding one.)
fn h264_starts_keyframe(payload: &[u8]) -> bool {
    const IDR: u8 = 5;
    let Some(&first) = payload.first() else { return false };
    match first & 0x1f {
        IDR => true,
        // FU-A: start bit and the fragment's type.
        28 => payload.get(1).is_some_and(|h| h & 0x80 != 0 && h & 0x1f == IDR),
        // STAP-A: (size, NAL unit) pairs.
        24 => {
            let mut at = 1;
            while let Some(size) = payload.get(at..at + 2) {
                let size = usize::from(u16::from_be_bytes([size[0], size[1]]));
                if payload.get(at + 2).is_some_and(|nal| nal & 0x1f == IDR) {
                    return true;
                }
                at += 2 + size;
            }
            false
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframes_and_their_size_are_read_from_the_descriptor() {
        // Descriptor with X, I (15-bit PictureID), then a keyframe tag and 640x480.
        let key = [0x90, 0x80, 0x81, 0x23, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01];
        assert_eq!(vp8_keyframe(&key), Some((640, 480)));
        let delta = [0x10, 0x01, 0x00, 0x00];
        assert_eq!(vp8_keyframe(&delta), None);
        // Not the start of the frame.
        assert_eq!(vp8_keyframe(&[0x00, 0x00]), None);
        assert_eq!(vp8_keyframe(&[]), None);
    }

    #[test]
    fn h264_idr_is_found_alone_fragmented_and_aggregated() {
        assert!(h264_starts_keyframe(&[0x65, 0x88]));
        assert!(h264_starts_keyframe(&[0x7c, 0x85]));
        assert!(!h264_starts_keyframe(&[0x7c, 0x05]), "a later fragment");
        assert!(h264_starts_keyframe(&[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x01, 0x65]));
        assert!(!h264_starts_keyframe(&[0x41, 0x9a]));
        assert!(!h264_starts_keyframe(&[0x78, 0xff]));
    }
}

//! Synthetic media for the load generator, tests and demos: a source that emits 30 fps video
//! at a set bitrate (frames split into packets of at most 1,200 bytes, a keyframe
//! every 2 s or on request) and 50 packets/s of audio. Every payload starts with a
//! stamp (kind, sequence, send time) so receivers measure loss and one-way delay exactly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::media::MediaKind;

use super::stamp::{stamp, STAMP};
use crate::media::{MediaHandle, SourcePacket, StreamKey};

pub const MAX_PAYLOAD: usize = 1200;
const FPS: u32 = 30;
const AUDIO_BYTES: usize = 120;
/// A paced synthetic stream injected into a local stream key.
pub struct SyntheticSource {
    pub key: StreamKey,
    media: MediaHandle,
    epoch: Instant,
    frame_bytes: usize,
    video_seq: u64,
    audio_seq: u64,
    frames: u64,
    next_video: Instant,
    next_audio: Instant,
    keyframe_due: bool,
}

impl SyntheticSource {
    /// Register a synthetic source in `media` with `bitrate` bits/s of video.
    pub fn new(media: MediaHandle, bitrate: u64, epoch: Instant) -> Self {
        let key = media.next_id();
        media.add_source(key);
        let now = Instant::now();
        SyntheticSource {
            key,
            media,
            epoch,
            frame_bytes: (bitrate / 8 / FPS as u64).max(STAMP as u64) as usize,
            video_seq: 1,
            audio_seq: 1,
            frames: 0,
            next_video: now,
            next_audio: now,
            keyframe_due: true,
        }
    }

    /// The next keyframe comes at once (a consumer asked for it).
    pub fn request_keyframe(&mut self) {
        self.keyframe_due = true;
    }

    /// Emit what is due at `now`; returns when to call again.
    pub fn tick(&mut self, now: Instant) -> Instant {
        while self.next_video <= now {
            let keyframe = self.keyframe_due || self.frames.is_multiple_of(2 * FPS as u64);
            self.keyframe_due = false;
            // Keyframes are three times the size of delta frames, as real encoders make them.
            let bytes = if keyframe { self.frame_bytes * 3 } else { self.frame_bytes };
            let packets = bytes.div_ceil(MAX_PAYLOAD).max(1);
            let timestamp = (self.frames as u32).wrapping_mul(90_000 / FPS);
            for i in 0..packets {
                let len = if i + 1 == packets { bytes - MAX_PAYLOAD * (packets - 1) } else { MAX_PAYLOAD };
                self.send(MediaKind::Video, keyframe, self.video_seq, timestamp, i + 1 == packets, len);
                self.video_seq += 1;
            }
            self.frames += 1;
            self.next_video += Duration::from_secs(1) / FPS;
        }
        while self.next_audio <= now {
            let timestamp = (self.audio_seq as u32).wrapping_mul(960);
            self.send(MediaKind::Audio, false, self.audio_seq, timestamp, true, AUDIO_BYTES);
            self.audio_seq += 1;
            self.next_audio += Duration::from_millis(20);
        }
        self.next_video.min(self.next_audio)
    }

    fn send(&mut self, kind: MediaKind, keyframe: bool, seq: u64, timestamp: u32, marker: bool, len: usize) {
        let now = Instant::now();
        let sent_ns = now.duration_since(self.epoch).as_nanos() as u64;
        let payload: Arc<[u8]> = stamp(kind, keyframe, seq, sent_ns, len).into();
        let packet = SourcePacket { timestamp, marker, ..SourcePacket::synthetic(kind, seq, payload, now) };
        self.media.inject(self.key, packet);
    }

    /// (video packets, audio packets) sent so far.
    pub fn sent(&self) -> (u64, u64) {
        (self.video_seq - 1, self.audio_seq - 1)
    }
}

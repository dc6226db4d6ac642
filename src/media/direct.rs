//! Direct producers and consumers, in-process: a stream fed by packets the process
//! injects itself (the load generator's synthetic publishers, tests), and taps that
//! receive a copy of every packet of a stream (players in the load generator and tests).

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use str0m::format::{Codec, CodecConfig, PayloadParams};
use str0m::media::{MediaKind, Pt};
use tokio::sync::mpsc;

use super::router::{Router, SourcePacket, StreamKey};

/// Codecs of direct sources: Opus and VP8 with str0m's default payload types. Built
/// once: synthetic publishers look up their payload type per packet, and str0m builds its
/// whole default codec table per call.
pub fn source_codecs() -> Vec<PayloadParams> {
    SOURCE_CODECS.clone()
}

static SOURCE_CODECS: LazyLock<Vec<PayloadParams>> = LazyLock::new(|| {
    let all = CodecConfig::new_with_defaults();
    [Codec::Opus, Codec::Vp8].iter().filter_map(|c| all.find(|p| p.spec().codec == *c).copied()).collect()
});

/// Payload type a direct source uses for `kind`.
pub fn source_pt(kind: MediaKind) -> Pt {
    SOURCE_CODECS.iter().find(|p| p.spec().codec.kind() == kind).map(|p| p.pt()).expect("default codecs")
}

impl SourcePacket {
    /// A packet of a direct source: one marked frame or audio packet per sequence
    /// number, timestamps 30 fps / 20 ms apart.
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
            source: 0,
        }
    }
}

impl Router {
    /// Make `key` a stream fed by [`Router::inject`] with [`source_codecs`].
    pub fn add_source(&mut self, key: StreamKey) {
        self.stream_mut(key).codecs = source_codecs();
    }

    pub fn inject(&mut self, key: StreamKey, packet: &SourcePacket, now: Instant) {
        self.forward(key, packet);
        self.release_writes(now);
    }

    pub fn tap(&mut self, key: StreamKey, tap: mpsc::UnboundedSender<SourcePacket>) {
        self.stream_mut(key).taps.push(tap);
    }
}

//! Recognisable payloads: every payload starts with a stamp (kind, keyframe, sequence,
//! send time) followed by a pattern derived from the sequence, so a receiver can tell
//! loss, delay, and any byte changed in transit. One format for tests, the load
//! generator and the router benchmark.

use std::sync::Arc;
use std::time::Instant;

use str0m::media::MediaKind;

use crate::media::SourcePacket;

pub const STAMP: usize = 1 + 8 + 8;

/// What a receiver reads back from a stamped payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub kind: MediaKind,
    /// A packet of a keyframe.
    pub keyframe: bool,
    pub seq: u64,
    /// Nanoseconds since the source's `epoch`.
    pub sent_ns: u64,
}

pub fn stamp(kind: MediaKind, keyframe: bool, seq: u64, sent_ns: u64, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len.max(STAMP)];
    p[0] = match (kind, keyframe) {
        (MediaKind::Video, true) => b'K',
        (MediaKind::Video, false) => b'V',
        _ => b'A',
    };
    p[1..9].copy_from_slice(&seq.to_be_bytes());
    p[9..17].copy_from_slice(&sent_ns.to_be_bytes());
    for (i, b) in p[STAMP..].iter_mut().enumerate() {
        *b = (i as u64 ^ seq) as u8;
    }
    p
}

pub fn read_stamp(payload: &[u8]) -> Option<Stamp> {
    let (kind, keyframe) = match payload.first()? {
        b'K' => (MediaKind::Video, true),
        b'V' => (MediaKind::Video, false),
        b'A' => (MediaKind::Audio, false),
        _ => return None,
    };
    let seq = u64::from_be_bytes(payload.get(1..9)?.try_into().ok()?);
    let sent_ns = u64::from_be_bytes(payload.get(9..17)?.try_into().ok()?);
    Some(Stamp { kind, keyframe, seq, sent_ns })
}

/// The stamp of `payload` when every byte after it is as [`stamp`] made it.
pub fn read_intact(payload: &[u8]) -> Option<Stamp> {
    let s = read_stamp(payload)?;
    (stamp(s.kind, s.keyframe, s.seq, s.sent_ns, payload.len()) == payload).then_some(s)
}

/// A direct-source packet with a stamped payload of `len` bytes (see
/// [`SourcePacket::synthetic`]).
pub fn stamped_packet(kind: MediaKind, seq: u64, len: usize, now: Instant) -> SourcePacket {
    let payload: Arc<[u8]> = stamp(kind, false, seq, 0, len).into();
    SourcePacket::synthetic(kind, seq, payload, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        let p = stamp(MediaKind::Video, true, 42, 123_456, 1200);
        assert_eq!(p.len(), 1200);
        assert_eq!(read_stamp(&p), Some(Stamp { kind: MediaKind::Video, keyframe: true, seq: 42, sent_ns: 123_456 }));
        assert_eq!(read_stamp(b"xyz"), None);
        assert_eq!(read_intact(&p).map(|s| s.seq), Some(42));
        let mut changed = p.clone();
        changed[700] ^= 1;
        assert_eq!(read_intact(&changed), None);
    }
}

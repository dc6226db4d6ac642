//! What a consumer does to each packet it is sent: the producer's payload type becomes
//! the one this consumer negotiated for the same codec, and sequence numbers start
//! afresh for each consumer (so SRTP's rollover counter starts at 0 whenever a player
//! joins, whatever the stream's age). When a new producer takes over the stream (a relay
//! that reconnected, perhaps to another origin), sequence numbers and timestamps go on
//! from the last packet written: to the player it is one stream with a pause.

use std::time::Instant;

use str0m::media::{MediaKind, Mid, Pt};
use str0m::rtp::RtpWrite;

use super::peer::Peer;
use super::router::SourcePacket;

pub struct ConsumerTrack {
    pub kind: MediaKind,
    pub mid: Mid,
    /// (producer PT, consumer PT); a handful of entries, a scan beats a map.
    pub pt_map: Vec<(Pt, Pt)>,
    /// RTP clock of the track's codec, to carry timestamps over a change of source.
    clock_rate: u32,
    /// How the current source's numbers become ours: set by its first packet.
    base: Option<Rebase>,
    /// The newest packet written: (seq, timestamp, arrival).
    last: Option<(u64, u32, Instant)>,
}

#[derive(Clone, Copy)]
struct Rebase {
    source: u64,
    /// (first producer seq, first consumer seq).
    seq: (u64, u64),
    /// Added to the producer's timestamps.
    timestamp_offset: u32,
}

impl ConsumerTrack {
    pub fn new(mid: Mid, kind: MediaKind, pt_map: Vec<(Pt, Pt)>, clock_rate: u32) -> Self {
        ConsumerTrack { kind, mid, pt_map, clock_rate, base: None, last: None }
    }

    /// This consumer's payload type, sequence number and timestamp for `packet`, or
    /// `None` when it cannot take the packet (a codec it did not negotiate, or from
    /// before it joined).
    fn rewrite(&mut self, packet: &SourcePacket) -> Option<(Pt, u64, u32)> {
        let &(_, pt) = self.pt_map.iter().find(|(src, _)| *src == packet.pt)?;
        let base = match self.base {
            Some(b) if b.source == packet.source => b,
            _ => *self.base.insert(self.rebase(packet)),
        };
        let (src0, dst0) = base.seq;
        if packet.seq < src0 {
            return None;
        }
        let (seq, timestamp) = (dst0 + packet.seq - src0, packet.timestamp.wrapping_add(base.timestamp_offset));
        if self.last.is_none_or(|(newest, _, _)| seq > newest) {
            self.last = Some((seq, timestamp, packet.arrival));
        }
        Some((pt, seq, timestamp))
    }

    /// Numbering for a source starting with `packet`: the first one keeps its
    /// timestamps; a later one continues after the last packet written, its timestamps
    /// moved by the time that passed in between.
    fn rebase(&self, packet: &SourcePacket) -> Rebase {
        let Some((seq, timestamp, at)) = self.last else {
            return Rebase { source: packet.source, seq: (packet.seq, 1), timestamp_offset: 0 };
        };
        let gap = packet.arrival.saturating_duration_since(at);
        let ticks = (gap.as_secs_f64() * f64::from(self.clock_rate)).min(f64::from(u32::MAX / 2)) as u32;
        let continued = timestamp.wrapping_add(ticks.max(1));
        Rebase {
            source: packet.source,
            seq: (packet.seq, seq + 1),
            timestamp_offset: continued.wrapping_sub(packet.timestamp),
        }
    }
}

impl Peer {
    /// Write one packet of the stream this peer consumes; true when written (it leaves
    /// at the next [`Peer::release`]).
    pub fn send(&mut self, packet: &SourcePacket) -> bool {
        if !self.connected {
            return false;
        }
        let Some(track) = self.tracks.iter_mut().find(|t| t.kind == packet.kind) else { return false };
        let Some((pt, seq, timestamp)) = track.rewrite(packet) else { return false };
        let mid = track.mid;
        let arrival: Instant = packet.arrival;
        let write = RtpWrite::new(pt, seq.into(), timestamp, arrival, packet.payload.clone())
            .marker(packet.marker)
            .nackable(true);
        // Only the send queue moves: `Peer::release` then needs no full timeout pass.
        self.rtc().direct_api().write_rtp_by_mid(mid, None, write)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn packet(source: u64, seq: u64, timestamp: u32, arrival: Instant) -> SourcePacket {
        SourcePacket {
            kind: MediaKind::Video,
            pt: 96.into(),
            seq,
            timestamp,
            marker: true,
            payload: vec![1u8].into(),
            arrival,
            source,
        }
    }

    #[test]
    fn a_new_source_continues_the_numbers_of_the_last() {
        let mut track = ConsumerTrack::new(Mid::from("1"), MediaKind::Video, vec![(96.into(), 100.into())], 90_000);
        let t0 = Instant::now();
        assert_eq!(track.rewrite(&packet(7, 5000, 1_000_000, t0)), Some((100.into(), 1, 1_000_000)));
        assert_eq!(track.rewrite(&packet(7, 5001, 1_003_000, t0)), Some((100.into(), 2, 1_003_000)));
        // Before the first packet of this consumer: not ours.
        assert_eq!(track.rewrite(&packet(7, 4999, 997_000, t0)), None);
        // Another producer, other numbers, half a second later.
        let later = t0 + Duration::from_millis(500);
        assert_eq!(track.rewrite(&packet(9, 12, 42, later)), Some((100.into(), 3, 1_003_000 + 45_000)));
        assert_eq!(track.rewrite(&packet(9, 13, 3042, later)), Some((100.into(), 4, 1_003_000 + 48_000)));
        // A lower seq of the new source than its first is still refused.
        assert_eq!(track.rewrite(&packet(9, 11, 0, later)), None);
    }

    #[test]
    fn timestamps_wrap_across_a_change_of_source() {
        let mut track = ConsumerTrack::new(Mid::from("1"), MediaKind::Audio, vec![(96.into(), 111.into())], 48_000);
        let t0 = Instant::now();
        track.rewrite(&packet(1, 10, u32::MAX - 100, t0));
        let (_, seq, ts) =
            track.rewrite(&packet(2, u64::from(u16::MAX) + 5, 7, t0 + Duration::from_millis(20))).unwrap();
        assert_eq!((seq, ts), (2, (u32::MAX - 100).wrapping_add(960)));
    }
}

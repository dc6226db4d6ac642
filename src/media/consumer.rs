//! What a consumer does to each packet it is sent: the producer's payload type becomes
//! the one this consumer negotiated for the same codec, and sequence numbers start
//! afresh for each consumer (so SRTP's rollover counter starts at 0 whenever a player
//! joins, whatever the stream's age).

use std::time::Instant;

use str0m::media::{MediaKind, Mid, Pt};
use str0m::rtp::RtpWrite;

use super::peer::Peer;
use super::router::SourcePacket;

pub struct ConsumerTrack {
    pub kind: MediaKind,
    mid: Mid,
    /// (producer PT, consumer PT); a handful of entries, a scan beats a map.
    pub pt_map: Vec<(Pt, Pt)>,
    /// (first producer seq, first consumer seq), set by the first packet sent.
    seq_base: Option<(u64, u64)>,
}

impl ConsumerTrack {
    pub fn new(mid: Mid, kind: MediaKind, pt_map: Vec<(Pt, Pt)>) -> Self {
        ConsumerTrack { kind, mid, pt_map, seq_base: None }
    }

    /// This consumer's payload type and sequence number for `packet`, or `None` when it
    /// cannot take the packet (a codec it did not negotiate, or from before it joined).
    fn rewrite(&mut self, packet: &SourcePacket) -> Option<(Pt, u64)> {
        let &(_, pt) = self.pt_map.iter().find(|(src, _)| *src == packet.pt)?;
        let (src0, dst0) = *self.seq_base.get_or_insert((packet.seq, 1));
        (packet.seq >= src0).then(|| (pt, dst0 + packet.seq - src0))
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
        let Some((pt, seq)) = track.rewrite(packet) else { return false };
        let mid = track.mid;
        let mut api = self.rtc().direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, None) else { return false };
        let arrival: Instant = packet.arrival;
        let write = RtpWrite::new(pt, seq.into(), packet.timestamp, arrival, packet.payload.clone())
            .marker(packet.marker)
            .nackable(true);
        tx.write_rtp(write);
        true
    }
}

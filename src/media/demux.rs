//! Which peer a datagram is for. Server-side peers share the media socket(s): a new one
//! is found by the STUN USERNAME of its first binding request (our ufrag), then by the
//! source address it was seen at. Client-side peers (the offering side) each have a
//! local address of their own, because several of them may talk to the same remote
//! address and DTLS cannot be told apart otherwise.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::PeerId;

#[derive(Default)]
pub struct Demux {
    /// Maps keyed by what the network sends keep the default, flood-resistant hasher.
    by_ufrag: HashMap<String, PeerId>,
    by_source: HashMap<SocketAddr, PeerId>,
    by_local: HashMap<SocketAddr, PeerId>,
}

impl Demux {
    /// A peer on the shared socket(s), known by its ICE ufrag until it is seen.
    pub fn add_shared(&mut self, ufrag: String, peer: PeerId) {
        self.by_ufrag.insert(ufrag, peer);
    }

    /// A peer with a local address of its own.
    pub fn add_dedicated(&mut self, local: SocketAddr, peer: PeerId) {
        self.by_local.insert(local, peer);
    }

    /// The peer a datagram from `source` to our `destination` is for, if any.
    pub fn find(&self, source: SocketAddr, destination: SocketAddr, data: &[u8]) -> Option<PeerId> {
        self.by_local
            .get(&destination)
            .or_else(|| stun_local_ufrag(data).and_then(|u| self.by_ufrag.get(u)))
            .or_else(|| self.by_source.get(&source))
            .copied()
    }

    /// A shared-socket peer accepted a datagram from `source`: later ones need no STUN.
    pub fn seen_at(&mut self, source: SocketAddr, peer: PeerId) {
        self.by_source.insert(source, peer);
    }

    pub fn remove(&mut self, peer: PeerId, ufrag: &str, local: Option<SocketAddr>) {
        self.by_ufrag.remove(ufrag);
        self.by_source.retain(|_, p| *p != peer);
        if let Some(local) = local {
            self.by_local.remove(&local);
        }
    }
}

/// The local ufrag from a STUN request's USERNAME ("local:remote"), without a full parse.
fn stun_local_ufrag(data: &[u8]) -> Option<&str> {
    // STUN: 20-byte header, magic cookie at 4..8, then TLV attributes (4-byte aligned).
    if data.len() < 20 || data[0] >= 2 || data[4..8] != [0x21, 0x12, 0xa4, 0x42] {
        return None;
    }
    let mut at = 20;
    while at + 4 <= data.len() {
        let kind = u16::from_be_bytes([data[at], data[at + 1]]);
        let len = u16::from_be_bytes([data[at + 2], data[at + 3]]) as usize;
        let value = data.get(at + 4..at + 4 + len)?;
        if kind == 0x0006 {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next();
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_local_ufrag_from_stun_username() {
        let mut msg = vec![0x00, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
        msg.extend_from_slice(&[0; 12]);
        msg.extend_from_slice(&[0x00, 0x06, 0x00, 0x07]);
        msg.extend_from_slice(b"abc:xyz\0");
        assert_eq!(stun_local_ufrag(&msg), Some("abc"));
        assert_eq!(stun_local_ufrag(&msg[..22]), None);
        assert_eq!(stun_local_ufrag(b"\x80\x60garbage-rtp-packet......"), None);
    }

    #[test]
    fn finds_peers_by_local_address_then_ufrag_then_source() {
        let mut demux = Demux::default();
        let (shared, own, remote) =
            ("127.0.0.1:5000".parse().unwrap(), "127.0.0.1:6000".parse().unwrap(), "10.0.0.1:9".parse().unwrap());
        demux.add_shared("abc".into(), 1);
        demux.add_dedicated(own, 2);
        assert_eq!(demux.find(remote, own, b"anything"), Some(2));
        assert_eq!(demux.find(remote, shared, b"not stun"), None);
        demux.seen_at(remote, 1);
        assert_eq!(demux.find(remote, shared, b"not stun"), Some(1));
        demux.remove(1, "abc", None);
        assert_eq!(demux.find(remote, shared, b"not stun"), None);
    }
}

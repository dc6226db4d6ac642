//! Buffers of sent datagrams, given back for the next RTP packets (hopcast patch 14).
//!
//! Every RTP packet is assembled and sealed in a buffer of its own, which leaves in
//! [`Transmit`][crate::net::Transmit]. A full-size packet (about 1.1 kB) is beyond the
//! per-thread caches of common allocators, so allocating and freeing one per packet
//! sent costs several hundred instructions. An application that has sent a datagram can
//! hand its buffer back with [`recycle_send_buffer`]; packets assembled on that thread
//! then reuse it. Without recycling nothing changes: buffers are allocated as before.

use std::cell::RefCell;

use super::DATAGRAM_MAX_PACKET_SIZE;

/// Spare buffers kept per thread: about a send batch's worth.
const MAX_SPARE: usize = 256;

struct Spare {
    buffers: Vec<Vec<u8>>,
    // Set by the first recycled buffer: from then on new buffers are allocated at full
    // size, so that each can carry any later packet.
    recycling: bool,
}

thread_local! {
    static SPARE: RefCell<Spare> = const {
        RefCell::new(Spare {
            buffers: Vec::new(),
            recycling: false,
        })
    };
}

/// Give back the buffer of a datagram that has been sent, for RTP packets assembled
/// later on this thread. Buffers too small for any packet are dropped.
pub fn recycle_send_buffer(mut buffer: Vec<u8>) {
    SPARE.with_borrow_mut(|spare| {
        spare.recycling = true;
        if buffer.capacity() >= DATAGRAM_MAX_PACKET_SIZE && spare.buffers.len() < MAX_SPARE {
            buffer.clear();
            spare.buffers.push(buffer);
        }
    });
}

/// An empty buffer with room for `capacity` bytes: a recycled one when there is one.
pub(crate) fn send_buffer(capacity: usize) -> Vec<u8> {
    SPARE.with_borrow_mut(|spare| match spare.buffers.pop() {
        Some(buffer) if buffer.capacity() >= capacity => buffer,
        _ if spare.recycling => Vec::with_capacity(capacity.max(DATAGRAM_MAX_PACKET_SIZE)),
        _ => Vec::with_capacity(capacity),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recycled_buffer_carries_the_next_packet() {
        std::thread::spawn(|| {
            let first = send_buffer(100);
            assert!(first.capacity() >= 100);
            assert!(first.capacity() < DATAGRAM_MAX_PACKET_SIZE, "no recycling yet: as asked");

            let mut sent = Vec::with_capacity(DATAGRAM_MAX_PACKET_SIZE);
            sent.extend_from_slice(&[7; 1200]);
            let address = sent.as_ptr();
            recycle_send_buffer(sent);

            let again = send_buffer(1200);
            assert_eq!(again.as_ptr(), address, "the same allocation");
            assert!(again.is_empty());

            let fresh = send_buffer(100);
            assert!(fresh.capacity() >= DATAGRAM_MAX_PACKET_SIZE, "full size once recycling");

            recycle_send_buffer(Vec::with_capacity(10));
            assert!(SPARE.with_borrow(|s| s.buffers.is_empty()), "too small to keep");
        })
        .join()
        .unwrap();
    }
}

//! Pipes between media threads: a stream lives on its home thread, and each other
//! thread with consumers of it holds a mirror of the stream and is sent every packet
//! once (an `Arc`ed payload, no copy). A pipe stays open while its thread has consumers
//! of the stream, counted here.

use super::router::{SourcePacket, StreamKey};

/// The threads a stream's packets are piped to, with their consumer counts.
#[derive(Default)]
pub struct Pipes(Vec<(usize, u32)>);

impl Pipes {
    /// One more consumer on `thread`.
    pub fn open(&mut self, thread: usize) {
        match self.0.iter_mut().find(|(t, _)| *t == thread) {
            Some((_, consumers)) => *consumers += 1,
            None => self.0.push((thread, 1)),
        }
    }

    /// One consumer on `thread` fewer; the last one closes the pipe.
    pub fn close(&mut self, thread: usize) {
        if let Some(i) = self.0.iter().position(|(t, _)| *t == thread) {
            self.0[i].1 -= 1;
            if self.0[i].1 == 0 {
                self.0.swap_remove(i);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Queue `packet` for every open pipe.
    pub fn send(&self, key: StreamKey, packet: &SourcePacket, out: &mut Vec<Piped>) {
        for &(thread, _) in &self.0 {
            out.push(Piped { thread, key, packet: packet.clone() });
        }
    }
}

/// A packet on its way to another media thread.
pub struct Piped {
    pub thread: usize,
    pub key: StreamKey,
    pub packet: SourcePacket,
}

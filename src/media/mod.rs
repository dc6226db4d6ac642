//! Media: the WebRTC peers of this process and the forwarding between them.
//!
//! The sans-IO core, fed bytes and time:
//! - [`router`]: one media thread's streams: each producer's packets to its consumers,
//!   keyframe requests upstream.
//! - [`negotiation`]: answering and making offers, SDP errors in words clients may read.
//! - [`peer`]: one WebRTC peer (`str0m::Rtc`) and its run loop; [`consumer`]: what a
//!   consumer rewrites in each packet; [`demux`]: which peer a datagram is for;
//!   [`pipe`]: packets passed to other media threads; [`direct`]: in-process sources
//!   and taps.
//! - [`codecs`]: codecs matched by identity; [`sdp`]: the few SDP rewrites str0m
//!   leaves to us.
//!
//! Around it, the I/O: [`engine`] (the media threads, driven through [`MediaHandle`]),
//! [`udp`] (binding, receive with kernel timestamps, sendmmsg with UDP GSO) and
//! [`latency`] (the forwarding-latency histograms).

pub mod codecs;
pub mod consumer;
pub mod demux;
pub mod direct;
pub mod engine;
pub mod figures;
pub mod latency;
pub mod negotiation;
pub mod peer;
pub mod pipe;
pub mod router;
pub mod sdp;
pub mod udp;

#[cfg(test)]
mod tests;

pub use engine::{MediaHandle, MediaStats};
pub use peer::Cause;
pub use router::{MediaError, MediaEvent, PeerId, Role, SourcePacket, StreamKey};

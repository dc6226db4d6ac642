//! Media: the WebRTC peers of this process and the forwarding between them.
//!
//! - [`router`]: sans-IO state (peers, streams, forwarding, keyframe requests).
//! - [`engine`]: the thread and sockets around it, driven through [`MediaHandle`].
//! - [`codecs`]: codecs matched by identity, payload types mapped per consumer.
//! - [`sdp`]: the few SDP rewrites str0m leaves to us.
//! - [`udp`]: binding, receive with kernel timestamps, batched send with sendmmsg and UDP GSO.
//! - [`latency`]: the histogram of forwarding latency the engine keeps.

pub mod codecs;
pub mod engine;
pub mod latency;
pub mod router;
pub mod sdp;
pub mod udp;

pub use engine::MediaHandle;
pub use router::{MediaError, MediaEvent, PeerId, Role, SourcePacket, StreamKey};

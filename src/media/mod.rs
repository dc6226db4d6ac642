//! Media: the WebRTC peers of this process and the forwarding between them.
//!
//! - [`router`]: sans-IO state (peers, streams, forwarding, keyframe requests).
//! - [`engine`]: the thread and sockets around it, driven through [`MediaHandle`].
//! - [`sdp`]: the few SDP rewrites str0m leaves to us.

pub mod engine;
pub mod router;
pub mod sdp;

pub use engine::MediaHandle;
pub use router::{MediaError, MediaEvent, PeerId, Role, SourcePacket, StreamKey};

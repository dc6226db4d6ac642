//! hopcast: a WebRTC media server, wire-compatible with the streaming core of
//! Flashphoner Web Call Server (WCS).
//!
//! The pipeline, outside in:
//! - [`net`]: TCP connections admitted under caps and deadlines, TLS.
//! - [`wcs`]: the WCS protocol ([`wcs::protocol`]) and its faces: the WebSocket
//!   signaling server, the REST API, and the client side of the same protocol.
//! - [`state`]: sessions and streams ([`state::registry`], pure state) behind one door,
//!   the [`state::hub::Hub`]: every use case (publish, play, stop, terminate) goes
//!   through it, whoever drives it.
//! - [`media`]: the media threads: a sans-IO router per thread forwards each stream's
//!   packets from its producer to its consumers over real WebRTC (str0m).
//! - [`relay`]: relay agents, clients of the same protocol that carry streams between
//!   servers; [`cluster`]: origins and edges that find each other and the streams
//!   through NATS, edges pulling over relays on demand; [`whip`]: WHIP and WHEP, the
//!   standard HTTP signaling, server and client.
//! - [`access`]: who may do what: REST hooks to the operator's backend, the REST API's
//!   credential, the targets relays may dial.
//! - [`config`], [`web`] (the built-in pages), and [`server`], which wires it all and
//!   carries the stop signal.
//!
//! [`testkit`] (feature `testkit`) holds the tooling of the tests and the load
//! generator, out of the server.

pub mod access;
pub mod cluster;
pub mod config;
pub mod media;
pub mod monitor;
pub mod net;
pub mod relay;
pub mod server;
pub mod state;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod wcs;
pub mod web;
pub mod whip;

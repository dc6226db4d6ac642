//! hopcast: a WebRTC media server, wire-compatible with the streaming core of
//! Flashphoner Web Call Server (WCS).
//!
//! Data flows like this: a browser (or a relay agent) speaks the WCS signaling protocol
//! ([`protocol`]) over WebSocket to [`signaling`], which keeps sessions and streams in
//! [`registry`] and asks [`media`] for WebRTC peers. [`media`] runs one thread that owns
//! the UDP socket and forwards RTP from each stream's producer to its consumers. The
//! REST API ([`rest`]) reads and changes the registry. [`listener`] admits TCP
//! connections (caps, deadlines) for both. [`client`] is the other side of
//! the same protocol, used by relay agents ([`relay`]), tests and the load generator.

pub mod client;
pub mod config;
pub mod hub;
pub mod listener;
pub mod media;
pub mod protocol;
pub mod registry;
pub mod relay;
pub mod rest;
pub mod server;
pub mod signaling;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod tls;
pub mod web;

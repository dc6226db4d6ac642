//! The WCS protocol and its faces: the messages, statuses and reason texts
//! ([`protocol`]), the WebSocket signaling server ([`signaling`]), the REST API
//! ([`rest`]), and the client side of the same protocol ([`client`]: relay agents,
//! tests, the load generator).

pub mod client;
pub mod protocol;
pub mod rest;
pub mod signaling;

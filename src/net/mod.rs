//! Transports into the server: TCP connections admitted under caps and deadlines and
//! served over HTTP/1 ([`listener`]), TLS for wss:// and https:// ([`tls`]), and the
//! stop signal the tasks watch ([`shutdown`]); and the way out: a small HTTP client
//! ([`http_client`]) for REST hooks and WHIP/WHEP.

pub mod http_client;
pub mod listener;
pub mod shutdown;
pub mod tls;

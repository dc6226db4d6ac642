//! Test tooling, behind the `testkit` feature (the integration tests and `hopcast-load`
//! turn it on; the server is built without it): synthetic media and payload stamps,
//! hopcast as a child process, and the client-side media engine both use.

pub mod fuzz;
pub mod netns;
pub mod process;
pub mod stamp;
pub mod synthetic;

use std::net::{IpAddr, Ipv4Addr};

use std::time::Instant;

use tokio::sync::mpsc;

use crate::media::router::Router;
use crate::media::{engine, MediaEvent, MediaHandle};

/// A media engine of the test's or load generator's own, on loopback (like a relay
/// agent's): its peers publish and play against the servers under test.
pub fn client_media() -> (MediaHandle, mpsc::UnboundedReceiver<MediaEvent>) {
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    engine::start(&[(lo, lo)], 0..=0, engine::Options::default()).expect("client media engine")
}

/// Deliver every datagram `a` and `b` have queued to the other, at `now`: two routers
/// wired back to back in memory (sans-IO tests, the router benchmark).
pub fn exchange_datagrams(a: &mut Router, b: &mut Router, now: Instant) {
    while let Some(d) = a.poll_transmit() {
        b.handle_datagram(now, d.source, d.destination, &d.contents);
    }
    while let Some(d) = b.poll_transmit() {
        a.handle_datagram(now, d.source, d.destination, &d.contents);
    }
}

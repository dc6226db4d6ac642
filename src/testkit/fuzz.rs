//! Fuzz targets: what the network can hand the server, fed arbitrary bytes. Each is a
//! plain function, so the `cargo fuzz` harness (`fuzz/`, nightly, libFuzzer) and a test on
//! stable (`tests/fuzz_corpus.rs`, the seed corpus plus mutations) run the same code: the
//! targets cannot rot when nightly is missing. A target passes an input when it returns;
//! a panic is the finding.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::media::router::{Role, Router};
use crate::testkit::exchange_datagrams;

/// A fuzz target: bytes in, a panic is a finding.
pub type Target = fn(&[u8]);

/// The targets by name (the `fuzz/fuzz_targets/*.rs` files and corpus folders).
pub const TARGETS: [(&str, Target); 5] = [
    ("signaling", signaling),
    ("properties", properties),
    ("rest_bodies", rest_bodies),
    ("sdp_offer", sdp_offer),
    ("router_datagrams", router_datagrams),
];

/// A WebSocket text frame into the signaling decoder (and back out, when it decodes).
pub fn signaling(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(message) = crate::wcs::protocol::ClientMessage::decode(text) {
        let _ = message.encode();
    }
    let _ = crate::wcs::protocol::ServerMessage::decode(text);
}

/// A `flashphoner.properties` file into the configuration.
pub fn properties(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::config::Config::from_properties(&text);
}

/// REST bodies into the filters and requests REST parses, then used as REST uses them.
pub fn rest_bodies(data: &[u8]) {
    use crate::relay::{connect_url, RelayFilter, RelayRequest};
    use crate::state::registry::StreamFilter;
    if let Ok(filter) = serde_json::from_slice::<StreamFilter>(data) {
        let info = crate::wcs::protocol::StreamInfo::for_request("s", &Default::default(), true);
        let _ = filter.matches(&info);
    }
    if let Ok(filter) = serde_json::from_slice::<RelayFilter>(data) {
        let _ = filter.is_empty();
    }
    if let Ok(request) = serde_json::from_slice::<RelayRequest>(data) {
        if let Some(uri) = request.uri {
            let _ = connect_url(&uri, true);
            let allow = crate::access::targets::RelayTargets::parse("127.0.0.1:8080,*.example.com,cluster");
            let _ = allow.map(|a| a.check(&uri, |_, _| false));
        }
    }
    let spec = String::from_utf8_lossy(data);
    let _ = crate::access::targets::RelayTargets::parse(&spec);
}

thread_local! {
    /// One router for every offer (making one costs a DTLS certificate), and the next id.
    static ANSWERING: RefCell<Option<(Router, u64)>> = const { RefCell::new(None) };
}

/// An SDP offer into the router's negotiation, as a publisher's and as a player's.
pub fn sdp_offer(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let now = Instant::now();
    ANSWERING.with(|cell| {
        let mut cell = cell.borrow_mut();
        let (router, next) = cell.get_or_insert_with(|| {
            let mut router = Router::new(vec![SERVER.parse().expect("address")], Duration::from_secs(1));
            router.add_source(7);
            (router, 1)
        });
        for role in [Role::Producer(100), Role::Consumer(7)] {
            *next += 1;
            let _ = router.answer(*next, role, text, now);
            router.remove_peer(*next, false, now);
        }
        router.remove_stream(100);
    });
}

const SERVER: &str = "127.0.0.1:40000";
const CLIENT: &str = "127.0.0.1:50000";

/// A server router with a connected publisher and player, built once per thread.
struct Live {
    server: Router,
    now: Instant,
}

thread_local! {
    static LIVE: RefCell<Option<Live>> = const { RefCell::new(None) };
}

/// Client peer `id` offers `roles.0` from local `port`; server peer `id + 10` answers
/// as `roles.1`.
fn negotiate(client: &mut Router, server: &mut Router, id: u64, roles: (Role, Role), port: u16, now: Instant) {
    let local = SocketAddr::from(([127, 0, 0, 1], port));
    let offer = client.offer(id, roles.0, local, now).expect("offer");
    let answer = server.answer(id + 10, roles.1, &offer, now).expect("answer");
    client.apply_answer(id, &answer, now).expect("apply");
}

/// A client publishing stream 1 to a server (not yet connected).
fn publishing_pair(now: Instant) -> (Router, Router) {
    let mut client = Router::new(vec![CLIENT.parse().expect("address")], Duration::from_secs(5));
    let mut server = Router::new(vec![SERVER.parse().expect("address")], Duration::from_secs(5));
    client.add_source(1);
    negotiate(&mut client, &mut server, 10, (Role::Consumer(1), Role::Producer(100)), 40001, now);
    (client, server)
}

fn live() -> Live {
    let mut now = Instant::now();
    let (mut client, mut server) = publishing_pair(now);
    negotiate(&mut client, &mut server, 11, (Role::Producer(2), Role::Consumer(100)), 40002, now);
    for _ in 0..100 {
        exchange_datagrams(&mut client, &mut server, now);
        now += Duration::from_millis(1);
        client.handle_timeout(now);
        server.handle_timeout(now);
    }
    Live { server, now }
}

/// Datagrams a real client sends a server (STUN checks, DTLS handshake records, SRTP
/// and SRTCP), each prefixed with its sender byte as [`router_datagrams`] reads it: the
/// seeds of that target's corpus.
pub fn seed_datagrams() -> Vec<Vec<u8>> {
    let mut now = Instant::now();
    let (mut client, mut server) = publishing_pair(now);
    let mut seeds = Vec::new();
    for round in 0..100u64 {
        if round > 50 {
            let packet = crate::testkit::stamp::stamped_packet(str0m::media::MediaKind::Video, round, 300, now);
            client.inject(1, &packet, now);
        }
        while let Some(d) = client.poll_transmit() {
            seeds.push([&[0u8][..], &d.contents].concat());
            server.handle_datagram(now, d.source, d.destination, &d.contents);
        }
        while let Some(d) = server.poll_transmit() {
            client.handle_datagram(now, d.source, d.destination, &d.contents);
        }
        now += Duration::from_millis(1);
        client.handle_timeout(now);
        server.handle_timeout(now);
    }
    seeds
}

/// Datagrams into a router holding live peers (ICE, DTLS and SRTP up): the first byte
/// picks the sender (a peer's address, or one nobody knows), the rest is the datagram.
/// STUN-, DTLS- and SRTP-looking inputs reach the peers' stacks past the demux.
pub fn router_datagrams(data: &[u8]) {
    let Some((&pick, datagram)) = data.split_first() else { return };
    let source: SocketAddr = match pick % 4 {
        0 => "127.0.0.1:40001",
        1 => "127.0.0.1:40002",
        2 => "127.0.0.1:40099",
        _ => "10.1.2.3:5000",
    }
    .parse()
    .expect("address");
    LIVE.with(|cell| {
        let mut cell = cell.borrow_mut();
        let live = cell.get_or_insert_with(live);
        live.now += Duration::from_micros(100);
        live.server.handle_datagram(live.now, source, SERVER.parse().expect("address"), datagram);
        live.server.handle_timeout(live.now);
        while live.server.poll_transmit().is_some() {}
        while live.server.poll_event().is_some() {}
    });
}

//! The router alone, in one thread, no sockets: a client router publishes to a server
//! router that forwards to N players (real ICE, DTLS and SRTP; the "network" is a loop
//! in memory). Only the server router's calls are timed, and what it sends to players
//! is counted and dropped, so the figure is hopcast + str0m user-space cost per
//! forwarded packet, without the kernel. Deterministic enough for callgrind:
//!
//!   valgrind --tool=callgrind --toggle-collect='*measured_server_round*' \
//!       target/release/hopcast-load router --players 20 --packets 500 --warmup 800
//!
//! counts the server alone in a steady state; `--toggle-collect='*measured_forwarding*'`
//! without `--warmup` is the older figure (the publisher's side included, RTX caches
//! still filling).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hopcast::media::router::{Role, Router, SourcePacket};
use hopcast::testkit::exchange_datagrams;
use hopcast::testkit::stamp::stamped_packet;
use str0m::media::MediaKind;

const SERVER: &str = "127.0.0.1:40000";

fn pump(client: &mut Router, server: &mut Router, now: &mut Instant) {
    for _ in 0..200 {
        exchange_datagrams(client, server, *now);
        *now += Duration::from_millis(1);
        client.handle_timeout(*now);
        server.handle_timeout(*now);
    }
}

fn packet(kind: MediaKind, seq: u64, now: Instant) -> SourcePacket {
    stamped_packet(kind, seq, if kind == MediaKind::Video { 1100 } else { 120 }, now)
}

/// A datagram on its way from the client router to the server router.
type Datagram = (SocketAddr, SocketAddr, Vec<u8>);

/// The publisher's side of one round (not the server's work): a video packet, an audio
/// packet every other round, sealed by the client router.
#[inline(never)]
fn client_sends(client: &mut Router, seq: u64, now: Instant, out: &mut Vec<Datagram>) {
    // 110 packets/s in: a video packet every round, an audio packet every other.
    client.inject(1, &packet(MediaKind::Video, 10_000 + seq, now), now);
    if seq.is_multiple_of(2) {
        client.inject(1, &packet(MediaKind::Audio, 10_000 + seq, now), now);
    }
    while let Some(d) = client.poll_transmit() {
        out.push((d.source, d.destination, d.contents));
    }
}

/// The server's side of one round: receive, forward, send (to nowhere), and the timer.
fn server_forwards(server: &mut Router, datagrams: &mut Vec<Datagram>, now: &mut Instant) -> u64 {
    let mut sent = 0u64;
    for (source, destination, contents) in datagrams.drain(..) {
        server.handle_datagram(*now, source, destination, &contents);
    }
    // Sent, as the media thread does: the buffers go back to str0m.
    while let Some(d) = server.poll_transmit() {
        sent += d.contents.len() as u64 / 1_000_000; // keep the datagram "used"
        str0m::net::recycle_send_buffer(d.contents);
    }
    *now += Duration::from_millis(5);
    server.handle_timeout(*now);
    while let Some(d) = server.poll_transmit() {
        str0m::net::recycle_send_buffer(d.contents);
    }
    sent
}

/// A measured round's server side: `callgrind --toggle-collect='*measured_server_round*'`
/// counts only this.
#[inline(never)]
fn measured_server_round(server: &mut Router, datagrams: &mut Vec<Datagram>, now: &mut Instant) -> u64 {
    server_forwards(server, datagrams, now)
}

/// Bytes written between rounds with `--cold`: well over this machine's last-level cache.
const EVICT_BYTES: usize = 64 << 20;

/// Write over `evict` so the caches hold none of the server's state (untimed).
#[inline(never)]
fn evict_caches(evict: &mut [u8], round: u64) {
    for line in evict.chunks_mut(64) {
        line[0] = round as u8;
    }
    std::hint::black_box(evict);
}

/// (forwarded packets, time spent in the server router). Counting this function with
/// callgrind includes the publisher's side too (how the figures before 2026-12-03 were
/// taken); `measured_server_round` alone is the server.
#[inline(never)]
fn measured_forwarding(
    client: &mut Router,
    server: &mut Router,
    now: &mut Instant,
    first: u64,
    packets: u64,
    mut evict: Option<&mut [u8]>,
) -> (u64, Duration) {
    let forwarded_before = server.stats().packets_forwarded;
    let mut spent = Duration::ZERO;
    let mut sent = 0u64;
    let mut datagrams = Vec::new();
    for seq in first..first + packets {
        client_sends(client, seq, *now, &mut datagrams);
        if let Some(evict) = evict.as_deref_mut() {
            evict_caches(evict, seq);
        }
        let t = Instant::now();
        sent += measured_server_round(server, &mut datagrams, now);
        spent += t.elapsed();
        client.handle_timeout(*now);
    }
    std::hint::black_box(sent);
    (server.stats().packets_forwarded - forwarded_before, spent)
}

/// Forwarding before the measured window, so it sees a steady state: the RTX caches
/// (3 s of packets) full and evicting, instead of growing.
#[inline(never)]
fn warm_up(client: &mut Router, server: &mut Router, now: &mut Instant, packets: u64) {
    let mut datagrams = Vec::new();
    for seq in 1..=packets {
        client_sends(client, seq, *now, &mut datagrams);
        server_forwards(server, &mut datagrams, now);
        client.handle_timeout(*now);
    }
}

pub fn run(players: usize, packets: u64, warmup: u64, cold: bool) {
    let mut now = Instant::now();
    let mut client = Router::new(vec!["127.0.0.1:50000".parse().unwrap()], Duration::from_secs(30));
    let mut server = Router::new(vec![SERVER.parse().unwrap()], Duration::from_secs(30));
    client.add_source(1);
    let offer = client.offer(1, Role::Consumer(1), "127.0.0.1:41000".parse().unwrap(), now).expect("offer");
    let answer = server.answer(1, Role::Producer(100), &offer, now).expect("answer");
    client.apply_answer(1, &answer, now).expect("apply");
    pump(&mut client, &mut server, &mut now);
    for i in 0..players as u64 {
        let local = format!("127.0.0.1:{}", 41001 + i).parse().unwrap();
        let offer = client.offer(10 + i, Role::Producer(1000 + i), local, now).expect("offer");
        let answer = server.answer(10 + i, Role::Consumer(100), &offer, now).expect("answer");
        client.apply_answer(10 + i, &answer, now).expect("apply");
        if i % 20 == 19 {
            pump(&mut client, &mut server, &mut now);
        }
    }
    pump(&mut client, &mut server, &mut now);
    warm_up(&mut client, &mut server, &mut now, warmup);
    let mut evict = vec![0u8; if cold { EVICT_BYTES } else { 0 }];
    let evict = cold.then_some(&mut evict[..]);
    let (forwarded, spent) = measured_forwarding(&mut client, &mut server, &mut now, warmup + 1, packets, evict);
    let caches = if cold { ", caches evicted before each round" } else { "" };
    println!(
        "\nrouter alone (1 publisher, {players} players, in memory, no kernel, {warmup} video packets of warm-up{caches})"
    );
    println!(
        "forwarded {forwarded} packets; server router time {:.1} ms: {:.2} µs per forwarded packet",
        spent.as_secs_f64() * 1e3,
        spent.as_secs_f64() * 1e6 / forwarded.max(1) as f64
    );
}

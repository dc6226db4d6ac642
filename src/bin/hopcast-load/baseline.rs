//! The limit this machine allows: a minimal forwarder that receives UDP and, for each
//! player, copies the packet, seals it with AES-256-GCM (SRTP's AEAD cipher, from the
//! aws-lc-rs library str0m uses here) and sends it. No signaling, no routing, no
//! WebRTC state. Its CPU time per forwarded packet is what the server is compared to.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

/// CPU time of the calling thread (nanosecond run time from /proc/thread-self/schedstat).
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    Duration::from_nanos(stat.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Forward `pps` packets/s of `size` bytes to `players` for `window`; returns the
/// forwarder thread's CPU µs per forwarded packet.
pub fn cost_per_packet(players: usize, window: Duration, pps: f64, size: usize) -> f64 {
    let input = UdpSocket::bind("127.0.0.1:0").expect("bind");
    input.set_read_timeout(Some(Duration::from_millis(50))).ok();
    let input_addr = input.local_addr().expect("addr");
    // One receiving socket per player, all waited on by one thread through epoll (tokio),
    // as the players of the fan-out scenario are: the sender pays for waking them.
    let sinks: Vec<UdpSocket> = (0..players).map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind")).collect();
    let sink_addrs: Vec<std::net::SocketAddr> = sinks.iter().map(|s| s.local_addr().expect("addr")).collect();
    let running = Arc::new(AtomicBool::new(true));

    let drain_running = running.clone();
    let drain = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let sockets: Vec<tokio::net::UdpSocket> = sinks
                .into_iter()
                .filter_map(|s| s.set_nonblocking(true).ok().and(tokio::net::UdpSocket::from_std(s).ok()))
                .collect();
            let mut buf = [0u8; 2048];
            while drain_running.load(Ordering::Relaxed) {
                let receive = std::future::poll_fn(|cx| {
                    for socket in &sockets {
                        let mut read = tokio::io::ReadBuf::new(&mut buf);
                        while let std::task::Poll::Ready(Ok(_)) = socket.poll_recv_from(cx, &mut read) {
                            read.clear();
                        }
                    }
                    std::task::Poll::<()>::Pending
                });
                let _ = tokio::time::timeout(Duration::from_millis(50), receive).await;
            }
        });
    });

    let fwd_running = running.clone();
    let forwarder = std::thread::spawn(move || {
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7u8; 32]).expect("key"));
        let out = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let mut buf = [0u8; 2048];
        let mut packet = Vec::with_capacity(2048);
        let cpu0 = thread_cpu();
        let mut forwarded = 0u64;
        let mut seq = 0u64;
        while fwd_running.load(Ordering::Relaxed) {
            let Ok(n) = input.recv(&mut buf) else { continue };
            for (player, destination) in sink_addrs.iter().enumerate() {
                seq += 1;
                // Per player: its own header and keystream, so a copy and a seal each.
                packet.clear();
                packet.extend_from_slice(&[0x80, 96, (seq >> 8) as u8, seq as u8, 0, 0, 0, 0]);
                packet.extend_from_slice(&(player as u32).to_be_bytes());
                let header_len = packet.len();
                packet.extend_from_slice(&buf[..n]);
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&seq.to_be_bytes());
                let (header, body) = packet.split_at_mut(header_len);
                let tag = key
                    .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&*header), body)
                    .expect("seal");
                packet.extend_from_slice(tag.as_ref());
                let _ = out.send_to(&packet, destination);
                forwarded += 1;
            }
        }
        (thread_cpu().saturating_sub(cpu0), forwarded)
    });

    // The publisher: `pps` packets/s, paced in 1 ms slots.
    let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let payload = vec![0x5au8; size.max(100)];
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < window {
        let due = (start.elapsed().as_secs_f64() * pps) as u64;
        while sent < due {
            let _ = sender.send_to(&payload, input_addr);
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    running.store(false, Ordering::Relaxed);
    let (cpu, forwarded) = forwarder.join().unwrap_or_default();
    let _ = drain.join();
    cpu.as_secs_f64() * 1e6 / forwarded.max(1) as f64
}

//! UDP transport of the media engine: binding, receive with kernel timestamps, and
//! batched send with `sendmmsg` and UDP GSO.
//!
//! GSO (generic segmentation offload, `UDP_SEGMENT`): a run of datagrams to one
//! destination, all of one size but the last (which may be shorter), leaves in one
//! message; the kernel walks its send path, and on loopback its receive path, once for
//! the run and only cuts the segments at the end. The router drains one player at a time,
//! so a frame's packets to one player sit next to each other in the send queue. The
//! grouping ([`plan`]) is pure; a socket whose kernel or device refuses GSO falls back to
//! one message per datagram for good.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::router::Datagram;

const SOCKET_BUFFER: usize = 4 << 20;
/// Messages handed to the kernel per sendmmsg call.
const MESSAGES_PER_CALL: usize = 64;
/// The kernel's limit of segments in one GSO message (UDP_MAX_SEGMENTS).
const MAX_SEGMENTS: usize = 64;
/// Payload bytes of one GSO message: below the 64 KiB of an IP datagram with headers.
const MAX_GSO_BYTES: usize = 60_000;

pub fn bind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, None)?;
    // Bursts of video (a keyframe is dozens of packets) overflow default buffers.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    // Receive timestamps, for the forwarding latency (see `Received::at`).
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads `on`, an int, as SO_TIMESTAMPNS expects.
    unsafe {
        use std::os::fd::AsRawFd;
        let fd = socket.as_raw_fd();
        let size = std::mem::size_of_val(&on) as libc::socklen_t;
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, &on as *const _ as *const libc::c_void, size);
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// One message of a send: datagrams `range` of the batch, segmented by the kernel at
/// `segment` bytes when the message carries more than one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub range: Range<usize>,
    pub segment: Option<u16>,
}

/// Group `batch` into messages: with `gso`, each maximal run to one destination whose
/// datagrams share the first one's size (the last may be shorter) becomes one message.
pub fn plan(batch: &[Datagram], gso: bool, messages: &mut Vec<Message>) {
    messages.clear();
    let mut start = 0;
    while start < batch.len() {
        let first = &batch[start];
        let size = first.contents.len();
        let mut end = start + 1;
        let mut bytes = size;
        if gso && size > 0 && size <= usize::from(u16::MAX) {
            while end < batch.len() && end - start < MAX_SEGMENTS {
                let next = &batch[end];
                let len = next.contents.len();
                if next.destination != first.destination || len == 0 || len > size || bytes + len > MAX_GSO_BYTES {
                    break;
                }
                bytes += len;
                end += 1;
                if len < size {
                    break; // a shorter datagram ends the run
                }
            }
        }
        let segment = (end - start > 1).then_some(size as u16);
        messages.push(Message { range: start..end, segment });
        start = end;
    }
}

/// What a [`Sender`] has done, for the stats.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SendStats {
    pub datagrams_sent: u64,
    pub messages_sent: u64,
    pub send_calls: u64,
}

/// Sends batches of datagrams from one socket with as few system calls as it can.
pub struct Sender {
    gso: bool,
    messages: Vec<Message>,
    pub stats: SendStats,
}

impl Sender {
    /// `gso`: try UDP GSO (Linux only; dropped for good if the kernel refuses it).
    pub fn new(gso: bool) -> Self {
        Sender { gso: gso && cfg!(target_os = "linux"), messages: Vec::new(), stats: SendStats::default() }
    }

    /// Send every datagram of `batch` (all from `socket`'s address), waiting while the
    /// socket buffer is full. Datagrams the kernel refuses are dropped and logged.
    pub async fn send(&mut self, socket: &UdpSocket, batch: &[Datagram]) {
        plan(batch, self.gso, &mut self.messages);
        let mut next = 0;
        while next < self.messages.len() {
            let messages = &self.messages[next..(next + MESSAGES_PER_CALL).min(self.messages.len())];
            match socket.try_io(Interest::WRITABLE, || sendmmsg(socket, batch, messages)) {
                Ok(n) => {
                    self.stats.send_calls += 1;
                    for m in &messages[..n] {
                        self.stats.datagrams_sent += m.range.len() as u64;
                    }
                    self.stats.messages_sent += n as u64;
                    next += n.max(1);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let _ = socket.writable().await;
                }
                Err(e) if messages[0].segment.is_some() && gso_refused(&e) => {
                    // This kernel or device cannot segment: plan again without GSO.
                    tracing::info!(error = %e, "UDP GSO refused; sending one datagram per message");
                    self.gso = false;
                    let rest = self.messages[next].range.start;
                    return Box::pin(self.send(socket, &batch[rest..])).await;
                }
                Err(e) => {
                    // One bad destination (e.g. unreachable) must not stall the rest.
                    tracing::debug!(destination = %batch[messages[0].range.start].destination, error = %e, "send failed");
                    next += 1;
                }
            }
        }
    }
}

fn gso_refused(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP))
}

/// Room for one `UDP_SEGMENT` control message, aligned as `cmsghdr` needs.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct SegmentCmsg([u8; 32]);

/// Send `messages` (ranges of `batch`) in one system call; returns how many went out.
fn sendmmsg(socket: &UdpSocket, batch: &[Datagram], messages: &[Message]) -> io::Result<usize> {
    let addrs: Vec<socket2::SockAddr> =
        messages.iter().map(|m| socket2::SockAddr::from(batch[m.range.start].destination)).collect();
    let mut iovecs: Vec<libc::iovec> = messages
        .iter()
        .flat_map(|m| &batch[m.range.clone()])
        .map(|d| libc::iovec { iov_base: d.contents.as_ptr() as *mut libc::c_void, iov_len: d.contents.len() })
        .collect();
    let mut controls = vec![SegmentCmsg([0; 32]); messages.len()];
    let mut headers = Vec::with_capacity(messages.len());
    let mut first_iov = 0;
    for ((message, addr), control) in messages.iter().zip(&addrs).zip(&mut controls) {
        // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
        let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
        header.msg_name = addr.as_ptr() as *mut libc::c_void;
        header.msg_namelen = addr.len();
        header.msg_iov = iovecs[first_iov..].as_mut_ptr();
        header.msg_iovlen = message.range.len() as _;
        first_iov += message.range.len();
        if let Some(segment) = message.segment {
            // SAFETY: `control` is 32 aligned bytes, room for CMSG_SPACE(2) (24 on 64-bit
            // Linux); CMSG_FIRSTHDR of a msghdr with that buffer points into it.
            unsafe {
                let space = libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) as usize;
                debug_assert!(space <= control.0.len());
                header.msg_control = control.0.as_mut_ptr() as *mut libc::c_void;
                header.msg_controllen = space as _;
                let cmsg = libc::CMSG_FIRSTHDR(&header);
                (*cmsg).cmsg_level = libc::SOL_UDP;
                (*cmsg).cmsg_type = libc::UDP_SEGMENT;
                (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut u16, segment);
            }
        }
        headers.push(libc::mmsghdr { msg_hdr: header, msg_len: 0 });
    }
    // SAFETY: `headers` points into `addrs`, `iovecs` and `controls` (alive here) and into
    // the datagrams' buffers, which the kernel only reads.
    let n = unsafe { libc::sendmmsg(socket.as_raw_fd(), headers.as_mut_ptr(), headers.len() as libc::c_uint, 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A datagram read from one of the engine's sockets.
pub struct Received {
    /// Index of the socket in the engine's list.
    pub socket: usize,
    pub len: usize,
    pub source: SocketAddr,
    /// When the kernel took it in (SO_TIMESTAMPNS), or when it was read where the kernel
    /// gives no timestamp: the start of the forwarding latency the engine measures.
    pub at: SystemTime,
}

/// Wait for a datagram on any socket.
pub async fn recv_any(sockets: &[(SocketAddr, UdpSocket)], buf: &mut [u8]) -> Received {
    poll_fn(|cx| {
        for (index, (_, socket)) in sockets.iter().enumerate() {
            while let Poll::Ready(Ok(())) = socket.poll_recv_ready(cx) {
                match socket.try_io(Interest::READABLE, || recvmsg(socket, buf)) {
                    Ok((len, source, at)) => return Poll::Ready(Received { socket: index, len, source, at }),
                    // Spurious readiness: poll again, which registers the waker.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    // ICMP errors (port unreachable) surface here: not fatal, read on.
                    Err(_) => continue,
                }
            }
        }
        Poll::Pending
    })
    .await
}

/// A datagram already queued on any socket, without waiting.
pub fn try_recv_any(sockets: &[(SocketAddr, UdpSocket)], buf: &mut [u8]) -> Option<Received> {
    for (index, (_, socket)) in sockets.iter().enumerate() {
        loop {
            match socket.try_io(Interest::READABLE, || recvmsg(socket, buf)) {
                Ok((len, source, at)) => return Some(Received { socket: index, len, source, at }),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // ICMP errors (port unreachable) surface here: not fatal, read on.
                Err(_) => continue,
            }
        }
    }
    None
}

/// One datagram with its source address and the kernel's receive timestamp.
fn recvmsg(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, SystemTime)> {
    // SAFETY: an all-zero msghdr is valid; the pointers set below point
    // at locals that outlive the call, and `buf` is writable for its length.
    unsafe {
        let mut addr = socket2::SockAddrStorage::zeroed();
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: buf.len() };
        let mut control = [0u64; 8];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = &mut addr as *mut _ as *mut libc::c_void;
        msg.msg_namelen = addr.size_of();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        let n = libc::recvmsg(socket.as_raw_fd(), &mut msg, 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let source = socket2::SockAddr::new(addr, msg.msg_namelen)
            .as_socket()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "datagram from a non-IP address"))?;
        let mut at = None;
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::timespec);
                at = Some(UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        Ok((n as usize, source, at.unwrap_or_else(SystemTime::now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(to: u16, len: usize) -> Datagram {
        Datagram {
            source: "127.0.0.1:5000".parse().unwrap(),
            destination: SocketAddr::from(([127, 0, 0, 1], to)),
            contents: vec![7; len],
        }
    }

    fn ranges(batch: &[Datagram], gso: bool) -> Vec<(Range<usize>, Option<u16>)> {
        let mut messages = Vec::new();
        plan(batch, gso, &mut messages);
        messages.into_iter().map(|m| (m.range, m.segment)).collect()
    }

    #[test]
    fn runs_to_one_destination_share_a_message() {
        // A frame of three packets (the last shorter) and an audio packet to player 1,
        // then the same to player 2.
        let batch = [
            datagram(1, 1200),
            datagram(1, 1200),
            datagram(1, 300),
            datagram(1, 120),
            datagram(2, 1200),
            datagram(2, 1200),
            datagram(2, 300),
            datagram(2, 120),
        ];
        assert_eq!(ranges(&batch, true), [(0..3, Some(1200)), (3..4, None), (4..7, Some(1200)), (7..8, None)]);
        let single: Vec<_> = (0..8).map(|i| (i..i + 1, None)).collect();
        assert_eq!(ranges(&batch, false), single);
    }

    #[test]
    fn a_longer_datagram_or_the_limits_end_a_run() {
        let batch = [datagram(1, 100), datagram(1, 200), datagram(1, 100)];
        assert_eq!(ranges(&batch, true), [(0..1, None), (1..3, Some(200))]);
        let many: Vec<_> = (0..70).map(|_| datagram(1, 100)).collect();
        assert_eq!(ranges(&many, true), [(0..64, Some(100)), (64..70, Some(100))]);
        let big: Vec<_> = (0..60).map(|_| datagram(1, 1200)).collect();
        assert_eq!(ranges(&big, true), [(0..50, Some(1200)), (50..60, Some(1200))]);
    }

    /// Through the kernel on loopback: every datagram arrives whole, in order, with GSO
    /// and without.
    #[tokio::test]
    async fn sends_every_datagram_intact() {
        let with = send_seven(true).await;
        if cfg!(target_os = "linux") {
            // Two runs joined by GSO and the lone datagram: three messages in one call.
            assert_eq!((with.messages_sent, with.send_calls), (3, 1));
        }
        let without = send_seven(false).await;
        assert_eq!((without.messages_sent, without.send_calls), (7, 1));
    }

    async fn send_seven(gso: bool) -> SendStats {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let other = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&receiver, &other] {
            s.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        }
        let sender = UdpSocket::from_std(bind("127.0.0.1:0".parse().unwrap()).unwrap()).unwrap();
        let source = sender.local_addr().unwrap();
        let mut batch = Vec::new();
        for (i, len) in [1200, 1200, 1200, 500, 80, 1200, 1200].into_iter().enumerate() {
            let to = if i == 4 { other.local_addr().unwrap() } else { receiver.local_addr().unwrap() };
            let contents = (0..len).map(|b| (b as u8).wrapping_add(i as u8)).collect();
            batch.push(Datagram { source, destination: to, contents });
        }
        let mut tx = Sender::new(gso);
        tx.send(&sender, &batch).await;
        assert_eq!(tx.stats.datagrams_sent, 7);
        let mut buf = [0u8; 2048];
        for (i, d) in batch.iter().enumerate().filter(|(i, _)| *i != 4) {
            let (len, from) = receiver.recv_from(&mut buf).unwrap();
            assert_eq!((from, &buf[..len]), (source, &d.contents[..]), "datagram {i}");
        }
        let (len, _) = other.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..len], &batch[4].contents[..]);
        tx.stats
    }
}

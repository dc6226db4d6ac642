//! TCP connections into the server: caps on how many are open (in all and per client
//! address), deadlines for every phase before a connection does useful work, and the
//! HTTP/1 loop (hyper with a header read timeout) that serves the axum routers.
//!
//! Without these, a client that opens connections and sends half a request holds a file
//! descriptor each, forever: a thousand of them make the server unreachable.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use super::shutdown::StopSignal;

/// The peer address of a connection, for handlers (`ConnectInfo<RemoteAddr>`).
#[derive(Clone, Copy, Debug)]
pub struct RemoteAddr(pub SocketAddr);

/// Open connections, counted in all and per client address.
pub struct Connections {
    max_total: usize,
    max_per_ip: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
    refused: AtomicU64,
}

impl Connections {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Connections { max_total, max_per_ip, open: Mutex::default(), refused: AtomicU64::new(0) })
    }

    /// A permit for one more connection from `ip`, or `None` when a cap is reached.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Permit> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = open.values().sum();
        let from_ip = open.get(&ip).copied().unwrap_or(0);
        if total >= self.max_total || from_ip >= self.max_per_ip {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *open.entry(ip).or_default() += 1;
        Some(Permit { connections: self.clone(), ip })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).values().sum()
    }

    /// Connections refused by a cap so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// One admitted connection; dropping it (with its socket) frees the place.
pub struct Permit {
    connections: Arc<Connections>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.connections.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// A socket that holds its connection's permit for as long as it lives: past an HTTP
/// upgrade too, so WebSocket sessions count until they close.
pub struct Counted<T> {
    io: T,
    _permit: Permit,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// A TCP listener that admits connections within the caps; ones over a cap are closed
/// at once, before any TLS or HTTP work is spent on them.
pub struct LimitedListener {
    tcp: TcpListener,
    connections: Arc<Connections>,
}

impl LimitedListener {
    pub fn new(tcp: TcpListener, connections: Arc<Connections>) -> Self {
        LimitedListener { tcp, connections }
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = Counted<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, remote) = match self.tcp.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors, most likely: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match self.connections.admit(remote.ip()) {
                Some(permit) => {
                    let _ = stream.set_nodelay(true);
                    return (Counted { io: stream, _permit: permit }, remote);
                }
                None => tracing::debug!(%remote, "connection refused: connection cap reached"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Serve `router` over HTTP/1 (with upgrades, for WebSocket) on every connection the
/// listener yields. A connection must send a complete request head within
/// `header_timeout`, the first one and every later one on a kept-alive connection, or
/// it is closed.
///
/// Once the server drains it accepts no more; when it closes, open connections finish
/// the request in hand (an upgraded WebSocket is its session's business).
pub fn serve<L>(mut listener: L, router: Router, header_timeout: Duration, mut stop: StopSignal)
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    tokio::spawn(async move {
        loop {
            let (io, remote) = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop.no_more_connections() => break,
            };
            let router = router.clone();
            let mut stop = stop.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(RemoteAddr(remote)));
                    router.clone().oneshot(request.map(axum::body::Body::new))
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .serve_connection(TokioIo::new(io), service)
                    .with_upgrades();
                tokio::pin!(connection);
                let ended = tokio::select! {
                    ended = connection.as_mut() => ended,
                    _ = stop.stopped() => {
                        connection.as_mut().graceful_shutdown();
                        connection.await
                    }
                };
                if let Err(e) = ended {
                    tracing::debug!(%remote, error = %e, "connection ended");
                }
            });
        }
    });
}

/// Raise this process's soft limit on open files to the hard limit (often 1,024 soft,
/// far more hard): every connection and relay takes one. Returns the new soft limit.
pub fn raise_file_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

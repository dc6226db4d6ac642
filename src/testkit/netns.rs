//! Network faults between servers, for tests: Linux network namespaces (one per server)
//! joined by an impaired link. The link is a TUN device in each namespace and a pump in
//! the test process that carries every IP packet across, applying what `tc netem` and
//! `tbf` would (loss, delay with jitter and so reordering, a rate cap with a bounded
//! queue, a cut that drops everything). The kernels these tests run on may lack netem
//! (`CONFIG_NET_SCH_NETEM` is not set on the VMs here), and one model everywhere keeps
//! the figures comparable. Needs root; everything made is removed on drop.

use std::collections::BinaryHeap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A network namespace made by this process (`ip netns add`), deleted on drop.
pub struct Namespace {
    pub name: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Namespace {
    /// A new namespace with its loopback up. A namespace of the same name left by an
    /// earlier run of this process id is removed first.
    pub fn create(name: &str) -> Result<Namespace, String> {
        let _ = ip(&["netns", "del", name]);
        ip(&["netns", "add", name])?;
        let ns = Namespace { name: name.to_string() };
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Move the calling thread into this namespace: sockets it (and threads it starts)
    /// creates from now on live there.
    pub fn enter(&self) -> Result<(), String> {
        enter(&self.name)
    }

    /// Run `f` on a new thread inside this namespace, and wait for it.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().expect("thread in namespace panicked")
    }

    /// Run `f` on a new thread inside this namespace.
    pub fn spawn<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
        let name = self.name.clone();
        std::thread::spawn(move || {
            enter(&name).expect("enter namespace");
            f()
        })
    }

    /// Run a future to completion on its own runtime inside this namespace (a thread
    /// of its own: its sockets, and the media engine threads it starts, live there).
    pub fn spawn_async<F, T>(&self, make: impl FnOnce() -> F + Send + 'static) -> std::thread::JoinHandle<T>
    where
        F: std::future::Future<Output = T>,
        T: Send + 'static,
    {
        self.spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(make())
        })
    }
}

fn enter(name: &str) -> Result<(), String> {
    let path = format!("/var/run/netns/{name}");
    let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    // SAFETY: setns(2) with a namespace file descriptor we hold open.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns {name}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// What the link does to packets, in each direction alike; change it at any time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Impairment {
    /// Chance of each packet being dropped, 0.0-1.0.
    pub loss: f64,
    pub delay: Duration,
    /// Each packet's delay varies uniformly within ±jitter: packets overtake each other.
    pub jitter: Duration,
    /// A rate cap (bits/s) with a queue holding at most `queue` of sending time; packets
    /// that do not fit are dropped (tbf's tail drop).
    pub rate: Option<u64>,
    pub queue: Duration,
    /// Drop everything (a link that hangs, not a closed socket).
    pub cut: bool,
}

/// Two namespaces joined by an impaired point-to-point link; `a_ip` lives in `a`,
/// `b_ip` in `b` (both in one /24). The pump stops and the devices go on drop.
pub struct Link {
    impairment: Arc<Mutex<Impairment>>,
    stop: Arc<AtomicBool>,
    pumps: Vec<std::thread::JoinHandle<()>>,
    /// Packets carried and dropped so far, both directions.
    pub counts: Arc<Mutex<LinkCounts>>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct LinkCounts {
    pub carried: u64,
    pub dropped: u64,
}

const TUN_NAME: &str = "hclink";

impl Link {
    pub fn between(a: &Namespace, a_ip: &str, b: &Namespace, b_ip: &str) -> Result<Link, String> {
        let fa = a.run(open_tun)?;
        let fb = b.run(open_tun)?;
        for (ns, addr) in [(a, a_ip), (b, b_ip)] {
            ip(&["-n", &ns.name, "addr", "add", &format!("{addr}/24"), "dev", TUN_NAME])?;
            ip(&["-n", &ns.name, "link", "set", TUN_NAME, "up"])?;
        }
        let impairment = Arc::new(Mutex::new(Impairment::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Mutex::new(LinkCounts::default()));
        let (fa, fb) = (Arc::new(fa), Arc::new(fb));
        let mut pumps = Vec::new();
        for (from, to, seed) in [(fa.clone(), fb.clone(), 1u64), (fb, fa, 2u64)] {
            let (impairment, stop, counts) = (impairment.clone(), stop.clone(), counts.clone());
            pumps.push(std::thread::spawn(move || pump(&from, &to, &impairment, &stop, &counts, seed)));
        }
        Ok(Link { impairment, stop, pumps, counts })
    }

    pub fn set(&self, impairment: Impairment) {
        *self.impairment.lock().unwrap_or_else(|p| p.into_inner()) = impairment;
    }

    pub fn counts(&self) -> LinkCounts {
        *self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for pump in self.pumps.drain(..) {
            let _ = pump.join();
        }
    }
}

/// A layer-3 TUN device named [`TUN_NAME`] in the calling thread's namespace.
fn open_tun() -> Result<OwnedFd, String> {
    // SAFETY: open(2) of a path we give; the descriptor is owned at once.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(format!("/dev/net/tun: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fd was just opened and is not owned elsewhere.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // struct ifreq: the name, then flags (a short) in the union.
    let mut ifreq = [0u8; 40];
    ifreq[..TUN_NAME.len()].copy_from_slice(TUN_NAME.as_bytes());
    let flags = (libc::IFF_TUN | libc::IFF_NO_PI) as i16;
    ifreq[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes the 40-byte ifreq we pass.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, ifreq.as_mut_ptr()) } < 0 {
        return Err(format!("TUNSETIFF: {}", std::io::Error::last_os_error()));
    }
    Ok(fd)
}

/// A packet waiting to leave, ordered by its release time (earliest first).
struct Pending {
    at: Instant,
    n: u64,
    bytes: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.n) == (other.at, other.n)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.n).cmp(&(self.at, self.n))
    }
}

/// Carry packets from `from` to `to` until `stop`, impaired.
fn pump(
    from: &OwnedFd,
    to: &OwnedFd,
    impairment: &Mutex<Impairment>,
    stop: &AtomicBool,
    counts: &Mutex<LinkCounts>,
    seed: u64,
) {
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut random = move || {
        // xorshift64*: plenty for loss and jitter draws.
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        (rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut queue: BinaryHeap<Pending> = BinaryHeap::new();
    // When the rate-capped sender is free again.
    let mut sender_free = Instant::now();
    let mut n = 0u64;
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while queue.peek().is_some_and(|p| p.at <= now) {
            let p = queue.pop().expect("peeked");
            // SAFETY: write(2) of a buffer we own to a descriptor we own.
            unsafe { libc::write(to.as_raw_fd(), p.bytes.as_ptr().cast(), p.bytes.len()) };
        }
        let wait = queue.peek().map_or(Duration::from_millis(20), |p| p.at.saturating_duration_since(now));
        let mut poll = libc::pollfd { fd: from.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = wait.as_millis().clamp(0, 20) as i32;
        // SAFETY: poll(2) on one pollfd we own.
        if unsafe { libc::poll(&mut poll, 1, ms) } <= 0 {
            continue;
        }
        loop {
            // SAFETY: read(2) into a buffer we own.
            let len = unsafe { libc::read(from.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if len <= 0 {
                break;
            }
            let now = Instant::now();
            let imp = *impairment.lock().unwrap_or_else(|p| p.into_inner());
            let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
            if imp.cut || random() < imp.loss {
                c.dropped += 1;
                continue;
            }
            let mut leaves = now;
            if let Some(rate) = imp.rate {
                let start = sender_free.max(now);
                if start.duration_since(now) > imp.queue {
                    c.dropped += 1;
                    continue;
                }
                sender_free = start + Duration::from_secs_f64(len as f64 * 8.0 / rate.max(1) as f64);
                leaves = sender_free;
            }
            let jitter = imp.jitter.as_secs_f64() * (2.0 * random() - 1.0);
            let delay = (imp.delay.as_secs_f64() + jitter).max(0.0);
            c.carried += 1;
            n += 1;
            queue.push(Pending { at: leaves + Duration::from_secs_f64(delay), n, bytes: buf[..len as usize].to_vec() });
        }
    }
}

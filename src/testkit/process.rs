//! hopcast as a child process, for the integration tests and the load generator: start
//! it with given flags, learn its ports from the ready line, read its CPU time and
//! memory from /proc, and kill and reap it on drop.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Flags that let the OS pick every port.
pub const ANY_PORTS: [&str; 10] =
    ["--ws-port", "0", "--wss-port", "0", "--http-port", "0", "--https-port", "0", "--media-port", "0"];

pub struct ServerProcess {
    child: Child,
    pub ws: u16,
    pub wss: u16,
    pub http: u16,
    pub https: u16,
    pub media: SocketAddr,
    /// Its stderr (the log).
    pub log: PathBuf,
}

impl ServerProcess {
    /// [`ServerProcess::start`] logging to a new file in `log_dir`, named by this
    /// process's id and a counter (parallel tests and scenarios each get their own).
    pub fn start_in(binary: &Path, args: &[&str], log_dir: &Path, rust_log: &str) -> Result<Self, String> {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::fs::create_dir_all(log_dir).map_err(|e| format!("{}: {e}", log_dir.display()))?;
        let log = log_dir.join(format!("hopcast-{}-{n}.log", std::process::id()));
        Self::start(binary, args, log, rust_log)
    }

    /// Start `binary` with `args` (plus `--ip 127.0.0.1`), logging to `log`.
    pub fn start(binary: &Path, args: &[&str], log: PathBuf, rust_log: &str) -> Result<Self, String> {
        let mut command = Command::new(binary);
        command.args(args).args(["--ip", "127.0.0.1"]);
        Self::spawn(command, log, rust_log)
    }

    /// Start `binary` inside network namespace `ns` (`ip netns exec`, which execs it: the
    /// process id is the server's), advertising `ip`.
    pub fn start_in_namespace(
        ns: &str,
        ip: &str,
        binary: &Path,
        args: &[&str],
        log_dir: &Path,
        rust_log: &str,
    ) -> Result<Self, String> {
        std::fs::create_dir_all(log_dir).map_err(|e| format!("{}: {e}", log_dir.display()))?;
        let log = log_dir.join(format!("hopcast-{}-{ns}.log", std::process::id()));
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns]).arg(binary).args(args).args(["--ip", ip]);
        Self::spawn(command, log, rust_log)
    }

    fn spawn(mut command: Command, log: PathBuf, rust_log: &str) -> Result<Self, String> {
        let stderr = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut child = command
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", command.get_program()))?;
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        let _ = BufReader::new(stdout).read_line(&mut line);
        if !line.starts_with("hopcast ready") {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("server did not start ({:?}); log: {}", line.trim(), log.display()));
        }
        let field = |name: &str| -> Option<String> {
            line.split_whitespace().find_map(|f| f.strip_prefix(&format!("{name}="))).map(str::to_string)
        };
        let port = |name: &str| field(name).and_then(|p| p.parse().ok()).unwrap_or(0);
        let media =
            field("media").and_then(|m| m.split(',').next()?.parse().ok()).unwrap_or(([127, 0, 0, 1], 0).into());
        Ok(ServerProcess {
            ws: port("ws"),
            wss: port("wss"),
            http: port("http"),
            https: port("https"),
            media,
            log,
            child,
        })
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.ws)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Send SIGTERM and wait up to `within` for the process to exit; its exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: kill(2) on our own child's PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// A REST call to this server: (HTTP status, body).
    pub fn rest(&self, method: &str, body: &str) -> (u16, String) {
        http_request(self.http, "POST", &format!("/rest-api/{method}"), Some(body))
    }

    /// The media engine's counters from `/rest-api/stats` (the `media` object).
    pub fn media_stats(&self) -> Option<serde_json::Value> {
        let (code, body) = http_request(self.http, "GET", "/rest-api/stats", None);
        let stats: serde_json::Value = serde_json::from_str(&body).ok().filter(|_| code == 200)?;
        stats.get("media").cloned()
    }

    /// User + system CPU time the process has used so far.
    pub fn cpu_time(&self) -> Option<Duration> {
        cpu_time(self.pid())
    }

    /// Resident memory in bytes.
    pub fn rss(&self) -> Option<u64> {
        rss(self.pid())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Resident memory of process `pid`, bytes (VmRSS).
pub fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// CPU time a process has used: the sum of its threads' run time from
/// /proc/PID/task/*/schedstat (nanoseconds), or utime + stime from /proc/PID/stat
/// (10 ms ticks) where schedstat is missing.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let ns: u64 = thread_schedstats(pid).iter().map(|(_, [run, _, _])| run).sum();
    if ns > 0 {
        return Some(Duration::from_nanos(ns));
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the ")" that ends the command name: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// A latency histogram in a [`ServerProcess::media_stats`] answer, by its name there
/// (`forwardLatency`, `readLatency`; see `MediaStats`); empty if missing.
pub fn latency_in(media: &serde_json::Value, name: &str) -> crate::media::latency::Histogram {
    media
        .get(name)
        .and_then(|h| serde_json::from_value(h.clone()).ok())
        .map(|snapshot| crate::media::latency::Histogram::from_snapshot(&snapshot))
        .unwrap_or_default()
}

/// Scheduler figures of the threads of `pid` named `name` (e.g. "hopcast-media"):
/// (time run, time spent runnable but waiting for a CPU, times scheduled), summed.
pub fn thread_schedstat(pid: u32, name: &str) -> Option<(Duration, Duration, u64)> {
    let named: Vec<[u64; 3]> = thread_schedstats(pid).into_iter().filter(|(n, _)| n == name).map(|(_, v)| v).collect();
    let sum = |i: usize| named.iter().map(|v| v[i]).sum::<u64>();
    (!named.is_empty()).then(|| (Duration::from_nanos(sum(0)), Duration::from_nanos(sum(1)), sum(2)))
}

/// Each thread of `pid` as (name, [run ns, runnable-but-waiting ns, times scheduled]),
/// from /proc/PID/task/*/{comm,schedstat}; threads that vanish meanwhile are skipped.
fn thread_schedstats(pid: u32) -> Vec<(String, [u64; 3])> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    tasks
        .flatten()
        .filter_map(|task| {
            let name = std::fs::read_to_string(task.path().join("comm")).ok()?.trim().to_string();
            let stat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
            let mut fields = stat.split_whitespace().map(|f| f.parse::<u64>().ok());
            Some((name, [fields.next()??, fields.next()??, fields.next()??]))
        })
        .collect()
}

/// SIGSTOP `pid` and wait until every one of its threads is stopped: the signal takes
/// effect thread by thread, and on a loaded machine a thread can still answer a message
/// a few milliseconds after `kill` returned (seen in tests/shutdown.rs). False if some
/// thread is still running after 5 s.
pub fn stop_process(pid: u32) -> bool {
    // SAFETY: kill(2) with a valid signal; the caller names a process it started.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    let stopped = || {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
        tasks.flatten().all(|task| {
            // The state is the field after the ")" that ends the thread's name.
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            stat.rfind(')').and_then(|end| stat[end + 1..].split_whitespace().next()) == Some("T")
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !stopped() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// A minimal HTTP/1.1 request to 127.0.0.1:`port`: (status, body); (0, error) on failure.
pub fn http_request(port: u16, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let (status, _, body) = http_exchange(port, method, path, &[], body);
    (status, body)
}

/// [`http_request`] with extra headers (a JSON content type unless one is given);
/// returns (status, response head, body).
pub fn http_exchange(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String, String) {
    use std::io::{Read, Write};
    let attempt = || -> std::io::Result<(u16, String, String)> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(40)))?;
        let body = body.unwrap_or("");
        let mut extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
            extra.push_str("Content-Type: application/json\r\n");
        }
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes())?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        Ok((status, head.to_string(), body.to_string()))
    };
    attempt().unwrap_or_else(|e| (0, String::new(), e.to_string()))
}

/// A nats-server child process on a free loopback port, killed on drop.
pub struct NatsServer {
    child: std::process::Child,
    pub port: u16,
    pub url: String,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Self::start_on(port)
    }

    /// On a given port (a restart on the same address).
    pub fn start_on(port: u16) -> NatsServer {
        let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("nats-server is missing: apt-get install nats-server (see README)");
        let child = std::process::Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        NatsServer { child, port, url: format!("nats://127.0.0.1:{port}") }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! Server configuration: WCS's `flashphoner.properties` (Java properties syntax) with
//! WCS key names where WCS has them, embedded defaults for every key, and command-line
//! overrides on top (`--set key=value`, or the dedicated flags in `main`).
//!
//! Parsing is pure: `Config::from_properties` takes text, returns the config plus the
//! unknown keys (a real WCS file has hundreds) so the caller can warn once.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

/// Every key hopcast reads, with its default and meaning. README's table mirrors this.
pub const KEYS: &[(&str, &str, &str)] = &[
    ("ws.port", "8080", "WebSocket signaling (ws://)"),
    ("wss.port", "8443", "WebSocket signaling over TLS (wss://)"),
    ("http.port", "8081", "REST API and web pages (http://)"),
    ("https.port", "8444", "REST API and web pages over TLS (https://)"),
    (
        "media_port_from",
        "31000",
        "first UDP port tried for the media sockets (all peers of a media thread share one port)",
    ),
    ("media_port_to", "32000", "last UDP port tried for the media socket"),
    ("media.threads", "0", "media threads, each with its own UDP port from the media port range; 0: one per core"),
    (
        "media.spread_after",
        "32",
        "consumers of a stream served by its home media thread before further ones spread over all threads",
    ),
    (
        "media.gso",
        "true",
        "send runs of packets to one peer as one UDP GSO message (falls back by itself where the kernel refuses)",
    ),
    ("ip", "", "IP advertised in ICE candidates; empty: the host's outbound IP plus 127.0.0.1"),
    ("ip_local", "", "IP the media socket binds to; empty: the same as `ip`"),
    ("tls.cert", "", "PEM certificate chain for wss/https; empty: a self-signed one made at start"),
    ("tls.key", "", "PEM private key for tls.cert"),
    ("wcs_agent_ssl", "false", "relay agents connect to remote servers with wss:// instead of ws://"),
    ("wcs_agent_ssl_ca_file", "", "PEM CA bundle trusted by relay agents over wss://; empty: system roots"),
    ("keep_alive.enabled", "true", "server pings each WebSocket session"),
    ("keep_alive.server_interval", "5000", "milliseconds between server pings"),
    ("keep_alive.probes", "10", "unanswered intervals before a session is dropped"),
    ("ws.max_message_size", "1048576", "largest accepted signaling frame, bytes"),
    ("relay.reconnect_max_ms", "10000", "longest pause between relay reconnect attempts"),
    ("limits.connections", "10000", "open TCP connections (all ports together); at most the open-file limit less 256"),
    (
        "limits.connections_per_ip",
        "1000",
        "open TCP connections from one client address; at most half of limits.connections",
    ),
    (
        "limits.handshake_timeout_ms",
        "10000",
        "milliseconds a connection may take for a TLS handshake, a request head, or the first `connection` message",
    ),
    ("limits.session_queue", "1024", "signaling messages queued for a client that does not read before it is dropped"),
    ("limits.sdp_size", "65536", "largest SDP offer or answer accepted, bytes"),
    ("limits.sdp_lines", "1000", "most lines in an SDP offer or answer"),
    ("limits.name_length", "512", "longest stream name, bytes"),
    ("limits.custom_size", "16384", "largest client data a `connection` message may carry (its JSON), bytes"),
    ("limits.connecting_per_ip", "64", "WebRTC peers still connecting from one client address"),
    ("limits.relays", "100", "relays this server runs (push and pull together)"),
    ("limits.relays_per_stream", "10", "push relays of one local stream"),
    (
        "rest.cors_origins",
        "*",
        "origins whose pages may call the REST API (comma-separated; * any, empty none); never with credentials",
    ),
    ("rest.token", "", "bearer token the REST API requires (Authorization: Bearer ...); empty: none (see rest.basic)"),
    ("rest.basic", "", "user:password the REST API accepts as HTTP Basic credentials; empty: none"),
    (
        "relay.allow",
        "*",
        "where /pull/push and /pull/pull may connect: * any, or comma-separated host, host:port, *.domain, cluster",
    ),
    (
        "relay.custom",
        "{}",
        "JSON object relay agents send as `custom` in their `connection` (a remote's REST hooks see it)",
    ),
    ("hooks.url", "", "REST hooks: the backend URL every appKey uses (http:// or https://); empty: hooks off"),
    ("hooks.apps", "", "REST hooks per appKey: comma-separated appKey=URL, used before hooks.url"),
    ("rest_request_timeout", "15000", "milliseconds a REST hook may take to answer"),
    (
        "hooks.on_error",
        "FAIL",
        "when the backend does not answer (down, timeout): FAIL refuses, LOG lets the client through",
    ),
    ("web.dir", "", "serve the web apps from this folder instead of the copies built in"),
    ("cdn_enabled", "false", "join the cluster (WCS CDN): nodes and streams are found through NATS"),
    ("cdn_role", "edge", "this node's role in the cluster: origin, edge, or origin,edge"),
    ("cdn_ip", "", "the address other nodes dial for relays to this node; empty: `ip`, else 127.0.0.1"),
    ("cdn_nodes_timeout", "10", "seconds after which a silent node, and its streams, leave the cluster"),
    (
        "cdn.nats_url",
        "nats://127.0.0.1:4222",
        "NATS server(s) the cluster meets on (comma-separated, for a NATS cluster)",
    ),
    ("cdn.pull_linger_ms", "5000", "milliseconds an edge keeps a pulled stream after its last player left"),
    (
        "cdn.pull_hold_ms",
        "30000",
        "milliseconds an edge's players wait for a stream whose origin was lost to reappear in the cluster",
    ),
    ("memory.trim", "true", "give freed heap back to the OS after sessions end (glibc malloc_trim)"),
    ("log.format", "text", "text (for people) or json (one JSON object per line, for log stores)"),
    (
        "shutdown.grace_ms",
        "5000",
        "milliseconds a stopping server (SIGTERM/SIGINT) gives its clients and relay remotes before it exits",
    ),
];

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub ws_port: u16,
    pub wss_port: u16,
    pub http_port: u16,
    pub https_port: u16,
    pub media_port_from: u16,
    pub media_port_to: u16,
    pub media_gso: bool,
    /// Media threads; 0 means one per core.
    pub media_threads: usize,
    pub media_spread_after: usize,
    /// Advertised IPs; empty means "detect".
    pub ip: Option<IpAddr>,
    pub ip_local: Option<IpAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub agent_ssl: bool,
    pub agent_ssl_ca_file: Option<PathBuf>,
    pub keep_alive: Option<KeepAlive>,
    pub max_message_size: usize,
    pub relay_reconnect_max: Duration,
    pub web_dir: Option<PathBuf>,
    pub memory_trim: bool,
    /// How long a graceful stop may take.
    pub shutdown_grace: Duration,
    /// `log.format=json`: one JSON object per line.
    pub log_json: bool,
    /// The cluster, when `cdn_enabled`.
    pub cdn: Option<Cdn>,
    pub limits: Limits,
    /// Origins allowed by CORS; `None`: any (`*`).
    pub cors_origins: Option<Vec<String>>,
    pub access: Access,
}

/// Who may do what (README's "Security" section).
#[derive(Debug, Clone, PartialEq)]
pub struct Access {
    /// REST hooks, when a backend is configured.
    pub hooks: Option<Hooks>,
    /// `rest.token`.
    pub rest_token: Option<String>,
    /// `rest.basic` (user, password).
    pub rest_basic: Option<(String, String)>,
    pub relay_targets: crate::access::targets::RelayTargets,
    /// `relay.custom`: what relay agents put in `custom`.
    pub relay_custom: serde_json::Map<String, serde_json::Value>,
}

/// REST hooks (WCS's, see `access::hooks`).
#[derive(Debug, Clone, PartialEq)]
pub struct Hooks {
    /// The backend for appKeys without their own.
    pub url: Option<String>,
    /// (appKey, backend URL).
    pub apps: Vec<(String, String)>,
    pub timeout: Duration,
    /// `hooks.on_error=FAIL`: a backend that does not answer refuses.
    pub fail_on_error: bool,
}

/// The cluster settings (WCS's CDN keys, plus where NATS is).
#[derive(Debug, Clone, PartialEq)]
pub struct Cdn {
    pub origin: bool,
    pub edge: bool,
    /// Address other nodes dial for relays to this node.
    pub ip: IpAddr,
    pub nodes_timeout: Duration,
    pub nats_urls: Vec<String>,
    pub pull_linger: Duration,
    /// How long players of a pull whose origin was lost wait for the stream to come back.
    pub pull_hold: Duration,
}

/// Bounds on what one client can make the server hold (README's "Limits" table).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub connections: usize,
    pub connections_per_ip: usize,
    pub handshake_timeout: Duration,
    pub session_queue: usize,
    pub sdp_size: usize,
    pub sdp_lines: usize,
    pub name_length: usize,
    pub custom_size: usize,
    pub connecting_per_ip: usize,
    pub relays: usize,
    pub relays_per_stream: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeepAlive {
    pub interval: Duration,
    pub probes: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub key: String,
    pub value: String,
    pub expected: &'static str,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "configuration key '{}': bad value '{}' ({} expected)", self.key, self.value, self.expected)
    }
}
impl std::error::Error for ConfigError {}

impl Default for Config {
    fn default() -> Self {
        Self::from_map(&BTreeMap::new()).expect("embedded defaults are valid")
    }
}

/// Parse Java properties text: `key=value`, `key: value` or `key value`; `#` and `!`
/// comments; a trailing backslash continues a line. Later keys win.
pub fn parse_properties(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut logical = String::new();
    for raw in text.lines() {
        let line = raw.trim_start();
        if logical.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with('!')) {
            continue;
        }
        let continued = line.ends_with('\\') && !line.ends_with("\\\\");
        logical.push_str(if continued { &line[..line.len() - 1] } else { line });
        if continued {
            continue;
        }
        let entry = std::mem::take(&mut logical);
        let split = entry.find(['=', ':', ' ', '\t']).unwrap_or(entry.len());
        let key = entry[..split].trim().to_string();
        let mut value = entry[split..].trim_start();
        if let Some(rest) = value.strip_prefix(['=', ':']) {
            value = rest.trim_start();
        }
        if !key.is_empty() {
            out.insert(key, value.trim_end().to_string());
        }
    }
    out
}

impl Config {
    /// Config from properties text; returns the config and the keys it does not know.
    pub fn from_properties(text: &str) -> Result<(Config, Vec<String>), ConfigError> {
        let map = parse_properties(text);
        let unknown = map.keys().filter(|k| !KEYS.iter().any(|(known, _, _)| known == k)).cloned().collect();
        Ok((Self::from_map(&map)?, unknown))
    }

    /// Build from key/value pairs; missing keys take their embedded default.
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
        let get = |key: &str| -> String {
            map.get(key).cloned().unwrap_or_else(|| {
                KEYS.iter().find(|(k, _, _)| *k == key).map(|(_, d, _)| d.to_string()).unwrap_or_default()
            })
        };
        let bad = |key: &str, expected: &'static str| ConfigError { key: key.into(), value: get(key), expected };
        let port = |key: &str| get(key).trim().parse::<u16>().map_err(|_| bad(key, "a port number 0-65535"));
        let ip = |key: &str| -> Result<Option<IpAddr>, ConfigError> {
            let v = get(key);
            if v.trim().is_empty() {
                return Ok(None);
            }
            v.trim().parse().map(Some).map_err(|_| bad(key, "an IP address"))
        };
        let boolean = |key: &str| match get(key).trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(true),
            "false" | "no" | "off" | "0" => Ok(false),
            _ => Err(bad(key, "true or false")),
        };
        let number = |key: &str| get(key).trim().parse::<u64>().map_err(|_| bad(key, "a whole number"));
        let positive = |key: &str| match number(key) {
            Ok(0) | Err(_) => Err(bad(key, "a positive whole number")),
            Ok(n) => Ok(n.min(usize::MAX as u64) as usize),
        };
        let path = |key: &str| Some(get(key)).filter(|v| !v.trim().is_empty()).map(PathBuf::from);

        let media_port_from = port("media_port_from")?;
        let media_port_to = port("media_port_to")?;
        if media_port_to < media_port_from {
            return Err(bad("media_port_to", "a port not below media_port_from"));
        }
        let interval = number("keep_alive.server_interval")?;
        if interval == 0 {
            return Err(bad("keep_alive.server_interval", "a positive number of milliseconds"));
        }
        let probes = number("keep_alive.probes")?;
        let keep_alive = boolean("keep_alive.enabled")?
            .then(|| KeepAlive { interval: Duration::from_millis(interval), probes: probes.max(1) as u32 });
        let tls_cert = path("tls.cert");
        let tls_key = path("tls.key");
        if tls_cert.is_some() != tls_key.is_some() {
            return Err(bad(
                if tls_cert.is_some() { "tls.key" } else { "tls.cert" },
                "tls.cert and tls.key set together",
            ));
        }
        let max_message_size = number("ws.max_message_size")? as usize;
        if max_message_size < 1024 {
            return Err(bad("ws.max_message_size", "at least 1024 bytes"));
        }
        Ok(Config {
            ws_port: port("ws.port")?,
            wss_port: port("wss.port")?,
            http_port: port("http.port")?,
            https_port: port("https.port")?,
            media_port_from,
            media_port_to,
            media_gso: boolean("media.gso")?,
            media_threads: number("media.threads")?.min(256) as usize,
            media_spread_after: number("media.spread_after")?.min(1 << 20) as usize,
            ip: ip("ip")?,
            ip_local: ip("ip_local")?,
            tls_cert,
            tls_key,
            agent_ssl: boolean("wcs_agent_ssl")?,
            agent_ssl_ca_file: path("wcs_agent_ssl_ca_file"),
            keep_alive,
            max_message_size,
            relay_reconnect_max: Duration::from_millis(number("relay.reconnect_max_ms")?.max(100)),
            web_dir: path("web.dir"),
            memory_trim: boolean("memory.trim")?,
            shutdown_grace: Duration::from_millis(number("shutdown.grace_ms")?.max(100)),
            log_json: match get("log.format").as_str() {
                "text" => false,
                "json" => true,
                _ => return Err(bad("log.format", "text or json")),
            },
            cdn: match boolean("cdn_enabled")? {
                false => None,
                true => {
                    let roles: Vec<String> =
                        get("cdn_role").split(',').map(|r| r.trim().to_ascii_lowercase()).collect();
                    let known = roles.iter().all(|r| r == "origin" || r == "edge");
                    if roles.is_empty() || !known {
                        return Err(bad("cdn_role", "origin, edge, or origin,edge"));
                    }
                    let urls: Vec<String> = get("cdn.nats_url")
                        .split(',')
                        .map(|u| u.trim().to_string())
                        .filter(|u| !u.is_empty())
                        .collect();
                    if urls.is_empty() || urls.iter().any(|u| !u.contains("://")) {
                        return Err(bad("cdn.nats_url", "nats://host:port (comma-separated)"));
                    }
                    let seconds = number("cdn_nodes_timeout")?;
                    if seconds == 0 {
                        return Err(bad("cdn_nodes_timeout", "a positive number of seconds"));
                    }
                    Some(Cdn {
                        origin: roles.iter().any(|r| r == "origin"),
                        edge: roles.iter().any(|r| r == "edge"),
                        ip: ip("cdn_ip")?.or(ip("ip")?).unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                        nodes_timeout: Duration::from_secs(seconds),
                        nats_urls: urls,
                        pull_linger: Duration::from_millis(number("cdn.pull_linger_ms")?),
                        pull_hold: Duration::from_millis(number("cdn.pull_hold_ms")?),
                    })
                }
            },
            limits: Limits {
                connections: positive("limits.connections")?,
                connections_per_ip: positive("limits.connections_per_ip")?,
                handshake_timeout: Duration::from_millis(positive("limits.handshake_timeout_ms")? as u64),
                session_queue: positive("limits.session_queue")?,
                sdp_size: positive("limits.sdp_size")?,
                sdp_lines: positive("limits.sdp_lines")?,
                name_length: positive("limits.name_length")?,
                custom_size: positive("limits.custom_size")?,
                connecting_per_ip: positive("limits.connecting_per_ip")?,
                relays: number("limits.relays")? as usize,
                relays_per_stream: number("limits.relays_per_stream")? as usize,
            },
            cors_origins: {
                let origins: Vec<String> =
                    get("rest.cors_origins").split(',').map(|o| o.trim().trim_end_matches('/').to_string()).collect();
                (!origins.iter().any(|o| o == "*")).then(|| origins.into_iter().filter(|o| !o.is_empty()).collect())
            },
            access: Access {
                hooks: {
                    let url = |key: &str, v: &str| -> Result<String, ConfigError> {
                        let v = v.trim().trim_end_matches('/');
                        match v.starts_with("http://") || v.starts_with("https://") {
                            true if v.parse::<axum::http::Uri>().is_ok() => Ok(v.to_string()),
                            _ => Err(bad(key, "http:// or https:// URLs")),
                        }
                    };
                    let default = Some(get("hooks.url")).filter(|v| !v.trim().is_empty());
                    let default = default.map(|v| url("hooks.url", &v)).transpose()?;
                    let mut apps = Vec::new();
                    for entry in get("hooks.apps").split(',').filter(|e| !e.trim().is_empty()) {
                        let (app, target) =
                            entry.split_once('=').ok_or_else(|| bad("hooks.apps", "appKey=URL pairs"))?;
                        apps.push((app.trim().to_string(), url("hooks.apps", target)?));
                    }
                    let fail_on_error = match get("hooks.on_error").trim().to_ascii_uppercase().as_str() {
                        "FAIL" => true,
                        "LOG" => false,
                        _ => return Err(bad("hooks.on_error", "FAIL or LOG")),
                    };
                    let timeout = Duration::from_millis(positive("rest_request_timeout")? as u64);
                    (default.is_some() || !apps.is_empty()).then_some(Hooks {
                        url: default,
                        apps,
                        timeout,
                        fail_on_error,
                    })
                },
                rest_token: Some(get("rest.token").trim().to_string()).filter(|t| !t.is_empty()),
                rest_basic: match get("rest.basic").trim() {
                    "" => None,
                    v => match v.split_once(':') {
                        Some((user, password)) if !user.is_empty() && !password.is_empty() => {
                            Some((user.to_string(), password.to_string()))
                        }
                        _ => return Err(bad("rest.basic", "user:password")),
                    },
                },
                relay_targets: crate::access::targets::RelayTargets::parse(&get("relay.allow"))
                    .map_err(|_| bad("relay.allow", "*, or comma-separated host, host:port, *.domain or cluster"))?,
                relay_custom: match serde_json::from_str(&get("relay.custom")) {
                    Ok(serde_json::Value::Object(m)) => m,
                    _ => return Err(bad("relay.custom", "a JSON object")),
                },
            },
        })
    }

    /// Media threads to start: `media.threads`, or one per core for 0.
    pub fn media_threads(&self) -> usize {
        match self.media_threads {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        }
    }

    /// The media socket's (bind, advertised) address pairs, without ports.
    /// Explicit `ip`/`ip_local` give one pair; otherwise the host's outbound IP (if it
    /// has one) and loopback, so both remote and local browsers can connect.
    pub fn media_ips(&self) -> Vec<(IpAddr, IpAddr)> {
        match (self.ip, self.ip_local) {
            (Some(ip), local) => vec![(local.unwrap_or(ip), ip)],
            (None, Some(local)) => vec![(local, local)],
            (None, None) => {
                let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
                let mut ips = vec![(loopback, loopback)];
                if let Some(outbound) = outbound_ip().filter(|ip| !ip.is_loopback()) {
                    ips.insert(0, (outbound, outbound));
                }
                ips
            }
        }
    }
}

/// The source address the kernel picks toward a public address. A UDP `connect`
/// sends nothing; it only asks the routing table.
fn outbound_ip() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    socket.local_addr().ok().map(|a| a.ip()).filter(|ip| !ip.is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_are_wcs_ports() {
        let c = Config::default();
        assert_eq!((c.ws_port, c.wss_port, c.http_port, c.https_port), (8080, 8443, 8081, 8444));
        assert!(!c.agent_ssl);
        assert_eq!(c.keep_alive.unwrap().interval, Duration::from_secs(5));
    }

    #[test]
    fn parses_java_properties_syntax() {
        let text = "# comment\n! also comment\nws.port = 9080\nhttp.port:9081\nwcs_agent_ssl true\n\
                    ip=10.0.0.\\\n  5\nrtmp_port=1935\n";
        let (c, unknown) = Config::from_properties(text).unwrap();
        assert_eq!((c.ws_port, c.http_port), (9080, 9081));
        assert!(c.agent_ssl);
        assert_eq!(c.ip, Some("10.0.0.5".parse().unwrap()));
        assert_eq!(unknown, vec!["rtmp_port".to_string()]);
    }

    #[test]
    fn bad_value_names_the_key() {
        let e = Config::from_properties("wss.port=eighty").unwrap_err();
        assert_eq!(e.key, "wss.port");
        assert!(e.to_string().contains("wss.port") && e.to_string().contains("eighty"));
        assert_eq!(Config::from_properties("wcs_agent_ssl=maybe").unwrap_err().key, "wcs_agent_ssl");
        assert_eq!(Config::from_properties("ip=not-an-ip").unwrap_err().key, "ip");
        assert_eq!(Config::from_properties("tls.cert=/x.pem").unwrap_err().key, "tls.key");
    }

    #[test]
    fn explicit_ip_gives_one_media_address() {
        let (c, _) = Config::from_properties("ip=203.0.113.7\nip_local=10.1.1.1").unwrap();
        assert_eq!(c.media_ips(), vec![("10.1.1.1".parse().unwrap(), "203.0.113.7".parse().unwrap())]);
        assert!(Config::default().media_ips().iter().any(|(_, adv)| adv.is_loopback()));
    }
}

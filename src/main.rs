//! `hopcast`: run the media server.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use hopcast::config::{parse_properties, Config, KEYS};

/// WebRTC media server, wire-compatible with Flashphoner WCS streaming.
///
/// Settings come from flashphoner.properties (WCS key names); flags override the file;
/// with no file the embedded defaults apply. See README.md for every key.
#[derive(Parser)]
#[command(version, after_help = keys_help())]
struct Args {
    /// flashphoner.properties to read [default: ./flashphoner.properties if it exists]
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// WebSocket signaling port (ws.port; 0 picks a free one)
    #[arg(long)]
    ws_port: Option<u16>,
    /// Secure WebSocket port (wss.port)
    #[arg(long)]
    wss_port: Option<u16>,
    /// REST/HTTP port (http.port)
    #[arg(long)]
    http_port: Option<u16>,
    /// REST/HTTPS port (https.port)
    #[arg(long)]
    https_port: Option<u16>,
    /// The UDP media port (media_port_from = media_port_to; N media threads use it and the N-1 after it)
    #[arg(long)]
    media_port: Option<u16>,
    /// IP advertised to WebRTC peers (ip)
    #[arg(long)]
    ip: Option<String>,
    /// Any configuration key, as KEY=VALUE (repeatable)
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

fn keys_help() -> String {
    let mut s = String::from("Configuration keys (file or --set), with defaults:\n");
    for (key, default, what) in KEYS {
        s.push_str(&format!("  {key}={default}\n      {what}\n"));
    }
    s
}

fn settings(args: &Args) -> Result<BTreeMap<String, String>, String> {
    let path = args.config.clone().or_else(|| Some(PathBuf::from("flashphoner.properties")).filter(|p| p.exists()));
    let mut map = BTreeMap::new();
    if let Some(path) = path {
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        map = parse_properties(&text);
    }
    let flags = [
        ("ws.port", args.ws_port.map(|p| p.to_string())),
        ("wss.port", args.wss_port.map(|p| p.to_string())),
        ("http.port", args.http_port.map(|p| p.to_string())),
        ("https.port", args.https_port.map(|p| p.to_string())),
        ("media_port_from", args.media_port.map(|p| p.to_string())),
        ("media_port_to", args.media_port.map(|p| p.to_string())),
        ("ip", args.ip.clone()),
    ];
    for (key, value) in flags {
        if let Some(value) = value {
            map.insert(key.to_string(), value);
        }
    }
    for kv in &args.set {
        let (k, v) = kv.split_once('=').ok_or_else(|| format!("--set expects KEY=VALUE, got '{kv}'"))?;
        map.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(map)
}

/// WCS's own CDN wiring, which NATS replaces here.
const WCS_CDN_KEYS: [&str; 4] = ["cdn_point_of_entry", "cdn_port", "cdn_groups", "cdn_nodes_resolve_ip"];

fn main() -> ExitCode {
    let args = Args::parse();
    let settings = settings(&args);
    // The log's format is a setting, so the settings are read before anything is logged.
    let json = matches!(&settings, Ok(map) if map.get("log.format").is_some_and(|f| f.trim() == "json"));
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        // One object per line: the event's fields at the top level, the spans it happened
        // in (a session's id, a relay's) under "spans".
        logs.json().flatten_event(true).with_current_span(false).with_span_list(true).init();
    } else {
        logs.init();
    }
    let config = settings.and_then(|map| {
        let unknown: Vec<&String> = map.keys().filter(|k| !KEYS.iter().any(|(known, _, _)| known == k)).collect();
        let wcs_cdn: Vec<&&String> = unknown.iter().filter(|k| WCS_CDN_KEYS.contains(&k.as_str())).collect();
        if !wcs_cdn.is_empty() {
            tracing::warn!(keys = ?wcs_cdn, "WCS CDN keys have no use here: hopcast nodes meet through NATS (cdn.nats_url), not through a point of entry");
        }
        if !unknown.is_empty() {
            tracing::warn!(keys = ?unknown, "ignoring configuration keys hopcast does not use");
        }
        Config::from_map(&map).map_err(|e| e.to_string())
    });
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hopcast: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        // Before the ready line: a signal that arrives once we said we are up must stop
        // us gracefully, not kill us (a handler is only installed when first asked for).
        let mut signals = match Signals::install() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("hopcast: signal handlers: {e}");
                return ExitCode::from(1);
            }
        };
        match hopcast::server::start(config).await {
            Ok(server) => {
                println!("{}", server.ready_line());
                tracing::info!(
                    ws = %server.ws, wss = %server.wss, http = %server.http, https = %server.https,
                    media = ?server.media, "hopcast started"
                );
                signals.next().await;
                tracing::info!("stopping (a second signal exits at once)");
                tokio::select! {
                    _ = server.stop() => {
                        tracing::info!("stopped");
                        ExitCode::SUCCESS
                    }
                    _ = signals.next() => {
                        tracing::warn!("second signal: exiting now");
                        // Not a return: dropping the runtime would wait for its tasks.
                        std::process::exit(130)
                    }
                }
            }
            Err(e) => {
                eprintln!("hopcast: {e}");
                ExitCode::from(1)
            }
        }
    })
}

/// SIGTERM and SIGINT, listened for from start-up on.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

//! Wiring: start the media engine, the hub, and the four listeners (ws, wss, http,
//! https) from a [`Config`]; report the addresses actually bound.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::access::credential::Credential;
use crate::access::hooks::Hooks;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::media::engine;
use crate::monitor;
use crate::net::listener::{self, Connections, LimitedListener};
use crate::net::shutdown::Shutdown;
use crate::net::tls;
use crate::relay::{AgentConfig, RelayManager};
use crate::state::hub::Hub;
use crate::wcs::rest;
use crate::wcs::signaling::{self, SignalingState};
use crate::web;
use crate::whip;

pub struct RunningServer {
    /// Stops the listeners and sessions (see [`RunningServer::stop`]).
    shutdown: Shutdown,
    grace: std::time::Duration,
    pub ws: SocketAddr,
    pub wss: SocketAddr,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub media: Vec<SocketAddr>,
    pub hub: Arc<Hub>,
    pub relays: Arc<RelayManager>,
    pub cluster: Option<Arc<Cluster>>,
}

impl RunningServer {
    /// A graceful stop, within `shutdown.grace_ms`: accept no more connections; leave
    /// the cluster (edges look for another origin at once); end every relay (each
    /// unpublishes on its remote, or stops playing there); end every stream, each
    /// client told why (publishers UNPUBLISHED, players STOPPED, "Stopped by server
    /// shutdown"); then close every session (1001) once it has sent what it holds.
    pub async fn stop(self) {
        let deadline = tokio::time::Instant::now() + self.grace;
        self.shutdown.stop_accepting();
        // New streams are refused from here on.
        self.hub.refuse_new_streams();
        if let Some(cluster) = &self.cluster {
            let _ = tokio::time::timeout_at(deadline, cluster.leave()).await;
        }
        let why = crate::wcs::protocol::reason::SERVER_SHUTDOWN;
        // Keep a share of the grace for the sessions' goodbyes.
        let relays_by = deadline - self.grace / 4;
        let ended = tokio::time::timeout_at(relays_by, self.relays.terminate_all(why)).await;
        tracing::info!(relays = ended.map(|r| r.len()).unwrap_or(0), "relays ended");
        self.hub.end_all(why);
        self.shutdown.stop(deadline.saturating_duration_since(tokio::time::Instant::now())).await;
    }

    /// One line that tools and tests read to learn the ports.
    pub fn ready_line(&self) -> String {
        let media: Vec<String> = self.media.iter().map(|a| a.to_string()).collect();
        format!(
            "hopcast ready ws={} wss={} http={} https={} media={}",
            self.ws.port(),
            self.wss.port(),
            self.http.port(),
            self.https.port(),
            media.join(",")
        )
    }
}

async fn listen(port: u16, what: &str) -> Result<TcpListener, String> {
    TcpListener::bind(("0.0.0.0", port)).await.map_err(|e| format!("cannot listen on {what} port {port}: {e}"))
}

pub async fn start(config: Config) -> Result<RunningServer, String> {
    // Each media thread takes its own port: a range narrower than the thread count (as
    // `--media-port` sets) grows upward, so `--media-port P` with N threads uses P..P+N-1.
    let threads = config.media_threads();
    let (from, mut to) = (config.media_port_from, config.media_port_to);
    if from != 0 {
        to = to.max(from.saturating_add(threads as u16 - 1));
    }
    let options = engine::Options { gso: config.media_gso, threads, spread_after: config.media_spread_after };
    let (media, mut media_events) = engine::start(&config.media_ips(), from..=to, options)
        .map_err(|e| format!("cannot bind {threads} media UDP port(s) in {from}-{to}: {e}"))?;
    let media_addrs = media.addrs().to_vec();
    // Every connection takes a file descriptor: the cap stays below the open-file limit,
    // with room for media sockets, relay agents and files.
    let limits = config.limits;
    let max_connections = limits.connections.min(listener::raise_file_limit().saturating_sub(256).max(16) as usize);
    // One address may hold at most half: with the common 1,024-file limit (768 places)
    // a single client cannot lock everyone else out.
    let connections = Connections::new(max_connections, limits.connections_per_ip.min(max_connections / 2));
    let hub = Hub::new(media, limits, connections.clone());
    if config.memory_trim {
        trim_memory_after_sessions_end(hub.clone());
    }
    let events_hub = hub.clone();
    tokio::spawn(async move {
        while let Some(event) = media_events.recv().await {
            events_hub.on_media_event(event);
        }
    });

    let tls = tls::server_config(config.tls_cert.as_deref(), config.tls_key.as_deref())?;
    let shutdown = Shutdown::default();
    let signaling = signaling::routes(SignalingState {
        hub: hub.clone(),
        keep_alive: config.keep_alive,
        max_message_size: config.max_message_size,
        stop: shutdown.signal(),
    });
    let client_tls = tls::client_config(config.agent_ssl_ca_file.as_deref())?;
    let access = config.access.clone();
    // One id for this process wherever it names itself: the cluster, the REST hooks.
    let node_id = uuid::Uuid::new_v4().to_string();
    if let Some(hooks) = access.hooks.clone() {
        tracing::info!(default = ?hooks.url, apps = hooks.apps.len(), "REST hooks on");
        hub.set_hooks(Hooks::start(hooks, client_tls.clone(), node_id.clone()));
    }
    let agent = AgentConfig {
        ssl: config.agent_ssl,
        tls: client_tls,
        reconnect_max: config.relay_reconnect_max,
        targets: access.relay_targets.clone(),
        custom: access.relay_custom.clone(),
        reconnects: Default::default(),
    };
    let relays = RelayManager::new(hub.clone(), agent);
    let credential = Credential::new(
        access.rest_token.as_deref(),
        access.rest_basic.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
    );
    if credential.is_none() {
        tracing::warn!(
            port = config.http_port,
            "the REST API takes no credential and listens on every address: anyone who reaches it can \
             terminate streams and start relays (set rest.token or rest.basic; see README, Security)"
        );
    }

    let ws = listen(config.ws_port, "ws").await?;
    let wss = listen(config.wss_port, "wss").await?;
    let http = listen(config.http_port, "http").await?;
    let https = listen(config.https_port, "https").await?;
    let addrs = |l: &TcpListener| l.local_addr().map_err(|e| e.to_string());
    let cluster = match config.cdn.clone() {
        Some(cdn) => Some(Cluster::start(cdn, node_id, addrs(&ws)?.port(), hub.clone(), relays.clone()).await?),
        None => None,
    };
    let monitor = monitor::Sources { hub: hub.clone(), relays: relays.clone(), cluster: cluster.clone() };
    let api =
        rest::routes(hub.clone(), relays.clone(), cluster.clone(), config.cors_origins.clone(), credential.clone());
    let server = RunningServer {
        ws: addrs(&ws)?,
        wss: addrs(&wss)?,
        http: addrs(&http)?,
        https: addrs(&https)?,
        media: media_addrs,
        hub,
        relays,
        cluster,
        shutdown,
        grace: config.shutdown_grace,
    };
    let web = web::WebState::new(
        config.web_dir.clone(),
        server.ws.port(),
        server.wss.port(),
        server.http.port(),
        server.https.port(),
    );
    let api = api
        .merge(web::routes(web))
        .merge(whip::routes(server.hub.clone(), config.cors_origins.clone()))
        .merge(monitor::routes(monitor.clone(), credential.clone()));
    let api = monitor::stat_layer(monitor, credential, api);
    let limited = |tcp| LimitedListener::new(tcp, connections.clone());
    let wss = tls::TlsListener::new(limited(wss), tls.clone(), limits.handshake_timeout).map_err(|e| e.to_string())?;
    let https = tls::TlsListener::new(limited(https), tls, limits.handshake_timeout).map_err(|e| e.to_string())?;
    let timeout = limits.handshake_timeout;
    let stop = || server.shutdown.signal();
    listener::serve(limited(ws), signaling.clone(), timeout, stop());
    listener::serve(wss, signaling, timeout, stop());
    listener::serve(limited(http), api.clone(), timeout, stop());
    listener::serve(https, api, timeout, stop());
    Ok(server)
}

/// glibc keeps freed heap in its arenas (one per thread that allocated), so after a
/// flood of sessions the process would stay at its peak size for good. Whenever fewer
/// sessions are open than two seconds before, hand the free memory back.
fn trim_memory_after_sessions_end(hub: Arc<Hub>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        let mut last = 0;
        loop {
            tick.tick().await;
            let open = hub.session_count();
            if open < last {
                // SAFETY: malloc_trim only releases free pages of the allocator's arenas.
                let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
            }
            last = open;
        }
    });
}

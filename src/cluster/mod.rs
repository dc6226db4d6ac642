//! The cluster (WCS's CDN): publishers use origins, players use edges, and an edge
//! pulls a stream from its origin the moment a player asks for a name it does not
//! have. Nodes find each other and the streams through NATS, not a protocol of our own:
//! every node publishes its announcement (role, relay URI, streams, players) on
//! `hopcast.node.<id>` once a second and whenever its streams change, and keeps the
//! [`Directory`] of what it hears. Records expire with their node's silence, so a
//! NATS restart loses nothing once nodes speak again. Pulls are ordinary relays
//! (`relay`), shared by every player of a name on the edge and released after the last
//! one left. A pull whose origin is lost holds its players (PLAYBACK_PROBLEM) and
//! follows the stream to whichever origin has it next; they resume without a new play.

pub mod directory;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

pub use directory::{Announcement, Directory};

use crate::config::Cdn;
use crate::relay::{Direction, RelayFilter, RelayManager, RelayRequest};
use crate::state::hub::{Fetch, Hub};
use crate::wcs::protocol::StreamStatus;

const SUBJECT_PREFIX: &str = "hopcast.node.";
const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);
/// How often a node looks for changes in its streams to announce at once.
const WATCH_EVERY: Duration = Duration::from_millis(100);
/// How long a play waits for an origin of a name it does not know yet to be heard of.
const LOOKUP_WAIT: Duration = Duration::from_millis(1500);
/// What an edge's players are told when their stream's origin is gone and no other
/// origin took the stream over within `cdn.pull_hold_ms`.
const ORIGIN_LOST: &str = "Stopped by origin lost: the stream is no longer published in the cluster";

pub struct Cluster {
    id: String,
    config: Cdn,
    /// ws:// URI other nodes' relay agents dial.
    uri: String,
    hub: Arc<Hub>,
    relays: Arc<RelayManager>,
    directory: Mutex<Directory>,
    nats: async_nats::Client,
    /// Pulls this edge started, by stream name: when its last player left.
    pulls: Mutex<HashMap<String, Option<Instant>>>,
    /// Pulls warmed up by REST: kept without players, until no origin has the stream.
    warm: Mutex<std::collections::HashSet<String>>,
    /// Lost pulls whose stream no origin has, since when.
    lost: Mutex<HashMap<String, Instant>>,
    /// Pulls being terminated: their local stream is still there, but going.
    releasing: Mutex<std::collections::HashSet<String>>,
    /// One fetch per name at a time: players of one name share one pull.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Set by [`Cluster::leave`]: announcements stop.
    left: std::sync::atomic::AtomicBool,
}

impl Cluster {
    /// Join the cluster. The node starts even when NATS is unreachable: it logs that it
    /// is not in the cluster yet, and joins when NATS answers. A NATS URL that does not
    /// parse stops the start.
    pub async fn start(
        config: Cdn,
        id: String,
        ws_port: u16,
        hub: Arc<Hub>,
        relays: Arc<RelayManager>,
    ) -> Result<Arc<Cluster>, String> {
        let uri = format!("ws://{}/", std::net::SocketAddr::new(config.ip, ws_port));
        let urls = config
            .nats_urls
            .iter()
            .map(|u| u.parse::<async_nats::ServerAddr>().map_err(|e| format!("cdn.nats_url: '{u}': {e}")))
            .collect::<Result<Vec<_>, String>>()?;
        let nats = async_nats::ConnectOptions::new()
            .name(format!("hopcast {id}"))
            .retry_on_initial_connect()
            .reconnect_delay_callback(|attempts| Duration::from_millis((100 * attempts as u64).min(1000)))
            .event_callback(|event| async move { tracing::info!(%event, "NATS") })
            .connect(urls)
            .await
            .map_err(|e| format!("cdn.nats_url: {e}"))?;
        let directory = Mutex::new(Directory::new(id.clone(), config.nodes_timeout));
        let cluster = Arc::new(Cluster {
            id,
            config,
            uri,
            hub: hub.clone(),
            relays,
            directory,
            nats,
            pulls: Mutex::default(),
            warm: Mutex::default(),
            lost: Mutex::default(),
            releasing: Mutex::default(),
            fetching: Mutex::default(),
            left: Default::default(),
        });
        tracing::info!(node = %cluster.id, uri = %cluster.uri, origin = cluster.config.origin, edge = cluster.config.edge, "joining the cluster");
        tokio::spawn(cluster.clone().listen());
        tokio::spawn(cluster.clone().announce());
        if cluster.config.edge {
            hub.set_fetcher(cluster.clone());
        }
        let weak = Arc::downgrade(&cluster);
        cluster.relays.set_cluster_nodes(Arc::new(move |host: &str, port: u16| {
            weak.upgrade().is_some_and(|c| c.directory().nodes().iter().any(|n| uri_is(&n.uri, host, port)))
        }));
        Ok(cluster)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn directory(&self) -> std::sync::MutexGuard<'_, Directory> {
        self.directory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connected to NATS now (the node is in the cluster).
    pub fn connected(&self) -> bool {
        self.nats.connection_state() == async_nats::connection::State::Connected
    }

    /// Every node heard from.
    pub fn nodes(&self) -> Vec<Announcement> {
        self.directory().nodes().into_iter().cloned().collect()
    }

    /// The least loaded edge's relay URI, for a player of any stream.
    pub fn edge_for_player(&self) -> Option<String> {
        self.directory().least_loaded_edge().map(|a| a.uri.clone())
    }

    /// Streams this edge pulls, as (stream, origin URI).
    pub fn routes(&self) -> Vec<(String, String)> {
        let pulled: Vec<String> = self.pulls.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
        let relays = self.relays.find(&RelayFilter { direction: Some(Direction::Pull), ..Default::default() });
        relays
            .into_iter()
            .filter(|r| pulled.contains(&r.local_stream_name))
            .map(|r| (r.local_stream_name, r.uri))
            .collect()
    }

    /// Hear every node's announcements.
    async fn listen(self: Arc<Self>) {
        let mut subscription = match self.nats.subscribe(format!("{SUBJECT_PREFIX}*")).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot subscribe to the cluster's announcements");
                return;
            }
        };
        while let Some(message) = subscription.next().await {
            match Announcement::decode(&message.payload) {
                Ok(a) => self.directory().heard(a, Instant::now()),
                Err(e) => tracing::warn!(subject = %message.subject, error = %e, "ignoring a cluster record"),
            }
        }
    }

    /// Announce this node every second and whenever its streams change; then expire
    /// silent nodes and release pulls nobody plays any more.
    async fn announce(self: Arc<Self>) {
        let mut last: Option<(Vec<String>, Instant)> = None;
        let mut tick = tokio::time::interval(WATCH_EVERY);
        loop {
            tick.tick().await;
            let now = Instant::now();
            let mut streams = if self.config.origin { self.hub.publishing_names() } else { Vec::new() };
            streams.sort();
            if self.left.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            let due = last.as_ref().is_none_or(|(s, at)| *s != streams || now.duration_since(*at) >= ANNOUNCE_EVERY);
            if due {
                if let Err(e) = self.publish_announcement(streams.clone(), false).await {
                    tracing::debug!(error = %e, "announcement not sent (not in the cluster yet)");
                }
                last = Some((streams, now));
                for gone in self.directory().expire(now) {
                    tracing::info!(node = %gone, "node left the cluster (silent)");
                }
                // Once a second at most: it looks at every pull and its players.
                self.release_unplayed(now).await;
            }
        }
    }

    async fn publish_announcement(&self, streams: Vec<String>, leaving: bool) -> Result<(), String> {
        let announcement = Announcement {
            id: self.id.clone(),
            origin: self.config.origin,
            edge: self.config.edge,
            uri: self.uri.clone(),
            streams,
            players: self.hub.players(),
            leaving,
        };
        let payload = serde_json::to_vec(&announcement).expect("serializable");
        let subject = format!("{SUBJECT_PREFIX}{}", self.id);
        self.nats.publish(subject, payload.into()).await.map_err(|e| e.to_string())
    }

    /// The server is stopping: stop announcing and tell the other nodes to forget this
    /// one now (edges pulling from it look for another origin at once).
    pub async fn leave(&self) {
        self.left.store(true, std::sync::atomic::Ordering::Relaxed);
        let sent = self.publish_announcement(Vec::new(), true).await;
        let flushed = match sent {
            Ok(()) => tokio::time::timeout(Duration::from_secs(1), self.nats.flush()).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match flushed {
            Ok(_) => tracing::info!(node = %self.id, "left the cluster"),
            Err(e) => tracing::info!(node = %self.id, error = %e, "could not say goodbye to the cluster"),
        }
    }

    /// Pull `name` now, before any player asks (WCS's warm-up), and keep it while an
    /// origin has it.
    pub async fn warm_up(&self, name: &str) -> Result<(), String> {
        self.pull(name).await?;
        self.warm.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_string());
        Ok(())
    }

    /// Release pulls whose last player left longer than the linger ago, and lost ones
    /// whose stream no origin has had for `cdn.pull_hold_ms`; point lost ones whose
    /// stream is on another origin now at it (their players resume). Warm pulls are kept
    /// while an origin has their stream.
    async fn release_unplayed(&self, now: Instant) {
        let pulled = self.relays.find(&RelayFilter { direction: Some(Direction::Pull), ..Default::default() });
        let ours: Vec<String> = self.pulls.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
        let (mut moved, mut gone) = (Vec::new(), Vec::new());
        {
            let directory = self.directory();
            let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
            let failed: Vec<_> = pulled
                .iter()
                .filter(|r| r.status == StreamStatus::Failed && ours.contains(&r.local_stream_name))
                .collect();
            lost.retain(|name, _| failed.iter().any(|r| r.local_stream_name == *name));
            for r in failed {
                let name = &r.local_stream_name;
                match directory.origin_of(name) {
                    Some(origin) => {
                        lost.remove(name);
                        if origin.uri != r.uri {
                            moved.push((name.clone(), origin.uri.clone()));
                        }
                    }
                    None => {
                        if now.duration_since(*lost.entry(name.clone()).or_insert(now)) >= self.config.pull_hold {
                            gone.push(name.clone());
                        }
                    }
                }
            }
            self.warm.lock().unwrap_or_else(|p| p.into_inner()).retain(|n| directory.origin_of(n).is_some());
        }
        for (name, uri) in moved {
            tracing::info!(stream = %name, origin = %uri, "the stream moved to another origin: pulling from there");
            let _ = self.relays.retarget(&Self::pull_of(&name), &uri);
        }
        let expired: Vec<String> = {
            let warm = self.warm.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let mut pulls = self.pulls.lock().unwrap_or_else(|p| p.into_inner());
            for (name, idle_since) in pulls.iter_mut() {
                let players = self.hub.players_of(name);
                *idle_since = if players > 0 { None } else { Some(idle_since.unwrap_or(now)) };
            }
            let linger = self.config.pull_linger;
            let expired: Vec<String> = pulls
                .iter()
                .filter(|(n, idle)| {
                    gone.contains(n) || (!warm.contains(*n) && idle.is_some_and(|t| now.duration_since(t) >= linger))
                })
                .map(|(n, _)| n.clone())
                .collect();
            for name in &expired {
                pulls.remove(name);
            }
            expired
        };
        for name in expired {
            let why = if gone.contains(&name) { ORIGIN_LOST } else { "Stopped: no players left" };
            tracing::info!(stream = %name, reason = why, "pull released");
            self.releasing.lock().unwrap_or_else(|p| p.into_inner()).insert(name.clone());
            let _ = self.relays.terminate_because(&Self::pull_of(&name), why).await;
            self.releasing.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
        }
    }

    fn pull_of(name: &str) -> RelayFilter {
        RelayFilter {
            direction: Some(Direction::Pull),
            local_stream_name: Some(name.to_string()),
            ..Default::default()
        }
    }

    /// The origin's relay URI for `name`, waiting briefly for a first announcement.
    async fn lookup(&self, name: &str) -> Option<String> {
        let deadline = Instant::now() + LOOKUP_WAIT;
        loop {
            if let Some(origin) = self.directory().origin_of(name) {
                return Some(origin.uri.clone());
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(WATCH_EVERY).await;
        }
    }

    async fn pull(&self, name: &str) -> Result<(), String> {
        let lock = {
            let mut fetching = self.fetching.lock().unwrap_or_else(|p| p.into_inner());
            fetching.entry(name.to_string()).or_default().clone()
        };
        let result = {
            let _one_at_a_time = lock.lock().await;
            self.pull_alone(name).await
        };
        // The last one out forgets the name: plays of names nobody has must not pile up.
        let mut fetching = self.fetching.lock().unwrap_or_else(|p| p.into_inner());
        if Arc::strong_count(&lock) == 2 {
            fetching.remove(name);
        }
        result
    }

    async fn pull_alone(&self, name: &str) -> Result<(), String> {
        // A pull of this name on its way out still publishes it: wait until it is gone.
        for _ in 0..200 {
            if !self.releasing.lock().unwrap_or_else(|p| p.into_inner()).contains(name) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if self.hub.is_published(name) {
            return Ok(());
        }
        let uri = self.lookup(name).await.ok_or_else(|| format!("no origin in the cluster has '{name}'"))?;
        tracing::info!(stream = %name, origin = %uri, "pulling for a player");
        let request = RelayRequest {
            uri: Some(uri),
            local_stream_name: Some(name.into()),
            remote_stream_name: Some(name.into()),
        };
        self.relays.start_trusted(Direction::Pull, request).await.map_err(|e| e.to_string())?;
        self.pulls.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), None);
        Ok(())
    }
}

/// Does relay URI `uri` point at `host:port`?
fn uri_is(uri: &str, host: &str, port: u16) -> bool {
    uri.parse::<axum::http::Uri>().is_ok_and(|u| {
        let h = u.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
        h.eq_ignore_ascii_case(host) && u.port_u16() == Some(port)
    })
}

impl Fetch for Cluster {
    fn fetch<'a>(
        &'a self,
        name: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(self.pull(name))
    }
}

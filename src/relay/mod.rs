//! Server-to-server relays (WCS's "pull" family). A relay agent is a client of the
//! same signaling protocol ([`crate::wcs::client`]) whose media peer lives in this server's
//! router:
//!
//! - push: the agent consumes a local stream and publishes it on the remote server;
//! - pull: the agent plays a remote stream and publishes it here under a local name.
//!
//! The remote speaks WCS's protocol (ws:// or wss://) or WHIP/WHEP (an http(s)://
//! endpoint: push publishes over WHIP, pull plays over WHEP; an endpoint ending in
//! `/whip` or `/whep` gets the remote stream name appended).
//!
//! Each relay has one agent task ([`agent`]). Its local side is an internal session in
//! the registry (the push leg is a local player, the pull leg a local publisher), so
//! local statuses reach the agent the way they reach any client. Unlike WCS, an agent
//! whose established relay is lost reconnects with [`Backoff`] until terminated.

mod agent;
mod backoff;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::Uri;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

pub use backoff::Backoff;

use crate::access::targets::RelayTargets;
use crate::state::hub::Hub;
use crate::wcs::protocol::StreamStatus;

/// Longest relay URI accepted.
pub const MAX_URI_LENGTH: usize = 2048;

/// How long an agent waits for each step of an attempt (connect, answer, status). The
/// REST call answers when the first attempt has succeeded or failed, so within 30 s.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Push,
    Pull,
}

/// A relay as `/pull/find*` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RelayInfo {
    pub local_media_session_id: String,
    pub remote_media_session_id: String,
    pub local_stream_name: String,
    pub remote_stream_name: String,
    pub uri: String,
    pub status: StreamStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<String>,
    pub direction: Direction,
    /// Attempts after the first (each reconnect of a lost relay counts one).
    pub reconnects: u32,
}

/// A `/pull/find` or `/pull/terminate` filter: every given field must match.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RelayFilter {
    pub direction: Option<Direction>,
    pub local_media_session_id: Option<String>,
    pub remote_media_session_id: Option<String>,
    pub local_stream_name: Option<String>,
    pub remote_stream_name: Option<String>,
    pub uri: Option<String>,
    pub status: Option<StreamStatus>,
}

impl RelayFilter {
    pub fn is_empty(&self) -> bool {
        self.direction.is_none()
            && self.local_media_session_id.is_none()
            && self.remote_media_session_id.is_none()
            && self.local_stream_name.is_none()
            && self.remote_stream_name.is_none()
            && self.uri.is_none()
            && self.status.is_none()
    }

    pub fn matches(&self, r: &RelayInfo) -> bool {
        let eq = |f: &Option<String>, v: &str| f.as_deref().is_none_or(|f| f == v);
        self.direction.is_none_or(|d| d == r.direction)
            && eq(&self.local_media_session_id, &r.local_media_session_id)
            && eq(&self.remote_media_session_id, &r.remote_media_session_id)
            && eq(&self.local_stream_name, &r.local_stream_name)
            && eq(&self.remote_stream_name, &r.remote_stream_name)
            && eq(&self.uri, &r.uri)
            && self.status.is_none_or(|s| s == r.status)
    }
}

/// Why a relay request is refused; the REST layer maps each to a status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayError {
    /// 400: a missing field or a URI that is not ws:// or wss://.
    BadRequest(String),
    /// 404: push of a stream nobody publishes here.
    NotFound(String),
    /// 409: the same relay exists, or the local name is taken.
    Conflict(String),
    /// 500: the first attempt failed (unreachable remote, remote FAILED, ...).
    Failed(String),
    /// 429: a relay limit is reached.
    Limit(String),
    /// 403: `relay.allow` does not allow the target.
    Forbidden(String),
}

impl std::fmt::Display for RelayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadRequest(m)
            | Self::NotFound(m)
            | Self::Conflict(m)
            | Self::Failed(m)
            | Self::Limit(m)
            | Self::Forbidden(m) => f.write_str(m),
        }
    }
}

/// A relay request (`/pull/push` and `/pull/pull` take the same fields).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RelayRequest {
    pub uri: Option<String>,
    pub local_stream_name: Option<String>,
    pub remote_stream_name: Option<String>,
}

/// Shared between the manager and the relay's agent task.
pub(crate) struct Relay {
    info: Mutex<RelayInfo>,
    terminate: watch::Sender<bool>,
    /// What the local side is told when the relay is terminated.
    stop_reason: Mutex<Option<String>>,
    /// Cuts a reconnect backoff short (the relay was retargeted).
    wake: tokio::sync::Notify,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Relay {
    pub(crate) fn info(&self) -> RelayInfo {
        self.info.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut RelayInfo)) {
        f(&mut self.info.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub(crate) fn stop_reason(&self) -> String {
        let reason = self.stop_reason.lock().unwrap_or_else(|p| p.into_inner()).clone();
        reason.unwrap_or_else(|| crate::wcs::protocol::reason::REST_TERMINATE.into())
    }

    fn is_running(&self) -> bool {
        self.task.lock().unwrap_or_else(|p| p.into_inner()).as_ref().is_some_and(|t| !t.is_finished())
    }
}

pub(crate) type RelayList = Arc<Mutex<Vec<Arc<Relay>>>>;

/// Settings agents need.
#[derive(Clone)]
pub struct AgentConfig {
    /// `wcs_agent_ssl`: use wss:// toward remote servers.
    pub ssl: bool,
    /// TLS trust for wss:// (system roots plus `wcs_agent_ssl_ca_file`).
    pub tls: Arc<rustls::ClientConfig>,
    pub reconnect_max: Duration,
    /// `relay.allow`: where REST may point relays.
    pub targets: RelayTargets,
    /// `relay.custom`: sent as `custom` in every agent's `connection`.
    pub custom: serde_json::Map<String, serde_json::Value>,
    /// Reconnect attempts of every relay so far (a counter for `/metrics`; shared).
    pub reconnects: Arc<std::sync::atomic::AtomicU64>,
}

/// Is `host:port` a cluster node's relay address? (For `relay.allow=cluster`.)
pub type ClusterNodes = Arc<dyn Fn(&str, u16) -> bool + Send + Sync>;

/// All relays of this server.
pub struct RelayManager {
    hub: Arc<Hub>,
    config: AgentConfig,
    relays: RelayList,
    cluster_nodes: std::sync::OnceLock<ClusterNodes>,
}

impl RelayManager {
    pub fn new(hub: Arc<Hub>, config: AgentConfig) -> Arc<Self> {
        Arc::new(RelayManager { hub, config, relays: Arc::default(), cluster_nodes: Default::default() })
    }

    fn list(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Relay>>> {
        self.relays.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reconnect attempts of all relays, those ended included.
    pub fn reconnects_total(&self) -> u64 {
        self.config.reconnects.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn find(&self, filter: &RelayFilter) -> Vec<RelayInfo> {
        self.list().iter().map(|r| r.info()).filter(|i| filter.matches(i)).collect()
    }

    /// The cluster tells which addresses are its nodes'.
    pub fn set_cluster_nodes(&self, nodes: ClusterNodes) {
        let _ = self.cluster_nodes.set(nodes);
    }

    /// Start a relay that REST asked for: its target must be one `relay.allow` permits,
    /// checked before anything is dialed.
    pub async fn start(&self, direction: Direction, req: RelayRequest) -> Result<RelayInfo, RelayError> {
        if let Some(uri) = req.uri.as_deref().filter(|u| !u.trim().is_empty()) {
            let nodes = self.cluster_nodes.get();
            let is_node = |host: &str, port: u16| nodes.is_some_and(|n| n(host, port));
            if let Err(refused) = self.config.targets.check(uri.trim(), is_node) {
                self.hub.count_refusal(crate::state::hub::Refusal::RelayTargets);
                tracing::info!(%uri, reason = %refused, "relay refused");
                return Err(RelayError::Forbidden(refused.0));
            }
        }
        self.start_trusted(direction, req).await
    }

    /// Start a relay the server itself chose (a cluster pull), and answer when its
    /// first attempt has an outcome.
    pub(crate) async fn start_trusted(&self, direction: Direction, req: RelayRequest) -> Result<RelayInfo, RelayError> {
        let required = |v: Option<String>, field: &str| {
            v.filter(|v| !v.trim().is_empty()).ok_or_else(|| RelayError::BadRequest(format!("Missing field '{field}'")))
        };
        let uri = required(req.uri, "uri")?;
        let local = required(req.local_stream_name, "localStreamName")?;
        let remote = required(req.remote_stream_name, "remoteStreamName")?;
        let limits = *self.hub.limits();
        if uri.len() > MAX_URI_LENGTH {
            return Err(RelayError::BadRequest(format!("Bad URI: longer than {MAX_URI_LENGTH} bytes")));
        }
        if local.len() > limits.name_length || remote.len() > limits.name_length {
            return Err(RelayError::BadRequest(format!("Stream name too long (limit {} bytes)", limits.name_length)));
        }
        let url = connect_url(&uri, self.config.ssl)?;

        let relay = {
            let mut list = self.list();
            // A relay whose first attempt failed is not running: a new request replaces it.
            list.retain(|r| r.is_running() || r.info().status != StreamStatus::Failed);
            let infos: Vec<RelayInfo> = list.iter().map(|r| r.info()).collect();
            let limit = |what: String| {
                self.hub.count_refusal(crate::state::hub::Refusal::Relays);
                Err(RelayError::Limit(what))
            };
            if infos.len() >= limits.relays {
                return limit(format!("Relay limit reached: {} relays (limits.relays)", limits.relays));
            }
            let of_stream = infos.iter().filter(|i| i.direction == Direction::Push && i.local_stream_name == local);
            if direction == Direction::Push && of_stream.count() >= limits.relays_per_stream {
                let n = limits.relays_per_stream;
                return limit(format!("Relay limit reached: {n} push relays of '{local}' (limits.relays_per_stream)"));
            }
            match direction {
                Direction::Push => {
                    if !self.hub.is_published(&local) {
                        return Err(RelayError::NotFound(format!("Stream not found: '{local}' is not published here")));
                    }
                    if infos
                        .iter()
                        .any(|i| i.direction == Direction::Push && i.uri == uri && i.remote_stream_name == remote)
                    {
                        return Err(RelayError::Conflict(format!("'{remote}' is already relayed to {uri}")));
                    }
                }
                Direction::Pull => {
                    let pulled = infos.iter().any(|i| i.direction == Direction::Pull && i.local_stream_name == local);
                    if pulled || self.hub.is_published(&local) {
                        return Err(RelayError::Conflict(format!("Stream name '{local}' is already in use here")));
                    }
                }
            }
            let info = RelayInfo {
                local_media_session_id: uuid::Uuid::new_v4().to_string(),
                remote_media_session_id: String::new(),
                local_stream_name: local,
                remote_stream_name: remote,
                uri,
                status: StreamStatus::New,
                info: None,
                direction,
                reconnects: 0,
            };
            let relay = Arc::new(Relay {
                info: Mutex::new(info),
                terminate: watch::channel(false).0,
                stop_reason: Mutex::new(None),
                wake: tokio::sync::Notify::new(),
                task: Mutex::new(None),
            });
            list.push(relay.clone());
            relay
        };

        let (first_tx, first_rx) = oneshot::channel();
        let info = relay.info();
        let span = tracing::info_span!("relay", direction = ?info.direction, local = %info.local_stream_name,
            remote = %info.remote_stream_name, dial = %url);
        let agent = agent::Agent::new(self.hub.clone(), relay.clone(), self.relays.clone(), &self.config, first_tx);
        *relay.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(tokio::spawn(agent.run().instrument(span)));
        match first_rx.await {
            Ok(Ok(())) => Ok(relay.info()),
            Ok(Err(reason)) => Err(RelayError::Failed(reason)),
            Err(_) => Err(RelayError::Failed("relay agent stopped".into())),
        }
    }

    /// Point matching relays at another remote (a cluster pull whose stream moved to
    /// another origin): the next attempt dials it, at once if one is waiting.
    pub fn retarget(&self, filter: &RelayFilter, uri: &str) -> Result<usize, RelayError> {
        connect_url(uri, self.config.ssl)?;
        let chosen: Vec<Arc<Relay>> = self.list().iter().filter(|r| filter.matches(&r.info())).cloned().collect();
        for relay in &chosen {
            relay.update(|i| i.uri = uri.to_string());
            relay.wake.notify_one();
        }
        Ok(chosen.len())
    }

    /// Terminate matching relays: unpublish on the remote, free the local side, and
    /// answer once that is done. Returns what was terminated.
    pub async fn terminate(&self, filter: &RelayFilter) -> Result<Vec<RelayInfo>, RelayError> {
        self.terminate_because(filter, crate::wcs::protocol::reason::REST_TERMINATE).await
    }

    /// [`RelayManager::terminate`], telling the local side `why`.
    pub async fn terminate_because(&self, filter: &RelayFilter, why: &str) -> Result<Vec<RelayInfo>, RelayError> {
        if filter.is_empty() {
            return Err(RelayError::BadRequest("Give localStreamName, remoteStreamName or uri to terminate".into()));
        }
        let done = self.terminate_matching(|r| filter.matches(r), why).await;
        if done.is_empty() {
            return Err(RelayError::NotFound("No relay matches".into()));
        }
        Ok(done)
    }

    /// Every relay ends (the server is stopping): each unpublishes on its remote, or
    /// stops playing there, and tells its local side `why`.
    pub async fn terminate_all(&self, why: &str) -> Vec<RelayInfo> {
        self.terminate_matching(|_| true, why).await
    }

    /// Terminate the relays `chosen` picks, all at once: the time it takes is the
    /// slowest remote's, not their sum.
    async fn terminate_matching(&self, chosen: impl Fn(&RelayInfo) -> bool, why: &str) -> Vec<RelayInfo> {
        let chosen: Vec<Arc<Relay>> = {
            let mut list = self.list();
            let (chosen, kept) = list.drain(..).partition(|r| chosen(&r.info()));
            *list = kept;
            chosen
        };
        for relay in &chosen {
            *relay.stop_reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.to_string());
            let _ = relay.terminate.send(true);
        }
        let tasks = chosen.iter().filter_map(|relay| relay.task.lock().unwrap_or_else(|p| p.into_inner()).take());
        let _ = tokio::time::timeout(STEP_TIMEOUT, futures_util::future::join_all(tasks)).await;
        chosen
            .iter()
            .map(|relay| {
                relay.update(|i| {
                    i.status = StreamStatus::Stopped;
                    i.info = Some(why.to_string());
                });
                relay.info()
            })
            .collect()
    }
}

/// The URL an agent connects to: `uri` as given, except that with `wcs_agent_ssl`
/// a ws:// URI becomes wss:// (and WCS's default ws port 8080 its wss port 8443).
/// http(s):// URIs are WHIP (push) or WHEP (pull) endpoints, taken as they are.
pub fn connect_url(uri: &str, ssl: bool) -> Result<String, RelayError> {
    let bad = || {
        RelayError::BadRequest(format!(
            "Bad URI: expected ws://host:port[/path], wss://..., or a WHIP/WHEP endpoint http(s)://..., got '{uri}'"
        ))
    };
    let parsed: Uri = uri.trim().parse().map_err(|_| bad())?;
    let scheme = parsed.scheme_str().ok_or_else(bad)?;
    let authority = parsed.authority().ok_or_else(bad)?;
    if !matches!(scheme, "ws" | "wss" | "http" | "https") || authority.host().is_empty() {
        return Err(bad());
    }
    let path = parsed.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    if ssl && scheme == "ws" {
        let port = match authority.port_u16() {
            Some(8080) => ":8443".to_string(),
            Some(p) => format!(":{p}"),
            None => String::new(),
        };
        return Ok(format!("wss://{}{port}{path}", authority.host()));
    }
    Ok(format!("{scheme}://{authority}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_url_checks_and_upgrades() {
        assert_eq!(connect_url("ws://10.0.0.2:8080", false).unwrap(), "ws://10.0.0.2:8080/");
        assert_eq!(connect_url("ws://10.0.0.2:8080/websocket", false).unwrap(), "ws://10.0.0.2:8080/websocket");
        assert_eq!(connect_url("ws://10.0.0.2:8080", true).unwrap(), "wss://10.0.0.2:8443/");
        assert_eq!(connect_url("wss://h:9443/x", false).unwrap(), "wss://h:9443/x");
        assert_eq!(connect_url("http://h:8081/whip", true).unwrap(), "http://h:8081/whip");
        for bad in ["", "10.0.0.2:8080", "ftp://h:8080", "ws://", "not a uri", "ws://:8080"] {
            assert!(
                matches!(connect_url(bad, false), Err(RelayError::BadRequest(m)) if m.starts_with("Bad URI")),
                "{bad}"
            );
        }
    }

    #[test]
    fn filters_match_given_fields_only() {
        let info = RelayInfo {
            local_media_session_id: "l".into(),
            remote_media_session_id: "r".into(),
            local_stream_name: "a".into(),
            remote_stream_name: "b".into(),
            uri: "ws://h:1".into(),
            status: StreamStatus::Publishing,
            info: None,
            direction: Direction::Push,
            reconnects: 0,
        };
        assert!(RelayFilter::default().matches(&info));
        let f = RelayFilter { remote_stream_name: Some("b".into()), ..Default::default() };
        assert!(f.matches(&info) && !f.is_empty());
        let f =
            RelayFilter { remote_stream_name: Some("b".into()), uri: Some("ws://other".into()), ..Default::default() };
        assert!(!f.matches(&info));
    }
}

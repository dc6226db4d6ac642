//! The server's shared state and its use cases: publish, play, stop, terminate,
//! disconnect. Each locks the [`Registry`] briefly (never across an await), and applies
//! the registry's [`Effect`]s to the media engine. Signaling, REST and relay agents all
//! go through here, so a stream behaves the same whoever drives it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Map, Value};

use crate::access::hooks::{Ask, Hooks, DEFAULT_APP};
use crate::config::Limits;
use crate::media::{MediaError, MediaEvent, MediaHandle, PeerId, Role, StreamKey};
use crate::net::listener::Connections;
use crate::state::registry::{self, Effect, OutboxReceiver, Registry, Session, StatusListener, StreamFilter};
use crate::wcs::protocol::{reason, Fail, ServerMessage, StreamInfo, StreamRequest, StreamStatus};

pub struct Hub {
    registry: Mutex<Registry>,
    media: MediaHandle,
    limits: Limits,
    refused: [AtomicU64; Refusal::ALL.len()],
    /// Open TCP connections, by the listeners' caps.
    connections: Arc<Connections>,
    /// Where a play of a name not published here may fetch it from (the cluster).
    fetcher: std::sync::OnceLock<Arc<dyn Fetch>>,
    /// The REST hooks, when a backend is configured.
    hooks: std::sync::OnceLock<Arc<Hooks>>,
    /// The server is stopping: no new streams.
    closing: std::sync::atomic::AtomicBool,
}

/// Something that can bring a stream that is not published here (an edge pulling it
/// from its origin): resolves once the stream is published here, or with the reason
/// it cannot be.
pub trait Fetch: Send + Sync {
    fn fetch<'a>(
        &'a self,
        name: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>>;
}

/// A request refused by a limit (README "Limits"), counted for `/rest-api/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Sdp,
    Names,
    ConnectionData,
    Connecting,
    SlowReaders,
    Handshakes,
    Relays,
    /// A relay target `relay.allow` does not permit.
    RelayTargets,
    /// A connection or stream the REST hooks' backend refused (or could not be asked).
    Hooks,
}

impl Refusal {
    /// Its name in `/metrics` labels.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Sdp => "sdp",
            Refusal::Names => "names",
            Refusal::ConnectionData => "connection_data",
            Refusal::Connecting => "connecting",
            Refusal::SlowReaders => "slow_readers",
            Refusal::Handshakes => "handshakes",
            Refusal::Relays => "relays",
            Refusal::RelayTargets => "relay_targets",
            Refusal::Hooks => "hooks",
        }
    }

    pub const ALL: [Refusal; 9] = [
        Refusal::Sdp,
        Refusal::Names,
        Refusal::ConnectionData,
        Refusal::Connecting,
        Refusal::SlowReaders,
        Refusal::Handshakes,
        Refusal::Relays,
        Refusal::RelayTargets,
        Refusal::Hooks,
    ];
}

/// What the server holds and has refused, for `/rest-api/stats`.
#[derive(Debug)]
pub struct Counts {
    pub sessions: usize,
    pub streams: usize,
    pub connections: usize,
    pub refused_connections: u64,
    /// Per [`Refusal::ALL`].
    pub refused: [u64; Refusal::ALL.len()],
}

/// A session as listings show it: no client data beyond what WCS shows.
pub struct SessionListing {
    pub id: String,
    pub remote: String,
    pub established: bool,
    /// The listed fields of the client's `connection` data.
    pub client: Map<String, Value>,
}

/// Fields of a client's `connection` data that listings show; the rest (its `custom`
/// object, tokens) is the client's own business and its backend's.
const LISTED_CONNECTION_FIELDS: [&str; 5] =
    ["appKey", "clientVersion", "clientOSVersion", "clientBrowserVersion", "mediaProviders"];

impl Hub {
    pub fn new(media: MediaHandle, limits: Limits, connections: Arc<Connections>) -> Arc<Self> {
        let registry = Mutex::new(Registry::new(limits.connecting_per_ip));
        Arc::new(Hub {
            registry,
            media,
            limits,
            refused: Default::default(),
            connections,
            fetcher: Default::default(),
            hooks: Default::default(),
            closing: Default::default(),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The media engine, for relay agents: their client peers live in this server's
    /// media threads, beside the peers of the streams they carry.
    pub fn media(&self) -> &MediaHandle {
        &self.media
    }

    pub fn count_refusal(&self, what: Refusal) {
        self.refused[what as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn counts(&self) -> Counts {
        let (sessions, streams) = {
            let registry = self.registry();
            (registry.sessions().count(), registry.stream_count())
        };
        Counts {
            sessions,
            streams,
            connections: self.connections.open(),
            refused_connections: self.connections.refused(),
            refused: std::array::from_fn(|i| self.refused[i].load(Ordering::Relaxed)),
        }
    }

    /// Streams by (published, protocol) (see [`Registry::census`]).
    pub fn census(&self) -> std::collections::BTreeMap<(bool, &'static str), usize> {
        self.registry().census()
    }

    /// Sessions open now (cheap: no listing is built).
    pub fn session_count(&self) -> usize {
        self.registry().sessions().count()
    }

    /// Every session, for `/connection/find_all`, sorted by id.
    pub fn sessions(&self) -> Vec<SessionListing> {
        let mut list: Vec<SessionListing> = self
            .registry()
            .sessions()
            .map(|s| SessionListing {
                id: s.id.clone(),
                remote: s.remote.clone(),
                established: s.established,
                client: LISTED_CONNECTION_FIELDS
                    .iter()
                    .filter_map(|f| Some((f.to_string(), s.user_data.get(*f)?.clone())))
                    .collect(),
            })
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    /// Queue a message for a session's client.
    pub fn send(&self, session: &str, message: ServerMessage) {
        self.registry().send(session, message);
    }

    /// A `fail` warning to a session's client.
    pub fn warn(&self, session: &str, text: impl Into<String>) {
        self.send(session, ServerMessage::Fail(Fail::warning(text)));
    }

    pub fn is_established(&self, session: &str) -> bool {
        self.registry().session(session).is_some_and(|s| s.established)
    }

    /// Connections, publishes and plays are asked of the REST hooks' backend, which
    /// hears every status too (set once, at start).
    pub fn set_hooks(&self, hooks: Arc<Hooks>) {
        self.registry().set_listener(Arc::new(HookEvents(hooks.clone())));
        let _ = self.hooks.set(hooks);
    }

    /// Plays of names not published here ask `fetcher` first (set once, by the cluster).
    pub fn set_fetcher(&self, fetcher: Arc<dyn Fetch>) {
        let _ = self.fetcher.set(fetcher);
    }

    /// Names of the streams publishing here now.
    pub fn publishing_names(&self) -> Vec<String> {
        self.registry().publishing_names()
    }

    /// Players of `name` here.
    pub fn players_of(&self, name: &str) -> usize {
        self.registry().players_of(name)
    }

    /// Players here, of all streams.
    pub fn players(&self) -> usize {
        self.registry().players()
    }

    /// Whether a stream of this name is published here.
    pub fn is_published(&self, name: &str) -> bool {
        self.registry().published(name).is_some()
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock must not take the whole server down with it.
        self.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn apply(&self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::RemovePeer { peer, close } => self.media.remove_peer(peer, close),
                Effect::RemoveStream { key } => self.media.remove_stream(key),
            }
        }
    }

    /// A new signaling connection: returns its session id and outbox.
    pub fn open_session(&self, remote: String) -> (String, OutboxReceiver) {
        let id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = registry::outbox(self.limits.session_queue);
        self.registry().add_session(id.clone(), remote, tx);
        (id, rx)
    }

    /// `connection`: echo the client's data with our session id and token (`getUserData`).
    /// Data larger than `limits.custom_size`, or that the REST hooks' backend refuses,
    /// is refused: a `fail` with the reason, and the connection closed (1008).
    pub async fn establish(&self, session: &str, mut data: Map<String, Value>) {
        let size = serde_json::to_string(&data).map_or(usize::MAX, |t| t.len());
        if size > self.limits.custom_size {
            self.count_refusal(Refusal::ConnectionData);
            let why = format!("Connection data too large: {size} bytes (limit {})", self.limits.custom_size);
            return self.refuse_connection(session, &why);
        }
        if let Some(hooks) = self.hooks.get() {
            let app_key = data.get("appKey").and_then(Value::as_str).unwrap_or(DEFAULT_APP).to_string();
            let mut body = data.clone();
            body.insert("sessionId".into(), session.into());
            if let Err(why) = hooks.ask(Ask::Connect, &app_key, body).await {
                tracing::info!(session, reason = %why, "connection refused by the REST hook");
                self.count_refusal(Refusal::Hooks);
                hooks.connection_event(&app_key, false, session, "FAILED", Some(&why));
                return self.refuse_connection(session, &why);
            }
        }
        data.insert("sessionId".into(), session.into());
        if data.get("authToken").and_then(Value::as_str).is_none_or(str::is_empty) {
            data.insert("authToken".into(), session.into());
        }
        let mut registry = self.registry();
        registry.establish(session, data.clone());
        registry.send(session, ServerMessage::GetUserData(data));
    }

    fn refuse_connection(&self, session: &str, why: &str) {
        let registry = self.registry();
        let fail = Fail { api_method: Some("ConnectionStatusEvent".into()), ..Fail::warning(why) };
        registry.send(session, ServerMessage::Fail(fail));
        registry.refuse_session_connection(session, why);
    }

    /// A session for a server-internal client (a relay agent's local side).
    pub fn open_internal_session(&self, label: String) -> (String, OutboxReceiver) {
        let (id, outbox) = self.open_session(label);
        let mut registry = self.registry();
        registry.set_internal(&id);
        registry.establish(&id, Map::new());
        (id, outbox)
    }

    /// Ask the REST hooks' backend about a publish or play of a client (not of the
    /// server's own sessions); it may rename the stream.
    async fn admit(&self, session: &str, hook: Ask, req: &mut StreamRequest) -> Result<(), String> {
        let Some(hooks) = self.hooks.get() else { return Ok(()) };
        let app_key = match self.registry().session(session) {
            Some(s) if s.internal => return Ok(()),
            Some(s) => s.app_key().to_string(),
            None => return Err(reason::SESSION_DOES_NOT_EXIST.into()),
        };
        let mut body = match serde_json::to_value(StreamInfo::for_request(session, req, hook == Ask::PublishStream)) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        body.insert("status".into(), "NEW".into());
        body.insert("mediaProvider".into(), req.media_provider.clone().into());
        if let Some(custom) = &req.custom {
            body.insert("custom".into(), custom.clone());
        }
        let answer = hooks.ask(hook, &app_key, body).await.inspect_err(|_| self.count_refusal(Refusal::Hooks))?;
        if let Some(name) = answer.get("name").and_then(Value::as_str).filter(|n| *n != req.name) {
            if name.trim().is_empty() || name.len() > self.limits.name_length {
                return Err(format!("Failed by REST hook: the backend renamed the stream to an invalid name '{name}'"));
            }
            tracing::info!(session, from = %req.name, to = %name, "stream renamed by the REST hook");
            req.name = name.to_string();
        }
        Ok(())
    }

    /// Register a local player whose media peer already exists (a push relay's source
    /// leg); returns the stream key it consumes.
    pub fn register_player(
        &self,
        session: &str,
        media_session_id: &str,
        name: &str,
        peer: PeerId,
    ) -> Result<StreamKey, &'static str> {
        let req = internal_request(media_session_id, name);
        self.registry().begin_play(session, &req, peer)
    }

    /// Register a local publisher fed by an existing media peer (a pull relay's output).
    pub fn register_publisher(
        &self,
        session: &str,
        media_session_id: &str,
        name: &str,
        peer: PeerId,
        key: StreamKey,
    ) -> Result<(), &'static str> {
        let req = internal_request(media_session_id, name);
        let mut registry = self.registry();
        registry.begin_publish(session, &req, peer, key)?;
        registry.set_resumable(media_session_id);
        Ok(())
    }

    /// A pull relay's output lost its media: its players wait (PLAYBACK_PROBLEM, `why`)
    /// for [`Hub::resume_publisher`].
    pub fn hold_stream(&self, media_session_id: &str, why: &str) {
        let effects = self.registry().hold(media_session_id, why);
        self.apply(effects);
    }

    /// A held relay output gets its new media peer: returns the stream key it feeds, or
    /// `None` when the stream is not held (ended meanwhile, or never lost).
    pub fn resume_publisher(&self, media_session_id: &str, peer: PeerId) -> Option<StreamKey> {
        self.registry().resume(media_session_id, peer)
    }

    /// End one stream with a final status (no-op when it is already gone).
    pub fn end_stream(&self, media_session_id: &str, status: StreamStatus, why: &str) {
        let effects = self.registry().end(media_session_id, status, Some(why), true);
        self.apply(effects);
    }

    /// The server is stopping: refuse new streams from now on, and end every stream
    /// with `why` (players STOPPED, publishers UNPUBLISHED), each told first-hand rather
    /// than through their publisher's end. Their clients hear it before their
    /// connections close.
    pub fn end_all(&self, why: &str) {
        self.refuse_new_streams();
        let effects = self.registry().end_all(why);
        self.apply(effects);
    }

    /// The server is stopping: refuse new streams from now on.
    pub fn refuse_new_streams(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    /// The connection is gone: end everything the session owned.
    pub fn close_session(&self, session: &str) {
        let effects = self.registry().remove_session(session);
        self.apply(effects);
    }

    fn count_registry_refusal(&self, why: &str) {
        if why == registry::TOO_MANY_PENDING || why == registry::TOO_MANY_PENDING_FROM_ADDRESS {
            self.count_refusal(Refusal::Connecting);
        }
    }

    fn refuse(&self, session: &str, req: &StreamRequest, published: bool, why: &str) {
        let mut info = StreamInfo::for_request(session, req, published);
        info.status = StreamStatus::Failed;
        info.info = Some(why.to_string());
        self.registry().send(session, ServerMessage::StreamStatus(info));
    }

    /// What a client may not store whatever the stream: names and SDP beyond the limits
    /// (and nothing new once the server is stopping).
    fn check_request(&self, req: &StreamRequest) -> Result<(), String> {
        if self.closing.load(Ordering::Relaxed) {
            return Err(reason::SERVER_SHUTDOWN.to_string());
        }
        let limits = &self.limits;
        if req.name.len() > limits.name_length || req.media_session_id.len() > limits.name_length {
            self.count_refusal(Refusal::Names);
            return Err(format!(
                "Failed by error: stream name or mediaSessionId too long (limit {} bytes)",
                limits.name_length
            ));
        }
        if req.sdp.len() > limits.sdp_size {
            self.count_refusal(Refusal::Sdp);
            return Err(format!("Invalid SDP: {} bytes (limit {})", req.sdp.len(), limits.sdp_size));
        }
        let lines = req.sdp.lines().count();
        if lines > limits.sdp_lines {
            self.count_refusal(Refusal::Sdp);
            return Err(format!("Invalid SDP: {lines} lines (limit {})", limits.sdp_lines));
        }
        Ok(())
    }

    /// `publishStream`: ask the hooks, register the name, answer the offer, send
    /// `setRemoteSDP`.
    pub async fn publish(&self, session: &str, mut req: StreamRequest) {
        if let Err(why) = self.check_request(&req) {
            return self.refuse(session, &req, true, &why);
        }
        if let Err(why) = self.admit(session, Ask::PublishStream, &mut req).await {
            return self.refuse(session, &req, true, &why);
        }
        let (peer, key) = (self.media.next_id(), self.media.next_id());
        let registered = self.registry().begin_publish(session, &req, peer, key);
        if let Err(why) = registered {
            self.count_registry_refusal(why);
            return self.refuse(session, &req, true, why);
        }
        tracing::info!(session, stream = %req.name, media_session = %req.media_session_id, "publish");
        let answer = self.media.answer(peer, Role::Producer(key), req.sdp.clone()).await;
        self.finish_negotiation(session, &req.media_session_id, answer);
    }

    /// `playStream`: ask the hooks, find the published name, answer the offer, send
    /// `setRemoteSDP`.
    pub async fn play(&self, session: &str, mut req: StreamRequest) {
        if let Err(why) = self.check_request(&req) {
            return self.refuse(session, &req, false, &why);
        }
        if let Err(why) = self.admit(session, Ask::PlayStream, &mut req).await {
            return self.refuse(session, &req, false, &why);
        }
        let peer = self.media.next_id();
        let mut registered = self.registry().begin_play(session, &req, peer);
        if registered == Err(reason::STREAM_NOT_FOUND) && !req.name.trim().is_empty() {
            if let Some(fetcher) = self.fetcher.get() {
                match fetcher.fetch(&req.name).await {
                    Ok(()) => registered = self.registry().begin_play(session, &req, peer),
                    Err(why) => tracing::info!(session, stream = %req.name, reason = %why, "not fetched"),
                }
            }
        }
        let key = match registered {
            Ok(key) => key,
            Err(why) => {
                self.count_registry_refusal(why);
                return self.refuse(session, &req, false, why);
            }
        };
        tracing::info!(session, stream = %req.name, media_session = %req.media_session_id, "play");
        let answer = self.media.answer(peer, Role::Consumer(key), req.sdp.clone()).await;
        self.finish_negotiation(session, &req.media_session_id, answer);
    }

    fn finish_negotiation(&self, session: &str, media_session_id: &str, answer: Result<String, MediaError>) {
        let mut registry = self.registry();
        let Some(stream) = registry.stream(media_session_id) else {
            // Stopped while we negotiated: the registry already removed the peer.
            return;
        };
        match answer {
            Ok(sdp) => {
                let media_session_id = media_session_id.to_string();
                registry.send(session, ServerMessage::SetRemoteSdp { media_session_id, sdp });
            }
            Err(e) => {
                tracing::info!(session, stream = %stream.info.name, error = %e, "negotiation failed");
                let why = match e {
                    MediaError::NoCommonCodecs => reason::NO_COMMON_CODECS.to_string(),
                    MediaError::StreamNotFound => reason::STREAM_NOT_FOUND.to_string(),
                    other => other.to_string(),
                };
                let effects = registry.end(media_session_id, StreamStatus::Failed, Some(&why), false);
                drop(registry);
                self.apply(effects);
            }
        }
    }

    /// `unPublishStream` / `stopStream` from the stream's own session.
    pub fn stop(&self, session: &str, media_session_id: &str) {
        let mut registry = self.registry();
        if registry.stream(media_session_id).is_none_or(|s| s.info.session_id != session) {
            // Already ended by the client closing its media: the request came second.
            if !registry.was_closed_by_client(session, media_session_id) {
                registry
                    .send(session, ServerMessage::Fail(crate::wcs::protocol::Fail::warning(reason::STREAM_NOT_FOUND)));
            }
            return;
        }
        let effects = self.stopped_by_client(&mut registry, media_session_id, true);
        drop(registry);
        self.apply(effects);
    }

    /// A client ends its own stream, by request or by closing its media (whichever came
    /// first): the backend hears the request before the status it leads to (one queue).
    fn stopped_by_client(&self, registry: &mut Registry, media_session_id: &str, close: bool) -> Vec<Effect> {
        let Some(stream) = registry.stream(media_session_id) else { return Vec::new() };
        let session = stream.info.session_id.clone();
        let status = if stream.info.published { StreamStatus::Unpublished } else { StreamStatus::Stopped };
        tracing::info!(session, stream = %stream.info.name, media_session = media_session_id, ?status, "stopped by its client");
        if let (Some(hooks), Some(s)) = (self.hooks.get(), registry.session(&session)) {
            let path = if stream.info.published { "unPublishStream" } else { "stopStream" };
            if let Ok(Value::Object(body)) = serde_json::to_value(&stream.info) {
                hooks.notify(path, s.app_key(), body);
            }
        }
        registry.end(media_session_id, status, Some(reason::USER_STOP), close)
    }

    /// REST `/stream/terminate`.
    pub fn terminate_stream(&self, media_session_id: &str) -> bool {
        let mut registry = self.registry();
        let Some(stream) = registry.stream(media_session_id) else { return false };
        let status = if stream.info.published { StreamStatus::Unpublished } else { StreamStatus::Stopped };
        let effects = registry.end(media_session_id, status, Some(reason::REST_TERMINATE), true);
        drop(registry);
        self.apply(effects);
        true
    }

    /// REST `/connection/terminate`: the connection task closes and cleans up.
    pub fn terminate_session(&self, session: &str) -> bool {
        self.registry().close_session_connection(session, "terminated by REST")
    }

    /// WCS's per-stream metrics: a published stream's as the server receives it, with its
    /// players counted; a player's as it is sent to that player and reported back by it.
    /// `None` when there is no such stream.
    pub async fn stream_metrics(&self, media_session_id: &str) -> Option<Map<String, Value>> {
        let (key, name, peer, published) = {
            let registry = self.registry();
            let stream = registry.stream(media_session_id)?;
            (stream.key, stream.info.name.clone(), stream.peer, stream.info.published)
        };
        let figures = if published { self.media.figures(key).await } else { self.media.player_figures(peer).await };
        let mut metrics: Map<String, Value> =
            figures.unwrap_or_default().into_iter().map(|(k, v)| (k.to_string(), v.into())).collect();
        metrics.insert("PLAYERS".into(), self.players_of(&name).into());
        Some(metrics)
    }

    pub fn find_streams(&self, filter: &StreamFilter) -> Vec<StreamInfo> {
        self.registry().find(filter)
    }

    /// What the media engine reports, turned into stream statuses.
    pub fn on_media_event(&self, event: MediaEvent) {
        let mut registry = self.registry();
        let effects = match event {
            MediaEvent::Connected { peer } => {
                registry.connected(peer);
                Vec::new()
            }
            // A relay's output is held for the relay to resume: its agent hears it.
            MediaEvent::Failed { peer, cause } => match registry.stream_of_peer(peer) {
                Some(s) if s.resumable => {
                    let id = s.info.media_session_id.clone();
                    registry.hold(&id, reason::for_cause(cause))
                }
                Some(s) => {
                    let id = s.info.media_session_id.clone();
                    registry.end(&id, StreamStatus::Failed, Some(reason::for_cause(cause)), false)
                }
                None => Vec::new(),
            },
            MediaEvent::Closed { peer } => match registry.stream_of_peer(peer) {
                // A relay's remote closed on purpose: its signaling says why, and the
                // agent ends or holds the stream by what it says.
                Some(s) if s.resumable => Vec::new(),
                // The client closed its media on purpose: its stop, whether or not
                // its `unPublishStream` / `stopStream` has come yet.
                Some(s) => {
                    let (id, session) = (s.info.media_session_id.clone(), s.info.session_id.clone());
                    registry.closed_by_client(&session, &id);
                    self.stopped_by_client(&mut registry, &id, false)
                }
                None => Vec::new(),
            },
            MediaEvent::KeyframeRequested { .. } => Vec::new(),
        };
        drop(registry);
        self.apply(effects);
    }
}

/// The REST hooks' events, fed by the registry.
struct HookEvents(Arc<Hooks>);

impl StatusListener for HookEvents {
    fn stream(&self, session: &Session, info: &StreamInfo) {
        self.0.stream_event(session.app_key(), session.internal, info);
    }
    fn connection(&self, session: &Session, status: &str) {
        self.0.connection_event(session.app_key(), session.internal, &session.id, status, None);
    }
}

fn internal_request(media_session_id: &str, name: &str) -> StreamRequest {
    StreamRequest {
        media_session_id: media_session_id.to_string(),
        name: name.to_string(),
        has_audio: true,
        has_video: true,
        media_provider: "WebRTC".into(),
        ..Default::default()
    }
}

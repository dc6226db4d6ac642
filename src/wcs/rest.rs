//! The REST API under `/rest-api`, as WCS shapes it: POST (or GET for the `find_all`
//! calls the SDK makes) with a JSON body, JSON answers, CORS for browser callers. One
//! error type maps every failure to a status and `{"error": ...}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::access::credential::{self, Credential};
use crate::cluster::Cluster;
use crate::media::latency::LatencySnapshot;
use crate::relay::{Direction, RelayError, RelayFilter, RelayManager, RelayRequest};
use crate::state::hub::{Hub, Refusal};
use crate::state::registry::StreamFilter;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into() }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

pub type ApiResult = Result<Response, ApiError>;

/// Parse a JSON body; an empty body reads as `{}`.
pub fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("Invalid request body: {e}")))
}

/// A required, non-empty string field.
pub fn required(value: Option<String>, field: &str) -> Result<String, ApiError> {
    value.filter(|v| !v.trim().is_empty()).ok_or_else(|| ApiError::bad_request(format!("Missing field '{field}'")))
}

pub fn found<T: serde::Serialize>(list: Vec<T>, what: &str) -> ApiResult {
    if list.is_empty() {
        // WCS answers an empty search with 404.
        return Err(ApiError::not_found(format!("No {what} found")));
    }
    Ok(Json(list).into_response())
}

/// Every REST route of the server; `cors_origins`: the origins whose pages may call it
/// (`None`: any).
pub fn routes(
    hub: Arc<Hub>,
    relays: Arc<RelayManager>,
    cluster: Option<Arc<Cluster>>,
    cors_origins: Option<Vec<String>>,
    credential: Option<Credential>,
) -> Router {
    let stats = Router::new().route("/stats", get(stats).post(stats)).with_state((hub.clone(), relays.clone()));
    let relay_api = Router::new()
        .route("/pull/push", post(pull_push))
        .route("/pull/pull", post(pull_pull))
        .route("/pull/find_all", get(pull_find_all).post(pull_find_all))
        .route("/pull/find", post(pull_find))
        .route("/pull/terminate", post(pull_terminate))
        .with_state(relays);
    let api = Router::new()
        .route("/stream/find_all", get(stream_find_all).post(stream_find_all))
        .route("/stream/find", post(stream_find))
        .route("/stream/metrics", post(stream_metrics))
        .route("/stream/terminate", post(stream_terminate))
        .route("/connection/find_all", get(connection_find_all).post(connection_find_all))
        .route("/connection/terminate", post(connection_terminate))
        .with_state(hub)
        .merge(relay_api)
        .merge(stats)
        .merge(cdn_routes(cluster));
    let cors_origins = Arc::new(cors_origins);
    Router::new()
        .nest("/rest-api", api)
        .fallback(unknown)
        .layer(middleware::from_fn(json_only))
        .layer(middleware::from_fn_with_state(credential, credential::require))
        .layer(middleware::from_fn(move |request, next| cors(cors_origins.clone(), request, next)))
}

/// WCS's CDN calls, and the one a web front end needs; 404 when the cluster is off.
fn cdn_routes(cluster: Option<Arc<Cluster>>) -> Router {
    Router::new()
        .route("/cdn/show_routes", get(cdn_show_routes).post(cdn_show_routes))
        .route("/cdn/show_nodes", get(cdn_show_nodes).post(cdn_show_nodes))
        .route("/cdn/edge_for_player", get(cdn_edge_for_player).post(cdn_edge_for_player))
        .route("/cdn/warmup", post(cdn_warmup))
        .with_state(cluster)
}

fn cluster_of(cluster: Option<Arc<Cluster>>) -> Result<Arc<Cluster>, ApiError> {
    cluster.ok_or_else(|| ApiError::not_found("The cluster is off on this node (cdn_enabled=false)"))
}

/// `{"<origin URI><stream>": "<stream>"}` for every stream this edge pulls (WCS's shape:
/// route id to stream name).
async fn cdn_show_routes(State(cluster): State<Option<Arc<Cluster>>>) -> ApiResult {
    let routes: serde_json::Map<String, Value> = cluster_of(cluster)?
        .routes()
        .into_iter()
        .map(|(stream, uri)| (format!("{uri}{stream}"), stream.into()))
        .collect();
    Ok(Json(routes).into_response())
}

async fn cdn_show_nodes(State(cluster): State<Option<Arc<Cluster>>>) -> ApiResult {
    found(cluster_of(cluster)?.nodes(), "nodes")
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Warmup {
    stream_name: Option<String>,
}

/// WCS's warm-up: pull a stream to this edge now and keep it while an origin has it.
async fn cdn_warmup(State(cluster): State<Option<Arc<Cluster>>>, body: Bytes) -> ApiResult {
    let cluster = cluster_of(cluster)?;
    let req: Warmup = parse_body(&body)?;
    let name = required(req.stream_name, "streamName")?;
    cluster.warm_up(&name).await.map_err(ApiError::not_found)?;
    Ok(Json(json!({ "streamName": name, "status": "PLAYING" })).into_response())
}

/// The least loaded edge's WebSocket URL, for a player.
async fn cdn_edge_for_player(State(cluster): State<Option<Arc<Cluster>>>) -> ApiResult {
    let edge = cluster_of(cluster)?.edge_for_player().ok_or_else(|| ApiError::not_found("No edge in the cluster"))?;
    Ok(Json(json!({ "url": edge })).into_response())
}

async fn unknown(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("Unknown REST method {method} {}", uri.path()))
}

/// A POST with a body must say it is JSON. A page on another site can send a "simple"
/// cross-origin POST (text/plain, form data) without asking first; a JSON one makes the
/// browser ask (preflight), and CORS then decides.
async fn json_only(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok());
    let has_body = length.is_some_and(|len| len.trim() != "0") || headers.contains_key(header::TRANSFER_ENCODING);
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if request.method() == Method::POST && has_body && !json {
        let why = "Content-Type must be application/json";
        return ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, why).into_response();
    }
    next.run(request).await
}

/// Browsers call the API cross-origin: allow the configured origins (any by default,
/// as WCS does), never with credentials, and answer preflights.
/// CORS for the REST API and the WHIP/WHEP endpoints (`rest.cors_origins`).
pub(crate) async fn cors(origins: Arc<Option<Vec<String>>>, request: Request, next: Next) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    // A preflight is answered here, with what the route adds to it (WHIP's Accept-Post).
    let preflight = request.method() == Method::OPTIONS;
    let mut response = next.run(request).await;
    if preflight && !response.status().is_success() {
        response = StatusCode::NO_CONTENT.into_response();
    }
    let allowed = match (origins.as_ref(), &origin) {
        (None, _) => Some(HeaderValue::from_static("*")),
        (Some(list), Some(o)) if o.to_str().is_ok_and(|o| list.iter().any(|a| a == o)) => Some(o.clone()),
        _ => None,
    };
    let headers = response.headers_mut();
    if origins.is_some() {
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    if let Some(allowed) = allowed {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        let methods = HeaderValue::from_static("GET, POST, DELETE, PATCH, OPTIONS");
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods);
        // WHIP/WHEP answers name their resource in these.
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("Location, ETag"));
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("Content-Type, Authorization"));
    }
    response
}

async fn stream_find_all(State(hub): State<Arc<Hub>>) -> ApiResult {
    found(hub.find_streams(&StreamFilter::default()), "streams")
}

async fn stream_find(State(hub): State<Arc<Hub>>, body: Bytes) -> ApiResult {
    let filter: StreamFilter = parse_body(&body)?;
    let streams = hub.find_streams(&filter);
    if !filter.display.iter().flatten().any(|d| d == "metrics") {
        return found(streams, "streams");
    }
    // WCS's `display: ["metrics"]`: each stream with a `metrics` object.
    let mut shown = Vec::new();
    for stream in streams {
        let metrics = hub.stream_metrics(&stream.media_session_id).await.unwrap_or_default();
        let mut object = match serde_json::to_value(&stream) {
            Ok(Value::Object(o)) => o,
            _ => continue,
        };
        object.insert("metrics".into(), Value::Object(metrics));
        shown.push(Value::Object(object));
    }
    found(shown, "streams")
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MetricsOf {
    media_session_id: Option<String>,
}

/// WCS's `/stream/metrics`: one stream's metrics object.
async fn stream_metrics(State(hub): State<Arc<Hub>>, body: Bytes) -> ApiResult {
    let req: MetricsOf = parse_body(&body)?;
    let id = required(req.media_session_id, "mediaSessionId")?;
    let metrics = hub.stream_metrics(&id).await.ok_or_else(|| ApiError::not_found("Stream not found"))?;
    Ok(Json(metrics).into_response())
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct TerminateStream {
    media_session_id: Option<String>,
}

async fn stream_terminate(State(hub): State<Arc<Hub>>, body: Bytes) -> ApiResult {
    let req: TerminateStream = parse_body(&body)?;
    let id = required(req.media_session_id, "mediaSessionId")?;
    if !hub.terminate_stream(&id) {
        return Err(ApiError::not_found(format!("Stream with mediaSessionId '{id}' not found")));
    }
    Ok(StatusCode::OK.into_response())
}

async fn connection_find_all(State(hub): State<Arc<Hub>>) -> ApiResult {
    let list: Vec<Value> = hub
        .sessions()
        .into_iter()
        .map(|s| {
            let mut obj = s.client;
            obj.insert("sessionId".into(), s.id.into());
            obj.insert("remoteAddress".into(), s.remote.into());
            obj.insert("established".into(), s.established.into());
            Value::Object(obj)
        })
        .collect();
    found(list, "connections")
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct TerminateConnection {
    session_id: Option<String>,
}

async fn connection_terminate(State(hub): State<Arc<Hub>>, body: Bytes) -> ApiResult {
    let req: TerminateConnection = parse_body(&body)?;
    let id = required(req.session_id, "sessionId")?;
    if !hub.terminate_session(&id) {
        return Err(ApiError::not_found(format!("Connection '{id}' not found")));
    }
    Ok(StatusCode::OK.into_response())
}

impl From<RelayError> for ApiError {
    fn from(e: RelayError) -> Self {
        let status = match e {
            RelayError::BadRequest(_) => StatusCode::BAD_REQUEST,
            RelayError::NotFound(_) => StatusCode::NOT_FOUND,
            RelayError::Conflict(_) => StatusCode::CONFLICT,
            RelayError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            RelayError::Limit(_) => StatusCode::TOO_MANY_REQUESTS,
            RelayError::Forbidden(_) => StatusCode::FORBIDDEN,
        };
        ApiError::new(status, e.to_string())
    }
}

async fn pull_push(State(relays): State<Arc<RelayManager>>, body: Bytes) -> ApiResult {
    let req: RelayRequest = parse_body(&body)?;
    Ok(Json(relays.start(Direction::Push, req).await?).into_response())
}

async fn pull_pull(State(relays): State<Arc<RelayManager>>, body: Bytes) -> ApiResult {
    let req: RelayRequest = parse_body(&body)?;
    Ok(Json(relays.start(Direction::Pull, req).await?).into_response())
}

async fn pull_find_all(State(relays): State<Arc<RelayManager>>) -> ApiResult {
    found(relays.find(&RelayFilter::default()), "relays")
}

async fn pull_find(State(relays): State<Arc<RelayManager>>, body: Bytes) -> ApiResult {
    let filter: RelayFilter = parse_body(&body)?;
    found(relays.find(&filter), "relays")
}

async fn pull_terminate(State(relays): State<Arc<RelayManager>>, body: Bytes) -> ApiResult {
    let filter: RelayFilter = parse_body(&body)?;
    Ok(Json(relays.terminate(&filter).await?).into_response())
}

/// `/rest-api/stats`, beyond WCS: what the server holds right now and has done. Its
/// own type: the public JSON is decided here, not by the media core's structs.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Stats {
    sessions: usize,
    streams: usize,
    relays: usize,
    /// Open TCP connections.
    connections: usize,
    /// Tokio tasks alive (sessions, relay agents, timers): a leak shows here.
    tasks: usize,
    refused: Refused,
    media: MediaFigures,
}

/// Requests refused by a limit, by kind (README "Limits").
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Refused {
    connections: u64,
    handshakes: u64,
    slow_readers: u64,
    sdp: u64,
    names: u64,
    connection_data: u64,
    connecting: u64,
    relays: u64,
    relay_targets: u64,
    hooks: u64,
}

/// The media threads' figures, added up.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct MediaFigures {
    threads: usize,
    /// WebRTC peers held: a leak shows here first.
    peers: usize,
    streams: usize,
    packets_in: u64,
    packets_forwarded: u64,
    datagrams_dropped: u64,
    datagrams_sent: u64,
    messages_sent: u64,
    send_calls: u64,
    forward_latency: LatencySnapshot,
    read_latency: LatencySnapshot,
}

async fn stats(State((hub, relays)): State<(Arc<Hub>, Arc<RelayManager>)>) -> ApiResult {
    let media = hub.media().stats().await.map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let counts = hub.counts();
    let refused = |what: Refusal| counts.refused[what as usize];
    let (router, sent) = (media.router, media.sent);
    Ok(Json(Stats {
        sessions: counts.sessions,
        streams: counts.streams,
        relays: relays.find(&RelayFilter::default()).len(),
        connections: counts.connections,
        tasks: tokio::runtime::Handle::current().metrics().num_alive_tasks(),
        refused: Refused {
            connections: counts.refused_connections,
            handshakes: refused(Refusal::Handshakes),
            slow_readers: refused(Refusal::SlowReaders),
            sdp: refused(Refusal::Sdp),
            names: refused(Refusal::Names),
            connection_data: refused(Refusal::ConnectionData),
            connecting: refused(Refusal::Connecting),
            relays: refused(Refusal::Relays),
            relay_targets: refused(Refusal::RelayTargets),
            hooks: refused(Refusal::Hooks),
        },
        media: MediaFigures {
            threads: media.threads,
            peers: router.peers,
            streams: router.streams,
            packets_in: router.packets_in,
            packets_forwarded: router.packets_forwarded,
            datagrams_dropped: router.datagrams_dropped,
            datagrams_sent: sent.datagrams_sent,
            messages_sent: sent.messages_sent,
            send_calls: sent.send_calls,
            forward_latency: media.forward_latency,
            read_latency: media.read_latency,
        },
    })
    .into_response())
}

//! WHIP (RFC 9725) and WHEP: standard clients (OBS, GStreamer, FFmpeg, browsers) publish
//! and play over one HTTP exchange each. A WHIP or WHEP request is a session like a
//! WebSocket client's, driven through the same [`Hub`] (limits, REST hooks, names,
//! statuses); only the answer travels differently: the SDP answer in a `201 Created`,
//! the end as a `DELETE` of the resource. A `Bearer` token becomes the session's
//! `custom.token`, which the REST hooks judge like any client's.
//!
//! hopcast is ICE-lite and puts its candidates in the answer: it needs no trickle, and
//! answers `PATCH` (trickle, ICE restart) with 405, as the RFC allows.
//!
//! [`client`] is the other side, for relays and tests.

pub mod client;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Map};

use crate::net::listener::RemoteAddr;
use crate::state::hub::Hub;
use crate::state::registry::{self, Outbound, OutboxReceiver};
use crate::wcs::protocol::{reason, ServerMessage, StreamRequest, StreamStatus};

pub const SDP: &str = "application/sdp";

/// One WHIP or WHEP session: its registry session and stream.
struct Resource {
    session: String,
    media_session_id: String,
    /// The client's address: a WHIP/WHEP session holds no connection, so the cap on
    /// connections per address is counted here instead.
    ip: std::net::IpAddr,
}

#[derive(Clone)]
pub struct WhipState {
    hub: Arc<Hub>,
    resources: Arc<Mutex<HashMap<String, Resource>>>,
}

/// `POST /whip/{name}`, `POST /whep/{name}`, and their resources, with CORS as the REST
/// API has it (browsers publish and play from other origins).
pub fn routes(hub: Arc<Hub>, cors_origins: Option<Vec<String>>) -> Router {
    let state = WhipState { hub, resources: Arc::default() };
    let cors_origins = Arc::new(cors_origins);
    Router::new()
        .route("/whip/{name}", post(offer::<true>).options(preflight))
        .route("/whep/{name}", post(offer::<false>).options(preflight))
        .route("/whip/resource/{id}", axum::routing::delete(end).patch(patch).options(preflight))
        .route("/whep/resource/{id}", axum::routing::delete(end).patch(patch).options(preflight))
        .with_state(state)
        .layer(axum::middleware::from_fn(move |request, next| {
            crate::wcs::rest::cors(cors_origins.clone(), request, next)
        }))
}

fn error(status: StatusCode, text: impl Into<String>) -> Response {
    (status, Json(json!({ "error": text.into() }))).into_response()
}

async fn preflight() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert("accept-post", HeaderValue::from_static(SDP));
    response
}

/// `POST` of an offer: WHIP (`PUBLISH`) or WHEP.
async fn offer<const PUBLISH: bool>(
    State(state): State<WhipState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    ConnectInfo(RemoteAddr(remote)): ConnectInfo<RemoteAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    open(state, PUBLISH, name, query, remote, headers, body).await
}

/// The HTTP status for a refusal the protocol gives as a FAILED reason.
fn status_for(why: &str) -> StatusCode {
    match why {
        reason::NAME_IN_USE => StatusCode::CONFLICT,
        reason::STREAM_NOT_FOUND => StatusCode::NOT_FOUND,
        reason::NO_COMMON_CODECS => StatusCode::UNPROCESSABLE_ENTITY,
        registry::TOO_MANY_PENDING | registry::TOO_MANY_PENDING_FROM_ADDRESS => StatusCode::TOO_MANY_REQUESTS,
        w if w.starts_with("Invalid SDP") || w.starts_with("Failed by error") => StatusCode::BAD_REQUEST,
        // Anything else is a policy's answer (the REST hooks' backend).
        _ => StatusCode::FORBIDDEN,
    }
}

async fn open(
    state: WhipState,
    publish: bool,
    name: String,
    query: HashMap<String, String>,
    remote: std::net::SocketAddr,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case(SDP)) {
        return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("The offer must be sent as {SDP}"));
    }
    let Ok(sdp) = String::from_utf8(body.to_vec()) else {
        return error(StatusCode::BAD_REQUEST, "Invalid SDP: not UTF-8");
    };
    let cap = state.hub.limits().connections_per_ip;
    let open_here = {
        let resources = state.resources.lock().unwrap_or_else(|p| p.into_inner());
        resources.values().filter(|r| r.ip == remote.ip()).count()
    };
    if open_here >= cap {
        state.hub.count_refusal(crate::state::hub::Refusal::Connecting);
        let why = format!("Too many WHIP/WHEP sessions from this address (limit {cap}, limits.connections_per_ip)");
        return error(StatusCode::TOO_MANY_REQUESTS, why);
    }
    let hub = state.hub.clone();
    let (session, mut outbox) = hub.open_session(remote.to_string());
    let ends = |why: &str| {
        hub.close_session(&session);
        tracing::info!(session, stream = %name, reason = why, "WHIP/WHEP request refused");
    };

    // The session: the client's token is its custom data, judged like any client's.
    let mut data = Map::new();
    data.insert("appKey".into(), query.get("appKey").map_or(crate::access::hooks::DEFAULT_APP, |s| s).into());
    data.insert("clientVersion".into(), if publish { "WHIP" } else { "WHEP" }.into());
    data.insert("mediaProviders".into(), json!(["WebRTC"]));
    let token =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if let Some(token) = token {
        data.insert("custom".into(), json!({ "token": token.trim() }));
    }
    hub.establish(&session, data).await;
    if !hub.is_established(&session) {
        let why = refusal(&mut outbox).unwrap_or_else(|| "Refused".into());
        ends(&why);
        return error(StatusCode::UNAUTHORIZED, why);
    }

    let media_session_id = uuid::Uuid::new_v4().to_string();
    let request = StreamRequest {
        media_session_id: media_session_id.clone(),
        name: name.clone(),
        published: publish,
        has_audio: true,
        has_video: true,
        sdp,
        media_provider: "WebRTC".into(),
        custom: None,
    };
    if publish {
        hub.publish(&session, request).await
    } else {
        hub.play(&session, request).await
    }
    let answer = loop {
        match outbox.try_recv() {
            Some(Outbound::Message(ServerMessage::SetRemoteSdp { sdp, .. })) => break Ok(sdp),
            Some(Outbound::Message(ServerMessage::StreamStatus(s))) if s.status == StreamStatus::Failed => {
                break Err(s.info.unwrap_or_else(|| reason::FAILED_BY_ERROR.into()))
            }
            Some(_) => continue,
            None => break Err(reason::FAILED_BY_ERROR.into()),
        }
    };
    let sdp = match answer {
        Ok(sdp) => sdp,
        Err(why) => {
            ends(&why);
            return error(status_for(&why), why);
        }
    };

    let id = uuid::Uuid::new_v4().simple().to_string();
    let kind = if publish { "whip" } else { "whep" };
    tracing::info!(session, stream = %name, resource = %id, "{kind} session");
    state.resources.lock().unwrap_or_else(|p| p.into_inner()).insert(
        id.clone(),
        Resource { session: session.clone(), media_session_id: media_session_id.clone(), ip: remote.ip() },
    );
    tokio::spawn(watch(state.clone(), id.clone(), outbox));
    let mut response = (StatusCode::CREATED, sdp).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    let location = format!("/{kind}/resource/{id}");
    if let Ok(v) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{id}\"")) {
        headers.insert(header::ETAG, v);
    }
    response
}

/// The reason a refused `connection` was given (its `fail`).
fn refusal(outbox: &mut OutboxReceiver) -> Option<String> {
    while let Some(item) = outbox.try_recv() {
        if let Outbound::Message(ServerMessage::Fail(f)) = item {
            return Some(f.info);
        }
    }
    None
}

/// Read the session's messages for as long as it lives: its stream's end (media failed,
/// the publisher gone, REST terminate) ends the session and the resource.
async fn watch(state: WhipState, id: String, mut outbox: OutboxReceiver) {
    while let Some(item) = outbox.recv().await {
        match item {
            Outbound::Message(ServerMessage::StreamStatus(s)) if s.status.is_final() => break,
            Outbound::Close(_) | Outbound::Refuse(_) => break,
            _ => {}
        }
    }
    let gone = state.resources.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    if let Some(resource) = gone {
        state.hub.close_session(&resource.session);
    }
}

/// `DELETE` of a resource: the stream ends (its players hear it as from any publisher).
async fn end(State(state): State<WhipState>, Path(id): Path<String>) -> Response {
    let gone = state.resources.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    let Some(resource) = gone else { return error(StatusCode::NOT_FOUND, "No such WHIP/WHEP resource") };
    state.hub.stop(&resource.session, &resource.media_session_id);
    state.hub.close_session(&resource.session);
    StatusCode::OK.into_response()
}

/// Trickle and ICE restarts are not supported: an ICE-lite server needs neither.
async fn patch(State(state): State<WhipState>, Path(id): Path<String>) -> Response {
    if !state.resources.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&id) {
        return error(StatusCode::NOT_FOUND, "No such WHIP/WHEP resource");
    }
    let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "Trickle ICE and ICE restarts are not supported");
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("DELETE, OPTIONS"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_http_statuses() {
        assert_eq!(status_for(reason::NAME_IN_USE), StatusCode::CONFLICT);
        assert_eq!(status_for(reason::STREAM_NOT_FOUND), StatusCode::NOT_FOUND);
        assert_eq!(status_for("Invalid SDP: not a valid session description"), StatusCode::BAD_REQUEST);
        assert_eq!(status_for(reason::NO_COMMON_CODECS), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(status_for("Not for you"), StatusCode::FORBIDDEN);
    }
}

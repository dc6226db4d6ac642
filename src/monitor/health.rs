//! `/health`: the process answers. `/ready`: it can serve: its listeners are bound (it
//! answers on one), every media thread answers within a second, and a cluster node is
//! connected to NATS. 200 or 503, with each check in the body.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::Sources;

pub async fn health() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

pub async fn ready(State(sources): State<Sources>) -> Response {
    let media = tokio::time::timeout(Duration::from_secs(1), sources.hub.media().stats()).await;
    let media_ok = matches!(media, Ok(Ok(_)));
    let cluster = sources.cluster.as_ref().map(|c| c.connected());
    let ready = media_ok && cluster.unwrap_or(true);
    let body = json!({
        "ready": ready,
        "checks": { "listeners": true, "mediaThreads": media_ok, "cluster": cluster },
    });
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

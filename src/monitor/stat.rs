//! `/?action=stat`: WCS's load summary, as `key=value` lines under section headings
//! (`&format=json` for one JSON object), with the fields that have a meaning here:
//! connections (all are WebSocket or HTTP), media ports (one per media thread, always
//! busy), WebRTC streams in and out (WHIP/WHEP included), viewers, and the process.

use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::Sources;
use crate::access::credential::{self, Credential};

/// Answer `GET /?action=stat`; pass anything else on.
pub async fn intercept(sources: Sources, credential: Option<Credential>, request: Request, next: Next) -> Response {
    let query = request.uri().query().unwrap_or_default().to_string();
    let asked = request.uri().path() == "/" && query.split('&').any(|kv| kv == "action=stat");
    if !asked {
        return next.run(request).await;
    }
    let json = query.split('&').any(|kv| kv == "format=json");
    let inner = axum::routing::get(move || async move { page(&sources, json).await });
    let router = axum::Router::new()
        .route("/", inner)
        .layer(axum::middleware::from_fn_with_state(credential, credential::require));
    match tower::ServiceExt::oneshot(router, request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

async fn page(sources: &Sources, json: bool) -> Response {
    let sections = figures(sources).await;
    if json {
        let object: serde_json::Map<String, serde_json::Value> =
            sections.iter().flat_map(|(_, fields)| fields.iter().map(|(k, v)| (k.to_string(), (*v).into()))).collect();
        return Json(object).into_response();
    }
    let mut text = String::new();
    for (heading, fields) in &sections {
        text.push_str(&format!("-----{heading}-----\n"));
        for (k, v) in fields {
            text.push_str(&format!("{k}={v}\n"));
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

type Section = (&'static str, Vec<(&'static str, u64)>);

async fn figures(sources: &Sources) -> Vec<Section> {
    let counts = sources.hub.counts();
    let census = sources.hub.census();
    let count = |published: bool| census.iter().filter(|((p, _), _)| *p == published).map(|(_, n)| *n as u64).sum();
    let threads = sources.hub.media().addrs().len() as u64;
    let core_threads = std::fs::read_dir("/proc/self/task").map(|d| d.count() as u64).unwrap_or(0);
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok()))
        .unwrap_or(0u64);
    let relays = sources.relays.find(&crate::relay::RelayFilter::default()).len() as u64;
    vec![
        (
            "Connection Stats",
            vec![
                ("connections", counts.connections as u64),
                ("connections_websocket", counts.sessions as u64),
                ("connections_rtmfp", 0),
            ],
        ),
        ("Port Stats", vec![("ports_media_busy", threads), ("ports_media_free", 0), ("ports_media_quarantine", 0)]),
        (
            "Streams Stats",
            vec![
                ("streams_webrtc_in", count(true)),
                ("streams_webrtc_out", count(false)),
                ("streams_viewers", count(false)),
                ("streams_relays", relays),
            ],
        ),
        ("Core Stats", vec![("core_threads", core_threads), ("core_rss_bytes", rss * 1024)]),
    ]
}

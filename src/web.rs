//! The built-in web apps (Two Way Streaming, Player, Relay console and the `hopcast.js`
//! client they share), embedded in the binary; `web.dir` serves a folder instead, for
//! developing the pages without rebuilding. `/config.json` tells pages our ports.

use std::path::PathBuf;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

/// (file name, content type, bytes) of every page file.
const FILES: &[(&str, &str, &[u8])] = &[
    ("index.html", "text/html; charset=utf-8", include_bytes!("../web/index.html")),
    ("hopcast.js", "text/javascript; charset=utf-8", include_bytes!("../web/hopcast.js")),
    ("app.css", "text/css; charset=utf-8", include_bytes!("../web/app.css")),
    ("two-way.html", "text/html; charset=utf-8", include_bytes!("../web/two-way.html")),
    ("two-way.js", "text/javascript; charset=utf-8", include_bytes!("../web/two-way.js")),
    ("player.html", "text/html; charset=utf-8", include_bytes!("../web/player.html")),
    ("player.js", "text/javascript; charset=utf-8", include_bytes!("../web/player.js")),
    ("relay.html", "text/html; charset=utf-8", include_bytes!("../web/relay.html")),
    ("relay.js", "text/javascript; charset=utf-8", include_bytes!("../web/relay.js")),
];

#[derive(Clone)]
pub struct WebState {
    /// Serve from this folder instead of the embedded copies.
    pub dir: Option<PathBuf>,
    pub ports: serde_json::Value,
}

impl WebState {
    pub fn new(dir: Option<PathBuf>, ws: u16, wss: u16, http: u16, https: u16) -> Self {
        WebState { dir, ports: json!({ "wsPort": ws, "wssPort": wss, "httpPort": http, "httpsPort": https }) }
    }
}

pub fn routes(state: WebState) -> Router {
    Router::new()
        .route("/", get(|s: State<WebState>| file(s, Path("index.html".to_string()))))
        .route("/config.json", get(|State(s): State<WebState>| async move { Json(s.ports) }))
        .route("/{file}", get(file))
        .with_state(state)
}

async fn file(State(state): State<WebState>, Path(name): Path<String>) -> Response {
    let Some((name, kind, embedded)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, Json(json!({ "error": format!("No page '{name}'") }))).into_response();
    };
    let body = match &state.dir {
        // Development only: small files, so a blocking read is fine.
        Some(dir) => match std::fs::read(dir.join(name)) {
            Ok(bytes) => bytes,
            Err(e) => return (StatusCode::NOT_FOUND, Json(json!({ "error": format!("{name}: {e}") }))).into_response(),
        },
        None => embedded.to_vec(),
    };
    ([(header::CONTENT_TYPE, *kind), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

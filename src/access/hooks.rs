//! WCS's REST hooks: the operator's backend decides who may connect, publish and play,
//! and hears what happened. For each request the server POSTs JSON to
//! `<backend>/<method>` (`/connect`, `/publishStream`, `/playStream`) and waits for the
//! answer (at most `rest_request_timeout`): 2xx admits (a `name` in the answer renames
//! the stream: WCS's OVERWRITE, kept to that one safe field), anything else refuses with
//! the backend's reason. A backend that does not answer refuses (`hooks.on_error=FAIL`,
//! the default) or lets the client through with a warning (`LOG`).
//!
//! `/unPublishStream`, `/stopStream`, `/ConnectionStatusEvent` and `/StreamStatusEvent`
//! are notifications: one task sends them in the order they happened, and media never
//! waits for them (a full queue drops, counted). A `publishStream` or `playStream`
//! request waits (at most the hook timeout) for the notifications queued before it, so
//! the backend never hears of a stream before the session's ESTABLISHED. The server's
//! own sessions (relay agents, cluster pulls) are not asked, and their events carry
//! `"internal": true`.
//!
//! The backend is chosen by the client's `appKey` (`hooks.apps`, then `hooks.url`); an
//! appKey with no backend is refused.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot};

use crate::config;
use crate::net::http_client::HttpClient;
use crate::wcs::protocol::StreamInfo;

/// The appKey of a client that sends none (the SDK's default).
pub const DEFAULT_APP: &str = "defaultApp";

/// Notifications waiting for the backend, at most.
const EVENT_QUEUE: usize = 4096;

/// The request hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    Connect,
    PublishStream,
    PlayStream,
}

impl Ask {
    fn path(self) -> &'static str {
        match self {
            Ask::Connect => "connect",
            Ask::PublishStream => "publishStream",
            Ask::PlayStream => "playStream",
        }
    }
}

pub struct Hooks {
    config: config::Hooks,
    client: HttpClient,
    node_id: String,
    events: mpsc::Sender<Queued>,
    dropped: Arc<AtomicU64>,
}

/// What the notification task takes, in order.
enum Queued {
    /// POST this body to this URL.
    Notify(String, Value),
    /// Say when everything queued before has been sent.
    Mark(oneshot::Sender<()>),
}

impl Hooks {
    /// Ready to ask; notifications go out from a task started here.
    pub fn start(config: config::Hooks, tls: Arc<rustls::ClientConfig>, node_id: String) -> Arc<Hooks> {
        let client = HttpClient::new(tls, config.timeout);
        let (events, queue) = mpsc::channel(EVENT_QUEUE);
        tokio::spawn(deliver(client.clone(), queue));
        Arc::new(Hooks { config, client, node_id, events, dropped: Arc::default() })
    }

    /// Notifications dropped because the backend fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn backend(&self, app_key: &str) -> Option<&str> {
        let own = self.config.apps.iter().find(|(app, _)| app == app_key).map(|(_, url)| url.as_str());
        own.or(self.config.url.as_deref())
    }

    fn with_node(&self, mut body: Map<String, Value>, app_key: &str) -> Value {
        body.insert("nodeId".into(), self.node_id.clone().into());
        body.insert("appKey".into(), app_key.into());
        Value::Object(body)
    }

    /// Ask the backend of `app_key` whether to go on with `body`: `Ok` with the fields
    /// of its answer, or `Err` with the reason to give the client.
    pub async fn ask(&self, hook: Ask, app_key: &str, body: Map<String, Value>) -> Result<Map<String, Value>, String> {
        let Some(backend) = self.backend(app_key) else {
            return Err(format!("Unknown application: no REST hook backend for appKey '{app_key}'"));
        };
        let url = format!("{backend}/{}", hook.path());
        let body = serde_json::to_vec(&self.with_node(body, app_key)).expect("serializable");
        if hook != Ask::Connect {
            self.earlier_notifications_sent().await;
        }
        match self.client.post_json(&url, body).await {
            Ok(answer) if (200..300).contains(&answer.status) => {
                Ok(serde_json::from_slice::<Map<String, Value>>(&answer.body).unwrap_or_default())
            }
            Ok(answer) => Err(refusal_reason(answer.status, &answer.body)),
            Err(e) if self.config.fail_on_error => {
                tracing::warn!(%url, error = %e, "REST hook backend did not answer: refused (hooks.on_error=FAIL)");
                Err("Failed by REST hook: the backend did not answer".into())
            }
            Err(e) => {
                tracing::warn!(%url, error = %e, "REST hook backend did not answer: let through (hooks.on_error=LOG)");
                Ok(Map::new())
            }
        }
    }

    /// Wait, at most the hook timeout, until the notifications queued so far are sent:
    /// a request must not overtake what happened before it (the connection event the
    /// client's publish follows at once). A full queue is not waited for.
    async fn earlier_notifications_sent(&self) {
        let (mark, sent) = oneshot::channel();
        if self.events.try_send(Queued::Mark(mark)).is_ok() {
            let _ = tokio::time::timeout(self.config.timeout, sent).await;
        }
    }

    /// Queue a notification (`/unPublishStream`, `/stopStream`, the status events).
    pub fn notify(&self, path: &'static str, app_key: &str, body: Map<String, Value>) {
        let Some(backend) = self.backend(app_key) else { return };
        let item = Queued::Notify(format!("{backend}/{path}"), self.with_node(body, app_key));
        if self.events.try_send(item).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A stream's status changed (what its client was just sent).
    pub fn stream_event(&self, app_key: &str, internal: bool, info: &StreamInfo) {
        let Ok(Value::Object(mut body)) = serde_json::to_value(info) else { return };
        body.insert("internal".into(), internal.into());
        self.notify("StreamStatusEvent", app_key, body);
    }

    /// A session's status changed: ESTABLISHED, DISCONNECTED, or FAILED (refused).
    pub fn connection_event(&self, app_key: &str, internal: bool, session: &str, status: &str, info: Option<&str>) {
        let mut body = json!({ "sessionId": session, "status": status, "internal": internal });
        if let Some(info) = info {
            body["info"] = info.into();
        }
        let Value::Object(body) = body else { return };
        self.notify("ConnectionStatusEvent", app_key, body);
    }
}

/// Send notifications one at a time, in order; a backend that is down costs each one
/// its timeout, and the queue's bound keeps that from growing without end.
async fn deliver(client: HttpClient, mut queue: mpsc::Receiver<Queued>) {
    while let Some(item) = queue.recv().await {
        let (url, body) = match item {
            Queued::Notify(url, body) => (url, body),
            Queued::Mark(sent) => {
                let _ = sent.send(());
                continue;
            }
        };
        let body = serde_json::to_vec(&body).expect("serializable");
        match client.post_json(&url, body).await {
            Ok(answer) if (200..300).contains(&answer.status) => {}
            Ok(answer) => tracing::debug!(%url, status = answer.status, "REST hook notification not accepted"),
            Err(e) => tracing::debug!(%url, error = %e, "REST hook notification not delivered"),
        }
    }
}

/// What a refusing backend said, for the client: a JSON `reason` (or `info`, `message`,
/// `error`), else a short text body, else the status.
fn refusal_reason(status: u16, body: &[u8]) -> String {
    let json: Option<Map<String, Value>> = serde_json::from_slice(body).ok();
    let field = json.and_then(|m| {
        ["reason", "info", "message", "error"].iter().find_map(|k| m.get(*k).and_then(Value::as_str).map(String::from))
    });
    let text = std::str::from_utf8(body).ok().map(str::trim).filter(|t| !t.is_empty() && !t.starts_with(['{', '<']));
    let reason = field.or(text.map(String::from)).unwrap_or_else(|| format!("Failed by REST hook: HTTP {status}"));
    // A reason is for people: printable and short.
    reason.chars().filter(|c| !c.is_control()).take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_reasons_come_from_the_answer() {
        assert_eq!(refusal_reason(403, br#"{"reason":"bad token"}"#), "bad token");
        assert_eq!(refusal_reason(403, br#"{"error":"no"}"#), "no");
        assert_eq!(refusal_reason(401, b"Go away\n"), "Go away");
        assert_eq!(refusal_reason(500, b"<html>oops</html>"), "Failed by REST hook: HTTP 500");
        assert_eq!(refusal_reason(403, b""), "Failed by REST hook: HTTP 403");
        assert_eq!(refusal_reason(403, "a\u{7}b".as_bytes()), "ab");
    }
}

//! The server side of the WebSocket signaling protocol: one task per connection that
//! decodes client messages, runs them through the [`Hub`], writes the session's outbox
//! back to the socket, and pings the client to detect dead sessions.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use tracing::Instrument;

use crate::config::KeepAlive;
use crate::hub::Hub;
use crate::protocol::{ClientMessage, Fail, ServerMessage};
use crate::registry::Outbound;
use crate::server::RemoteAddr;

#[derive(Clone)]
pub struct SignalingState {
    pub hub: Arc<Hub>,
    pub keep_alive: Option<KeepAlive>,
    pub max_message_size: usize,
}

/// Routes of the signaling port: WCS clients use `/` or `/websocket`.
pub fn routes(state: SignalingState) -> Router {
    Router::new().route("/", any(upgrade)).route("/websocket", any(upgrade)).with_state(state)
}

async fn upgrade(
    ws: WebSocketUpgrade,
    State(state): State<SignalingState>,
    ConnectInfo(RemoteAddr(remote)): ConnectInfo<RemoteAddr>,
) -> Response {
    // The transport bound is generous; the protocol bound (a `fail` warning) comes first.
    let hard_limit = state.max_message_size * 4;
    ws.max_message_size(hard_limit).max_frame_size(hard_limit).on_upgrade(move |socket| {
        let (session, outbox) = state.hub.open_session(remote.to_string());
        let span = tracing::info_span!("session", id = %session, %remote);
        serve_connection(state, socket, session, outbox).instrument(span)
    })
}

async fn serve_connection(
    state: SignalingState,
    mut socket: WebSocket,
    session: String,
    mut outbox: tokio::sync::mpsc::UnboundedReceiver<Outbound>,
) {
    let hub = state.hub.clone();
    tracing::info!("connected");
    let period = state.keep_alive.map(|k| k.interval).unwrap_or(Duration::from_secs(3600));
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut missed = 0u32;
    let why = loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    missed = 0;
                    if text.len() > state.max_message_size {
                        let warning = format!("Message too large: {} bytes (limit {})", text.len(), state.max_message_size);
                        hub.registry().send(&session, ServerMessage::Fail(Fail::warning(warning)));
                        continue;
                    }
                    handle_text(&hub, &session, text.as_str()).await;
                }
                Some(Ok(Message::Binary(_))) => {
                    hub.registry().send(&session, ServerMessage::Fail(Fail::warning("Binary frames are not supported")));
                }
                Some(Ok(Message::Close(_))) | None => break "closed by client".to_string(),
                Some(Ok(_)) => missed = 0,
                Some(Err(e)) => {
                    let reason = format!("WebSocket error: {e}");
                    let frame = CloseFrame { code: 1009, reason: reason.clone().into() };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                    break reason;
                }
            },
            out = outbox.recv() => match out {
                Some(Outbound::Message(m)) => {
                    if socket.send(Message::Text(m.encode().into())).await.is_err() {
                        break "send failed".into();
                    }
                }
                Some(Outbound::Close(why)) => {
                    let _ = socket.send(Message::Close(None)).await;
                    break why;
                }
                None => break "session removed".into(),
            },
            _ = ping.tick(), if state.keep_alive.is_some() => {
                let probes = state.keep_alive.map(|k| k.probes).unwrap_or(u32::MAX);
                if missed >= probes {
                    break format!("no answer to {missed} pings");
                }
                missed += 1;
                if socket.send(Message::Text(ServerMessage::Ping.encode().into())).await.is_err() {
                    break "send failed".into();
                }
            }
        }
    };
    tracing::info!(reason = %why, "disconnected");
    hub.close_session(&session);
}

async fn handle_text(hub: &Hub, session: &str, text: &str) {
    let message = match ClientMessage::decode(text) {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!(error = %e, "bad client message");
            hub.registry().send(session, ServerMessage::Fail(Fail::warning(e.to_string())));
            return;
        }
    };
    match message {
        ClientMessage::Connection(data) => hub.establish(session, data),
        ClientMessage::PublishStream(req) => hub.publish(session, req).await,
        ClientMessage::PlayStream(req) => hub.play(session, req).await,
        ClientMessage::UnPublishStream(r) | ClientMessage::StopStream(r) => hub.stop(session, &r.media_session_id),
        ClientMessage::Ping => hub.registry().send(session, ServerMessage::Pong),
        ClientMessage::Pong => {}
    }
}

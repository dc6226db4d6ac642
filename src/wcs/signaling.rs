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
use crate::net::listener::RemoteAddr;
use crate::net::shutdown::StopSignal;
use crate::state::hub::{Hub, Refusal};
use crate::state::registry::{Outbound, OutboxReceiver, OUTBOX_OVERFLOW};
use crate::wcs::protocol::{ClientMessage, ServerMessage};

#[derive(Clone)]
pub struct SignalingState {
    pub hub: Arc<Hub>,
    pub keep_alive: Option<KeepAlive>,
    pub max_message_size: usize,
    pub stop: StopSignal,
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

/// Close codes (RFC 6455): 1000 normal, 1008 policy (a limit), 1009 too big, 1011 error.
const CLOSE_POLICY: u16 = 1008;

async fn serve_connection(state: SignalingState, mut socket: WebSocket, session: String, mut outbox: OutboxReceiver) {
    let hub = state.hub.clone();
    tracing::info!("connected");
    let period = state.keep_alive.map(|k| k.interval).unwrap_or(Duration::from_secs(3600));
    // A socket that takes nothing for as long as keep-alive waits for an answer is dead
    // (or its client does not read): a write stalled that long ends the session.
    let stall = state.keep_alive.map(|k| k.interval * k.probes).unwrap_or(Duration::from_secs(60));
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    // The first message must be `connection`, and come soon.
    let handshake = tokio::time::sleep(hub.limits().handshake_timeout);
    tokio::pin!(handshake);
    let mut established = false;
    let mut missed = 0u32;
    let mut stop = state.stop.clone();
    let (why, close): (String, Option<CloseFrame>) = loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    missed = 0;
                    if text.len() > state.max_message_size {
                        let warning = format!("Message too large: {} bytes (limit {})", text.len(), state.max_message_size);
                        hub.warn(&session, warning);
                        continue;
                    }
                    handle_text(&hub, &session, text.as_str()).await;
                    established = established || hub.is_established(&session);
                }
                Some(Ok(Message::Binary(_))) => {
                    hub.warn(&session, "Binary frames are not supported");
                }
                Some(Ok(Message::Close(_))) | None => break ("closed by client".into(), Some(close_frame(1000, ""))),
                Some(Ok(_)) => missed = 0,
                Some(Err(e)) => {
                    let reason = format!("WebSocket error: {e}");
                    let code = if reason.contains("too long") || reason.contains("too big") { 1009 } else { 1002 };
                    break (reason.clone(), Some(close_frame(code, &reason)));
                }
            },
            out = outbox.recv() => match out {
                Some(Outbound::Message(m)) => {
                    if let Err(why) = send(&hub, &mut socket, Message::Text(m.encode().into()), stall).await {
                        break (why.into(), None);
                    }
                }
                Some(Outbound::Close(why)) => {
                    let code = if why == OUTBOX_OVERFLOW { CLOSE_POLICY } else { 1000 };
                    if code == CLOSE_POLICY {
                        hub.count_refusal(Refusal::SlowReaders);
                    }
                    break (why.clone(), Some(close_frame(code, &why)));
                }
                Some(Outbound::Refuse(why)) => break (why.clone(), Some(close_frame(CLOSE_POLICY, &why))),
                None => break ("session removed".into(), Some(close_frame(1000, ""))),
            },
            _ = stop.stopped() => {
                // What the stop told this client (its streams' final statuses) goes first.
                while let Some(Outbound::Message(m)) = outbox.try_recv() {
                    if send(&hub, &mut socket, Message::Text(m.encode().into()), Duration::from_secs(1)).await.is_err() {
                        break;
                    }
                }
                break ("server stopping".into(), Some(close_frame(1001, "server stopping")))
            }
            _ = &mut handshake, if !established => {
                hub.count_refusal(Refusal::Handshakes);
                break ("no connection message in time".into(), Some(close_frame(CLOSE_POLICY, "no connection message in time")));
            }
            _ = ping.tick(), if state.keep_alive.is_some() => {
                let probes = state.keep_alive.map(|k| k.probes).unwrap_or(u32::MAX);
                if missed >= probes {
                    break (format!("no answer to {missed} pings"), Some(close_frame(1000, "keep-alive timeout")));
                }
                missed += 1;
                if let Err(why) = send(&hub, &mut socket, Message::Text(ServerMessage::Ping.encode().into()), stall).await {
                    break (why.into(), None);
                }
            }
        }
    };
    if let Some(frame) = close {
        // Best effort, and briefly: a client that does not read would hold us here.
        let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(Message::Close(Some(frame)))).await;
    }
    tracing::info!(reason = %why, "disconnected");
    hub.close_session(&session);
}

fn close_frame(code: u16, reason: &str) -> CloseFrame {
    // A close reason must fit a control frame (123 bytes of text).
    let mut end = reason.len().min(120);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame { code, reason: reason[..end].to_string().into() }
}

/// Send one frame; fails when the socket does, or takes nothing for `stall` (a client
/// that does not read: counted).
async fn send(hub: &Hub, socket: &mut WebSocket, message: Message, stall: Duration) -> Result<(), &'static str> {
    match tokio::time::timeout(stall, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("send failed"),
        Err(_) => {
            hub.count_refusal(Refusal::SlowReaders);
            Err("send stalled: the client does not read")
        }
    }
}

async fn handle_text(hub: &Hub, session: &str, text: &str) {
    let message = match ClientMessage::decode(text) {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!(error = %e, "bad client message");
            hub.warn(session, e.to_string());
            return;
        }
    };
    match message {
        ClientMessage::Connection(data) => hub.establish(session, data).await,
        ClientMessage::PublishStream(req) => hub.publish(session, req).await,
        ClientMessage::PlayStream(req) => hub.play(session, req).await,
        ClientMessage::UnPublishStream(r) | ClientMessage::StopStream(r) => hub.stop(session, &r.media_session_id),
        ClientMessage::Ping => hub.send(session, ServerMessage::Pong),
        ClientMessage::Pong => {}
    }
}

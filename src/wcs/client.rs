//! The client side of the signaling protocol: connect to a WCS-compatible server over
//! ws:// or wss://, then publish or play streams whose media runs through a local
//! [`MediaHandle`] as the offering, ICE-controlling peer. Relay agents, integration
//! tests and the load generator are all built on this one client.
//!
//! Publishing sends a local stream (`source`, a stream key in the local router) to the
//! server; playing feeds the server's stream into a local stream key (`sink`) whose
//! packets local consumers or taps receive.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::Connector;

use crate::media::{MediaError, MediaHandle, PeerId, Role, StreamKey};
use crate::wcs::protocol::{ClientMessage, ServerMessage, StreamInfo, StreamRef, StreamRequest, StreamStatus};

/// How long the server may take to answer `connection` and each offer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The client pings the server this often...
pub const PING_INTERVAL: Duration = Duration::from_secs(2);
/// ...and takes a server that has sent nothing at all for this long as gone: a hung
/// server (stopped, or its network cut) keeps the TCP connection open but says nothing.
/// WCS servers ping their clients themselves, so this holds even if one does not answer.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq)]
pub enum ClientError {
    /// The WebSocket could not be opened (bad URL, refused, TLS).
    Connect(String),
    /// The server did not answer in time.
    Timeout(&'static str),
    /// The server answered FAILED; the text is its `info`.
    Failed(String),
    /// The connection closed.
    Closed,
    Media(MediaError),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "cannot connect: {e}"),
            Self::Timeout(what) => write!(f, "timed out waiting for {what}"),
            Self::Failed(info) => write!(f, "{info}"),
            Self::Closed => f.write_str("connection closed"),
            Self::Media(e) => write!(f, "{e}"),
        }
    }
}

impl From<MediaError> for ClientError {
    fn from(e: MediaError) -> Self {
        ClientError::Media(e)
    }
}

type Routes = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<ServerMessage>>>>;

/// One signaling connection (a WCS session).
pub struct SignalingClient {
    outgoing: mpsc::UnboundedSender<Message>,
    routes: Routes,
    closed: watch::Receiver<bool>,
    /// Messages not addressed to a subscribed stream (`fail` warnings, `pong`, ...).
    unrouted: tokio::sync::Mutex<mpsc::UnboundedReceiver<ServerMessage>>,
    pub session_id: String,
    pub user_data: Map<String, Value>,
}

impl SignalingClient {
    /// Open the WebSocket, send `connection`, wait for `getUserData`.
    pub async fn connect(url: &str, tls: Option<Arc<rustls::ClientConfig>>) -> Result<Arc<Self>, ClientError> {
        Self::connect_as(url, tls, serde_json::Map::new()).await
    }

    /// [`SignalingClient::connect`], with `custom` in the `connection` message (what a
    /// server's REST hooks read, e.g. a token).
    pub async fn connect_as(
        url: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
        custom: serde_json::Map<String, Value>,
    ) -> Result<Arc<Self>, ClientError> {
        let connector = tls.map(Connector::Rustls);
        let connecting = tokio_tungstenite::connect_async_tls_with_config(url, None, true, connector);
        let (socket, _) = tokio::time::timeout(ANSWER_TIMEOUT, connecting)
            .await
            .map_err(|_| ClientError::Timeout("the WebSocket connection"))?
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let (mut sink, mut stream) = socket.split();
        let (outgoing, mut to_send) = mpsc::unbounded_channel::<Message>();
        let routes: Routes = Arc::default();
        let (closed_tx, closed) = watch::channel(false);
        let (unrouted_tx, mut unrouted) = mpsc::unbounded_channel();

        tokio::spawn(async move {
            while let Some(m) = to_send.recv().await {
                let close = matches!(m, Message::Close(_));
                if sink.send(m).await.is_err() || close {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let reader_routes = routes.clone();
        let pong = outgoing.clone();
        let pinger = outgoing.downgrade();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
            loop {
                ticks.tick().await;
                let Some(outgoing) = pinger.upgrade() else { break };
                if outgoing.send(Message::Text(ClientMessage::Ping.encode().into())).is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            loop {
                let frame = match tokio::time::timeout(SILENCE_LIMIT, stream.next()).await {
                    Ok(Some(Ok(frame))) => frame,
                    Ok(_) => break,
                    Err(_) => {
                        tracing::info!(silence = ?SILENCE_LIMIT, "server silent: connection taken as lost");
                        break;
                    }
                };
                let Message::Text(text) = frame else { continue };
                let Ok(message) = ServerMessage::decode(text.as_str()) else { continue };
                let id = match &message {
                    ServerMessage::Ping => {
                        let _ = pong.send(Message::Text(ClientMessage::Pong.encode().into()));
                        continue;
                    }
                    // The answers to our own pings: alive, nothing to route.
                    ServerMessage::Pong => continue,
                    ServerMessage::SetRemoteSdp { media_session_id, .. } => Some(media_session_id.clone()),
                    ServerMessage::StreamStatus(s) => Some(s.media_session_id.clone()),
                    ServerMessage::Fail(f) => f.id.clone(),
                    _ => None,
                };
                let route = id.and_then(|id| reader_routes.lock().unwrap().get(&id).cloned());
                let _ = route.as_ref().unwrap_or(&unrouted_tx).send(message);
            }
            reader_routes.lock().unwrap().clear();
            let _ = closed_tx.send(true);
        });

        let hello = json!({
            "appKey": "defaultApp",
            "mediaProviders": ["WebRTC"],
            "clientVersion": concat!("hopcast-", env!("CARGO_PKG_VERSION")),
            "clientOSVersion": std::env::consts::OS,
            "clientBrowserVersion": "hopcast",
            "keepAlive": false,
        });
        let Value::Object(mut hello) = hello else { unreachable!() };
        if !custom.is_empty() {
            hello.insert("custom".into(), Value::Object(custom));
        }
        let _ = outgoing.send(Message::Text(ClientMessage::Connection(hello).encode().into()));
        let user_data = tokio::time::timeout(ANSWER_TIMEOUT, async {
            while let Some(m) = unrouted.recv().await {
                match m {
                    ServerMessage::GetUserData(data) => return Ok(data),
                    // Refused (a REST hook, a limit): the server closes after this.
                    ServerMessage::Fail(f) if f.api_method.as_deref() == Some("ConnectionStatusEvent") => {
                        return Err(ClientError::Failed(f.info))
                    }
                    _ => {}
                }
            }
            Err(ClientError::Closed)
        })
        .await
        .map_err(|_| ClientError::Timeout("getUserData"))??;
        let session_id = user_data.get("sessionId").and_then(Value::as_str).unwrap_or_default().to_string();
        let unrouted = tokio::sync::Mutex::new(unrouted);
        Ok(Arc::new(SignalingClient { outgoing, routes, closed, unrouted, session_id, user_data }))
    }

    pub fn send(&self, message: ClientMessage) {
        let _ = self.outgoing.send(Message::Text(message.encode().into()));
    }

    /// Send a raw text frame (tests of malformed input use this).
    pub fn send_text(&self, text: String) {
        let _ = self.outgoing.send(Message::Text(text.into()));
    }

    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Resolves when the connection has closed.
    pub async fn wait_closed(&self) {
        let mut closed = self.closed.clone();
        let _ = closed.wait_for(|c| *c).await;
    }

    pub fn close(&self) {
        let _ = self.outgoing.send(Message::Close(None));
    }

    /// The next message not addressed to a subscribed stream; `None` once closed.
    pub async fn next_unrouted(&self) -> Option<ServerMessage> {
        self.unrouted.lock().await.recv().await
    }

    /// Messages for one mediaSessionId.
    pub fn subscribe(&self, media_session_id: &str) -> mpsc::UnboundedReceiver<ServerMessage> {
        let (tx, rx) = mpsc::unbounded_channel();
        if !self.is_closed() {
            self.routes.lock().unwrap().insert(media_session_id.to_string(), tx);
        }
        rx
    }

    /// Publish local stream `source` under `name`; resolves once the answer is applied.
    pub async fn publish(
        self: &Arc<Self>,
        media: &MediaHandle,
        name: &str,
        source: StreamKey,
    ) -> Result<ClientStream, ClientError> {
        self.start(media, media.next_id(), name, Role::Consumer(source)).await
    }

    /// Play the server's `name` into local stream `sink`.
    pub async fn play(
        self: &Arc<Self>,
        media: &MediaHandle,
        name: &str,
        sink: StreamKey,
    ) -> Result<ClientStream, ClientError> {
        self.start(media, media.next_id(), name, Role::Producer(sink)).await
    }

    /// Publish (`Role::Consumer(source)`) or play (`Role::Producer(sink)`) through the
    /// local media peer `peer`, which the caller may have registered already.
    pub async fn start(
        self: &Arc<Self>,
        media: &MediaHandle,
        peer: PeerId,
        name: &str,
        role: Role,
    ) -> Result<ClientStream, ClientError> {
        let published = matches!(role, Role::Consumer(_));
        let media_session_id = uuid::Uuid::new_v4().to_string();
        let mut messages = self.subscribe(&media_session_id);
        let offer = media.offer(peer, role).await?;
        let request = StreamRequest {
            media_session_id: media_session_id.clone(),
            name: name.to_string(),
            published,
            has_audio: true,
            has_video: true,
            sdp: offer,
            media_provider: "WebRTC".into(),
            custom: None,
        };
        self.send(if published { ClientMessage::PublishStream(request) } else { ClientMessage::PlayStream(request) });
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, async {
            loop {
                match messages.recv().await {
                    Some(ServerMessage::SetRemoteSdp { sdp, .. }) => return Ok(sdp),
                    Some(ServerMessage::StreamStatus(s)) if s.status == StreamStatus::Failed => {
                        return Err(ClientError::Failed(s.info.unwrap_or_default()))
                    }
                    Some(ServerMessage::Fail(f)) => return Err(ClientError::Failed(f.info)),
                    Some(_) => continue,
                    None => return Err(ClientError::Closed),
                }
            }
        })
        .await
        .unwrap_or(Err(ClientError::Timeout("the SDP answer")));
        let applied = match answer {
            Ok(sdp) => media.apply_answer(peer, sdp).await.map_err(ClientError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = applied {
            media.remove_peer(peer, false);
            self.routes.lock().unwrap().remove(&media_session_id);
            return Err(e);
        }
        Ok(ClientStream {
            media_session_id,
            name: name.to_string(),
            peer,
            published,
            messages,
            client: self.clone(),
            media: media.clone(),
        })
    }
}

/// The last handle gone closes the connection: the reader task answers the server's
/// pings on its own, so without this a dropped client would stay connected for good.
impl Drop for SignalingClient {
    fn drop(&mut self) {
        let _ = self.outgoing.send(Message::Close(None));
    }
}

/// A stream this client publishes or plays.
pub struct ClientStream {
    pub media_session_id: String,
    pub name: String,
    pub peer: PeerId,
    pub published: bool,
    messages: mpsc::UnboundedReceiver<ServerMessage>,
    client: Arc<SignalingClient>,
    media: MediaHandle,
}

impl ClientStream {
    /// The next status the server reports; `None` once the connection is gone.
    pub async fn next_status(&mut self) -> Option<StreamInfo> {
        loop {
            match self.messages.recv().await? {
                ServerMessage::StreamStatus(s) => return Some(s),
                _ => continue,
            }
        }
    }

    /// Wait for `status`; a different final status (or a timeout) is an error.
    pub async fn wait_for(&mut self, status: StreamStatus, within: Duration) -> Result<StreamInfo, ClientError> {
        tokio::time::timeout(within, async {
            loop {
                match self.next_status().await {
                    Some(s) if s.status == status => return Ok(s),
                    Some(s) if s.status.is_final() => return Err(ClientError::Failed(s.info.unwrap_or_default())),
                    Some(_) => continue,
                    None => return Err(ClientError::Closed),
                }
            }
        })
        .await
        .unwrap_or(Err(ClientError::Timeout("a stream status")))
    }

    /// Stop, and wait (at most `within`) for the server to confirm with a final status.
    pub async fn stop_and_wait(&mut self, within: Duration) -> Option<StreamInfo> {
        self.stop();
        let confirmed = tokio::time::timeout(within, async {
            loop {
                match self.next_status().await {
                    Some(s) if s.status.is_final() => return Some(s),
                    Some(_) => continue,
                    None => return None,
                }
            }
        });
        confirmed.await.ok().flatten()
    }

    /// `unPublishStream` or `stopStream`, and drop the local peer.
    pub fn stop(&self) {
        let r = StreamRef {
            media_session_id: self.media_session_id.clone(),
            name: self.name.clone(),
            published: self.published,
        };
        self.client.send(if self.published { ClientMessage::UnPublishStream(r) } else { ClientMessage::StopStream(r) });
        self.media.remove_peer(self.peer, true);
    }
}

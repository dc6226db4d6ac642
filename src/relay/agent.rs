//! One relay's agent task: connect to the remote server as a protocol client (WCS's
//! WebSocket protocol, or WHIP/WHEP), publish (push) or play (pull) through a media
//! peer in this server's router, keep the relay's status true, and reconnect with
//! backoff when an established relay is lost.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use super::{AgentConfig, Backoff, Direction, Relay, RelayList, STEP_TIMEOUT};
use crate::media::{MediaHandle, PeerId, Role, StreamKey};
use crate::state::hub::Hub;
use crate::state::registry::{Outbound, OutboxReceiver};
use crate::wcs::client::{ClientStream, SignalingClient};
use crate::wcs::protocol::{reason, ServerMessage, StreamStatus};
use crate::whip::client::{self as whip, WhipSession};

/// The one reason given for a remote that cannot be reached, whatever the cause.
pub(crate) const UNREACHABLE: &str = "cannot reach the remote server";

/// How an attempt ended.
enum Outcome {
    /// `/pull/terminate`: clean up and stop.
    Terminated,
    /// Push: the local stream stopped, so the relay has nothing to carry.
    SourceEnded(String),
    /// The attempt failed or the established relay was lost.
    Lost(String),
    /// Pull: the remote stream ended there (its publisher stopped): so does ours.
    RemoteEnded(String),
}

pub(crate) struct Agent {
    hub: Arc<Hub>,
    relay: Arc<Relay>,
    relays: RelayList,
    /// `wcs_agent_ssl`, and the trust for wss://.
    ssl: bool,
    tls: Arc<rustls::ClientConfig>,
    custom: serde_json::Map<String, serde_json::Value>,
    reconnect_max: Duration,
    /// The server's count of reconnect attempts (`/metrics`).
    reconnects: Arc<std::sync::atomic::AtomicU64>,
    terminate: watch::Receiver<bool>,
    /// Answers the REST call after the first attempt.
    first: Option<oneshot::Sender<Result<(), String>>>,
    session: String,
    outbox: OutboxReceiver,
}

impl Agent {
    pub(crate) fn new(
        hub: Arc<Hub>,
        relay: Arc<Relay>,
        relays: RelayList,
        config: &AgentConfig,
        first: oneshot::Sender<Result<(), String>>,
    ) -> Self {
        let info = relay.info();
        let label = format!("relay {:?} {} -> {}", info.direction, info.local_stream_name, info.uri);
        let (session, outbox) = hub.open_internal_session(label);
        let terminate = relay.terminate.subscribe();
        Agent {
            hub,
            relay,
            relays,
            ssl: config.ssl,
            tls: config.tls.clone(),
            custom: config.custom.clone(),
            reconnect_max: config.reconnect_max,
            reconnects: config.reconnects.clone(),
            terminate,
            first: Some(first),
            session,
            outbox,
        }
    }

    pub(crate) async fn run(mut self) {
        let mut backoff = Backoff::new(Duration::from_millis(200), self.reconnect_max);
        loop {
            self.relay.update(|i| i.status = StreamStatus::Pending);
            let outcome = self.attempt(&mut backoff).await;
            match outcome {
                Outcome::Terminated => {
                    tracing::info!(reason = %self.relay.stop_reason(), "terminated");
                    self.answer_first(Err(format!("terminated ({})", self.relay.stop_reason())));
                    break;
                }
                Outcome::SourceEnded(why) => {
                    tracing::info!(reason = %why, "local stream ended; relay ends");
                    self.answer_first(Err(why));
                    self.relays.lock().unwrap_or_else(|p| p.into_inner()).retain(|r| !Arc::ptr_eq(r, &self.relay));
                    break;
                }
                Outcome::Lost(why) | Outcome::RemoteEnded(why) => {
                    tracing::info!(reason = %why, "relay attempt failed");
                    self.relay.update(|i| {
                        i.status = StreamStatus::Failed;
                        i.info = Some(why.clone());
                    });
                    if self.first.is_some() {
                        // Never established: report and stop (a typo must not retry forever).
                        self.answer_first(Err(why));
                        break;
                    }
                    let delay = backoff.next_delay();
                    let mut terminate = self.terminate.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        // Retargeted (a cluster pull whose stream is elsewhere now): go at once.
                        _ = self.relay.wake.notified() => {}
                        _ = terminate.wait_for(|t| *t) => break,
                    }
                    self.relay.update(|i| i.reconnects += 1);
                    self.reconnects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        self.hub.close_session(&self.session);
    }

    fn answer_first(&mut self, result: Result<(), String>) {
        if let Some(first) = self.first.take() {
            let _ = first.send(result);
        }
    }

    /// Resolves when the relay is terminated.
    async fn terminated(terminate: &mut watch::Receiver<bool>) {
        let _ = terminate.wait_for(|t| *t).await;
    }

    async fn attempt(&mut self, backoff: &mut Backoff) -> Outcome {
        // Statuses of the previous attempt's local leg are history now.
        while self.outbox.try_recv().is_some() {}
        let info = self.relay.info();
        let mut terminate = self.terminate.clone();
        // The URI is read at each attempt: a cluster pull may have been retargeted.
        let url = match super::connect_url(&info.uri, self.ssl) {
            Ok(url) => url,
            Err(e) => return Outcome::Lost(e.to_string()),
        };
        let connecting = Remote::connect(&url, &self.tls, &self.custom, &info.remote_stream_name);
        let remote = tokio::select! {
            c = connecting => c,
            _ = Self::terminated(&mut terminate) => return Outcome::Terminated,
        };
        let mut remote = match remote {
            Ok(r) => r,
            Err(e) => {
                // What a target answered (refused, an HTTP status, a TLS error) stays in
                // the log: in the REST answer it would make relays a port scanner.
                tracing::info!(error = %e, "cannot reach the remote server");
                return Outcome::Lost(format!("{}: {UNREACHABLE}", reason::ORIGIN_CONNECT));
            }
        };

        // The local side: a registered stream around a fresh media peer.
        let media = self.hub.media().clone();
        let peer: PeerId = media.next_id();
        let local_id = info.local_media_session_id.clone();
        let (role, local) = match info.direction {
            Direction::Push => {
                match self.hub.register_player(&self.session, &local_id, &info.local_stream_name, peer) {
                    Ok(key) => (Role::Consumer(key), key),
                    Err(why) => {
                        remote.close().await;
                        return Outcome::SourceEnded(why.to_string());
                    }
                }
            }
            // A stream held since the last attempt takes the new peer: its players stay.
            Direction::Pull => match self.hub.resume_publisher(&local_id, peer) {
                Some(key) => (Role::Producer(key), key),
                None => {
                    let key: StreamKey = media.next_id();
                    if let Err(why) =
                        self.hub.register_publisher(&self.session, &local_id, &info.local_stream_name, peer, key)
                    {
                        remote.close().await;
                        return Outcome::Lost(why.to_string());
                    }
                    (Role::Producer(key), key)
                }
            },
        };
        tracing::debug!(peer, stream = local, "local leg registered");
        // A pull that was up once holds its local stream while it is lost (its players
        // wait, and resume when the relay does); anything else ends it.
        // (`lost` is only true once the relay was established: `first` answered.)
        let end_local = |hub: &Hub, why: &str, lost: bool| {
            if lost && info.direction == Direction::Pull {
                return hub.hold_stream(&local_id, why);
            }
            let status =
                if info.direction == Direction::Push { StreamStatus::Stopped } else { StreamStatus::Unpublished };
            hub.end_stream(&local_id, status, why);
        };

        // The remote leg: published or played there, and media flowing.
        let target = if info.direction == Direction::Push { StreamStatus::Publishing } else { StreamStatus::Playing };
        let started = tokio::select! {
            s = remote.start(&media, peer, role, &mut self.outbox, target) => s,
            _ = Self::terminated(&mut terminate) => Err("terminated".into()),
        };
        if let Err(e) = started {
            remote.close().await;
            let terminated = *self.terminate.borrow();
            end_local(&self.hub, reason::ORIGIN_CONNECT, !terminated && self.first.is_none());
            if terminated {
                return Outcome::Terminated;
            }
            return Outcome::Lost(e);
        }
        let remote_id = remote.id();
        self.relay.update(|i| {
            i.remote_media_session_id = remote_id.clone();
            i.status = target;
            i.info = None;
        });
        tracing::info!(remote_media_session = %remote_id, "relay established");
        backoff.reset();
        self.answer_first(Ok(()));

        let outcome = self.carry(&mut remote, &mut terminate, info.direction).await;
        // Unpublish on the remote and see it done before the relay counts as ended.
        remote.close().await;
        let (why, lost) = match &outcome {
            Outcome::Terminated => (self.relay.stop_reason(), false),
            Outcome::SourceEnded(w) | Outcome::RemoteEnded(w) => (w.clone(), false),
            Outcome::Lost(w) => (w.clone(), true),
        };
        end_local(&self.hub, &why, lost && self.first.is_none());
        outcome
    }

    /// The relay is up: wait for whatever ends it.
    async fn carry(
        &mut self,
        remote: &mut Remote,
        terminate: &mut watch::Receiver<bool>,
        direction: Direction,
    ) -> Outcome {
        loop {
            tokio::select! {
                _ = Self::terminated(terminate) => return Outcome::Terminated,
                local = self.outbox.recv() => match local {
                    // Our pull's output held after its media failed: the relay is lost.
                    Some(Outbound::Message(ServerMessage::StreamStatus(s)))
                        if direction == Direction::Pull && s.published && s.status == StreamStatus::Pending =>
                    {
                        let why = s.info.unwrap_or_default();
                        return Outcome::Lost(format!("local media lost: {why}"));
                    }
                    Some(Outbound::Message(ServerMessage::StreamStatus(s))) if s.status.is_final() => {
                        let why = s.info.unwrap_or_else(|| format!("local stream {:?}", s.status));
                        return match direction {
                            Direction::Push if why == reason::PUBLISHER_STOP => Outcome::SourceEnded(why),
                            _ => Outcome::Lost(format!("local side ended: {why}")),
                        };
                    }
                    Some(Outbound::Close(why) | Outbound::Refuse(why)) => {
                        return Outcome::Lost(format!("local session closed: {why}"))
                    }
                    Some(_) => {}
                    None => return Outcome::Terminated,
                },
                ended = remote.ended() => return ended,
            }
        }
    }
}

/// The remote end of a relay, in whichever protocol the remote speaks.
enum Remote {
    /// WCS's WebSocket protocol: a session, the stream name there, and the stream once
    /// started.
    Wcs { client: Arc<SignalingClient>, name: String, stream: Option<ClientStream> },
    /// WHIP (push) or WHEP (pull): an endpoint, and the session once started.
    Whip { endpoint: String, token: Option<String>, tls: Arc<rustls::ClientConfig>, session: Option<WhipSession> },
}

impl Remote {
    /// Open the signaling (WCS), or just note the endpoint (WHIP/WHEP: one request does
    /// it all). `custom` goes in WCS's `connection`; its `token` is WHIP's bearer.
    async fn connect(
        url: &str,
        tls: &Arc<rustls::ClientConfig>,
        custom: &serde_json::Map<String, serde_json::Value>,
        remote_name: &str,
    ) -> Result<Remote, String> {
        if url.starts_with("http://") || url.starts_with("https://") {
            let endpoint = whip::endpoint(url, remote_name);
            let token = custom.get("token").and_then(|t| t.as_str()).map(String::from);
            return Ok(Remote::Whip { endpoint, token, tls: tls.clone(), session: None });
        }
        let tls = url.starts_with("wss://").then(|| tls.clone());
        let client = SignalingClient::connect_as(url, tls, custom.clone()).await.map_err(|e| e.to_string())?;
        Ok(Remote::Wcs { client, name: remote_name.to_string(), stream: None })
    }

    /// Publish or play over there through local peer `peer`, and wait until media flows:
    /// the remote says `target` (WCS), or our local leg connects (WHIP/WHEP, whose only
    /// signal is the media itself).
    async fn start(
        &mut self,
        media: &MediaHandle,
        peer: PeerId,
        role: Role,
        outbox: &mut OutboxReceiver,
        target: StreamStatus,
    ) -> Result<(), String> {
        match self {
            Remote::Wcs { client, name, stream } => {
                let mut started = client.start(media, peer, name, role).await.map_err(|e| e.to_string())?;
                if let Err(e) = started.wait_for(target, STEP_TIMEOUT).await {
                    started.stop();
                    return Err(e.to_string());
                }
                *stream = Some(started);
            }
            Remote::Whip { endpoint, token, tls, session } => {
                let (token, tls) = (token.as_deref(), tls.clone());
                let opened = match role {
                    Role::Consumer(key) => whip::publish(media, endpoint, token, tls, peer, key).await,
                    Role::Producer(key) => whip::play(media, endpoint, token, tls, peer, key).await,
                };
                *session = Some(opened.map_err(|e| e.to_string())?);
                // Our local leg goes PLAYING (push) or PUBLISHING (pull) when media flows.
                let connected = tokio::time::timeout(STEP_TIMEOUT, async {
                    while let Some(item) = outbox.recv().await {
                        match item {
                            Outbound::Message(ServerMessage::StreamStatus(s)) if s.status.is_final() => {
                                return Err(s.info.unwrap_or_else(|| "local leg ended".into()))
                            }
                            Outbound::Message(ServerMessage::StreamStatus(s))
                                if matches!(s.status, StreamStatus::Playing | StreamStatus::Publishing) =>
                            {
                                return Ok(())
                            }
                            _ => {}
                        }
                    }
                    Err("local session closed".into())
                });
                connected.await.map_err(|_| "no media within the step timeout".to_string())??;
            }
        }
        Ok(())
    }

    /// The remote's name for what we started there.
    fn id(&self) -> String {
        match self {
            Remote::Wcs { stream, .. } => stream.as_ref().map(|s| s.media_session_id.clone()).unwrap_or_default(),
            Remote::Whip { session, .. } => session.as_ref().map(|s| s.resource.clone()).unwrap_or_default(),
        }
    }

    /// Resolves when the remote ends the relay (WCS tells; WHIP/WHEP cannot: a remote
    /// that goes away shows as the media failing, which the local leg reports).
    async fn ended(&mut self) -> Outcome {
        let Remote::Wcs { stream: Some(stream), .. } = self else { return std::future::pending().await };
        loop {
            match stream.next_status().await {
                // The publisher over there stopped: the stream has ended, not been lost.
                Some(s) if s.status.is_final() && s.info.as_deref() == Some(reason::PUBLISHER_STOP) => {
                    return Outcome::RemoteEnded(reason::PUBLISHER_STOP.to_string());
                }
                Some(s) if s.status.is_final() => {
                    let why = s.info.unwrap_or_default();
                    return Outcome::Lost(format!("remote stream {:?}: {why}", s.status));
                }
                Some(_) => {}
                None => return Outcome::Lost("connection to the remote server lost".into()),
            }
        }
    }

    /// Stop over there and close, briefly: a remote that is gone must not hold us.
    async fn close(&mut self) {
        match self {
            Remote::Wcs { client, stream, .. } => {
                if let Some(stream) = stream {
                    stream.stop_and_wait(Duration::from_secs(2)).await;
                }
                client.close();
            }
            Remote::Whip { session, .. } => {
                if let Some(session) = session.take() {
                    let _ = tokio::time::timeout(Duration::from_secs(2), session.delete()).await;
                }
            }
        }
    }
}

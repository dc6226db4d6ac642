//! One relay's agent task: connect to the remote server as a protocol client, publish
//! (push) or play (pull) through a media peer in this server's router, keep the relay's
//! status true, and reconnect with backoff when an established relay is lost.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use super::{AgentConfig, Backoff, Direction, Relay, RelayList, STEP_TIMEOUT};
use crate::media::{PeerId, Role, StreamKey};
use crate::state::hub::Hub;
use crate::state::registry::{Outbound, OutboxReceiver};
use crate::wcs::client::{ClientError, ClientStream, SignalingClient};
use crate::wcs::protocol::{reason, ServerMessage, StreamStatus};

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
        let tls = url.starts_with("wss://").then(|| self.tls.clone());
        let connecting = SignalingClient::connect_as(&url, tls, self.custom.clone());
        let client = tokio::select! {
            c = connecting => c,
            _ = Self::terminated(&mut terminate) => return Outcome::Terminated,
        };
        let client = match client {
            Ok(c) => c,
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
                        client.close();
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
                        client.close();
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

        let started = tokio::select! {
            s = client.start(&media, peer, &info.remote_stream_name, role) => s,
            _ = Self::terminated(&mut terminate) => Err(ClientError::Closed),
        };
        let mut stream = match started {
            Ok(s) => s,
            Err(e) => {
                let terminated = *self.terminate.borrow();
                end_local(&self.hub, reason::ORIGIN_CONNECT, !terminated && self.first.is_none());
                client.close();
                if terminated {
                    return Outcome::Terminated;
                }
                return Outcome::Lost(e.to_string());
            }
        };
        self.relay.update(|i| i.remote_media_session_id = stream.media_session_id.clone());
        let target = if info.direction == Direction::Push { StreamStatus::Publishing } else { StreamStatus::Playing };
        let established = tokio::select! {
            r = stream.wait_for(target, STEP_TIMEOUT) => r,
            _ = Self::terminated(&mut terminate) => Err(ClientError::Closed),
        };
        if let Err(e) = established {
            stream.stop();
            let terminated = *self.terminate.borrow();
            end_local(&self.hub, reason::ORIGIN_CONNECT, !terminated && self.first.is_none());
            client.close();
            if terminated {
                return Outcome::Terminated;
            }
            return Outcome::Lost(e.to_string());
        }
        self.relay.update(|i| {
            i.status = target;
            i.info = None;
        });
        tracing::info!(remote_media_session = %stream.media_session_id, "relay established");
        backoff.reset();
        self.answer_first(Ok(()));

        let outcome = self.carry(&mut stream, &mut terminate, info.direction).await;
        // Unpublish on the remote and see it done before the relay counts as ended.
        stream.stop_and_wait(Duration::from_secs(2)).await;
        client.close();
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
        stream: &mut ClientStream,
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
                remote = stream.next_status() => match remote {
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
                },
            }
        }
    }
}

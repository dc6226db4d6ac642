//! Sessions and streams: who is connected, which names are published, who plays what,
//! and each stream's status. Pure state, no I/O: every change returns the [`Effect`]s
//! the caller must apply to the media engine, and status notifications are queued on
//! each session's outbox (a channel the session's WebSocket task drains).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::sync::{mpsc, Notify};

use crate::media::{PeerId, StreamKey};
use crate::wcs::protocol::{reason, ServerMessage, StreamInfo, StreamRequest, StreamStatus};

/// Streams one session may have waiting for ICE/DTLS at once.
pub const MAX_PENDING_PER_SESSION: usize = 16;
pub const TOO_MANY_PENDING: &str = "Failed by error: too many streams of this session are still connecting";
pub const TOO_MANY_PENDING_FROM_ADDRESS: &str =
    "Failed by error: too many streams from this client address are still connecting";

/// What a session's connection task must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    Message(ServerMessage),
    /// Close the connection (REST terminate, keep-alive expiry); the reason is logged.
    Close(String),
    /// Close the connection for breaking a rule (code 1008, the reason sent along).
    Refuse(String),
}

/// The registry's end of a session's queue toward its connection. Bounded: a client
/// that does not read cannot make the server hold its messages; the first message that
/// does not fit closes the session instead.
#[derive(Clone)]
pub struct OutboxSender {
    tx: mpsc::Sender<Outbound>,
    overflowed: Arc<Notify>,
}

/// The connection's end of the queue.
pub struct OutboxReceiver {
    rx: mpsc::Receiver<Outbound>,
    overflowed: Arc<Notify>,
}

pub const OUTBOX_OVERFLOW: &str = "outbound queue full: the client does not read";

pub fn outbox(capacity: usize) -> (OutboxSender, OutboxReceiver) {
    let (tx, rx) = mpsc::channel(capacity);
    let overflowed = Arc::new(Notify::new());
    (OutboxSender { tx, overflowed: overflowed.clone() }, OutboxReceiver { rx, overflowed })
}

impl OutboxSender {
    /// Queue `item`; false when the connection is gone or the queue overflowed.
    pub fn send(&self, item: Outbound) -> bool {
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflowed.notify_one();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

impl OutboxReceiver {
    /// The next thing to do; an overflow comes first, as `Close`.
    pub async fn recv(&mut self) -> Option<Outbound> {
        tokio::select! {
            biased;
            _ = self.overflowed.notified() => Some(Outbound::Close(OUTBOX_OVERFLOW.into())),
            item = self.rx.recv() => item,
        }
    }

    pub fn try_recv(&mut self) -> Option<Outbound> {
        self.rx.try_recv().ok()
    }
}

/// Media work a registry change implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Drop this peer; `close` tells the remote first.
    RemovePeer { peer: PeerId, close: bool },
    /// The stream's producer is gone: forget its key.
    RemoveStream { key: StreamKey },
}

pub struct Session {
    pub id: String,
    pub remote: String,
    /// The client's address (none for the server's own relay sessions).
    ip: Option<std::net::IpAddr>,
    pub user_data: Map<String, Value>,
    pub established: bool,
    /// One of the server's own (a relay agent's local side).
    pub internal: bool,
    outbox: OutboxSender,
    /// Streams this client ended by closing their media before its `unPublishStream` /
    /// `stopStream` came (the SDK sends one and closes the other at once): the late
    /// request is expected, not an error. The last few only.
    closed_by_client: std::collections::VecDeque<String>,
}

impl Session {
    /// The application the client named in `connection` (the SDK's default otherwise).
    pub fn app_key(&self) -> &str {
        self.user_data.get("appKey").and_then(Value::as_str).unwrap_or(crate::access::hooks::DEFAULT_APP)
    }
}

/// Hears every status the registry tells a client (the REST hooks' events).
pub trait StatusListener: Send + Sync {
    fn stream(&self, session: &Session, info: &StreamInfo);
    fn connection(&self, session: &Session, status: &str);
}

pub struct Stream {
    pub info: StreamInfo,
    pub peer: PeerId,
    /// For a publisher its own stream key, for a player the key it consumes.
    pub key: StreamKey,
    /// A relay's output: when its media is lost the stream is held for the relay to
    /// resume, not ended (see [`Registry::hold`]).
    pub resumable: bool,
    /// Held: the publisher's media is gone and its relay is getting it back.
    pub held: bool,
}

#[derive(Default)]
pub struct Registry {
    /// Streams still connecting from one client address, at most (0: no bound).
    max_connecting_per_ip: usize,
    sessions: HashMap<String, Session>,
    /// By mediaSessionId.
    streams: HashMap<String, Stream>,
    /// Published name -> mediaSessionId.
    names: HashMap<String, String>,
    by_peer: HashMap<PeerId, String>,
    listener: Option<std::sync::Arc<dyn StatusListener>>,
}

/// Filter for `/stream/find`: every given field must match.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StreamFilter {
    pub media_session_id: Option<String>,
    pub name: Option<String>,
    pub published: Option<bool>,
    pub session_id: Option<String>,
    pub status: Option<StreamStatus>,
    /// WCS's `display` (`["metrics"]` adds each stream's figures); not a filter.
    pub display: Option<Vec<String>>,
}

impl StreamFilter {
    pub fn matches(&self, s: &StreamInfo) -> bool {
        self.media_session_id.as_ref().is_none_or(|v| *v == s.media_session_id)
            && self.name.as_ref().is_none_or(|v| *v == s.name)
            && self.published.is_none_or(|v| v == s.published)
            && self.session_id.as_ref().is_none_or(|v| *v == s.session_id)
            && self.status.is_none_or(|v| v == s.status)
    }
}

impl Registry {
    pub fn new(max_connecting_per_ip: usize) -> Self {
        Registry { max_connecting_per_ip, ..Default::default() }
    }

    pub fn add_session(&mut self, id: String, remote: String, outbox: OutboxSender) {
        let ip = remote.parse::<std::net::SocketAddr>().ok().map(|a| a.ip());
        let session = Session {
            id: id.clone(),
            remote,
            ip,
            user_data: Map::new(),
            established: false,
            internal: false,
            outbox,
            closed_by_client: Default::default(),
        };
        self.sessions.insert(id, session);
    }

    pub fn session(&self, id: &str) -> Option<&Session> {
        self.sessions.get(id)
    }

    /// The client closed this stream's media itself (see `Session::closed_by_client`).
    pub fn closed_by_client(&mut self, session: &str, media_session_id: &str) {
        const KEEP: usize = 8;
        if let Some(s) = self.sessions.get_mut(session) {
            if s.closed_by_client.len() == KEEP {
                s.closed_by_client.pop_front();
            }
            s.closed_by_client.push_back(media_session_id.to_string());
        }
    }

    /// Whether the client closed this stream's media itself, lately.
    pub fn was_closed_by_client(&self, session: &str, media_session_id: &str) -> bool {
        self.sessions.get(session).is_some_and(|s| s.closed_by_client.iter().any(|id| id == media_session_id))
    }

    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Streams by (published, protocol): "relay" for the server's own relay sessions,
    /// "whip" for WHIP and WHEP clients, "wcs" for the rest.
    pub fn census(&self) -> std::collections::BTreeMap<(bool, &'static str), usize> {
        let mut counts = std::collections::BTreeMap::new();
        for stream in self.streams.values() {
            let protocol = match self.sessions.get(&stream.info.session_id) {
                Some(s) if s.internal => "relay",
                Some(s)
                    if matches!(s.user_data.get("clientVersion").and_then(Value::as_str), Some("WHIP" | "WHEP")) =>
                {
                    "whip"
                }
                _ => "wcs",
            };
            *counts.entry((stream.info.published, protocol)).or_insert(0) += 1;
        }
        counts
    }

    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values()
    }

    pub fn set_listener(&mut self, listener: std::sync::Arc<dyn StatusListener>) {
        self.listener = Some(listener);
    }

    /// Mark the session established with the client's `connection` data.
    pub fn establish(&mut self, id: &str, user_data: Map<String, Value>) -> bool {
        let Some(s) = self.sessions.get_mut(id) else { return false };
        s.user_data = user_data;
        s.established = true;
        if let Some(listener) = &self.listener {
            listener.connection(s, "ESTABLISHED");
        }
        true
    }

    /// Mark a session as the server's own (relay agents): hooks do not ask about it.
    pub fn set_internal(&mut self, id: &str) {
        if let Some(s) = self.sessions.get_mut(id) {
            s.internal = true;
        }
    }

    pub fn send(&self, session: &str, message: ServerMessage) {
        if let Some(s) = self.sessions.get(session) {
            if let (Some(listener), ServerMessage::StreamStatus(info)) = (&self.listener, &message) {
                listener.stream(s, info);
            }
            s.outbox.send(Outbound::Message(message));
        }
    }

    pub fn close_session_connection(&self, session: &str, why: &str) -> bool {
        self.sessions.get(session).is_some_and(|s| s.outbox.send(Outbound::Close(why.into())))
    }

    /// Close a session that broke a rule (a limit, a refusal): WebSocket code 1008.
    pub fn refuse_session_connection(&self, session: &str, why: &str) -> bool {
        self.sessions.get(session).is_some_and(|s| s.outbox.send(Outbound::Refuse(why.into())))
    }

    fn check_new(&self, session: &str, req: &StreamRequest) -> Result<(), &'static str> {
        if !self.sessions.get(session).is_some_and(|s| s.established) {
            return Err(reason::SESSION_DOES_NOT_EXIST);
        }
        if req.media_session_id.is_empty() || self.streams.contains_key(&req.media_session_id) {
            return Err(reason::MEDIA_SESSION_ID_IN_USE);
        }
        if req.name.trim().is_empty() {
            return Err(reason::STREAM_NOT_FOUND);
        }
        // Each pending stream holds a WebRTC peer for up to the ICE timeout: bound them,
        // so that one client cannot pile up peers faster than they expire.
        let pending =
            self.streams.values().filter(|s| s.info.session_id == session && s.info.status == StreamStatus::Pending);
        if pending.count() >= MAX_PENDING_PER_SESSION {
            return Err(TOO_MANY_PENDING);
        }
        // And per address, so that many sessions of one client cannot either.
        let ip = self.sessions.get(session).and_then(|s| s.ip);
        if let (Some(ip), true) = (ip, self.max_connecting_per_ip > 0) {
            let from_ip = self.streams.values().filter(|s| {
                s.info.status == StreamStatus::Pending
                    && self.sessions.get(&s.info.session_id).is_some_and(|o| o.ip == Some(ip))
            });
            if from_ip.count() >= self.max_connecting_per_ip {
                return Err(TOO_MANY_PENDING_FROM_ADDRESS);
            }
        }
        Ok(())
    }

    /// Register a publisher (status PENDING) under a free name.
    pub fn begin_publish(
        &mut self,
        session: &str,
        req: &StreamRequest,
        peer: PeerId,
        key: StreamKey,
    ) -> Result<(), &'static str> {
        self.check_new(session, req)?;
        if self.names.contains_key(&req.name) {
            return Err(reason::NAME_IN_USE);
        }
        self.names.insert(req.name.clone(), req.media_session_id.clone());
        self.insert(Stream {
            info: StreamInfo::for_request(session, req, true),
            peer,
            key,
            resumable: false,
            held: false,
        });
        Ok(())
    }

    /// Register a player (status PENDING) of a published name; returns the key to consume.
    pub fn begin_play(&mut self, session: &str, req: &StreamRequest, peer: PeerId) -> Result<StreamKey, &'static str> {
        self.check_new(session, req)?;
        let key = self.published(&req.name).map(|s| s.key).ok_or(reason::STREAM_NOT_FOUND)?;
        self.insert(Stream {
            info: StreamInfo::for_request(session, req, false),
            peer,
            key,
            resumable: false,
            held: false,
        });
        Ok(key)
    }

    fn insert(&mut self, stream: Stream) {
        self.by_peer.insert(stream.peer, stream.info.media_session_id.clone());
        self.streams.insert(stream.info.media_session_id.clone(), stream);
    }

    /// The publisher of `name`, if any.
    pub fn published(&self, name: &str) -> Option<&Stream> {
        self.names.get(name).and_then(|id| self.streams.get(id))
    }

    /// Names of the streams being published now (PUBLISHING).
    pub fn publishing_names(&self) -> Vec<String> {
        let live = |id: &String| self.streams.get(id).is_some_and(|s| s.info.status == StreamStatus::Publishing);
        self.names.iter().filter(|(_, id)| live(id)).map(|(name, _)| name.clone()).collect()
    }

    /// Players of `name` here, whatever their status.
    pub fn players_of(&self, name: &str) -> usize {
        self.streams.values().filter(|s| !s.info.published && s.info.name == name).count()
    }

    /// Players here, of all streams.
    pub fn players(&self) -> usize {
        self.streams.values().filter(|s| !s.info.published).count()
    }

    pub fn stream(&self, media_session_id: &str) -> Option<&Stream> {
        self.streams.get(media_session_id)
    }

    pub fn stream_of_peer(&self, peer: PeerId) -> Option<&Stream> {
        self.by_peer.get(&peer).and_then(|id| self.streams.get(id))
    }

    pub fn find(&self, filter: &StreamFilter) -> Vec<StreamInfo> {
        let mut found: Vec<StreamInfo> =
            self.streams.values().map(|s| s.info.clone()).filter(|i| filter.matches(i)).collect();
        found.sort_by(|a, b| {
            (&a.name, !a.published, &a.media_session_id).cmp(&(&b.name, !b.published, &b.media_session_id))
        });
        found
    }

    /// Media is flowing: PUBLISHING or PLAYING, told to the owner. A publisher back
    /// from a hold tells its waiting players PLAYING again; a player joining a held
    /// stream hears PLAYBACK_PROBLEM instead.
    pub fn connected(&mut self, peer: PeerId) {
        let Some(stream) = self.by_peer.get(&peer).and_then(|id| self.streams.get(id)) else { return };
        if stream.info.status != StreamStatus::Pending {
            return;
        }
        let (id, published, key) = (stream.info.media_session_id.clone(), stream.info.published, stream.key);
        let hold = (!published).then(|| self.published(&stream.info.name)).flatten().filter(|p| p.held);
        let (status, why) = match (published, hold) {
            (true, _) => (StreamStatus::Publishing, None),
            (false, Some(publisher)) => (StreamStatus::PlaybackProblem, publisher.info.info.clone()),
            (false, None) => (StreamStatus::Playing, None),
        };
        self.set_status(&id, status, why);
        if published && std::mem::take(&mut self.streams.get_mut(&id).expect("just set").held) {
            let mut waiting: Vec<String> = self
                .streams
                .values()
                .filter(|s| !s.info.published && s.key == key && s.info.status == StreamStatus::PlaybackProblem)
                .map(|s| s.info.media_session_id.clone())
                .collect();
            waiting.sort();
            for player in waiting {
                self.set_status(&player, StreamStatus::Playing, None);
            }
        }
    }

    /// Set a stream's status and reason, and tell its owner.
    fn set_status(&mut self, media_session_id: &str, status: StreamStatus, why: Option<String>) {
        let Some(stream) = self.streams.get_mut(media_session_id) else { return };
        stream.info.status = status;
        stream.info.info = why;
        let (session, info) = (stream.info.session_id.clone(), stream.info.clone());
        self.send(&session, ServerMessage::StreamStatus(info));
    }

    /// Mark a publisher as a relay's output, which [`Registry::hold`] may keep.
    pub fn set_resumable(&mut self, media_session_id: &str) {
        if let Some(s) = self.streams.get_mut(media_session_id) {
            s.resumable = true;
        }
    }

    /// A relay's output lost its media: drop its peer but keep the name and the stream
    /// key, so its players stay (told PLAYBACK_PROBLEM with `why`, once) until the
    /// relay resumes it with a new peer ([`Registry::resume`]) or ends it.
    pub fn hold(&mut self, media_session_id: &str, why: &str) -> Vec<Effect> {
        let Some(stream) = self.streams.get_mut(media_session_id).filter(|s| s.info.published && s.resumable) else {
            return Vec::new();
        };
        let (peer, key, was_held) = (stream.peer, stream.key, std::mem::replace(&mut stream.held, true));
        self.by_peer.remove(&peer);
        if !was_held {
            self.set_status(media_session_id, StreamStatus::Pending, Some(why.to_string()));
            let mut players: Vec<String> = self
                .streams
                .values()
                .filter(|s| !s.info.published && s.key == key && s.info.status != StreamStatus::Pending)
                .map(|s| s.info.media_session_id.clone())
                .collect();
            players.sort();
            for player in players {
                self.set_status(&player, StreamStatus::PlaybackProblem, Some(why.to_string()));
            }
        }
        vec![Effect::RemovePeer { peer, close: true }]
    }

    /// A held stream gets its new producer peer; returns the stream key to feed. It
    /// stays PENDING and held (its players waiting) until the peer connects.
    pub fn resume(&mut self, media_session_id: &str, peer: PeerId) -> Option<StreamKey> {
        let stream = self.streams.get_mut(media_session_id).filter(|s| s.held)?;
        stream.peer = peer;
        let key = stream.key;
        self.by_peer.insert(peer, media_session_id.to_string());
        Some(key)
    }

    /// End a stream with a final status; a publisher's end also stops its players.
    pub fn end(&mut self, media_session_id: &str, status: StreamStatus, why: Option<&str>, close: bool) -> Vec<Effect> {
        let mut effects = Vec::new();
        let Some(mut stream) = self.streams.remove(media_session_id) else { return effects };
        self.by_peer.remove(&stream.peer);
        effects.push(Effect::RemovePeer { peer: stream.peer, close });
        stream.info.status = status;
        stream.info.info = why.map(str::to_string);
        self.send(&stream.info.session_id, ServerMessage::StreamStatus(stream.info.clone()));
        if stream.info.published {
            self.names.remove(&stream.info.name);
            effects.push(Effect::RemoveStream { key: stream.key });
            let players: Vec<String> = self
                .streams
                .values()
                .filter(|s| !s.info.published && s.key == stream.key)
                .map(|s| s.info.media_session_id.clone())
                .collect();
            for player in players {
                effects.extend(self.end(&player, StreamStatus::Stopped, Some(reason::PUBLISHER_STOP), true));
            }
        }
        effects
    }

    /// Every stream ends with `why`: players first, so each hears its own reason rather
    /// than its publisher's stop.
    pub fn end_all(&mut self, why: &str) -> Vec<Effect> {
        let mut order: Vec<(bool, String)> =
            self.streams.values().map(|s| (s.info.published, s.info.media_session_id.clone())).collect();
        order.sort();
        let mut effects = Vec::new();
        for (published, id) in order {
            let status = if published { StreamStatus::Unpublished } else { StreamStatus::Stopped };
            effects.extend(self.end(&id, status, Some(why), true));
        }
        effects
    }

    /// The session is gone: its streams end (players of its publications are stopped).
    pub fn remove_session(&mut self, id: &str) -> Vec<Effect> {
        let owned: Vec<String> = self
            .streams
            .values()
            .filter(|s| s.info.session_id == id)
            .map(|s| s.info.media_session_id.clone())
            .collect();
        // Tell the session too: a relay agent's session outlives its connection.
        let mut effects = Vec::new();
        for ms in owned {
            effects.extend(self.end(&ms, StreamStatus::Failed, Some(reason::SESSION_DISCONNECT), false));
        }
        if let (Some(listener), Some(s)) = (&self.listener, self.sessions.remove(id)) {
            if s.established {
                listener.connection(&s, "DISCONNECTED");
            }
        }
        effects
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: &str, name: &str) -> StreamRequest {
        StreamRequest {
            media_session_id: id.into(),
            name: name.into(),
            has_audio: true,
            has_video: true,
            ..Default::default()
        }
    }

    fn registry() -> (Registry, OutboxReceiver) {
        let mut r = Registry::default();
        let (tx, rx) = outbox(64);
        r.add_session("s1".into(), "test".into(), tx);
        r.establish("s1", Map::new());
        (r, rx)
    }

    fn statuses(rx: &mut OutboxReceiver) -> Vec<(String, StreamStatus, Option<String>)> {
        let mut out = Vec::new();
        while let Some(Outbound::Message(ServerMessage::StreamStatus(s))) = rx.try_recv() {
            out.push((s.media_session_id, s.status, s.info));
        }
        out
    }

    #[test]
    fn name_and_media_session_id_are_unique() {
        let (mut r, _rx) = registry();
        r.begin_publish("s1", &req("a", "cam"), 1, 10).unwrap();
        assert_eq!(r.begin_publish("s1", &req("b", "cam"), 2, 11), Err(reason::NAME_IN_USE));
        assert_eq!(r.begin_publish("s1", &req("a", "other"), 3, 12), Err(reason::MEDIA_SESSION_ID_IN_USE));
        assert_eq!(r.begin_play("s1", &req("a", "cam"), 4), Err(reason::MEDIA_SESSION_ID_IN_USE));
        assert_eq!(r.begin_play("s1", &req("p", "nobody"), 5), Err(reason::STREAM_NOT_FOUND));
        assert_eq!(r.begin_play("s1", &req("p", "cam"), 6), Ok(10));
        assert_eq!(r.begin_publish("nosuch", &req("z", "z"), 7, 13), Err(reason::SESSION_DOES_NOT_EXIST));
    }

    #[test]
    fn end_all_tells_each_player_its_own_reason() {
        let (mut r, mut rx) = registry();
        r.begin_publish("s1", &req("pub", "cam"), 1, 10).unwrap();
        r.begin_play("s1", &req("p1", "cam"), 2).unwrap();
        r.connected(1);
        r.connected(2);
        statuses(&mut rx);
        let effects = r.end_all("going");
        assert!(effects.contains(&Effect::RemoveStream { key: 10 }));
        assert_eq!(
            statuses(&mut rx),
            vec![
                ("p1".into(), StreamStatus::Stopped, Some("going".into())),
                ("pub".into(), StreamStatus::Unpublished, Some("going".into())),
            ]
        );
        assert_eq!(r.stream_count(), 0);
    }

    #[test]
    fn publisher_end_stops_players_and_frees_the_name() {
        let (mut r, mut rx) = registry();
        r.begin_publish("s1", &req("pub", "cam"), 1, 10).unwrap();
        r.begin_play("s1", &req("p1", "cam"), 2).unwrap();
        r.connected(1);
        r.connected(2);
        let effects = r.end("pub", StreamStatus::Unpublished, None, false);
        assert!(effects.contains(&Effect::RemoveStream { key: 10 }));
        assert!(effects.contains(&Effect::RemovePeer { peer: 2, close: true }));
        assert_eq!(
            statuses(&mut rx),
            vec![
                ("pub".into(), StreamStatus::Publishing, None),
                ("p1".into(), StreamStatus::Playing, None),
                ("pub".into(), StreamStatus::Unpublished, None),
                ("p1".into(), StreamStatus::Stopped, Some(reason::PUBLISHER_STOP.into())),
            ]
        );
        assert!(r.published("cam").is_none());
        r.begin_publish("s1", &req("pub2", "cam"), 3, 11).unwrap();
    }

    #[test]
    fn a_held_relay_output_keeps_its_players_until_it_resumes_or_ends() {
        let (mut r, mut rx) = registry();
        r.begin_publish("s1", &req("pub", "cam"), 1, 10).unwrap();
        r.begin_play("s1", &req("p1", "cam"), 2).unwrap();
        r.connected(1);
        r.connected(2);
        // Only a relay's output is held; an ordinary publisher is not.
        assert!(r.hold("pub", "lost").is_empty());
        r.set_resumable("pub");
        assert_eq!(r.hold("pub", "lost"), vec![Effect::RemovePeer { peer: 1, close: true }]);
        assert!(r.stream_of_peer(1).is_none());
        // Held again while held (a retry failed): its new peer goes, nobody is told twice.
        assert_eq!(r.resume("pub", 3), Some(10));
        assert_eq!(r.hold("pub", "still lost"), vec![Effect::RemovePeer { peer: 3, close: true }]);
        // A player joining meanwhile hears that there is a problem, not PLAYING.
        assert_eq!(r.begin_play("s1", &req("p2", "cam"), 4), Ok(10));
        r.connected(4);
        assert_eq!(r.resume("pub", 5), Some(10));
        r.connected(5);
        let problem = |id: &str| (id.to_string(), StreamStatus::PlaybackProblem, Some("lost".to_string()));
        assert_eq!(
            statuses(&mut rx)[2..],
            [
                ("pub".into(), StreamStatus::Pending, Some("lost".into())),
                problem("p1"),
                problem("p2"),
                ("pub".into(), StreamStatus::Publishing, None),
                ("p1".into(), StreamStatus::Playing, None),
                ("p2".into(), StreamStatus::Playing, None),
            ]
        );
        assert_eq!(r.resume("pub", 6), None, "not held any more");
        // Held and then ended: the players stop as with any publisher.
        r.hold("pub", "lost");
        let effects = r.end("pub", StreamStatus::Unpublished, Some("gone"), true);
        assert!(effects.contains(&Effect::RemovePeer { peer: 2, close: true }));
        assert!(r.published("cam").is_none());
        assert!(statuses(&mut rx).contains(&("p1".into(), StreamStatus::Stopped, Some(reason::PUBLISHER_STOP.into()))));
    }

    #[test]
    fn pending_streams_per_session_are_bounded() {
        let (mut r, _rx) = registry();
        for i in 0..MAX_PENDING_PER_SESSION as u64 {
            r.begin_publish("s1", &req(&format!("m{i}"), &format!("n{i}")), i, 100 + i).unwrap();
        }
        assert_eq!(r.begin_publish("s1", &req("one-more", "x"), 99, 999), Err(TOO_MANY_PENDING));
        r.connected(0);
        r.begin_publish("s1", &req("one-more", "x"), 99, 999).unwrap();
    }

    #[test]
    fn removing_a_session_ends_its_streams() {
        let (mut r, _rx) = registry();
        r.begin_publish("s1", &req("pub", "cam"), 1, 10).unwrap();
        let effects = r.remove_session("s1");
        assert!(effects.contains(&Effect::RemovePeer { peer: 1, close: false }));
        assert!(r.find(&StreamFilter::default()).is_empty());
        assert!(r.session("s1").is_none());
    }
}

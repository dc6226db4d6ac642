//! The side of the media engine the rest of the server holds: peers are created on
//! the thread their role places them on, recorded before creation so that a removal
//! racing with it cannot leak one, and every other request goes to the right thread.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::{home_thread, Command, MediaStats};
use crate::media::router::{MediaError, Offer, PeerId, Role, SourcePacket, StreamKey};

/// Cheap, cloneable access to the media threads.
#[derive(Clone)]
pub struct MediaHandle {
    threads: Arc<[mpsc::UnboundedSender<Command>]>,
    ids: Arc<AtomicU64>,
    shared_addrs: Arc<Vec<SocketAddr>>,
    placement: Arc<Mutex<Placement>>,
    spread_after: usize,
}

/// Where peers are, recorded before a peer is created: a removal that races with the
/// creation then finds it (and the creation is called off).
#[derive(Default)]
struct Placement {
    peers: HashMap<PeerId, Placed>,
    /// Consumers per stream.
    consumers: HashMap<StreamKey, usize>,
}

#[derive(Clone, Copy)]
struct Placed {
    thread: usize,
    /// The stream a consumer consumes.
    consumes: Option<StreamKey>,
    /// The stream's home thread passes its packets to `thread` on this peer's behalf.
    subscribed: bool,
}

impl Placement {
    fn insert(&mut self, peer: PeerId, thread: usize, consumes: Option<StreamKey>) {
        if let Some(key) = consumes {
            *self.consumers.entry(key).or_default() += 1;
        }
        self.peers.insert(peer, Placed { thread, consumes, subscribed: false });
    }

    fn remove(&mut self, peer: PeerId) -> Option<Placed> {
        let placed = self.peers.remove(&peer)?;
        if let Some(key) = placed.consumes {
            if let Some(n) = self.consumers.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.consumers.remove(&key);
                }
            }
        }
        Some(placed)
    }
}

fn gone<T>(_: T) -> MediaError {
    MediaError::Webrtc("media engine stopped".into())
}

impl MediaHandle {
    pub(super) fn new(
        threads: Arc<[mpsc::UnboundedSender<Command>]>,
        shared_addrs: Vec<SocketAddr>,
        spread_after: usize,
    ) -> Self {
        MediaHandle {
            threads,
            ids: Arc::new(AtomicU64::new(1)),
            shared_addrs: Arc::new(shared_addrs),
            placement: Arc::default(),
            spread_after,
        }
    }

    /// A fresh id for a peer or a stream (one counter: ids never collide).
    pub fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Advertised addresses of the shared media sockets (every thread's).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.shared_addrs
    }

    fn home(&self, key: StreamKey) -> usize {
        home_thread(key, self.threads.len())
    }

    /// The thread a new peer goes to: a producer to its stream's home; a stream's first
    /// `spread_after` consumers too (a small fan-out costs least on one thread), the
    /// ones after that to every thread in turn.
    fn place(&self, placement: &Placement, role: Role) -> usize {
        match role {
            Role::Producer(key) => self.home(key),
            Role::Consumer(key) => {
                let before = placement.consumers.get(&key).copied().unwrap_or(0);
                match before.checked_sub(self.spread_after) {
                    None => self.home(key),
                    // The first to spread goes to the next thread.
                    Some(k) => (self.home(key) + 1 + k) % self.threads.len(),
                }
            }
        }
    }

    fn placement(&self) -> std::sync::MutexGuard<'_, Placement> {
        self.placement.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn call_on<T>(
        &self,
        thread: usize,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, MediaError> {
        let (tx, rx) = oneshot::channel();
        self.threads[thread].send(make(tx)).map_err(gone)?;
        rx.await.map_err(gone)
    }

    fn send_to(&self, thread: usize, command: Command) {
        // Fails only when the engine has stopped, and then there is nothing left to do.
        let _ = self.threads[thread].send(command);
    }

    /// Create a peer on its thread: `make` builds the command that creates it.
    async fn create<T>(
        &self,
        peer: PeerId,
        role: Role,
        make: impl FnOnce(oneshot::Sender<Result<T, MediaError>>) -> Command,
    ) -> Result<T, MediaError> {
        let thread = {
            let mut placement = self.placement();
            let thread = self.place(&placement, role);
            let consumes = if let Role::Consumer(key) = role { Some(key) } else { None };
            placement.insert(peer, thread, consumes);
            thread
        };
        // A consumer away from its stream's home thread: (stream, home).
        let mirrored = match role {
            Role::Consumer(key) if self.home(key) != thread => Some((key, self.home(key))),
            _ => None,
        };
        let result = async {
            if let Some((key, home)) = mirrored {
                let codecs = self.call_on(home, |reply| Command::Codecs { key, reply }).await??;
                self.send_to(thread, Command::Mirror { key, codecs });
            }
            let (tx, rx) = oneshot::channel();
            {
                // Removed while we asked the home thread: do not create it. Subscribing
                // here, under the lock, orders it before the peer's unsubscribing.
                let mut placement = self.placement();
                let placed = placement.peers.get_mut(&peer).ok_or(MediaError::UnknownPeer)?;
                if let Some((key, home)) = mirrored {
                    self.send_to(home, Command::OpenPipe { key, thread });
                    placed.subscribed = true;
                }
                self.threads[thread].send(make(tx)).map_err(gone)?;
            }
            rx.await.map_err(gone)?
        }
        .await;
        if result.is_err() {
            let mut placement = self.placement();
            if let Some(placed) = placement.remove(peer) {
                self.unsubscribe(&placed);
            }
        }
        result
    }

    /// The home thread no longer passes packets on for a peer that is gone.
    fn unsubscribe(&self, placed: &Placed) {
        if let (true, Some(key)) = (placed.subscribed, placed.consumes) {
            self.send_to(self.home(key), Command::ClosePipe { key, thread: placed.thread });
        }
    }

    /// Answer a remote offer. The offer is parsed on tokio's blocking pool first: its
    /// cost grows with what the client sends, and media threads must keep forwarding.
    pub async fn answer(&self, peer: PeerId, role: Role, offer: String) -> Result<String, MediaError> {
        let parsed = tokio::task::spawn_blocking(move || Offer::parse(&offer));
        let offer = parsed.await.map_err(|e| MediaError::Webrtc(format!("SDP parser: {e}")))??;
        self.create(peer, role, |reply| Command::Answer { peer, role, offer, reply }).await
    }

    pub async fn offer(&self, peer: PeerId, role: Role) -> Result<String, MediaError> {
        self.create(peer, role, |reply| Command::Offer { peer, role, reply }).await
    }

    pub async fn apply_answer(&self, peer: PeerId, answer: String) -> Result<(), MediaError> {
        let thread = self.placement().peers.get(&peer).map(|p| p.thread).ok_or(MediaError::UnknownPeer)?;
        self.call_on(thread, |reply| Command::ApplyAnswer { peer, answer, reply }).await?
    }

    /// Every thread's figures, added up.
    pub async fn stats(&self) -> Result<MediaStats, MediaError> {
        let mut total = MediaStats::default();
        for thread in 0..self.threads.len() {
            total = total.add(&self.call_on(thread, |reply| Command::Stats { reply }).await?);
        }
        Ok(total)
    }

    /// WCS's metrics of stream `key` (from its home thread); `None` when it is unknown.
    pub async fn figures(&self, key: StreamKey) -> Option<std::collections::BTreeMap<&'static str, u64>> {
        self.call_on(self.home(key), |reply| Command::Figures { key, reply }).await.ok().flatten()
    }

    /// WCS's metrics of player `peer` (from the thread it lives on).
    pub async fn player_figures(&self, peer: PeerId) -> Option<std::collections::BTreeMap<&'static str, u64>> {
        let thread = self.placement().peers.get(&peer).map(|p| p.thread)?;
        self.call_on(thread, |reply| Command::PlayerFigures { peer, reply }).await.ok().flatten()
    }

    pub fn remove_peer(&self, peer: PeerId, close: bool) {
        // Under the lock, so it cannot overtake a creation in flight (see `create`).
        let mut placement = self.placement();
        if let Some(placed) = placement.remove(peer) {
            self.send_to(placed.thread, Command::RemovePeer { peer, close });
            self.unsubscribe(&placed);
        }
    }
    pub fn add_source(&self, key: StreamKey) {
        self.send_to(self.home(key), Command::AddSource { key });
    }
    /// Forget a stream on its home thread and every mirror.
    pub fn remove_stream(&self, key: StreamKey) {
        for thread in 0..self.threads.len() {
            self.send_to(thread, Command::RemoveStream { key });
        }
    }
    pub fn inject(&self, key: StreamKey, packet: SourcePacket) {
        self.send_to(self.home(key), Command::Inject { key, packet });
    }
    pub fn tap(&self, key: StreamKey) -> mpsc::UnboundedReceiver<SourcePacket> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.send_to(self.home(key), Command::Tap { key, tap: tx });
        rx
    }
    pub fn request_keyframe(&self, key: StreamKey) {
        self.send_to(self.home(key), Command::RequestKeyframe { key });
    }
}

//! The stop signal threaded through the server's tasks (tokio's mini-redis shape): a
//! stage that every listener and session watches, and a count of the tasks still
//! winding down, so `stop` can wait for them. Two stages, because a graceful stop has an
//! order: first the listeners accept no more (while the server still tells its clients
//! why their streams end), then the sessions send what they hold and close with 1001
//! ("going away").

use std::time::Duration;

use tokio::sync::{mpsc, watch};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Stage {
    Running,
    /// No new connections; open ones carry on.
    Draining,
    /// Every connection closes.
    Closing,
}

/// Held by the server: signals the stages and waits for the tasks.
pub struct Shutdown {
    stage: watch::Sender<Stage>,
    done_tx: mpsc::Sender<()>,
    done_rx: mpsc::Receiver<()>,
}

/// Held by each task that must hear the stop; dropping it tells `Shutdown` it is done.
#[derive(Clone)]
pub struct StopSignal {
    stage: watch::Receiver<Stage>,
    _done: mpsc::Sender<()>,
}

impl Default for Shutdown {
    fn default() -> Self {
        let (done_tx, done_rx) = mpsc::channel(1);
        Shutdown { stage: watch::channel(Stage::Running).0, done_tx, done_rx }
    }
}

impl Shutdown {
    pub fn signal(&self) -> StopSignal {
        StopSignal { stage: self.stage.subscribe(), _done: self.done_tx.clone() }
    }

    /// Listeners stop accepting; open connections are left alone.
    pub fn stop_accepting(&self) {
        self.stage.send_if_modified(|s| {
            let changed = *s < Stage::Draining;
            *s = (*s).max(Stage::Draining);
            changed
        });
    }

    /// Tell every task to stop, and wait (at most `grace`) until all have.
    pub async fn stop(mut self, grace: Duration) {
        let _ = self.stage.send(Stage::Closing);
        drop(self.done_tx);
        let _ = tokio::time::timeout(grace, self.done_rx.recv()).await;
    }
}

impl StopSignal {
    /// Resolves once connections must close.
    pub async fn stopped(&mut self) {
        let _ = self.stage.wait_for(|s| *s >= Stage::Closing).await;
    }

    /// Resolves once listeners must accept no more.
    pub async fn no_more_connections(&mut self) {
        let _ = self.stage.wait_for(|s| *s >= Stage::Draining).await;
    }
}

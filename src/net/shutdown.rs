//! The stop signal threaded through the server's tasks (tokio's mini-redis shape): a
//! broadcast that every listener and session watches, and a count of the tasks still
//! winding down, so `stop` can wait for them. Listeners stop accepting; WebSocket
//! sessions close with 1001 ("going away") and end their streams.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// Held by the server: signals the stop and waits for the tasks.
pub struct Shutdown {
    notify: watch::Sender<bool>,
    done_tx: mpsc::Sender<()>,
    done_rx: mpsc::Receiver<()>,
}

/// Held by each task that must hear the stop; dropping it tells `Shutdown` it is done.
#[derive(Clone)]
pub struct StopSignal {
    notify: watch::Receiver<bool>,
    _done: mpsc::Sender<()>,
}

impl Default for Shutdown {
    fn default() -> Self {
        let (done_tx, done_rx) = mpsc::channel(1);
        Shutdown { notify: watch::channel(false).0, done_tx, done_rx }
    }
}

impl Shutdown {
    pub fn signal(&self) -> StopSignal {
        StopSignal { notify: self.notify.subscribe(), _done: self.done_tx.clone() }
    }

    /// Tell every task to stop, and wait (at most `grace`) until all have.
    pub async fn stop(mut self, grace: Duration) {
        let _ = self.notify.send(true);
        drop(self.done_tx);
        let _ = tokio::time::timeout(grace, self.done_rx.recv()).await;
    }
}

impl StopSignal {
    /// Resolves once the server is stopping.
    pub async fn stopped(&mut self) {
        let _ = self.notify.wait_for(|stop| *stop).await;
    }
}

//! The watch hub.

use crate::WatchMessage;

/// One registered watcher; dropping it unregisters it.
pub struct Watcher {
    pub id: u64,
    rx: tokio::sync::mpsc::Receiver<WatchMessage>,
}

impl Watcher {
    /// The next message; `None` once the watcher is closed.
    pub async fn recv(&mut self) -> Option<WatchMessage> {
        self.rx.recv().await
    }
}

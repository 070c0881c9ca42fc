//! A session's cancel requests, as pgshift sees them. A CancelRequest is normally
//! forwarded to the backend, which cancels what it is running; but while pgshift
//! itself is waiting (a pause between lock attempts) or the backend runs pgshift's
//! own work (deferred steps after a COMMIT), the backend would cancel nothing, or
//! the wrong thing. The session watches this signal in those places instead.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct CancelSignal {
    requests: AtomicU64,
    notify: Notify,
    /// The backend runs pgshift's own work: requests must not reach it.
    own_work: AtomicBool,
}

impl CancelSignal {
    /// Counts a request; true when it should also go to the backend.
    pub fn request(&self) -> bool {
        self.requests.fetch_add(1, SeqCst);
        self.notify.notify_waiters();
        !self.own_work.load(SeqCst)
    }

    /// Requests so far; compare with a later count to see new ones.
    pub fn count(&self) -> u64 {
        self.requests.load(SeqCst)
    }

    /// Resolves once a request arrives after `seen` was counted.
    pub async fn after(&self, seen: u64) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count() > seen {
                return;
            }
            notified.await;
        }
    }

    /// True while the backend runs pgshift's own work.
    pub fn own_work(&self) -> bool {
        self.own_work.load(SeqCst)
    }

    /// While set, requests are held for the session instead of forwarded.
    pub fn set_own_work(&self, on: bool) {
        self.own_work.store(on, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn waiters_see_requests_made_after_their_count() {
        let s = Arc::new(CancelSignal::default());
        assert!(s.request());
        let seen = s.count();
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.after(seen).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        s.set_own_work(true);
        assert!(!s.request(), "own work: not forwarded");
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        // A count taken before a request resolves at once.
        tokio::time::timeout(Duration::from_millis(100), s.after(seen))
            .await
            .unwrap();
    }
}

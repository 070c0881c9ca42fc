//! A session's cancel requests, as pgshift sees them. A CancelRequest is normally
//! forwarded to the backend, which cancels what it is running; but while pgshift
//! itself is waiting (a pause between lock attempts) or the backend runs pgshift's
//! own work (deferred steps after a COMMIT), the backend would cancel nothing, or
//! the wrong thing. The session watches this signal in those places instead.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct CancelSignal {
    requests: AtomicU64,
    notify: Notify,
    /// The backend runs pgshift's own work: requests must not reach it.
    own_work: AtomicBool,
    /// Requests being sent on to the backend, not yet known to have arrived.
    sending: AtomicU64,
    sent: Notify,
}

impl CancelSignal {
    /// Counts a request; `Some` when it should also go to the backend, for as
    /// long as the sending takes.
    pub fn request(&self) -> Option<Sending<'_>> {
        // Counted as sending first: a session that sees the request also sees
        // that it may still be on its way.
        self.sending.fetch_add(1, SeqCst);
        let sending = Sending(self);
        self.requests.fetch_add(1, SeqCst);
        self.notify.notify_waiters();
        (!self.own_work.load(SeqCst)).then_some(sending)
    }

    /// Resolves once no request is on its way to the backend (each sending is
    /// bounded by the upstream connect and read timeouts). A request still on
    /// its way when the session hands the backend its next statement could
    /// cancel that statement instead.
    pub async fn arrived(&self) {
        loop {
            let sent = self.sent.notified();
            tokio::pin!(sent);
            sent.as_mut().enable();
            if self.sending.load(SeqCst) == 0 {
                return;
            }
            sent.await;
        }
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

    /// Waits for `work` unless a request arrives after `seen` (then None, and
    /// `work` is dropped). The backend is idle meanwhile, so requests are kept
    /// from it: one sent on could land on the session's next statement.
    pub async fn unless_requested<F: Future>(&self, seen: u64, work: F) -> Option<F::Output> {
        let _kept = Kept::new(self);
        tokio::select! {
            r = work => Some(r),
            _ = self.after(seen) => None,
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

/// A request on its way to the backend; done when dropped.
#[derive(Debug)]
pub struct Sending<'a>(&'a CancelSignal);

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        self.0.sending.fetch_sub(1, SeqCst);
        self.0.sent.notify_waiters();
    }
}

/// Keeps requests from the backend while alive; puts back what was there before.
struct Kept<'a> {
    signal: &'a CancelSignal,
    before: bool,
}

impl<'a> Kept<'a> {
    fn new(signal: &'a CancelSignal) -> Self {
        let before = signal.own_work.swap(true, SeqCst);
        Kept { signal, before }
    }
}

impl Drop for Kept<'_> {
    fn drop(&mut self) {
        self.signal.own_work.store(self.before, SeqCst);
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
        assert!(s.request().is_some());
        let seen = s.count();
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.after(seen).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        s.set_own_work(true);
        assert!(s.request().is_none(), "own work: not forwarded");
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        // A count taken before a request resolves at once.
        tokio::time::timeout(Duration::from_millis(100), s.after(seen))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn requests_while_waiting_stay_with_the_session() {
        let s = Arc::new(CancelSignal::default());
        let seen = s.count();
        let waiter = tokio::spawn({
            let s = s.clone();
            async move {
                s.unless_requested(seen, tokio::time::sleep(Duration::from_secs(30)))
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(s.request().is_none(), "kept from the idle backend");
        let r = tokio::time::timeout(Duration::from_secs(1), waiter).await;
        assert!(
            r.unwrap().unwrap().is_none(),
            "the wait ends on the request"
        );
        let sending = s.request();
        assert!(sending.is_some(), "forwarded again once the wait is over");
        let arrived = tokio::spawn({
            let s = s.clone();
            async move { s.arrived().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!arrived.is_finished(), "the request is still on its way");
        drop(sending);
        tokio::time::timeout(Duration::from_secs(1), arrived)
            .await
            .unwrap()
            .unwrap();
        // Own work around the wait stays on after it.
        s.set_own_work(true);
        let quick = s.unless_requested(s.count(), async { 7 }).await;
        assert_eq!(quick, Some(7));
        assert!(s.own_work());
    }
}

//! The "end every session now" signal at the end of a drain. Sessions check a flag,
//! which costs one load per wake-up; the Notify is polled only once per session, to
//! leave its waker, so an idle session wakes when the signal fires.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Context;
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct Terminate {
    fired: AtomicBool,
    notify: Notify,
}

impl Terminate {
    pub fn fire(&self) {
        self.fired.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn is_fired(&self) -> bool {
        self.fired.load(Ordering::Relaxed)
    }

    /// A watch for one session; see [`Watch::poll_fired`].
    pub fn watch(&self) -> Watch<'_> {
        Watch {
            terminate: self,
            notified: Box::pin(self.notify.notified()),
            registered: false,
        }
    }
}

pub struct Watch<'a> {
    terminate: &'a Terminate,
    notified: Pin<Box<Notified<'a>>>,
    registered: bool,
}

impl Watch<'_> {
    /// True once the signal fired. The first call registers the task's waker.
    pub fn poll_fired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.registered {
            self.registered = true;
            if self.notified.as_mut().poll(cx).is_ready() {
                return true;
            }
        }
        self.terminate.is_fired()
    }

    /// Resolves once the signal fired.
    pub async fn fired(&mut self) {
        std::future::poll_fn(|cx| match self.poll_fired(cx) {
            true => std::task::Poll::Ready(()),
            false => std::task::Poll::Pending,
        })
        .await
    }
}

//! The console's PAUSE and RESUME: a paused database's sessions stop reading
//! their clients once they stand outside a transaction with every turn answered,
//! so running queries and open transactions finish and nothing new starts. A
//! session checks one flag per wake-up; it waits on the resume only while held.

use dashmap::DashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

/// One database's pause.
#[derive(Debug, Default)]
pub struct Pause {
    paused: AtomicBool,
    resumed: Notify,
}

impl Pause {
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    fn set(&self, on: bool) {
        self.paused.store(on, Ordering::SeqCst);
        if !on {
            self.resumed.notify_waiters();
        }
    }
}

/// A session's view of its database's pause.
pub struct Hold<'a> {
    pause: &'a Pause,
    waiting: Option<Pin<Box<Notified<'a>>>>,
}

impl<'a> Hold<'a> {
    pub fn new(pause: &'a Pause) -> Hold<'a> {
        Hold {
            pause,
            waiting: None,
        }
    }

    /// True while the database is paused; the task is woken when it resumes.
    pub fn poll_held(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if !self.pause.is_paused() {
                self.waiting = None;
                return false;
            }
            // A Notified hears notify_waiters from its creation on: check the
            // flag again after making it, then wait.
            let pause = self.pause;
            let waiting = self
                .waiting
                .get_or_insert_with(|| Box::pin(pause.resumed.notified()));
            if !self.pause.is_paused() {
                self.waiting = None;
                return false;
            }
            match waiting.as_mut().poll(cx) {
                Poll::Pending => return true,
                Poll::Ready(()) => self.waiting = None,
            }
        }
    }
}

/// Every database's pause, and whether databases not seen yet start paused
/// (`PAUSE` without a database).
#[derive(Debug, Default)]
pub struct Pauses {
    all: AtomicBool,
    by_database: DashMap<String, Arc<Pause>>,
}

impl Pauses {
    /// The pause of `database`, made (paused if everything is) when new.
    pub fn of(&self, database: &str) -> Arc<Pause> {
        if let Some(p) = self.by_database.get(database) {
            return p.clone();
        }
        self.by_database
            .entry(database.to_string())
            .or_insert_with(|| {
                let p = Pause::default();
                p.set(self.all.load(Ordering::SeqCst));
                Arc::new(p)
            })
            .clone()
    }

    /// Pauses or resumes one database, or (None) every one, including those
    /// clients reach later.
    pub fn set(&self, database: Option<&str>, on: bool) {
        match database {
            Some(db) => self.of(db).set(on),
            None => {
                self.all.store(on, Ordering::SeqCst);
                for p in self.by_database.iter() {
                    p.set(on);
                }
            }
        }
    }

    /// The databases paused now, sorted.
    pub fn paused(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .by_database
            .iter()
            .filter(|p| p.is_paused())
            .map(|p| p.key().clone())
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_held_task_wakes_on_resume() {
        let pauses = Arc::new(Pauses::default());
        let p = pauses.of("app");
        pauses.set(None, true);
        assert!(p.is_paused() && pauses.of("later").is_paused());
        pauses.set(Some("later"), false);
        assert_eq!(pauses.paused(), ["app"]);
        let waiter = {
            let p = p.clone();
            tokio::spawn(async move {
                let mut hold = Hold::new(&p);
                std::future::poll_fn(|cx| match hold.poll_held(cx) {
                    true => Poll::Pending,
                    false => Poll::Ready(()),
                })
                .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        pauses.set(None, false);
        tokio::time::timeout(std::time::Duration::from_secs(2), waiter)
            .await
            .expect("woken by the resume")
            .unwrap();
    }
}

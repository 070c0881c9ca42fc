//! The console's login: SCRAM-SHA-256 for the one configured user. The password
//! is salted once at start (a fresh salt per process) and never logged; any
//! other user name gets a salted password nobody knows, so a wrong name and a
//! wrong password look the same. Failed logins are logged and answered later
//! the more there were in the last minute; every failed login ends its connection.

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::sasl::scram::{gen_salted_password, ScramAuth};
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::ClientInfo;
use pgwire::api::PgWireConnectionState;
use pgwire::error::ErrorInfo;
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;

/// SCRAM iterations (Postgres' own default).
const ITERATIONS: usize = 4096;

/// The configured user and its salted password.
pub struct Credentials {
    user: String,
    salt: Vec<u8>,
    salted: Vec<u8>,
    /// What any other user name is checked against.
    decoy: Vec<u8>,
}

impl Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish()
    }
}

impl Credentials {
    pub fn new(user: &str, password: &str) -> Credentials {
        let salt: [u8; 16] = rand::random();
        let decoy: [u8; 32] = rand::random();
        Credentials {
            user: user.to_string(),
            salt: salt.to_vec(),
            salted: gen_salted_password(password, &salt, ITERATIONS),
            decoy: decoy.to_vec(),
        }
    }
}

#[derive(Debug)]
struct Source(Arc<Credentials>);

#[async_trait]
impl AuthSource for Source {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let c = &self.0;
        let hash = match login.user() == Some(c.user.as_str()) {
            true => c.salted.clone(),
            false => c.decoy.clone(),
        };
        Ok(Password::new(Some(c.salt.clone()), hash))
    }
}

/// Recent failed logins, counted for the whole console: on a loopback port every
/// peer has the same address, so a count per address would say nothing.
#[derive(Debug, Default)]
pub struct Failures {
    recent: Mutex<(u32, Option<Instant>)>,
}

/// Failures older than this (since the last one) are forgotten.
const FAILURE_MEMORY: Duration = Duration::from_secs(60);
/// Failures before a failed login is answered late.
const FREE_FAILURES: u32 = 3;
/// Wait per failure past the free ones, and the longest wait.
const WAIT_STEP: Duration = Duration::from_millis(250);
const WAIT_MAX: Duration = Duration::from_secs(2);

impl Failures {
    /// Counts a failure; returns the failures remembered and how long its answer waits
    /// (holding one of the few login slots, so guessing stays slow).
    pub fn record(&self) -> (u32, Duration) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.1.is_some_and(|at| at.elapsed() >= FAILURE_MEMORY) {
            recent.0 = 0;
        }
        recent.0 = recent.0.saturating_add(1);
        recent.1 = Some(Instant::now());
        let over = recent.0.saturating_sub(FREE_FAILURES);
        (recent.0, (WAIT_STEP * over).min(WAIT_MAX))
    }

    /// A login succeeded: the operator is in, the count starts again.
    pub fn clear(&self) {
        *self.recent.lock().unwrap_or_else(|e| e.into_inner()) = (0, None);
    }
}

/// One connection's login state, shared by its gate, its query handlers and the
/// byte guard in front of it. Nothing runs before `authenticated` is set: pgwire
/// goes on reading messages after a failed login (it only closes its sending
/// side), so the handlers check this themselves.
#[derive(Debug)]
pub struct Login {
    authenticated: AtomicBool,
    pub peer: SocketAddr,
    /// One of the few slots for logins in progress, given back once logged in.
    slot: Mutex<Option<OwnedSemaphorePermit>>,
}

impl Login {
    pub fn new(peer: SocketAddr, slot: OwnedSemaphorePermit) -> Login {
        Login {
            authenticated: AtomicBool::new(false),
            peer,
            slot: Mutex::new(Some(slot)),
        }
    }

    pub fn authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Acquire)
    }

    fn succeeded(&self) {
        self.authenticated.store(true, Ordering::Release);
        self.release();
    }

    /// Gives the login slot back (logged in, or the client is gone).
    pub fn release(&self) {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// The error for any message that needs a login before one happened.
    pub fn refused() -> PgWireError {
        fatal("28000", "not logged in to the pgshift console".into())
    }
}

fn fatal(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".into(),
        code.into(),
        message,
    )))
}

/// One connection's login: SCRAM, with failures counted and answered late.
pub struct Gate {
    inner: SASLAuthStartupHandler<DefaultServerParameterProvider>,
    failures: Arc<Failures>,
    login: Arc<Login>,
}

impl Gate {
    pub fn new(credentials: Arc<Credentials>, failures: Arc<Failures>, login: Arc<Login>) -> Gate {
        let mut scram = ScramAuth::new(Arc::new(Source(credentials)));
        scram.set_iterations(ITERATIONS);
        let mut parameters = DefaultServerParameterProvider::default();
        // libpq reads the leading number (psql adapts to it); the rest says who.
        parameters.server_version = format!("15.0 (pgshift {})", env!("CARGO_PKG_VERSION"));
        let inner = SASLAuthStartupHandler::new(Arc::new(parameters)).with_scram(scram);
        Gate {
            inner,
            failures,
            login,
        }
    }
}

#[async_trait]
impl StartupHandler for Gate {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if self.login.authenticated() {
            return Ok(());
        }
        let result = self.inner.on_startup(client, message).await;
        // The name the client logged in with (not the one inside its SCRAM message).
        let user = client.metadata().get("user").cloned().unwrap_or_default();
        match result {
            Ok(()) if matches!(client.state(), PgWireConnectionState::ReadyForQuery) => {
                self.login.succeeded();
                self.failures.clear();
                tracing::info!(target: "pgshift::admin", peer = %self.login.peer, %user, "admin console: logged in");
                Ok(())
            }
            Ok(()) => Ok(()),
            Err(e) => {
                let (failures, wait) = self.failures.record();
                let reason = e.to_string();
                tracing::warn!(target: "pgshift::admin", peer = %self.login.peer, %user, failures, %reason, "admin console: failed login");
                tokio::time::sleep(wait).await;
                // Every failed login ends the connection, whatever pgwire thinks.
                Err(match e {
                    PgWireError::InvalidPassword(_) => fatal(
                        "28P01",
                        format!("password authentication failed for user {user:?}"),
                    ),
                    other => fatal("28000", format!("login refused: {other}")),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_wait_longer_until_a_login_succeeds() {
        let f = Failures::default();
        for _ in 0..FREE_FAILURES {
            assert_eq!(f.record().1, Duration::ZERO);
        }
        assert_eq!(f.record().1, WAIT_STEP);
        for _ in 0..100 {
            f.record();
        }
        assert_eq!(f.record().1, WAIT_MAX);
        f.clear();
        assert_eq!(f.record(), (1, Duration::ZERO));
    }
}

//! The console's login: SCRAM-SHA-256 for the one configured user, checked
//! against a verifier (`super::scram`): the one in the config, or one made at
//! start from the password (a fresh salt per process). The password is never
//! logged; any other user name is checked against a verifier nobody knows the
//! password of, so a wrong name and a wrong password look the same. Failed
//! logins are logged and answered later the more there were in the last
//! minute; every failed login ends its connection.

use super::scram::{Exchange, Refused, Verifier, ITERATIONS};
use async_trait::async_trait;
use bytes::Bytes;
use futures::{Sink, SinkExt};
use pgwire::api::auth::{DefaultServerParameterProvider, StartupHandler};
use pgwire::api::ClientInfo;
use pgwire::api::PgWireConnectionState;
use pgwire::error::ErrorInfo;
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;

const MECHANISM: &str = "SCRAM-SHA-256";

/// What the console checks a login against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    Password(String),
    Verifier(Verifier),
}

/// The configured user and its verifier.
pub struct Credentials {
    user: String,
    verifier: Verifier,
    /// Makes the verifiers other user names are checked against.
    decoy_key: [u8; 32],
}

impl Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish()
    }
}

impl Credentials {
    pub fn new(user: &str, secret: &Secret) -> Credentials {
        let salt: [u8; 16] = rand::random();
        let verifier = match secret {
            Secret::Password(p) => Verifier::from_password(p, &salt, ITERATIONS),
            Secret::Verifier(v) => v.clone(),
        };
        Credentials {
            user: user.to_string(),
            verifier,
            decoy_key: rand::random(),
        }
    }

    /// The verifier a login as `user` is checked against.
    fn verifier_for(&self, user: &str) -> Verifier {
        match user == self.user {
            true => self.verifier.clone(),
            false => Verifier::decoy(&self.decoy_key, user, self.verifier.iterations),
        }
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
    credentials: Arc<Credentials>,
    parameters: DefaultServerParameterProvider,
    exchange: tokio::sync::Mutex<Option<Exchange>>,
    failures: Arc<Failures>,
    login: Arc<Login>,
}

impl Gate {
    pub fn new(credentials: Arc<Credentials>, failures: Arc<Failures>, login: Arc<Login>) -> Gate {
        let mut parameters = DefaultServerParameterProvider::default();
        // libpq reads the leading number (psql adapts to it); the rest says who.
        parameters.server_version = format!("15.0 (pgshift {})", env!("CARGO_PKG_VERSION"));
        Gate {
            credentials,
            parameters,
            exchange: tokio::sync::Mutex::new(None),
            failures,
            login,
        }
    }

    /// One step of the login: the startup message, the client's first SCRAM
    /// message, its final one.
    async fn step<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
        user: &str,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let malformed = |why: Refused| match why {
            Refused::Malformed(what) => PgWireError::InvalidScramMessage(what.to_string()),
            Refused::WrongProof => PgWireError::InvalidPassword(user.to_string()),
        };
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                pgwire::api::auth::protocol_negotiation(client, startup).await?;
                pgwire::api::auth::save_startup_parameters_to_metadata(client, startup);
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client
                    .send(PgWireBackendMessage::Authentication(Authentication::SASL(
                        vec![MECHANISM.to_string()],
                    )))
                    .await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(message) => {
                let mut exchange = self.exchange.lock().await;
                let verifier = self.credentials.verifier_for(user);
                match exchange.take() {
                    None => {
                        let first = message.into_sasl_initial_response()?;
                        if first.auth_method != MECHANISM {
                            return Err(PgWireError::UnsupportedSASLAuthMethod(first.auth_method));
                        }
                        let data = first.data.unwrap_or_default();
                        let (started, server_first) =
                            Exchange::start(&data, &verifier).map_err(malformed)?;
                        client
                            .send(PgWireBackendMessage::Authentication(
                                Authentication::SASLContinue(Bytes::from(server_first)),
                            ))
                            .await?;
                        *exchange = Some(started);
                    }
                    Some(started) => {
                        let last = message.into_sasl_response()?;
                        let server_final =
                            started.finish(&last.data, &verifier).map_err(malformed)?;
                        client
                            .send(PgWireBackendMessage::Authentication(
                                Authentication::SASLFinal(Bytes::from(server_final)),
                            ))
                            .await?;
                        pgwire::api::auth::finish_authentication(client, &self.parameters).await?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
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
        // The name the client logged in with (not the one inside its SCRAM message).
        let user = match &message {
            PgWireFrontendMessage::Startup(s) => s.parameters.get("user").cloned(),
            _ => None,
        }
        .or_else(|| client.metadata().get("user").cloned())
        .unwrap_or_default();
        let result = self.step(client, message, &user).await;
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

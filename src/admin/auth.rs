//! The console's login: SCRAM-SHA-256 for the one configured user. The password
//! is salted once at start (a fresh salt per process) and never logged; any
//! other user name gets a salted password nobody knows, so a wrong name and a
//! wrong password look the same. Failed logins are logged, and a peer that keeps
//! failing waits longer before each new attempt.

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::sasl::scram::{gen_salted_password, ScramAuth};
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::ClientInfo;
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use std::collections::HashMap;
use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// Recent failed logins by peer address.
#[derive(Debug, Default)]
pub struct Failures {
    recent: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// Failures older than this are forgotten.
const FAILURE_MEMORY: Duration = Duration::from_secs(60);
/// Failures a peer may have before it waits.
const FREE_FAILURES: u32 = 3;
/// Wait per failure past the free ones, and the longest wait.
const WAIT_STEP: Duration = Duration::from_millis(500);
const WAIT_MAX: Duration = Duration::from_secs(5);
/// Peers remembered at most (the oldest go first).
const PEERS_MAX: usize = 4096;

impl Failures {
    /// How long a new login from `ip` waits before it is heard.
    pub fn delay(&self, ip: IpAddr) -> Duration {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        match recent.get(&ip) {
            Some((n, at)) if at.elapsed() < FAILURE_MEMORY && *n > FREE_FAILURES => {
                (WAIT_STEP * (n - FREE_FAILURES)).min(WAIT_MAX)
            }
            _ => Duration::ZERO,
        }
    }

    pub fn record(&self, ip: IpAddr) -> u32 {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.retain(|_, (_, at)| at.elapsed() < FAILURE_MEMORY);
        if recent.len() >= PEERS_MAX {
            if let Some(oldest) = recent
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| *k)
            {
                recent.remove(&oldest);
            }
        }
        let entry = recent.entry(ip).or_insert((0, Instant::now()));
        entry.0 += 1;
        entry.1 = Instant::now();
        entry.0
    }
}

/// One connection's login: SCRAM, with the failures counted and slowed down.
pub struct Gate {
    inner: SASLAuthStartupHandler<DefaultServerParameterProvider>,
    failures: Arc<Failures>,
}

impl Gate {
    pub fn new(credentials: Arc<Credentials>, failures: Arc<Failures>) -> Gate {
        let mut scram = ScramAuth::new(Arc::new(Source(credentials)));
        scram.set_iterations(ITERATIONS);
        let mut parameters = DefaultServerParameterProvider::default();
        // libpq reads the leading number (psql adapts to it); the rest says who.
        parameters.server_version = format!("15.0 (pgshift {})", env!("CARGO_PKG_VERSION"));
        let inner = SASLAuthStartupHandler::new(Arc::new(parameters)).with_scram(scram);
        Gate { inner, failures }
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
        let peer = client.socket_addr();
        if let PgWireFrontendMessage::Startup(_) = &message {
            let wait = self.failures.delay(peer.ip());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        let result = self.inner.on_startup(client, message).await;
        if let Err(PgWireError::InvalidPassword(user)) = &result {
            let failures = self.failures.record(peer.ip());
            tracing::warn!(target: "pgshift::admin", %peer, user = %user, failures, "admin console: failed login");
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_that_keeps_failing_waits_longer() {
        let f = Failures::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..FREE_FAILURES {
            f.record(ip);
        }
        assert_eq!(f.delay(ip), Duration::ZERO);
        f.record(ip);
        assert_eq!(f.delay(ip), WAIT_STEP);
        for _ in 0..100 {
            f.record(ip);
        }
        assert_eq!(f.delay(ip), WAIT_MAX);
        assert_eq!(f.delay(other), Duration::ZERO);
    }
}

//! The typed configuration document: TOML on disk, `-c section.key=value` overrides,
//! command-line flags on top, validated before it is used. Every default lives here
//! once and is documented in proxy-config/pgshift.toml.

mod admin;
mod ddl;
mod metrics;
pub mod overrides;
mod rollout;
mod upstream_addr;

pub use admin::Admin;
pub use ddl::{Blockers, Ddl, InTransaction, UnparsedPolicy};
pub use metrics::Metrics;
pub use overrides::apply_override;
pub use rollout::{Rollout, When};
pub use upstream_addr::UpstreamAddr;

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("invalid value for {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("bad -c override {0:?}: expected section.key=value")]
    BadOverride(String),
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: Server,
    pub tls: Tls,
    pub upstream: Upstream,
    pub log: Log,
    pub ddl: Ddl,
    pub rollout: Rollout,
    pub admin: Admin,
    pub metrics: Metrics,
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Address the proxy listens on for clients.
    pub listen: String,
    /// Session threads, each a single-threaded runtime; a session stays on one
    /// thread for its life. 1 serves sessions on the accepting thread itself.
    /// Default 2, the core count of the machine it was measured on (bench/RESULTS.md).
    pub workers: usize,
    /// Client connections served at once; more get FATAL 53300.
    pub max_client_conn: usize,
    /// Time a client has to finish startup and authentication.
    pub startup_timeout_ms: u64,
    /// Time a new connection has to send its startup packet (TLS handshake
    /// included); until then it does not count against `max_client_conn`.
    pub startup_packet_timeout_ms: u64,
    /// On SIGTERM/SIGINT, how long sessions may keep running before FATAL 57P01.
    pub drain_timeout_ms: u64,
    /// Largest client message accepted, in bytes (Postgres' own limit is 1 GiB).
    pub max_message_size: usize,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// PEM certificate chain presented to clients; empty: SSLRequest answered 'N'.
    pub cert_file: String,
    /// PEM private key for `cert_file`.
    pub key_file: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTlsMode {
    Disable,
    Prefer,
    Require,
    VerifyFull,
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Upstream {
    /// `HOST:PORT`, `[IPV6]:PORT`, or `/socket/dir:PORT` for a Unix socket.
    pub address: String,
    pub connect_timeout_ms: u64,
    /// disable | prefer | require | verify-full (TCP only; ignored for Unix sockets).
    pub tls_mode: UpstreamTlsMode,
    /// PEM CA bundle for verify-full.
    pub tls_ca_file: String,
    /// Name checked against the server certificate; default: the host of `address`.
    pub tls_server_name: String,
    /// Role for pgshift's own connections (journal, deferred steps, rollouts).
    pub service_user: String,
    /// Its password; `PGSHIFT_SERVICE_PASSWORD` in the environment wins.
    pub service_password: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// tracing filter, e.g. `info` or `pgshift=debug`; RUST_LOG wins when set.
    pub level: String,
    pub format: LogFormat,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: "127.0.0.1:6432".into(),
            workers: 2,
            max_client_conn: 1000,
            startup_timeout_ms: 60_000,
            startup_packet_timeout_ms: 10_000,
            drain_timeout_ms: 30_000,
            max_message_size: 1 << 30,
        }
    }
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            address: "127.0.0.1:5432".into(),
            connect_timeout_ms: 5_000,
            tls_mode: UpstreamTlsMode::Disable,
            tls_ca_file: String::new(),
            tls_server_name: String::new(),
            service_user: "postgres".into(),
            service_password: String::new(),
        }
    }
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl Config {
    /// Reads `path` (if any), applies `-c` overrides, then validates.
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Config, ConfigError> {
        let (origin, text) = match path {
            Some(p) => (
                p.display().to_string(),
                std::fs::read_to_string(p).map_err(|e| ConfigError::Read {
                    path: p.display().to_string(),
                    reason: e.to_string(),
                })?,
            ),
            None => ("defaults".to_string(), String::new()),
        };
        // Typed parse of the file first, so its errors carry line numbers.
        let parse_err = |e: toml::de::Error| ConfigError::Parse {
            origin: origin.clone(),
            message: one_line(&e, &text),
        };
        toml::from_str::<Config>(&text).map_err(parse_err)?;
        let mut doc: toml::Table = text.parse().map_err(parse_err)?;
        for o in overrides {
            apply_override(&mut doc, o)?;
        }
        let config: Config = toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                origin,
                message: e.message().to_string(),
            })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.to_string(),
        };
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid("server.listen", "expected IP:PORT"));
        }
        if self.server.workers == 0 || self.server.workers > 256 {
            return Err(invalid("server.workers", "expected 1 to 256"));
        }
        if self.server.max_client_conn == 0 {
            return Err(invalid("server.max_client_conn", "must be at least 1"));
        }
        if self.server.startup_packet_timeout_ms == 0 {
            return Err(invalid(
                "server.startup_packet_timeout_ms",
                "must be at least 1",
            ));
        }
        if self.server.max_message_size < 1024 {
            return Err(invalid("server.max_message_size", "must be at least 1024"));
        }
        if self.tls.cert_file.is_empty() != self.tls.key_file.is_empty() {
            return Err(invalid(
                "tls.cert_file",
                "tls.cert_file and tls.key_file go together",
            ));
        }
        UpstreamAddr::parse(&self.upstream.address).map_err(|reason| ConfigError::Invalid {
            key: "upstream.address",
            reason,
        })?;
        if self.upstream.tls_mode == UpstreamTlsMode::VerifyFull
            && self.upstream.tls_ca_file.is_empty()
        {
            return Err(invalid(
                "upstream.tls_ca_file",
                "verify-full needs a CA file",
            ));
        }
        self.ddl.validate()?;
        self.rollout.validate()?;
        self.metrics.validate()?;
        self.admin.validate(self.tls_files().is_some())
    }

    pub fn upstream_addr(&self) -> UpstreamAddr {
        UpstreamAddr::parse(&self.upstream.address).expect("validated")
    }

    pub fn startup_timeout(&self) -> Duration {
        Duration::from_millis(self.server.startup_timeout_ms)
    }

    pub fn startup_packet_timeout(&self) -> Duration {
        Duration::from_millis(self.server.startup_packet_timeout_ms)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream.connect_timeout_ms)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.server.drain_timeout_ms)
    }

    /// The service role's password: `PGSHIFT_SERVICE_PASSWORD` wins over the file.
    pub fn service_password(&self) -> String {
        std::env::var("PGSHIFT_SERVICE_PASSWORD")
            .unwrap_or_else(|_| self.upstream.service_password.clone())
    }

    /// The files a reload re-reads.
    pub fn tls_files(&self) -> Option<(PathBuf, PathBuf)> {
        (!self.tls.cert_file.is_empty()).then(|| {
            (
                self.tls.cert_file.clone().into(),
                self.tls.key_file.clone().into(),
            )
        })
    }
}

/// toml's errors span several lines with a source snippet; keep one line.
fn one_line(e: &toml::de::Error, text: &str) -> String {
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {}", e.message())
        }
        None => e.message().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str, overrides: &[&str]) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!("pgshift-pg-{}-cfg", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.toml", text.len()));
        std::fs::write(&path, text).unwrap();
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        Config::load(Some(&path), &overrides)
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load(None, &[]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.server.listen, "127.0.0.1:6432");
    }

    #[test]
    fn file_and_overrides() {
        let c = load_str(
            "[server]\nmax_client_conn = 5\n[upstream]\naddress = \"/tmp:5433\"\n",
            &["server.max_client_conn=7", "upstream.tls_mode=require"],
        )
        .unwrap();
        assert_eq!(c.server.max_client_conn, 7);
        assert_eq!(c.upstream.tls_mode, UpstreamTlsMode::Require);
        assert!(matches!(
            c.upstream_addr(),
            UpstreamAddr::Unix { port: 5433, .. }
        ));
    }

    #[test]
    fn unknown_keys_are_one_clear_line() {
        let e = load_str("[server]\nlisten_addr = \"x\"\n", &[]).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("line 2") && msg.contains("listen_addr"),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
        let e = load_str("", &["server.nope=1"]).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn invalid_values_name_the_key() {
        let e = load_str("", &["server.listen=nowhere"]).unwrap_err();
        assert!(e.to_string().contains("server.listen"));
        let e = load_str("", &["upstream.tls_mode=verify-full"]).unwrap_err();
        assert!(e.to_string().contains("tls_ca_file"));
        let e = load_str("", &["upstream.tls_mode=sometimes"]).unwrap_err();
        assert!(e.to_string().contains("sometimes"), "{e}");
    }
}

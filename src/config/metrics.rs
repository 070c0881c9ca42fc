//! `[metrics]`: Prometheus metrics (`/metrics`) and a health check (`/healthz`)
//! over plain HTTP on a side port, see `crate::metrics`.

use super::ConfigError;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// Address of the HTTP endpoint; empty: none.
    pub listen: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            listen: "127.0.0.1:9187".into(),
        }
    }
}

impl Metrics {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.is_empty() {
            return Ok(());
        }
        self.listen
            .parse::<std::net::SocketAddr>()
            .map(drop)
            .map_err(|_| ConfigError::Invalid {
                key: "metrics.listen",
                reason: "expected IP:PORT, or empty for no metrics endpoint".into(),
            })
    }
}

//! The command line: `pgshift serve`, `pgshift demo`, `pgshift check` and
//! `pgshift status`.

use crate::config::Config;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "pgshift",
    version,
    about = "PostgreSQL proxy that makes schema changes safe"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Serve(ServeArgs),
    /// Start a throwaway Postgres, put pgshift in front, and show it working.
    Demo(DemoArgs),
    /// Review migration files offline: unsafe DDL, its locks, and the safe plan.
    Check(CheckArgs),
    /// Show rollouts and open deferred DDL from a running pgshift's admin console.
    Status(StatusArgs),
    /// Read a password (the first line of stdin) and print its SCRAM-SHA-256
    /// verifier, for admin.scram_verifier.
    ScramVerifier,
}

#[derive(Debug, Args, Clone)]
pub struct StatusArgs {
    /// The admin console's address.
    #[arg(long, default_value = "127.0.0.1:6433")]
    pub admin: String,
    /// The console's user.
    #[arg(long, default_value = "admin")]
    pub user: String,
    /// File whose first line is the console's password (PGSHIFT_ADMIN_PASSWORD wins).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Connect over TLS and verify the console's certificate against this CA
    /// (PEM) and the --admin address (or --tls-server-name).
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// The name the console's certificate must carry (default: the --admin IP).
    #[arg(long)]
    pub tls_server_name: Option<String>,
    /// One snapshot, then exit (for scripts); otherwise live bars until Ctrl-C.
    #[arg(long)]
    pub once: bool,
    /// Output of --once.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub format: String,
    /// Refresh interval of the live view, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
}

#[derive(Debug, Args, Clone)]
pub struct CheckArgs {
    /// Output format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub format: String,
    /// SQL migration files.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct ServeArgs {
    /// TOML config file (see proxy-config/pgshift.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Client listen address; overrides server.listen.
    #[arg(long)]
    pub listen: Option<String>,
    /// Upstream HOST:PORT or SOCKETDIR:PORT; overrides upstream.address.
    #[arg(long)]
    pub upstream: Option<String>,
    /// Admin console address; overrides admin.listen ("" turns it off).
    #[arg(long)]
    pub admin_listen: Option<String>,
    /// /metrics and /healthz address; overrides metrics.listen ("" turns it off).
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Override any config key, e.g. -c server.max_client_conn=500 (repeatable).
    #[arg(short = 'c', value_name = "SECTION.KEY=VALUE")]
    pub set: Vec<String>,
}

#[derive(Debug, Args, Clone)]
pub struct DemoArgs {
    /// Proxy listen address for the demo.
    #[arg(long, default_value = "127.0.0.1:6432")]
    pub listen: String,
    /// Seconds of pgbench load per target.
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// Exit after the load instead of serving until Ctrl-C.
    #[arg(long)]
    pub exit: bool,
}

impl ServeArgs {
    /// File, then flags, then `-c` overrides: the later wins.
    pub fn load_config(&self) -> Result<Config, crate::config::ConfigError> {
        let mut overrides = Vec::new();
        if let Some(listen) = &self.listen {
            overrides.push(format!(
                "server.listen={}",
                toml::Value::String(listen.clone())
            ));
        }
        if let Some(upstream) = &self.upstream {
            overrides.push(format!(
                "upstream.address={}",
                toml::Value::String(upstream.clone())
            ));
        }
        for (key, value) in [
            ("admin.listen", &self.admin_listen),
            ("metrics.listen", &self.metrics_listen),
        ] {
            if let Some(v) = value {
                overrides.push(format!("{key}={}", toml::Value::String(v.clone())));
            }
        }
        overrides.extend(self.set.iter().cloned());
        Config::load(self.config.as_deref(), &overrides)
    }
}

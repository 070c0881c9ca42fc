//! The command line: `pgshift serve`, `pgshift demo` and `pgshift check`.

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
        overrides.extend(self.set.iter().cloned());
        Config::load(self.config.as_deref(), &overrides)
    }
}

//! pgshift: a PostgreSQL wire-protocol proxy that makes schema changes safe.
//!
//! The hot wing moves bytes: `wire` (sans-IO framing), `net` (transports, TLS),
//! `session` (handshake, auth relay, pump), `context` (settings and shared state),
//! `server` (listener, drain, reload),
//! `workers` (session threads), `admin` (the operators' console on a side port).
//! The slow wing thinks about SQL: `sql`. `cluster` runs throwaway Postgres
//! clusters for the demo and the tests.

pub mod admin;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod context;
pub mod engine;
pub mod latency;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod rollout;
pub mod server;
pub mod session;
pub mod sql;
pub mod stats;
pub mod status;
pub mod wire;
pub mod workers;

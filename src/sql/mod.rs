//! The slow wing: everything that looks at SQL text. Only `sniff` is reachable from
//! the hot path, and it never allocates; `analysis` parses with pg_query and runs
//! the `rules`, which return `plan` data for the executor in `crate::engine`;
//! `check` runs the same analysis over migration files for `pgshift check`.

pub mod analysis;
pub mod check;
pub mod ident;
pub mod plan;
pub mod rules;
pub mod sniff;

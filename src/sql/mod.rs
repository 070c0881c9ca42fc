//! The slow wing: everything that looks at SQL text. Only `sniff` is reachable from
//! the hot path, and it never allocates; `analysis` parses with pg_query and runs
//! the `rules`, which return `plan` data for the executor in `crate::engine`.

pub mod analysis;
pub mod ident;
pub mod plan;
pub mod rules;
pub mod sniff;

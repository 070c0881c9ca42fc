//! The slow wing: everything that looks at SQL text. Only `sniff` is reachable from
//! the hot path, and it never allocates; `analysis` parses with pg_query (on the
//! `parser` threads, after the `nesting` bound, cached in `parse_cache`) and runs the
//! `rules`, which return `plan` data for the executor in `crate::engine`; `check`
//! runs the same analysis over migration files for `pgshift check`.

pub mod analysis;
pub mod check;
pub mod ident;
pub mod mentions;
pub mod naming;
pub mod nesting;
pub mod parse_cache;
pub mod parser;
pub mod plan;
pub mod rules;
pub mod sniff;
pub mod writes;

//! The slow wing: everything that looks at SQL text. Only `sniff` is reachable from
//! the hot path, and it never allocates.

pub mod sniff;

//! Sans-IO Postgres protocol v3 pieces: framing, the startup packet, and the few
//! backend messages the proxy builds or rewrites. Nothing here touches a socket,
//! so every function is testable and fuzzable on plain byte slices.

pub mod activity;
pub mod backend;
pub mod described;
pub mod frame;
pub mod hidden;
pub mod scanner;
pub mod sqlstate;
pub mod startup;

/// Reads a big-endian u32 at `at`. Callers check bounds first.
pub(crate) fn be_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

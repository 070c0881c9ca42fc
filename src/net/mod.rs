//! Transport: client and server streams (plain, TLS, Unix), TLS setup, and
//! connecting to the upstream server.

pub mod stream;
pub mod tls;
pub mod upstream;

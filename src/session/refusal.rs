//! A startup packet only the server can answer (a protocol major version other
//! than 3, a parameter list that does not parse, an encryption request made twice)
//! goes to the server as it came, and the server's refusal goes back as it is
//! until the server closes. Nothing here frames it: Postgres answers a pre-3.0
//! packet in the old protocol's format, which has no length words.

use crate::context::{Settings, Shared};
use crate::net::stream::ClientStream;
use crate::wire::backend::PgError;
use crate::wire::startup;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tracing::debug;

/// Most bytes relayed: a refusal is one short message.
const MAX_REFUSAL: u64 = 64 * 1024;

pub(super) async fn relay(
    client: &mut ClientStream,
    packet: &[u8],
    shared: &Shared,
    settings: &Settings,
    deadline: Instant,
) {
    let code = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
    if matches!(code, startup::SSL_REQUEST | startup::GSSENC_REQUEST) {
        // A second encryption request: the server would take this connection's
        // request for its own and may start a TLS handshake. Postgres refuses it
        // as a protocol version, in these words.
        let err = PgError::fatal(
            "0A000",
            format!(
                "unsupported frontend protocol {}.{}: server supports 3.0 to 3.0",
                code >> 16,
                code & 0xffff
            ),
        );
        super::refuse(client, err).await;
        return;
    }
    let Some(connected) = super::connect_upstream(client, shared, settings).await else {
        return;
    };
    let mut server = connected.stream;
    let relayed = async {
        server.write_all(packet).await?;
        server.flush().await?;
        let n = tokio::io::copy(&mut (&mut server).take(MAX_REFUSAL), client).await?;
        client.shutdown().await?;
        Ok::<u64, std::io::Error>(n)
    };
    match tokio::time::timeout_at(deadline, relayed).await {
        Ok(Ok(n)) => debug!(
            bytes = n,
            "startup packet for the server: its answer relayed"
        ),
        Ok(Err(e)) => debug!(error = %e, "startup packet for the server: relay failed"),
        Err(_) => debug!("startup packet for the server: no end to its answer in time"),
    }
}

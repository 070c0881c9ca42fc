//! A rollout's lock window holds, inside pgshift, the next statement of a
//! session outside a transaction block that names the window's table: it waits
//! here rather than in Postgres's lock queue behind the window's `LOCK`, where
//! every later query on the table would queue behind it. A cancel request
//! meanwhile answers it with `57014` (it never runs), as Postgres answers a
//! statement cancelled in the lock queue; pgshift's shutdown ends the wait.

use super::statements::Window;
use super::Established;
use crate::context::Shared;
use crate::sql::mentions::mentions;
use crate::wire::backend::{self, TxStatus};
use crate::wire::frame::HEADER_LEN;
use bytes::BytesMut;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

/// The most of a statement's text looked at for a table's name.
const LOOK_AT: usize = 64 * 1024;

/// How often a held statement looks whether its window closed.
const POLL: Duration = Duration::from_millis(5);

/// Waits while a lock window is open on a table the held Query or Parse names.
/// True when a cancel request answered the statement (it is gone).
pub(super) async fn wait_out(
    s: &mut Established<'_>,
    shared: &Shared,
    window: &Window<'_>,
) -> Result<bool, super::pump::PumpEnd> {
    // A Bind or Describe of a prepared write pgshift changed names the table
    // as its text does.
    let Some(text) = held_text(s.up.pending()).or_else(|| super::mirrored::held_text(s)) else {
        return Ok(false);
    };
    let names = |open: &[String]| open.iter().any(|t| mentions(&text, t));
    if !names(&window.running.swapping(window.database)) {
        return Ok(false);
    }
    let deadline = Instant::now() + window.longest;
    let seen = s.signal.count();
    // A cancel request is pgshift's to answer while the statement waits here
    // (the backend is idle: it would drop it).
    let mut stop = shared.terminate.watch();
    let waited = async {
        while Instant::now() < deadline && names(&window.running.swapping(window.database)) {
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.fired() => break,
            }
        }
    };
    if s.signal.unless_requested(seen, waited).await.is_some() {
        return Ok(false);
    }
    // The whole turn is answered; a turn not all here yet goes on instead (the
    // cancel finds nothing, as on a backend that has not seen it).
    let Some(len) = super::hold::turn_len(s.up.pending()) else {
        return Ok(false);
    };
    let mut out = BytesMut::new();
    crate::engine::steps::canceled().encode(&mut out);
    backend::ready_for_query(&mut out, TxStatus::Idle);
    s.up.drop_front(len);
    tracing::info!("cancel request answered a statement waiting for a rollout's lock window");
    let written = async {
        s.client.write_all(&out).await?;
        s.client.flush().await
    };
    written.await.map_err(super::pump::PumpEnd::ClientIo)?;
    Ok(true)
}

/// The text of a held Query or Parse (its first [`LOOK_AT`] bytes), in lower
/// case; None for anything else.
fn held_text(held: &[u8]) -> Option<String> {
    let body = held.get(HEADER_LEN..)?;
    let text = match held.first()? {
        b'Q' => body,
        b'P' => {
            let name = body.iter().position(|&b| b == 0)?;
            body.get(name + 1..)?
        }
        _ => return None,
    };
    let end = text
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(text.len())
        .min(LOOK_AT);
    Some(String::from_utf8_lossy(&text[..end]).to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_of_a_query_or_a_parse() {
        let mut q = BytesMut::new();
        backend::query(&mut q, "SELECT * FROM Orders");
        assert_eq!(held_text(&q).as_deref(), Some("select * from orders"));
        let mut p = vec![b'P', 0, 0, 0, 0];
        p.extend_from_slice(b"s1\0SELECT 1 FROM T\0\0\0");
        assert_eq!(held_text(&p).as_deref(), Some("select 1 from t"));
        assert_eq!(held_text(b"B\0\0\0\x04"), None);
    }
}

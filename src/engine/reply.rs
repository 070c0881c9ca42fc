//! What the engine says to the client: refusals, notices, and errors it relays.

use super::conn::{InBand, ServerError};
use super::steps::Failure;
use super::SessionCx;
use crate::sql::analysis::Unparsed;
use crate::sql::plan::{Finding, Policy};
use crate::wire::backend::{write_fields, PgError};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

pub(super) fn rejection(f: &Finding) -> PgError {
    let why = if f.rewrite.is_none() && f.default_policy != Policy::Reject {
        "no safe rewrite exists"
    } else {
        "policy reject"
    };
    PgError::error("0A000", format!("pgshift refused {}: {}", f.tag, f.problem)).with_hint(format!(
        "{} (rule {}, {why}; set [ddl.rules] {} = \"allow\" or \"warn\" to let it through)",
        f.hint, f.rule, f.rule
    ))
}

pub(super) fn unparsed_refusal(why: &Unparsed) -> PgError {
    let what = match why {
        Unparsed::TooLarge { .. } => "Send it as smaller statements, or raise ddl.max_parse_bytes",
        Unparsed::Timeout { .. } | Unparsed::Busy => "Retry it, or raise ddl.parse_timeout_ms",
        Unparsed::ParserFailed(_) => "Write it with less nesting",
    };
    PgError::error(
        "0A000",
        format!("pgshift refused a statement it could not check: {why}"),
    )
    .with_hint(format!(
        "{what}; or set ddl.unparsed = \"forward\" to let such statements through unchecked."
    ))
}

pub(super) fn in_transaction_refusal(f: &Finding) -> PgError {
    PgError::error(
        "25001",
        format!("pgshift cannot run the safe form of {} inside a transaction block", f.tag),
    )
    .with_hint(format!(
        "Run it outside a transaction (e.g. a non-atomic migration), or set ddl.in_transaction = \"defer\" (rule {}).",
        f.rule
    ))
}

pub(super) fn notice<C, S>(
    io: &mut InBand<'_, C, S>,
    cx: &SessionCx<'_>,
    message: &str,
    hint: Option<&str>,
) where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    if !cx.settings.config.ddl.notices {
        return;
    }
    let mut n = PgError::notice(message);
    if let Some(h) = hint {
        n = n.with_hint(h);
    }
    io.send_client(&n.to_bytes());
}

pub(super) fn send_failure<C, S>(io: &mut InBand<'_, C, S>, failure: &Failure)
where
    C: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut out = BytesMut::new();
    match failure {
        Failure::Ours(e) => e.encode(&mut out),
        Failure::Server(e) => encode_server_error(&mut out, e),
        Failure::Io(_) => return,
    }
    io.send_client(&out);
}

pub(super) fn encode_server_error(out: &mut BytesMut, e: &ServerError) {
    // The server's fields as it sent them (the steps placed the position in the
    // client's text, or dropped it).
    let fields: Vec<(u8, &str)> = e.fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    if fields.is_empty() {
        let mut fields: Vec<(u8, &str)> = vec![
            (b'S', "ERROR"),
            (b'V', "ERROR"),
            (b'C', &e.code),
            (b'M', &e.message),
        ];
        if let Some(d) = &e.detail {
            fields.push((b'D', d));
        }
        if let Some(h) = &e.hint {
            fields.push((b'H', h));
        }
        return write_fields(out, b'E', &fields);
    }
    write_fields(out, b'E', &fields);
}

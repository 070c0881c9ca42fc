//! Backend messages the proxy builds (ErrorResponse, BackendKeyData) or reads and
//! rewrites during startup (Authentication, NegotiateProtocolVersion).

use super::be_u32;
use super::frame::write_frame;
use bytes::{Bytes, BytesMut};

pub const AUTH_OK: u32 = 0;
pub const AUTH_SASL: u32 = 10;
pub const AUTH_SASL_CONTINUE: u32 = 11;
pub const AUTH_SASL_FINAL: u32 = 12;
pub const SCRAM_PLUS: &str = "SCRAM-SHA-256-PLUS";

/// ErrorResponse/NoticeResponse severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Notice,
    Warning,
    Error,
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Notice => "NOTICE",
            Severity::Warning => "WARNING",
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// A client-facing error: every one carries a real SQLSTATE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl PgError {
    pub fn fatal(code: &'static str, message: impl Into<String>) -> Self {
        PgError {
            severity: Severity::Fatal,
            code,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        PgError {
            severity: Severity::Error,
            ..PgError::fatal(code, message)
        }
    }

    /// A NoticeResponse (SQLSTATE 00000 unless `code` says otherwise).
    pub fn notice(message: impl Into<String>) -> Self {
        PgError {
            severity: Severity::Notice,
            ..PgError::fatal("00000", message)
        }
    }

    /// A NoticeResponse of severity WARNING (SQLSTATE 01000).
    pub fn warning(message: impl Into<String>) -> Self {
        PgError {
            severity: Severity::Warning,
            ..PgError::fatal("01000", message)
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Appends this error as an ErrorResponse frame.
    pub fn encode(&self, out: &mut BytesMut) {
        let mut fields: Vec<(u8, &str)> = vec![
            (b'S', self.severity.as_str()),
            (b'V', self.severity.as_str()),
            (b'C', self.code),
            (b'M', &self.message),
        ];
        if let Some(d) = &self.detail {
            fields.push((b'D', d));
        }
        if let Some(h) = &self.hint {
            fields.push((b'H', h));
        }
        let tag = match self.severity {
            Severity::Notice | Severity::Warning => b'N',
            Severity::Error | Severity::Fatal => b'E',
        };
        write_fields(out, tag, &fields);
    }

    pub fn to_bytes(&self) -> BytesMut {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out
    }
}

pub fn write_fields(out: &mut BytesMut, tag: u8, fields: &[(u8, &str)]) {
    write_frame(out, tag, |b| {
        for (code, value) in fields {
            b.extend_from_slice(&[*code]);
            b.extend_from_slice(value.as_bytes());
            b.extend_from_slice(&[0]);
        }
        b.extend_from_slice(&[0]);
    });
}

/// The fields of an ErrorResponse or NoticeResponse frame (tag included).
pub fn error_fields(frame: &[u8]) -> Vec<(u8, String)> {
    let mut fields = Vec::new();
    let mut rest = frame.get(5..).unwrap_or_default();
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        fields.push((code, String::from_utf8_lossy(&tail[..end]).into_owned()));
        rest = tail.get(end + 1..).unwrap_or_default();
    }
    fields
}

/// Re-encodes an ErrorResponse frame with `hint` replacing any hint it had.
pub fn error_with_hint(frame: &[u8], hint: &str) -> BytesMut {
    let fields = error_fields(frame);
    let mut kept: Vec<(u8, &str)> = fields
        .iter()
        .filter(|(c, _)| *c != b'H')
        .map(|(c, v)| (*c, v.as_str()))
        .collect();
    kept.push((b'H', hint));
    let mut out = BytesMut::new();
    write_fields(&mut out, b'E', &kept);
    out
}

/// Appends a BackendKeyData frame.
pub fn backend_key_data(out: &mut BytesMut, pid: u32, secret: &[u8]) {
    write_frame(out, b'K', |b| {
        b.extend_from_slice(&pid.to_be_bytes());
        b.extend_from_slice(secret);
    });
}

/// Reads a BackendKeyData frame into (pid, secret).
pub fn parse_backend_key_data(frame: &[u8]) -> Option<(u32, Bytes)> {
    if frame.len() < 13 || frame[0] != b'K' {
        return None;
    }
    Some((be_u32(frame, 5), Bytes::copy_from_slice(&frame[9..])))
}

/// The request code of an Authentication frame.
pub fn auth_code(frame: &[u8]) -> Option<u32> {
    (frame.len() >= 9 && frame[0] == b'R').then(|| be_u32(frame, 5))
}

/// The SASL mechanisms an AuthenticationSASL frame offers.
pub fn sasl_mechanisms(frame: &[u8]) -> Vec<String> {
    frame
        .get(9..)
        .unwrap_or_default()
        .split(|&b| b == 0)
        .take_while(|m| !m.is_empty())
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect()
}

/// Re-encodes an AuthenticationSASL frame offering only `mechanisms`.
pub fn auth_sasl(mechanisms: &[String]) -> BytesMut {
    let mut out = BytesMut::new();
    write_frame(&mut out, b'R', |b| {
        b.extend_from_slice(&AUTH_SASL.to_be_bytes());
        for m in mechanisms {
            b.extend_from_slice(m.as_bytes());
            b.extend_from_slice(&[0]);
        }
        b.extend_from_slice(&[0]);
    });
    out
}

/// The newest minor version a NegotiateProtocolVersion frame accepts.
pub fn negotiated_minor(frame: &[u8]) -> Option<u16> {
    (frame.len() >= 9 && frame[0] == b'v').then(|| (be_u32(frame, 5) & 0xffff) as u16)
}

/// Appends a CommandComplete frame.
pub fn command_complete(out: &mut BytesMut, tag: &str) {
    write_frame(out, b'C', |b| {
        b.extend_from_slice(tag.as_bytes());
        b.extend_from_slice(&[0]);
    });
}

/// A session's transaction status, as ReadyForQuery reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TxStatus {
    /// `I`: not in a transaction block.
    #[default]
    Idle,
    /// `T`: in a transaction block.
    InTransaction,
    /// `E`: in a failed transaction block (queries are refused until it ends).
    Failed,
}

impl TxStatus {
    /// The status in a ReadyForQuery body's first byte; None for anything else.
    pub fn from_byte(b: u8) -> Option<TxStatus> {
        match b {
            b'I' => Some(TxStatus::Idle),
            b'T' => Some(TxStatus::InTransaction),
            b'E' => Some(TxStatus::Failed),
            _ => None,
        }
    }

    /// The status of a ReadyForQuery frame's `body`; Idle when it is malformed.
    pub fn of_body(body: &[u8]) -> TxStatus {
        body.first()
            .copied()
            .and_then(TxStatus::from_byte)
            .unwrap_or_default()
    }

    pub fn byte(self) -> u8 {
        match self {
            TxStatus::Idle => b'I',
            TxStatus::InTransaction => b'T',
            TxStatus::Failed => b'E',
        }
    }
}

/// Appends a ReadyForQuery frame.
pub fn ready_for_query(out: &mut BytesMut, status: TxStatus) {
    write_frame(out, b'Z', |b| b.extend_from_slice(&[status.byte()]));
}

/// Appends a simple Query frame (a frontend message, built by the DDL engine).
pub fn query(out: &mut BytesMut, sql: &str) {
    write_frame(out, b'Q', |b| {
        b.extend_from_slice(sql.as_bytes());
        b.extend_from_slice(&[0]);
    });
}

/// Appends an unnamed Parse, a Bind of `params` (text format), an Execute and a
/// Sync: one statement with real parameters (frontend messages, built by the DDL
/// engine, so that values never have to be spliced into SQL text).
pub fn query_with_params(out: &mut BytesMut, sql: &str, params: &[&str]) {
    parse(out, "", sql, &[]);
    let params: Vec<Option<&str>> = params.iter().map(|p| Some(*p)).collect();
    bind_execute_params(out, "", &params);
    sync(out);
}

/// Appends a Parse of `sql` as statement `name` with these parameter types (a
/// frontend message).
pub fn parse(out: &mut BytesMut, name: &str, sql: &str, params: &[u32]) {
    write_frame(out, b'P', |b| {
        put_cstr(b, name);
        put_cstr(b, sql);
        b.extend_from_slice(&(params.len() as u16).to_be_bytes());
        for p in params {
            b.extend_from_slice(&p.to_be_bytes());
        }
    });
}

/// Appends a Describe of statement `name` (a frontend message).
pub fn describe_statement(out: &mut BytesMut, name: &str) {
    write_frame(out, b'D', |b| {
        b.extend_from_slice(b"S");
        put_cstr(b, name);
    });
}

/// Appends a Bind of statement `name` to the portal of the same name, with text
/// parameters (None: NULL) and text results, and an Execute of it.
pub fn bind_execute_params(out: &mut BytesMut, name: &str, params: &[Option<&str>]) {
    write_frame(out, b'B', |b| {
        put_cstr(b, name);
        put_cstr(b, name);
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&(params.len() as u16).to_be_bytes());
        for p in params {
            match p {
                Some(p) => {
                    b.extend_from_slice(&(p.len() as u32).to_be_bytes());
                    b.extend_from_slice(p.as_bytes());
                }
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        b.extend_from_slice(&[0, 0]);
    });
    write_frame(out, b'E', |b| {
        put_cstr(b, name);
        b.extend_from_slice(&[0, 0, 0, 0]);
    });
}

/// Appends a Close of the statement (`kind` b'S') or portal (b'P') `name`.
pub fn close(out: &mut BytesMut, kind: u8, name: &str) {
    write_frame(out, b'C', |b| {
        b.extend_from_slice(&[kind]);
        put_cstr(b, name);
    });
}

/// Appends a Sync.
pub fn sync(out: &mut BytesMut) {
    write_frame(out, b'S', |_| {});
}

fn put_cstr(out: &mut BytesMut, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.extend_from_slice(&[0]);
}

/// One column of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// The table it comes from and its attnum there; 0 for an expression.
    pub table: u32,
    pub attnum: i16,
    pub type_oid: u32,
    pub typmod: i32,
}

/// The columns of a RowDescription body; None when it is malformed.
/// The type oids of a ParameterDescription's body.
pub fn parameter_types(body: &[u8]) -> Option<Vec<u32>> {
    let count = u16::from_be_bytes(body.get(..2)?.try_into().ok()?) as usize;
    let rest = body.get(2..)?;
    if rest.len() != count * 4 {
        return None;
    }
    Some(
        rest.chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

pub fn row_description(mut body: &[u8]) -> Option<Vec<Field>> {
    use bytes::Buf;
    if body.len() < 2 {
        return None;
    }
    let n = body.get_u16();
    let mut fields = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let end = body.iter().position(|&b| b == 0)?;
        let name = String::from_utf8_lossy(&body[..end]).into_owned();
        body.advance(end + 1);
        if body.len() < 18 {
            return None;
        }
        let table = body.get_u32();
        let attnum = body.get_i16();
        let type_oid = body.get_u32();
        let _len = body.get_i16();
        let typmod = body.get_i32();
        let _format = body.get_i16();
        fields.push(Field {
            name,
            table,
            attnum,
            type_oid,
            typmod,
        });
    }
    Some(fields)
}

/// The ErrorResponse or NoticeResponse `frame` with its position field (`P`)
/// changed by `map`; None when it has none.
pub fn remap_position(frame: &[u8], map: impl Fn(usize) -> usize) -> Option<BytesMut> {
    let mut fields = error_fields(frame);
    let p = fields.iter_mut().find(|(k, _)| *k == b'P')?;
    p.1 = map(p.1.parse::<usize>().ok()?).to_string();
    let mut out = BytesMut::new();
    let borrowed: Vec<(u8, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    write_fields(&mut out, *frame.first()?, &borrowed);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_round_trips_through_fields() {
        let e = PgError::fatal("08P01", "bad frame").with_hint("check the client");
        let bytes = e.to_bytes();
        assert_eq!(bytes[0], b'E');
        let fields = error_fields(&bytes);
        assert!(fields.contains(&(b'C', "08P01".into())));
        assert!(fields.contains(&(b'S', "FATAL".into())));
        assert!(fields.contains(&(b'H', "check the client".into())));
        let len = be_u32(&bytes, 1) as usize;
        assert_eq!(len + 1, bytes.len());
    }

    #[test]
    fn hint_is_replaced() {
        let e = PgError::fatal("08P01", "x").with_hint("old");
        let out = error_with_hint(&e.to_bytes(), "new");
        let fields = error_fields(&out);
        assert!(fields.contains(&(b'H', "new".into())));
        assert!(!fields.contains(&(b'H', "old".into())));
    }

    #[test]
    fn sasl_mechanisms_are_read_and_rewritten() {
        let offered = vec![SCRAM_PLUS.to_string(), "SCRAM-SHA-256".to_string()];
        let frame = auth_sasl(&offered);
        assert_eq!(auth_code(&frame), Some(AUTH_SASL));
        assert_eq!(sasl_mechanisms(&frame), offered);
    }

    #[test]
    fn backend_key_data_round_trips() {
        let mut out = BytesMut::new();
        backend_key_data(&mut out, 7, &[9, 9, 9, 9]);
        let (pid, secret) = parse_backend_key_data(&out).unwrap();
        assert_eq!((pid, &secret[..]), (7, &[9u8, 9, 9, 9][..]));
    }

    #[test]
    fn malformed_inputs_do_not_panic() {
        assert_eq!(error_fields(b"E"), vec![]);
        assert_eq!(error_fields(b"E\0\0\0\x06Cx"), vec![(b'C', "x".into())]);
        assert_eq!(sasl_mechanisms(b"R"), Vec::<String>::new());
        assert_eq!(parse_backend_key_data(b"K\0"), None);
        assert_eq!(auth_code(b"R\0\0"), None);
        assert_eq!(negotiated_minor(b"v"), None);
    }
}

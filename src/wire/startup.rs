//! The untagged packets a client may open a connection with: StartupMessage,
//! SSLRequest, GSSENCRequest and CancelRequest.

use super::be_u32;
use bytes::{Bytes, BytesMut};

/// Postgres' own cap on a startup packet (MAX_STARTUP_PACKET_LENGTH).
pub const MAX_STARTUP_LEN: usize = 10_000;
pub const SSL_REQUEST: u32 = 80_877_103;
pub const GSSENC_REQUEST: u32 = 80_877_104;
pub const CANCEL_REQUEST: u32 = 80_877_102;

/// One decoded startup packet. `raw` keeps the original bytes for forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel { pid: u32, secret: Bytes },
    Startup(Startup),
}

/// A StartupMessage: protocol version and the parameters, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Startup {
    pub major: u16,
    pub minor: u16,
    pub params: Vec<(String, String)>,
    pub raw: Bytes,
}

impl Startup {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartupError {
    #[error("invalid length of startup packet: {0}")]
    BadLength(u32),
    #[error("invalid startup packet layout: {0}")]
    BadLayout(&'static str),
    #[error("unsupported frontend protocol {0}.{1}: pgshift supports 3.0 to 3.2")]
    UnsupportedVersion(u16, u16),
}

/// Decodes a startup packet from the front of `buf`; `Ok(None)` until it is complete.
pub fn decode(buf: &mut BytesMut) -> Result<Option<StartupPacket>, StartupError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = be_u32(buf, 0);
    if !(8..=MAX_STARTUP_LEN as u32).contains(&len) {
        return Err(StartupError::BadLength(len));
    }
    let len = len as usize;
    if buf.len() < len {
        buf.reserve(len - buf.len());
        return Ok(None);
    }
    let raw = buf.split_to(len).freeze();
    let code = be_u32(&raw, 4);
    let packet = match code {
        SSL_REQUEST if len == 8 => StartupPacket::SslRequest,
        GSSENC_REQUEST if len == 8 => StartupPacket::GssEncRequest,
        // 3.0 keys are 4 bytes; 3.2 allows up to 256.
        CANCEL_REQUEST if (16..=12 + 256).contains(&len) => StartupPacket::Cancel {
            pid: be_u32(&raw, 8),
            secret: raw.slice(12..),
        },
        SSL_REQUEST | GSSENC_REQUEST | CANCEL_REQUEST => {
            return Err(StartupError::BadLayout("wrong length for a request code"))
        }
        _ => StartupPacket::Startup(parse_startup(raw)?),
    };
    Ok(Some(packet))
}

fn parse_startup(raw: Bytes) -> Result<Startup, StartupError> {
    let major = (be_u32(&raw, 4) >> 16) as u16;
    let minor = (be_u32(&raw, 4) & 0xffff) as u16;
    if major != 3 || minor > 2 {
        return Err(StartupError::UnsupportedVersion(major, minor));
    }
    let mut params = Vec::new();
    let mut rest = &raw[8..];
    loop {
        let key = take_cstr(&mut rest)?;
        if key.is_empty() {
            break;
        }
        let value = take_cstr(&mut rest)?;
        params.push((key, value));
    }
    if !rest.is_empty() {
        return Err(StartupError::BadLayout("bytes after the final terminator"));
    }
    Ok(Startup {
        major,
        minor,
        params,
        raw,
    })
}

fn take_cstr(rest: &mut &[u8]) -> Result<String, StartupError> {
    let end = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or(StartupError::BadLayout("missing string terminator"))?;
    let s = String::from_utf8_lossy(&rest[..end]).into_owned();
    *rest = &rest[end + 1..];
    Ok(s)
}

/// Encodes a CancelRequest for `pid` and `secret`.
pub fn cancel_request(pid: u32, secret: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(12 + secret.len());
    out.extend_from_slice(&((12 + secret.len()) as u32).to_be_bytes());
    out.extend_from_slice(&CANCEL_REQUEST.to_be_bytes());
    out.extend_from_slice(&pid.to_be_bytes());
    out.extend_from_slice(secret);
    out
}

/// Encodes a StartupMessage for `version` (major << 16 | minor) with `params`.
pub fn startup_message(version: u32, params: &[(&str, &str)]) -> BytesMut {
    let mut out = BytesMut::new();
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&version.to_be_bytes());
    for (k, v) in params {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&[0]);
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(&[0]);
    }
    out.extend_from_slice(&[0]);
    let len = out.len() as u32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out
}

/// Encodes an SSLRequest.
pub fn ssl_request() -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&8u32.to_be_bytes());
    out[4..].copy_from_slice(&SSL_REQUEST.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_startup_with_params() {
        let mut buf = startup_message(196_608, &[("user", "app"), ("database", "db")]);
        let Some(StartupPacket::Startup(s)) = decode(&mut buf).unwrap() else {
            panic!("not a startup")
        };
        assert_eq!((s.major, s.minor), (3, 0));
        assert_eq!(s.param("user"), Some("app"));
        assert_eq!(s.param("database"), Some("db"));
        assert!(buf.is_empty());
    }

    #[test]
    fn accepts_protocol_3_2_and_refuses_2_0() {
        let mut buf = startup_message((3 << 16) | 2, &[("user", "a")]);
        assert!(matches!(
            decode(&mut buf),
            Ok(Some(StartupPacket::Startup(_)))
        ));
        let mut buf = startup_message(2 << 16, &[("user", "a")]);
        assert_eq!(
            decode(&mut buf),
            Err(StartupError::UnsupportedVersion(2, 0))
        );
    }

    #[test]
    fn waits_for_partial_packet() {
        let full = startup_message(196_608, &[("user", "app")]);
        let mut buf = BytesMut::from(&full[..7]);
        assert_eq!(decode(&mut buf), Ok(None));
    }

    #[test]
    fn decodes_ssl_gss_and_cancel() {
        let mut buf = BytesMut::from(&ssl_request()[..]);
        assert_eq!(decode(&mut buf), Ok(Some(StartupPacket::SslRequest)));
        let mut buf = BytesMut::from(&b"\0\0\0\x08\x04\xd2\x16\x30"[..]);
        assert_eq!(decode(&mut buf), Ok(Some(StartupPacket::GssEncRequest)));
        let mut buf = cancel_request(42, &[1, 2, 3, 4]);
        assert_eq!(
            decode(&mut buf),
            Ok(Some(StartupPacket::Cancel {
                pid: 42,
                secret: Bytes::from_static(&[1, 2, 3, 4])
            }))
        );
    }

    #[test]
    fn rejects_bad_lengths_and_layouts() {
        let mut buf = BytesMut::from(&b"\0\0\0\x04"[..]);
        assert_eq!(decode(&mut buf), Err(StartupError::BadLength(4)));
        let mut buf = BytesMut::from(&b"\x16\x03\x01\x02"[..]);
        assert!(matches!(decode(&mut buf), Err(StartupError::BadLength(_))));
        let mut buf = BytesMut::from(&b"\0\0\0\x0c\0\x03\0\0user"[..]);
        assert!(matches!(decode(&mut buf), Err(StartupError::BadLayout(_))));
    }
}

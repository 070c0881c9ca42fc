//! The untagged packets a client may open a connection with: StartupMessage,
//! SSLRequest, GSSENCRequest and CancelRequest. They are told apart the way
//! Postgres' ProcessStartupPacket (postmaster.c) does, so that what pgshift cannot
//! use goes where Postgres would put it: an impossible length closes the connection
//! without a word, and a packet only the server can answer (another protocol major
//! version, an unreadable parameter list, an encryption request made twice) is
//! handed to the server, whose refusal then reaches the client as it is.

use super::be_u32;
use bytes::{Bytes, BytesMut};

/// Postgres' cap on a startup packet (MAX_STARTUP_PACKET_LENGTH), which does not
/// count the length word itself.
pub const MAX_STARTUP_PACKET_LENGTH: usize = 10_000;
pub const SSL_REQUEST: u32 = 80_877_103;
pub const GSSENC_REQUEST: u32 = 80_877_104;
pub const CANCEL_REQUEST: u32 = 80_877_102;
/// Longest cancel key protocol 3.2 allows (Postgres 18's MAX_CANCEL_KEY_LENGTH).
const MAX_CANCEL_KEY: usize = 256;

/// One decoded startup packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel {
        pid: u32,
        secret: Bytes,
    },
    Startup(Startup),
    /// A packet pgshift cannot open a session with and Postgres answers itself with
    /// a FATAL (a protocol major version other than 3, a parameter list that does
    /// not parse, an encryption request after that encryption was negotiated): the
    /// raw packet, for the server.
    ForServer(Bytes),
}

/// Encryption requests already answered on this connection. As in Postgres,
/// accepting one (TLS) counts as both; refusing one leaves the other open.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub ssl: bool,
    pub gss: bool,
}

/// A StartupMessage of protocol 3.x: the version and the parameters, in order.
/// `raw` keeps the original bytes for forwarding.
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

/// A packet Postgres drops the connection for without a word (it logs "invalid
/// length of startup packet"): a length out of range, or a CancelRequest of the
/// wrong size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid length of startup packet: {0}")]
pub struct BadLength(pub u32);

/// Decodes a startup packet from the front of `buf`; `Ok(None)` until it is complete.
pub fn decode(buf: &mut BytesMut, done: Negotiated) -> Result<Option<StartupPacket>, BadLength> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let declared = be_u32(buf, 0);
    let len = declared as usize;
    if !(8..=MAX_STARTUP_PACKET_LENGTH + 4).contains(&len) {
        return Err(BadLength(declared));
    }
    if buf.len() < len {
        buf.reserve(len - buf.len());
        return Ok(None);
    }
    let raw = buf.split_to(len).freeze();
    // Postgres reads past the code of an encryption request whatever its length.
    let packet = match be_u32(&raw, 4) {
        // 3.0 keys are 4 bytes; 3.2 allows up to 256.
        CANCEL_REQUEST if (16..=12 + MAX_CANCEL_KEY).contains(&len) => StartupPacket::Cancel {
            pid: be_u32(&raw, 8),
            secret: raw.slice(12..),
        },
        CANCEL_REQUEST => return Err(BadLength(declared)),
        SSL_REQUEST if !done.ssl => StartupPacket::SslRequest,
        GSSENC_REQUEST if !done.gss => StartupPacket::GssEncRequest,
        _ => match parse_startup(&raw) {
            Some(startup) => StartupPacket::Startup(startup),
            None => StartupPacket::ForServer(raw),
        },
    };
    Ok(Some(packet))
}

/// A 3.x StartupMessage whose parameter list ends with its terminator as the
/// last byte (what Postgres checks), or None.
fn parse_startup(raw: &Bytes) -> Option<Startup> {
    let major = (be_u32(raw, 4) >> 16) as u16;
    let minor = (be_u32(raw, 4) & 0xffff) as u16;
    if major != 3 {
        return None;
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
    rest.is_empty().then(|| Startup {
        major,
        minor,
        params,
        raw: raw.clone(),
    })
}

fn take_cstr(rest: &mut &[u8]) -> Option<String> {
    let end = rest.iter().position(|&b| b == 0)?;
    let s = String::from_utf8_lossy(&rest[..end]).into_owned();
    *rest = &rest[end + 1..];
    Some(s)
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
    request(SSL_REQUEST)
}

/// Encodes a GSSENCRequest.
pub fn gssenc_request() -> [u8; 8] {
    request(GSSENC_REQUEST)
}

fn request(code: u32) -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&8u32.to_be_bytes());
    out[4..].copy_from_slice(&code.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRESH: Negotiated = Negotiated {
        ssl: false,
        gss: false,
    };

    fn decode_all(bytes: &[u8], done: Negotiated) -> Result<Option<StartupPacket>, BadLength> {
        let mut buf = BytesMut::from(bytes);
        let packet = decode(&mut buf, done);
        if let Ok(Some(_)) = packet {
            assert!(buf.is_empty(), "the whole packet is consumed");
        }
        packet
    }

    #[test]
    fn decodes_startup_with_params() {
        let buf = startup_message(196_608, &[("user", "app"), ("database", "db")]);
        let Ok(Some(StartupPacket::Startup(s))) = decode_all(&buf, FRESH) else {
            panic!("not a startup")
        };
        assert_eq!((s.major, s.minor), (3, 0));
        assert_eq!(s.param("user"), Some("app"));
        assert_eq!(s.param("database"), Some("db"));
        assert_eq!(&s.raw[..], &buf[..]);
    }

    #[test]
    fn any_3_x_is_a_startup_and_other_majors_are_for_the_server() {
        for minor in [0, 2, 5, 0xffff] {
            let buf = startup_message((3 << 16) | minor, &[("user", "a")]);
            assert!(matches!(
                decode_all(&buf, FRESH),
                Ok(Some(StartupPacket::Startup(Startup { minor: m, .. }))) if m == minor as u16
            ));
        }
        for version in [2 << 16, 1 << 16, 4 << 16, (1234 << 16) | 9999] {
            let buf = startup_message(version, &[("user", "a")]);
            assert_eq!(
                decode_all(&buf, FRESH),
                Ok(Some(StartupPacket::ForServer(buf.freeze())))
            );
        }
    }

    #[test]
    fn unreadable_parameter_lists_are_for_the_server() {
        for bytes in [
            // No terminator after the key.
            &b"\0\0\0\x0c\0\x03\0\0user"[..],
            // A key without its value.
            &b"\0\0\0\x0d\0\x03\0\0user\0"[..],
            // Pairs without the final terminator.
            &b"\0\0\0\x0d\0\x03\0\0u\0a\0x"[..],
            // Bytes after the final terminator.
            &b"\0\0\0\x0a\0\x03\0\0\0\0"[..],
            // No parameter list at all.
            &b"\0\0\0\x08\0\x03\0\0"[..],
        ] {
            assert!(
                matches!(
                    decode_all(bytes, FRESH),
                    Ok(Some(StartupPacket::ForServer(_)))
                ),
                "{bytes:?}"
            );
        }
        // No parameters but the terminator: readable (Postgres then asks for a user).
        let buf = startup_message(196_608, &[]);
        assert!(matches!(
            decode_all(&buf, FRESH),
            Ok(Some(StartupPacket::Startup(s))) if s.params.is_empty()
        ));
    }

    #[test]
    fn waits_for_partial_packet() {
        let full = startup_message(196_608, &[("user", "app")]);
        let mut buf = BytesMut::from(&full[..7]);
        assert_eq!(decode(&mut buf, FRESH), Ok(None));
        let mut buf = BytesMut::from(&full[..3]);
        assert_eq!(decode(&mut buf, FRESH), Ok(None));
    }

    #[test]
    fn encryption_requests_once_each_then_for_the_server() {
        assert_eq!(
            decode_all(&ssl_request(), FRESH),
            Ok(Some(StartupPacket::SslRequest))
        );
        assert_eq!(
            decode_all(&gssenc_request(), FRESH),
            Ok(Some(StartupPacket::GssEncRequest))
        );
        // Postgres does not check the length of an encryption request.
        let long = [&[0, 0, 0, 12][..], &ssl_request()[4..], &[1, 2, 3, 4]].concat();
        assert_eq!(
            decode_all(&long, FRESH),
            Ok(Some(StartupPacket::SslRequest))
        );
        // Answered once, a request reads as protocol version 1234.5679 (or .5680).
        let both = Negotiated {
            ssl: true,
            gss: true,
        };
        for bytes in [&ssl_request()[..], &gssenc_request()[..]] {
            assert_eq!(
                decode_all(bytes, both),
                Ok(Some(StartupPacket::ForServer(Bytes::copy_from_slice(
                    bytes
                ))))
            );
        }
        let ssl_only = Negotiated {
            ssl: true,
            gss: false,
        };
        assert_eq!(
            decode_all(&gssenc_request(), ssl_only),
            Ok(Some(StartupPacket::GssEncRequest))
        );
    }

    #[test]
    fn cancel_requests_of_3_0_and_3_2_sizes() {
        let buf = cancel_request(42, &[1, 2, 3, 4]);
        assert_eq!(
            decode_all(&buf, FRESH),
            Ok(Some(StartupPacket::Cancel {
                pid: 42,
                secret: Bytes::from_static(&[1, 2, 3, 4])
            }))
        );
        let buf = cancel_request(42, &[7; 32]);
        assert!(matches!(
            decode_all(&buf, FRESH),
            Ok(Some(StartupPacket::Cancel { pid: 42, .. }))
        ));
        for secret_len in [0, 3, MAX_CANCEL_KEY + 1] {
            let buf = cancel_request(42, &vec![7; secret_len]);
            assert_eq!(
                decode_all(&buf, FRESH),
                Err(BadLength(12 + secret_len as u32))
            );
        }
    }

    #[test]
    fn lengths_out_of_range_are_refused_before_reading_on() {
        let mut buf = BytesMut::from(&b"\0\0\0\x04"[..]);
        assert_eq!(decode(&mut buf, FRESH), Err(BadLength(4)));
        let mut buf = BytesMut::from(&b"\0\0\0\x07"[..]);
        assert_eq!(decode(&mut buf, FRESH), Err(BadLength(7)));
        // An HTTP request or a TLS ClientHello reads as a huge length.
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1"[..]);
        assert!(matches!(decode(&mut buf, FRESH), Err(BadLength(_))));
        let mut buf = BytesMut::from(&b"\x16\x03\x01\x02"[..]);
        assert!(matches!(decode(&mut buf, FRESH), Err(BadLength(_))));
        // The cap does not count the length word: 10004 bytes in all pass.
        let mut buf = BytesMut::from(&10_005u32.to_be_bytes()[..]);
        assert_eq!(decode(&mut buf, FRESH), Err(BadLength(10_005)));
        let pad = "x".repeat(10_004 - 12);
        let buf = startup_message(196_608, &[("p", &pad)]);
        assert_eq!(buf.len(), 10_004);
        assert!(matches!(
            decode_all(&buf, FRESH),
            Ok(Some(StartupPacket::Startup(_)))
        ));
    }
}

//! SCRAM-SHA-256 (RFC 5802/7677) for the console, checked against a verifier:
//! the stored key and server key Postgres keeps in `pg_authid.rolpassword`
//! (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`). The console's
//! config can then hold that verifier instead of a password; a password given
//! (file or environment) is turned into one at start. No channel binding: the
//! client's first message must say `n,,` (libpq's `sslmode` below verify-full
//! and `channel_binding=prefer` settle on that).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::{digest, hmac, pbkdf2};
use std::num::NonZeroU32;

/// Iterations for a verifier made from a password (Postgres' default).
pub const ITERATIONS: u32 = 4096;
const MECHANISM_PREFIX: &str = "SCRAM-SHA-256$";

/// What the server keeps of a password.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier(..)")
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = hmac::sign(&key, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, data).as_ref());
    out
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Verifier {
    /// The verifier of `password` with `salt` (no SASLprep: a password of
    /// printable ASCII, as operators type, is its own SASLprep).
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> Verifier {
        let mut salted = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(iterations.max(1)).expect("at least one"),
            salt,
            password.as_bytes(),
            &mut salted,
        );
        Verifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&hmac_sha256(&salted, b"Client Key")),
            server_key: hmac_sha256(&salted, b"Server Key"),
        }
    }

    /// A verifier for a user name that does not exist: its salt follows from the
    /// name (as Postgres' mock salt does), so asking twice shows the same salt,
    /// and no password matches it.
    pub fn decoy(key: &[u8], user: &str, iterations: u32) -> Verifier {
        let salt = hmac_sha256(key, format!("salt {user}").as_bytes());
        Verifier {
            iterations,
            salt: salt[..16].to_vec(),
            stored_key: hmac_sha256(key, format!("stored {user}").as_bytes()),
            server_key: hmac_sha256(key, format!("server {user}").as_bytes()),
        }
    }

    /// Reads Postgres' form of it; None when it is not one.
    pub fn parse(text: &str) -> Option<Verifier> {
        let rest = text.trim().strip_prefix(MECHANISM_PREFIX)?;
        let (head, keys) = rest.split_once('$')?;
        let (iterations, salt) = head.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        let key = |s: &str| -> Option<[u8; 32]> { B64.decode(s).ok()?.try_into().ok() };
        let iterations: u32 = iterations.parse().ok().filter(|i| *i > 0)?;
        let salt = B64.decode(salt).ok().filter(|s| !s.is_empty())?;
        Some(Verifier {
            iterations,
            salt,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }

    /// Postgres' form of it.
    pub fn to_text(&self) -> String {
        format!(
            "{MECHANISM_PREFIX}{}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }
}

/// Why an exchange failed: the client's message was malformed, or the proof
/// was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    Malformed(&'static str),
    WrongProof,
}

/// The server's side of one exchange, between the client's first message and
/// its final one.
#[derive(Debug)]
pub struct Exchange {
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl Exchange {
    /// Reads the client's first message; returns the exchange and the
    /// server-first message to send.
    pub fn start(client_first: &[u8], verifier: &Verifier) -> Result<(Exchange, String), Refused> {
        let text =
            std::str::from_utf8(client_first).map_err(|_| Refused::Malformed("not UTF-8"))?;
        // gs2 header: no channel binding, no authzid.
        let bare = text
            .strip_prefix("n,,")
            .or_else(|| text.strip_prefix("y,,"))
            .ok_or(Refused::Malformed("channel binding or an authorization id"))?;
        let client_nonce = bare
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic() && b != b','))
            .ok_or(Refused::Malformed("no client nonce"))?;
        let ours: [u8; 18] = rand::random();
        let nonce = format!("{client_nonce}{}", B64.encode(ours));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&verifier.salt),
            verifier.iterations
        );
        Ok((
            Exchange {
                client_first_bare: bare.to_string(),
                server_first: server_first.clone(),
                nonce,
            },
            server_first,
        ))
    }

    /// Checks the client's final message; returns the server-final message.
    pub fn finish(&self, client_final: &[u8], verifier: &Verifier) -> Result<String, Refused> {
        let text =
            std::str::from_utf8(client_final).map_err(|_| Refused::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(Refused::Malformed("no proof"))?;
        let mut binding = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            if let Some(c) = attr.strip_prefix("c=") {
                binding = Some(c);
            } else if let Some(r) = attr.strip_prefix("r=") {
                nonce = Some(r);
            }
        }
        // base64 of the gs2 header: "n,," or "y,,".
        if !matches!(binding, Some("biws") | Some("eSws")) {
            return Err(Refused::Malformed("channel binding"));
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err(Refused::Malformed("a nonce that is not this exchange's"));
        }
        let proof = B64
            .decode(proof)
            .ok()
            .filter(|p| p.len() == 32)
            .ok_or(Refused::Malformed("proof"))?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = hmac_sha256(&verifier.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        if !same(&sha256(&client_key), &verifier.stored_key) {
            return Err(Refused::WrongProof);
        }
        let server_signature = hmac_sha256(&verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's side, as RFC 5802 computes it.
    fn client_final(password: &str, v: &Verifier, first_bare: &str, server_first: &str) -> String {
        let mut salted = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(v.iterations).unwrap(),
            &v.salt,
            password.as_bytes(),
            &mut salted,
        );
        let client_key = hmac_sha256(&salted, b"Client Key");
        let nonce = server_first.split(',').next().unwrap();
        let without_proof = format!("c=biws,{nonce}");
        let auth = format!("{first_bare},{server_first},{without_proof}");
        let signature = hmac_sha256(&sha256(&client_key), auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }

    #[test]
    fn the_right_password_passes_and_a_wrong_one_does_not() {
        let v = Verifier::from_password("pencil", b"0123456789abcdef", 4096);
        assert_eq!(Verifier::parse(&v.to_text()), Some(v.clone()));
        for (password, ok) in [("pencil", true), ("pencil ", false)] {
            let first_bare = "n=admin,r=rOprNGfwEbeRWgbNEkqO";
            let (exchange, server_first) =
                Exchange::start(format!("n,,{first_bare}").as_bytes(), &v).unwrap();
            let last = client_final(password, &v, first_bare, &server_first);
            let result = exchange.finish(last.as_bytes(), &v);
            assert_eq!(result.is_ok(), ok, "{password:?}: {result:?}");
        }
    }

    #[test]
    fn only_well_formed_verifiers_are_read() {
        let v = Verifier::from_password("pencil", b"saltsaltsaltsalt", 4096);
        let text = v.to_text();
        assert!(text.starts_with("SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$"));
        assert_eq!(Verifier::parse(&format!(" {text}\n")), Some(v));
        for bad in [
            "",
            "md5abc",
            "SCRAM-SHA-256$0:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$4096:c2FsdA==",
        ] {
            assert!(Verifier::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn malformed_exchanges_are_refused() {
        let v = Verifier::from_password("pencil", b"salt", 4096);
        assert!(Exchange::start(b"p=tls-server-end-point,,n=,r=abc", &v).is_err());
        assert!(Exchange::start(b"n,,n=admin", &v).is_err());
        let (exchange, _) = Exchange::start(b"n,,n=admin,r=abc", &v).unwrap();
        assert!(exchange.finish(b"c=biws,r=abcX,p=AAAA", &v).is_err());
        assert!(exchange.finish(b"c=biws,r=abc", &v).is_err());
    }
}

//! A COPY the client prepares (a Parse, named or not) while a table is under
//! rollout: like a simple-Query COPY (`engine::copies`), it gets the column list
//! the application means; the Parse is sent again with that text, its name and
//! parameter types as they came, and the rest of the batch follows untouched.

use super::pump::PumpEnd;
use super::Established;
use crate::context::{Settings, Shared};
use crate::engine::conn::InBand;
use crate::wire::frame::HEADER_LEN;
use bytes::{BufMut, BytesMut};

/// The held Parse's name, text and what follows the text (parameter types).
fn split(body: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let name_end = body.iter().position(|&b| b == 0)?;
    let text_start = name_end + 1;
    let text_end = text_start + body[text_start..].iter().position(|&b| b == 0)?;
    Some((
        &body[..name_end],
        &body[text_start..text_end],
        &body[text_end + 1..],
    ))
}

/// The held message's name, text and parameter types, when it is a Parse.
pub(super) fn held_parse<'a>(s: &'a Established<'_>) -> Option<(&'a [u8], &'a [u8], &'a [u8])> {
    let held = s.up.scanner.held;
    let pending = s.up.pending();
    if pending.first() != Some(&b'P') || held < HEADER_LEN {
        return None;
    }
    split(&pending[HEADER_LEN..held])
}

/// A Parse message for `name`, `text` and the parameter types `rest`.
pub(super) fn parse_frame(name: &[u8], text: &str, rest: &[u8]) -> BytesMut {
    let len = 4 + name.len() + 1 + text.len() + 1 + rest.len();
    let mut frame = BytesMut::with_capacity(1 + len);
    frame.put_u8(b'P');
    frame.put_u32(len as u32);
    frame.put_slice(name);
    frame.put_u8(0);
    frame.put_slice(text.as_bytes());
    frame.put_u8(0);
    frame.put_slice(rest);
    frame
}

/// True when the held message is a Parse of a COPY (then it has been sent on,
/// with a column list or as it came).
pub(super) async fn prepared(
    s: &mut Established<'_>,
    shared: &Shared,
    settings: &Settings,
) -> Result<bool, PumpEnd> {
    let Some((name, text, rest)) = held_parse(s) else {
        return Ok(false);
    };
    if !crate::sql::sniff::starts_with_copy(text) {
        return Ok(false);
    }
    let (name, rest) = (name.to_vec(), rest.to_vec());
    let Ok(text) = std::str::from_utf8(text).map(str::to_string) else {
        s.up.release_held();
        return Ok(true);
    };
    // Its look at the table replaces the unnamed statement.
    s.mirrors.forget_unnamed();
    let status = s.down.scanner.tx_status().unwrap_or_default();
    let unread = s.down.take_unforwarded();
    let cx = super::session_cx(&s.registered.info, shared, settings);
    let mut io = InBand::new(&mut s.client, &mut s.server, unread, status, None);
    let listed = crate::engine::prepared_with_list(&mut io, &cx, &text).await;
    let status = io.status;
    let unread = io.into_unread();
    let listed = listed.map_err(PumpEnd::ServerIo)?;
    s.down.restore(unread).map_err(PumpEnd::ServerProtocol)?;
    s.down.scanner.set_tx_status(status);
    s.registered.info.set_tx_status(status);
    match listed {
        Some(listed) => s.up.replace_held(&parse_frame(&name, &listed, &rest)),
        None => s.up.release_held(),
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parse_splits_and_builds_back_the_same() {
        let frame = parse_frame(b"s1", "COPY t FROM STDIN", &[0, 1, 0, 0, 0, 23]);
        let (name, text, rest) = split(&frame[HEADER_LEN..]).unwrap();
        assert_eq!(
            (name, text, rest),
            (
                &b"s1"[..],
                &b"COPY t FROM STDIN"[..],
                &[0u8, 1, 0, 0, 0, 23][..]
            )
        );
        assert_eq!(
            u32::from_be_bytes(frame[1..5].try_into().unwrap()) as usize,
            frame.len() - 1
        );
        assert_eq!(split(b"no terminator"), None);
    }
}

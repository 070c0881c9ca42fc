//! Protocol fidelity: on the same bytes, pgshift answers what Postgres answers
//! (startup packets it cannot serve go to the server, whose answer is relayed), and
//! after Terminate or a header Postgres refuses, pgshift adds nothing of its own.

mod common;

use common::raw::{messages, query, read_rest, startup_packet, transcript, Raw, Target};
use common::{fresh_db, Proxy};
use std::time::Duration;

const QUIET: Duration = Duration::from_secs(3);

/// Scripts sent before any startup completes, each compared byte for byte.
#[tokio::test]
async fn startup_packets_are_answered_as_postgres_answers_them() {
    let proxy = Proxy::start();
    let ssl = pgshift::wire::startup::ssl_request();
    let gss = pgshift::wire::startup::gssenc_request();
    let v4 = startup_packet(4 << 16, &[("user", "postgres")]);
    let v2 = startup_packet(2 << 16, &[("user", "postgres")]);
    let v3_9 = startup_packet(
        (3 << 16) | 9,
        &[("user", "postgres"), ("database", "nope_db")],
    );
    let cases: Vec<(&str, Vec<&[u8]>)> = vec![
        (
            "an HTTP request",
            vec![&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]],
        ),
        ("a length of 4", vec![&b"\0\0\0\x04"[..]]),
        ("a length of 7", vec![&b"\0\0\0\x07\0\x03\0"[..]]),
        (
            "a TLS ClientHello",
            vec![&b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..]],
        ),
        ("no terminator", vec![&b"\0\0\0\x0c\0\x03\0\0user"[..]]),
        ("protocol 4.0", vec![&v4[..]]),
        ("protocol 2.0", vec![&v2[..]]),
        ("protocol 3.9 to a missing database", vec![&v3_9[..]]),
        ("SSLRequest twice", vec![&ssl[..], &ssl[..]]),
        ("GSSENCRequest twice", vec![&gss[..], &gss[..]]),
    ];
    for (what, script) in cases {
        let direct = transcript(&Target::direct_unix(), &script, QUIET).await;
        let proxied = transcript(&Target::proxy(&proxy), &script, QUIET).await;
        if script.len() == 2 {
            // pgshift answers a repeated request itself: the same one-byte answer,
            // then the same error, without Postgres' source-file fields.
            assert_eq!(direct.bytes[0], proxied.bytes[0], "{what}");
            assert_eq!(
                common::raw::shown_fields_of(&direct.bytes[1..]),
                common::raw::shown_fields_of(&proxied.bytes[1..]),
                "{what}"
            );
            assert_eq!(direct.closed, proxied.closed, "{what}");
            continue;
        }
        assert_eq!(
            direct,
            proxied,
            "{what}: directly {:?}, through pgshift {:?}",
            String::from_utf8_lossy(&direct.bytes),
            String::from_utf8_lossy(&proxied.bytes)
        );
        assert!(direct.closed, "{what}: Postgres closes");
    }
    // Protocol 4.0 is refused with Postgres' own SQLSTATE.
    let answer = transcript(&Target::proxy(&proxy), &[&v4[..]], QUIET).await;
    let msgs = messages(&answer.bytes);
    assert_eq!(msgs[0].0, b'E');
    assert_eq!(common::raw::error_code(&msgs[0].1), "0A000");
}

/// After Terminate nothing comes back, whether it came alone or after a Query.
#[tokio::test]
async fn nothing_is_sent_after_terminate() {
    let db = fresh_db("terminate");
    let proxy = Proxy::start();
    let terminate = common::raw::frame(b'X', b"");

    let (mut raw, _) = Raw::startup(proxy.addr, "postgres", &db).await;
    raw.send(&terminate).await;
    let rest = read_rest(&mut raw.stream, QUIET).await;
    assert!(rest.closed, "pgshift closes after Terminate");
    assert!(rest.bytes.is_empty(), "{:?}", messages(&rest.bytes));

    // A Query, Terminate and more bytes in one write: the answer to the Query,
    // then nothing; what followed Terminate is never run.
    let (mut raw, _) = Raw::startup(proxy.addr, "postgres", &db).await;
    let mut bytes = query("SELECT 7");
    bytes.extend(&terminate);
    bytes.extend(query("CREATE TABLE after_terminate (a int)"));
    raw.send(&bytes).await;
    let rest = read_rest(&mut raw.stream, QUIET).await;
    let tags: Vec<u8> = messages(&rest.bytes).iter().map(|m| m.0).collect();
    assert_eq!(tags, b"TDCZ", "{:?}", messages(&rest.bytes));
    assert!(rest.closed);
    let check = common::connect(&proxy.conn_str(&db, "postgres")).await;
    let row = check
        .query_one(
            "SELECT pg_catalog.to_regclass('after_terminate') IS NULL",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));

    // With DDL in flight (the engine holds the Query): the same.
    let (mut raw, _) = Raw::startup(proxy.addr, "postgres", &db).await;
    let mut bytes = query("CREATE TABLE t (a int); CREATE INDEX t_a ON t (a)");
    bytes.extend(&terminate);
    raw.send(&bytes).await;
    let rest = read_rest(&mut raw.stream, QUIET).await;
    let msgs = messages(&rest.bytes);
    assert_eq!(msgs.last().map(|m| m.0), Some(b'Z'), "{msgs:?}");
    assert!(!msgs.iter().any(|m| m.0 == b'E'), "{msgs:?}");
    assert!(rest.closed);
}

/// A message header Postgres refuses after startup: what it answers, and no more.
#[tokio::test]
async fn a_refused_header_is_answered_by_the_server_alone() {
    let db = fresh_db("badheader");
    let proxy = Proxy::start();
    for header in [&b"Q\0\0\0\x02"[..], &b"S\0\0\x27\x11"[..]] {
        let mut answers = Vec::new();
        for addr in [Target::direct(), Target::proxy(&proxy)] {
            let Target::Tcp(addr) = addr else {
                unreachable!()
            };
            let (mut raw, _) = Raw::startup(addr, "postgres", &db).await;
            raw.send(header).await;
            let rest = read_rest(&mut raw.stream, QUIET).await;
            answers.push((common::raw::shown_fields_of(&rest.bytes), rest.closed));
        }
        assert_eq!(answers[0], answers[1], "{header:?}");
        assert!(answers[0].1, "Postgres closes");
    }
}

//! Malformed and oversize input, limits, unreachable upstreams: the client gets an
//! ErrorResponse with the right SQLSTATE and the proxy keeps serving everyone else.

mod common;

use common::raw::{first_error, frame, query, startup_packet, Raw};
use common::{connect, fresh_db, wait_until, Proxy};
use std::time::{Duration, Instant};

/// A session that must still work after each abuse.
async fn still_serving(proxy: &Proxy, db: &str) {
    let client = connect(&proxy.conn_str(db, "postgres")).await;
    let row = client.query_one("SELECT 41 + 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
}

// Startup packets pgshift cannot serve (bad lengths, other protocol versions,
// unreadable parameter lists) are answered as Postgres answers them: see
// tests/protocol.rs, which compares both byte for byte.

#[tokio::test]
async fn protocol_3_2_is_negotiated_down_by_the_server() {
    let db = fresh_db("proto32");
    let proxy = Proxy::start();
    let mut raw = Raw::connect(proxy.addr).await;
    raw.send(&startup_packet(
        (3 << 16) | 2,
        &[("user", "postgres"), ("database", &db)],
    ))
    .await;
    let msgs = raw.read_until(b'Z').await;
    let tags: Vec<u8> = msgs.iter().map(|m| m.0).collect();
    // Postgres 15 speaks 3.0 and says so; the key pgshift issues is then 4 bytes.
    let negotiate = msgs
        .iter()
        .find(|m| m.0 == b'v')
        .expect("NegotiateProtocolVersion");
    assert_eq!(&negotiate.1[..4], &[0, 3, 0, 0]);
    let key = msgs.iter().find(|m| m.0 == b'K').expect("BackendKeyData");
    assert_eq!(key.1.len(), 8, "{tags:?}");
    raw.send(&query("SELECT 1")).await;
    let rows = raw.read_until(b'Z').await;
    assert!(rows.iter().any(|m| m.0 == b'D'));
}

#[tokio::test]
async fn gssenc_request_is_declined_and_startup_continues() {
    let db = fresh_db("gss");
    let proxy = Proxy::start();
    let mut raw = Raw::connect(proxy.addr).await;
    raw.send(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]).await;
    let mut answer = [0u8; 1];
    tokio::io::AsyncReadExt::read_exact(&mut raw.stream, &mut answer)
        .await
        .unwrap();
    assert_eq!(&answer, b"N");
    raw.send(&startup_packet(
        196_608,
        &[("user", "postgres"), ("database", &db)],
    ))
    .await;
    let msgs = raw.read_until(b'Z').await;
    assert_eq!(msgs.last().map(|m| m.0), Some(b'Z'));
}

#[tokio::test]
async fn bytes_pipelined_after_ssl_request_are_refused() {
    let db = fresh_db("sslpipe");
    let proxy = Proxy::start();
    let mut raw = Raw::connect(proxy.addr).await;
    let mut bytes = pgshift::wire::startup::ssl_request().to_vec();
    bytes.extend(startup_packet(196_608, &[("user", "postgres")]));
    raw.send(&bytes).await;
    // Postgres answers the request (N: no TLS here), then refuses what came with it.
    let mut answer = [0u8; 1];
    tokio::io::AsyncReadExt::read_exact(&mut raw.stream, &mut answer)
        .await
        .unwrap();
    assert_eq!(&answer, b"N");
    let (code, message, _) = first_error(&raw.read_until(b'E').await).unwrap();
    assert_eq!(code, "08P01");
    assert!(
        message.contains("unencrypted data after SSL request"),
        "{message}"
    );
    still_serving(&proxy, &db).await;
}

#[tokio::test]
async fn oversize_and_malformed_frames_after_startup() {
    let db = fresh_db("oversize");
    let proxy = Proxy::start_with(|c| c.server.max_message_size = 64 * 1024);
    let bystander = connect(&proxy.conn_str(&db, "postgres")).await;

    // Oversize: rejected from the header alone, before the body arrives.
    let (mut raw, _) = Raw::startup(proxy.addr, "postgres", &db).await;
    raw.send(&[b'Q', 0x10, 0, 0, 0]).await;
    let (code, message, hint) = first_error(&raw.read_until(b'E').await).unwrap();
    assert_eq!(code, "08P01");
    assert!(message.contains("over the limit"), "{message}");
    assert!(hint.contains("max_message_size"), "{hint}");
    assert!(raw.closed().await);

    // A length below 4 is the server's to refuse (it closes without a word):
    // tests/protocol.rs.

    // An unknown message type is Postgres' call: it answers with its own error.
    let (mut raw, _) = Raw::startup(proxy.addr, "postgres", &db).await;
    raw.send(&frame(b'@', b"junk")).await;
    let (code, _, _) = first_error(&raw.read_until(b'E').await).unwrap();
    assert_eq!(code, "08P01");

    // Just under the limit passes through intact.
    let (mut raw, _) = Raw::startup(proxy.addr, "postgres", &db).await;
    let sql = format!("SELECT length('{}')", "x".repeat(60 * 1024));
    raw.send(&query(&sql)).await;
    let msgs = raw.read_until(b'Z').await;
    let row = msgs.iter().find(|m| m.0 == b'D').expect("a row");
    assert!(String::from_utf8_lossy(&row.1).contains("61440"));

    let row = bystander.query_one("SELECT 2", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    still_serving(&proxy, &db).await;
}

#[tokio::test]
async fn too_many_clients_get_53300() {
    let db = fresh_db("maxconn");
    let proxy = Proxy::start_with(|c| c.server.max_client_conn = 2);
    let a = connect(&proxy.conn_str(&db, "postgres")).await;
    let b = connect(&proxy.conn_str(&db, "postgres")).await;
    let err = tokio_postgres::connect(&proxy.conn_str(&db, "postgres"), tokio_postgres::NoTls)
        .await
        .err()
        .expect("third connection refused");
    assert_eq!(common::sqlstate(&err).as_deref(), Some("53300"), "{err}");
    assert_eq!(proxy.handle.stats().connections_rejected, 1);
    drop(b);
    // The slot frees once the session ends.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = connect(&proxy.conn_str(&db, "postgres")).await;
    c.simple_query("SELECT 1").await.unwrap();
    a.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn unreachable_upstream_gets_08006_quickly() {
    let port = pgshift::cluster::free_port();
    let proxy = Proxy::start_with(|c| c.upstream.address = format!("127.0.0.1:{port}"));
    let started = Instant::now();
    let err = tokio_postgres::connect(
        &proxy.conn_str("postgres", "postgres"),
        tokio_postgres::NoTls,
    )
    .await
    .err()
    .expect("connect fails");
    let db = err
        .as_db_error()
        .expect("an ErrorResponse, not a dropped socket");
    assert_eq!(db.code().code(), "08006");
    assert!(db.hint().unwrap_or("").contains("upstream.address"));
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(proxy.handle.stats().upstream_connect_errors, 1);
}

#[tokio::test]
async fn silent_clients_time_out_at_startup() {
    let db = fresh_db("slowstart");
    let proxy = Proxy::start_with(|c| c.server.startup_timeout_ms = 300);
    let mut raw = Raw::connect(proxy.addr).await;
    let started = Instant::now();
    assert!(raw.closed().await);
    assert!(started.elapsed() < Duration::from_secs(3));
    still_serving(&proxy, &db).await;
}

/// Sockets that never send a startup packet hold no client slot, and are closed
/// after `server.startup_packet_timeout_ms` (pgbouncer's client_login_timeout).
#[tokio::test]
async fn silent_sockets_do_not_lock_out_real_clients() {
    // 1,000 sockets on each side of the proxy, in this one process.
    rlimit::increase_nofile_limit(8192).unwrap();
    let db = fresh_db("silent");
    let proxy = Proxy::start_with(|c| {
        c.server.max_client_conn = 20;
        c.server.startup_packet_timeout_ms = 1_500;
    });
    let mut silent = Vec::new();
    for _ in 0..1_000 {
        silent.push(tokio::net::TcpStream::connect(proxy.addr).await.unwrap());
    }
    // Every one of them accepted and waiting for its startup packet.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let real = connect(&proxy.conn_str(&db, "postgres")).await;
    real.simple_query("SELECT 1").await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(proxy.handle.stats().connections_rejected, 0);
    // They are closed once their time is up, long before startup_timeout_ms.
    let mut closed = 0;
    for s in &mut silent {
        let mut b = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(s, &mut b),
        )
        .await
        {
            closed += 1;
        }
    }
    assert_eq!(closed, 1_000);
    still_serving(&proxy, &db).await;
}

#[tokio::test]
async fn client_killed_mid_copy_leaves_nothing_behind() {
    let db = fresh_db("copykill");
    let proxy = Proxy::start();
    let client = connect(&proxy.conn_str(&db, "postgres")).await;
    client
        .batch_execute("CREATE TABLE t (id int)")
        .await
        .unwrap();
    let (mut raw, _) = Raw::startup(proxy.addr, "postgres", &db).await;
    raw.send(&query("SELECT pg_backend_pid()")).await;
    let msgs = raw.read_until(b'Z').await;
    let row = &msgs.iter().find(|m| m.0 == b'D').unwrap().1;
    let pid: i32 = String::from_utf8_lossy(&row[6..]).parse().unwrap();
    raw.send(&query("COPY t FROM STDIN")).await;
    let msgs = raw.read_until(b'G').await;
    assert_eq!(msgs.last().unwrap().0, b'G', "CopyInResponse");
    raw.send(&frame(b'd', b"1\n2\n3\n")).await;
    // Half a CopyData frame, then the client dies.
    raw.send(&[b'd', 0, 0, 1, 0, b'4']).await;
    drop(raw);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alive: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .unwrap()
            .get(0);
        if alive == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "backend {pid} still alive");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let n: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    still_serving(&proxy, &db).await;
}

#[tokio::test]
async fn backend_terminated_mid_query_reaches_the_client() {
    let db = fresh_db("terminated");
    let proxy = Proxy::start();
    let (pid, running) = common::sleeping_session(&proxy, &db).await;
    let admin = connect(&proxy.conn_str(&db, "postgres")).await;
    admin
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the client is not left hanging")
        .unwrap()
        .unwrap_err();
    assert_eq!(common::sqlstate(&err).as_deref(), Some("57P01"), "{err}");
    still_serving(&proxy, &db).await;
}

/// A client that connects and never sends its startup packet must not hold up
/// shutdown until its startup timeout (a minute here): terminate ends it too.
#[tokio::test]
async fn shutdown_does_not_wait_for_a_client_still_opening() {
    let proxy = Proxy::start_with(|c| {
        c.server.startup_timeout_ms = 60_000;
        c.server.drain_timeout_ms = 200;
    });
    let _silent = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    wait_until(
        "the silent client is accepted",
        Duration::from_secs(5),
        // Accepted, not yet a client: it has not sent its startup packet.
        || proxy.handle.stats().connections_total == 1,
    )
    .await;
    let started = Instant::now();
    let stopped = proxy.stop_within(Duration::from_secs(10)).await;
    assert!(
        stopped,
        "shutdown still waiting after {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

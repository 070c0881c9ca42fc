//! Real clients through pgshift: simple and extended queries, pipelining, COPY both
//! ways, LISTEN/NOTIFY, cancel, errors inside transactions.

mod common;

use common::{connect, fresh_db, sqlstate, Proxy};
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use std::time::{Duration, Instant};

#[tokio::test]
async fn simple_and_extended_queries() {
    let db = fresh_db("queries");
    let proxy = Proxy::start();
    let client = connect(&proxy.conn_str(&db, "postgres")).await;
    client
        .batch_execute(
            "CREATE TABLE t (id int primary key, v text); INSERT INTO t VALUES (1, 'a'), (2, 'b');",
        )
        .await
        .unwrap();
    let rows = client
        .simple_query("SELECT v FROM t ORDER BY id")
        .await
        .unwrap();
    let values: Vec<_> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(values, ["a", "b"]);
    let stmt = client
        .prepare("SELECT v FROM t WHERE id = $1")
        .await
        .unwrap();
    let row = client.query_one(&stmt, &[&2i32]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "b");
    // A large value crosses many read buffers in both directions.
    let big = "x".repeat(3 << 20);
    let row = client
        .query_one("SELECT $1::text || 'y'", &[&big])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0).len(), big.len() + 1);
    // Counters are folded in just after the bytes are written: wait for them.
    common::wait_until("query counters", Duration::from_secs(5), || {
        let stats = proxy.handle.stats();
        stats.queries >= 4 && stats.ddl_candidates >= 1
    })
    .await;
}

#[tokio::test]
async fn pipelined_extended_queries_keep_order() {
    let db = fresh_db("pipeline");
    let proxy = Proxy::start();
    let client = connect(&proxy.conn_str(&db, "postgres")).await;
    let stmt = client.prepare("SELECT $1::int * 2").await.unwrap();
    // tokio-postgres pipelines concurrent queries on one connection.
    let futures = (0..200i32).map(|i| {
        let client = &client;
        let stmt = &stmt;
        async move {
            client
                .query_one(stmt, &[&i])
                .await
                .unwrap()
                .get::<_, i32>(0)
        }
    });
    let results = futures_util::future::join_all(futures).await;
    assert_eq!(results, (0..200).map(|i| i * 2).collect::<Vec<_>>());
}

#[tokio::test]
async fn errors_inside_transactions() {
    let db = fresh_db("txerr");
    let proxy = Proxy::start();
    let mut client = connect(&proxy.conn_str(&db, "postgres")).await;
    client
        .batch_execute("CREATE TABLE t (id int primary key)")
        .await
        .unwrap();
    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    let err = tx
        .execute("INSERT INTO t VALUES (1)", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("23505"));
    let err = tx.execute("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("25P02"));
    tx.rollback().await.unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let err = client.simple_query("SELEC 1").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("42601"));
    common::wait_until("error counter", Duration::from_secs(5), || {
        proxy.handle.stats().server_errors >= 3
    })
    .await;
}

#[tokio::test]
async fn copy_in_and_out() {
    let db = fresh_db("copy");
    let proxy = Proxy::start();
    let client = connect(&proxy.conn_str(&db, "postgres")).await;
    client
        .batch_execute("CREATE TABLE t (id int, v text)")
        .await
        .unwrap();
    let sink = client.copy_in("COPY t FROM STDIN").await.unwrap();
    let mut sink = std::pin::pin!(sink);
    let mut expected = String::new();
    for chunk in 0..50 {
        let mut data = String::new();
        for i in 0..1000 {
            let id = chunk * 1000 + i;
            data.push_str(&format!("{id}\tvalue {id}\n"));
        }
        expected.push_str(&data);
        sink.send(bytes::Bytes::from(data)).await.unwrap();
    }
    let n = sink.finish().await.unwrap();
    assert_eq!(n, 50_000);
    let stream = client
        .copy_out("COPY (SELECT * FROM t ORDER BY id) TO STDOUT")
        .await
        .unwrap();
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
    let out: Vec<u8> = chunks.concat();
    assert_eq!(String::from_utf8(out).unwrap(), expected);
}

#[tokio::test]
async fn listen_notify_across_sessions() {
    let db = fresh_db("notify");
    let proxy = Proxy::start();
    let (listener, mut connection) =
        tokio_postgres::connect(&proxy.conn_str(&db, "postgres"), tokio_postgres::NoTls)
            .await
            .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            let _ = tx.send(m);
        }
    });
    listener.batch_execute("LISTEN jobs").await.unwrap();
    let sender = connect(&proxy.conn_str(&db, "postgres")).await;
    sender
        .batch_execute("NOTIFY jobs, 'payload 1'")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = tokio::time::timeout_at(deadline.into(), rx.recv())
            .await
            .expect("notification within 10 s")
            .expect("connection open");
        if let tokio_postgres::AsyncMessage::Notification(n) = m {
            assert_eq!((n.channel(), n.payload()), ("jobs", "payload 1"));
            break;
        }
    }
    // RAISE NOTICE arrives as a NoticeResponse through the proxy too.
    listener
        .batch_execute("DO $$ BEGIN RAISE NOTICE 'hello from plpgsql'; END $$")
        .await
        .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    match m {
        tokio_postgres::AsyncMessage::Notice(n) => assert_eq!(n.message(), "hello from plpgsql"),
        other => panic!("expected a notice, got {other:?}"),
    }
}

#[tokio::test]
async fn cancel_reaches_the_backend() {
    let db = fresh_db("cancel");
    let proxy = Proxy::start();
    let client = connect(&proxy.conn_str(&db, "postgres")).await;
    let token = client.cancel_token();
    // The pid the client sees is pgshift's, not the backend's.
    let backend_pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let started = Instant::now();
    let sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let err = sleeper.await.unwrap().unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"));
    assert!(
        started.elapsed() < Duration::from_millis(1300),
        "{:?}",
        started.elapsed()
    );
    assert!(backend_pid > 0);
    assert_eq!(proxy.handle.stats().cancel_requests, 1);
}

#[tokio::test]
async fn cancel_with_a_wrong_key_does_nothing() {
    let db = fresh_db("cancelbad");
    let proxy = Proxy::start();
    let client = connect(&proxy.conn_str(&db, "postgres")).await;
    // A raw CancelRequest with a made-up key.
    use tokio::io::AsyncWriteExt;
    let mut raw = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    raw.write_all(&pgshift::wire::startup::cancel_request(12345, b"nope"))
        .await
        .unwrap();
    let started = Instant::now();
    let row = client
        .query_one("SELECT pg_sleep(0.5), 1", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(1), 1);
    assert!(started.elapsed() >= Duration::from_millis(450));
}

#[tokio::test]
async fn upstream_over_unix_socket() {
    let db = fresh_db("unix");
    let proxy = Proxy::start_with(|c| c.upstream.address = common::pg().unix_address());
    let client = connect(&proxy.conn_str(&db, "postgres")).await;
    // Over a Unix socket the server sees no client address.
    let row = client
        .query_one("SELECT inet_client_addr() IS NULL", &[])
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
}

#[tokio::test]
async fn the_proxy_tracks_transaction_status() {
    let db = fresh_db("txstatus");
    let proxy = Proxy::start();
    let client = connect(&proxy.conn_str(&db, "postgres")).await;
    let status = |proxy: &Proxy| {
        let sessions = proxy.handle.sessions();
        assert_eq!(sessions.len(), 1, "{sessions:?}");
        assert_eq!(sessions[0].database, db);
        assert_eq!(sessions[0].user, "postgres");
        sessions[0].tx_status
    };
    let expect = |want: char| {
        let proxy = &proxy;
        async move {
            common::wait_until(&format!("status {want}"), Duration::from_secs(5), || {
                status(proxy) == want
            })
            .await
        }
    };
    client.simple_query("SELECT 1").await.unwrap();
    expect('I').await;
    client.simple_query("BEGIN").await.unwrap();
    expect('T').await;
    client.simple_query("SELECT 1/0").await.unwrap_err();
    expect('E').await;
    client.simple_query("ROLLBACK").await.unwrap();
    expect('I').await;
    drop(client);
    common::wait_until("session gone", Duration::from_secs(5), || {
        proxy.handle.sessions().is_empty()
    })
    .await;
}

/// Sessions on the accepting thread (one worker) and spread over three session
/// threads: each client gets its own backend and its own answers, and every session
/// ends when its client goes.
#[tokio::test]
async fn sessions_run_on_one_or_several_worker_threads() {
    let db = fresh_db("workers");
    for workers in [1, 3] {
        let proxy = Proxy::start_with(|c| c.server.workers = workers);
        let mut clients = Vec::new();
        for _ in 0..6 {
            clients.push(connect(&proxy.conn_str(&db, "postgres")).await);
        }
        let mut pids = Vec::new();
        for (i, client) in clients.iter().enumerate() {
            let row = client
                .query_one("SELECT pg_backend_pid(), $1::int + 1", &[&(i as i32)])
                .await
                .unwrap();
            assert_eq!(row.get::<_, i32>(1), i as i32 + 1, "workers={workers}");
            pids.push(row.get::<_, i32>(0));
        }
        pids.sort();
        pids.dedup();
        assert_eq!(pids.len(), 6, "one backend per client, workers={workers}");
        assert_eq!(proxy.handle.sessions().len(), 6, "workers={workers}");
        drop(clients);
        common::wait_until("sessions end", Duration::from_secs(5), || {
            proxy.handle.sessions().is_empty()
        })
        .await;
        proxy.stop();
    }
}

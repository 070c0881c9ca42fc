//! /metrics and /healthz against a real Postgres: a scrape parses with a
//! Prometheus text-format parser, and its counters move as the traffic says.

mod common;

use common::rollouts::{setup, start};
use common::{connect, fresh_db, Proxy};
use std::collections::HashMap;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn proxy() -> Proxy {
    Proxy::start_with(|c| {
        c.metrics.listen = "127.0.0.1:0".into();
        c.ddl.lock_timeout_ms = 200;
        c.rollout.batch_rows = 2_000;
        c.rollout.latency_factor = 0.0;
    })
}

/// One HTTP request; the status code and the body.
async fn get(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// A scrape, parsed: each sample by name and labels.
async fn scrape(addr: SocketAddr) -> Vec<prometheus_parse::Sample> {
    let (status, body) = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, 200);
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    assert!(!parsed.samples.is_empty());
    parsed.samples
}

fn value(samples: &[prometheus_parse::Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&prometheus_parse::Sample> = samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    match &found[0].value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        other => panic!("{name}: {other:?}"),
    }
}

fn histogram_count(samples: &[prometheus_parse::Sample], name: &str, db: &str) -> (f64, f64) {
    let s = samples
        .iter()
        .find(|s| s.metric == name && s.labels.get("database") == Some(db))
        .unwrap_or_else(|| panic!("no {name} for {db}"));
    match &s.value {
        prometheus_parse::Value::Histogram(buckets) => {
            let inf = buckets.iter().find(|b| b.less_than.is_infinite()).unwrap();
            let under_a_second = buckets
                .iter()
                .find(|b| b.less_than == 1.0)
                .map(|b| b.count)
                .unwrap();
            (inf.count, under_a_second)
        }
        other => panic!("{name}: {other:?}"),
    }
}

#[tokio::test]
async fn counters_move_with_the_traffic() {
    let db = fresh_db("metrics");
    let admin = setup(&db).await;
    let proxy = proxy();
    let addr = proxy.metrics.expect("metrics on");

    let (status, body) = get(addr, "GET /healthz HTTP/1.1\r\n\r\n").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_eq!(get(addr, "GET / HTTP/1.1\r\n\r\n").await.0, 404);
    assert_eq!(get(addr, "POST /metrics HTTP/1.1\r\n\r\n").await.0, 405);

    let app = connect(&proxy.conn_str(&db, "postgres")).await;
    for i in 0..20 {
        app.query_one("SELECT $1::int + 1", &[&i]).await.unwrap();
    }
    let before = scrape(addr).await;
    let queries = value(&before, "pgshift_queries_total", &[("database", &db)]);
    assert!(queries >= 20.0, "{queries}");
    assert!(
        value(
            &before,
            "pgshift_received_bytes_total",
            &[("database", &db)]
        ) > 0.0
    );
    assert_eq!(
        value(&before, "pgshift_client_connections_active", &[]),
        1.0
    );
    let (turns, fast) = histogram_count(&before, "pgshift_turn_duration_seconds", &db);
    assert!(turns >= 20.0, "{turns}");
    assert!(fast <= turns);

    for i in 0..10 {
        app.query_one("SELECT $1::int + 1", &[&i]).await.unwrap();
    }
    app.simple_query("SELECT 1/0")
        .await
        .expect_err("division by zero");
    app.query_one("SELECT 1 / $1::int", &[&0i32])
        .await
        .expect_err("division by zero, extended");
    app.simple_query("SELEC 1")
        .await
        .expect_err("a syntax error");
    app.batch_execute("CREATE INDEX orders_note ON orders (note)")
        .await
        .unwrap();
    let id = start(
        &proxy.conn_str(&db, "postgres"),
        "ALTER TABLE orders ALTER COLUMN amount TYPE bigint",
    )
    .await;
    // A login that fails (here: no such database) makes no counters: the
    // database name is the client's to choose until the server took it.
    let bogus = format!("{db}_nosuch");
    let refused =
        tokio_postgres::connect(&proxy.conn_str(&bogus, "postgres"), tokio_postgres::NoTls).await;
    assert!(refused.is_err());
    // Turns while the rollout runs are timed apart too.
    for i in 0..10 {
        app.query_one("SELECT $1::int + 1", &[&i]).await.unwrap();
    }
    // Rollouts are read at most once a second for scrapes: the one before may
    // still be served.
    let id = id.to_string();
    let waited = std::time::Instant::now();
    let after = loop {
        let after = scrape(addr).await;
        let seen = after.iter().any(|s| {
            s.metric == "pgshift_rollout_phase" && s.labels.get("id") == Some(id.as_str())
        });
        if seen || waited.elapsed() > std::time::Duration::from_secs(5) {
            break after;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let during = after
        .iter()
        .find(|s| s.metric == "pgshift_rollout_turn_duration_seconds")
        .expect("the rollout's turn histogram");
    match &during.value {
        prometheus_parse::Value::Histogram(buckets) => {
            let all = buckets.iter().find(|b| b.less_than.is_infinite()).unwrap();
            assert!(all.count >= 10.0, "{buckets:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        after
            .iter()
            .all(|s| s.labels.get("database") != Some(bogus.as_str())),
        "a failed login has counters"
    );
    let moved = value(&after, "pgshift_queries_total", &[("database", &db)]) - queries;
    assert!(moved >= 21.0, "{moved}");
    assert_eq!(
        value(&after, "pgshift_server_errors_total", &[("database", &db)]),
        3.0
    );
    let class = |c: &str| {
        value(
            &after,
            "pgshift_server_errors_by_class_total",
            &[("database", db.as_str()), ("class", c)],
        )
    };
    assert_eq!((class("22"), class("42")), (2.0, 1.0));
    let (turns_after, _) = histogram_count(&after, "pgshift_turn_duration_seconds", &db);
    assert!(turns_after >= turns + 21.0);
    assert!(
        value(
            &after,
            "pgshift_ddl_statements_total",
            &[("rule", "create-index"), ("outcome", "rewritten")]
        ) >= 1.0
    );
    // The rollout is there, with its phase, while it runs.
    let phases: Vec<&str> = after
        .iter()
        .filter(|s| s.metric == "pgshift_rollout_phase" && s.labels.get("id") == Some(id.as_str()))
        .filter(|s| s.labels.get("database") == Some(db.as_str()))
        .filter_map(|s| s.labels.get("phase"))
        .collect();
    assert_eq!(phases.len(), 1, "{after:?}");
    let labels: HashMap<&str, &str> = [("database", db.as_str()), ("id", id.as_str())].into();
    let done = after
        .iter()
        .find(|s| {
            s.metric == "pgshift_rollout_rows_done"
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
        .expect("rows done");
    assert!(matches!(done.value, prometheus_parse::Value::Gauge(v) if v >= 0.0));
    drop(admin);
}

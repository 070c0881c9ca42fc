//! The proxy as an operator runs it: the binary with a config file, SIGHUP reload,
//! SIGTERM drain, bad config; plus psql and pgbench through it.

mod common;

use common::raw::{first_error, query, Raw};
use common::{connect, fresh_db, pg, psql, Proxy};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn pgshift() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pgshift"))
}

/// Starts the binary and waits until it accepts connections.
fn spawn_binary(args: &[&str]) -> (Child, u16) {
    let port = pgshift::cluster::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = pgshift()
        .args([
            "serve",
            "--listen",
            &listen,
            "--upstream",
            &pg().tcp_address(),
            "--admin-listen",
            "",
        ])
        .args(metrics_flag(args))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "pgshift exited early");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "pgshift did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, port)
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn conn_str(port: u16, db: &str) -> String {
    format!("host=127.0.0.1 port={port} dbname={db} user=postgres connect_timeout=10")
}

#[test]
fn bad_config_is_one_clear_line_and_exit_2() {
    let dir = std::env::temp_dir().join(format!("pgshift-pg-{}-badcfg", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = \"127.0.0.1:1\"\nmax_clients = 5\n",
    )
    .unwrap();
    let out = pgshift()
        .args(["serve", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("line 3") && stderr.contains("max_clients"),
        "{stderr}"
    );

    let out = pgshift()
        .args(["serve", "-c", "upstream.tls_mode=maybe"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("maybe"), "{stderr}");
}

/// With `--metrics-listen`, the binary answers /healthz there; the tests start it
/// with `--metrics-listen ""` otherwise (two on the default port would collide).
fn metrics_flag(args: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    if !args.contains(&"--metrics-listen") {
        out.extend(["--metrics-listen".to_string(), String::new()]);
    }
    out
}

#[tokio::test]
async fn the_metrics_flag_opens_the_endpoint() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let port = pgshift::cluster::free_port();
    let addr = format!("127.0.0.1:{port}");
    let (mut child, _) = spawn_binary(&["--metrics-listen", &addr]);
    // The binary is ready once its proxy port answers; the metrics listener
    // binds beside it, a moment later on a busy host.
    let waited = std::time::Instant::now();
    let mut tcp = loop {
        match tokio::net::TcpStream::connect(&addr).await {
            Ok(tcp) => break tcp,
            Err(_) if waited.elapsed() < std::time::Duration::from_secs(5) => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("metrics endpoint {addr}: {e}"),
        }
    };
    tcp.write_all(b"GET /healthz HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.ends_with("ok\n"), "{answer}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn the_example_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/proxy-config/pgshift.toml");
    pgshift::config::Config::load(Some(std::path::Path::new(path)), &[]).unwrap();
}

#[tokio::test]
async fn sighup_reloads_and_sigterm_drains() {
    let db = fresh_db("signals");
    let dir = std::env::temp_dir().join(format!("pgshift-pg-{}-sig", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pgshift.toml");
    std::fs::write(
        &file,
        "[server]\nmax_client_conn = 1\ndrain_timeout_ms = 500\n",
    )
    .unwrap();
    let (mut child, port) = spawn_binary(&["--config", file.to_str().unwrap()]);
    let first = connect(&conn_str(port, &db)).await;
    let err = tokio_postgres::connect(&conn_str(port, &db), tokio_postgres::NoTls)
        .await
        .err()
        .expect("limit of one");
    assert_eq!(common::sqlstate(&err).as_deref(), Some("53300"));

    std::fs::write(
        &file,
        "[server]\nmax_client_conn = 5\ndrain_timeout_ms = 500\n",
    )
    .unwrap();
    signal(&child, "-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    let second = loop {
        match tokio_postgres::connect(&conn_str(port, &db), tokio_postgres::NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(conn);
                break client;
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("reload did not take: {e}"),
        }
    };
    second.simple_query("SELECT 1").await.unwrap();

    // A session inside a transaction outlives the drain time and is told why it ends.
    let (mut raw, _) = Raw::startup(
        format!("127.0.0.1:{port}").parse().unwrap(),
        "postgres",
        &db,
    )
    .await;
    raw.send(&query("BEGIN")).await;
    raw.read_until(b'Z').await;
    drop(first);
    drop(second);
    let started = Instant::now();
    signal(&child, "-TERM");
    let msgs = raw.read_until(b'E').await;
    let (code, message, _) = first_error(&msgs).expect("FATAL before close");
    assert_eq!(code, "57P01", "{message}");
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(started.elapsed() < Duration::from_secs(5));
    let status = child.wait().unwrap();
    assert!(status.success());
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let lines: Vec<String> = stderr.lines().map_while(Result::ok).collect();
    assert!(
        lines.iter().any(|l| l.contains("configuration reloaded")),
        "{lines:?}"
    );
    // New connections are refused once draining started.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[tokio::test]
async fn idle_sessions_drain_quietly_within_the_timeout() {
    let db = fresh_db("drain");
    let proxy = Proxy::start_with(|c| c.server.drain_timeout_ms = 5_000);
    let client = connect(&proxy.conn_str(&db, "postgres")).await;
    client.simple_query("SELECT 1").await.unwrap();
    let handle = proxy.handle.clone();
    let started = Instant::now();
    let stopper = std::thread::spawn(move || proxy.stop());
    // The session may keep working during the drain.
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.simple_query("SELECT 2").await.unwrap();
    drop(client);
    tokio::task::spawn_blocking(move || stopper.join().unwrap())
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(handle.stats().connections_active, 0);
}

#[test]
fn psql_scripts_with_copy_and_multi_statement_queries() {
    let db = fresh_db("psql");
    let proxy = Proxy::start();
    let dir = std::env::temp_dir().join(format!("pgshift-pg-{}-psql", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("in.csv");
    let data: String = (1..=500).map(|i| format!("{i},name {i}\n")).collect();
    std::fs::write(&csv, &data).unwrap();
    let out_csv = dir.join("out.csv");
    let script = format!(
        "CREATE TABLE people (id int primary key, name text);
\\copy people FROM '{}' WITH (FORMAT csv)
SELECT count(*) FROM people; SELECT max(id) FROM people;
\\copy (SELECT * FROM people ORDER BY id) TO '{}' WITH (FORMAT csv)
BEGIN; UPDATE people SET name = upper(name) WHERE id <= 10; COMMIT;
SELECT name FROM people WHERE id = 3;
",
        csv.display(),
        out_csv.display()
    );
    let port = proxy.port().to_string();
    let conn = [
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-U",
        "postgres",
        "-d",
        &db,
        "-At",
    ];
    let (ok, stdout, stderr) = psql(&conn, &script, &[]);
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
    assert!(lines.contains(&"500"), "{stdout}");
    assert!(lines.contains(&"NAME 3"), "{stdout}");
    assert_eq!(std::fs::read_to_string(&out_csv).unwrap(), data);
    // psql -c with several statements is one simple Query message.
    let multi = [
        &conn[..],
        &[
            "-c",
            "SELECT 1; SELECT 2; CREATE TABLE later (x int); SELECT 3",
        ],
    ]
    .concat();
    let (ok, stdout, stderr) = psql(&multi, "", &[]);
    assert!(ok, "{stderr}");
    // psql 15 prints every result of a multi-statement -c.
    assert_eq!(stdout.trim(), "1\n2\nCREATE TABLE\n3");
    // Counters are folded in just after the bytes are written: wait for them.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(common::wait_until(
        "DDL candidates counted",
        Duration::from_secs(5),
        || proxy.handle.stats().ddl_candidates >= 2,
    ));
}

#[test]
fn pgbench_runs_unchanged() {
    let db = fresh_db("pgbench");
    let proxy = Proxy::start();
    let pgbench = pgshift::cluster::bin_dir().unwrap().join("pgbench");
    let port = proxy.port().to_string();
    let run = |args: &[&str]| {
        let out = Command::new(&pgbench)
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
            .args(args)
            .arg(&db)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&["-i", "-s", "1", "-q"]);
    for mode in ["simple", "extended", "prepared"] {
        let out = run(&["-c", "4", "-j", "2", "-t", "200", "-M", mode]);
        assert!(
            out.contains("number of transactions actually processed: 800/800"),
            "{out}"
        );
    }
    let out = run(&["-S", "-C", "-c", "2", "-t", "50"]);
    assert!(out.contains("actually processed: 100/100"), "{out}");
}

#[tokio::test]
async fn json_logs_carry_the_connection_span() {
    let db = fresh_db("jsonlog");
    let (mut child, port) = spawn_binary(&["-c", "log.format=json", "-c", "log.level=debug"]);
    let client = connect(&conn_str(port, &db)).await;
    client.simple_query("SELECT 1").await.unwrap();
    drop(client);
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let lines: Vec<String> = stderr.lines().map_while(Result::ok).collect();
    let closed = lines
        .iter()
        .find(|l| l.contains("session closed"))
        .unwrap_or_else(|| panic!("no session log line: {lines:?}"));
    assert!(closed.starts_with('{'), "{closed}");
    assert!(
        closed.contains(&format!("\"database\":\"{db}\"")),
        "{closed}"
    );
    assert!(closed.contains("\"user\":\"postgres\""), "{closed}");
}

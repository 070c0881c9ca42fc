//! The admin console against a hostile peer: what is sent after a failed login
//! runs nothing, a peer that never logs in costs a bounded number of bytes and
//! slots, and a rollout id that several databases hold must be named.

mod common;

use common::admin::{admin_conn, cell, console, proxy, rollout_field, rows, PASSWORD};
use common::raw::{error_code, frame, messages, query, startup_packet, Raw};
use common::rollouts::{setup, start};
use common::{connect, fresh_db};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio_postgres::NoTls;

/// A SASLInitialResponse for `mechanism` with `data` (its length as given).
fn sasl_initial(mechanism: &str, claimed_len: i32, data: &[u8]) -> Vec<u8> {
    let mut body = mechanism.as_bytes().to_vec();
    body.push(0);
    body.extend_from_slice(&claimed_len.to_be_bytes());
    body.extend_from_slice(data);
    frame(b'p', &body)
}

/// Everything the console says until it closes the connection (at most 15 s).
async fn rest(raw: &mut Raw) -> Vec<(u8, Vec<u8>)> {
    let mut bytes = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), raw.stream.read_to_end(&mut bytes)).await;
    messages(&bytes)
}

#[tokio::test]
async fn what_follows_a_failed_login_runs_nothing() {
    let db = fresh_db("admin_pipelined");
    let admin = setup(&db).await;
    let proxy = proxy();
    let id = start(
        &proxy.conn_str(&db, "postgres"),
        "ALTER TABLE orders ALTER COLUMN amount TYPE bigint",
    )
    .await;
    let addr = proxy.admin.unwrap();
    let startup = startup_packet(196_608, &[("user", "admin"), ("database", "pgshift")]);
    let logins: [(&str, Vec<u8>); 3] = [
        // A mechanism the console does not offer.
        ("PLAIN", sasl_initial("PLAIN", 14, b"\0admin\0secret!")),
        // SCRAM, but no SCRAM message.
        (
            "garbage SCRAM",
            sasl_initial("SCRAM-SHA-256", 7, b"garbage"),
        ),
        // SCRAM with a length past the message's end (pgwire panics reading it).
        (
            "truncated SCRAM",
            sasl_initial("SCRAM-SHA-256", 1000, b"n,,n="),
        ),
    ];
    for (what, login) in logins {
        let mut raw = Raw::connect(addr).await;
        let mut all = startup.clone();
        all.extend_from_slice(&login);
        all.extend_from_slice(&query(&format!("ROLLOUT ROLLBACK {id}")));
        all.extend_from_slice(&query(&format!("ROLLOUT PAUSE {id}")));
        raw.send(&all).await;
        let said = rest(&mut raw).await;
        assert!(
            !said.iter().any(|(t, _)| *t == b'C'),
            "{what}: a command ran: {said:?}"
        );
        if let Some((_, body)) = said.iter().find(|(t, _)| *t == b'E') {
            let code = error_code(body);
            assert!(code.starts_with("28"), "{what}: {code}");
        }
    }
    // Nothing changed, and the console still serves a real login.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rollout_field(&admin, id, "paused").await, "false");
    let request = rollout_field(&admin, id, "coalesce(request, 'none')").await;
    assert_eq!(request, "none");
    let phase = rollout_field(&admin, id, "phase").await;
    assert_ne!(phase, "rolled_back");
    let console = console(&proxy).await;
    assert_eq!(rows(&console, "SHOW VERSION").await.len(), 1);
}

#[tokio::test]
async fn a_peer_that_does_not_log_in_costs_little() {
    let proxy = proxy();
    let addr = proxy.admin.unwrap();

    // A message far past the byte cap before any login: cut off at once,
    // long before the login deadline.
    let mut raw = Raw::connect(addr).await;
    raw.send(&startup_packet(
        196_608,
        &[("user", "admin"), ("database", "pgshift")],
    ))
    .await;
    let mut huge = vec![b'Q'];
    huge.extend_from_slice(&(500_000_000u32).to_be_bytes());
    raw.send(&huge).await;
    let t = Instant::now();
    let sent = tokio::time::timeout(Duration::from_secs(15), async {
        for _ in 0..64 {
            if tokio::io::AsyncWriteExt::write_all(&mut raw.stream, &[b'x'; 4096])
                .await
                .is_err()
            {
                return false;
            }
        }
        true
    })
    .await;
    let _ = sent;
    assert!(raw.closed().await, "still open after {:?}", t.elapsed());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "closed only after {:?}",
        t.elapsed()
    );

    // Peers holding every login slot: the next one is told so, at once.
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(Raw::connect(addr).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut late = Raw::connect(addr).await;
    let t = Instant::now();
    let said = rest(&mut late).await;
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let (_, body) = said
        .iter()
        .find(|(t, _)| *t == b'E')
        .unwrap_or_else(|| panic!("no error: {said:?}"));
    assert_eq!(error_code(body), "53300");
    let e = admin_conn(&proxy, "admin", PASSWORD)
        .connect(NoTls)
        .await
        .err()
        .expect("a login while every slot is taken");
    assert_eq!(common::sqlstate(&e).as_deref(), Some("53300"), "{e:?}");
    // Once they go, the console takes logins again.
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match admin_conn(&proxy, "admin", PASSWORD).connect(NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                assert_eq!(rows(&client, "SHOW VERSION").await.len(), 1);
                break;
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("no login after the idle peers left: {e:?}"),
        }
    }

    // A client that insists on TLS is told the console has none (psql says so).
    let port = addr.port().to_string();
    let (ok, _, err) = common::psql(
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "admin",
            "-d",
            "pgshift",
            "-c",
            "SHOW VERSION",
        ],
        "",
        &[("PGPASSWORD", PASSWORD), ("PGSSLMODE", "require")],
    );
    assert!(!ok);
    assert!(err.contains("does not support SSL"), "{err}");
}

#[tokio::test]
async fn an_id_several_databases_hold_must_be_named() {
    let (one, two, bare) = (
        fresh_db("admin_ambig"),
        fresh_db("admin_ambig"),
        fresh_db("admin_bare"),
    );
    let proxy = proxy();
    let mut ids = Vec::new();
    for db in [&one, &two] {
        setup(db).await;
        ids.push(
            start(
                &proxy.conn_str(db, "postgres"),
                "ALTER TABLE orders ALTER COLUMN amount TYPE bigint",
            )
            .await,
        );
    }
    assert_eq!(ids[0], ids[1], "each database numbers its own rollouts");
    let id = ids[0];
    // A database seen through pgshift that has no pgshift schema lists nothing.
    let client = connect(&proxy.conn_str(&bare, "postgres")).await;
    client.simple_query("SELECT 1").await.unwrap();

    let console = console(&proxy).await;
    let listed = rows(&console, "SHOW ROLLOUTS").await;
    let mine: Vec<_> = listed
        .iter()
        .filter_map(|r| cell(r, "database"))
        .filter(|d| [&one, &two, &bare].contains(&&d.to_string()))
        .collect();
    assert_eq!(mine.len(), 2, "{listed:?}");
    for row in &listed {
        assert_eq!(cell(row, "error"), None, "{row:?}");
    }
    let e = console
        .simple_query(&format!("ROLLOUT PAUSE {id}"))
        .await
        .expect_err("an ambiguous id");
    assert_eq!(common::sqlstate(&e).as_deref(), Some("42702"), "{e:?}");
    // Named, it acts on that database alone (its name typed in upper case, as
    // Postgres folds an unquoted name).
    console
        .simple_query(&format!("ROLLOUT PAUSE {id} IN {}", two.to_uppercase()))
        .await
        .unwrap();
    let paused = |db: String| async move {
        let c = connect(&common::scenario::direct(&db)).await;
        rollout_field(&c, id, "paused").await
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while paused(two.clone()).await != "true" {
        assert!(
            Instant::now() < deadline,
            "rollout {id} in {two} not paused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(paused(one.clone()).await, "false");
}

/// With the proxy's certificate the console speaks TLS (verify-full against the
/// test CA); bound beyond loopback it takes nothing else.
#[tokio::test]
async fn the_console_speaks_tls_and_requires_it_beyond_loopback() {
    let certs = common::certs();
    let path = common::admin::password_file();
    let with_tls = |listen: &'static str| {
        let path = path.clone();
        let (cert, key) = (
            certs.proxy_cert.display().to_string(),
            certs.proxy_key.display().to_string(),
        );
        common::Proxy::start_with(move |c| {
            c.tls.cert_file = cert;
            c.tls.key_file = key;
            c.admin.listen = listen.into();
            c.admin.password_file = path;
        })
    };
    let ca = certs.ca.display().to_string();
    let show = |port: u16, mode: &str| {
        let port = port.to_string();
        common::psql(
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "admin",
                "-d",
                "pgshift",
                "-At",
                "-c",
                "SHOW VERSION",
            ],
            "",
            &[
                ("PGPASSWORD", PASSWORD),
                ("PGSSLMODE", mode),
                ("PGSSLROOTCERT", ca.as_str()),
            ],
        )
    };
    let loopback = with_tls("127.0.0.1:0");
    let port = loopback.admin.expect("console").port();
    for mode in ["verify-full", "disable"] {
        let (ok, out, err) = show(port, mode);
        assert!(ok, "{mode}: {err}");
        assert!(out.starts_with("pgshift "), "{out}");
    }
    let everywhere = with_tls("0.0.0.0:0");
    let port = everywhere.admin.expect("console").port();
    let (ok, out, err) = show(port, "verify-full");
    assert!(ok, "{err}");
    assert!(out.starts_with("pgshift "), "{out}");
    let (ok, _, err) = show(port, "disable");
    assert!(!ok);
    assert!(err.contains("only TLS connections"), "{err}");
    // pgshift status reaches it over TLS, verifying the certificate.
    let status = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgshift"))
            .args(["status", "--once", "--admin", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env("PGSHIFT_ADMIN_PASSWORD", PASSWORD)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, out, err) = status(&["--tls-ca", ca.as_str()]);
    assert!(ok, "{err}");
    assert!(out.starts_with("rollouts: "), "{out}");
    let (ok, _, err) = status(&[]);
    assert!(!ok);
    assert!(err.contains("only TLS"), "{err}");
    let (ok, _, err) = status(&[
        "--tls-ca",
        ca.as_str(),
        "--tls-server-name",
        "elsewhere.example",
    ]);
    assert!(!ok, "a certificate for another name passed");
    assert!(err.contains("TLS"), "{err}");
}

/// The console checks logins against a SCRAM verifier in the config: one that
/// Postgres made (pg_authid.rolpassword), and one `pgshift scram-verifier` made.
/// SHOW CONFIG does not show it.
#[tokio::test]
async fn a_stored_scram_verifier_logs_in() {
    let db = fresh_db("admin_verifier");
    let direct = connect(&common::scenario::direct(&db)).await;
    direct
        .batch_execute(
            "SET password_encryption = 'scram-sha-256';
             DROP ROLE IF EXISTS verifier_source;
             CREATE ROLE verifier_source PASSWORD 'pencil 1'",
        )
        .await
        .unwrap();
    let from_postgres: String = direct
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'verifier_source'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    direct
        .batch_execute("DROP ROLE verifier_source")
        .await
        .unwrap();
    let made = {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pgshift"))
            .arg("scram-verifier")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"pencil 2\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    assert!(made.starts_with("SCRAM-SHA-256$4096:"), "{made}");
    for (verifier, password) in [(from_postgres, "pencil 1"), (made, "pencil 2")] {
        let proxy = common::Proxy::start_with(|c| {
            c.admin.listen = "127.0.0.1:0".into();
            c.admin.scram_verifier = verifier.clone();
        });
        let e = admin_conn(&proxy, "admin", "pencil 3")
            .connect(NoTls)
            .await
            .err()
            .expect("a wrong password");
        assert_eq!(common::sqlstate(&e).as_deref(), Some("28P01"), "{e:?}");
        let (client, connection) = admin_conn(&proxy, "admin", password)
            .connect(NoTls)
            .await
            .expect("the password of the verifier");
        tokio::spawn(connection);
        let config = rows(&client, "SHOW CONFIG").await;
        let shown = config
            .iter()
            .find(|r| cell(r, "key") == Some("admin.scram_verifier"))
            .expect("admin.scram_verifier listed");
        assert_eq!(cell(shown, "value"), Some("********"));
    }
}

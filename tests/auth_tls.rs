//! Authentication and TLS through pgshift against a real Postgres: password
//! passthrough for md5 / scram-sha-256 / password roles, TLS towards clients, TLS
//! towards the server, and what happens to SCRAM channel binding across both hops.

mod common;

use common::{certs, connect, fresh_db, psql, sqlstate, Proxy, CLEAR_USER, MD5_USER, SCRAM_USER};
use pgshift::config::{Config, UpstreamTlsMode};
use std::path::PathBuf;

/// Whether the upstream hop of this session is encrypted, as Postgres sees it.
async fn upstream_ssl(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get::<_, bool>(0)
}

fn conn_str_with_password(proxy: &Proxy, db: &str, (user, password): (&str, &str)) -> String {
    format!("{} password='{password}'", proxy.conn_str(db, user))
}

/// psql through the proxy with a libpq connection string made of `extra` on top of
/// host/port/dbname/user. Never prompts for a password (-w).
fn psql_via(
    proxy: &Proxy,
    db: &str,
    user: &str,
    extra: &str,
    password: Option<&str>,
    input: &str,
) -> (bool, String, String) {
    let conninfo = format!(
        "host=localhost hostaddr=127.0.0.1 port={} dbname={db} user={user} {extra}",
        proxy.port()
    );
    let env: Vec<(&str, &str)> = password.map(|p| ("PGPASSWORD", p)).into_iter().collect();
    psql(&["-w", "-At", "-d", &conninfo], input, &env)
}

fn client_tls(config: &mut Config, cert: &std::path::Path, key: &std::path::Path) {
    config.tls.cert_file = cert.display().to_string();
    config.tls.key_file = key.display().to_string();
}

/// The client-facing certificate: a different one from the server's.
fn with_proxy_cert(config: &mut Config) {
    let c = certs();
    client_tls(config, &c.proxy_cert, &c.proxy_key);
}

fn upstream_require(config: &mut Config) {
    config.upstream.tls_mode = UpstreamTlsMode::Require;
}

/// A CA of this test's own that signed neither certificate Postgres or pgshift use.
fn foreign_ca() -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "pgshift auth_tls foreign CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let ca = params.self_signed(&key).unwrap();
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = certs().dir.join(format!("auth-tls-foreign-ca-{n}.crt"));
    std::fs::write(&path, ca.pem()).unwrap();
    path
}

// ---------------------------------------------------------------------------
// 1. Password authentication passthrough (tokio-postgres, no TLS)
// ---------------------------------------------------------------------------

#[tokio::test]
async fn password_auth_passthrough_for_each_method() {
    let db = fresh_db("auth_pw");
    let proxy = Proxy::start();
    for (user, password) in [MD5_USER, SCRAM_USER, CLEAR_USER] {
        // Right password: connects and runs a query as that role.
        let client = connect(&conn_str_with_password(&proxy, &db, (user, password))).await;
        let row = client
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), user);
        drop(client);

        // Wrong password: the server's 28P01 reaches the client unchanged.
        let bad = conn_str_with_password(&proxy, &db, (user, "not the password"));
        let err = match tokio_postgres::connect(&bad, tokio_postgres::NoTls).await {
            Ok(_) => panic!("{user} connected with a wrong password"),
            Err(e) => e,
        };
        assert_eq!(sqlstate(&err).as_deref(), Some("28P01"), "{user}: {err}");
        let msg = err.as_db_error().unwrap().message().to_string();
        assert!(msg.contains(user), "{user}: {msg}");

        // The proxy keeps serving: the next good connection works.
        let client = connect(&conn_str_with_password(&proxy, &db, (user, password))).await;
        let row = client.query_one("SELECT 40 + 2", &[]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), 42);
    }
}

#[tokio::test]
async fn password_auth_with_missing_password_fails_cleanly() {
    let db = fresh_db("auth_nopw");
    let proxy = Proxy::start();
    // tokio-postgres refuses locally when asked for a password it does not have;
    // the proxy must not be disturbed by the client hanging up mid-authentication.
    for (user, _) in [MD5_USER, SCRAM_USER, CLEAR_USER] {
        let r = tokio_postgres::connect(&proxy.conn_str(&db, user), tokio_postgres::NoTls).await;
        assert!(r.is_err(), "{user} connected without a password");
    }
    let client = connect(&conn_str_with_password(&proxy, &db, SCRAM_USER)).await;
    client.simple_query("SELECT 1").await.unwrap();
}

// ---------------------------------------------------------------------------
// 2. TLS towards clients
// ---------------------------------------------------------------------------

#[test]
fn client_tls_verify_full() {
    let db = fresh_db("ctls");
    let proxy = Proxy::start_with(with_proxy_cert);
    let ca = certs().ca.display().to_string();
    let (ok, out, err) = psql_via(
        &proxy,
        &db,
        "postgres",
        &format!("sslmode=verify-full sslrootcert={ca}"),
        None,
        "\\conninfo\nSELECT 'through ' || 'tls';\n",
    );
    assert!(ok, "psql failed: {err}");
    assert!(
        out.contains("SSL connection"),
        "no SSL in \\conninfo: {out}"
    );
    assert!(out.contains("through tls"), "{out}");

    // verify-full really checks: a CA that did not sign the proxy's certificate fails.
    let foreign = foreign_ca().display().to_string();
    let (ok, _, err) = psql_via(
        &proxy,
        &db,
        "postgres",
        &format!("sslmode=verify-full sslrootcert={foreign}"),
        None,
        "SELECT 1;\n",
    );
    assert!(!ok, "verify-full accepted a certificate from an unknown CA");
    assert!(err.contains("certificate"), "{err}");

    // Plain clients are still served when TLS is configured.
    let (ok, out, err) = psql_via(
        &proxy,
        &db,
        "postgres",
        "sslmode=disable",
        None,
        "\\conninfo\nSELECT 7;\n",
    );
    assert!(ok, "plain psql failed: {err}");
    assert!(!out.contains("SSL connection"), "{out}");
    assert!(out.lines().any(|l| l == "7"), "{out}");
}

#[test]
fn client_tls_not_configured() {
    let db = fresh_db("noctls");
    let proxy = Proxy::start();
    let (ok, _, err) = psql_via(
        &proxy,
        &db,
        "postgres",
        "sslmode=require",
        None,
        "SELECT 1;\n",
    );
    assert!(
        !ok,
        "sslmode=require connected although the proxy has no certificate"
    );
    assert!(
        err.contains("server does not support SSL"),
        "unexpected error: {err}"
    );

    let (ok, out, err) = psql_via(
        &proxy,
        &db,
        "postgres",
        "sslmode=prefer",
        None,
        "\\conninfo\nSELECT 8;\n",
    );
    assert!(ok, "sslmode=prefer failed: {err}");
    assert!(!out.contains("SSL connection"), "{out}");
    assert!(out.lines().any(|l| l == "8"), "{out}");
}

// ---------------------------------------------------------------------------
// 3. TLS towards the server
// ---------------------------------------------------------------------------

#[tokio::test]
async fn upstream_tls_require() {
    let db = fresh_db("utls_req");
    let proxy = Proxy::start_with(upstream_require);
    let client = connect(&proxy.conn_str(&db, "postgres")).await;
    assert!(upstream_ssl(&client).await, "upstream hop is not encrypted");
}

#[tokio::test]
async fn upstream_tls_prefer_uses_tls_when_offered() {
    let db = fresh_db("utls_pref");
    let proxy = Proxy::start_with(|c| c.upstream.tls_mode = UpstreamTlsMode::Prefer);
    let client = connect(&proxy.conn_str(&db, "postgres")).await;
    assert!(upstream_ssl(&client).await, "upstream hop is not encrypted");
}

#[tokio::test]
async fn upstream_tls_verify_full_by_ip_and_by_name() {
    let db = fresh_db("utls_vf");
    let ca = certs().ca.display().to_string();
    assert!(
        common::pg().tcp_address().starts_with("127.0.0.1:"),
        "test assumes an IP upstream address"
    );

    // The server name defaults to the host of upstream.address: 127.0.0.1, an IP SAN.
    let proxy = Proxy::start_with(|c| {
        c.upstream.tls_mode = UpstreamTlsMode::VerifyFull;
        c.upstream.tls_ca_file = ca.clone();
    });
    let client = connect(&proxy.conn_str(&db, "postgres")).await;
    assert!(upstream_ssl(&client).await, "upstream hop is not encrypted");
    drop(client);
    proxy.stop();

    // An explicit DNS name from the SAN works as well.
    let proxy = Proxy::start_with(|c| {
        c.upstream.tls_mode = UpstreamTlsMode::VerifyFull;
        c.upstream.tls_ca_file = ca.clone();
        c.upstream.tls_server_name = "localhost".into();
    });
    let client = connect(&proxy.conn_str(&db, "postgres")).await;
    assert!(upstream_ssl(&client).await, "upstream hop is not encrypted");
}

async fn expect_upstream_08006(proxy: &Proxy, db: &str) -> tokio_postgres::error::DbError {
    let err = match tokio_postgres::connect(&proxy.conn_str(db, "postgres"), tokio_postgres::NoTls)
        .await
    {
        Ok(_) => panic!("connected although upstream verification should fail"),
        Err(e) => e,
    };
    assert_eq!(sqlstate(&err).as_deref(), Some("08006"), "{err}");
    err.as_db_error().unwrap().clone()
}

#[tokio::test]
async fn upstream_tls_verify_full_rejects_unknown_ca() {
    let db = fresh_db("utls_badca");
    let foreign = foreign_ca().display().to_string();
    let proxy = Proxy::start_with(|c| {
        c.upstream.tls_mode = UpstreamTlsMode::VerifyFull;
        c.upstream.tls_ca_file = foreign;
    });
    let e = expect_upstream_08006(&proxy, &db).await;
    assert!(e.message().contains("could not connect"), "{e:?}");
    let detail = e.detail().unwrap_or_default();
    assert!(
        detail.contains("TLS handshake") && detail.contains("certificate"),
        "detail should say the certificate was not trusted: {e:?}"
    );
    // The failure is per session: the proxy is still up and answers the same way.
    let e = expect_upstream_08006(&proxy, &db).await;
    assert!(
        e.detail().unwrap_or_default().contains("TLS handshake"),
        "{e:?}"
    );
    assert!(proxy.handle.stats().upstream_connect_errors >= 2);
}

#[tokio::test]
async fn upstream_tls_verify_full_rejects_wrong_name() {
    let db = fresh_db("utls_badname");
    let ca = certs().ca.display().to_string();
    let proxy = Proxy::start_with(|c| {
        c.upstream.tls_mode = UpstreamTlsMode::VerifyFull;
        c.upstream.tls_ca_file = ca;
        c.upstream.tls_server_name = "db.example.com".into();
    });
    let e = expect_upstream_08006(&proxy, &db).await;
    let detail = e.detail().unwrap_or_default();
    assert!(
        detail.contains("TLS handshake") && detail.contains("certificate"),
        "{e:?}"
    );
}

#[tokio::test]
async fn upstream_tls_disable() {
    let db = fresh_db("utls_off");
    let proxy = Proxy::start_with(|c| c.upstream.tls_mode = UpstreamTlsMode::Disable);
    let client = connect(&proxy.conn_str(&db, "postgres")).await;
    assert!(!upstream_ssl(&client).await, "upstream hop is encrypted");
}

// ---------------------------------------------------------------------------
// 4. SCRAM channel binding across the two hops (psql / libpq)
// ---------------------------------------------------------------------------

fn scram_psql(proxy: &Proxy, db: &str, extra: &str) -> (bool, String, String) {
    psql_via(
        proxy,
        db,
        SCRAM_USER.0,
        extra,
        Some(SCRAM_USER.1),
        "SELECT current_user;\n",
    )
}

fn assert_scram_ok((ok, out, err): (bool, String, String), what: &str) {
    assert!(ok, "{what}: psql failed: {err}");
    assert!(
        out.lines().any(|l| l == SCRAM_USER.0),
        "{what}: unexpected output {out:?}"
    );
}

#[test]
fn channel_binding_client_tls_upstream_plain() {
    let db = fresh_db("cb_a");
    let proxy = Proxy::start_with(with_proxy_cert);
    // The server is reached without TLS, so it offers no -PLUS; prefer falls back.
    assert_scram_ok(
        scram_psql(&proxy, &db, "sslmode=require channel_binding=prefer"),
        "prefer",
    );
    let (ok, _, err) = scram_psql(&proxy, &db, "sslmode=require channel_binding=require");
    assert!(!ok, "channel_binding=require succeeded without -PLUS");
    assert!(err.contains("channel binding"), "{err}");
}

#[test]
fn channel_binding_passes_through_with_the_server_certificate() {
    let db = fresh_db("cb_b");
    let c = certs();
    let proxy = Proxy::start_with(|config| {
        client_tls(config, &c.pg_cert, &c.pg_key);
        upstream_require(config);
    });
    let verify = format!("sslmode=verify-full sslrootcert={}", c.ca.display());
    assert_scram_ok(
        scram_psql(&proxy, &db, &format!("{verify} channel_binding=require")),
        "require",
    );
    assert_scram_ok(
        scram_psql(&proxy, &db, "sslmode=require channel_binding=prefer"),
        "prefer",
    );
    // md5 never involves binding; channel_binding=require must refuse it locally.
    let (ok, _, err) = psql_via(
        &proxy,
        &db,
        MD5_USER.0,
        "sslmode=require channel_binding=require",
        Some(MD5_USER.1),
        "SELECT 1;\n",
    );
    assert!(!ok, "md5 passed channel_binding=require");
    assert!(err.contains("channel binding"), "{err}");
}

#[test]
fn channel_binding_different_certificates_gets_a_hint() {
    let db = fresh_db("cb_c");
    let proxy = Proxy::start_with(|config| {
        with_proxy_cert(config);
        upstream_require(config);
    });
    let (ok, _, err) = scram_psql(&proxy, &db, "sslmode=require channel_binding=prefer");
    assert!(
        !ok,
        "channel_binding=prefer unexpectedly worked across two TLS hops"
    );
    assert!(
        err.contains("SCRAM channel binding negotiation error"),
        "server error missing: {err}"
    );
    assert!(
        err.contains("HINT") && err.contains("channel_binding=disable"),
        "proxy hint missing: {err}"
    );
    let (ok, _, err) = scram_psql(&proxy, &db, "sslmode=require channel_binding=require");
    assert!(!ok, "channel_binding=require unexpectedly worked");
    assert!(err.contains("channel binding"), "{err}");
    assert_scram_ok(
        scram_psql(&proxy, &db, "sslmode=require channel_binding=disable"),
        "disable",
    );
}

#[test]
fn channel_binding_client_plain_upstream_tls() {
    let db = fresh_db("cb_d");
    let proxy = Proxy::start_with(upstream_require);
    assert_scram_ok(
        scram_psql(&proxy, &db, "sslmode=prefer channel_binding=prefer"),
        "prefer",
    );
    let (ok, _, err) = scram_psql(&proxy, &db, "sslmode=disable channel_binding=require");
    assert!(!ok, "channel_binding=require worked without TLS");
    assert!(err.contains("channel binding"), "{err}");
}

// ---------------------------------------------------------------------------
// 5. md5 over client TLS
// ---------------------------------------------------------------------------

#[test]
fn md5_over_client_tls() {
    let db = fresh_db("md5_tls");
    let proxy = Proxy::start_with(with_proxy_cert);
    let ca = certs().ca.display().to_string();
    let (ok, out, err) = psql_via(
        &proxy,
        &db,
        MD5_USER.0,
        &format!("sslmode=verify-full sslrootcert={ca}"),
        Some(MD5_USER.1),
        "\\conninfo\nSELECT current_user;\n",
    );
    assert!(ok, "psql failed: {err}");
    assert!(out.contains("SSL connection"), "{out}");
    assert!(out.lines().any(|l| l == MD5_USER.0), "{out}");

    let (ok, _, err) = psql_via(
        &proxy,
        &db,
        MD5_USER.0,
        &format!("sslmode=verify-full sslrootcert={ca}"),
        Some("wrong"),
        "SELECT 1;\n",
    );
    assert!(!ok, "wrong md5 password accepted");
    assert!(err.contains("password authentication failed"), "{err}");
}

// ---------------------------------------------------------------------------
// 5. Shutdown with a TLS client that stopped reading
// ---------------------------------------------------------------------------

/// Reads frames until ReadyForQuery.
async fn read_until_ready<S: tokio::io::AsyncRead + Unpin>(s: &mut S) {
    use tokio::io::AsyncReadExt;
    loop {
        let tag = s.read_u8().await.unwrap();
        let len = s.read_u32().await.unwrap() as usize;
        let mut body = vec![0; len - 4];
        s.read_exact(&mut body).await.unwrap();
        if tag == b'Z' {
            return;
        }
    }
}

/// A TLS client that stops reading mid-result fills every buffer between it and the
/// proxy, so the goodbye (FATAL, TLS close_notify) can never be written. Shutdown
/// must still finish: drain, terminate grace, then a bounded goodbye.
#[tokio::test]
async fn shutdown_does_not_wait_for_a_tls_client_that_stopped_reading() {
    use tokio::io::AsyncWriteExt;
    let db = fresh_db("stuck_tls");
    let proxy = Proxy::start_with(|c| {
        with_proxy_cert(c);
        c.server.drain_timeout_ms = 300;
    });
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&certs().ca).unwrap();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(&pgshift::wire::startup::ssl_request())
        .await
        .unwrap();
    let mut answer = [0u8; 1];
    tokio::io::AsyncReadExt::read_exact(&mut tcp, &mut answer)
        .await
        .unwrap();
    assert_eq!(&answer, b"S");
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut client = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect(name, tcp)
        .await
        .unwrap();
    client
        .write_all(&common::raw::startup_packet(
            196_608,
            &[("user", "postgres"), ("database", &db)],
        ))
        .await
        .unwrap();
    read_until_ready(&mut client).await;
    // About 100 MB of result, never read.
    client
        .write_all(&common::raw::query(
            "SELECT repeat('x', 1000000) FROM generate_series(1, 100)",
        ))
        .await
        .unwrap();
    client.flush().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    // Drain 0.3 s + terminate grace 2 s + goodbye 2 s, plus a margin.
    let stopped = proxy.stop_within(std::time::Duration::from_secs(10)).await;
    assert!(
        stopped,
        "shutdown still waiting after {:?}",
        started.elapsed()
    );
    drop(client);
}

//! Test harness: one throwaway Postgres cluster per test binary, one database per
//! test, and pgshift running in-process on its own thread and runtime.
#![allow(dead_code)]

pub mod admin;
pub mod attack;
pub mod binary;
pub mod raw;
pub mod rollouts;
pub mod scenario;

use pgshift::cluster::{Cluster, ClusterOptions};
use pgshift::config::Config;
use pgshift::server::{Handle, Server};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

pub const MD5_USER: (&str, &str) = ("md5_user", "md5 secret");
pub const SCRAM_USER: (&str, &str) = ("scram_user", "scram secret");
pub const CLEAR_USER: (&str, &str) = ("clear_user", "clear secret");

/// Certificates made for this test binary: a CA, and two server certificates for
/// localhost/127.0.0.1 signed by it (one for Postgres, one spare for the proxy).
pub struct Certs {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub pg_cert_pem: String,
    pub pg_key_pem: String,
    pub pg_cert: PathBuf,
    pub pg_key: PathBuf,
    pub proxy_cert: PathBuf,
    pub proxy_key: PathBuf,
}

pub fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let dir = std::env::temp_dir().join(format!("pgshift-pg-{}-certs", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        // Distinct subject names: OpenSSL (psql) takes a leaf named like its issuer
        // for a self-signed certificate.
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "pgshift test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf = || {
            let mut params =
                CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                    .unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, "localhost");
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (pg_cert_pem, pg_key_pem) = leaf();
        let (proxy_cert_pem, proxy_key_pem) = leaf();
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        Certs {
            ca: write("ca.crt", &ca.pem()),
            pg_cert: write("pg.crt", &pg_cert_pem),
            pg_key: write("pg.key", &pg_key_pem),
            proxy_cert: write("proxy.crt", &proxy_cert_pem),
            proxy_key: write("proxy.key", &proxy_key_pem),
            pg_cert_pem,
            pg_key_pem,
            dir,
        }
    })
}

/// The cluster of this test binary, started on first use.
pub fn pg() -> &'static Cluster {
    static PG: OnceLock<Cluster> = OnceLock::new();
    PG.get_or_init(|| {
        let certs = certs();
        let opts = ClusterOptions {
            settings: vec![
                "log_statement=all".into(),
                "log_line_prefix=%m [%p] db=%d ".into(),
            ],
            hba: vec![
                format!("host all {} 127.0.0.1/32 md5", MD5_USER.0),
                format!("host all {} 127.0.0.1/32 scram-sha-256", SCRAM_USER.0),
                format!("host all {} 127.0.0.1/32 password", CLEAR_USER.0),
            ],
            tls: Some((certs.pg_cert_pem.clone(), certs.pg_key_pem.clone())),
        };
        let cluster = Cluster::start(&opts).expect("start postgres");
        let sql = format!(
            "SET password_encryption = 'md5';
             CREATE ROLE {md5} LOGIN SUPERUSER PASSWORD '{md5p}';
             SET password_encryption = 'scram-sha-256';
             CREATE ROLE {scram} LOGIN SUPERUSER PASSWORD '{scramp}';
             CREATE ROLE {clear} LOGIN SUPERUSER PASSWORD '{clearp}';",
            md5 = MD5_USER.0,
            md5p = MD5_USER.1,
            scram = SCRAM_USER.0,
            scramp = SCRAM_USER.1,
            clear = CLEAR_USER.0,
            clearp = CLEAR_USER.1,
        );
        cluster.psql("postgres", &sql).expect("create roles");
        report_server_crashes(cluster.log_path());
        cluster
    })
}

/// When a test fails, prints what the server log says about backends that died
/// or a server restart: a test that loses its connection then says why.
fn report_server_crashes(log: PathBuf) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let marks = [
            "terminated by signal",
            "was terminated",
            "PANIC",
            "out of memory",
            "all server processes",
            "terminating connection",
            "database system is",
        ];
        let hits: Vec<&str> = text
            .lines()
            .filter(|l| marks.iter().any(|m| l.contains(m)))
            .collect();
        if !hits.is_empty() {
            eprintln!(
                "postgres log ({}), lines about lost sessions:",
                log.display()
            );
            for line in &hits[hits.len().saturating_sub(20)..] {
                eprintln!("  {line}");
            }
        }
    }));
}

/// A fresh database for one test.
pub fn fresh_db(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!("{prefix}_{}", N.fetch_add(1, Ordering::Relaxed));
    pg().create_database(&name).expect("create database")
}

/// pgshift on a free port, in front of the test cluster over TCP.
pub struct Proxy {
    pub addr: SocketAddr,
    /// The admin console's address, when the test turned it on.
    pub admin: Option<SocketAddr>,
    /// The /metrics endpoint's address, when the test turned it on.
    pub metrics: Option<SocketAddr>,
    pub handle: Handle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    pub fn start() -> Proxy {
        Proxy::start_with(|_| {})
    }

    /// Starts with the default test config changed by `edit`.
    pub fn start_with(edit: impl FnOnce(&mut Config)) -> Proxy {
        let mut config = Config::default();
        config.server.listen = "127.0.0.1:0".into();
        config.upstream.address = pg().tcp_address();
        config.server.drain_timeout_ms = 1_000;
        // The test tables are tiny: judged by size, every statement on them would
        // run as written. Tests of the rules' safe forms need them judged by rule;
        // tests of the size judgement set the key back.
        config.ddl.small_table_bytes = 0;
        // No console unless a test asks for one (PGSHIFT_ADMIN_PASSWORD in the
        // environment would otherwise start one on the default port).
        config.admin.listen = String::new();
        config.metrics.listen = String::new();
        edit(&mut config);
        config.validate().expect("valid test config");
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let server = Server::bind(config).await.expect("bind proxy");
                tx.send((
                    server.local_addr(),
                    server.admin_addr(),
                    server.metrics_addr(),
                    server.handle(),
                ))
                .unwrap();
                server.run().await;
            });
        });
        let (addr, admin, metrics, handle) = rx.recv().expect("proxy started");
        Proxy {
            addr,
            admin,
            metrics,
            handle,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// A tokio-postgres config string for `db` as `user` through the proxy.
    pub fn conn_str(&self, db: &str, user: &str) -> String {
        format!(
            "host=127.0.0.1 port={} dbname={db} user={user} connect_timeout=10",
            self.port()
        )
    }

    /// Shuts down and waits at most `limit` for the drain, on a thread of its own so
    /// that a shutdown that hangs fails the test instead of hanging it. True if done.
    pub async fn stop_within(self, limit: Duration) -> bool {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            self.stop();
            let _ = done_tx.send(());
        });
        tokio::task::spawn_blocking(move || done_rx.recv_timeout(limit).is_ok())
            .await
            .unwrap()
    }

    /// Shuts down and waits for the drain to finish.
    pub fn stop(mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects with tokio-postgres (no TLS) and drives the connection in the background.
pub async fn connect(conn_str: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(conn_str, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {conn_str}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// The messages of the NOTICEs (and WARNINGs) a connection received, so far.
pub type Notices = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// [`connect`], keeping the NOTICEs the server (or pgshift) sends.
pub async fn connect_noting(conn_str: &str) -> (tokio_postgres::Client, Notices) {
    let (client, mut connection) = tokio_postgres::connect(conn_str, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {conn_str}: {e}"));
    let notices = Notices::default();
    let kept = notices.clone();
    tokio::spawn(async move {
        use futures_util::StreamExt;
        let mut stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(m)) = stream.next().await {
            if let tokio_postgres::AsyncMessage::Notice(n) = m {
                kept.lock().unwrap().push(n.message().to_string());
            }
        }
    });
    (client, notices)
}

/// [`psql`] quietly as postgres on 127.0.0.1:`port`, database `db`, reading `script`.
pub fn psql_at(port: u16, db: &str, script: &str) -> (bool, String, String) {
    let port = port.to_string();
    psql(
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            db,
            "-q",
        ],
        script,
        &[],
    )
}

/// Runs psql against the proxy; returns (success, stdout, stderr).
pub fn psql(args: &[&str], input: &str, env: &[(&str, &str)]) -> (bool, String, String) {
    use std::io::Write;
    let mut child = std::process::Command::new("psql")
        .args(["-X", "-v", "ON_ERROR_STOP=1"])
        .args(args)
        .envs(env.iter().copied())
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("psql on PATH");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The SQLSTATE of a tokio-postgres error, if the server sent one.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<String> {
    e.as_db_error().map(|d| d.code().code().to_string())
}

pub async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !check() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A session through `proxy` running `SELECT pg_sleep(30)`, and its backend pid.
pub async fn sleeping_session(
    proxy: &Proxy,
    db: &str,
) -> (
    i32,
    tokio::task::JoinHandle<Result<Vec<tokio_postgres::SimpleQueryMessage>, tokio_postgres::Error>>,
) {
    let victim = connect(&proxy.conn_str(db, "postgres")).await;
    let pid: i32 = victim
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let running = tokio::spawn(async move { victim.simple_query("SELECT pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    (pid, running)
}

//! The admin console's test helpers: a proxy with the console on, logins, rows.

use super::Proxy;
use std::time::Duration;
use tokio_postgres::{NoTls, SimpleQueryMessage};

pub const PASSWORD: &str = "console 'pw' \\ 1";

/// A file holding [`PASSWORD`], for `admin.password_file`.
pub fn password_file() -> String {
    let path = std::env::temp_dir().join(format!(
        "pgshift_admin_test_{}_{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::write(&path, format!("{PASSWORD}\n")).unwrap();
    path.display().to_string()
}

pub fn proxy() -> Proxy {
    let path = password_file();
    Proxy::start_with(|c| {
        c.ddl.lock_timeout_ms = 200;
        c.rollout.batch_rows = 2_000;
        c.rollout.latency_factor = 0.0;
        c.admin.listen = "127.0.0.1:0".into();
        c.admin.password_file = path;
    })
}

pub fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
}

pub fn admin_conn(proxy: &Proxy, user: &str, password: &str) -> tokio_postgres::Config {
    let addr = proxy.admin.expect("the console runs");
    let mut config = tokio_postgres::Config::new();
    config
        .host(addr.ip().to_string())
        .port(addr.port())
        .user(user)
        .password(password)
        .dbname("pgshift")
        .connect_timeout(Duration::from_secs(10));
    config
}

pub async fn console(proxy: &Proxy) -> tokio_postgres::Client {
    let (client, connection) = admin_conn(proxy, "admin", PASSWORD)
        .connect(NoTls)
        .await
        .expect("console login");
    tokio::spawn(connection);
    client
}

/// The rows of `sql` as (column name, value) pairs, and the command tag.
pub async fn rows(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Vec<Vec<(String, Option<String>)>> {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_string(), r.get(i).map(str::to_string)))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

pub fn cell<'a>(row: &'a [(String, Option<String>)], name: &str) -> Option<&'a str> {
    row.iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no column {name} in {row:?}"))
        .1
        .as_deref()
}

/// The command tag the console answers `sql` with, as psql prints it.
pub async fn tag(proxy: &Proxy, sql: &str) -> String {
    let port = proxy.admin.expect("the console runs").port().to_string();
    let sql = sql.to_string();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        super::psql(
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
                &sql,
            ],
            "",
            &[("PGPASSWORD", PASSWORD)],
        )
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    out.trim().to_string()
}

pub async fn rollout_field(admin: &tokio_postgres::Client, id: i64, column: &str) -> String {
    admin
        .query_one(
            &format!("SELECT {column}::text FROM pgshift.rollouts WHERE id = $1"),
            &[&id],
        )
        .await
        .unwrap()
        .get(0)
}

pub async fn until(admin: &tokio_postgres::Client, id: i64, column: &str, want: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = rollout_field(admin, id, column).await;
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rollout {id}: {column} is {got}, waited for {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

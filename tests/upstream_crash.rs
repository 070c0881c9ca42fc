//! The upstream dies under a session (SIGKILL of a backend makes Postgres restart
//! every backend, so this binary has a cluster of its own): the client gets a clear
//! 08006 instead of a hang, and the proxy serves new sessions once Postgres is back.

mod common;

use common::{fresh_db, Proxy};
use std::time::{Duration, Instant};

#[tokio::test]
async fn killed_backend_gives_08006_and_the_proxy_recovers() {
    let db = fresh_db("crash");
    let proxy = Proxy::start();
    let (pid, running) = common::sleeping_session(&proxy, &db).await;
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let err = tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("no hang")
        .unwrap()
        .unwrap_err();
    let db_err = err
        .as_db_error()
        .unwrap_or_else(|| panic!("ErrorResponse expected: {err}"));
    assert_eq!(db_err.code().code(), "08006", "{db_err}");
    assert!(db_err
        .message()
        .contains("closed the connection unexpectedly"));

    // Postgres restarts its backends; pgshift serves again as soon as it is up.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match tokio_postgres::connect(&proxy.conn_str(&db, "postgres"), tokio_postgres::NoTls).await
        {
            Ok((client, conn)) => {
                tokio::spawn(conn);
                if client.simple_query("SELECT 1").await.is_ok() {
                    break;
                }
            }
            Err(e) => {
                // While recovering Postgres answers 57P03; the proxy passes it on.
                let code = common::sqlstate(&e);
                assert!(
                    matches!(code.as_deref(), Some("57P03") | Some("08006")),
                    "unexpected error while recovering: {e}"
                );
            }
        }
        assert!(Instant::now() < deadline, "proxy did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

//! The DDL half of `pgshift demo`: the classic outage, then the same migration
//! through pgshift. A transaction sits idle after reading a table while an
//! application keeps querying it; an unsafe ALTER TABLE is sent once directly and
//! once through pgshift, and the application's worst query latency is printed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};

/// How long the blocking transaction stays open after the migration starts.
const HOLD: Duration = Duration::from_secs(3);

const MIGRATIONS: &[&str] = &[
    "ALTER TABLE {t} ADD CONSTRAINT {t}_balance_sane CHECK (abalance > -100000000)",
    "ALTER TABLE {t} ALTER COLUMN bid SET NOT NULL",
];

type Error = Box<dyn std::error::Error>;

async fn connect(port: u16) -> Result<Client, Error> {
    let (client, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
        NoTls,
    )
    .await?;
    tokio::spawn(conn);
    Ok(client)
}

pub async fn run(direct_port: u16, proxy_port: u16) -> Result<(), Error> {
    let admin = connect(direct_port).await?;
    for t in ["demo_direct", "demo_pgshift"] {
        admin
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {t}; CREATE TABLE {t} AS SELECT * FROM pgbench_accounts; \
                 ALTER TABLE {t} ADD PRIMARY KEY (aid)"
            ))
            .await?;
    }
    println!("Schema changes on a busy table: a transaction sits idle after reading it,");
    println!("an application reads it every 10 ms, and a migration arrives.");
    println!("Worst application query while the migration ran:\n");
    println!("  {:<62} {:>10} {:>10}", "migration", "direct", "pgshift");
    for m in MIGRATIONS {
        let direct = scenario(direct_port, &m.replace("{t}", "demo_direct"), "demo_direct").await?;
        let proxied = scenario(
            proxy_port,
            &m.replace("{t}", "demo_pgshift"),
            "demo_pgshift",
        )
        .await?;
        println!(
            "  {:<62} {:>8} ms {:>8} ms",
            m.replace("{t}", "t"),
            direct.as_millis(),
            proxied.as_millis()
        );
    }
    // The journal is written by a background task: give it a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("\nWhat pgshift ran (pgshift.ddl_journal):");
    let rows = admin
        .query(
            "SELECT rule, outcome, jsonb_array_length(steps), duration_ms, \
             (SELECT string_agg(s->>'sql' || '  [' || (s->>'attempts') || ' attempt(s)]', E'\\n      ') FROM jsonb_array_elements(steps) s) \
             FROM pgshift.ddl_journal ORDER BY id",
            &[],
        )
        .await?;
    for r in rows {
        let (rule, outcome, n, ms, steps): (String, String, i32, i64, Option<String>) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        println!(
            "  {rule}: {outcome}, {n} step(s), {ms} ms\n      {}",
            steps.unwrap_or_default()
        );
    }
    Ok(())
}

/// Runs one migration against `port` with a blocker and an application load;
/// returns the application's worst query latency.
async fn scenario(port: u16, migration: &str, table: &str) -> Result<Duration, Error> {
    let blocker = connect(port).await?;
    blocker
        .batch_execute(&format!("BEGIN; SELECT count(*) FROM {table}"))
        .await?;
    let app = connect(port).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let query = format!("SELECT abalance FROM {table} WHERE aid = 42");
    let load = tokio::spawn(async move {
        let mut worst = Duration::ZERO;
        while !stop2.load(Ordering::Relaxed) {
            let t = Instant::now();
            if app.simple_query(&query).await.is_err() {
                break;
            }
            worst = worst.max(t.elapsed());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        worst
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let migrator = connect(port).await?;
    let sql = migration.to_string();
    let migrating = tokio::spawn(async move { migrator.batch_execute(&sql).await });
    tokio::time::sleep(HOLD).await;
    blocker.batch_execute("COMMIT").await?;
    migrating.await??;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    Ok(load.await?)
}

//! What the application feels while a migration meets a long transaction, and the
//! size under which a table is "small": the numbers behind `ddl.stall_budget_ms`
//! and `ddl.small_table_bytes`.
//!
//! Part 1 times the blocking statements pgshift would otherwise rewrite (CREATE
//! INDEX, ALTER COLUMN TYPE, VACUUM FULL, CLUSTER, ADD CHECK) on tables of growing
//! size, run as written with nobody else around: how long each holds its lock.
//!
//! Part 2 runs an application load (8 workers updating random rows) against a
//! table of ~20 MB, opens an idle-in-transaction writer on it, starts a migration
//! a second later and ends the writer 8 s after it began. Each migration runs
//! directly, through pgshift with the stall budget off (attempts of lock_timeout
//! 500 ms, the engine before the budget), and through pgshift with the budget
//! (100 ms), one after the other in one run. Per phase (before the writer, during
//! the migration, after it): p50, p99 and max latency of the application's
//! queries, and its throughput.
//!
//! `cargo bench --bench migration_stall` (under `cargo test` it runs one short
//! scenario as a smoke test).

use pgshift::cluster::{Cluster, ClusterOptions};
use pgshift::config::Config;
use pgshift::server::Server;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};

struct Target {
    name: &'static str,
    /// None: directly; Some(budget): through pgshift with that stall budget.
    budget: Option<u64>,
    /// Whether the idle-in-transaction writer runs. Without it, "direct" is what the
    /// migration's own work costs the application on these cores.
    blocker: bool,
    /// Whether the migration runs. Without it, what the long transaction alone
    /// costs the application on these cores.
    migrate: bool,
}

const TARGETS: [Target; 5] = [
    Target {
        name: "direct, long transaction, no migration",
        budget: None,
        blocker: true,
        migrate: false,
    },
    Target {
        name: "direct, no long transaction",
        budget: None,
        blocker: false,
        migrate: true,
    },
    Target {
        name: "direct",
        budget: None,
        blocker: true,
        migrate: true,
    },
    Target {
        name: "pgshift, no budget (500 ms attempts)",
        budget: Some(0),
        blocker: true,
        migrate: true,
    },
    Target {
        name: "pgshift, stall budget 100 ms",
        budget: Some(100),
        blocker: true,
        migrate: true,
    },
];

struct Scenario {
    name: &'static str,
    sql: &'static str,
}

const SCENARIOS: [Scenario; 5] = [
    Scenario { name: "CREATE INDEX", sql: "CREATE INDEX items_owner ON items (owner_id)" },
    Scenario {
        name: "ADD COLUMN volatile default",
        sql: "ALTER TABLE items ADD COLUMN token text DEFAULT md5(random()::text)",
    },
    Scenario {
        name: "ADD CHECK + SET NOT NULL",
        sql: "ALTER TABLE items ADD CONSTRAINT qty_positive CHECK (qty > 0); ALTER TABLE items ALTER COLUMN qty SET NOT NULL",
    },
    Scenario {
        name: "ADD FOREIGN KEY",
        sql: "ALTER TABLE items ADD CONSTRAINT items_owner_fk FOREIGN KEY (owner_id) REFERENCES owners (id)",
    },
    Scenario {
        name: "Django-style transaction",
        sql: "BEGIN; ALTER TABLE items ADD COLUMN note varchar(40) NULL; \
              ALTER TABLE items ADD CONSTRAINT items_qty_check CHECK (qty >= 0); \
              CREATE INDEX items_note ON items (note); COMMIT",
    },
];

fn conn_str(port: u16, db: &str, app: &str) -> String {
    format!("host=127.0.0.1 port={port} dbname={db} user=postgres connect_timeout=10 application_name={app}")
}

async fn connect(port: u16, db: &str) -> Client {
    connect_as(port, db, "bench").await
}

async fn connect_as(port: u16, db: &str, app: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(&conn_str(port, db, app), NoTls)
        .await
        .expect("connect");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// pgshift in front of `pg_port` on its own thread; returns its port.
fn start_proxy(pg_port: u16, budget: u64) -> u16 {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".into();
    config.metrics.listen = String::new();
    config.admin.listen = String::new();
    config.upstream.address = format!("127.0.0.1:{pg_port}");
    config.ddl.notices = false;
    config.ddl.lock_timeout_ms = 500;
    config.ddl.stall_budget_ms = budget;
    config.ddl.retry_deadline_ms = 60_000;
    config.ddl.max_attempts = 1_000;
    config.validate().expect("valid config");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let server = Server::bind(config).await.expect("bind pgshift");
            tx.send(server.local_addr().port()).unwrap();
            server.run().await;
        });
    });
    rx.recv().unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

struct Phase {
    p50: Duration,
    p99: Duration,
    max: Duration,
    /// When the slowest query started.
    max_at: Option<Instant>,
    per_s: f64,
}

/// (started, took, worker)
type Sample = (Instant, Duration, usize);

fn phase(samples: &[Sample], from: Instant, to: Instant) -> Phase {
    let inside: Vec<&Sample> = samples
        .iter()
        .filter(|(t, _, _)| *t >= from && *t < to)
        .collect();
    let max_at = inside.iter().max_by_key(|(_, d, _)| *d).map(|(t, _, _)| *t);
    let mut d: Vec<Duration> = inside.iter().map(|(_, d, _)| *d).collect();
    d.sort();
    let secs = (to - from).as_secs_f64().max(1e-3);
    Phase {
        p50: percentile(&d, 0.5),
        p99: percentile(&d, 0.99),
        max: d.last().copied().unwrap_or_default(),
        max_at,
        per_s: d.len() as f64 / secs,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// Part 1: how long each statement holds its lock on a table of `rows` rows.
async fn sizes(pg: &Cluster, full: bool) {
    let steps: &[i64] = if full {
        &[2_500, 10_000, 40_000, 160_000]
    } else {
        &[2_500]
    };
    println!("## Statements as written, by table size (ms; nobody else connected)\n");
    println!("| rows | total size | CREATE INDEX | ALTER COLUMN TYPE | VACUUM FULL | CLUSTER | ADD CHECK |");
    println!("|---|---|---|---|---|---|---|");
    for (i, rows) in steps.iter().enumerate() {
        let db = pg.create_database(&format!("size_{i}")).expect("database");
        let c = connect(pg.port, &db).await;
        c.batch_execute(&format!(
            "CREATE TABLE t (id int PRIMARY KEY, owner_id int, qty int, note text);
             INSERT INTO t SELECT g, g % 100, g, md5(g::text) FROM generate_series(1, {rows}) g;"
        ))
        .await
        .unwrap();
        c.batch_execute("VACUUM ANALYZE t").await.unwrap();
        let size: i64 = c
            .query_one("SELECT pg_total_relation_size('t')", &[])
            .await
            .unwrap()
            .get(0);
        let mut cells = Vec::new();
        for sql in [
            "CREATE INDEX t_owner ON t (owner_id)",
            "ALTER TABLE t ALTER COLUMN qty TYPE bigint",
            "VACUUM FULL t",
            "CLUSTER t USING t_pkey",
            "ALTER TABLE t ADD CONSTRAINT qty_pos CHECK (qty > 0)",
        ] {
            let started = Instant::now();
            c.batch_execute(sql).await.unwrap();
            cells.push(ms(started.elapsed()));
        }
        println!("| {rows} | {} KiB | {} |", size / 1024, cells.join(" | "));
    }
    println!();
}

/// One look at pg_stat_activity: (when, [(application, state, wait, blocked by, query)]).
type Look = (Instant, Vec<[String; 5]>);

/// (woke, late by): a 5 ms sleep that woke more than 20 ms late.
type Late = Vec<(Instant, Duration)>;

/// With BENCH_TRACE set: how late 5 ms sleeps wake, on an OS thread of its own
/// (the machine's CPU: it was not scheduled) and as a task on the benchmark's
/// runtime (the application's client side), until `stop`.
fn lateness(
    stop: Arc<AtomicBool>,
) -> (std::thread::JoinHandle<Late>, tokio::task::JoinHandle<Late>) {
    const TICK: Duration = Duration::from_millis(5);
    let stop2 = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut late = Vec::new();
        while !stop2.load(Ordering::Relaxed) {
            let t = Instant::now();
            std::thread::sleep(TICK);
            let by = t.elapsed().saturating_sub(TICK);
            if by > Duration::from_millis(20) {
                late.push((Instant::now(), by));
            }
        }
        late
    });
    let task = tokio::spawn(async move {
        let mut late = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            tokio::time::sleep(TICK).await;
            let by = t.elapsed().saturating_sub(TICK);
            if by > Duration::from_millis(20) {
                late.push((Instant::now(), by));
            }
        }
        late
    });
    (thread, task)
}

/// The longest lateness that overlaps [from, to].
fn worst_late(late: &Late, from: Instant, to: Instant) -> Duration {
    late.iter()
        .filter(|(woke, by)| *woke >= from && woke.checked_sub(*by).is_some_and(|s| s <= to))
        .map(|(_, by)| *by)
        .max()
        .unwrap_or_default()
}

/// With BENCH_TRACE set: pg_stat_activity every 10 ms until `stop`, to tell what
/// a slow application query waited for.
fn activity(port: u16, db: &str, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<Look>> {
    let db = db.to_string();
    tokio::spawn(async move {
        let c = connect_as(port, &db, "sampler").await;
        let q = c
            .prepare(
                "SELECT coalesce(application_name, '') || ':' || coalesce(backend_type, ''), coalesce(state, ''),                  coalesce(wait_event_type || '/' || wait_event, ''), pg_blocking_pids(pid)::text, left(query, 50)                  FROM pg_stat_activity WHERE (datname = current_database() OR backend_type <> 'client backend')                  AND application_name <> 'sampler'",
            )
            .await
            .unwrap();
        let mut looks = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let rows = c.query(&q, &[]).await.unwrap();
            let at = Instant::now();
            let row = |r: &tokio_postgres::Row| std::array::from_fn(|i| r.get::<_, String>(i));
            looks.push((at, rows.iter().map(row).collect()));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        looks
    })
}

/// Prints each application query slower than 150 ms with what the sampler saw
/// meanwhile: its own backend's states, and every other backend that was not idle.
fn attribute(samples: &[Sample], looks: &[Look], late: (&Late, &Late), start: Instant) {
    let slow: Vec<&Sample> = samples
        .iter()
        .filter(|(_, d, _)| *d > Duration::from_millis(150))
        .collect();
    for (t, d, w) in slow {
        let me = format!("worker{w}:client backend");
        let mut own = std::collections::BTreeMap::<String, usize>::new();
        let mut others = std::collections::BTreeMap::<String, usize>::new();
        for (_, rows) in looks.iter().filter(|(at, _)| at >= t && *at <= *t + *d) {
            for [app, state, wait, by, query] in rows {
                if *app == me {
                    *own.entry(format!("{state} {wait} by {by}")).or_default() += 1;
                } else if wait.starts_with("Activity/") || state == "idle" {
                    // A background process at rest, or an idle session.
                } else if !app.starts_with("worker") {
                    *others
                        .entry(format!("{app} {state} {wait} by {by}: {query}"))
                        .or_default() += 1;
                } else if wait.starts_with("Lock/") {
                    *others
                        .entry(format!("{app} {state} {wait} by {by}"))
                        .or_default() += 1;
                }
            }
        }
        println!(
            "slow: worker{w} at {:+.3} s took {:.0} ms; an OS thread woke up to {:.0} ms late, a client task {:.0} ms; own backend {own:?}; others {others:?}",
            if *t >= start {
                (*t - start).as_secs_f64()
            } else {
                -(start - *t).as_secs_f64()
            },
            d.as_secs_f64() * 1000.0,
            worst_late(late.0, *t, *t + *d).as_secs_f64() * 1000.0,
            worst_late(late.1, *t, *t + *d).as_secs_f64() * 1000.0,
        );
    }
}

/// Part 2: one scenario against one target; returns (before, during).
async fn run(
    pg: &Cluster,
    db: &str,
    target: &Target,
    sql: &str,
    hold: Duration,
    workers: usize,
) -> (Phase, Phase) {
    let setup = connect(pg.port, db).await;
    setup
        .batch_execute(
            "CREATE TABLE owners (id int PRIMARY KEY);
             INSERT INTO owners SELECT generate_series(0, 99);
             CREATE TABLE items (id int PRIMARY KEY, owner_id int, qty int, note0 text);
             INSERT INTO items SELECT g, g % 100, 1 + g % 1000, md5(g::text) FROM generate_series(1, 200000) g;",
        )
        .await
        .unwrap();
    setup.batch_execute("VACUUM ANALYZE items").await.unwrap();
    let port = match target.budget {
        None => pg.port,
        Some(budget) => start_proxy(pg.port, budget),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let mut load = Vec::new();
    for w in 0..workers {
        let client = connect_as(port, db, &format!("worker{w}")).await;
        let (stop, samples) = (stop.clone(), samples.clone());
        load.push(tokio::spawn(async move {
            let update = client
                .prepare("UPDATE items SET qty = qty + 1 WHERE id = $1")
                .await
                .unwrap();
            let mut id = 1_000 + w as i32 * 7_919;
            let mut mine = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                id = 2 + (id * 31 + 17).rem_euclid(199_000);
                let t = Instant::now();
                client.execute(&update, &[&id]).await.unwrap();
                mine.push((t, t.elapsed(), w));
            }
            samples.lock().unwrap().extend(mine);
        }));
    }
    let trace = std::env::var_os("BENCH_TRACE")
        .is_some()
        .then(|| (activity(pg.port, db, stop.clone()), lateness(stop.clone())));
    // Warm-up: each worker's first statements load caches.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let blocker = connect(pg.port, db).await;
    if target.blocker {
        blocker
            .batch_execute("BEGIN; UPDATE items SET qty = qty WHERE id = 1")
            .await
            .unwrap();
    }
    let blocked_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let migrator = connect(port, db).await;
    // Without a migration, "during" is the time it would have run: until the
    // long transaction ends.
    let sql = if target.migrate {
        sql.to_string()
    } else {
        String::new()
    };
    let migration_start = Instant::now();
    let migration = tokio::spawn(async move {
        let r = migrator.batch_execute(&sql).await;
        (r, Instant::now())
    });
    tokio::time::sleep(hold.saturating_sub(blocked_at.elapsed())).await;
    let committed = Instant::now();
    if target.blocker {
        blocker.batch_execute("COMMIT").await.unwrap();
    }
    let (result, mut migration_end) = migration.await.unwrap();
    if !target.migrate {
        migration_end = committed;
    }
    // pgshift answers a deferred build at COMMIT and runs it after: wait for the
    // schema, not only for the answer.
    let mut done_at = migration_end;
    for _ in 0..1200 {
        let invalid: i64 = setup
            .query_one("SELECT count(*) FROM pg_index WHERE NOT indisvalid", &[])
            .await
            .unwrap()
            .get(0);
        let running: i64 = setup
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND query ILIKE '%CONCURRENTLY%' AND state = 'active'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if invalid == 0 && running == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        done_at = Instant::now();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let end = Instant::now();
    let samples = samples.lock().unwrap().clone();
    if let Some((looks, (thread, task))) = trace {
        let looks = looks.await.unwrap();
        let (thread, task) = (thread.join().unwrap(), task.await.unwrap());
        attribute(&samples, &looks, (&thread, &task), migration_start);
    }
    let before = phase(&samples, t0, blocked_at);
    let during = phase(&samples, migration_start, done_at);
    let after = phase(&samples, done_at, end);
    let outcome = match result {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("error: {e}"),
    };
    println!(
        "| {} | {} | {} / {} / {} | {} / {} / {} (at +{} s) | {} / {} / {} | {:.0} | {:.2} | {:.2} | {outcome} |",
        target.name,
        ms(done_at - migration_start),
        ms(before.p50),
        ms(before.p99),
        ms(before.max),
        ms(during.p50),
        ms(during.p99),
        ms(during.max),
        during
            .max_at
            .map_or("-".into(), |t| format!("{:.1}", (t - migration_start).as_secs_f64())),
        ms(after.p50),
        ms(after.p99),
        ms(after.max),
        before.per_s,
        during.per_s / before.per_s.max(1e-9),
        after.per_s / before.per_s.max(1e-9),
    );
    (before, during)
}

/// Issue 8's targets for the run with the stall budget, and the worst query of the
/// same load under the same long transaction with no migration at all.
fn verdict(budget: &(Phase, Phase), control: Option<&(Phase, Phase)>) {
    let (before, during) = budget;
    let yes = |ok: bool| if ok { "met" } else { "NOT met" };
    let max_ok = during.max <= Duration::from_millis(150);
    let p99_ok = during.p99 <= before.p99 * 3 && during.p99 < Duration::from_millis(50);
    let rate = during.per_s / before.per_s.max(1e-9);
    println!(
        "\nWith the budget: worst query {} ms (target ≤ 150: {}); p99 {} ms against {} before (target ≤ 3× and < 50: {}); throughput {rate:.2}× (target ≥ 0.9: {}).",
        ms(during.max),
        yes(max_ok),
        ms(during.p99),
        ms(before.p99),
        yes(p99_ok),
        yes(rate >= 0.9),
    );
    if let Some((_, c)) = control {
        println!(
            "The same load and long transaction with no migration: worst query {} ms, p99 {} ms.",
            ms(c.max),
            ms(c.p99)
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let pg = Cluster::start(&ClusterOptions {
        settings: vec!["max_connections=100".into()],
        ..ClusterOptions::default()
    })
    .expect("start postgres");
    // BENCH_ONLY="CREATE INDEX" runs the scenarios and targets whose names
    // contain it (and skips the sizes); BENCH_TRACE=1 attributes slow queries.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if only.is_empty() {
        sizes(&pg, full).await;
    }
    let (hold, workers, scenarios) = if full {
        (Duration::from_secs(8), 8, &SCENARIOS[..])
    } else {
        (Duration::from_secs(2), 2, &SCENARIOS[2..3])
    };
    println!(
        "## Application latency: {workers} workers, an idle-in-transaction writer held {} s\n",
        hold.as_secs()
    );
    for (i, s) in scenarios.iter().enumerate() {
        println!("### {}\n", s.name);
        println!("| target | migration s→done ms | before p50/p99/max ms | during p50/p99/max ms | after p50/p99/max ms | before q/s | during/before q/s | after/before q/s | migration |");
        println!("|---|---|---|---|---|---|---|---|---|");
        let (mut control, mut budget) = (None, None);
        for (j, t) in TARGETS.iter().enumerate() {
            if !only.is_empty() && !s.name.contains(&only) && !t.name.contains(&only) {
                continue;
            }
            let db = pg
                .create_database(&format!("stall_{i}_{j}"))
                .expect("database");
            let phases = run(&pg, &db, t, s.sql, hold, workers).await;
            match (t.migrate, t.budget) {
                (false, _) => control = Some(phases),
                (true, Some(b)) if b > 0 => budget = Some(phases),
                _ => {}
            }
        }
        if let Some(b) = &budget {
            verdict(b, control.as_ref());
        }
        println!();
    }
}

//! The cost of an online column rollout, measured side by side in one run.
//!
//! Part 1, the mirror's write overhead: bulk and single-row UPDATE and INSERT on a
//! table of N rows (~120 B each), directly against Postgres, (a) with no rollout,
//! (b) with the new column written by the statement itself (the physical floor:
//! a wider row; what a proxy-side rewrite would cost), (c) with pgshift's mirror
//! trigger installed by a real rollout (verified, waiting for its cutover); then
//! through pgshift with single-row writes as simple Queries, (d) with no rollout
//! and (e) during a rollout, where pgshift rewrites them to set the new column
//! (the trigger's WHEN clause skips those rows). Median of 3 runs each.
//!
//! Part 2, the backfill: a rollout of `ALTER COLUMN amount TYPE bigint` on a fresh
//! table of N rows, through pgshift, while 4 workers update random rows through
//! pgshift; the time from the ALTER to "verified" (backfill plus a verify pass)
//! next to the single blocking `UPDATE` of the whole table and the blocking
//! `ALTER … TYPE bigint` on the same data, and the workers' latency before and
//! during the rollout.
//!
//! Part 3, a column fill: `ADD COLUMN token uuid DEFAULT gen_random_uuid()` on a
//! fresh table of N rows, the blocking ALTER directly next to the fill through
//! pgshift under the same workers (`BENCH_SKIP_FILL=1` skips it).
//!
//! Part 2 runs once per `BENCH_LATENCY_FACTORS` value (default "0 2": without and
//! with the backfill's latency governor, `rollout.latency_factor`), each with its
//! own blocking UPDATE and ALTER for comparison; `BENCH_SKIP_OVERHEAD=1` skips
//! part 1.
//!
//! `BENCH_WORKER_RATE` = N paces the workers at N statements per second in all
//! (default: as fast as they can); `BENCH_BATCH_MS` sets `rollout.batch_target_ms`,
//! `BENCH_ROWS_PER_SECOND` the backfill's `rollout.rows_per_second`;
//! `BENCH_MIRROR_SECS` = N pauses the backfill for its first N s, so the workers'
//! p99 under the mirror alone is printed apart (the times to "backfill done" and
//! "verified" leave the pause out).
//!
//! Where the workers' tail comes from (part 2):
//! - `BENCH_PGBENCH=1`: the workers are pgbench in its own process (4 clients, 2
//!   threads, `-M prepared`, `-R` from `BENCH_WORKER_RATE`, latency from the
//!   scheduled start), not tasks of this process, which also runs pgshift;
//! - `BENCH_WORKERS_VIA` = `direct` | `pgbouncer` | `other`: the workers connect
//!   to Postgres, through pgbouncer (session pooling), or through a second
//!   pgshift that mirrors but does not drive; their writes mirror through the
//!   trigger in the first two;
//! - `BENCH_SLICES=1` prints the workers' p99 per 500 ms from the ALTER on;
//! - `BENCH_SAMPLE_WAITS=1` samples what the workers' backends wait on (and
//!   who holds them) every 5 ms while the backfill runs;
//! - `BENCH_IDLE_SERVICE=1` (root, Postgres on this host) puts pgshift's
//!   service backends under SCHED_IDLE while the backfill runs;
//! - `BENCH_PG_SETTINGS` = "name=value …" adds server settings;
//! - `RUST_LOG=pgshift::rollout=debug` shows the governor's looks.
//!
//! `cargo bench --bench rollout` (N = 1,000,000); under `cargo test` it runs with
//! N = 20,000 as a smoke test.

use pgshift::cluster::{Cluster, ClusterOptions};
use pgshift::config::Config;
use pgshift::server::Server;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};

async fn connect(port: u16, db: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} dbname={db} user=postgres"),
        NoTls,
    )
    .await
    .expect("connect");
    tokio::spawn(conn);
    client
}

fn start_proxy(pg_port: u16, latency_factor: f64) -> u16 {
    let mut config = Config::default();
    config.rollout.latency_factor = latency_factor;
    if let Some(ms) = std::env::var("BENCH_BATCH_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.rollout.batch_target_ms = ms;
    }
    if let Some(rate) = std::env::var("BENCH_ROWS_PER_SECOND")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.rollout.rows_per_second = rate;
    }
    config.server.listen = "127.0.0.1:0".into();
    config.metrics.listen = String::new();
    config.admin.listen = String::new();
    config.upstream.address = format!("127.0.0.1:{pg_port}");
    config.ddl.notices = true;
    config.ddl.small_table_bytes = 0;
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

/// pgbouncer (session pooling, as the postgres OS user) in front of Postgres on
/// a free port under 32768; the child and its port.
fn start_pgbouncer(pg_port: u16) -> (std::process::Child, u16) {
    let dir = std::env::temp_dir().join(format!("pgshift-bench-bouncer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = (21000..22000)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port");
    let ini = dir.join("pgbouncer.ini");
    std::fs::write(dir.join("users.txt"), "\"postgres\" \"\"\n").unwrap();
    std::fs::write(
        &ini,
        format!(
            "[databases]\n* = host=127.0.0.1 port={pg_port}\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
             unix_socket_dir =\nauth_type = trust\nauth_file = {}\npool_mode = session\nmax_client_conn = 100\n\
             default_pool_size = 20\nignore_startup_parameters = extra_float_digits\nlogfile =\npidfile =\n",
            dir.join("users.txt").display()
        ),
    )
    .unwrap();
    let _ = std::process::Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(&dir)
        .status();
    let mut child = std::process::Command::new("setpriv")
        .args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "pgbouncer",
        ])
        .arg(&ini)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("pgbouncer");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (child, port);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("pgbouncer did not listen on {port}");
}

async fn fill(c: &Client, rows: i64) {
    c.batch_execute(&format!(
        "DROP TABLE IF EXISTS items;
         CREATE TABLE items (id bigint PRIMARY KEY, amount int NOT NULL, payload text);
         INSERT INTO items SELECT g, g % 100000, repeat('x', 90) FROM generate_series(1, {rows}) g;"
    ))
    .await
    .expect("fill");
    c.batch_execute("VACUUM ANALYZE items")
        .await
        .expect("vacuum");
}

async fn timed(c: &Client, sql: &str) -> Duration {
    let t = Instant::now();
    c.batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    t.elapsed()
}

/// Median of three runs of `f`.
async fn median3<F, Fut>(mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Duration>,
{
    let mut v = [f().await, f().await, f().await];
    v.sort();
    v[1]
}

struct Writes {
    bulk_update: Duration,
    single_updates: Duration,
    bulk_insert: Duration,
    single_inserts: Duration,
}

/// The four write shapes; `extra` is what the statement also sets (the floor);
/// `simple`: single-row writes as simple Queries with their values in the text
/// (what pgshift rewrites), not prepared statements.
async fn writes(c: &Client, rows: i64, extra: bool, simple: bool) -> Writes {
    let n_single = 2_000i64;
    // Warm: the first UPDATE after a fill also sets hint bits on every page.
    c.batch_execute("UPDATE items SET amount = amount WHERE id % 5 = 0; VACUUM items")
        .await
        .ok();
    let set = if extra {
        ", amount__pgshift_new = amount + 1"
    } else {
        ""
    };
    // Each run on a vacuumed table: without it every run finds the dead rows
    // of the one before, and later runs (other cells) would pay for them.
    let bulk_update = median3(|| {
        let sql = format!("UPDATE items SET amount = amount + 1{set} WHERE id % 5 = 0");
        async move {
            c.batch_execute("VACUUM items").await.expect("vacuum");
            timed(c, &sql).await
        }
    })
    .await;
    let update = c
        .prepare(&format!(
            "UPDATE items SET amount = amount + 1{set} WHERE id = $1"
        ))
        .await
        .unwrap();
    let single_updates = median3(|| {
        let update = update.clone();
        async move {
            let t = Instant::now();
            for i in 0..n_single {
                let id = i * 7919 % rows + 1;
                match simple {
                    true => c
                        .batch_execute(&format!(
                            "UPDATE items SET amount = amount + 1{set} WHERE id = {id}"
                        ))
                        .await
                        .unwrap(),
                    false => {
                        c.execute(&update, &[&id]).await.unwrap();
                    }
                }
            }
            t.elapsed()
        }
    })
    .await;
    let (cols, vals) = if extra {
        (", amount__pgshift_new", ", g % 1000")
    } else {
        ("", "")
    };
    let mut base = rows * 10;
    let mut bulk = Vec::new();
    for _ in 0..3 {
        let sql = format!(
            "INSERT INTO items (id, amount, payload{cols}) SELECT g, g % 1000, repeat('y', 90){vals} FROM generate_series({}, {}) g",
            base + 1,
            base + rows / 10
        );
        bulk.push(timed(c, &sql).await);
        base += rows;
    }
    bulk.sort();
    // The amount a parameter (the floor repeats it as pgshift does).
    let insert = c
        .prepare(&format!(
            "INSERT INTO items (id, amount, payload{cols}) VALUES ($1, $2, 'z'{})",
            if extra { ", ($2)::integer" } else { "" }
        ))
        .await
        .unwrap();
    let mut singles = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        for i in 0..n_single {
            match simple {
                true => c
                    .batch_execute(&format!(
                        "INSERT INTO items (id, amount, payload{cols}) VALUES ({}, 5, 'z'{})",
                        base + i,
                        if extra { ", 5" } else { "" }
                    ))
                    .await
                    .unwrap(),
                false => {
                    c.execute(&insert, &[&(base + i), &5i32]).await.unwrap();
                }
            }
        }
        singles.push(t.elapsed());
        base += rows;
    }
    singles.sort();
    Writes {
        bulk_update,
        single_updates,
        bulk_insert: bulk[1],
        single_inserts: singles[1],
    }
}

async fn wait_phase(admin: &Client, want: &str, limit: Duration) -> Duration {
    let t = Instant::now();
    loop {
        let row = admin
            .query_opt(
                "SELECT phase, error FROM pgshift.rollouts ORDER BY id DESC LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        if let Some(r) = row {
            let (phase, error): (String, Option<String>) = (r.get(0), r.get(1));
            assert!(phase != "failed", "rollout failed: {error:?}");
            if phase == want {
                return t.elapsed();
            }
        }
        assert!(t.elapsed() < limit, "no {want} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn ratio(a: Duration, b: Duration) -> String {
    format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64().max(1e-9))
}

async fn overhead(pg: &Cluster, proxy: u16, rows: i64) {
    println!("## Mirror overhead: {rows} rows, bulk UPDATE of 20 %, 2,000 single-row UPDATEs, bulk INSERT of 10 %, 2,000 single-row INSERTs (median of 3)\n");
    let db = pg.create_database("rollout_overhead").unwrap();
    let pg_port = pg.port;
    let c = connect(pg_port, &db).await;
    let via = connect(proxy, &db).await;
    // Direct, prepared single-row statements.
    fill(&c, rows).await;
    let none = writes(&c, rows, false, false).await;
    fill(&c, rows).await;
    c.batch_execute("ALTER TABLE items ADD COLUMN amount__pgshift_new bigint")
        .await
        .unwrap();
    let floor = writes(&c, rows, true, false).await;
    fill(&c, rows).await;
    start_rollout(&via, &c).await;
    let trigger = writes(&c, rows, false, false).await;
    check_mirror(&c).await;
    roll_back(&c).await;
    // Through pgshift, simple Queries: no rollout, then a rollout whose writes
    // pgshift rewrites to set the new column (the trigger's WHEN skips them).
    fill(&c, rows).await;
    let none_via = writes(&via, rows, false, true).await;
    fill(&c, rows).await;
    start_rollout(&via, &c).await;
    let rewrite = writes(&via, rows, false, true).await;
    check_mirror(&c).await;
    roll_back(&c).await;
    // Through pgshift, prepared statements: the same two runs.
    fill(&c, rows).await;
    let none_prep = writes(&via, rows, false, false).await;
    fill(&c, rows).await;
    start_rollout(&via, &c).await;
    let rewrite_prep = writes(&via, rows, false, false).await;
    check_mirror(&c).await;
    roll_back(&c).await;
    println!("| write | no rollout ms | new column in the statement ms (ratio) | mirror trigger ms (ratio) | via pgshift, no rollout ms | via pgshift, rewritten ms (ratio) | via pgshift prepared, no rollout ms | via pgshift prepared, rewritten ms (ratio) |");
    println!("|---|---|---|---|---|---|---|---|");
    let pick = |w: &Writes, i: usize| match i {
        0 => w.bulk_update,
        1 => w.single_updates,
        2 => w.bulk_insert,
        _ => w.single_inserts,
    };
    for (i, name) in [
        "bulk UPDATE",
        "single-row UPDATEs",
        "bulk INSERT … SELECT",
        "single-row INSERTs",
    ]
    .iter()
    .enumerate()
    {
        let (a, b, t) = (pick(&none, i), pick(&floor, i), pick(&trigger, i));
        let (v, r) = (pick(&none_via, i), pick(&rewrite, i));
        let (pv, pr) = (pick(&none_prep, i), pick(&rewrite_prep, i));
        println!(
            "| {name} | {} | {} ({}) | {} ({}) | {} | {} ({}) | {} | {} ({}) |",
            ms(a),
            ms(b),
            ratio(b, a),
            ms(t),
            ratio(t, a),
            ms(v),
            ms(r),
            ratio(r, v),
            ms(pv),
            ms(pr),
            ratio(pr, pv)
        );
    }
    println!();
}

/// `ALTER … TYPE bigint` through pgshift, waited for until verified.
async fn start_rollout(via: &Client, admin: &Client) {
    via.batch_execute("ALTER TABLE items ALTER COLUMN amount TYPE bigint")
        .await
        .expect("rollout start");
    wait_phase(admin, "verified", Duration::from_secs(3600)).await;
}

async fn roll_back(admin: &Client) {
    let id: i64 = admin
        .query_one("SELECT max(id) FROM pgshift.rollouts", &[])
        .await
        .unwrap()
        .get(0);
    pgshift::rollout::request(admin, id, pgshift::rollout::Request::Rollback)
        .await
        .expect("rollback");
    wait_phase(admin, "rolled_back", Duration::from_secs(600)).await;
}

async fn check_mirror(c: &Client) {
    let check: i64 = c
        .query_one(
            "SELECT count(*) FROM items WHERE amount__pgshift_new IS DISTINCT FROM amount",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(check, 0, "the mirror missed rows");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn backfill(pg: &Cluster, proxy: u16, rows: i64, latency_factor: f64) {
    println!(
        "## Backfill: {rows} rows, 4 workers updating random rows through pgshift, rollout.latency_factor = {latency_factor}\n"
    );
    let db = pg
        .create_database(&format!(
            "rollout_backfill_{}",
            (latency_factor * 10.0) as u64
        ))
        .unwrap();
    let c = connect(pg.port, &db).await;
    fill(&c, rows).await;
    c.batch_execute("ALTER TABLE items ADD COLUMN copy bigint")
        .await
        .unwrap();
    let blocking_update = timed(&c, "UPDATE items SET copy = amount").await;
    fill(&c, rows).await;
    let blocking_alter = timed(&c, "ALTER TABLE items ALTER COLUMN amount TYPE bigint").await;
    fill(&c, rows).await;
    // BENCH_WORKERS_VIA = direct | pgbouncer | other: the workers connect to Postgres
    // or through pgbouncer, not through pgshift (their writes mirror through
    // the trigger), to tell the hop's part of their latency from the database's.
    let mut bouncer = None;
    let workers_port = match std::env::var("BENCH_WORKERS_VIA").as_deref() {
        Ok("direct") => pg.port,
        // A second pgshift, which mirrors but (most likely) does not drive.
        Ok("other") => start_proxy(pg.port, latency_factor),
        Ok("pgbouncer") => {
            let (child, port) = start_pgbouncer(pg.port);
            bouncer = Some(child);
            port
        }
        _ => proxy,
    };
    let load = Load::start(workers_port, &db, rows).await;
    let started = Instant::now();
    let via = connect(proxy, &db).await;
    via.batch_execute("ALTER TABLE items ALTER COLUMN amount TYPE bigint")
        .await
        .expect("rollout start");
    let answered = started.elapsed();
    // BENCH_MIRROR_SECS = N: pause the backfill at once for N s, to tell what
    // the mirror alone costs the workers from what the backfill adds.
    let mirror_secs: u64 = std::env::var("BENCH_MIRROR_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut mirror_only = None;
    if mirror_secs > 0 {
        let id: i64 = c
            .query_one("SELECT max(id) FROM pgshift.rollouts", &[])
            .await
            .unwrap()
            .get(0);
        pgshift::rollout::request(&c, id, pgshift::rollout::Request::Pause)
            .await
            .expect("pause");
        let from = Instant::now();
        tokio::time::sleep(Duration::from_secs(mirror_secs)).await;
        mirror_only = Some((from, Instant::now()));
        pgshift::rollout::request(&c, id, pgshift::rollout::Request::Resume)
            .await
            .expect("resume");
    }
    // BENCH_SAMPLE_WAITS=1: what the workers' backends wait on while the
    // backfill runs, sampled every 5 ms from pg_stat_activity.
    let waits = std::env::var("BENCH_SAMPLE_WAITS").is_ok().then(|| {
        let (port, db) = (pg.port, db.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let s = connect(port, &db).await;
                let mut seen: std::collections::BTreeMap<String, u64> = Default::default();
                while !stop.load(Ordering::Relaxed) {
                    for row in s
                        .query(
                            "SELECT coalesce(wait_event_type || '/' || wait_event, 'cpu') || coalesce(' by ' || (SELECT string_agg(b.application_name || ':' || left(b.query, 40), ',') FROM pg_stat_activity b WHERE b.pid = ANY(pg_blocking_pids(a.pid))), '') FROM pg_stat_activity a \
                             WHERE datname = current_database() AND state = 'active' AND application_name <> 'pgshift' AND pid <> pg_backend_pid()",
                            &[],
                        )
                        .await
                        .unwrap()
                    {
                        *seen.entry(row.get(0)).or_default() += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                seen
            }
        });
        (stop, task)
    });
    let mut backfilled = None;
    // The longest pause the governor set after a batch.
    let mut paused = 0i64;
    let verified = loop {
        let row = c
            .query_one(
                "SELECT phase, COALESCE(throttle_ms, 0)::int8 FROM pgshift.rollouts ORDER BY id DESC LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        let phase: String = row.get(0);
        paused = paused.max(row.get(1));
        // BENCH_IDLE_SERVICE=1 (as root, Postgres on this host): pgshift's
        // service backends under SCHED_IDLE, to see how much of the workers'
        // tail is waiting for a core the backfill's backend holds.
        if std::env::var("BENCH_IDLE_SERVICE").is_ok() {
            for row in c
                .query(
                    "SELECT pid::text FROM pg_stat_activity WHERE application_name = 'pgshift'",
                    &[],
                )
                .await
                .unwrap()
            {
                let pid: String = row.get(0);
                let _ = std::process::Command::new("chrt")
                    .args(["--idle", "-p", "0", &pid])
                    .output();
            }
        }
        assert!(phase != "failed", "rollout failed");
        if phase != "backfilling" && backfilled.is_none() {
            backfilled = Some(started.elapsed());
        }
        if phase == "verified" {
            break started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let backfilled = backfilled.unwrap_or(verified);
    if let Some((stop, task)) = waits {
        stop.store(true, Ordering::Relaxed);
        eprintln!("workers' backends, sampled: {:?}", task.await.unwrap());
    }
    let workers = load.stop(started, verified, mirror_only).await;
    if let Some(mut b) = bouncer {
        let _ = b.kill();
        let _ = b.wait();
    }
    // The pause is not the backfill's time.
    let paused_for = mirror_only.map(|(f, t)| t - f).unwrap_or_default();
    let (backfilled, verified) = (backfilled - paused_for, verified - paused_for);
    let mismatched: i64 = c
        .query_one(
            "SELECT count(*) FROM items WHERE amount__pgshift_new IS DISTINCT FROM amount",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(mismatched, 0);
    println!("| what | time ms | rows/s | vs blocking UPDATE |");
    println!("|---|---|---|---|");
    let per_s = |d: Duration| format!("{:.0}", rows as f64 / d.as_secs_f64());
    println!(
        "| blocking `UPDATE items SET copy = amount` (no load) | {} | {} | 1.00x |",
        ms(blocking_update),
        per_s(blocking_update)
    );
    println!(
        "| blocking `ALTER … TYPE bigint` (no load) | {} | {} | {} |",
        ms(blocking_alter),
        per_s(blocking_alter),
        ratio(blocking_alter, blocking_update)
    );
    println!("| rollout: ALTER answered | {} | | |", ms(answered));
    println!(
        "| rollout: backfill done (under load) | {} | {} | {} |",
        ms(backfilled),
        per_s(backfilled),
        ratio(backfilled, blocking_update)
    );
    println!(
        "| rollout: verified (under load) | {} | {} | {} |",
        ms(verified),
        per_s(verified),
        ratio(verified, blocking_update)
    );
    println!();
    println!("{workers}; the governor's longest pause after a batch {paused} ms");
    println!();
}

/// Four workers updating random rows of `items` through pgshift, each timing
/// its statements: as fast as they can (a saturated host: every cycle the
/// rollout takes is one they lose), or, with `BENCH_WORKER_RATE` = N, N
/// statements per second in all, each due at its own time (a host with room:
/// a statement sent late because the one before took long counts from when it
/// was due, so waits are not hidden).
struct Load {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<(Instant, Duration)>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    /// With `BENCH_PGBENCH=1`: pgbench (4 clients, 2 threads, prepared) in its
    /// own process instead of the bench's tasks, and its log's folder.
    pgbench: Option<(std::process::Child, std::path::PathBuf)>,
}

impl Load {
    /// Starts them, and lets them run 3 s (the "before").
    async fn start(proxy: u16, db: &str, rows: i64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let samples: Arc<Mutex<Vec<(Instant, Duration)>>> = Arc::default();
        let mut workers = Vec::new();
        let rate: f64 = std::env::var("BENCH_WORKER_RATE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if std::env::var("BENCH_PGBENCH").is_ok() {
            let dir =
                std::env::temp_dir().join(format!("pgshift-bench-{}-{db}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let script = dir.join("update.sql");
            std::fs::write(
                &script,
                format!("\\set id random(1, {rows})\nUPDATE items SET amount = amount + 1 WHERE id = :id;\n"),
            )
            .unwrap();
            let mut cmd = std::process::Command::new("pgbench");
            cmd.args([
                "-n",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-c",
                "4",
                "-j",
                "2",
            ])
            .args(["-M", "prepared", "-T", "3600", "-l"])
            .arg(format!("--log-prefix={}/log", dir.display()))
            .arg("-p")
            .arg(proxy.to_string())
            .arg("-f")
            .arg(&script)
            .arg(db)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
            if rate > 0.0 {
                cmd.arg("-R").arg(format!("{rate}"));
            }
            let child = cmd.spawn().expect("pgbench");
            tokio::time::sleep(Duration::from_secs(3)).await;
            return Load {
                stop,
                samples,
                workers,
                pgbench: Some((child, dir)),
            };
        }
        let every = (rate > 0.0).then(|| Duration::from_secs_f64(4.0 / rate));
        for w in 0..4i64 {
            let (stop, samples, db) = (stop.clone(), samples.clone(), db.to_string());
            workers.push(tokio::spawn(async move {
                let c = connect(proxy, &db).await;
                let st = c
                    .prepare("UPDATE items SET amount = amount + 1 WHERE id = $1")
                    .await
                    .unwrap();
                let mut i = w;
                // Spread over the interval, so the workers do not send together.
                let mut due = Instant::now() + every.unwrap_or_default() * w as u32 / 4;
                while !stop.load(Ordering::Relaxed) {
                    // Each worker its own rows (i ≡ w mod 4): workers that
                    // walked the same keys one step apart queued on each
                    // other's row locks, and a slow statement made the others
                    // wait behind it.
                    i += 4;
                    let t = match every {
                        // Behind (the last one ended after this one was due):
                        // it counts from when it was due. Otherwise from when
                        // the timer woke the worker (up to 1 ms late).
                        Some(every) => {
                            let t = match Instant::now() >= due {
                                true => due,
                                false => {
                                    tokio::time::sleep_until(due.into()).await;
                                    Instant::now()
                                }
                            };
                            due += every;
                            t
                        }
                        None => Instant::now(),
                    };
                    c.execute(&st, &[&(i * 104_729 % rows + 1)]).await.unwrap();
                    samples.lock().unwrap().push((t, t.elapsed()));
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        Load {
            stop,
            samples,
            workers,
            pgbench: None,
        }
    }

    /// pgbench's samples from its per-transaction log (`client transaction
    /// latency_us script epoch_s epoch_us [lag]`): each transaction from its
    /// start (its scheduled start under -R, whose latency counts from there).
    /// Stopped with SIGINT, pgbench may not write its last lines: those end
    /// after "verified", or just before it.
    fn pgbench_samples(
        mut child: std::process::Child,
        dir: &std::path::Path,
    ) -> Vec<(Instant, Duration)> {
        let _ = std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let _ = child.wait();
        let (now, wall) = (Instant::now(), std::time::SystemTime::now());
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            if !entry.file_name().to_string_lossy().starts_with("log") {
                continue;
            }
            for line in std::fs::read_to_string(entry.path())
                .unwrap_or_default()
                .lines()
            {
                let f: Vec<u64> = line
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect();
                if f.len() < 6 {
                    continue;
                }
                let latency = Duration::from_micros(f[2]);
                let end =
                    std::time::UNIX_EPOCH + Duration::from_secs(f[4]) + Duration::from_micros(f[5]);
                let ago = wall.duration_since(end).unwrap_or_default() + latency;
                out.push((now - ago, latency));
            }
        }
        out
    }

    /// Stops them; their latency before and after `started` (for `lasted`), as
    /// one line; with `mirror_only`, the p99 of that window apart (and left out
    /// of "during").
    async fn stop(
        self,
        started: Instant,
        lasted: Duration,
        mirror_only: Option<(Instant, Instant)>,
    ) -> String {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.unwrap();
        }
        let samples: Vec<(Instant, Duration)> = match self.pgbench {
            Some((child, dir)) => {
                let samples = Load::pgbench_samples(child, &dir);
                let _ = std::fs::remove_dir_all(&dir);
                samples
            }
            None => std::mem::take(&mut *self.samples.lock().unwrap()),
        };
        let (mut before, mut during, mut mirror) = (Vec::new(), Vec::new(), Vec::new());
        for (t, d) in samples.iter() {
            match mirror_only {
                _ if *t < started => before.push(*d),
                Some((from, to)) if *t >= from && *t < to => mirror.push(*d),
                _ => during.push(*d),
            }
        }
        if std::env::var("BENCH_SLICES").is_ok() {
            // p99 per 500 ms from the ALTER on, to see where the tail is.
            let mut slices: std::collections::BTreeMap<u64, Vec<Duration>> = Default::default();
            for (t, d) in samples.iter().filter(|(t, _)| *t >= started) {
                slices
                    .entry(((*t - started).as_millis() / 500) as u64)
                    .or_default()
                    .push(*d);
            }
            let line: Vec<String> = slices
                .into_values()
                .map(|mut v| {
                    v.sort();
                    format!("{:.1}", percentile(&v, 0.99).as_secs_f64() * 1e3)
                })
                .collect();
            eprintln!("p99 per 500 ms from the ALTER: {}", line.join(" "));
        }
        before.sort();
        during.sort();
        mirror.sort();
        let mirror = match mirror_only {
            Some((from, to)) => format!(
                "; backfill paused ({:.1} s, mirror only): p50/p99 {}/{} ms, p99 mirror/before {}",
                (to - from).as_secs_f64(),
                ms(percentile(&mirror, 0.5)),
                ms(percentile(&mirror, 0.99)),
                ratio(percentile(&mirror, 0.99), percentile(&before, 0.99)),
            ),
            None => String::new(),
        };
        let lasted = lasted.saturating_sub(mirror_only.map(|(f, t)| t - f).unwrap_or_default());
        format!(
            "workers: before p50/p99/max {}/{}/{} ms ({} queries in 3 s); during p50/p99/max {}/{}/{} ms ({:.0} q/s); p99 during/before {}",
            ms(percentile(&before, 0.5)),
            ms(percentile(&before, 0.99)),
            ms(percentile(&before, 1.0)),
            before.len(),
            ms(percentile(&during, 0.5)),
            ms(percentile(&during, 0.99)),
            ms(percentile(&during, 1.0)),
            during.len() as f64 / lasted.as_secs_f64(),
            ratio(percentile(&during, 0.99), percentile(&before, 0.99)),
        ) + &mirror
    }
}

/// Part 3: `ADD COLUMN token uuid DEFAULT gen_random_uuid()` on N rows: the
/// blocking ALTER directly, then through pgshift under the workers' load, from
/// the ALTER to its answer and to the fill's end.
async fn column_fill(pg: &Cluster, proxy: u16, rows: i64) {
    println!("## Column fill: {rows} rows, `ADD COLUMN token uuid DEFAULT gen_random_uuid()`, 4 workers through pgshift\n");
    let db = pg.create_database("rollout_fill").unwrap();
    let c = connect(pg.port, &db).await;
    fill(&c, rows).await;
    let add = "ALTER TABLE items ADD COLUMN token uuid DEFAULT gen_random_uuid()";
    let blocking = timed(&c, add).await;
    fill(&c, rows).await;
    let load = Load::start(proxy, &db, rows).await;
    let started = Instant::now();
    let via = connect(proxy, &db).await;
    via.batch_execute(add).await.expect("fill start");
    let answered = started.elapsed();
    wait_phase(&c, "finished", Duration::from_secs(3600)).await;
    let finished = started.elapsed();
    let workers = load.stop(started, finished, None).await;
    let missing: i64 = c
        .query_one("SELECT count(*) FROM items WHERE token IS NULL", &[])
        .await
        .unwrap()
        .get(0);
    if missing > 0 {
        // What the fill left: each row's version against the fill's boundary.
        let left = "SELECT 'row ' || id || ' xmin ' || xmin FROM items WHERE token IS NULL \
                    UNION ALL SELECT 'fill_before ' || fill_before || ' ' || phase FROM pgshift.rollouts";
        for m in c.simple_query(left).await.unwrap() {
            if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
                eprintln!("{}", r.get(0).unwrap_or_default());
            }
        }
    }
    assert_eq!(missing, 0, "rows the fill left NULL");
    let per_s = |d: Duration| format!("{:.0}", rows as f64 / d.as_secs_f64());
    println!("| what | time ms | rows/s | vs blocking ALTER |");
    println!("|---|---|---|---|");
    println!(
        "| blocking ALTER directly (no load) | {} | {} | 1.00x |",
        ms(blocking),
        per_s(blocking)
    );
    println!("| through pgshift: ALTER answered | {} | | |", ms(answered));
    println!(
        "| through pgshift: fill finished (under load) | {} | {} | {} |",
        ms(finished),
        per_s(finished),
        ratio(finished, blocking)
    );
    println!();
    println!("{workers}");
    println!();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::var("RUST_LOG").is_ok() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let full = std::env::args().any(|a| a == "--bench");
    let rows: i64 = std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 1_000_000 } else { 20_000 });
    // BENCH_LATENCY_FACTORS: the backfill once per value (0: no governor).
    let factors: Vec<f64> = std::env::var("BENCH_LATENCY_FACTORS")
        .unwrap_or_else(|_| "0 2".into())
        .split_whitespace()
        .map(|f| f.parse().expect("BENCH_LATENCY_FACTORS: numbers"))
        .collect();
    // BENCH_PG_SETTINGS = "name=value ...": server settings over the test
    // cluster's (shared_buffers=64MB, fsync off).
    let options = ClusterOptions {
        settings: std::env::var("BENCH_PG_SETTINGS")
            .unwrap_or_default()
            .split_whitespace()
            .map(String::from)
            .collect(),
        ..ClusterOptions::default()
    };
    let pg = Cluster::start(&options).expect("start postgres");
    if std::env::var("BENCH_SKIP_OVERHEAD").is_err() {
        overhead(&pg, start_proxy(pg.port, 2.0), rows).await;
    }
    for factor in factors {
        backfill(&pg, start_proxy(pg.port, factor), rows, factor).await;
    }
    if std::env::var("BENCH_SKIP_FILL").is_err() {
        column_fill(&pg, start_proxy(pg.port, 2.0), rows).await;
    }
}

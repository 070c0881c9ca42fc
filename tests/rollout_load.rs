//! The rollout under load, checked row by row: `ALTER COLUMN amount TYPE bigint`
//! rolls out on a table of a million rows (`PGSHIFT_LOAD_ROWS` to change it) while
//! writers of every kind write: simple-protocol UPDATEs of an expression,
//! prepared UPDATEs, multi-row INSERTs, INSERT … ON CONFLICT DO UPDATE, COPY, all
//! through pgshift, and a writer connected to Postgres directly. Each writer owns
//! its rows (existing ids by residue, new ids in a range of its own) and logs what
//! it committed, computed on its side; after the cutover every row must hold what
//! its log says (or its first value, where nobody wrote), in the new column and,
//! mirrored back, in the old one, and no row may be missing or extra. Any error a
//! writer gets fails the test.

mod common;

use common::rollouts::{start, wait_phase};
use common::scenario::direct;
use common::{connect, fresh_db, Proxy};
use futures_util::SinkExt;
use pgshift::rollout::{self, Request};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// Writers, one of each kind; writer `k` owns the existing ids `≡ k (mod WRITERS)`.
const WRITERS: i64 = 6;
/// Where writer `k`'s new rows start: `NEW_IDS + k * NEW_IDS`.
const NEW_IDS: i64 = 100_000_000;

fn rows() -> i64 {
    std::env::var("PGSHIFT_LOAD_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// A row's value before anyone wrote it.
fn first(id: i64) -> i64 {
    id % 1000
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// `UPDATE … SET amount = amount + 3`, simple protocol.
    Simple,
    /// A prepared `UPDATE … SET amount = $2`.
    Prepared,
    /// Two new rows per INSERT.
    MultiInsert,
    /// INSERT … ON CONFLICT DO UPDATE of an expression of the old value, or a new row.
    Upsert,
    /// COPY of 50 new rows.
    Copy,
    /// `UPDATE … SET amount = amount - 1`, connected to Postgres directly.
    Direct,
}

const KINDS: [Kind; WRITERS as usize] = [
    Kind::Simple,
    Kind::Prepared,
    Kind::MultiInsert,
    Kind::Upsert,
    Kind::Copy,
    Kind::Direct,
];

/// What a writer committed: each row's last value, and its slowest write.
struct Log {
    kind: Kind,
    values: HashMap<i64, i64>,
    writes: u64,
    slowest: Duration,
}

impl Log {
    fn now(&self, id: i64) -> i64 {
        self.values.get(&id).copied().unwrap_or_else(|| first(id))
    }
}

async fn write(k: i64, conn: String, rows: i64, stop: Arc<AtomicBool>) -> Log {
    let kind = KINDS[k as usize];
    let c = connect(&conn).await;
    let update = c
        .prepare("UPDATE orders SET amount = $2 WHERE id = $1")
        .await
        .unwrap();
    let mut log = Log {
        kind,
        values: HashMap::new(),
        writes: 0,
        slowest: Duration::ZERO,
    };
    let mut fresh = NEW_IDS + k * NEW_IDS;
    let mut i: i64 = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        // An existing row of this writer's, spread over the table.
        let id = ((i * 7919 + k * 104_729) % (rows / WRITERS)) * WRITERS + k;
        let id = if id == 0 { WRITERS } else { id };
        let began = Instant::now();
        let result = match kind {
            Kind::Simple => {
                let v = log.now(id) + 3;
                c.batch_execute(&format!(
                    "UPDATE orders SET amount = amount + 3 WHERE id = {id}"
                ))
                .await
                .map(|()| {
                    log.values.insert(id, v);
                })
            }
            Kind::Prepared => {
                let v = (i * 31 % 100_000) as i32;
                c.execute(&update, &[&id, &v]).await.map(|n| {
                    assert_eq!(n, 1, "UPDATE of {id}");
                    log.values.insert(id, v as i64);
                })
            }
            Kind::MultiInsert => {
                let (a, b) = (fresh, fresh + 1);
                fresh += 2;
                let (va, vb) = (i % 5000, (i + 1) % 5000);
                c.batch_execute(&format!(
                    "INSERT INTO orders (id, amount, payload) VALUES ({a}, {va}, 'multi'), ({b}, {vb}, 'multi')"
                ))
                .await
                .map(|()| {
                    log.values.insert(a, va);
                    log.values.insert(b, vb);
                })
            }
            Kind::Upsert => {
                let target = match i % 2 {
                    0 => id,
                    _ => {
                        fresh += 1;
                        fresh
                    }
                };
                let v = match log.values.contains_key(&target) || target < NEW_IDS {
                    true => log.now(target) * 2 % 100_000 + 5,
                    false => 5,
                };
                c.batch_execute(&format!(
                    "INSERT INTO orders (id, amount, payload) VALUES ({target}, 5, 'upsert') \
                     ON CONFLICT (id) DO UPDATE SET amount = orders.amount * 2 % 100000 + excluded.amount"
                ))
                .await
                .map(|()| {
                    log.values.insert(target, v);
                })
            }
            Kind::Copy => {
                let from = fresh;
                fresh += 50;
                let data: String = (from..from + 50)
                    .map(|n| format!("{n}\t{}\tcopied\n", n % 7000))
                    .collect();
                async {
                    let sink = c
                        .copy_in("COPY orders (id, amount, payload) FROM STDIN")
                        .await?;
                    futures_util::pin_mut!(sink);
                    sink.send(bytes::Bytes::from(data)).await?;
                    sink.finish().await
                }
                .await
                .map(|n| {
                    assert_eq!(n, 50);
                    for n in from..from + 50 {
                        log.values.insert(n, n % 7000);
                    }
                })
            }
            Kind::Direct => {
                let v = log.now(id) - 1;
                c.batch_execute(&format!(
                    "UPDATE orders SET amount = amount - 1 WHERE id = {id}"
                ))
                .await
                .map(|()| {
                    log.values.insert(id, v);
                })
            }
        };
        if let Err(e) = result {
            panic!("{kind:?} writer, write {i}: {e:?}");
        }
        log.writes += 1;
        log.slowest = log.slowest.max(began.elapsed());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    log
}

/// Every row's (amount, old column) checked against the logs; returns the rows read.
async fn check(admin: &Client, rows: i64, logs: &[Log]) -> usize {
    let mut expected: HashMap<i64, i64> = (1..=rows).map(|id| (id, first(id))).collect();
    for log in logs {
        for (id, v) in &log.values {
            expected.insert(*id, *v);
        }
    }
    let read = admin
        .query(
            "SELECT id, amount, amount__pgshift_old::int8 FROM orders ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let mut wrong = vec![];
    for row in &read {
        let (id, new, old): (i64, i64, Option<i64>) = (row.get(0), row.get(1), row.get(2));
        match expected.remove(&id) {
            Some(v) if v == new && old == Some(v) => {}
            want => wrong.push(format!(
                "id {id}: amount {new}, old column {old:?}, logged {want:?}"
            )),
        }
    }
    let missing: Vec<_> = expected.keys().take(10).collect();
    assert!(
        wrong.is_empty() && missing.is_empty(),
        "{} wrong rows, first {:?}; {} missing, first {missing:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)],
        expected.len()
    );
    read.len()
}

#[tokio::test]
async fn a_million_rows_roll_out_under_every_kind_of_writer_and_every_write_is_kept() {
    let rows = rows();
    let db = fresh_db("rollout_load");
    let admin = connect(&direct(&db)).await;
    let began = Instant::now();
    admin
        .batch_execute(&format!(
            "CREATE TABLE orders (id bigint PRIMARY KEY, amount int NOT NULL, payload text);
             INSERT INTO orders SELECT g, g % 1000, repeat('p', 80) FROM generate_series(1, {rows}) g;"
        ))
        .await
        .unwrap();
    admin.batch_execute("VACUUM ANALYZE orders").await.unwrap();
    let filled = began.elapsed();
    let proxy = Proxy::start_with(|c| {
        c.ddl.lock_timeout_ms = 200;
        c.ddl.retry_deadline_ms = 60_000;
    });
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|k| {
            let conn = match KINDS[k as usize] {
                Kind::Direct => direct(&db),
                _ => proxy.conn_str(&db, "postgres"),
            };
            tokio::spawn(write(k, conn, rows, stop.clone()))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let id = start(
        &proxy.conn_str(&db, "postgres"),
        "ALTER TABLE orders ALTER COLUMN amount TYPE bigint",
    )
    .await;
    let answered = started.elapsed();
    wait_phase(&admin, id, "verified", Duration::from_secs(600)).await;
    let verified = started.elapsed();
    rollout::request(&admin, id, Request::Cutover)
        .await
        .unwrap();
    wait_phase(&admin, id, "cut_over", Duration::from_secs(60)).await;
    let cut_over = started.elapsed();
    // Writes go on after the cutover, into the new column and back into the old.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    let mut logs = vec![];
    for w in writers {
        logs.push(w.await.unwrap());
    }
    for log in &logs {
        assert!(log.writes > 20, "{:?} wrote {} times", log.kind, log.writes);
    }
    let read = check(&admin, rows, &logs).await;
    let new_type: String = admin
        .query_one(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = 'orders'::regclass AND attname = 'amount'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(new_type, "bigint");
    eprintln!(
        "{rows} rows filled in {filled:?}; the ALTER answered in {answered:?}, verified at {verified:?}, \
         cut over at {cut_over:?}; {read} rows checked"
    );
    for log in &logs {
        eprintln!(
            "{:?}: {} writes, slowest {:?}",
            log.kind, log.writes, log.slowest
        );
    }
}

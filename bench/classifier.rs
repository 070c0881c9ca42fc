//! Micro-benchmark of the statement classifier: the hot-path sniff every Query and
//! Parse pays, and the pg_query parse (cold and cached) only DDL candidates pay.
//!
//! `cargo bench --bench classifier` (under `cargo test` it runs a few iterations only).

use pgshift::sql::analysis::{analyze, analyze_shared, ParseLimits};
use pgshift::sql::sniff::may_be_ddl;
use std::hint::black_box;
use std::time::{Duration, Instant};

const PASSTHROUGH: &[&str] = &[
    "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
    "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP);",
    "BEGIN;",
    "COMMIT",
    "/* app=web */ SELECT * FROM users WHERE email = 'a;b' AND id = 1",
    "WITH x AS (SELECT 1) SELECT * FROM x",
    "DELETE FROM sessions WHERE expires < now()",
    // Several statements: the sniff reads past the first one.
    "BEGIN; UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2; COMMIT;",
    "SET application_name = 'web'; SELECT $q$;$q$, E'it\\'s', \"a;b\" FROM t /* x; */ -- y;\n",
];

const DDL: &[&str] = &[
    "CREATE INDEX items_qty ON items (qty)",
    "ALTER TABLE items ADD CONSTRAINT items_owner_fk FOREIGN KEY (owner_id) REFERENCES owners (id)",
    "ALTER TABLE \"Items\" ALTER COLUMN \"Qty\" SET NOT NULL",
    "BEGIN; SELECT 'migration 12'; ALTER TABLE items ADD COLUMN note text; COMMIT;",
];

fn per_op(iters: u64, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed().as_nanos() as f64 / iters as f64
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let scale: u64 = if full { 1 } else { 1_000 };
    println!("statement classifier, ns per statement (lower is better)");
    for sql in PASSTHROUGH {
        let ns = per_op(2_000_000 / scale, || {
            black_box(may_be_ddl(black_box(sql.as_bytes())));
        });
        assert!(!may_be_ddl(sql.as_bytes()), "{sql}");
        println!("  sniff, passthrough  {ns:>9.1}  {sql}");
    }
    // The proxy's path: a parser thread on a miss, this thread's cache on a hit.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let limits = ParseLimits {
        max_bytes: 1 << 20,
        timeout: Duration::from_secs(5),
        cache_bytes: 16 << 20,
    };
    for sql in DDL {
        let sniff = per_op(2_000_000 / scale, || {
            black_box(may_be_ddl(black_box(sql.as_bytes())));
        });
        let parse = per_op(20_000 / scale, || {
            black_box(analyze(black_box(sql)).ok());
        });
        let cached = runtime.block_on(async {
            analyze_shared(sql, &limits).await;
            let iters = 2_000_000 / scale;
            let start = Instant::now();
            for _ in 0..iters {
                black_box(analyze_shared(black_box(sql), &limits).await);
            }
            start.elapsed().as_nanos() as f64 / iters as f64
        });
        println!("  sniff {sniff:>7.1}  parse+rules {parse:>9.1}  cached {cached:>7.1}  {sql}");
    }
}

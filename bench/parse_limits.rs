//! Parse time of 1 MiB of SQL by shape, on a parser thread, through `analyze` (the
//! nesting bound, pg_query, the rules): the numbers behind `ddl.max_parse_bytes` and
//! `ddl.parse_timeout_ms`.
//!
//! `cargo bench --bench parse_limits` (under `cargo test` it runs 64 KiB inputs).

use pgshift::sql::analysis::analyze;
use pgshift::sql::parser::run_blocking;
use std::time::Instant;

/// `unit(i)` repeated with `sep` until the text reaches `bytes`.
fn fill(head: &str, bytes: usize, sep: &str, unit: impl Fn(usize) -> String) -> String {
    let mut sql = head.to_string();
    let mut i = 0;
    while sql.len() < bytes {
        if i > 0 {
            sql.push_str(sep);
        }
        sql.push_str(&unit(i));
        i += 1;
    }
    sql
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let bytes = if full { 1 << 20 } else { 64 << 10 };
    let chain = |terms: usize| format!("1{}", "+1".repeat(terms));
    let shapes: Vec<(&str, String)> = vec![
        (
            "CREATE INDEX … WHERE script",
            fill("", bytes, "\n", |i| {
                format!("CREATE INDEX i{i} ON t (c{i}) WHERE c{i} > {i};")
            }),
        ),
        (
            "ALTER TABLE, one subcommand each",
            fill("ALTER TABLE t ", bytes, ", ", |i| {
                format!("ADD COLUMN c{i} int DEFAULT {i}")
            }),
        ),
        (
            "CREATE TABLE, many columns",
            fill("CREATE TABLE t (id int", bytes, "", |i| {
                format!(", c{i} text NOT NULL DEFAULT 'x'")
            }) + ")",
        ),
        (
            "view: wide target list",
            fill("CREATE VIEW v AS SELECT ", bytes, ", ", |_| "1".into()),
        ),
        (
            "view: CASE branches",
            fill("CREATE VIEW v AS SELECT CASE ", bytes, " ", |i| {
                format!("WHEN c = {i} THEN 1")
            }) + " END",
        ),
        (
            "index predicate: IN list",
            fill("CREATE INDEX i ON t (c) WHERE c IN (", bytes, ", ", |i| {
                i.to_string()
            }) + ")",
        ),
        (
            "comment: one string",
            format!("COMMENT ON TABLE t IS '{}'", "x".repeat(bytes)),
        ),
        (
            "view: 4,990-term sums (about the deepest allowed)",
            fill("CREATE VIEW v AS SELECT ", bytes, ", ", |_| chain(4_990)),
        ),
        (
            "view: one sum nested past the bound",
            format!("CREATE VIEW v AS SELECT {}", chain(bytes / 2)),
        ),
    ];
    println!(
        "analyze on a parser thread, {} KiB of SQL per shape",
        bytes >> 10
    );
    for (name, sql) in shapes {
        let len = sql.len();
        let started = Instant::now();
        let result = run_blocking(len, move || analyze(&sql).map(|a| a.statements.len()));
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let outcome = match result {
            Ok(Ok(n)) => format!("{n} statements"),
            Ok(Err(e)) => e.to_string().chars().take(70).collect(),
            Err(e) => e.to_string(),
        };
        println!("  {ms:>9.1} ms  {name} ({len} bytes): {outcome}");
    }
}

//! During a rollout the table has a column of pgshift's (the new one, then the
//! old one under another name). Through pgshift, results must look as they do
//! directly: before the cutover as on a copy of the table left alone, after it
//! as on a copy whose column was changed by the blocking ALTER. Each script runs
//! through pgshift on the table under rollout and directly on the copy, in raw
//! protocol; the transcripts must be equal message by message (a column's table
//! oid and attnum aside: the copy is another table).

mod common;

use common::raw::{frame, Raw};
use common::rollouts::{proxy, setup, start, wait_phase};
use common::{fresh_db, psql_at};
use pgshift::rollout::{self, Request};
use std::time::Duration;

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut b = cstr(name);
    b.extend(cstr(sql));
    b.extend(0u16.to_be_bytes());
    frame(b'P', &b)
}

/// Bind of `stmt` to `portal` with text parameters; results in `format`.
fn bind(portal: &str, stmt: &str, params: &[&str], format: u16) -> Vec<u8> {
    let mut b = cstr(portal);
    b.extend(cstr(stmt));
    b.extend(0u16.to_be_bytes());
    b.extend((params.len() as u16).to_be_bytes());
    for p in params {
        b.extend((p.len() as i32).to_be_bytes());
        b.extend(p.as_bytes());
    }
    b.extend(1u16.to_be_bytes());
    b.extend(format.to_be_bytes());
    frame(b'B', &b)
}

fn describe(kind: u8, name: &str) -> Vec<u8> {
    let mut b = vec![kind];
    b.extend(cstr(name));
    frame(b'D', &b)
}

fn execute(portal: &str, rows: i32) -> Vec<u8> {
    let mut b = cstr(portal);
    b.extend(rows.to_be_bytes());
    frame(b'E', &b)
}

fn sync() -> Vec<u8> {
    frame(b'S', &[])
}

/// The scripts, on table `t`, each with the count of ReadyForQuery it gets;
/// `id` for the row it inserts.
fn scripts(t: &str, id: i64) -> Vec<(Vec<u8>, usize)> {
    let star = format!("SELECT * FROM {t} WHERE id = $1");
    let some = format!("SELECT * FROM {t} WHERE id <= $1 ORDER BY id");
    let mut out = vec![];
    // Simple queries: `*`, `t.*` next to an expression, TABLE, RETURNING *.
    out.push((
        common::raw::query(&format!(
            "SELECT * FROM {t} WHERE id <= 3 ORDER BY id; \
             SELECT o.*, 1 AS one, o.amount AS again FROM {t} o WHERE id = 1; \
             TABLE {t} ORDER BY id LIMIT 2; \
             SELECT * FROM {t} WHERE id BETWEEN 6 AND 8 ORDER BY id; \
             INSERT INTO {t} (id, amount, shadow, note) VALUES ({id}, 5, 5, 'r') RETURNING *; \
             UPDATE {t} SET amount = amount + 1 WHERE id = 2 RETURNING *, amount"
        )),
        1,
    ));
    // Unnamed statements, each with a Describe of its portal, pipelined (libpq,
    // psycopg); text and binary results.
    let mut b = vec![];
    // Row 7 is 3 MB long: it goes through a file.
    for (i, format) in [(1, 0), (2, 1), (7, 1), (3, 0), (7, 0)] {
        b.extend(parse("", &star));
        b.extend(bind("", "", &[&i.to_string()], format));
        b.extend(describe(b'P', ""));
        b.extend(execute("", 0));
        b.extend(sync());
    }
    out.push((b, 5));
    // A named statement described once, then executed without a Describe
    // (tokio-postgres, PgJDBC past prepareThreshold), in binary; a portal read in
    // pieces (PortalSuspended between).
    let mut b = parse("s1", &some);
    b.extend(describe(b'S', "s1"));
    b.extend(sync());
    b.extend(bind("", "s1", &["2"], 1));
    b.extend(execute("", 0));
    b.extend(sync());
    b.extend(bind("p", "s1", &["3"], 0));
    b.extend(execute("p", 1));
    b.extend(execute("p", 1));
    b.extend(execute("p", 0));
    b.extend(sync());
    out.push((b, 3));
    // A statement described in one batch and run in the next, between them a
    // simple query's result of another shape.
    let mut b = parse("s2", &star);
    b.extend(describe(b'S', "s2"));
    b.extend(sync());
    b.extend(common::raw::query(&format!(
        "SELECT id FROM {t} WHERE id = 1"
    )));
    b.extend(bind("", "s2", &["1"], 0));
    b.extend(execute("", 0));
    b.extend(sync());
    out.push((b, 3));
    out
}

/// A message as compared: a RowDescription without each column's table oid and
/// attnum.
fn comparable((tag, body): &(u8, Vec<u8>)) -> (u8, Vec<u8>) {
    if *tag != b'T' {
        return (*tag, body.clone());
    }
    let mut out = body[..2].to_vec();
    let mut at = 2;
    for _ in 0..u16::from_be_bytes([body[0], body[1]]) {
        let end = at + body[at..].iter().position(|&b| b == 0).unwrap() + 1;
        out.extend(&body[at..end]);
        out.extend([0; 6]);
        out.extend(&body[end + 6..end + 18]);
        at = end + 18;
    }
    (*tag, out)
}

async fn transcript(addr: std::net::SocketAddr, db: &str, t: &str, id: i64) -> Vec<(u8, Vec<u8>)> {
    let (mut raw, _) = Raw::startup(addr, "postgres", db).await;
    let mut all = vec![];
    for (script, turns) in scripts(t, id) {
        raw.send(&script).await;
        for _ in 0..turns {
            all.extend(raw.read_until(b'Z').await.iter().map(comparable));
        }
    }
    all
}

fn show(msgs: &[(u8, Vec<u8>)]) -> String {
    msgs.iter()
        .map(|(t, b)| {
            format!(
                "{}:{}\n",
                *t as char,
                String::from_utf8_lossy(&b[..b.len().min(300)]).replace('\0', "|")
            )
        })
        .collect()
}

fn assert_same(through: &[(u8, Vec<u8>)], directly: &[(u8, Vec<u8>)], when: &str) {
    assert!(
        through.iter().all(|m| m.0 != b'E') && directly.iter().all(|m| m.0 != b'E'),
        "{when}: errors\nthrough pgshift:\n{}\ndirectly:\n{}",
        show(through),
        show(directly)
    );
    assert!(
        through == directly,
        "{when}: results differ\nthrough pgshift:\n{}\ndirectly:\n{}",
        show(through),
        show(directly)
    );
}

#[tokio::test]
async fn results_do_not_show_pgshifts_columns() {
    let db = fresh_db("rollout_hidden");
    let admin = setup(&db).await;
    admin
        .batch_execute(
            "UPDATE orders SET note = repeat('x', 3000000) WHERE id = 7;
             CREATE TABLE copy (id bigint PRIMARY KEY, amount int NOT NULL DEFAULT 7, shadow int, note text);
             INSERT INTO copy SELECT * FROM orders;",
        )
        .await
        .unwrap();
    let proxy = proxy();
    let direct_addr: std::net::SocketAddr = common::pg().tcp_address().parse().unwrap();
    let id = start(
        &proxy.conn_str(&db, "postgres"),
        "ALTER TABLE orders ALTER COLUMN amount TYPE bigint",
    )
    .await;

    let through = transcript(proxy.addr, &db, "orders", 100_001).await;
    let directly = transcript(direct_addr, &db, "copy", 100_001).await;
    assert!(through.iter().any(|m| m.0 == b'D'), "no rows");
    assert_same(&through, &directly, "before the cutover");

    wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    rollout::request(&admin, id, Request::Cutover)
        .await
        .unwrap();
    wait_phase(&admin, id, "cut_over", Duration::from_secs(30)).await;
    admin
        .batch_execute("ALTER TABLE copy ALTER COLUMN amount TYPE bigint")
        .await
        .unwrap();
    let through = transcript(proxy.addr, &db, "orders", 100_002).await;
    let directly = transcript(direct_addr, &db, "copy", 100_002).await;
    assert_same(&through, &directly, "after the cutover");

    // psql prints what it is given: the same table as directly after the ALTER.
    let query = "SELECT * FROM {} WHERE id IN (1, 2, 100001) ORDER BY id;";
    let (ok, through, err) = psql_at(proxy.port(), &db, &query.replace("{}", "orders"));
    assert!(ok, "{err}");
    let (ok, directly, err) = psql_at(direct_addr.port(), &db, &query.replace("{}", "copy"));
    assert!(ok, "{err}");
    assert_eq!(through, directly);
    assert!(
        through.contains("id   | amount | shadow | note"),
        "{through}"
    );
}

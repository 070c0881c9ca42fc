//! What pgshift notes of a client's Describes must pair with the server's answers
//! however the client pipelines them: a wrong pairing would have pgshift prepare
//! a statement again to return a shape the client never asked for. Raw protocol.

mod common;

use common::fresh_db;
use common::raw::{frame, Raw};
use common::rollouts::{proxy, setup, start, wait_phase};
use std::time::Duration;

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn parse(name: &str, sql: &str, params: &[u32]) -> Vec<u8> {
    let mut b = cstr(name);
    b.extend(cstr(sql));
    b.extend((params.len() as u16).to_be_bytes());
    for p in params {
        b.extend(p.to_be_bytes());
    }
    frame(b'P', &b)
}

fn with_name(tag: u8, kind: u8, name: &str) -> Vec<u8> {
    let mut b = vec![kind];
    b.extend(cstr(name));
    frame(tag, &b)
}

/// Bind of `stmt` to the unnamed portal with text parameters, Describe of the
/// portal, Execute, Sync.
fn run(stmt: &str, params: &[&str]) -> Vec<u8> {
    bind_execute(stmt, params, true)
}

/// Bind of `stmt` to the unnamed portal, Execute, Sync (no Describe).
fn bes(stmt: &str, params: &[&str]) -> Vec<u8> {
    bind_execute(stmt, params, false)
}

fn bind_execute(stmt: &str, params: &[&str], describe: bool) -> Vec<u8> {
    let mut b = cstr("");
    b.extend(cstr(stmt));
    b.extend(0u16.to_be_bytes());
    b.extend((params.len() as u16).to_be_bytes());
    for p in params {
        b.extend((p.len() as i32).to_be_bytes());
        b.extend(p.as_bytes());
    }
    b.extend(0u16.to_be_bytes());
    let mut out = frame(b'B', &b);
    if describe {
        out.extend(with_name(b'D', b'P', ""));
    }
    let mut e = cstr("");
    e.extend(0i32.to_be_bytes());
    out.extend(frame(b'E', &e));
    out.extend(frame(b'S', &[]));
    out
}

/// Column names of the RowDescription in `msgs`, and the error messages.
fn columns_and_errors(msgs: &[(u8, Vec<u8>)]) -> (Vec<String>, Vec<String>) {
    let mut columns = vec![];
    if let Some((_, body)) = msgs.iter().find(|m| m.0 == b'T') {
        let mut rest = &body[2..];
        for _ in 0..u16::from_be_bytes([body[0], body[1]]) {
            let end = rest.iter().position(|&b| b == 0).unwrap();
            columns.push(String::from_utf8_lossy(&rest[..end]).into_owned());
            rest = &rest[end + 1 + 18..];
        }
    }
    let errors = msgs
        .iter()
        .filter(|m| m.0 == b'E')
        .map(|m| String::from_utf8_lossy(&m.1).replace('\0', "|"))
        .collect();
    (columns, errors)
}

#[tokio::test]
async fn a_statement_redefined_in_a_pipeline_is_not_renewed_to_its_old_shape() {
    let db = fresh_db("rollout_pairing");
    let admin = setup(&db).await;
    let proxy = proxy();
    let (mut raw, _) = Raw::startup(proxy.addr, "postgres", &db).await;
    // Turn 1 describes `s`; turn 2, sent before turn 1's answer, closes it and
    // prepares another text under the same name (never described).
    let mut out = parse("s", "SELECT id, amount FROM orders WHERE id = $1", &[20]);
    out.extend(with_name(b'D', b'S', "s"));
    out.extend(frame(b'S', &[]));
    out.extend(with_name(b'C', b'S', "s"));
    out.extend(parse("s", "SELECT * FROM orders WHERE id = $1", &[20]));
    out.extend(frame(b'S', &[]));
    raw.send(&out).await;
    raw.read_until(b'Z').await;
    raw.read_until(b'Z').await;
    raw.send(&run("s", &["1"])).await;
    let (before, errors) = columns_and_errors(&raw.read_until(b'Z').await);
    assert_eq!(before, ["id", "amount", "shadow", "note"], "{errors:?}");

    let id = start(
        &proxy.conn_str(&db, "postgres"),
        "ALTER TABLE orders ALTER COLUMN amount TYPE bigint",
    )
    .await;
    wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    raw.send(&run("s", &["1"])).await;
    let (after, errors) = columns_and_errors(&raw.read_until(b'Z').await);
    // Renewed to the four columns the portal's Describe told the client, not to the
    // two of the statement the name held before.
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(after, before);
}

/// A turn whose Bind is on its way when the cutover's lock window opens (here a
/// client that sends each Bind in two halves, 20 ms apart) must not reach Postgres
/// behind the ALTER: its statement would fail after it with 0A000 "cached plan
/// must not change result type". The window waits for such turns first.
#[tokio::test]
async fn a_turn_already_on_its_way_finishes_before_the_cutover() {
    use pgshift::rollout::{self, Request};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let db = fresh_db("rollout_pairing_inflight");
    let admin = setup(&db).await;
    let proxy = proxy();
    let id = start(
        &proxy.conn_str(&db, "postgres"),
        "ALTER TABLE orders ALTER COLUMN amount TYPE bigint",
    )
    .await;
    wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    let (mut raw, _) = Raw::startup(proxy.addr, "postgres", &db).await;
    let mut out = parse("s", "SELECT id, amount FROM orders WHERE id = $1", &[20]);
    out.extend(with_name(b'D', b'S', "s"));
    out.extend(frame(b'S', &[]));
    raw.send(&out).await;
    raw.read_until(b'Z').await;
    let stop = Arc::new(AtomicBool::new(false));
    let reader = reader(raw, stop.clone(), |turn| {
        let bytes = run("s", &[&(1 + turn % 1000).to_string()]);
        // The Bind's header and part of its portal/statement names, then the rest.
        (vec![bytes[..9].to_vec(), bytes[9..].to_vec()], 1)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    rollout::request(&admin, id, Request::Cutover)
        .await
        .unwrap();
    wait_phase(&admin, id, "cut_over", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (turns, errors) = reader.await.unwrap();
    assert!(turns > 10, "{turns} turns");
    assert!(errors.is_empty(), "{turns} turns: {errors:?}");
}

/// Sends, until `stop`, what `next(turn)` gives (pieces 20 ms apart, that many
/// turns) and reads the answers; returns the turns and the errors.
fn reader(
    mut raw: Raw,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    next: impl Fn(u32) -> (Vec<Vec<u8>>, u32) + Send + 'static,
) -> tokio::task::JoinHandle<(u32, Vec<String>)> {
    tokio::spawn(async move {
        let (mut turns, mut errors) = (0u32, vec![]);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let (pieces, answers) = next(turns);
            for (i, piece) in pieces.iter().enumerate() {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                raw.send(piece).await;
            }
            for _ in 0..answers {
                errors.extend(columns_and_errors(&raw.read_until(b'Z').await).1);
            }
            turns += answers;
        }
        (turns, errors)
    })
}

/// The command tags of `msgs`' CommandComplete messages.
fn tags(msgs: &[(u8, Vec<u8>)]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m.0 == b'C')
        .map(|m| String::from_utf8_lossy(m.1.strip_suffix(&[0]).unwrap_or(&m.1)).into_owned())
        .collect()
}

/// INSERT, UPDATE and DELETE … RETURNING prepared before the rollout, renewed
/// after the cutover (wrapped in a CTE that ends with `SELECT n`), keep their own
/// command tags, also when pipelined behind a failed Execute.
#[tokio::test]
async fn renewed_dml_statements_keep_their_command_tags() {
    use pgshift::rollout::{self, Request};
    let db = fresh_db("rollout_pairing_tags");
    let admin = setup(&db).await;
    let proxy = proxy();
    let (mut raw, _) = Raw::startup(proxy.addr, "postgres", &db).await;
    let statements = [
        (
            "u",
            "UPDATE orders SET note = note WHERE id = $1 RETURNING id, amount",
            20,
        ),
        (
            "i",
            "INSERT INTO orders (amount, shadow) VALUES ($1, $1) RETURNING amount",
            23,
        ),
        ("d", "DELETE FROM orders WHERE id = $1 RETURNING amount", 20),
    ];
    let mut out = vec![];
    for (name, sql, param) in statements {
        out.extend(parse(name, sql, &[param]));
        out.extend(with_name(b'D', b'S', name));
    }
    out.extend(frame(b'S', &[]));
    raw.send(&out).await;
    let (_, errors) = columns_and_errors(&raw.read_until(b'Z').await);
    assert!(errors.is_empty(), "{errors:?}");
    let direct = [
        run("u", &["1"]),
        run("i", &["5"]),
        run("u", &["x"]),
        run("d", &["2"]),
    ]
    .concat();
    raw.send(&direct).await;
    let mut before = vec![];
    for _ in 0..4 {
        before.extend(tags(&raw.read_until(b'Z').await));
    }
    assert_eq!(before, ["UPDATE 1", "INSERT 0 1", "DELETE 1"]);

    let id = start(
        &proxy.conn_str(&db, "postgres"),
        "ALTER TABLE orders ALTER COLUMN amount TYPE bigint",
    )
    .await;
    wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    rollout::request(&admin, id, Request::Cutover)
        .await
        .unwrap();
    wait_phase(&admin, id, "cut_over", Duration::from_secs(30)).await;
    let again = [
        run("u", &["3"]),
        run("i", &["6"]),
        run("u", &["x"]),
        run("d", &["4"]),
    ]
    .concat();
    raw.send(&again).await;
    let mut after = vec![];
    let mut errors = vec![];
    for _ in 0..4 {
        let msgs = raw.read_until(b'Z').await;
        after.extend(tags(&msgs));
        errors.extend(columns_and_errors(&msgs).1);
    }
    assert_eq!(after, before, "{errors:?}");
    // Only the bad parameter fails (renewed, not left to fail with 0A000).
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("C22P02"), "{errors:?}");
}

/// A bare Sync is answered too: its ReadyForQuery must not make a later turn,
/// still on its way, look answered (a lock window would not wait for it).
/// Found by a hostile review.
#[test]
fn a_bare_sync_does_not_unpublish_a_turn_still_out() {
    use bytes::BytesMut;
    use pgshift::wire::activity::Activity;
    use pgshift::wire::scanner::{Flow, Scanner};
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;
    let changes = Arc::new(AtomicU64::new(5));
    let a = Arc::new(Activity::default());
    let mut up = Scanner::new(Flow::ClientToServer, 1 << 20);
    up.watch_changes(changes.clone());
    up.track_activity(a.clone());
    let mut down = Scanner::new(Flow::ServerToClient, 1 << 20);
    down.track_activity(a.clone());
    // Turn 1 (B E S), a bare Sync, then the first 9 bytes of turn 3's Bind.
    let mut c = BytesMut::new();
    c.extend_from_slice(&bes("s", &["1"]));
    c.extend_from_slice(&frame(b'S', &[]));
    c.extend_from_slice(&bes("s", &["2"])[..9]);
    up.scan(&mut c, 0).unwrap();
    assert!(a.before(6));
    // The server answers turn 1 and the bare Sync; turn 3 is still on its way.
    let mut s = BytesMut::new();
    s.extend_from_slice(&frame(b'C', b"SELECT 1\0"));
    s.extend_from_slice(&frame(b'Z', b"I"));
    s.extend_from_slice(&frame(b'Z', b"I"));
    down.scan(&mut s, 0).unwrap();
    assert!(
        a.before(6),
        "turn 3's Bind is on its way but the session looks idle"
    );
}

/// Tags after the renewal, where pairing is hard (found by a hostile review):
/// a Bind whose names arrive in a later read; a statement the client drops and
/// prepares again in SQL under the same name; a simple Query inside a failed
/// batch (Postgres skips it and sends no ReadyForQuery for it, so the count of
/// turns is off by one from there). No statement may get another one's tag.
#[tokio::test]
async fn tags_go_to_their_own_statements_however_the_client_sends() {
    use pgshift::rollout::{self, Request};
    let db = fresh_db("rollout_pairing_review");
    let admin = setup(&db).await;
    let proxy = proxy();
    let (mut raw, _) = Raw::startup(proxy.addr, "postgres", &db).await;
    let mut out = parse(
        "u",
        "UPDATE orders SET note = note WHERE id = $1 RETURNING id, amount",
        &[20],
    );
    out.extend(with_name(b'D', b'S', "u"));
    out.extend(parse(
        "i",
        "INSERT INTO orders (amount, shadow) VALUES ($1, $1) RETURNING amount",
        &[23],
    ));
    out.extend(with_name(b'D', b'S', "i"));
    out.extend(frame(b'S', &[]));
    raw.send(&out).await;
    raw.read_until(b'Z').await;
    let id = start(
        &proxy.conn_str(&db, "postgres"),
        "ALTER TABLE orders ALTER COLUMN amount TYPE bigint",
    )
    .await;
    wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    rollout::request(&admin, id, Request::Cutover)
        .await
        .unwrap();
    wait_phase(&admin, id, "cut_over", Duration::from_secs(30)).await;
    let mut report = vec![];
    // Renewal, and the tags as they should be.
    raw.send(&bes("u", &["3"])).await;
    let m = raw.read_until(b'Z').await;
    report.push(("renewed u", tags(&m), columns_and_errors(&m).1));
    raw.send(&bes("i", &["6"])).await;
    let m = raw.read_until(b'Z').await;
    report.push(("renewed i", tags(&m), columns_and_errors(&m).1));
    // (1) The Bind's header alone, then the rest.
    let bytes = bes("i", &["7"]);
    raw.send(&bytes[..5]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    raw.send(&bytes[5..]).await;
    let m = raw.read_until(b'Z').await;
    report.push((
        "i, Bind split after its header",
        tags(&m),
        columns_and_errors(&m).1,
    ));
    // (1b) The client deallocates `i` and prepares another text under its name in SQL,
    // then binds it through the protocol.
    raw.send(&common::raw::query(
        "DEALLOCATE i; PREPARE i(int) AS SELECT $1",
    ))
    .await;
    let m = raw.read_until(b'Z').await;
    report.push(("DEALLOCATE/PREPARE i", tags(&m), columns_and_errors(&m).1));
    raw.send(&bes("i", &["9"])).await;
    let m = raw.read_until(b'Z').await;
    report.push((
        "SQL-prepared i (a SELECT)",
        tags(&m),
        columns_and_errors(&m).1,
    ));
    // (2) B(u, bad) E Q S: the Bind fails, Postgres skips the Query (no 'Z' for it).
    let mut out = bes("u", &["x"]);
    out.truncate(out.len() - 5);
    out.extend(common::raw::query("SELECT 1"));
    out.extend(frame(b'S', &[]));
    raw.send(&out).await;
    let m = raw.read_until(b'Z').await;
    report.push((
        "failed batch with a Query in it",
        tags(&m),
        columns_and_errors(&m).1,
    ));
    raw.send(&bes("u", &["5"])).await;
    let m = raw.read_until(b'Z').await;
    report.push(("u after", tags(&m), columns_and_errors(&m).1));
    let mut out = parse("", "SELECT 42", &[]);
    out.extend(bes("", &[]));
    raw.send(&out).await;
    let m = raw.read_until(b'Z').await;
    report.push(("plain SELECT after", tags(&m), columns_and_errors(&m).1));
    let tags_of = |i: usize| report[i].1.clone();
    assert_eq!(tags_of(0), ["UPDATE 1"], "{report:?}");
    assert_eq!(tags_of(1), ["INSERT 0 1"], "{report:?}");
    assert_eq!(tags_of(2), ["INSERT 0 1"], "{report:?}");
    assert_eq!(tags_of(4), ["SELECT 1"], "{report:?}");
    // Past the lost count, the wrapper's own tag (never another statement's).
    assert!(
        tags_of(6) == ["UPDATE 1"] || tags_of(6) == ["SELECT 1"],
        "{report:?}"
    );
    assert_eq!(tags_of(7), ["SELECT 1"], "{report:?}");
}

/// The expand (ADD COLUMN of pgshift's new column) changes what `SELECT *`
/// returns: its lock window waits for turns already sent and holds the rest, as
/// the cutover's does. A client pipelining two turns at a time got 0A000 there
/// before (found by a hostile review).
#[tokio::test]
async fn select_star_statements_run_through_the_expand() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let db = fresh_db("rollout_pairing_expand");
    let _admin = setup(&db).await;
    let proxy = proxy();
    let (mut raw, _) = Raw::startup(proxy.addr, "postgres", &db).await;
    let mut out = parse("s", "SELECT * FROM orders WHERE id = $1", &[20]);
    out.extend(with_name(b'D', b'S', "s"));
    out.extend(frame(b'S', &[]));
    raw.send(&out).await;
    raw.read_until(b'Z').await;
    let stop = Arc::new(AtomicBool::new(false));
    let reader = reader(raw, stop.clone(), |turn| {
        let key = (1 + turn % 1000).to_string();
        (vec![[bes("s", &[&key]), bes("s", &[&key])].concat()], 2)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _id = start(
        &proxy.conn_str(&db, "postgres"),
        "ALTER TABLE orders ALTER COLUMN amount TYPE bigint",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (turns, errors) = reader.await.unwrap();
    assert!(turns > 20, "{turns} turns");
    assert!(errors.is_empty(), "{turns} turns: {errors:?}");
}

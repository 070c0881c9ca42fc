//! Twins on a partitioned table beyond its plain indexes. Its primary key
//! and unique constraint on the column under rollout (`id int` → `bigint` on
//! an events table partitioned by another column, the classic overflow):
//! twins on every leaf, and in the cutover's window the constraints made
//! again level by level, each partition keeping its constraint's name,
//! replica identity and comment; a rollback after the cutover gives them back
//! on the old column. Writers insert through pgshift with `ON CONFLICT` on
//! the key all along. Its indexes with expressions or predicates: every
//! level ends as a direct `ALTER … TYPE` leaves it (a copy of the tree in
//! schema `direct`, changed by the blocking ALTER, says how).

mod common;

use common::rollouts::{paced_proxy, start, wait_phase};
use common::scenario::direct;
use common::{connect, fresh_db, sqlstate, Proxy};
use pgshift::rollout::{self, Request};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::Client;

fn proxy() -> Proxy {
    paced_proxy(|_| {})
}

/// `ev`, partitioned by range of `region`: `ev_a` (its key's name changed),
/// `ev_b` itself partitioned by list, `ev_c` (its replica identity is its
/// key's index). `shadow` always holds `id`.
async fn setup(db: &str) -> Client {
    let admin = connect(&direct(db)).await;
    admin
        .batch_execute(&format!(
            "{TREE}
             INSERT INTO ev SELECT g, g % 30, g, CASE WHEN g % 7 = 0 THEN NULL ELSE 'n' || g END
               FROM generate_series(1, 30000) g;
             ANALYZE ev;"
        ))
        .await
        .unwrap();
    admin
}

/// The tables of [`setup`], in the schema first on the search_path.
const TREE: &str = "CREATE TABLE ev (id serial NOT NULL, region int NOT NULL, shadow bigint, note text,
                              CONSTRAINT ev_key PRIMARY KEY (id, region),
                              CONSTRAINT ev_note UNIQUE NULLS NOT DISTINCT (region, note, id) INCLUDE (shadow))
                 PARTITION BY RANGE (region);
             CREATE TABLE ev_a PARTITION OF ev FOR VALUES FROM (0) TO (10);
             CREATE TABLE ev_b PARTITION OF ev FOR VALUES FROM (10) TO (20) PARTITION BY LIST (region);
             CREATE TABLE ev_b1 PARTITION OF ev_b FOR VALUES IN (10, 11, 12, 13, 14);
             CREATE TABLE ev_b2 PARTITION OF ev_b FOR VALUES IN (15, 16, 17, 18, 19);
             CREATE TABLE ev_c PARTITION OF ev FOR VALUES FROM (20) TO (30);
             ALTER INDEX ev_a_pkey RENAME TO ev_a_custom;
             ALTER TABLE ev_c REPLICA IDENTITY USING INDEX ev_c_pkey;
             COMMENT ON CONSTRAINT ev_key ON ev IS 'the key';
             COMMENT ON INDEX ev_b_pkey IS 'the key of b';";

/// Starts the rollout of `id` to bigint through `url` and cuts it over.
async fn cut_over(admin: &Client, url: &str) -> i64 {
    let id = start(url, "ALTER TABLE ev ALTER COLUMN id TYPE bigint").await;
    wait_phase(admin, id, "verified", Duration::from_secs(60)).await;
    rollout::request(admin, id, Request::Cutover).await.unwrap();
    wait_phase(admin, id, "cut_over", Duration::from_secs(60)).await;
    id
}

/// Every key and unique constraint in the tree: (table, name, definition,
/// attached to a parent's, its index valid, the constraint's and the index's
/// comments), and each
/// table's replica identity index.
async fn keys(
    admin: &Client,
) -> (
    Vec<(String, String, String, bool, bool, Option<String>)>,
    Vec<String>,
) {
    let constraints = admin
        .query(
            "SELECT k.conrelid::regclass::text, k.conname::text, pg_get_constraintdef(k.oid),
                    k.conparentid <> 0, x.indisvalid,
                    concat_ws(' / ', obj_description(k.oid, 'pg_constraint'), obj_description(k.conindid, 'pg_class'))
               FROM pg_partition_tree('ev') p
               JOIN pg_constraint k ON k.conrelid = p.relid AND k.contype IN ('p', 'u')
               JOIN pg_index x ON x.indexrelid = k.conindid
              ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect();
    let identities = admin
        .query(
            "SELECT x.indrelid::regclass::text || ' ' || x.indexrelid::regclass::text
               FROM pg_partition_tree('ev') p JOIN pg_index x ON x.indrelid = p.relid
              WHERE x.indisreplident ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    (constraints, identities)
}

/// Whose sequence `ev_id_seq` is, and the default of `id` in every table of
/// the tree.
async fn serial(admin: &Client) -> (Option<String>, Vec<Option<String>>) {
    let owner = admin
        .query_one("SELECT pg_get_serial_sequence('ev', 'id')", &[])
        .await
        .unwrap()
        .get(0);
    let defaults = admin
        .query(
            "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_partition_tree('ev') p
               JOIN pg_attribute a ON a.attrelid = p.relid AND a.attname = 'id'
               LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
              ORDER BY p.relid",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    (owner, defaults)
}

/// The type of `id` in every table of the tree.
async fn id_types(admin: &Client) -> Vec<String> {
    admin
        .query(
            "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_partition_tree('ev') p
               JOIN pg_attribute a ON a.attrelid = p.relid AND a.attname = 'id' ORDER BY p.relid",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The error a duplicate key gets, as (SQLSTATE, message).
async fn duplicate(c: &Client) -> (Option<String>, String) {
    let e = c
        .batch_execute("INSERT INTO ev (id, region, shadow) VALUES (5, 5, 5)")
        .await
        .expect_err("a duplicate key went in");
    let message = e.as_db_error().map(|d| d.message().to_string());
    (sqlstate(&e), message.unwrap_or_default())
}

/// Every index of the tree holds exactly its partition's rows (amcheck), and
/// `id` is `shadow` in every row.
async fn rows_hold(admin: &Client) {
    admin
        .batch_execute(
            "CREATE EXTENSION IF NOT EXISTS amcheck;
             SELECT bt_index_check(x.indexrelid, true)
               FROM pg_partition_tree('ev') p JOIN pg_index x ON x.indrelid = p.relid
               JOIN pg_class c ON c.oid = x.indexrelid WHERE c.relkind = 'i'",
        )
        .await
        .unwrap();
    let wrong: i64 = admin
        .query_one(
            "SELECT count(*) FROM ev WHERE id IS DISTINCT FROM shadow",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(wrong, 0);
}

/// Inserts through `url`, each row twice (the second by `ON CONFLICT` on the
/// key: an arbiter must be found), until stopped; returns the rows written.
fn writer(url: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<i64> {
    tokio::spawn(async move {
        let c = connect(&url).await;
        let next = AtomicI64::new(1_000_000);
        let mut written = 0;
        while !stop.load(Ordering::Relaxed) {
            let id = next.fetch_add(1, Ordering::Relaxed);
            for _ in 0..2 {
                c.execute(
                    "INSERT INTO ev (id, region, shadow, note) VALUES ($1::int8::int4, $1 % 30, $1, 'w')
                     ON CONFLICT (id, region) DO UPDATE SET note = 'again'",
                    &[&id],
                )
                .await
                .unwrap_or_else(|e| panic!("insert {id}: {e:?}"));
            }
            written += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        written
    })
}

#[tokio::test]
async fn a_partitioned_tables_key_and_unique_constraint_move_with_the_column() {
    let db = fresh_db("rollout_part_key");
    let admin = setup(&db).await;
    let (before, identities) = keys(&admin).await;
    assert_eq!(before.len(), 12, "{before:?}");
    assert_eq!(identities, ["ev_c ev_c_pkey"]);
    let refused = duplicate(&admin).await;
    let sequence = serial(&admin).await;
    assert_eq!(sequence.0.as_deref(), Some("public.ev_id_seq"));
    assert_eq!(sequence.1.len(), 6);
    assert!(
        sequence
            .1
            .iter()
            .all(|d| d.as_deref() == Some("nextval('ev_id_seq'::regclass)")),
        "{sequence:?}"
    );
    let proxy = proxy();
    let url = proxy.conn_str(&db, "postgres");
    let stop = Arc::new(AtomicBool::new(false));
    let writing = writer(url.clone(), stop.clone());
    let id = cut_over(&admin, &url).await;
    assert_eq!(id_types(&admin).await, ["bigint"; 6]);
    assert_eq!(keys(&admin).await, (before.clone(), identities.clone()));
    assert_eq!(duplicate(&admin).await, refused);
    assert_eq!(serial(&admin).await, sequence);
    rows_hold(&admin).await;

    // Back to the old column, as it was.
    rollout::request(&admin, id, Request::Rollback)
        .await
        .unwrap();
    wait_phase(&admin, id, "rolled_back", Duration::from_secs(60)).await;
    assert_eq!(id_types(&admin).await, ["integer"; 6]);
    assert_eq!(keys(&admin).await, (before.clone(), identities.clone()));
    assert_eq!(duplicate(&admin).await, refused);
    assert_eq!(serial(&admin).await, sequence);
    rows_hold(&admin).await;

    // And again, to the finish.
    let id = cut_over(&admin, &url).await;
    rollout::request(&admin, id, Request::Finish).await.unwrap();
    wait_phase(&admin, id, "finished", Duration::from_secs(60)).await;
    stop.store(true, Ordering::Relaxed);
    let written = writing.await.unwrap();
    assert!(written > 100, "{written} rows written through the rollouts");
    assert_eq!(id_types(&admin).await, ["bigint"; 6]);
    assert_eq!(keys(&admin).await, (before, identities));
    assert_eq!(duplicate(&admin).await, refused);
    assert_eq!(serial(&admin).await, sequence);
    rows_hold(&admin).await;
    let columns: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_partition_tree('ev') p JOIN pg_attribute a ON a.attrelid = p.relid
              WHERE a.attname LIKE '%pgshift%' AND NOT a.attisdropped",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(columns, 0);
}

/// A key that a foreign key references stays refused on a partitioned table
/// (the referencing constraint has a copy per partition of the table).
#[tokio::test]
async fn a_partitioned_key_a_foreign_key_references_is_refused() {
    let db = fresh_db("rollout_part_key_ref");
    let admin = setup(&db).await;
    admin
        .batch_execute(
            "CREATE TABLE refs (ev_id int, ev_region int, FOREIGN KEY (ev_id, ev_region) REFERENCES ev (id, region))",
        )
        .await
        .unwrap();
    let proxy = proxy();
    let through = connect(&proxy.conn_str(&db, "postgres")).await;
    let e = through
        .batch_execute("ALTER TABLE ev ALTER COLUMN id TYPE bigint")
        .await
        .expect_err("a referenced key was taken");
    let text = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert_eq!(sqlstate(&e).as_deref(), Some("0A000"), "{text}");
    assert!(text.contains("refs_ev_id_ev_region_fkey"), "{text}");
    assert_eq!(id_types(&admin).await, ["integer"; 6]);
}

/// Every index of the tree in `schema`: (table, index, definition with the
/// schema's name as `public`).
async fn tree_indexes(admin: &Client, schema: &str) -> Vec<(String, String, String)> {
    admin
        .query(
            "SELECT t.relname::text, c.relname::text,
                    replace(pg_get_indexdef(x.indexrelid), ' ' || $1 || '.', ' public.')
               FROM pg_partition_tree(($1 || '.ev')::regclass) p
               JOIN pg_class t ON t.oid = p.relid
               JOIN pg_index x ON x.indrelid = p.relid
               JOIN pg_class c ON c.oid = x.indexrelid
              ORDER BY 1, 2",
            &[&schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// How many rows `filter` picks, through the indexes, then the table alone.
async fn both_ways(admin: &Client, filter: &str) -> (i64, i64) {
    let q = format!("SELECT count(*) FROM ev WHERE {filter}");
    let mut counts = Vec::new();
    for scan in [
        "SET enable_seqscan = off",
        "SET enable_indexscan = off; SET enable_bitmapscan = off",
    ] {
        admin.batch_execute(scan).await.unwrap();
        counts.push(admin.query_one(&q, &[]).await.unwrap().get(0));
        admin.batch_execute("RESET ALL").await.unwrap();
    }
    (counts[0], counts[1])
}

#[tokio::test]
async fn a_partitioned_tables_indexes_with_expressions_or_predicates_are_built_again() {
    let db = fresh_db("rollout_part_shapes");
    let admin = setup(&db).await;
    // An expression, an expression beside the plain column, and a predicate
    // (with the column's name in a literal) under a quoted name.
    let shapes = "CREATE INDEX ev_id_mod ON ev ((id % 10));
         CREATE INDEX ev_lower ON ev (lower(note), id DESC) WITH (fillfactor = 70);
         CREATE INDEX \"Ev big\" ON ev (note) WHERE id > 500 AND note <> 'id';";
    admin
        .batch_execute(&format!(
            "{shapes}
             CREATE SCHEMA direct; SET search_path = direct;
             {TREE}
             {shapes}
             INSERT INTO ev VALUES (1, 1, 1, 'n1');
             ALTER TABLE ev ALTER COLUMN id TYPE bigint;
             RESET search_path;"
        ))
        .await
        .unwrap();
    // A database default that pgshift's sessions must not take: directly,
    // the ALTER ignores it; a partitioned index made under it fails.
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {db} SET default_tablespace = pg_default"
        ))
        .await
        .unwrap();
    let before = tree_indexes(&admin, "public").await;
    // One difference, on purpose: directly, the partitions' copies of a key
    // are made again under names Postgres chooses (`ev_a_custom` becomes
    // `ev_a_pkey`, and what a duplicate's error names with it); pgshift keeps
    // the names they had.
    let mut direct: Vec<_> = tree_indexes(&admin, "direct")
        .await
        .into_iter()
        .map(|(t, i, d)| match i == "ev_a_pkey" {
            true => (
                t,
                "ev_a_custom".into(),
                d.replace("ev_a_pkey", "ev_a_custom"),
            ),
            false => (t, i, d),
        })
        .collect();
    direct.sort();
    assert_eq!(before.len(), 30, "{before:?}");
    assert_ne!(direct, before, "the type shows in an expression");
    let proxy = proxy();
    let url = proxy.conn_str(&db, "postgres");
    for (end, phase) in [
        (Request::Rollback, "rolled_back"),
        (Request::Finish, "finished"),
    ] {
        let id = cut_over(&admin, &url).await;
        // Every level as the direct ALTER leaves it, but for the old column's
        // indexes, parked until the finish.
        let now: Vec<_> = tree_indexes(&admin, "public")
            .await
            .into_iter()
            .filter(|(_, _, def)| !def.contains("id__pgshift_old"))
            .collect();
        assert_eq!(now, direct);
        rollout::request(&admin, id, end).await.unwrap();
        wait_phase(&admin, id, phase, Duration::from_secs(60)).await;
        let want = match end {
            Request::Rollback => &before,
            _ => &direct,
        };
        assert_eq!(&tree_indexes(&admin, "public").await, want);
        rows_hold(&admin).await;
        for filter in [
            "id % 10 = 3",
            "id > 600 AND note <> 'id'",
            "lower(note) = 'n78'",
        ] {
            let (by_index, by_table) = both_ways(&admin, filter).await;
            assert_eq!(by_index, by_table, "{filter}");
            assert!(by_table > 0, "{filter}");
        }
    }
    assert_eq!(id_types(&admin).await, ["bigint"; 6]);
}

/// A partition made after the rollback read the key's tree (while its window
/// waited for a long transaction) has no twin: the window would make the key
/// again without it, invalid (no uniqueness, no `ON CONFLICT` arbiter). It
/// gives up instead, and the rollback asked again takes the partition in.
#[tokio::test]
async fn a_partition_made_while_the_rollback_waits_holds_it() {
    let db = fresh_db("rollout_part_key_late");
    let admin = setup(&db).await;
    let proxy = paced_proxy(|c| c.ddl.stall_budget_ms = 100);
    let url = proxy.conn_str(&db, "postgres");
    let id = cut_over(&admin, &url).await;
    rollout::request(&admin, id, Request::Rollback)
        .await
        .unwrap();
    // Once the old column's NOT NULL is proved (a window of its own), a lock
    // without a snapshot: the twins' builds go on, the rollback's window waits.
    let proved = format!(
        "SELECT count(*) FROM pg_constraint WHERE conrelid = 'ev'::regclass
          AND conname = 'pgshift_not_null_{id}' AND convalidated"
    );
    let waited = std::time::Instant::now();
    while admin
        .query_one(&proved, &[])
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 0
    {
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "no NOT NULL check"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let blocker = connect(&direct(&db)).await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE ev IN ACCESS SHARE MODE")
        .await
        .unwrap();
    let twins = format!(
        "SELECT count(*) FROM pg_class c JOIN pg_index x ON x.indexrelid = c.oid
          WHERE c.relname LIKE 'pgshift\\_{id}\\_old\\_%' AND x.indisvalid"
    );
    let waited = std::time::Instant::now();
    while admin.query_one(&twins, &[]).await.unwrap().get::<_, i64>(0) < 8 {
        assert!(waited.elapsed() < Duration::from_secs(60), "no twins");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let maker = connect(&direct(&db)).await;
    let made = tokio::spawn(async move {
        maker
            .batch_execute("CREATE TABLE ev_d PARTITION OF ev FOR VALUES FROM (30) TO (40)")
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocker.batch_execute("COMMIT").await.unwrap();
    made.await.unwrap().unwrap();
    let waited = std::time::Instant::now();
    let error = loop {
        let (p, error) = common::rollouts::phase(&admin, id).await;
        assert_eq!(p, "cut_over", "{error:?}");
        if let Some(e) = error.filter(|e| e.contains("has no twin")) {
            break e;
        }
        assert!(waited.elapsed() < Duration::from_secs(60), "no refusal");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(error.contains("ask for the rollback again"), "{error}");
    let invalid =
        "SELECT count(*) FROM pg_partition_tree('ev') p JOIN pg_index x ON x.indrelid = p.relid
                    WHERE NOT x.indisvalid";
    let count: i64 = admin.query_one(invalid, &[]).await.unwrap().get(0);
    assert_eq!(count, 0, "an invalid index was left");
    rollout::request(&admin, id, Request::Rollback)
        .await
        .unwrap();
    wait_phase(&admin, id, "rolled_back", Duration::from_secs(60)).await;
    let count: i64 = admin.query_one(invalid, &[]).await.unwrap().get(0);
    assert_eq!(count, 0, "an invalid index was left");
    assert_eq!(id_types(&admin).await, ["integer"; 7]);
    let keyed: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'ev_d'::regclass AND contype IN ('p', 'u')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(keyed, 2);
    admin
        .batch_execute(
            "INSERT INTO ev (id, region, shadow) VALUES (99, 35, 99) ON CONFLICT (id, region) DO NOTHING;
             INSERT INTO ev (id, region, shadow) VALUES (99, 35, 99) ON CONFLICT (id, region) DO NOTHING",
        )
        .await
        .unwrap();
    assert_eq!(duplicate(&admin).await.0.as_deref(), Some("23505"));
    rows_hold(&admin).await;
}

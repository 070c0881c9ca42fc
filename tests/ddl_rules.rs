//! The remaining rules under the blocking-transaction scenario (see
//! tests/common/scenario.rs), and the statements pgshift refuses by default.

mod common;

use common::scenario::{logged, one_value, proxy, safe_through_pgshift, Scenario, TABLE};
use common::{connect, fresh_db, sqlstate};

const READER: &str = "SELECT count(*) FROM items";
const WRITER: &str = "UPDATE items SET qty = qty WHERE id = 1";
const APP_READ: &str = "SELECT qty FROM items WHERE id = 500";
const APP_WRITE: &str = "UPDATE items SET qty = qty + 1 WHERE id = 500";

fn with_index(extra: &str) -> String {
    format!("{TABLE} CREATE INDEX items_qty ON items (qty); {extra}")
}

#[tokio::test]
async fn drop_index_runs_concurrently() {
    let setup = with_index("");
    let (db, client) = safe_through_pgshift(
        "dropidx",
        &Scenario {
            setup: &setup,
            blocker: READER,
            ddl: "DROP INDEX items_qty",
            app: APP_READ,
        },
    )
    .await;
    assert_eq!(
        one_value(
            &client,
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'items_qty'"
        )
        .await,
        "0"
    );
    assert!(logged(&db)
        .iter()
        .any(|s| s.contains("DROP INDEX CONCURRENTLY")));
}

#[tokio::test]
async fn reindex_runs_concurrently() {
    let setup = with_index("");
    let (db, client) = safe_through_pgshift(
        "reindex",
        &Scenario {
            setup: &setup,
            blocker: WRITER,
            ddl: "REINDEX INDEX items_qty",
            app: APP_WRITE,
        },
    )
    .await;
    let valid = one_value(
        &client,
        "SELECT indisvalid::text FROM pg_index WHERE indexrelid = 'items_qty'::regclass",
    )
    .await;
    assert_eq!(valid, "true");
    assert!(logged(&db)
        .iter()
        .any(|s| s.starts_with("REINDEX (CONCURRENTLY) INDEX items_qty")));
}

#[tokio::test]
async fn short_alter_table_runs_under_lock_timeout() {
    let (db, client) = safe_through_pgshift(
        "addcol",
        &Scenario {
            setup: TABLE,
            blocker: READER,
            ddl: "ALTER TABLE items ADD COLUMN note text",
            app: APP_READ,
        },
    )
    .await;
    let n = one_value(&client, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'items' AND column_name = 'note'").await;
    assert_eq!(n, "1");
    assert!(logged(&db)
        .iter()
        // Each attempt waits at most the stall budget (100 ms by default).
        .any(|s| s.contains("SET LOCAL lock_timeout = '100ms'")
            && s.contains("ADD COLUMN note text")));
}

#[tokio::test]
async fn rename_column_is_warned_and_guarded() {
    let (_, client) = safe_through_pgshift(
        "rename",
        &Scenario {
            setup: TABLE,
            blocker: READER,
            ddl: "ALTER TABLE items RENAME COLUMN owner_id TO owner",
            app: APP_READ,
        },
    )
    .await;
    let n = one_value(&client, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'items' AND column_name = 'owner'").await;
    assert_eq!(n, "1");
}

#[tokio::test]
async fn truncate_is_guarded() {
    let (_, client) = safe_through_pgshift(
        "truncate",
        &Scenario {
            setup: TABLE,
            blocker: READER,
            ddl: "TRUNCATE items",
            app: APP_READ,
        },
    )
    .await;
    assert_eq!(one_value(&client, "SELECT count(*) FROM items").await, "0");
}

#[tokio::test]
async fn detach_partition_runs_concurrently() {
    let setup = "CREATE TABLE items (id int, qty int) PARTITION BY RANGE (id);
        CREATE TABLE items_low PARTITION OF items FOR VALUES FROM (0) TO (10000);
        CREATE TABLE items_high PARTITION OF items FOR VALUES FROM (10000) TO (30000);
        INSERT INTO items SELECT g, g FROM generate_series(1, 20000) g;";
    let (db, client) = safe_through_pgshift(
        "detach",
        &Scenario {
            setup,
            blocker: READER,
            ddl: "ALTER TABLE items DETACH PARTITION items_high",
            app: APP_READ,
        },
    )
    .await;
    let parts = one_value(
        &client,
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'items'::regclass",
    )
    .await;
    assert_eq!(parts, "1");
    assert!(logged(&db)
        .iter()
        .any(|s| s.contains("DETACH PARTITION items_high CONCURRENTLY")));
}

/// Directly, a partition of a table with a default partition detaches (under
/// ACCESS EXCLUSIVE); CONCURRENTLY is refused then. pgshift says so itself,
/// rather than rewrite the statement into one that fails (or, in a transaction
/// block, one that would fail after COMMIT), and changes nothing.
#[tokio::test]
async fn detach_with_a_default_partition_is_refused_not_broken() {
    let db = fresh_db("detach_default");
    let admin = connect(&common::scenario::direct(&db)).await;
    admin
        .batch_execute(
            "CREATE TABLE items (id int, qty int) PARTITION BY RANGE (id);
             CREATE TABLE items_low PARTITION OF items FOR VALUES FROM (0) TO (10000);
             CREATE TABLE items_rest PARTITION OF items DEFAULT;
             INSERT INTO items SELECT g, g FROM generate_series(1, 20000) g;",
        )
        .await
        .unwrap();
    let proxy = common::Proxy::start_with(|c| c.ddl.allow_bypass = true);
    let client = connect(&proxy.conn_str(&db, "postgres")).await;
    for sql in [
        "ALTER TABLE items DETACH PARTITION items_low",
        "ALTER TABLE items DETACH PARTITION items_rest",
        "BEGIN; ALTER TABLE items DETACH PARTITION items_low",
    ] {
        let e = client.batch_execute(sql).await.expect_err(sql);
        let db_error = e.as_db_error().unwrap();
        assert_eq!(sqlstate(&e).as_deref(), Some("0A000"), "{sql}: {e:?}");
        assert!(
            db_error.message().contains("has a default partition")
                && db_error
                    .hint()
                    .is_some_and(|h| h.contains("pgshift.bypass")),
            "{sql}: {e:?}"
        );
        let _ = client.batch_execute("ROLLBACK").await;
    }
    let parts = || async {
        one_value(
            &admin,
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'items'::regclass",
        )
        .await
    };
    assert_eq!(parts().await, "2");
    client
        .batch_execute("SET pgshift.bypass = on")
        .await
        .unwrap();
    client
        .batch_execute("ALTER TABLE items DETACH PARTITION items_low")
        .await
        .unwrap();
    assert_eq!(parts().await, "1");
}

/// A large partitioned table's foreign key or key has no safe form on
/// Postgres 15 (NOT VALID and USING INDEX are refused there): pgshift says so
/// before anything is built, and the way its hint gives works.
#[tokio::test]
async fn keys_of_a_partitioned_table_are_refused_with_the_way_round() {
    let db = fresh_db("partitioned_keys");
    let admin = connect(&common::scenario::direct(&db)).await;
    admin
        .batch_execute(
            "CREATE TABLE accounts (id int PRIMARY KEY);
             INSERT INTO accounts SELECT generate_series(1, 100);
             CREATE TABLE events (id int, account int, at int) PARTITION BY RANGE (at);
             CREATE TABLE events_1 PARTITION OF events FOR VALUES FROM (0) TO (100);
             CREATE TABLE events_2 PARTITION OF events FOR VALUES FROM (100) TO (200);
             INSERT INTO events SELECT g, g % 100 + 1, g % 200 FROM generate_series(1, 5000) g;",
        )
        .await
        .unwrap();
    let proxy = common::Proxy::start_with(|c| c.ddl.allow_bypass = true);
    let client = connect(&proxy.conn_str(&db, "postgres")).await;
    let indexes = || async {
        one_value(&admin, "SELECT count(*) FROM pg_index WHERE indrelid IN (SELECT relid FROM pg_partition_tree('events'))").await
    };
    for sql in [
        "ALTER TABLE events ADD CONSTRAINT events_account_fkey FOREIGN KEY (account) REFERENCES accounts",
        "ALTER TABLE events ADD PRIMARY KEY (id, at)",
        "ALTER TABLE events ADD UNIQUE (id, at)",
    ] {
        let e = client.batch_execute(sql).await.expect_err(sql);
        let db_error = e.as_db_error().unwrap();
        assert_eq!(sqlstate(&e).as_deref(), Some("0A000"), "{sql}: {e:?}");
        assert!(
            db_error.message().contains("events is partitioned")
                && db_error.hint().is_some_and(|h| h.contains("on each partition")),
            "{sql}: {e:?}"
        );
    }
    assert_eq!(indexes().await, "0", "nothing built");
    for part in ["events_1", "events_2"] {
        client
            .batch_execute(&format!(
                "ALTER TABLE {part} ADD CONSTRAINT events_account_fkey FOREIGN KEY (account) REFERENCES accounts"
            ))
            .await
            .unwrap();
    }
    client
        .batch_execute("SET pgshift.bypass = on")
        .await
        .unwrap();
    client
        .batch_execute("ALTER TABLE events ADD CONSTRAINT events_account_fkey FOREIGN KEY (account) REFERENCES accounts")
        .await
        .unwrap();
    let valid = one_value(
        &admin,
        "SELECT string_agg(conrelid::regclass::text || ':' || convalidated, ',' ORDER BY conrelid::regclass::text) \
         FROM pg_constraint WHERE conname = 'events_account_fkey'",
    )
    .await;
    assert_eq!(valid, "events:true,events_1:true,events_2:true");
}

#[tokio::test]
async fn refresh_materialized_view_runs_concurrently() {
    let setup = format!(
        "{TABLE} CREATE MATERIALIZED VIEW totals AS SELECT owner_id, sum(qty) AS qty FROM items GROUP BY owner_id;
         CREATE UNIQUE INDEX totals_owner ON totals (owner_id);"
    );
    let (db, client) = safe_through_pgshift(
        "refresh",
        &Scenario {
            setup: &setup,
            blocker: "SELECT count(*) FROM totals",
            ddl: "REFRESH MATERIALIZED VIEW totals",
            app: "SELECT qty FROM totals WHERE owner_id = 7",
        },
    )
    .await;
    assert_eq!(
        one_value(&client, "SELECT count(*) FROM totals").await,
        "100"
    );
    assert!(logged(&db)
        .iter()
        .any(|s| s.contains("REFRESH MATERIALIZED VIEW CONCURRENTLY totals")));
}

#[tokio::test]
async fn binary_coercible_type_change_passes_under_lock_timeout() {
    let setup = "CREATE TABLE items (id int PRIMARY KEY, name varchar(20));
        INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 20000) g;";
    let (db, client) = safe_through_pgshift(
        "widen",
        &Scenario {
            setup,
            blocker: READER,
            ddl: "ALTER TABLE items ALTER COLUMN name TYPE varchar(40)",
            app: "SELECT name FROM items WHERE id = 500",
        },
    )
    .await;
    let len = one_value(&client, "SELECT character_maximum_length FROM information_schema.columns WHERE table_name = 'items' AND column_name = 'name'").await;
    assert_eq!(len, "40");
    // Targets that are coercible only from some types: the executor checks the catalog.
    let proxy = proxy();
    let via = connect(&proxy.conn_str(&db, "postgres")).await;
    for sql in [
        "ALTER TABLE items ALTER COLUMN name TYPE varchar(10)",
        "ALTER TABLE items ALTER COLUMN id TYPE text",
    ] {
        let err = via.batch_execute(sql).await.expect_err(sql);
        let e = err
            .as_db_error()
            .unwrap_or_else(|| panic!("{sql}: {err:?}"));
        assert_eq!(e.code().code(), "0A000", "{sql}: {e:?}");
        assert!(e.message().contains("rewrites the whole table"), "{e:?}");
    }
    via.batch_execute("ALTER TABLE items ALTER COLUMN name TYPE text")
        .await
        .unwrap();
    let ty = one_value(&client, "SELECT data_type FROM information_schema.columns WHERE table_name = 'items' AND column_name = 'name'").await;
    assert_eq!(ty, "text");
}

#[tokio::test]
async fn table_rewrites_and_impossible_changes_are_refused() {
    let db = fresh_db("refused");
    let proxy = proxy();
    let client = connect(&proxy.conn_str(&db, "postgres")).await;
    client.batch_execute(TABLE).await.unwrap();
    let refused = [
        (
            "ALTER TABLE items ADD COLUMN seq int GENERATED ALWAYS AS IDENTITY",
            "add-column",
        ),
        (
            "ALTER TABLE items ADD COLUMN twice int GENERATED ALWAYS AS (qty * 2) STORED",
            "add-column",
        ),
        ("VACUUM FULL items", "table-rewrite"),
        ("CLUSTER items USING items_pkey", "table-rewrite"),
        ("ALTER TABLE items SET UNLOGGED", "table-rewrite"),
    ];
    for (sql, rule) in refused {
        let err = client.batch_execute(sql).await.expect_err(sql);
        let e = err
            .as_db_error()
            .unwrap_or_else(|| panic!("{sql}: {err:?}"));
        assert_eq!(e.code().code(), "0A000", "{sql}: {e:?}");
        assert!(e.hint().unwrap_or_default().contains(rule), "{sql}: {e:?}");
    }
    // NOT NULL without a default on a table with rows: Postgres' own error.
    let err = client
        .batch_execute("ALTER TABLE items ADD COLUMN must int NOT NULL")
        .await
        .expect_err("NOT NULL without a default on rows");
    assert_eq!(sqlstate(&err).as_deref(), Some("23502"), "{err:?}");
    // Nothing changed, and the session still works.
    let cols = one_value(
        &client,
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'items'",
    )
    .await;
    assert_eq!(cols, "3");
    let ty = one_value(&client, "SELECT data_type FROM information_schema.columns WHERE table_name = 'items' AND column_name = 'qty'").await;
    assert_eq!(ty, "integer");
}

#[tokio::test]
async fn index_on_a_partitioned_table_is_built_partition_by_partition() {
    let setup = "CREATE TABLE items (id int, qty int) PARTITION BY RANGE (id);
        CREATE TABLE items_low PARTITION OF items FOR VALUES FROM (0) TO (10000);
        CREATE TABLE items_high PARTITION OF items FOR VALUES FROM (10000) TO (30000)
            PARTITION BY RANGE (id);
        CREATE TABLE items_high_a PARTITION OF items_high FOR VALUES FROM (10000) TO (20000);
        CREATE TABLE items_high_b PARTITION OF items_high FOR VALUES FROM (20000) TO (30000);
        INSERT INTO items SELECT g, g FROM generate_series(1, 25000) g;";
    let (db, client) = safe_through_pgshift(
        "partidx",
        &Scenario {
            setup,
            blocker: WRITER,
            ddl: "CREATE INDEX \"Items_Qty\" ON items (qty)",
            app: APP_WRITE,
        },
    )
    .await;
    // Valid on the parent means every partition has an attached, valid index.
    let valid = one_value(
        &client,
        "SELECT indisvalid::text FROM pg_index WHERE indexrelid = '\"Items_Qty\"'::regclass",
    )
    .await;
    assert_eq!(valid, "true");
    let tree = one_value(&client, "SELECT count(*) FROM pg_partition_tree('\"Items_Qty\"'::regclass) t JOIN pg_index i ON i.indexrelid = t.relid WHERE i.indisvalid").await;
    assert_eq!(tree, "5");
    let sent = logged(&db).join("\n");
    assert!(
        sent.contains("CREATE INDEX \"Items_Qty\" ON ONLY items"),
        "{sent}"
    );
    assert!(
        sent.contains(
            // Named as Postgres names a partition's index, whatever the parent's name.
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS items_low_qty_idx ON public.items_low"
        ),
        "{sent}"
    );
}

#[tokio::test]
async fn drop_column_is_warned_and_guarded() {
    let (_, client) = safe_through_pgshift(
        "dropcol",
        &Scenario {
            setup: TABLE,
            blocker: READER,
            ddl: "ALTER TABLE items DROP COLUMN owner_id",
            app: APP_READ,
        },
    )
    .await;
    let n = one_value(
        &client,
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'items'",
    )
    .await;
    assert_eq!(n, "2");
}

#[tokio::test]
async fn drop_table_is_warned_and_guarded() {
    // Dropping a table locks every table its foreign keys reference, too.
    let setup = format!(
        "{TABLE} CREATE TABLE old_items (id int REFERENCES items (id)); INSERT INTO old_items VALUES (1);"
    );
    let (_, client) = safe_through_pgshift(
        "droptable",
        &Scenario {
            setup: &setup,
            blocker: READER,
            ddl: "DROP TABLE old_items",
            app: APP_READ,
        },
    )
    .await;
    assert_eq!(
        one_value(
            &client,
            "SELECT count(*) FROM pg_class WHERE relname = 'old_items'"
        )
        .await,
        "0"
    );
}

#[tokio::test]
async fn attach_partition_is_warned_and_guarded() {
    let setup = "CREATE TABLE items (id int, qty int) PARTITION BY RANGE (id);
        CREATE TABLE items_low PARTITION OF items FOR VALUES FROM (0) TO (30000);
        INSERT INTO items SELECT g, g FROM generate_series(1, 20000) g;
        CREATE TABLE items_next (id int, qty int);
        INSERT INTO items_next SELECT g, g FROM generate_series(30000, 30999) g;";
    let (_, client) = safe_through_pgshift(
        "attach",
        &Scenario {
            setup,
            blocker: "SELECT count(*) FROM items_next",
            ddl: "ALTER TABLE items ATTACH PARTITION items_next FOR VALUES FROM (30000) TO (40000)",
            app: "SELECT count(*) FROM items_next WHERE id = 30500",
        },
    )
    .await;
    assert_eq!(
        one_value(
            &client,
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'items'::regclass"
        )
        .await,
        "2"
    );
}

#[tokio::test]
async fn serial_column_is_added_with_a_sequence_and_backfilled() {
    let (db, client) = safe_through_pgshift(
        "serial",
        &Scenario {
            setup: TABLE,
            blocker: READER,
            ddl: "ALTER TABLE items ADD COLUMN seq bigserial",
            app: APP_READ,
        },
    )
    .await;
    let check = one_value(
        &client,
        "SELECT (count(*) = count(DISTINCT seq) AND count(seq) = 20000)::text FROM items",
    )
    .await;
    assert_eq!(check, "true");
    let notnull = one_value(&client, "SELECT attnotnull::text FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'seq'").await;
    assert_eq!(notnull, "true");
    let owned = one_value(&client, "SELECT pg_get_serial_sequence('items', 'seq')").await;
    assert_eq!(owned, "public.items_seq_seq");
    assert!(logged(&db)
        .iter()
        .any(|s| s.contains("CREATE SEQUENCE public.items_seq_seq")));
}

#[tokio::test]
async fn bypass_is_honoured_only_when_allowed() {
    let db = fresh_db("bypass");
    let allowed = common::Proxy::start_with(|c| c.ddl.allow_bypass = true);
    let client = connect(&allowed.conn_str(&db, "postgres")).await;
    client
        .batch_execute("CREATE TABLE t (c int)")
        .await
        .unwrap();
    client
        .batch_execute("SET pgshift.bypass = on")
        .await
        .unwrap();
    client
        .batch_execute("CREATE INDEX t_bypassed ON t (c)")
        .await
        .unwrap();
    client.batch_execute("RESET pgshift.bypass").await.unwrap();
    client
        .batch_execute("CREATE INDEX t_safe ON t (c)")
        .await
        .unwrap();
    let refused = proxy();
    let other = connect(&refused.conn_str(&db, "postgres")).await;
    other
        .batch_execute("SET pgshift.bypass = on")
        .await
        .unwrap();
    other
        .batch_execute("CREATE INDEX t_not_bypassed ON t (c)")
        .await
        .unwrap();
    let sent = logged(&db);
    assert!(
        sent.iter().any(|s| s == "CREATE INDEX t_bypassed ON t (c)"),
        "{sent:#?}"
    );
    assert!(
        sent.iter()
            .any(|s| s.contains("CREATE INDEX CONCURRENTLY t_safe")),
        "{sent:#?}"
    );
    assert!(
        sent.iter()
            .any(|s| s.contains("CREATE INDEX CONCURRENTLY t_not_bypassed")),
        "{sent:#?}"
    );
}

#[tokio::test]
async fn a_wrong_service_credential_is_a_clear_error_not_a_hang() {
    let db = fresh_db("service");
    let proxy = common::Proxy::start_with(|c| {
        c.upstream.service_user = common::MD5_USER.0.into();
        c.upstream.service_password = "not the password".into();
    });
    let client = connect(&proxy.conn_str(&db, "postgres")).await;
    // Committed first: a table created in the same transaction is left alone.
    client
        .batch_execute("CREATE TABLE t (c int)")
        .await
        .unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    let started = std::time::Instant::now();
    let err = client
        .batch_execute("CREATE INDEX t_c ON t (c)")
        .await
        .unwrap_err();
    let e = err.as_db_error().unwrap_or_else(|| panic!("{err:?}"));
    assert_eq!(e.code().code(), "58000", "{e:?}");
    assert!(
        e.message().contains("md5_user") && e.message().contains("password"),
        "{e:?}"
    );
    assert!(
        e.hint()
            .unwrap_or_default()
            .contains("PGSHIFT_SERVICE_PASSWORD"),
        "{e:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    client.batch_execute("ROLLBACK").await.unwrap();
}

//! ALTER TABLE rules against real Postgres, each under the blocking-transaction
//! scenario of tests/ddl.rs: no application stall through pgshift beyond
//! lock_timeout plus a margin, a stall directly, the schema the original statement
//! would have produced, and the safe statements in the server's log.

mod common;

use common::scenario::{logged, one_value, safe_through_pgshift, Scenario, TABLE};

const READER: &str = "SELECT count(*) FROM items";
const WRITER: &str = "UPDATE items SET qty = qty WHERE id = 1";
const APP_READ: &str = "SELECT qty FROM items WHERE id = 500";
const APP_WRITE: &str = "UPDATE items SET qty = qty + 1 WHERE id = 500";

#[tokio::test]
async fn add_foreign_key_is_added_not_valid_then_validated() {
    let (db, client) = safe_through_pgshift(
        "fk",
        &Scenario {
            setup: TABLE,
            blocker: WRITER,
            ddl: "ALTER TABLE items ADD CONSTRAINT items_owner_fk FOREIGN KEY (owner_id) REFERENCES owners (id)",
            app: APP_WRITE,
        },
    )
    .await;
    let valid = one_value(
        &client,
        "SELECT convalidated::text FROM pg_constraint WHERE conname = 'items_owner_fk'",
    )
    .await;
    assert_eq!(valid, "true");
    let sent = logged(&db).join("\n");
    assert!(
        sent.contains("NOT VALID") && sent.contains("VALIDATE CONSTRAINT items_owner_fk"),
        "{sent}"
    );
}

#[tokio::test]
async fn add_check_is_added_not_valid_then_validated() {
    let (db, client) = safe_through_pgshift(
        "chk",
        &Scenario {
            setup: TABLE,
            blocker: READER,
            ddl: "ALTER TABLE items ADD CONSTRAINT qty_positive CHECK (qty > 0)",
            app: APP_READ,
        },
    )
    .await;
    let valid = one_value(
        &client,
        "SELECT convalidated::text FROM pg_constraint WHERE conname = 'qty_positive'",
    )
    .await;
    assert_eq!(valid, "true");
    let sent = logged(&db).join("\n");
    assert!(sent.contains("VALIDATE CONSTRAINT qty_positive"), "{sent}");
}

#[tokio::test]
async fn set_not_null_goes_through_a_validated_check() {
    let (db, client) = safe_through_pgshift(
        "notnull",
        &Scenario {
            setup: TABLE,
            blocker: READER,
            ddl: "ALTER TABLE items ALTER COLUMN qty SET NOT NULL",
            app: APP_READ,
        },
    )
    .await;
    let notnull = one_value(&client, "SELECT attnotnull::text FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'qty'").await;
    assert_eq!(notnull, "true");
    // The helper CHECK is gone: the schema is what SET NOT NULL alone gives.
    let checks = one_value(
        &client,
        "SELECT count(*) FROM pg_constraint WHERE conrelid = 'items'::regclass AND contype = 'c'",
    )
    .await;
    assert_eq!(checks, "0");
    let sent = logged(&db).join("\n");
    assert!(
        sent.contains("IS NOT NULL) NOT VALID") && sent.contains("VALIDATE CONSTRAINT"),
        "{sent}"
    );
}

#[tokio::test]
async fn add_unique_builds_the_index_concurrently() {
    let (db, client) = safe_through_pgshift(
        "uniq",
        &Scenario {
            setup: TABLE,
            blocker: READER,
            ddl: "ALTER TABLE items ADD CONSTRAINT items_qty_key UNIQUE (qty)",
            app: APP_READ,
        },
    )
    .await;
    let kind = one_value(
        &client,
        "SELECT contype::text FROM pg_constraint WHERE conname = 'items_qty_key'",
    )
    .await;
    assert_eq!(kind, "u");
    let sent = logged(&db).join("\n");
    assert!(
        sent.contains("CREATE UNIQUE INDEX CONCURRENTLY") && sent.contains("USING INDEX"),
        "{sent}"
    );
}

#[tokio::test]
async fn volatile_default_is_added_then_backfilled() {
    let (db, client) = safe_through_pgshift(
        "volatile",
        &Scenario {
            setup: TABLE,
            blocker: READER,
            ddl: "ALTER TABLE items ADD COLUMN token double precision DEFAULT random()",
            app: APP_READ,
        },
    )
    .await;
    // The column came with its default; its old rows are filled in the
    // background (tests/rollout_fill.rs), which is over soon.
    common::scenario::eventually(
        &client,
        "SELECT string_agg(phase, ',') FROM pgshift.rollouts",
        "finished",
    )
    .await;
    // Every existing row got its own value, like the table rewrite would have given.
    let nulls = one_value(&client, "SELECT count(*) FROM items WHERE token IS NULL").await;
    assert_eq!(nulls, "0");
    let distinct = one_value(
        &client,
        "SELECT (count(DISTINCT token) > 19000)::text FROM items",
    )
    .await;
    assert_eq!(distinct, "true");
    let default = one_value(
        &client,
        "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 'items'::regclass",
    )
    .await;
    assert_eq!(default, "random()");
    let sent = logged(&db).join("\n");
    assert!(
        sent.contains("SET DEFAULT random()") && sent.contains("UPDATE"),
        "{sent}"
    );
}

/// Runs each statement as its own Query, the way psycopg (Django, Alembic) sends them.
async fn migrate(client: &tokio_postgres::Client, statements: &[&str]) {
    for s in statements {
        client
            .batch_execute(s)
            .await
            .unwrap_or_else(|e| panic!("{s}: {e:?}"));
    }
}

#[tokio::test]
async fn django_and_alembic_style_migrations_end_complete() {
    let db = common::fresh_db("orm");
    let proxy = common::scenario::proxy();
    let check = common::connect(&common::scenario::direct(&db)).await;
    check.batch_execute(TABLE).await.unwrap();
    let client = common::connect(&proxy.conn_str(&db, "postgres")).await;
    // Django: the whole migration in one transaction, quoted identifiers.
    migrate(
        &client,
        &[
            "BEGIN",
            "CREATE TABLE \"shop_order\" (\"id\" bigint NOT NULL PRIMARY KEY GENERATED BY DEFAULT AS IDENTITY, \"item_id\" int NOT NULL)",
            "CREATE INDEX \"shop_order_item_id_5a1b2c\" ON \"shop_order\" (\"item_id\")",
            "ALTER TABLE \"shop_order\" ADD CONSTRAINT \"shop_order_item_id_fk_items_id\" FOREIGN KEY (\"item_id\") REFERENCES \"items\" (\"id\") DEFERRABLE INITIALLY DEFERRED",
            "CREATE INDEX \"items_owner_id_3f2a1c\" ON \"items\" (\"owner_id\")",
            "ALTER TABLE \"items\" ADD CONSTRAINT \"items_owner_id_fk_owners_id\" FOREIGN KEY (\"owner_id\") REFERENCES \"owners\" (\"id\") DEFERRABLE INITIALLY DEFERRED",
            "ALTER TABLE \"items\" ALTER COLUMN \"qty\" SET NOT NULL",
            "CREATE TABLE django_migrations (app text, name text)",
            "INSERT INTO django_migrations VALUES ('shop', '0002_order')",
            "COMMIT",
        ],
    )
    .await;
    // Alembic: ADD COLUMN with a volatile default, then the version bump.
    migrate(
        &client,
        &[
            "BEGIN",
            "CREATE TABLE alembic_version (version_num varchar(32) NOT NULL)",
            "ALTER TABLE items ADD COLUMN created_at timestamptz DEFAULT clock_timestamp()",
            "INSERT INTO alembic_version (version_num) VALUES ('ae1027a6acf')",
            "COMMIT",
        ],
    )
    .await;
    common::scenario::eventually(
        &check,
        "SELECT count(*) FROM pgshift.deferred WHERE state <> 'done'",
        "0",
    )
    .await;
    let failed = one_value(
        &check,
        "SELECT count(*) FROM pgshift.deferred WHERE state = 'failed'",
    )
    .await;
    assert_eq!(failed, "0");
    let invalid = one_value(&check, "SELECT count(*) FROM pg_index WHERE NOT indisvalid").await;
    assert_eq!(invalid, "0");
    for idx in ["shop_order_item_id_5a1b2c", "items_owner_id_3f2a1c"] {
        let n = one_value(
            &check,
            &format!("SELECT count(*) FROM pg_indexes WHERE indexname = '{idx}'"),
        )
        .await;
        assert_eq!(n, "1", "{idx}");
    }
    let fks = one_value(&check, "SELECT string_agg(conname || '=' || convalidated::text, ',' ORDER BY conname) FROM pg_constraint WHERE contype = 'f'").await;
    assert_eq!(
        fks,
        "items_owner_id_fk_owners_id=true,shop_order_item_id_fk_items_id=true"
    );
    let notnull = one_value(&check, "SELECT attnotnull::text FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'qty'").await;
    assert_eq!(notnull, "true");
    let checks = one_value(
        &check,
        "SELECT coalesce(string_agg(conname, ','), '') FROM pg_constraint WHERE contype = 'c' AND conrelid IN ('items'::regclass, 'shop_order'::regclass)",
    )
    .await;
    assert_eq!(checks, "");
    // The new column's old rows are filled by a rollout that started once the
    // transaction committed (the client did not wait for them).
    let fills = one_value(
        &check,
        "SELECT count(*) FROM pgshift.rollouts WHERE kind = 'fill-committed' AND column_name = 'created_at'",
    )
    .await;
    assert_eq!(fills, "1");
    common::scenario::eventually(
        &check,
        "SELECT count(*) FROM pgshift.rollouts WHERE kind LIKE 'fill%' AND phase <> 'finished'",
        "0",
    )
    .await;
    let unfilled = one_value(
        &check,
        "SELECT count(*) FROM items WHERE created_at IS NULL",
    )
    .await;
    assert_eq!(unfilled, "0");
    let versions = one_value(
        &check,
        "SELECT (SELECT count(*) FROM django_migrations) + (SELECT count(*) FROM alembic_version)",
    )
    .await;
    assert_eq!(versions, "2");
}

//! `ADD COLUMN … DEFAULT <volatile>` fills existing rows; Postgres does it by
//! rewriting the table, so no UPDATE trigger or rule of the table fires. pgshift
//! fills with UPDATE batches: it keeps the triggers quiet with
//! `session_replication_role = replica` where the role may set it, and refuses
//! the statement (0A000, nothing changed) where it may not.

mod common;

use common::scenario::{direct, one_value, proxy};
use common::{connect, fresh_db, sqlstate};

const SETUP: &str = "CREATE TABLE items (id int PRIMARY KEY, version int NOT NULL DEFAULT 1);
INSERT INTO items SELECT g, 1 FROM generate_series(1, 300) g;
CREATE TABLE audit (id int);
CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.version := OLD.version + 1; RETURN NEW; END $$;
CREATE FUNCTION log_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO audit VALUES (NEW.id); RETURN NULL; END $$;
CREATE TRIGGER items_bump BEFORE UPDATE ON items FOR EACH ROW EXECUTE FUNCTION bump();
CREATE TRIGGER items_log AFTER UPDATE ON items FOR EACH ROW EXECUTE FUNCTION log_update();";

/// Rows bumped by the trigger, audit rows, and whether the column is there.
const STATE: &str = "SELECT (SELECT sum(version) - count(*) FROM items) || ' ' || (SELECT count(*) FROM audit) \
     || ' ' || (SELECT count(*) FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'token')";
const FILLED: &str = "SELECT count(token) FROM items";

#[tokio::test]
async fn a_fill_keeps_update_triggers_quiet_or_is_refused() {
    let db = fresh_db("filltriggers");
    let admin = connect(&direct(&db)).await;
    admin.batch_execute(SETUP).await.unwrap();
    let weak = format!("{db}_weak");
    admin
        .batch_execute(&format!(
            "CREATE ROLE {weak} LOGIN; ALTER TABLE items OWNER TO {weak}; GRANT ALL ON audit TO {weak}"
        ))
        .await
        .unwrap();
    let p = proxy();
    let add = "ALTER TABLE items ADD COLUMN token text DEFAULT md5(random()::text)";

    // A role that may not set session_replication_role: refused, nothing changed.
    let client = connect(&p.conn_str(&db, &weak)).await;
    let e = client.batch_execute(add).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("0A000"), "{e:?}");
    let message = e.as_db_error().unwrap().message().to_string();
    assert!(
        message.contains("trigger items_bump, trigger items_log"),
        "{message}"
    );
    assert_eq!(one_value(&admin, STATE).await, "0 0 0");
    // In a transaction block the fill would run after COMMIT: it is refused at
    // once, and the transaction fails as a whole.
    client.batch_execute("BEGIN").await.unwrap();
    let e = client.batch_execute(add).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("0A000"), "{e:?}");
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(one_value(&admin, STATE).await, "0 0 0");

    // Granted SET on it (Postgres 15): the fill runs, and no trigger fires.
    admin
        .batch_execute(&format!(
            "GRANT SET ON PARAMETER session_replication_role TO {weak}"
        ))
        .await
        .unwrap();
    let client = connect(&p.conn_str(&db, &weak)).await;
    client.batch_execute(add).await.unwrap();
    assert_eq!(one_value(&admin, STATE).await, "0 0 1");
    assert_eq!(one_value(&admin, FILLED).await, "300");
    // The triggers still fire for the application afterwards.
    client
        .batch_execute("UPDATE items SET token = 'x' WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(one_value(&admin, STATE).await, "1 1 1");
    admin
        .batch_execute(&format!(
            "REVOKE SET ON PARAMETER session_replication_role FROM {weak}"
        ))
        .await
        .unwrap();
}

/// Old rows that break a NOT VALID CHECK: Postgres' rewrite does not check them,
/// the fill's UPDATEs do. The statement fails with the server's 23514 and a
/// HINT that says why and how to find the rows; nothing of it is kept.
#[tokio::test]
async fn a_fill_stopped_by_a_not_valid_check_says_why() {
    let db = fresh_db("fillnotvalid");
    let admin = connect(&direct(&db)).await;
    admin
        .batch_execute(
            "CREATE TABLE legacy (id int PRIMARY KEY, price int); \
             INSERT INTO legacy SELECT g, g - 50 FROM generate_series(1, 100) g; \
             ALTER TABLE legacy ADD CONSTRAINT legacy_price_pos CHECK (price > 0) NOT VALID",
        )
        .await
        .unwrap();
    let p = proxy();
    let client = connect(&p.conn_str(&db, "postgres")).await;
    let e = client
        .batch_execute("ALTER TABLE legacy ADD COLUMN tag text DEFAULT md5(random()::text)")
        .await
        .unwrap_err();
    let db_error = e.as_db_error().unwrap();
    assert_eq!(db_error.code().code(), "23514", "{e:?}");
    let hint = db_error.hint().unwrap_or_default();
    assert!(
        hint.contains("\"legacy_price_pos\" is NOT VALID")
            && hint.contains("WHERE NOT ((price > 0))"),
        "{hint}"
    );
    let kept =
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 'legacy'::regclass AND attname = 'tag'";
    assert_eq!(one_value(&admin, kept).await, "0");
}

/// A trigger on a partition only is found too (the fill's UPDATE of the parent
/// reaches it); one that is ENABLE REPLICA only fires for no plain UPDATE, so it
/// needs nothing.
#[tokio::test]
async fn triggers_of_partitions_count_and_replica_only_ones_do_not() {
    let db = fresh_db("filltriggerparts");
    let admin = connect(&direct(&db)).await;
    admin
        .batch_execute(&format!(
            "{SETUP}
             CREATE TABLE parts (id int, region int, version int NOT NULL DEFAULT 1) PARTITION BY LIST (region);
             CREATE TABLE parts_1 PARTITION OF parts FOR VALUES IN (1);
             CREATE TABLE parts_2 PARTITION OF parts FOR VALUES IN (2);
             INSERT INTO parts SELECT g, 1 + g % 2, 1 FROM generate_series(1, 200) g;
             CREATE TRIGGER parts_1_bump BEFORE UPDATE ON parts_1 FOR EACH ROW EXECUTE FUNCTION bump();
             ALTER TABLE items DISABLE TRIGGER items_bump;
             ALTER TABLE items ENABLE REPLICA TRIGGER items_log"
        ))
        .await
        .unwrap();
    let weak = format!("{db}_weak");
    admin
        .batch_execute(&format!(
            "CREATE ROLE {weak} LOGIN; ALTER TABLE items OWNER TO {weak}; ALTER TABLE parts OWNER TO {weak}; \
             ALTER TABLE parts_1 OWNER TO {weak}; ALTER TABLE parts_2 OWNER TO {weak}; GRANT ALL ON audit TO {weak}"
        ))
        .await
        .unwrap();
    let p = proxy();
    let client = connect(&p.conn_str(&db, &weak)).await;
    let e = client
        .batch_execute("ALTER TABLE parts ADD COLUMN token text DEFAULT md5(random()::text)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("0A000"), "{e:?}");
    assert!(
        e.as_db_error()
            .unwrap()
            .message()
            .contains("trigger parts_1_bump"),
        "{e:?}"
    );
    let bumped = "SELECT sum(version) - count(*) FROM parts";
    assert_eq!(one_value(&admin, bumped).await, "0");
    // items: one trigger disabled, the other ENABLE REPLICA: a plain fill.
    client
        .batch_execute("ALTER TABLE items ADD COLUMN token text DEFAULT md5(random()::text)")
        .await
        .unwrap();
    assert_eq!(one_value(&admin, STATE).await, "0 0 1");
    assert_eq!(one_value(&admin, FILLED).await, "300");
}

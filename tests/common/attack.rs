//! An attacker's tools: a login role of their own and a function that makes them
//! superuser if it ever runs with a superuser's privileges.

use super::scenario::one_value;
use tokio_postgres::Client;

/// Creates a login role (cluster-wide, so named after the test's database).
pub async fn role(admin: &Client, name: &str, extra: &str) {
    admin
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {name}; CREATE ROLE {name} LOGIN {extra}"
        ))
        .await
        .unwrap();
}

pub async fn is_superuser(admin: &Client, name: &str) -> bool {
    one_value(
        admin,
        &format!("SELECT rolsuper::text FROM pg_roles WHERE rolname = '{name}'"),
    )
    .await
        == "true"
}

/// A function `schema.name(args)` that makes `attacker` superuser when it runs as
/// a superuser (pgshift's default service role), and otherwise returns NULL.
pub fn trap(schema: &str, name: &str, args: &str, returns: &str, attacker: &str) -> String {
    let params: Vec<String> = args
        .split(", ")
        .filter(|a| !a.is_empty())
        .enumerate()
        .map(|(i, t)| format!("a{i} {t}"))
        .collect();
    format!(
        "CREATE FUNCTION {schema}.{name}({}) RETURNS {returns} LANGUAGE plpgsql AS $f$
         BEGIN
           IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
             EXECUTE 'ALTER ROLE {attacker} SUPERUSER';
           END IF;
           RETURN NULL;
         END $f$;",
        params.join(", ")
    )
}

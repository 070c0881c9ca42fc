//! Names for what the statement left unnamed, picked the way Postgres picks them:
//! the first candidate (`t_c_idx`, `t_c_idx1`, …) that no relation or constraint
//! in the table's schema uses, looked up in the client's session.

use super::conn::Conn;
use crate::sql::naming::{self, IndexNaming};
use crate::sql::plan::{Plan, StepKind};
use std::io;

/// Candidates tried; Postgres tries on forever, but a schema with a hundred
/// indexes of one name pattern has a bigger problem.
const CANDIDATES: usize = 100;

const FREE: &str = "\
WITH s AS (SELECT c.relnamespace AS ns FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass($1))
SELECT u.x FROM s, pg_catalog.unnest($2::pg_catalog.text[]) WITH ORDINALITY AS u(x, i)
WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_class c
                  WHERE c.relname OPERATOR(pg_catalog.=) u.x AND c.relnamespace OPERATOR(pg_catalog.=) s.ns)
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_constraint k
                  WHERE k.conname OPERATOR(pg_catalog.=) u.x AND k.connamespace OPERATOR(pg_catalog.=) s.ns)
ORDER BY u.i LIMIT 1";

/// Gives every unnamed index build in `plan` its name.
pub async fn name_indexes<C: Conn>(conn: &mut C, plan: &mut Plan) -> io::Result<()> {
    for i in 0..plan.steps.len() {
        let StepKind::ConcurrentIndex {
            table,
            naming: Some(n),
            ..
        } = &plan.steps[i].kind
        else {
            continue;
        };
        let name = pick(conn, table, n).await?;
        naming::give_name(&mut plan.steps, i, &name);
    }
    Ok(())
}

const FREE_CONSTRAINT: &str = "\
WITH s AS (SELECT c.relnamespace AS ns FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass($1))
SELECT u.x FROM s, pg_catalog.unnest($2::pg_catalog.text[]) WITH ORDINALITY AS u(x, i)
WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_constraint k
                  WHERE k.conname OPERATOR(pg_catalog.=) u.x AND k.connamespace OPERATOR(pg_catalog.=) s.ns)
ORDER BY u.i LIMIT 1";

/// Gives every unnamed constraint in `plan` the name Postgres' `ChooseConstraintName`
/// would: the first candidate no constraint in the table's schema has, nor one
/// named earlier in the same plan.
pub async fn name_constraints<C: Conn>(conn: &mut C, plan: &mut Plan) -> io::Result<()> {
    let mut taken: Vec<String> = Vec::new();
    for n in naming::constraint_namings(plan) {
        let candidates: Vec<String> = n
            .candidates(CANDIDATES)
            .into_iter()
            .filter(|c| !taken.contains(c))
            .collect();
        let name = first_free(conn, FREE_CONSTRAINT, &n.table, &candidates).await?;
        naming::give_constraint_name(plan, &n, &name);
        taken.push(name);
    }
    Ok(())
}

const FREE_RELATION: &str = "\
WITH s AS (SELECT c.relnamespace AS ns FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass($1))
SELECT u.x FROM s, pg_catalog.unnest($2::pg_catalog.text[]) WITH ORDINALITY AS u(x, i)
WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_class c
                  WHERE c.relname OPERATOR(pg_catalog.=) u.x AND c.relnamespace OPERATOR(pg_catalog.=) s.ns)
ORDER BY u.i LIMIT 1";

/// The table's schema, and its owner when that is not the current role.
const HOME: &str = "\
SELECT pg_catalog.quote_ident(n.nspname::pg_catalog.text),
       CASE WHEN c.relowner OPERATOR(pg_catalog.<>) (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER)
            THEN pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(c.relowner)::pg_catalog.text) END
FROM pg_catalog.pg_class c, pg_catalog.pg_namespace n
WHERE c.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass($1) AND n.oid OPERATOR(pg_catalog.=) c.relnamespace";

/// Names a serial column's sequence as Postgres' `ChooseRelationName` would:
/// the first candidate no relation in the table's schema has (a sequence of
/// that name already there is never reused), in that schema.
pub async fn name_sequences<C: Conn>(conn: &mut C, plan: &mut Plan) -> io::Result<()> {
    while let Some(n) = plan.steps.iter().find_map(|s| s.sequence.clone()) {
        let name = first_free(conn, FREE_RELATION, &n.table, &n.candidates(CANDIDATES)).await?;
        let home = conn.query_params(HOME, &[&n.table]).await?;
        let qualified = match home.first_value() {
            Some(schema) if home.error.is_none() => {
                format!("{schema}.{}", crate::sql::ident::quote(&name))
            }
            // The table is not there: the plan fails on it, as the statement would.
            _ => crate::sql::ident::qualified(&n.schema, &name),
        };
        // Postgres gives a serial's sequence the table's owner.
        if let Some(Some(owner)) = home.rows.first().and_then(|r| r.get(1)) {
            let p = &n.placeholder;
            for s in plan
                .steps
                .iter_mut()
                .filter(|s| s.sequence.as_ref() == Some(&n))
            {
                s.sql = s.sql.replacen(
                    &format!("; ALTER SEQUENCE {p} OWNED BY"),
                    &format!("; ALTER SEQUENCE {p} OWNER TO {owner}; ALTER SEQUENCE {p} OWNED BY"),
                    1,
                );
            }
        }
        naming::give_sequence_name(plan, &n, &qualified);
    }
    Ok(())
}

/// The first of `n`'s candidates nothing in `table`'s schema uses.
pub async fn pick<C: Conn>(conn: &mut C, table: &str, n: &IndexNaming) -> io::Result<String> {
    first_free(conn, FREE, table, &n.candidates(CANDIDATES)).await
}

/// The first of `candidates` that `free` (FREE or FREE_CONSTRAINT) finds unused
/// in `table`'s schema; the first candidate when the table went away (the step
/// then fails with Postgres' own error).
async fn first_free<C: Conn>(
    conn: &mut C,
    free: &str,
    table: &str,
    candidates: &[String],
) -> io::Result<String> {
    let reply = conn
        .query_params(free, &[table, &array_literal(candidates)])
        .await?;
    Ok(match reply.first_value() {
        Some(name) if reply.error.is_none() => name.to_string(),
        _ => candidates.first().cloned().unwrap_or_default(),
    })
}

/// A text[] literal: every element quoted, `"` and `\` escaped.
pub(super) fn array_literal(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", quoted.join(","))
}

#[cfg(test)]
mod tests {
    #[test]
    fn array_literals_escape() {
        assert_eq!(
            super::array_literal(&["a".into(), "b\"c\\".into()]),
            r#"{"a","b\"c\\"}"#
        );
    }
}

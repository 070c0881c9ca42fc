//! CREATE INDEX CONCURRENTLY on a partitioned table is refused by Postgres, so the
//! executor expands it at run time, when the catalog says the table is partitioned:
//! an INVALID index `ON ONLY` the parent (no data, instant), a concurrent build on
//! each partition (recursively for sub-partitioned ones), and `ALTER INDEX …
//! ATTACH PARTITION` for each; the parent index turns valid after the last attach.

use super::conn::{cell, Conn};
use super::steps::{self, Failure, Mode, StepContext, StepReport};
use crate::sql::ident;
use crate::sql::parser;
use crate::sql::plan::{Lock, Step, StepKind};
use crate::wire::backend::PgError;
use pg_query::protobuf::IndexStmt;
use pg_query::NodeEnum;
use std::future::Future;
use std::pin::Pin;

/// The parsed index statement, when its table is partitioned.
pub async fn partitioned_index<C: Conn>(
    conn: &mut C,
    sql: &str,
) -> std::io::Result<Option<IndexStmt>> {
    // pgshift wrote this statement, but its expressions nest as deep as the client's
    // did: pg_query runs on a parser thread, like every parse.
    let text = sql.to_string();
    let parsed = match parser::submit(sql.len(), move || index_stmt(&text)) {
        Ok(pending) => pending.await,
        Err(e) => Err(e),
    };
    let stmt = match parsed {
        Ok(Some(stmt)) => stmt,
        Ok(None) => return Ok(None),
        Err(e) => {
            tracing::warn!(target: "pgshift::ddl", error = %e, "cannot parse a CREATE INDEX step: built as written");
            return Ok(None);
        }
    };
    let Some(rel) = &stmt.relation else {
        return Ok(None);
    };
    let check = format!(
        "SELECT relkind::text FROM pg_catalog.pg_class WHERE oid = pg_catalog.to_regclass({})",
        ident::literal(&ident::relation(rel))
    );
    let kind = conn.query(&check).await?;
    Ok((kind.first_value() == Some("p")).then_some(stmt))
}

fn index_stmt(sql: &str) -> Option<IndexStmt> {
    let parsed = pg_query::parse(sql).ok()?;
    match parsed.protobuf.stmts.into_iter().next()?.stmt?.node? {
        NodeEnum::IndexStmt(stmt) => Some(*stmt),
        _ => None,
    }
}

type Boxed<'a> = Pin<Box<dyn Future<Output = Result<StepReport, Failure>> + Send + 'a>>;

/// Builds `stmt` (a concurrent index on a partitioned table) partition by partition.
pub fn build<'a, C: Conn>(
    conn: &'a mut C,
    stmt: pg_query::protobuf::IndexStmt,
    cx: &'a StepContext<'a>,
) -> Boxed<'a> {
    Box::pin(async move {
        let started = std::time::Instant::now();
        let rel = stmt.relation.clone().unwrap_or_default();
        let parent_index = ident::sibling(&rel, &stmt.idxname);
        let mut only = stmt.clone();
        only.concurrent = false;
        if let Some(r) = only.relation.as_mut() {
            r.inh = false;
        }
        let only_sql = deparse(only).await?;
        steps::run(
            conn,
            &Step::quick(only_sql, Lock::Share),
            Mode::Autocommit,
            cx,
        )
        .await?;
        let children = conn
            .query(&format!(
                "SELECT n.nspname, c.relname FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE i.inhparent = pg_catalog.to_regclass({}) ORDER BY 2",
                ident::literal(&ident::relation(&rel))
            ))
            .await?;
        for row in &children.rows {
            let (schema, table) = (cell(row, 0), cell(row, 1));
            // Postgres names a partition's index as if it were unnamed on the
            // partition (`measures_2024_v_idx`), whatever the parent's is called.
            let naming = crate::sql::naming::unnamed_index(
                &schema,
                &table,
                &stmt.index_params,
                &stmt.index_including_params,
            );
            let name =
                super::unnamed::pick(conn, &ident::qualified(&schema, &table), &naming).await?;
            let mut child = stmt.clone();
            child.idxname = name.clone();
            child.concurrent = true;
            child.if_not_exists = true;
            if let Some(r) = child.relation.as_mut() {
                r.schemaname = schema.clone();
                r.relname = table.clone();
                r.inh = true;
            }
            let index = ident::qualified(&schema, &name);
            let build = Step::long(
                deparse(child).await?,
                Lock::ShareUpdateExclusive,
                crate::sql::plan::Placement::OutsideTransaction,
            )
            .with_kind(StepKind::ConcurrentIndex {
                index: index.clone(),
                table: ident::qualified(&schema, &table),
                naming: None,
            });
            steps::run(conn, &build, Mode::Autocommit, cx).await?;
            let attached = conn
                .query(&format!(
                    "SELECT 1 FROM pg_catalog.pg_inherits WHERE inhrelid = pg_catalog.to_regclass({}) AND inhparent = pg_catalog.to_regclass({})",
                    ident::literal(&index),
                    ident::literal(&parent_index)
                ))
                .await?;
            if attached.rows.is_empty() {
                let attach = format!("ALTER INDEX {parent_index} ATTACH PARTITION {index}");
                steps::run(
                    conn,
                    &Step::quick(attach, Lock::ShareUpdateExclusive),
                    Mode::Autocommit,
                    cx,
                )
                .await?;
            }
        }
        Ok(StepReport {
            sql: format!("{} (partition by partition)", stmt.idxname),
            attempts: 1,
            ms: started.elapsed().as_millis() as u64,
            rows: Some(children.rows.len() as u64),
        })
    })
}

/// The statement as SQL, deparsed on a parser thread (it recurses as deep as the
/// index expressions nest).
async fn deparse(stmt: IndexStmt) -> Result<String, Failure> {
    let job = move || {
        NodeEnum::IndexStmt(Box::new(stmt))
            .deparse()
            .unwrap_or_default()
    };
    let deparsed = match parser::submit(0, job) {
        Ok(pending) => pending.await,
        Err(e) => Err(e),
    };
    deparsed.map_err(|e| {
        Failure::Ours(
            PgError::error("53000", format!("pgshift could not build the index: {e}"))
                .with_hint("Retry the statement."),
        )
    })
}

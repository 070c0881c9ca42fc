//! CREATE INDEX CONCURRENTLY on a partitioned table is refused by Postgres, so the
//! executor expands it at run time, when the catalog says the table is partitioned:
//! an INVALID index `ON ONLY` the parent (no data, instant), a concurrent build on
//! each partition (recursively for sub-partitioned ones), and `ALTER INDEX …
//! ATTACH PARTITION` for each; the parent index turns valid after the last attach.

use super::conn::{cell, Conn};
use super::steps::{self, Failure, Mode, StepContext, StepReport};
use crate::sql::ident;
use crate::sql::plan::{Lock, Step, StepKind};
use pg_query::NodeEnum;
use std::future::Future;
use std::pin::Pin;

/// The parsed index statement, when its table is partitioned.
pub async fn partitioned_index<C: Conn>(
    conn: &mut C,
    sql: &str,
) -> std::io::Result<Option<pg_query::protobuf::IndexStmt>> {
    let Ok(parsed) = pg_query::parse(sql) else {
        return Ok(None);
    };
    let node = parsed
        .protobuf
        .stmts
        .first()
        .and_then(|s| s.stmt.as_ref())
        .and_then(|n| n.node.clone());
    let Some(NodeEnum::IndexStmt(stmt)) = node else {
        return Ok(None);
    };
    let Some(rel) = &stmt.relation else {
        return Ok(None);
    };
    let check = format!(
        "SELECT relkind::text FROM pg_catalog.pg_class WHERE oid = pg_catalog.to_regclass({})",
        ident::literal(&ident::relation(rel))
    );
    let kind = conn.query(&check).await?;
    Ok((kind.first_value() == Some("p")).then_some(*stmt))
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
        let only_sql = deparse(only);
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
            let name = ident::generated_name(&table, &[], &stmt.idxname);
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
                deparse(child),
                Lock::ShareUpdateExclusive,
                crate::sql::plan::Placement::OutsideTransaction,
            )
            .with_kind(StepKind::ConcurrentIndex {
                index: index.clone(),
                table: ident::qualified(&schema, &table),
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

fn deparse(stmt: pg_query::protobuf::IndexStmt) -> String {
    NodeEnum::IndexStmt(Box::new(stmt))
        .deparse()
        .unwrap_or_default()
}

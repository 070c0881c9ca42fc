//! `CREATE INDEX` takes a SHARE lock: writes to the table stop for the whole build.
//! Safe form: `CREATE INDEX CONCURRENTLY` (SHARE UPDATE EXCLUSIVE, outside any
//! transaction block); a failed build leaves an INVALID index that the executor drops
//! before it retries. Partitioned parents cannot be built concurrently: the rule's
//! plan covers plain tables, the hint names the partitioned-index sequence, and the
//! executor reports a partitioned parent clearly. `CREATE INDEX … ON ONLY parent` is
//! the first step of that sequence (instant, the index stays invalid until every
//! partition's index is attached): no finding.

use super::{deparse, deparse_expr, Rule};
use crate::sql::plan::{Finding, Lock, Placement, Plan, Policy, Precheck, Step, StepKind};
use crate::sql::{ident, naming};
use pg_query::protobuf::IndexStmt;
use pg_query::NodeEnum;

pub const RULE: Rule = Rule {
    id: "create-index",
    about: "CREATE INDEX blocks writes; build it CONCURRENTLY",
    review,
};

fn review(node: &NodeEnum, _sql: &str) -> Option<Finding> {
    let NodeEnum::IndexStmt(stmt) = node else {
        return None;
    };
    let rel = stmt.relation.as_ref()?;
    if stmt.concurrent || !rel.inh {
        return None;
    }
    let table = ident::relation(rel);
    let mut safe = (**stmt).clone();
    safe.concurrent = true;
    // Unnamed: the executor gives it the name Postgres would (it needs the catalog
    // to avoid collisions), so that a failed build can be found and retried.
    let naming = stmt.idxname.is_empty().then(|| {
        naming::unnamed_index(
            &rel.schemaname,
            &rel.relname,
            &stmt.index_params,
            &stmt.index_including_params,
        )
    });
    if naming.is_some() {
        safe.idxname = naming::PLACEHOLDER.into();
    }
    let index = match naming {
        Some(_) => naming::PLACEHOLDER.to_string(),
        None => ident::sibling(rel, &stmt.idxname),
    };
    let sql = deparse(NodeEnum::IndexStmt(Box::new(safe)));
    let rewrite = Some(Plan {
        summary: format!(
            "{sql} (SHARE UPDATE EXCLUSIVE; an INVALID leftover is dropped and the build retried)"
        ),
        steps: vec![Step::long(
            sql,
            Lock::ShareUpdateExclusive,
            Placement::OutsideTransaction,
        )
        .with_kind(StepKind::ConcurrentIndex {
            index,
            table: table.clone(),
            naming,
        })],
    });
    Some(Finding {
        rule: RULE.id,
        tag: "CREATE INDEX",
        lock: Lock::Share,
        problem: format!(
            "CREATE INDEX takes a SHARE lock on {table}: writes wait for the whole build"
        ),
        hint: "Use CREATE INDEX CONCURRENTLY outside a transaction block. On a partitioned table: CREATE INDEX … ON ONLY the parent, CREATE INDEX CONCURRENTLY on each partition, then ALTER INDEX … ATTACH PARTITION each.".into(),
        rewrite,
        precheck: Some(precheck(stmt, &table)),
        table: Some(table),
        relations: Vec::new(),
        default_policy: Policy::Rewrite,
    })
}

/// What the deferred build needs, checked in the client's transaction first.
fn precheck(stmt: &IndexStmt, table: &str) -> Precheck {
    let mut columns = Vec::new();
    let mut exprs = Vec::new();
    for p in stmt.index_params.iter().chain(&stmt.index_including_params) {
        let Some(NodeEnum::IndexElem(e)) = p.node.as_ref() else {
            continue;
        };
        match &e.expr {
            Some(x) => exprs.push(format!("({})", deparse_expr(x))),
            None if !e.name.is_empty() => columns.push(e.name.clone()),
            None => {}
        }
    }
    let predicate = stmt.where_clause.as_deref().map(deparse_expr);
    let probe = (!exprs.is_empty() || predicate.is_some()).then(|| {
        format!(
            "SELECT {} FROM {table} WHERE {} LIMIT 0",
            if exprs.is_empty() {
                "1".to_string()
            } else {
                exprs.join(", ")
            },
            predicate.map_or("true".to_string(), |p| format!("({p})"))
        )
    });
    Precheck {
        table: table.to_string(),
        columns,
        probe,
        index: (!stmt.idxname.is_empty()).then(|| stmt.idxname.clone()),
        if_not_exists: stmt.if_not_exists,
        ..Precheck::of(table)
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_one;
    use super::*;

    #[test]
    fn rewrites_to_concurrently() {
        let f = review(&parse_one("create unique index if not exists \"Idx\" on app.\"T\" (lower(email)) where deleted_at is null"), "").unwrap();
        assert_eq!(f.lock, Lock::Share);
        assert_eq!(f.table.as_deref(), Some("app.\"T\""));
        let plan = f.rewrite.unwrap();
        assert_eq!(plan.steps.len(), 1);
        let step = &plan.steps[0];
        assert_eq!(
            step.sql,
            "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS \"Idx\" ON app.\"T\" USING btree (lower(email)) WHERE deleted_at IS NULL"
        );
        assert_eq!(step.placement, Placement::OutsideTransaction);
        assert_eq!(
            step.kind,
            StepKind::ConcurrentIndex {
                index: "app.\"Idx\"".into(),
                table: "app.\"T\"".into(),
                naming: None,
            }
        );
    }

    #[test]
    fn the_deferral_checks_columns_expressions_and_the_name() {
        let f = review(
            &parse_one(
                "CREATE INDEX IF NOT EXISTS i ON app.t (a, lower(b)) INCLUDE (c) WHERE d > 0",
            ),
            "",
        )
        .unwrap();
        let p = f.precheck.unwrap();
        assert_eq!(p.columns, ["a", "c"]);
        assert_eq!(
            p.probe.as_deref(),
            Some("SELECT (lower(b)) FROM app.t WHERE (d > 0) LIMIT 0")
        );
        assert_eq!((p.index.as_deref(), p.if_not_exists), (Some("i"), true));
    }

    #[test]
    fn concurrent_builds_are_fine() {
        assert!(review(&parse_one("CREATE INDEX CONCURRENTLY i ON t (c)"), "").is_none());
        assert!(review(
            &parse_one("CREATE INDEX i ON ONLY \"Metrics\".samples (c)"),
            ""
        )
        .is_none());
    }

    #[test]
    fn unnamed_indexes_are_named_by_the_executor() {
        let f = review(&parse_one("CREATE INDEX ON app.t (c)"), "").unwrap();
        let step = &f.rewrite.unwrap().steps[0];
        assert_eq!(
            step.sql,
            "CREATE INDEX CONCURRENTLY pgshift_unnamed_index ON app.t USING btree (c)"
        );
        let StepKind::ConcurrentIndex {
            naming: Some(n), ..
        } = &step.kind
        else {
            panic!("{:?}", step.kind)
        };
        assert_eq!(
            (n.schema.as_str(), n.candidates(1)[0].as_str()),
            ("app", "t_c_idx")
        );
    }
}

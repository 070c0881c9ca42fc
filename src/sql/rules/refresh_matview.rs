//! `REFRESH MATERIALIZED VIEW` takes ACCESS EXCLUSIVE: reads of the view wait for the
//! whole refresh. Safe form: `REFRESH … CONCURRENTLY`, which takes EXCLUSIVE (reads go
//! on) and may run inside a transaction block; it needs a unique index on the view,
//! which only the server can check. `WITH NO DATA` cannot be concurrent: a warning.

use super::{deparse, Rule};
use crate::sql::ident;
use crate::sql::plan::{Finding, Lock, Placement, Plan, Policy, Step};
use pg_query::NodeEnum;

pub const RULE: Rule = Rule {
    id: "refresh-matview",
    about: "REFRESH MATERIALIZED VIEW blocks reads; refresh it CONCURRENTLY",
    review,
};

fn review(node: &NodeEnum, _sql: &str) -> Option<Finding> {
    let NodeEnum::RefreshMatViewStmt(stmt) = node else {
        return None;
    };
    if stmt.concurrent {
        return None;
    }
    let view = ident::relation(stmt.relation.as_ref()?);
    let rewrite = (!stmt.skip_data).then(|| {
        let mut safe = stmt.clone();
        safe.concurrent = true;
        let sql = deparse(NodeEnum::RefreshMatViewStmt(safe));
        Plan {
            summary: format!("{sql} (EXCLUSIVE: reads continue)"),
            steps: vec![Step::long(sql, Lock::Exclusive, Placement::Anywhere)],
        }
    });
    Some(Finding {
        rule: RULE.id,
        tag: "REFRESH MATERIALIZED VIEW",
        lock: Lock::AccessExclusive,
        problem: format!("REFRESH MATERIALIZED VIEW takes ACCESS EXCLUSIVE on {view}: reads of it wait for the whole refresh"),
        hint: match rewrite {
            Some(_) => "Use REFRESH MATERIALIZED VIEW CONCURRENTLY; it needs a unique index on the view (without a WHERE clause) over all rows.".into(),
            None => "WITH NO DATA cannot run concurrently; it is quick, but reads of the view fail until the next refresh.".into(),
        },
        relations: Vec::new(),
        precheck: None,
        default_policy: if rewrite.is_some() { Policy::Rewrite } else { Policy::Warn },
        rewrite,
        table: Some(view),
    })
}

#[cfg(test)]
mod tests {
    use super::super::{parse_one, review_sql, step_sql};
    use super::*;

    #[test]
    fn refreshes_concurrently() {
        let f = review_sql("REFRESH MATERIALIZED VIEW \"Reports\".\"DailySales\"").unwrap();
        assert_eq!(
            (f.rule, f.lock, f.default_policy),
            ("refresh-matview", Lock::AccessExclusive, Policy::Rewrite)
        );
        assert_eq!(
            step_sql(&f),
            ["REFRESH MATERIALIZED VIEW CONCURRENTLY \"Reports\".\"DailySales\""]
        );
        let step = &f.rewrite.unwrap().steps[0];
        assert_eq!(
            (step.lock, step.placement, step.long),
            (Lock::Exclusive, Placement::Anywhere, true)
        );
        assert!(f.hint.contains("unique index"));
    }

    #[test]
    fn with_no_data_only_warns() {
        let f = review_sql("REFRESH MATERIALIZED VIEW m WITH NO DATA").unwrap();
        assert_eq!(f.default_policy, Policy::Warn);
        assert!(f.rewrite.is_none());
    }

    #[test]
    fn concurrent_refresh_passes() {
        let sql = "REFRESH MATERIALIZED VIEW CONCURRENTLY m";
        assert!(review(&parse_one(sql), sql).is_none());
    }
}

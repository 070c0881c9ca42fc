//! `ADD UNIQUE` and `ADD PRIMARY KEY` build their index under ACCESS EXCLUSIVE. Safe
//! form: `CREATE UNIQUE INDEX CONCURRENTLY` (SHARE UPDATE EXCLUSIVE, outside any
//! transaction block), then `ADD CONSTRAINT … USING INDEX`, which is instant. INCLUDE,
//! WITH (…), USING INDEX TABLESPACE and NULLS NOT DISTINCT carry over to the index;
//! DEFERRABLE constraints get no rewrite.
//!
//! A primary key also needs its columns NOT NULL: on a nullable column USING INDEX
//! scans the table under ACCESS EXCLUSIVE, so the hint says to set NOT NULL first.

use super::alter_table::{self, add_constraint};
use super::{deparse, str_val, Rule};
use crate::sql::plan::{Finding, Lock, Placement, Plan, Policy, Precheck, Step, StepKind};
use crate::sql::{ident, naming};
use pg_query::protobuf::{
    AlterTableStmt, AlterTableType, ConstrType, Constraint, IndexElem, IndexStmt, Node, SortByDir,
    SortByNulls,
};
use pg_query::NodeEnum;

pub const RULE: Rule = Rule {
    id: "add-unique",
    about: "ADD UNIQUE/PRIMARY KEY builds an index under ACCESS EXCLUSIVE; build it CONCURRENTLY",
    review,
};

fn elem(column: &str) -> Node {
    Node {
        node: Some(NodeEnum::IndexElem(Box::new(IndexElem {
            name: column.into(),
            ordering: SortByDir::SortbyDefault as i32,
            nulls_ordering: SortByNulls::SortbyNullsDefault as i32,
            ..Default::default()
        }))),
    }
}

/// Whether `con` is a UNIQUE or PRIMARY KEY constraint this rule looks at.
pub(super) fn applies(con: &Constraint) -> bool {
    (con.contype == ConstrType::ConstrUnique as i32
        || con.contype == ConstrType::ConstrPrimary as i32)
        && con.indexname.is_empty()
}

/// The concurrent index build and the USING INDEX that turns it into `con`, for
/// `columns` of `stmt`'s table; none for a deferrable constraint.
pub(super) fn steps(
    stmt: &AlterTableStmt,
    con: &Constraint,
    columns: &[&str],
) -> Option<Vec<Step>> {
    if con.deferrable || con.initdeferred || con.where_clause.is_some() || columns.is_empty() {
        return None;
    }

    let rel = stmt.relation.as_ref()?;
    let primary = con.contype == ConstrType::ConstrPrimary as i32;
    // Unnamed: the executor picks the name Postgres would (`t_c_key`, `t_pkey`,
    // numbered on a collision), which the index and the constraint share.
    let name = if con.conname.is_empty() {
        naming::PLACEHOLDER.to_string()
    } else {
        con.conname.clone()
    };
    let index = IndexStmt {
        idxname: name.clone(),
        relation: Some(pg_query::protobuf::RangeVar {
            inh: true,
            ..rel.clone()
        }),
        access_method: "btree".into(),
        table_space: con.indexspace.clone(),
        index_params: columns.iter().map(|c| elem(c)).collect(),
        index_including_params: con.including.iter().filter_map(str_val).map(elem).collect(),
        options: con.options.clone(),
        unique: true,
        nulls_not_distinct: con.nulls_not_distinct,
        concurrent: true,
        ..Default::default()
    };
    let naming = con.conname.is_empty().then(|| {
        let mut n = naming::unnamed_index(
            &rel.schemaname,
            &rel.relname,
            &index.index_params,
            &index.index_including_params,
        );
        n.label = if primary { "pkey" } else { "key" }.into();
        if primary {
            n.addition.clear();
        }
        n
    });
    let using = Constraint {
        contype: con.contype,
        conname: name.clone(),
        indexname: name.clone(),
        location: -1,
        ..Default::default()
    };
    Some(vec![
        Step::long(
            deparse(NodeEnum::IndexStmt(Box::new(index))),
            Lock::ShareUpdateExclusive,
            Placement::OutsideTransaction,
        )
        .with_kind(StepKind::ConcurrentIndex {
            index: ident::sibling(rel, &name),
            table: ident::relation(rel),
            naming,
        }),
        // Another subcommand's step failing later takes the key back (its
        // index with it), as the failed statement leaves none directly.
        Step::quick(add_constraint(stmt, using), Lock::AccessExclusive)
            .undone_by(super::alter_table::drop_constraint(stmt, &name)),
    ])
}

pub(super) const SUMMARY: &str =
    "CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT … USING INDEX (instant)";

/// The problem sentence for `con` on `table`.
pub(super) fn problem(con: &Constraint, table: &str) -> String {
    if con.contype == ConstrType::ConstrPrimary as i32 {
        format!("ADD PRIMARY KEY builds an index on {table} under ACCESS EXCLUSIVE, and scans it for NULLs if a key column is nullable: reads and writes wait")
    } else {
        format!("ADD UNIQUE builds an index on {table} under ACCESS EXCLUSIVE: reads and writes wait for the build")
    }
}

fn review(node: &NodeEnum, _sql: &str) -> Option<Finding> {
    let one = alter_table::single(node)?;
    let con = one.constraint()?;
    if one.kind != AlterTableType::AtAddConstraint || !applies(con) {
        return None;
    }
    let table = one.table();
    let columns: Vec<&str> = con.keys.iter().filter_map(str_val).collect();
    // A column named twice: Postgres refuses the constraint (42701, with its
    // position) once it has the table's lock, before it builds anything (the
    // catch-all rule runs it under lock_timeout); the safe form would build
    // the whole index first.
    if columns
        .iter()
        .enumerate()
        .any(|(i, c)| columns[..i].contains(c))
    {
        return None;
    }
    let steps = steps(one.stmt, con, &columns);
    let primary = con.contype == ConstrType::ConstrPrimary as i32;
    let hint = match (&steps, primary) {
        (None, _) => "A DEFERRABLE key has no safe form: a concurrent build checks uniqueness at once, not at COMMIT, for as long as it runs (an application's deferred swaps would fail meanwhile). Accept the lock (on a small table, or with ddl.rules.add-unique = \"warn\"), or build a unique index CONCURRENTLY and enforce it without DEFERRABLE.".into(),
        (Some(_), true) => "CREATE UNIQUE INDEX CONCURRENTLY, then ADD PRIMARY KEY USING INDEX; SET NOT NULL on the key columns first (see set-not-null), or USING INDEX scans for NULLs under ACCESS EXCLUSIVE.".into(),
        (Some(_), false) => "CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT … UNIQUE USING INDEX.".to_string(),
    };
    Some(Finding {
        rule: RULE.id,
        tag: "ALTER TABLE",
        lock: Lock::AccessExclusive,
        problem: problem(con, &table),
        rewrite: steps.map(|steps| Plan {
            summary: SUMMARY.into(),
            steps,
        }),
        hint,
        // Postgres' words when the relation takes no constraint or a column
        // is missing (a primary key's columns are looked up for NOT NULL first).
        precheck: Some(Precheck {
            columns: columns
                .iter()
                .map(|c| c.to_string())
                .chain(con.including.iter().filter_map(str_val).map(str::to_string))
                .collect(),
            column_of_relation: primary,
            named_in_key: !primary,
            action: Some("ADD CONSTRAINT"),
            ..Precheck::of(&table)
        }),
        table: Some(table),
        relations: Vec::new(),
        default_policy: Policy::Rewrite,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{parse_one, review_sql, step_sql};
    use super::*;

    #[test]
    fn builds_the_index_concurrently_then_attaches_it() {
        let f =
            review_sql("ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE (email)").unwrap();
        assert_eq!(
            (f.rule, f.tag, f.lock),
            ("add-unique", "ALTER TABLE", Lock::AccessExclusive)
        );
        assert_eq!(
            step_sql(&f),
            [
                "CREATE UNIQUE INDEX CONCURRENTLY users_email_key ON users USING btree (email)",
                "ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE USING INDEX users_email_key",
            ]
        );
        let steps = f.rewrite.unwrap().steps;
        assert_eq!(
            (steps[0].lock, steps[0].placement, steps[0].long),
            (
                Lock::ShareUpdateExclusive,
                Placement::OutsideTransaction,
                true
            )
        );
        assert_eq!(
            steps[0].kind,
            StepKind::ConcurrentIndex {
                naming: None,
                index: "users_email_key".into(),
                table: "users".into(),
            }
        );
        assert_eq!(
            (steps[1].lock, steps[1].long),
            (Lock::AccessExclusive, false)
        );
    }

    #[test]
    fn names_unnamed_constraints_and_keeps_quotes() {
        let f = review_sql(
            "ALTER TABLE ONLY \"Shop\".\"Order\" ADD UNIQUE (\"storeId\", number) INCLUDE (total) WITH (fillfactor = 90)",
        )
        .unwrap();
        // Postgres names it after the INCLUDE columns too (checked on PG 15).
        assert_eq!(
            step_sql(&f),
            [
                "CREATE UNIQUE INDEX CONCURRENTLY \"Order_storeId_number_total_key\" ON \"Shop\".\"Order\" USING btree (\"storeId\", number) INCLUDE (total) WITH (fillfactor=90)",
                "ALTER TABLE ONLY \"Shop\".\"Order\" ADD CONSTRAINT \"Order_storeId_number_total_key\" UNIQUE USING INDEX \"Order_storeId_number_total_key\"",
            ]
        );
        let mut plan = f.rewrite.unwrap();
        crate::sql::naming::name_offline(&mut plan);
        assert_eq!(
            plan.steps[0].kind,
            StepKind::ConcurrentIndex {
                index: "\"Shop\".\"Order_storeId_number_total_key\"".into(),
                table: "\"Shop\".\"Order\"".into(),
                naming: None,
            }
        );
    }

    #[test]
    fn primary_keys_warn_about_nullable_columns() {
        let f = review_sql("ALTER TABLE app.events ADD PRIMARY KEY (id)").unwrap();
        assert_eq!(
            step_sql(&f),
            [
                "CREATE UNIQUE INDEX CONCURRENTLY events_pkey ON app.events USING btree (id)",
                "ALTER TABLE app.events ADD CONSTRAINT events_pkey PRIMARY KEY USING INDEX events_pkey",
            ]
        );
        assert!(f.problem.contains("NULLs"));
        assert!(f.hint.contains("SET NOT NULL"));
    }

    #[test]
    fn a_key_column_named_twice_is_left_to_postgres() {
        for sql in [
            "ALTER TABLE t ADD PRIMARY KEY (a, a)",
            "ALTER TABLE t ADD CONSTRAINT k UNIQUE (a, b, a)",
        ] {
            assert!(review(&parse_one(sql), sql).is_none(), "{sql}");
        }
    }

    #[test]
    fn deferrable_constraints_have_no_rewrite() {
        let f = review_sql("ALTER TABLE t ADD UNIQUE (a) DEFERRABLE INITIALLY DEFERRED").unwrap();
        assert!(f.rewrite.is_none());
    }

    #[test]
    fn using_index_passes() {
        for sql in [
            "ALTER TABLE t ADD CONSTRAINT k UNIQUE USING INDEX k",
            "ALTER TABLE t ADD CONSTRAINT t_pkey PRIMARY KEY USING INDEX t_pkey",
        ] {
            assert!(review(&parse_one(sql), sql).is_none(), "{sql}");
        }
    }
}

//! The rule registry. Each rule is one file with a `review` function that looks at a
//! parsed statement and returns a [`Finding`] when the statement is unsafe, with the
//! safe plan if one exists. Adding a rule: one file, one line in `RULES`.
//!
//! An ALTER TABLE with several subcommands is split first (`alter_table`): each
//! subcommand is reviewed as a statement of its own and the findings are combined.

use super::plan::{Finding, Lock, Placement, Plan, Step};
use pg_query::protobuf::Node;
use pg_query::NodeEnum;

mod add_check;
mod add_column;
mod add_exclusion;
mod add_foreign_key;
mod add_unique;
mod alter_column_type;
mod alter_table;
mod attach_partition;
mod backfill;
mod create_index;
mod detach_partition;
mod drop_column;
mod drop_index;
mod drop_table;
mod enum_add_value;
mod expr;
mod lock_timeout;
mod refresh_matview;
mod reindex;
mod rename;
pub mod set_not_null;
mod table_rewrite;
mod truncate;

/// A rule: its id (the config key), a one-line description, and its review function.
pub struct Rule {
    pub id: &'static str,
    pub about: &'static str,
    pub review: fn(&NodeEnum, &str) -> Option<Finding>,
}

/// Every rule, tried in order; the first finding wins. `lock-timeout` is the
/// catch-all for statements that are only unsafe while they queue for their lock.
pub const RULES: &[Rule] = &[
    create_index::RULE,
    drop_index::RULE,
    reindex::RULE,
    add_foreign_key::RULE,
    add_check::RULE,
    set_not_null::RULE,
    add_unique::RULE,
    add_exclusion::RULE,
    add_column::RULE,
    alter_column_type::RULE,
    rename::RULE,
    drop_column::RULE,
    drop_table::RULE,
    truncate::RULE,
    table_rewrite::RULE,
    refresh_matview::RULE,
    attach_partition::RULE,
    detach_partition::RULE,
    enum_add_value::RULE,
    lock_timeout::RULE,
];

/// Runs the rules over one parsed statement; `sql` is its text.
pub fn review(node: &NodeEnum, sql: &str) -> Option<Finding> {
    if let Some(stmt) = alter_table::several(node) {
        return alter_table::review_split(stmt, sql);
    }
    review_one(node, sql)
}

/// The first finding of the registry, without splitting.
fn review_one(node: &NodeEnum, sql: &str) -> Option<Finding> {
    RULES.iter().find_map(|r| (r.review)(node, sql))
}

/// The rule with this id.
pub fn by_id(id: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.id == id)
}

/// Parses one statement for tests; panics on anything but exactly one statement.
#[cfg(test)]
pub(crate) fn parse_one(sql: &str) -> NodeEnum {
    let parsed = pg_query::parse(sql).expect("valid SQL");
    assert_eq!(parsed.protobuf.stmts.len(), 1, "one statement");
    parsed.protobuf.stmts[0]
        .stmt
        .as_ref()
        .and_then(|n| n.node.clone())
        .expect("a node")
}

/// Reviews `sql` the way `analysis` does (splitting included), for tests.
#[cfg(test)]
pub(crate) fn review_sql(sql: &str) -> Option<Finding> {
    review(&parse_one(sql), sql)
}

/// The SQL of every step, for tests, unnamed indexes named as Postgres names them
/// first (as `pgshift check` shows them).
#[cfg(test)]
pub(crate) fn step_sql(f: &Finding) -> Vec<String> {
    let Some(mut plan) = f.rewrite.clone() else {
        return Vec::new();
    };
    super::naming::name_offline(&mut plan);
    plan.steps.into_iter().map(|s| s.sql).collect()
}

/// Deparses a single statement node back to SQL. Deparsing a tree that came from
/// the parser does not fail; if it ever did, the empty string would make the plan fail
/// loudly at the server rather than silently here.
pub(crate) fn deparse(node: NodeEnum) -> String {
    node.deparse().unwrap_or_default()
}

/// Deparses an expression node, e.g. a default or a CHECK condition.
pub(crate) fn deparse_expr(expr: &pg_query::protobuf::Node) -> String {
    use pg_query::protobuf::{LimitOption, ResTarget, SelectStmt, SetOperation};
    // Enum fields must hold valid values: pg_query's C side asserts on 0.
    let select = SelectStmt {
        target_list: vec![Node {
            node: Some(NodeEnum::ResTarget(Box::new(ResTarget {
                val: Some(Box::new(expr.clone())),
                ..Default::default()
            }))),
        }],
        limit_option: LimitOption::Default as i32,
        op: SetOperation::SetopNone as i32,
        ..Default::default()
    };
    let sql = deparse(NodeEnum::SelectStmt(Box::new(select)));
    sql.strip_prefix("SELECT ").unwrap_or(&sql).to_string()
}

/// The statement as the user wrote it, for plans that run the original: its text, or
/// the deparsed node when no text was given.
pub(crate) fn original(node: &NodeEnum, sql: &str) -> String {
    let text = sql.trim().trim_end_matches(';').trim_end();
    if text.is_empty() {
        deparse(node.clone())
    } else {
        text.to_string()
    }
}

/// A plan that runs `sql` unchanged, as one short step under lock_timeout with retries.
pub(crate) fn guarded(sql: String, lock: Lock) -> Plan {
    Plan {
        summary: format!("the statement unchanged, under lock_timeout with retries ({lock})"),
        steps: vec![Step::quick(sql, lock)],
    }
}

/// A plan of one long step that runs outside any transaction block and takes only
/// SHARE UPDATE EXCLUSIVE (DROP INDEX / REINDEX / DETACH PARTITION … CONCURRENTLY).
pub(crate) fn concurrent(sql: String) -> Plan {
    Plan {
        summary: format!("{sql} (SHARE UPDATE EXCLUSIVE, outside a transaction block)"),
        steps: vec![Step::long(
            sql,
            Lock::ShareUpdateExclusive,
            Placement::OutsideTransaction,
        )],
    }
}

/// The names a DROP statement lists, as SQL.
pub(crate) fn dropped_names(stmt: &pg_query::protobuf::DropStmt) -> Vec<String> {
    stmt.objects
        .iter()
        .filter_map(|o| match o.node.as_ref()? {
            NodeEnum::List(l) => Some(name_list(&l.items)),
            _ => None,
        })
        .collect()
}

/// The text of a String node (identifiers in name lists).
pub(crate) fn str_val(node: &Node) -> Option<&str> {
    match node.node.as_ref()? {
        NodeEnum::String(s) => Some(&s.sval),
        _ => None,
    }
}

/// A dotted name list (`schema.type`, `schema.table.trigger`) as SQL.
pub(crate) fn name_list(nodes: &[Node]) -> String {
    nodes
        .iter()
        .filter_map(str_val)
        .map(crate::sql::ident::quote)
        .collect::<Vec<_>>()
        .join(".")
}

/// A String node, to build name lists.
pub(crate) fn string_node(s: &str) -> Node {
    Node {
        node: Some(NodeEnum::String(pg_query::protobuf::String {
            sval: s.into(),
        })),
    }
}

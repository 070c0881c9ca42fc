//! The rule registry. Each rule is one file with a `review` function that looks at a
//! parsed statement and returns a [`Finding`] when the statement is unsafe, with the
//! safe plan if one exists. Adding a rule: one file, one line in `RULES`.

use super::plan::Finding;
use pg_query::NodeEnum;

mod create_index;

/// A rule: its id (the config key), a one-line description, and its review function.
pub struct Rule {
    pub id: &'static str,
    pub about: &'static str,
    pub review: fn(&NodeEnum, &str) -> Option<Finding>,
}

/// Every rule, tried in order; the first finding wins.
pub const RULES: &[Rule] = &[create_index::RULE];

/// Runs the rules over one parsed statement; `sql` is its text.
pub fn review(node: &NodeEnum, sql: &str) -> Option<Finding> {
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

/// Deparses a single statement node back to SQL. Deparsing a tree that came from
/// the parser does not fail; if it ever did, the empty string would make the plan fail
/// loudly at the server rather than silently here.
pub(crate) fn deparse(node: NodeEnum) -> String {
    node.deparse().unwrap_or_default()
}

/// Deparses an expression node, e.g. a default or a CHECK condition.
#[allow(dead_code)] // first users: the ALTER TABLE rules
pub(crate) fn deparse_expr(expr: &pg_query::protobuf::Node) -> String {
    use pg_query::protobuf::{Node, ResTarget, SelectStmt};
    let select = SelectStmt {
        target_list: vec![Node {
            node: Some(NodeEnum::ResTarget(Box::new(ResTarget {
                val: Some(Box::new(expr.clone())),
                ..Default::default()
            }))),
        }],
        ..Default::default()
    };
    let sql = deparse(NodeEnum::SelectStmt(Box::new(select)));
    sql.strip_prefix("SELECT ").unwrap_or(&sql).to_string()
}

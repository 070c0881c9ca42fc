//! Looking inside expressions: whether a column default is volatile (it would force a
//! table rewrite) and which columns a CHECK condition reads (for its generated name).
//!
//! Volatility is decided offline, without the catalog, so it is an explicit
//! allow-list: constants, casts, operators and the stable clock functions are not
//! volatile; any other function call, subquery or unknown node is. Erring this way is
//! safe: a non-volatile default treated as volatile gets a backfill instead of a
//! catalog-only ADD COLUMN, which is slower but still correct.

use pg_query::protobuf::Node;
use pg_query::NodeEnum;

/// Functions whose result is the same for every row of one statement.
const STABLE_FUNCTIONS: &[&str] = &[
    "now",
    "statement_timestamp",
    "transaction_timestamp",
    "timezone",
];

/// The sub-expressions of an expression node; `None` for a node this module does
/// not know how to look into.
fn children(node: &NodeEnum) -> Option<Vec<&Node>> {
    fn one(n: &Option<Box<Node>>) -> Vec<&Node> {
        n.as_deref().into_iter().collect()
    }
    Some(match node {
        NodeEnum::AConst(_) | NodeEnum::SqlvalueFunction(_) | NodeEnum::ColumnRef(_) => vec![],
        NodeEnum::TypeCast(c) => one(&c.arg),
        NodeEnum::CollateClause(c) => one(&c.arg),
        NodeEnum::AExpr(e) => [one(&e.lexpr), one(&e.rexpr)].concat(),
        NodeEnum::BoolExpr(e) => e.args.iter().collect(),
        NodeEnum::NullTest(e) => one(&e.arg),
        NodeEnum::BooleanTest(e) => one(&e.arg),
        NodeEnum::AArrayExpr(e) => e.elements.iter().collect(),
        NodeEnum::CoalesceExpr(e) => e.args.iter().collect(),
        NodeEnum::MinMaxExpr(e) => e.args.iter().collect(),
        NodeEnum::RowExpr(e) => e.args.iter().collect(),
        NodeEnum::List(l) => l.items.iter().collect(),
        NodeEnum::CaseExpr(e) => [one(&e.arg), e.args.iter().collect(), one(&e.defresult)].concat(),
        NodeEnum::CaseWhen(w) => [one(&w.expr), one(&w.result)].concat(),
        NodeEnum::FuncCall(f) => f.args.iter().collect(),
        // `tags[1]`, `tags[1:2]`, `(home).zip`: the column, then the subscripts.
        NodeEnum::AIndirection(i) => [one(&i.arg), i.indirection.iter().collect()].concat(),
        NodeEnum::AIndices(i) => [one(&i.lidx), one(&i.uidx)].concat(),
        NodeEnum::String(_) | NodeEnum::AStar(_) => vec![],
        // `make_interval(days => n)`.
        NodeEnum::NamedArgExpr(a) => one(&a.arg),
        // `xmlelement(name x, b)`, its attributes as ResTargets.
        NodeEnum::XmlExpr(x) => x.named_args.iter().chain(&x.args).collect(),
        NodeEnum::ResTarget(r) => one(&r.val),
        _ => return None,
    })
}

/// True unless the expression is known to give every row the same value.
pub(super) fn is_volatile(expr: &Node) -> bool {
    let Some(node) = expr.node.as_ref() else {
        return false;
    };
    if let NodeEnum::FuncCall(f) = node {
        let name = f.funcname.last().and_then(super::str_val).unwrap_or("");
        if !STABLE_FUNCTIONS.contains(&name) || f.over.is_some() {
            return true;
        }
    }
    match children(node) {
        Some(kids) => kids.into_iter().any(is_volatile),
        None => true,
    }
}

/// The distinct columns an expression reads, in order of appearance.
pub(super) fn columns(expr: &Node) -> Vec<String> {
    let mut out = Vec::new();
    collect_columns(expr, &mut out);
    out
}

fn collect_columns(expr: &Node, out: &mut Vec<String>) {
    let Some(node) = expr.node.as_ref() else {
        return;
    };
    if let NodeEnum::ColumnRef(c) = node {
        if let Some(name) = c.fields.last().and_then(super::str_val) {
            if !out.iter().any(|o| o == name) {
                out.push(name.to_string());
            }
        }
    }
    for kid in children(node).unwrap_or_default() {
        collect_columns(kid, out);
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_one;
    use super::*;

    /// The default expression of `ALTER TABLE t ADD c <type> DEFAULT <expr>`.
    fn default_of(expr: &str) -> Node {
        let NodeEnum::AlterTableStmt(s) =
            parse_one(&format!("ALTER TABLE t ADD c text DEFAULT {expr}"))
        else {
            panic!("not an ALTER TABLE");
        };
        let Some(NodeEnum::AlterTableCmd(cmd)) = &s.cmds[0].node else {
            panic!("no subcommand");
        };
        let Some(NodeEnum::ColumnDef(col)) = cmd.def.as_ref().and_then(|d| d.node.as_ref()) else {
            panic!("no column");
        };
        col.constraints
            .iter()
            .find_map(|c| match &c.node {
                Some(NodeEnum::Constraint(c)) => c.raw_expr.as_deref().cloned(),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn constants_and_clocks_are_not_volatile() {
        for e in [
            "0",
            "'x'",
            "-1.5",
            "true",
            "NULL",
            "'{}'::jsonb",
            "ARRAY[]::text[]",
            "now()",
            "CURRENT_TIMESTAMP",
            "current_date",
            "timezone('utc', now())",
            "(now() + interval '1 day')",
            "CASE WHEN true THEN 1 ELSE 2 END",
        ] {
            assert!(!is_volatile(&default_of(e)), "{e}");
        }
    }

    #[test]
    fn other_functions_are_volatile() {
        for e in [
            "gen_random_uuid()",
            "random()",
            "clock_timestamp()",
            "nextval('s')",
            "uuid_generate_v4()",
            "public.uuid_generate_v4()",
            "ARRAY[gen_random_uuid()]",
            "(SELECT 1)",
            "md5(random()::text)",
        ] {
            assert!(is_volatile(&default_of(e)), "{e}");
        }
    }

    #[test]
    fn columns_are_distinct_and_ordered() {
        let NodeEnum::AlterTableStmt(s) =
            parse_one("ALTER TABLE t ADD CHECK (a > 0 AND (b IS NULL OR a < \"B\"))")
        else {
            panic!("not an ALTER TABLE");
        };
        let Some(NodeEnum::AlterTableCmd(cmd)) = &s.cmds[0].node else {
            panic!("no subcommand");
        };
        let Some(NodeEnum::Constraint(c)) = cmd.def.as_ref().and_then(|d| d.node.as_ref()) else {
            panic!("no constraint");
        };
        let e = c.raw_expr.as_deref().unwrap();
        assert_eq!(columns(e), ["a", "b", "B"]);
    }

    #[test]
    fn columns_through_subscripts_fields_named_arguments_and_xml() {
        for (check, column) in [
            ("tags[1] <> ''", "tags"),
            ("tags[1:n] IS NOT NULL", "tags"),
            ("(home).zip > 0", "home"),
            ("make_interval(days => n) < interval '1 day'", "n"),
            ("xmlelement(name x, b) IS NOT NULL", "b"),
        ] {
            let NodeEnum::AlterTableStmt(s) =
                parse_one(&format!("ALTER TABLE t ADD CHECK ({check})"))
            else {
                panic!("not an ALTER TABLE");
            };
            let Some(NodeEnum::AlterTableCmd(cmd)) = &s.cmds[0].node else {
                panic!("no subcommand");
            };
            let Some(NodeEnum::Constraint(c)) = cmd.def.as_ref().and_then(|d| d.node.as_ref())
            else {
                panic!("no constraint");
            };
            let found = columns(c.raw_expr.as_deref().unwrap());
            assert_eq!(
                found.first().map(String::as_str),
                Some(column),
                "{check}: {found:?}"
            );
        }
    }
}

//! The names Postgres gives what the user left unnamed (indexcmds.c
//! `ChooseIndexName`, `ChooseIndexColumnNames`, `ChooseIndexNameAddition`;
//! parse_target.c `FigureIndexColname`; namespace.c `makeObjectName` and
//! `ChooseRelationName`), so that a statement pgshift runs in another form leaves
//! the schema Postgres would have left. Only the last part needs the catalog: the
//! first candidate no relation or constraint in the schema already uses.

use super::ident::{self, clip, MAX_IDENT};
use super::plan::{Plan, Step, StepKind};
use pg_query::protobuf::{IndexElem, Node};
use pg_query::NodeEnum;
use serde::{Deserialize, Serialize};

/// Stands for the name of an unnamed index in a plan's SQL until the executor
/// picks it (a plain identifier, so the deparsed SQL keeps it as is).
pub const PLACEHOLDER: &str = "pgshift_unnamed_index";

/// A serial column's sequence, named as Postgres' `ChooseRelationName` would:
/// `table_column_seq`, then `seq1`, `seq2`… until no relation in the table's
/// schema has the name; it lives in the table's schema, whatever search_path says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceNaming {
    /// Stands for the name in the plan's SQL (unique in the process, ends in
    /// `_`, so that no placeholder begins another) until it is picked.
    pub placeholder: String,
    /// The table as SQL.
    pub table: String,
    /// The table's schema as the statement wrote it (empty: none).
    pub schema: String,
    /// The table's own name and the column's, unquoted.
    pub relname: String,
    pub column: String,
}

impl SequenceNaming {
    pub fn new(table: &str, schema: &str, relname: &str, column: &str) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        SequenceNaming {
            placeholder: format!(
                "pgshift_unnamed_sequence_{}_",
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
            table: table.to_string(),
            schema: schema.to_string(),
            relname: relname.to_string(),
            column: column.to_string(),
        }
    }

    pub fn candidates(&self, n: usize) -> Vec<String> {
        numbered(&self.relname, Some(&self.column), "seq", n)
    }
}

/// Puts the sequence's name (`qualified`: SQL, schema included when known)
/// wherever `plan` holds `naming`'s placeholder, in `nextval('…')` as a literal,
/// and forgets the naming.
pub fn give_sequence_name(plan: &mut Plan, naming: &SequenceNaming, qualified: &str) {
    let as_literal = crate::sql::ident::literal(qualified);
    let p = &naming.placeholder;
    let put = |sql: &str| {
        sql.replace(&format!("'{p}'"), &as_literal)
            .replace(p.as_str(), qualified)
    };
    for s in &mut plan.steps {
        s.sql = put(&s.sql);
        s.undo = s.undo.as_deref().map(put);
        if s.sequence.as_ref() == Some(naming) {
            s.sequence = None;
        }
        if let StepKind::Backfill { by_pages, rest, .. } = &mut s.kind {
            *by_pages = put(by_pages);
            *rest = put(rest);
        }
    }
    plan.summary = put(&plan.summary);
}

/// Everything of an unnamed index's name but the collision check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexNaming {
    /// The table's schema as the statement wrote it (empty: none), where the
    /// index will live.
    pub schema: String,
    /// The table's own name (unqualified, as Postgres stores it).
    pub table: String,
    /// The column part: names joined by `_` (see [`addition`]).
    pub addition: String,
    /// `idx`, `key`, `excl` or `pkey`.
    pub label: String,
}

impl IndexNaming {
    /// The candidates Postgres tries in order: `label`, then `label1`, `label2`…
    pub fn candidates(&self, n: usize) -> Vec<String> {
        let name2 = (!self.addition.is_empty()).then_some(self.addition.as_str());
        numbered(&self.table, name2, &self.label, n)
    }
}

/// An unnamed constraint pgshift adds in its own steps (a CHECK or FOREIGN KEY
/// added NOT VALID, the CHECK that proves NOT NULL): named as Postgres'
/// `ChooseConstraintName` would, `name1[_name2]_label`, then `label1`, `label2`…
/// until no constraint in the table's schema has the name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConstraintNaming {
    /// Stands for the name in the plan's SQL (a plain identifier, unique in the
    /// process) until it is picked.
    pub placeholder: String,
    /// The table as SQL: its schema is where the name must be free.
    pub table: String,
    pub name1: String,
    pub name2: Option<String>,
    pub label: String,
}

impl ConstraintNaming {
    /// A naming for a constraint on `table` (SQL) whose unqualified name is
    /// `relname`, with a fresh placeholder.
    pub fn new(table: &str, relname: &str, name2: Option<&str>, label: &str) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        ConstraintNaming {
            placeholder: format!(
                "pgshift_unnamed_{label}_{}",
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
            table: table.to_string(),
            name1: truncated(relname).to_string(),
            name2: name2.map(|n| n.to_string()),
            label: label.to_string(),
        }
    }

    /// The candidates Postgres tries in order.
    pub fn candidates(&self, n: usize) -> Vec<String> {
        numbered(&self.name1, self.name2.as_deref(), &self.label, n)
    }
}

/// `ChooseForeignKeyConstraintNameAddition`: the referencing columns joined by `_`.
pub fn fkey_addition(columns: &[&str]) -> String {
    let names: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
    addition(&names)
}

/// Puts `name` wherever `plan` holds `naming`'s placeholder: every step's SQL and
/// undo, and the summary.
pub fn give_constraint_name(plan: &mut Plan, naming: &ConstraintNaming, name: &str) {
    let quoted = ident::quote(name);
    for s in &mut plan.steps {
        s.sql = s.sql.replace(&naming.placeholder, &quoted);
        s.undo = s
            .undo
            .take()
            .map(|u| u.replace(&naming.placeholder, &quoted));
        s.names.retain(|n| n.placeholder != naming.placeholder);
    }
    plan.summary = plan.summary.replace(&naming.placeholder, &quoted);
}

/// Every unnamed constraint of `plan`, in step order.
pub fn constraint_namings(plan: &Plan) -> Vec<ConstraintNaming> {
    plan.steps
        .iter()
        .flat_map(|s| s.names.iter().cloned())
        .collect()
}

/// Puts `name` in step `i`, which builds an unnamed index (its SQL and the index
/// it names), and in the steps after it that use the index (ADD CONSTRAINT …
/// USING INDEX, their undo); forgets the naming.
pub fn give_name(steps: &mut [Step], i: usize, name: &str) {
    let quoted = ident::quote(name);
    let Some([step, later @ ..]) = steps.get_mut(i..) else {
        return;
    };
    if let StepKind::ConcurrentIndex { index, naming, .. } = &mut step.kind {
        if let Some(n) = naming.take() {
            step.sql = step.sql.replacen(PLACEHOLDER, &quoted, 1);
            step.undo = step.undo.take().map(|u| u.replace(PLACEHOLDER, &quoted));
            *index = ident::qualified(&n.schema, name);
            for s in later {
                s.sql = s.sql.replace(PLACEHOLDER, &quoted);
                s.undo = s.undo.take().map(|u| u.replace(PLACEHOLDER, &quoted));
            }
        }
    }
}

/// Names every unnamed index build and constraint of `plan` with Postgres' first
/// choice, which is its name unless something in the schema already has it
/// (`pgshift check`: offline, it cannot look).
pub fn name_offline(plan: &mut Plan) {
    let mut taken = Vec::new();
    for n in constraint_namings(plan) {
        let name = n
            .candidates(100)
            .into_iter()
            .find(|c| !taken.contains(c))
            .unwrap_or_default();
        give_constraint_name(plan, &n, &name);
        taken.push(name);
    }
    while let Some(n) = plan.steps.iter().find_map(|s| s.sequence.clone()) {
        let name = crate::sql::ident::qualified(&n.schema, &n.candidates(1).remove(0));
        give_sequence_name(plan, &n, &name);
    }
    for i in 0..plan.steps.len() {
        if let StepKind::ConcurrentIndex {
            naming: Some(n), ..
        } = &plan.steps[i].kind
        {
            let name = n.candidates(1).remove(0);
            give_name(&mut plan.steps, i, &name);
        }
    }
}

/// The naming of `CREATE INDEX` without a name (not a constraint: suffix `idx`).
pub fn unnamed_index(
    schema: &str,
    table: &str,
    params: &[Node],
    including: &[Node],
) -> IndexNaming {
    let elems: Vec<&IndexElem> = params
        .iter()
        .chain(including)
        .filter_map(|n| match n.node.as_ref()? {
            NodeEnum::IndexElem(e) => Some(&**e),
            _ => None,
        })
        .collect();
    IndexNaming {
        schema: schema.to_string(),
        table: truncated(table).to_string(),
        addition: addition(&column_names(&elems)),
        label: "idx".into(),
    }
}

/// `ChooseIndexColumnNames`: each element's name (a column's, or what
/// `FigureIndexColname` makes of an expression, else `expr`), numbered to be unique.
fn column_names(elems: &[&IndexElem]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in elems {
        let orig = if !e.indexcolname.is_empty() {
            e.indexcolname.clone()
        } else if !e.name.is_empty() {
            e.name.clone()
        } else {
            e.expr
                .as_deref()
                .and_then(|x| figure(x).map(|(name, _)| name))
                .unwrap_or_else(|| "expr".into())
        };
        let orig = truncated(&orig).to_string();
        let mut name = orig.clone();
        let mut i = 1;
        while out.contains(&name) {
            let suffix = i.to_string();
            name = format!("{}{suffix}", clip(&orig, MAX_IDENT - suffix.len()));
            i += 1;
        }
        out.push(name);
    }
    out
}

/// `ChooseIndexNameAddition`: names joined by `_`, stopping once 63 bytes are
/// reached (the result may be longer; `makeObjectName` cuts it).
fn addition(names: &[String]) -> String {
    let mut buf = String::new();
    for name in names {
        if !buf.is_empty() {
            buf.push('_');
        }
        buf.push_str(name);
        if buf.len() > MAX_IDENT {
            break;
        }
    }
    buf
}

/// The first `n` names Postgres tries: `label`, then `label1`, `label2`…
fn numbered(name1: &str, name2: Option<&str>, label: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match i {
            0 => make_object_name(name1, name2, label),
            _ => make_object_name(name1, name2, &format!("{label}{i}")),
        })
        .collect()
}

/// `makeObjectName`: `name1[_name2][_label]`, the longer name cut first so the
/// whole fits in 63 bytes, each cut at a character boundary.
pub fn make_object_name(name1: &str, name2: Option<&str>, label: &str) -> String {
    let overhead = usize::from(name2.is_some()) + label.len() + 1;
    let avail = MAX_IDENT.saturating_sub(overhead);
    let mut n1 = name1.len();
    let mut n2 = name2.map_or(0, str::len);
    while n1 + n2 > avail {
        if n1 > n2 {
            n1 -= 1;
        } else {
            n2 -= 1;
        }
    }
    let mut out = clip(name1, n1).to_string();
    if let Some(name2) = name2 {
        out.push('_');
        out.push_str(clip(name2, n2));
    }
    out.push('_');
    out.push_str(label);
    out
}

/// An identifier as Postgres keeps it: at most 63 bytes.
fn truncated(s: &str) -> &str {
    clip(s, MAX_IDENT)
}

/// `FigureColnameInternal` for the raw expressions an index may hold: a name and
/// its strength (2 for a real name, 1 for a fallback like a type name), or None.
fn figure(node: &Node) -> Option<(String, u8)> {
    let last_string = |nodes: &[Node]| {
        nodes.iter().rev().find_map(|n| match n.node.as_ref()? {
            NodeEnum::String(s) => Some(s.sval.clone()),
            _ => None,
        })
    };
    match node.node.as_ref()? {
        NodeEnum::ColumnRef(c) => match c.fields.last()?.node.as_ref()? {
            NodeEnum::String(s) => Some((s.sval.clone(), 2)),
            _ => None,
        },
        NodeEnum::AIndirection(i) => match i.indirection.last().and_then(|n| n.node.as_ref()) {
            Some(NodeEnum::String(s)) => Some((s.sval.clone(), 2)),
            _ => figure(i.arg.as_deref()?),
        },
        NodeEnum::FuncCall(f) => Some((last_string(&f.funcname)?, 2)),
        NodeEnum::AExpr(a) if a.kind == pg_query::protobuf::AExprKind::AexprNullif as i32 => {
            Some(("nullif".into(), 2))
        }
        NodeEnum::TypeCast(t) => {
            let inner = t.arg.as_deref().and_then(figure);
            match inner {
                Some((name, 2)) => Some((name, 2)),
                _ => {
                    let names = &t.type_name.as_ref()?.names;
                    Some((last_string(names)?, 1))
                }
            }
        }
        NodeEnum::CollateClause(c) => figure(c.arg.as_deref()?),
        NodeEnum::GroupingFunc(_) => Some(("grouping".into(), 2)),
        NodeEnum::CaseExpr(c) => match c.defresult.as_deref().and_then(figure) {
            Some((name, 2)) => Some((name, 2)),
            _ => Some(("case".into(), 1)),
        },
        NodeEnum::AArrayExpr(_) => Some(("array".into(), 1)),
        NodeEnum::RowExpr(_) => Some(("row".into(), 1)),
        NodeEnum::CoalesceExpr(_) => Some(("coalesce".into(), 2)),
        NodeEnum::MinMaxExpr(m) => Some((
            if m.op == pg_query::protobuf::MinMaxOp::IsGreatest as i32 {
                "greatest"
            } else {
                "least"
            }
            .into(),
            2,
        )),
        NodeEnum::SqlvalueFunction(f) => {
            use pg_query::protobuf::SqlValueFunctionOp as Op;
            let name = match Op::try_from(f.op).ok()? {
                Op::SvfopCurrentDate => "current_date",
                Op::SvfopCurrentTime | Op::SvfopCurrentTimeN => "current_time",
                Op::SvfopCurrentTimestamp | Op::SvfopCurrentTimestampN => "current_timestamp",
                Op::SvfopLocaltime | Op::SvfopLocaltimeN => "localtime",
                Op::SvfopLocaltimestamp | Op::SvfopLocaltimestampN => "localtimestamp",
                Op::SvfopCurrentRole => "current_role",
                Op::SvfopCurrentUser => "current_user",
                Op::SvfopUser => "user",
                Op::SvfopSessionUser => "session_user",
                Op::SvfopCurrentCatalog => "current_catalog",
                Op::SvfopCurrentSchema => "current_schema",
                _ => return None,
            };
            Some((name.into(), 2))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unnamed_constraints_are_numbered_and_cut_like_postgres() {
        let n = ConstraintNaming::new("app.t", "t", Some("a"), "check");
        assert!(n.placeholder.starts_with("pgshift_unnamed_check_"));
        assert_eq!(n.candidates(3), ["t_a_check", "t_a_check1", "t_a_check2"]);
        let n = ConstraintNaming::new("t", "t", None, "check");
        assert_eq!(n.candidates(1), ["t_check"]);
        // makeObjectName cuts the longer part first.
        let long = "l".repeat(60);
        let n = ConstraintNaming::new("t", &long, Some("col"), "fkey");
        let name = n.candidates(1).remove(0);
        assert_eq!(name.len(), 63);
        assert!(name.ends_with("_col_fkey"), "{name}");
        assert_eq!(fkey_addition(&["a", "b"]), "a_b");
    }

    #[test]
    fn two_unnamed_checks_in_one_plan_get_two_names() {
        let sql = "ALTER TABLE t ADD COLUMN c int CHECK (c > 0) CHECK (c < 10)";
        let finding = crate::sql::rules::review_sql(sql).expect("a finding");
        let mut plan = finding.rewrite.expect("a plan");
        name_offline(&mut plan);
        let all: Vec<&str> = plan.steps.iter().map(|s| s.sql.as_str()).collect();
        let all = all.join("\n");
        assert!(
            all.contains("ADD CONSTRAINT t_c_check CHECK (c > 0)"),
            "{all}"
        );
        assert!(
            all.contains("ADD CONSTRAINT t_c_check1 CHECK (c < 10)"),
            "{all}"
        );
        assert!(!all.contains("pgshift_unnamed"), "{all}");
        assert!(plan.steps.iter().all(|s| s.names.is_empty()));
    }

    fn naming(sql: &str) -> IndexNaming {
        let parsed = pg_query::parse(sql).unwrap();
        let node = parsed.protobuf.stmts[0]
            .stmt
            .as_ref()
            .unwrap()
            .node
            .clone()
            .unwrap();
        let NodeEnum::IndexStmt(s) = node else {
            panic!()
        };
        let rel = s.relation.as_ref().unwrap();
        unnamed_index(
            &rel.schemaname,
            &rel.relname,
            &s.index_params,
            &s.index_including_params,
        )
    }

    fn first(sql: &str) -> String {
        naming(sql).candidates(1).remove(0)
    }

    #[test]
    fn names_postgres_gives() {
        // Each checked against Postgres 15 (tests/differential has the live check).
        assert_eq!(first("CREATE INDEX ON t (a)"), "t_a_idx");
        assert_eq!(first("CREATE UNIQUE INDEX ON app.t (a, b)"), "t_a_b_idx");
        assert_eq!(first("CREATE INDEX ON t (lower(c))"), "t_lower_idx");
        assert_eq!(first("CREATE INDEX ON t ((a + b))"), "t_expr_idx");
        assert_eq!(first("CREATE INDEX ON t ((d ->> 'k'), a)"), "t_expr_a_idx");
        assert_eq!(first("CREATE INDEX ON t ((a::text))"), "t_a_idx");
        assert_eq!(first("CREATE INDEX ON t ((1::text))"), "t_text_idx");
        assert_eq!(
            first("CREATE INDEX ON t (lower(a), lower(b))"),
            "t_lower_lower1_idx"
        );
        assert_eq!(first("CREATE INDEX ON t (c) INCLUDE (a)"), "t_c_a_idx");
        assert_eq!(
            first("CREATE INDEX ON t (coalesce(a, b))"),
            "t_coalesce_idx"
        );
        assert_eq!(first("CREATE INDEX ON \"T\" (\"A\")"), "T_A_idx");
    }

    #[test]
    fn collisions_number_the_label() {
        let n = naming("CREATE INDEX ON t (a)");
        assert_eq!(n.candidates(3), ["t_a_idx", "t_a_idx1", "t_a_idx2"]);
    }

    #[test]
    fn long_names_are_cut_like_postgres_cuts_them() {
        let table = "a_table_with_a_rather_long_name_that_goes_on_and_on_for_a_while";
        let col = "a_column_with_an_equally_long_name_to_make_the_index_name_overf";
        // Both cut in turn, the longer first, to 29 bytes each.
        assert_eq!(
            make_object_name(table, Some(col), "idx"),
            "a_table_with_a_rather_long_na_a_column_with_an_equally_long_idx"
        );
        // Multi-byte characters are never split.
        let name = make_object_name("tä", Some(&"ü".repeat(40)), "idx");
        assert!(name.len() <= 63 && name.ends_with("_idx"), "{name}");
    }
}

/// The NOTICEs Postgres' scanner raises for `sql`: one per identifier longer than
/// 63 bytes (`identifier "…" will be truncated to "…"`), as (full, truncated). A
/// statement pgshift runs in another form never reaches that scanner.
pub fn truncations(sql: &str) -> Vec<(String, String)> {
    let Ok(scanned) = pg_query::scan(sql) else {
        return Vec::new();
    };
    scanned
        .tokens
        .iter()
        .filter(|t| t.token == pg_query::protobuf::Token::Ident as i32)
        .filter_map(|t| sql.get(usize::try_from(t.start).ok()?..usize::try_from(t.end).ok()?))
        .filter_map(|text| {
            let name = match text.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                Some(quoted) => quoted.replace("\"\"", "\""),
                None if text.starts_with(['U', 'u']) && text.get(1..2) == Some("&") => return None,
                None => text.to_ascii_lowercase(),
            };
            (name.len() > MAX_IDENT).then(|| (name.clone(), truncated(&name).to_string()))
        })
        .collect()
}

#[cfg(test)]
mod truncation_tests {
    #[test]
    fn long_identifiers_are_reported_once_each() {
        let long = "A".repeat(70);
        let sql = format!("CREATE INDEX ON t ({long}, \"{long}\", short)");
        let t = super::truncations(&sql);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0], ("a".repeat(70), "a".repeat(63)));
        assert_eq!(t[1], (long.clone(), "A".repeat(63)));
    }
}

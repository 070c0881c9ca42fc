//! Steps that fill a new column's existing rows, shared by `add-column`: the sequence
//! behind a serial column, its `nextval` default, and one batch of the backfill.

use super::alter_table::One;
use crate::sql::ident;
use crate::sql::naming::SequenceNaming;
use crate::sql::plan::{Lock, Placement, Step, StepKind};
use pg_query::protobuf::{a_const, AConst, FuncCall, Node};
use pg_query::NodeEnum;

/// `CREATE SEQUENCE … OWNED BY` for a serial `column`; it must come after the ADD
/// COLUMN. Returns the step and the sequence name (schema-qualified, quoted).
pub(super) fn sequence(one: &One<'_>, column: &str, sql_type: &str) -> (Step, String) {
    // Named by the executor, in the table's schema (see `SequenceNaming`).
    let naming = SequenceNaming::new(&one.table(), &one.rel.schemaname, &one.rel.relname, column);
    let seq = naming.placeholder.clone();
    // The executor gives it the table's owner, between the two, when that is
    // not the role running the statement (OWNED BY needs the same owner).
    let sql = format!(
        "CREATE SEQUENCE {seq} AS {sql_type}; ALTER SEQUENCE {seq} OWNED BY {}.{}",
        one.table(),
        ident::quote(column)
    );
    let step = Step {
        sequence: Some(naming),
        ..Step::quick(sql, Lock::AccessShare)
    };
    (step, seq)
}

/// `nextval('<seq>')` as an expression node.
pub(super) fn nextval(seq: &str) -> Node {
    let arg = AConst {
        val: Some(a_const::Val::Sval(pg_query::protobuf::String {
            sval: seq.into(),
        })),
        location: -1,
        ..Default::default()
    };
    Node {
        node: Some(NodeEnum::FuncCall(Box::new(FuncCall {
            funcname: vec![super::string_node("nextval")],
            args: vec![Node {
                node: Some(NodeEnum::AConst(arg)),
            }],
            funcformat: pg_query::protobuf::CoercionForm::CoerceExplicitCall as i32,
            location: -1,
            ..Default::default()
        }))),
    }
}

/// One batch of the backfill: rows still NULL get `value`. The outer `IS NULL` keeps
/// values written since SET DEFAULT, and rows of other partitions that share a ctid.
pub(super) fn batch(one: &One<'_>, column: &str, value: &str) -> Step {
    let t = one.table();
    let c = ident::quote(column);
    Step::long(
        format!("UPDATE {t} SET {c} = {value} WHERE ctid = ANY (ARRAY(SELECT ctid FROM {t} WHERE {c} IS NULL LIMIT $1::bigint)) AND {c} IS NULL"),
        Lock::RowExclusive,
        Placement::OwnTransaction,
    )
    .with_kind(StepKind::Backfill {
        by_pages: format!("UPDATE {t} SET {c} = {value} WHERE ctid >= $1::tid AND ctid < $2::tid AND {c} IS NULL"),
        rest: format!("UPDATE {t} SET {c} = {value} WHERE {c} IS NULL"),
        table: t,
        online: None,
    })
}

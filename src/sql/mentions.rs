//! Statements that name an index without being DDL pgshift rewrites: a comment on
//! it, an ALTER INDEX, a constraint built on it. When the index's build was
//! deferred to after the transaction, such a statement must follow it there.

use super::ident;
use super::rules::name_list;
use pg_query::protobuf::{AlterTableType, ConstrType, ObjectType};
use pg_query::NodeEnum;

/// A statement that needs indexes to exist, and the command tag Postgres answers
/// it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexUse {
    pub tag: &'static str,
    /// The indexes it names, as SQL (schema-qualified where the statement was).
    pub indexes: Vec<String>,
}

/// True when `name` stands in `text` as a whole name (compared as given: lower
/// both for a case-blind look): `items` is not in `line_items`, `log` not in
/// `pg_catalog`. An empty name is in no text.
pub fn mentions(text: &str, name: &str) -> bool {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$');
    !name.is_empty()
        && text.match_indices(name).any(|(at, _)| {
            !word(text[..at].chars().next_back()) && !word(text[at + name.len()..].chars().next())
        })
}

pub fn index_use(node: &NodeEnum) -> Option<IndexUse> {
    let index = ObjectType::ObjectIndex as i32;
    let one = |tag: &'static str, name: String| {
        Some(IndexUse {
            tag,
            indexes: vec![name],
        })
    };
    match node {
        NodeEnum::CommentStmt(c) if c.objtype == index => match c.object.as_ref()?.node.as_ref()? {
            NodeEnum::List(l) => one("COMMENT", name_list(&l.items)),
            _ => None,
        },
        NodeEnum::AlterTableStmt(a) if a.objtype == index => {
            one("ALTER INDEX", ident::relation(a.relation.as_ref()?))
        }
        NodeEnum::RenameStmt(r) if r.rename_type == index => {
            one("ALTER INDEX", ident::relation(r.relation.as_ref()?))
        }
        NodeEnum::AlterObjectSchemaStmt(a) if a.object_type == index => {
            one("ALTER INDEX", ident::relation(a.relation.as_ref()?))
        }
        NodeEnum::AlterTableStmt(a) if a.objtype == ObjectType::ObjectTable as i32 => {
            let rel = a.relation.as_ref()?;
            let indexes: Vec<String> = a
                .cmds
                .iter()
                .filter_map(|c| match c.node.as_ref()? {
                    NodeEnum::AlterTableCmd(cmd) => Some(cmd),
                    _ => None,
                })
                .filter_map(|cmd| {
                    if cmd.subtype == AlterTableType::AtReplicaIdentity as i32 {
                        return match cmd.def.as_ref()?.node.as_ref()? {
                            NodeEnum::ReplicaIdentityStmt(r) if !r.name.is_empty() => {
                                Some(ident::sibling(rel, &r.name))
                            }
                            _ => None,
                        };
                    }
                    match cmd.def.as_ref()?.node.as_ref()? {
                        NodeEnum::Constraint(c)
                            if !c.indexname.is_empty()
                                && matches!(
                                    ConstrType::try_from(c.contype),
                                    Ok(ConstrType::ConstrPrimary | ConstrType::ConstrUnique)
                                ) =>
                        {
                            Some(ident::sibling(rel, &c.indexname))
                        }
                        _ => None,
                    }
                })
                .collect();
            (!indexes.is_empty()).then_some(IndexUse {
                tag: "ALTER TABLE",
                indexes,
            })
        }
        _ => None,
    }
}

/// True when `a` and `b` (SQL names) may name the same index: equal, or equal in
/// their last part with at least one of them unqualified.
pub fn same_index(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let (pa, pb) = (ident::name_parts(a), ident::name_parts(b));
    pa.last() == pb.last() && (pa.len() == 1 || pb.len() == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_counts_only_whole() {
        assert!(mentions("select * from orders", "orders"));
        assert!(mentions("select * from public.\"orders\" o", "orders"));
        assert!(mentions("update orders set", "orders"));
        assert!(!mentions("select * from line_items", "items"));
        assert!(!mentions("select * from pg_catalog.pg_class", "log"));
        assert!(!mentions("select * from orders2", "orders"));
        assert!(mentions("select 1; select * from items", "items"));
        // A constraint in a server message, in its language's quotes.
        let en = r#"new row for relation "orders" violates check constraint "note_ok" (23514)"#;
        assert!(mentions(en, "note_ok"));
        assert!(!mentions(en, "note"), "inside a longer name");
        assert!(!mentions(en, "ok"));
        assert!(mentions("la contrainte « note_ok » (23514)", "note_ok"));
        assert!(mentions(r#"constraint "a""b" (23514)"#, r#"a""b"#));
        assert!(!mentions(en, ""));
    }
    use crate::sql::rules::parse_one;

    fn uses(sql: &str) -> Option<(&'static str, Vec<String>)> {
        index_use(&parse_one(sql)).map(|u| (u.tag, u.indexes))
    }

    #[test]
    fn statements_that_name_an_index() {
        assert_eq!(
            uses("COMMENT ON INDEX auth.users_key IS 'x'"),
            Some(("COMMENT", vec!["auth.users_key".into()]))
        );
        assert_eq!(
            uses("ALTER INDEX i SET (fillfactor = 90)"),
            Some(("ALTER INDEX", vec!["i".into()]))
        );
        assert_eq!(
            uses("ALTER INDEX \"I\" RENAME TO j"),
            Some(("ALTER INDEX", vec!["\"I\"".into()]))
        );
        assert_eq!(
            uses("ALTER TABLE app.t ADD CONSTRAINT t_key UNIQUE USING INDEX t_idx"),
            Some(("ALTER TABLE", vec!["app.t_idx".into()]))
        );
        assert_eq!(
            uses("ALTER TABLE t REPLICA IDENTITY USING INDEX t_idx"),
            Some(("ALTER TABLE", vec!["t_idx".into()]))
        );
        assert_eq!(uses("COMMENT ON TABLE t IS 'x'"), None);
        assert_eq!(uses("ALTER TABLE t ADD COLUMN c int"), None);
    }

    #[test]
    fn index_names_match_with_or_without_schema() {
        assert!(same_index("auth.k", "auth.k"));
        assert!(same_index("k", "auth.k"));
        assert!(!same_index("a.k", "b.k"));
        assert!(!same_index("\"a.k\"", "k"));
    }
}

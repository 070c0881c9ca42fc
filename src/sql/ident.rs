//! Identifiers as Postgres prints them: quoted only when they must be.

use pg_query::protobuf::RangeVar;

/// Reserved keywords that cannot be used as bare column or table names.
const RESERVED: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "column",
    "constraint",
    "create",
    "current_catalog",
    "current_date",
    "current_role",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "from",
    "grant",
    "group",
    "having",
    "in",
    "initially",
    "intersect",
    "into",
    "lateral",
    "leading",
    "limit",
    "localtime",
    "localtimestamp",
    "not",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "placing",
    "primary",
    "references",
    "returning",
    "select",
    "session_user",
    "some",
    "symmetric",
    "system_user",
    "table",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "variadic",
    "when",
    "where",
    "window",
    "with",
    "authorization",
    "binary",
    "collation",
    "concurrently",
    "cross",
    "current_schema",
    "freeze",
    "full",
    "ilike",
    "inner",
    "is",
    "isnull",
    "join",
    "left",
    "like",
    "natural",
    "notnull",
    "outer",
    "overlaps",
    "right",
    "similar",
    "tablesample",
    "verbose",
];

/// `name` as an SQL identifier: bare when it is lower case and not reserved, else quoted.
pub fn quote(name: &str) -> String {
    let bare = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !RESERVED.contains(&name);
    if bare {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// A string literal, with standard_conforming_strings.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `schema.name` or `name`, each part quoted as needed.
pub fn qualified(schema: &str, name: &str) -> String {
    if schema.is_empty() {
        quote(name)
    } else {
        format!("{}.{}", quote(schema), quote(name))
    }
}

/// The relation a RangeVar names, as SQL.
pub fn relation(rv: &RangeVar) -> String {
    qualified(&rv.schemaname, &rv.relname)
}

/// The schema of `rv` prefixed to `name`: indexes and constraints live in their table's schema.
pub fn sibling(rv: &RangeVar, name: &str) -> String {
    qualified(&rv.schemaname, name)
}

/// The dot-separated parts of a SQL name (`app."T.x"` → `app`, `"T.x"`), split
/// outside double quotes; each part as written (quoted or not).
pub fn name_parts(name: &str) -> Vec<&str> {
    let mut quoted = false;
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, c) in name.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '.' if !quoted => {
                parts.push(&name[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&name[start..]);
    parts
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character
/// boundary (Postgres' `pg_mbcliplen` for UTF-8).
pub fn clip(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Postgres' NAMEDATALEN - 1: longer identifiers are truncated.
pub const MAX_IDENT: usize = 63;

/// A generated name like Postgres' `ChooseRelationName`: `table_col_suffix`, with
/// the parts cut so the whole fits in 63 bytes.
pub fn generated_name(table: &str, columns: &[&str], suffix: &str) -> String {
    let mut name = table.to_string();
    for c in columns {
        name.push('_');
        name.push_str(c);
    }
    let room = MAX_IDENT.saturating_sub(suffix.len() + 1);
    format!("{}_{suffix}", clip(&name, room))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_when_needed() {
        assert_eq!(quote("orders"), "orders");
        assert_eq!(quote("Orders"), "\"Orders\"");
        assert_eq!(quote("user"), "\"user\"");
        assert_eq!(quote("a b\"c"), "\"a b\"\"c\"");
        assert_eq!(quote("1st"), "\"1st\"");
        assert_eq!(qualified("app", "My Table"), "app.\"My Table\"");
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn names_split_outside_quotes() {
        assert_eq!(name_parts("t"), ["t"]);
        assert_eq!(name_parts("app.\"T.x\""), ["app", "\"T.x\""]);
        assert_eq!(name_parts("db.app.t"), ["db", "app", "t"]);
        assert_eq!(clip("tä", 2), "t");
    }

    #[test]
    fn generated_names_fit() {
        assert_eq!(generated_name("t", &["c"], "not_null"), "t_c_not_null");
        let long = "x".repeat(70);
        let n = generated_name(&long, &["c"], "check");
        assert_eq!(n.len(), MAX_IDENT);
        assert!(n.ends_with("_check"));
    }
}

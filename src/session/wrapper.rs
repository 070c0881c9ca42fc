//! The wrapper that makes a statement prepared again return what the client was
//! told it returns: its columns renamed c1…cn, the known ones selected in order
//! under their names, cast back where the type changed and the cast loses
//! nothing (or fails loudly). Pure functions, for `statements`.

use crate::sql::ident::quote;
use crate::wire::backend::Field;

/// Same column names, types and type modifiers: nothing to renew.
pub fn same_shape(a: &[Field], b: &[Field]) -> bool {
    same_types(a, b) && a.iter().zip(b).all(|(x, y)| x.typmod == y.typmod)
}

/// Same column names and types: the client reads the result as it was told (a
/// type modifier does not change how a value is sent).
pub fn same_types(a: &[Field], b: &[Field]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.name == y.name && x.type_oid == y.type_oid)
}

/// For each column the client knows, the column of `now` that stands for it: the
/// first one of that name not taken yet (after a cutover, `SELECT *` gives the
/// column last, and the old one where it stood under another name; columns
/// pgshift added are left out). None when one cannot be found.
fn matches(known: &[Field], now: &[Field]) -> Option<Vec<usize>> {
    let mut taken = vec![false; now.len()];
    let mut out = Vec::with_capacity(known.len());
    for k in known {
        let i = (0..now.len()).find(|&i| !taken[i] && now[i].name == k.name)?;
        taken[i] = true;
        out.push(i);
    }
    Some(out)
}

const INT2: u32 = 21;
const INT4: u32 = 23;
const INT8: u32 = 20;
const TEXT: u32 = 25;
const VARCHAR: u32 = 1043;
const NUMERIC: u32 = 1700;
const FLOAT4: u32 = 700;
const FLOAT8: u32 = 701;

/// A cast from `from` back to `to` (without a type modifier) keeps every value
/// or fails on the ones it cannot keep (an integer out of range): never a
/// silent change (numeric to integer rounds, varchar(n) truncates, float8 to
/// float4 rounds; those are not renewed).
fn keeps_values(from: u32, to: u32) -> bool {
    let int = |t| matches!(t, INT2 | INT4 | INT8);
    let text = |t| matches!(t, TEXT | VARCHAR);
    int(from) && int(to)
        || text(from) && text(to)
        || int(from) && to == NUMERIC
        || from == FLOAT4 && to == FLOAT8
}

/// Per known column: its position in `now`, and the type to cast it back to (by
/// oid). None when the columns do not match up or a cast could change a value.
pub fn casts(known: &[Field], now: &[Field]) -> Option<Vec<(usize, Option<u32>)>> {
    let at = matches(known, now)?;
    known
        .iter()
        .zip(at)
        .map(|(k, i)| {
            let from = now[i].type_oid;
            match from == k.type_oid {
                true => Some((i, None)),
                false => keeps_values(from, k.type_oid).then_some((i, Some(k.type_oid))),
            }
        })
        .collect()
}

const WRAP_START: &str = "WITH pgshift_renewed (";
const WRAP_MIDDLE: &str = ") AS (\n";
const WRAP_END: &str = "\n/* pgshift_renewed */) SELECT ";

/// The wrapper around `text`, per `casts` (`types`: the SQL name of each cast's
/// type, in the same order).
pub fn wrap(
    text: &str,
    known: &[Field],
    now: &[Field],
    casts: &[(usize, Option<u32>)],
    types: &[Option<String>],
) -> String {
    let body = text.trim_end().trim_end_matches(';');
    let inner: Vec<String> = (1..=now.len()).map(|i| format!("c{i}")).collect();
    let outer: Vec<String> = known
        .iter()
        .zip(casts)
        .zip(types)
        .map(|((k, (i, _)), ty)| match ty {
            Some(ty) => format!("c{}::{ty} AS {}", i + 1, quote(&k.name)),
            None => format!("c{} AS {}", i + 1, quote(&k.name)),
        })
        .collect();
    format!(
        "{WRAP_START}{}{WRAP_MIDDLE}{body}{WRAP_END}{} FROM pgshift_renewed",
        inner.join(", "),
        outer.join(", ")
    )
}

/// The client's own text of a statement pgshift wrapped before (the wrapper fits
/// what the client was told then, not now).
pub fn unwrap(text: &str) -> &str {
    let Some(rest) = text.strip_prefix(WRAP_START) else {
        return text;
    };
    let (Some(start), Some(end)) = (rest.find(WRAP_MIDDLE), rest.rfind(WRAP_END)) else {
        return text;
    };
    rest.get(start + WRAP_MIDDLE.len()..end).unwrap_or(text)
}

/// The start of the command tag of the client's own statement `sql` where the
/// wrapper's `SELECT n` is not it: `INSERT 0 `, `UPDATE `, `DELETE ` (a DML
/// statement with RETURNING, the wrapper's CTE). Parses: run it on a parser thread.
pub fn command_tag(sql: &str) -> Option<&'static str> {
    use crate::sql::analysis::MAX_NESTING;
    use pg_query::NodeEnum;
    if crate::sql::nesting::bound(sql, MAX_NESTING)? > MAX_NESTING {
        return None;
    }
    let parsed = pg_query::parse(sql).ok()?;
    let [raw] = parsed.protobuf.stmts.as_slice() else {
        return None;
    };
    match raw.stmt.as_ref()?.node.as_ref()? {
        NodeEnum::InsertStmt(_) => Some("INSERT 0 "),
        NodeEnum::UpdateStmt(_) => Some("UPDATE "),
        NodeEnum::DeleteStmt(_) => Some("DELETE "),
        _ => None,
    }
}

/// `{23,25}` → [23, 25].
pub fn oids(text: &str) -> Option<Vec<u32>> {
    let inner = text.strip_prefix('{')?.strip_suffix('}')?;
    if inner.is_empty() {
        return Some(Vec::new());
    }
    inner.split(',').map(|s| s.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dml_statements_keep_their_own_tag() {
        let tag = |sql: &str| {
            crate::sql::parser::run_blocking(sql.len(), {
                let sql = sql.to_string();
                move || command_tag(&sql)
            })
            .unwrap()
        };
        assert_eq!(
            tag("INSERT INTO t (a) VALUES ($1) RETURNING id"),
            Some("INSERT 0 ")
        );
        assert_eq!(
            tag("WITH x AS (SELECT 1) UPDATE t SET a = 2 RETURNING a"),
            Some("UPDATE ")
        );
        assert_eq!(
            tag("delete from t where id = $1 returning *"),
            Some("DELETE ")
        );
        assert_eq!(tag("SELECT * FROM t"), None);
        assert_eq!(
            tag("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d"),
            None
        );
        assert_eq!(tag("SELECT 1; SELECT 2"), None);
    }

    fn field(name: &str, type_oid: u32) -> Field {
        Field {
            name: name.into(),
            table: 1,
            attnum: 1,
            type_oid,
            typmod: -1,
        }
    }

    #[test]
    fn the_wrapper_returns_the_known_columns_and_comes_off_again() {
        let known = [
            field("id", INT8),
            field("amount", INT4),
            field("note", TEXT),
        ];
        // After a cutover, `SELECT *`: the old column where it stood, the new last.
        let now = [
            field("id", INT8),
            field("amount__pgshift_old", INT4),
            field("note", TEXT),
            field("amount", INT8),
        ];
        let plan = casts(&known, &now).unwrap();
        assert_eq!(plan, [(0, None), (3, Some(INT4)), (2, None)]);
        let types = [None, Some("integer".to_string()), None];
        let text = "select * from orders where id = $1;  ";
        let wrapped = wrap(text, &known, &now, &plan, &types);
        assert_eq!(
            wrapped,
            "WITH pgshift_renewed (c1, c2, c3, c4) AS (\nselect * from orders where id = $1\n\
             /* pgshift_renewed */) SELECT c1 AS id, c4::integer AS amount, c3 AS note FROM pgshift_renewed"
        );
        assert_eq!(unwrap(&wrapped), "select * from orders where id = $1");
        assert_eq!(unwrap(text), text);
        // A column the client knows that is gone: nothing fits.
        assert_eq!(casts(&[field("gone", INT4)], &now), None);
    }

    #[test]
    fn only_casts_that_keep_every_value_are_made() {
        let known = [field("amount", INT4)];
        assert!(casts(&known, &[field("amount", INT8)]).is_some());
        // numeric(12,2) back to integer would round 1.50 to 2.
        assert_eq!(casts(&known, &[field("amount", NUMERIC)]), None);
        assert_eq!(casts(&[field("x", FLOAT4)], &[field("x", FLOAT8)]), None);
        assert!(casts(&[field("x", NUMERIC)], &[field("x", INT4)]).is_some());
        assert!(casts(&[field("x", VARCHAR)], &[field("x", TEXT)]).is_some());
    }

    #[test]
    fn parameter_types_are_read() {
        assert_eq!(oids("{}"), Some(vec![]));
        assert_eq!(oids("{20,23}"), Some(vec![20, 23]));
        assert_eq!(oids("{20,x}"), None);
    }
}

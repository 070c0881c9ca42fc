//! The catalog check behind `alter-column-type`: a type change runs only when the
//! column's current type is binary-coercible to the target, which Postgres then
//! does in the catalog alone. Anything else would rewrite the table under ACCESS
//! EXCLUSIVE, and is refused with 0A000.

use super::conn::Conn;
use super::steps::Failure;
use crate::sql::ident::literal;
use crate::wire::backend::PgError;

/// Types whose length or precision modifier only constrains values: widening it
/// (or dropping it) needs no rewrite (Postgres' varchar/varbit/timestamp/time
/// support functions say so).
const WIDENS_IN_PLACE: &[&str] = &[
    "varchar",
    "varbit",
    "timestamp",
    "timestamptz",
    "time",
    "timetz",
];

pub async fn check<C: Conn>(
    conn: &mut C,
    table: &str,
    column: &str,
    target: &str,
    typmod: i32,
) -> Result<(), Failure> {
    let sql = format!(
        "SELECT t.typname::text, a.atttypmod, pg_catalog.format_type(a.atttypid, a.atttypmod), \
         (a.atttypid = pg_catalog.to_regtype({target}))::text, \
         EXISTS (SELECT 1 FROM pg_catalog.pg_cast c WHERE c.castsource = a.atttypid \
                 AND c.casttarget = pg_catalog.to_regtype({target}) AND c.castmethod = 'b')::text \
         FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
         WHERE a.attrelid = pg_catalog.to_regclass({table}) AND a.attname = {column} AND NOT a.attisdropped",
        target = literal(target),
        table = literal(table),
        column = literal(column),
    );
    let reply = conn.query(&sql).await?;
    if reply.rows.is_empty() {
        // No such column (or a bad type name): the server's own error says it best.
        return Ok(());
    }
    let v = |i: usize| reply.cell(i);
    let (name, old_mod, shown, same, binary) = (v(0), v(1).parse().unwrap_or(-1), v(2), v(3), v(4));
    if coercible(&name, old_mod, same == "true", binary == "true", typmod) {
        return Ok(());
    }
    Err(Failure::Ours(
        PgError::error(
            "0A000",
            format!(
                "pgshift refused ALTER TABLE: changing {table}.{column} from {shown} to {target} rewrites the whole table and its indexes under ACCESS EXCLUSIVE"
            ),
        )
        .with_hint(
            "Only binary-coercible changes (a wider varchar, varchar to text, a larger numeric precision) run in place. \
             Use an expand/contract migration for this one (pgshift rolls out only type changes that always rewrite, such as int to bigint). \
             (rule alter-column-type)",
        ),
    ))
}

/// Whether Postgres changes the type without touching the rows.
fn coercible(old: &str, old_mod: i32, same_type: bool, binary_cast: bool, new_mod: i32) -> bool {
    if same_type {
        if new_mod == -1 {
            return true;
        }
        if old_mod == -1 {
            return false;
        }
        return match old {
            "numeric" => {
                let (p, s) = ((old_mod - 4) >> 16, (old_mod - 4) & 0xffff);
                let (np, ns) = ((new_mod - 4) >> 16, (new_mod - 4) & 0xffff);
                ns == s && np >= p
            }
            _ => WIDENS_IN_PLACE.contains(&old) && new_mod >= old_mod,
        };
    }
    // varchar → text, text → varchar, cidr → inet: a binary cast, and no new limit.
    binary_cast && new_mod == -1
}

#[cfg(test)]
mod tests {
    use super::coercible;

    #[test]
    fn widening_and_binary_casts_only() {
        assert!(coercible("varchar", 24, true, false, 44));
        assert!(!coercible("varchar", 44, true, false, 24));
        assert!(coercible("varchar", 24, true, false, -1));
        assert!(!coercible("varchar", -1, true, false, 44));
        assert!(coercible(
            "numeric",
            ((10 << 16) | 2) + 4,
            true,
            false,
            ((12 << 16) | 2) + 4
        ));
        assert!(!coercible(
            "numeric",
            ((10 << 16) | 2) + 4,
            true,
            false,
            ((12 << 16) | 3) + 4
        ));
        assert!(coercible("varchar", 24, false, true, -1));
        assert!(!coercible("text", -1, false, true, 24));
        assert!(!coercible("int4", -1, false, false, -1));
        assert!(!coercible("bpchar", 14, true, false, 24));
    }
}

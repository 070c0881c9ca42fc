//! How much a statement could stall other sessions, read from the catalog in the
//! client's own session (so names resolve on its search_path, and what its own
//! transaction created is visible): a rule intervenes only where the statement as
//! written would hold up someone else.

use super::conn::Conn;
use std::io;

/// What the catalog says about one relation a statement locks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// A temporary table (or an index of one): no other session can use it.
    pub temp: bool,
    /// Created by the client's own open transaction (a savepoint included): no
    /// other session can see it until that commits.
    pub new: bool,
    /// Bytes of the table with its indexes and TOAST, partitions summed (for an
    /// index: its table's).
    pub bytes: u64,
    /// A materialized view that holds data (REFRESH … CONCURRENTLY needs it).
    pub populated: bool,
    /// A materialized view with a valid unique index on plain columns and without
    /// a WHERE clause (what REFRESH … CONCURRENTLY needs).
    pub unique_index: bool,
    /// A partitioned table with a default partition (DETACH PARTITION …
    /// CONCURRENTLY is refused then).
    pub default_partition: bool,
    /// A partitioned table (Postgres 15 adds no foreign key NOT VALID and no
    /// constraint USING INDEX on one).
    pub partitioned: bool,
}

/// How much the statement as written could stall others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Risk {
    /// Nobody else can see what it locks, or it names a relation that does not
    /// exist (Postgres refuses it at once): it runs as written, untouched.
    None,
    /// It locks only small tables: as written, under lock_timeout with retries.
    Small,
    /// Judge it by its rule.
    Rule,
}

/// The relation's facts, read in the client's session with the extended protocol
/// (the name is a parameter). None when it does not exist; an error only when the
/// session itself fails. Every name is qualified, and nothing here can raise an
/// error that would fail the client's transaction.
const LOOK: &str = "\
WITH r AS (SELECT pg_catalog.to_regclass($1) AS oid),
t AS (
  SELECT COALESCE((SELECT i.indrelid FROM pg_catalog.pg_index i WHERE i.indexrelid OPERATOR(pg_catalog.=) r.oid), r.oid) AS oid
  FROM r WHERE r.oid IS NOT NULL),
x AS (SELECT pg_catalog.pg_current_xact_id_if_assigned()::pg_catalog.text::pg_catalog.numeric AS top)
SELECT (c.relpersistence OPERATOR(pg_catalog.=) 't')::pg_catalog.text,
  (CASE WHEN x.top IS NULL OR a.xmin IS NULL OR pg_catalog.age(a.xmin) OPERATOR(pg_catalog.>) 0 THEN false
   ELSE (SELECT CASE WHEN d.n OPERATOR(pg_catalog.>=) 2147483648 THEN false
                ELSE pg_catalog.pg_xact_status((x.top OPERATOR(pg_catalog.+) d.n)::pg_catalog.text::pg_catalog.xid8) OPERATOR(pg_catalog.=) 'in progress' END
         FROM (SELECT pg_catalog.mod(pg_catalog.mod(a.xmin::pg_catalog.text::pg_catalog.numeric OPERATOR(pg_catalog.-) pg_catalog.mod(x.top, 4294967296), 4294967296) OPERATOR(pg_catalog.+) 4294967296, 4294967296) AS n) d)
   END)::pg_catalog.text,
  GREATEST(pg_catalog.pg_total_relation_size(c.oid),
    COALESCE((SELECT pg_catalog.sum(pg_catalog.pg_total_relation_size(p.relid)) FROM pg_catalog.pg_partition_tree(c.oid) p), 0))::pg_catalog.text,
  c.relispopulated::pg_catalog.text,
  (EXISTS (SELECT FROM pg_catalog.pg_index u WHERE u.indrelid OPERATOR(pg_catalog.=) c.oid AND u.indisunique AND u.indisvalid
     AND u.indpred IS NULL AND u.indexprs IS NULL))::pg_catalog.text,
  (EXISTS (SELECT FROM pg_catalog.pg_partitioned_table pt WHERE pt.partrelid OPERATOR(pg_catalog.=) c.oid
     AND pt.partdefid OPERATOR(pg_catalog.<>) 0::pg_catalog.oid))::pg_catalog.text,
  (c.relkind OPERATOR(pg_catalog.=) 'p')::pg_catalog.text
FROM t JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) t.oid
LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.oid AND a.attnum OPERATOR(pg_catalog.=) -1
CROSS JOIN x";

/// Looks `name` (SQL, as the statement wrote it) up in the client's session.
/// Ok(None) when it does not exist, or cannot be looked up without risk of an
/// error (a name of more than two parts is Postgres' to refuse).
pub async fn look<C: Conn>(conn: &mut C, name: &str) -> io::Result<Option<Seen>> {
    if crate::sql::ident::name_parts(name).len() > 2 {
        return Ok(None);
    }
    let reply = conn.query_params(LOOK, &[name]).await?;
    if reply.error.is_some() || reply.rows.is_empty() {
        return Ok(None);
    }
    let yes = |i: usize| reply.cell(i) == "true";
    Ok(Some(Seen {
        temp: yes(0),
        new: yes(1),
        bytes: reply.cell(2).parse().unwrap_or(u64::MAX),
        populated: yes(3),
        unique_index: yes(4),
        default_partition: yes(5),
        partitioned: yes(6),
    }))
}

/// The risk of a statement that locks `seen` (None for a relation that does not
/// exist), with `small` the size at or under which a table is small (0: none is).
pub fn judge(seen: &[Option<Seen>], small: u64) -> Risk {
    if seen.is_empty() {
        return Risk::Rule;
    }
    let hidden = |s: &Option<Seen>| s.as_ref().is_none_or(|s| s.temp || s.new);
    if seen.iter().all(hidden) {
        return Risk::None;
    }
    if small > 0
        && seen
            .iter()
            .all(|s| hidden(s) || s.as_ref().is_some_and(|s| s.bytes <= small))
    {
        return Risk::Small;
    }
    Risk::Rule
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(temp: bool, new: bool, bytes: u64) -> Option<Seen> {
        Some(Seen {
            temp,
            new,
            bytes,
            populated: true,
            unique_index: false,
            default_partition: false,
            partitioned: false,
        })
    }

    #[test]
    fn hidden_missing_small_and_large() {
        let small = 1000;
        assert_eq!(judge(&[], small), Risk::Rule);
        assert_eq!(judge(&[None], small), Risk::None);
        assert_eq!(judge(&[seen(true, false, 1 << 30)], small), Risk::None);
        assert_eq!(
            judge(&[seen(false, true, 1 << 30), None], small),
            Risk::None
        );
        assert_eq!(judge(&[seen(false, false, 1000)], small), Risk::Small);
        assert_eq!(
            judge(
                &[seen(false, false, 1000), seen(true, false, 1 << 30)],
                small
            ),
            Risk::Small
        );
        assert_eq!(judge(&[seen(false, false, 1001)], small), Risk::Rule);
        assert_eq!(
            judge(
                &[seen(false, false, 10), seen(false, false, 1 << 30)],
                small
            ),
            Risk::Rule
        );
        // 0 turns the size judgement off, even for an empty table.
        assert_eq!(judge(&[seen(false, false, 0)], 0), Risk::Rule);
    }
}

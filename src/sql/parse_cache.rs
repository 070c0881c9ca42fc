//! Recent parse verdicts by exact text, one cache per session thread (a
//! `thread_local`: no lock on the lookup). Bounded in bytes: each entry counts its
//! text plus an estimate of its analysis; the oldest entries go first when a new one
//! does not fit, and an entry over a quarter of the bound is not kept at all.

use super::analysis::{Analysis, Verdict};
use super::plan::{Finding, Step};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::mem::{size_of, size_of_val};
use std::sync::Arc;

#[derive(Default)]
struct Cache {
    entries: HashMap<Arc<str>, (Verdict, usize)>,
    /// Insertion order, oldest first.
    order: VecDeque<Arc<str>>,
    bytes: usize,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

/// The cached verdict for exactly `sql`, if any. Text too big to be kept under `cap`
/// is not looked up (hashing megabytes on a session thread for nothing).
pub fn get(sql: &str, cap: usize) -> Option<Verdict> {
    if sql.len() > cap / 4 {
        return None;
    }
    CACHE.with(|c| c.borrow().entries.get(sql).map(|(v, _)| v.clone()))
}

/// Keeps `verdict` for `sql` within `cap` bytes for this thread.
pub fn insert(sql: Arc<str>, verdict: Verdict, cap: usize) {
    let cost = cost(&sql, &verdict);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if cost > cap / 4 || c.entries.contains_key(&sql) {
            return;
        }
        while c.bytes + cost > cap {
            let Some(old) = c.order.pop_front() else {
                break;
            };
            if let Some((_, n)) = c.entries.remove(&old) {
                c.bytes -= n;
            }
        }
        c.bytes += cost;
        c.order.push_back(sql.clone());
        c.entries.insert(sql, (verdict, cost));
    })
}

/// Bytes this thread's cache holds, by its own estimate.
pub fn bytes() -> usize {
    CACHE.with(|c| c.borrow().bytes)
}

/// Per-entry bookkeeping: the map slot, the order slot, the Arc headers.
const ENTRY_OVERHEAD: usize = 128;

fn cost(sql: &str, verdict: &Verdict) -> usize {
    let analysis = match verdict {
        Verdict::Parsed(a) => analysis_bytes(a),
        Verdict::SyntaxError(m) => m.len(),
        Verdict::Unparsed(u) => u.to_string().len(),
    };
    ENTRY_OVERHEAD + sql.len() + analysis
}

fn analysis_bytes(a: &Analysis) -> usize {
    size_of::<Analysis>()
        + a.statements
            .iter()
            .map(|s| size_of_val(s) + s.sql.len() + s.finding.as_ref().map_or(0, finding_bytes))
            .sum::<usize>()
}

fn finding_bytes(f: &Finding) -> usize {
    let plan = f.rewrite.as_ref().map_or(0, |p| {
        p.summary.len() + p.steps.iter().map(step_bytes).sum::<usize>()
    });
    size_of::<Finding>()
        + f.problem.len()
        + f.hint.len()
        + f.table.as_ref().map_or(0, String::len)
        + plan
}

/// A step's SQL plus its struct; the names in its kind are short identifiers.
fn step_bytes(s: &Step) -> usize {
    size_of::<Step>() + s.sql.len() + 64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syntax(n: usize) -> Verdict {
        Verdict::SyntaxError("x".repeat(n).into())
    }

    #[test]
    fn stays_within_its_bytes_oldest_out_first() {
        let cap = 64 << 10;
        for i in 0..1_000 {
            insert(
                format!("statement {i:04} {}", "y".repeat(1_000)).into(),
                syntax(100),
                cap,
            );
            assert!(bytes() <= cap);
        }
        assert!(bytes() > cap / 2, "{}", bytes());
        assert!(get(&format!("statement 0999 {}", "y".repeat(1_000)), cap).is_some());
        assert!(get(&format!("statement 0000 {}", "y".repeat(1_000)), cap).is_none());
    }

    #[test]
    fn big_entries_are_not_kept() {
        let cap = 1 << 20;
        let big: Arc<str> = "z".repeat(cap / 4).into();
        insert(big.clone(), syntax(10), cap);
        assert!(get(&big, cap).is_none());
        assert_eq!(bytes(), 0);
        insert("small".into(), syntax(10), cap);
        assert!(matches!(get("small", cap), Some(Verdict::SyntaxError(_))));
    }

    #[test]
    fn the_analysis_counts() {
        let sql = "CREATE INDEX i ON t (c)";
        let a = crate::sql::analysis::analyze(sql).unwrap();
        let cost = cost(sql, &Verdict::Parsed(Arc::new(a)));
        // The text twice (key and statement), the finding's problem, hint and plan.
        assert!(cost > 2 * sql.len() + 200, "{cost}");
    }
}

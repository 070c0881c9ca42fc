//! Parses SQL text with pg_query (the real Postgres grammar) and runs the rules over
//! each statement. Results are cached by text: migrations repeat, parsing costs ~25 µs.

use super::plan::Finding;
use super::rules;
use pg_query::NodeEnum;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

/// Transaction control statements the executor must recognise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxControl {
    Begin,
    Commit,
    Rollback,
    /// COMMIT AND CHAIN: commits, and a new transaction starts at once.
    CommitChain,
    /// PREPARE TRANSACTION: the transaction ends, to commit later elsewhere.
    Prepare,
    /// SAVEPOINT, RELEASE, ROLLBACK TO, COMMIT PREPARED and the like.
    Other,
}

/// One statement of a query string.
#[derive(Debug, Clone)]
pub struct Statement {
    /// The statement's own text, without the separating semicolon.
    pub sql: String,
    /// Byte offset of the statement in the analysed text.
    pub offset: usize,
    pub tx: Option<TxControl>,
    /// COPY FROM STDIN / TO STDOUT: the client streams data in or out.
    pub copy: bool,
    /// What a rule found, if the statement is unsafe.
    pub finding: Option<Finding>,
}

impl Statement {
    /// 1-based line of the statement's first byte in `text`.
    pub fn line_in(&self, text: &str) -> usize {
        1 + text.as_bytes()[..self.offset.min(text.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
    }
}

/// Every statement of one query string.
#[derive(Debug, Clone, Default)]
pub struct Analysis {
    pub statements: Vec<Statement>,
}

impl Analysis {
    /// True when no statement has a finding: the text can pass through untouched.
    pub fn is_clean(&self) -> bool {
        self.statements.iter().all(|s| s.finding.is_none())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// Parses `sql` and reviews each statement.
pub fn analyze(sql: &str) -> Result<Analysis, ParseError> {
    let parsed = pg_query::parse(sql).map_err(|e| ParseError(e.to_string()))?;
    let mut statements = Vec::new();
    for raw in &parsed.protobuf.stmts {
        let Some(node) = raw.stmt.as_ref().and_then(|n| n.node.as_ref()) else {
            continue;
        };
        let start = usize::try_from(raw.stmt_location).unwrap_or(0);
        let end = match usize::try_from(raw.stmt_len) {
            Ok(0) | Err(_) => sql.len(),
            Ok(len) => start + len,
        };
        let raw_text = sql.get(start..end).unwrap_or("");
        let span = code_span(raw_text);
        let text = &raw_text[span.clone()];
        statements.push(Statement {
            sql: text.to_string(),
            offset: start + span.start,
            tx: tx_control(node),
            copy: matches!(node, NodeEnum::CopyStmt(c) if c.filename.is_empty()),
            finding: rules::review(node, text),
        });
    }
    Ok(Analysis { statements })
}

/// The byte range of `text` from its first token to the end of its last, leaving out
/// the whitespace and comments around it: the parser's statement bounds include them,
/// and a trailing `-- comment` in a step would swallow whatever the executor appends.
pub(crate) fn code_span(text: &str) -> Range<usize> {
    use pg_query::protobuf::Token;
    let comment = |t: i32| t == Token::SqlComment as i32 || t == Token::CComment as i32;
    let tokens = pg_query::scan(text).map(|s| s.tokens).unwrap_or_default();
    let mut code = tokens.iter().filter(|t| !comment(t.token));
    let bounds = |t: &pg_query::protobuf::ScanToken| -> Option<(usize, usize)> {
        Some((usize::try_from(t.start).ok()?, usize::try_from(t.end).ok()?))
    };
    match (
        code.next().and_then(bounds),
        tokens.iter().rfind(|t| !comment(t.token)).and_then(bounds),
    ) {
        (Some((start, _)), Some((_, end)))
            if start <= end
                && text.is_char_boundary(start)
                && text.is_char_boundary(end)
                && end <= text.len() =>
        {
            start..end
        }
        _ => {
            let lead = text.len() - text.trim_start().len();
            lead..text.trim_end().len().max(lead)
        }
    }
}

fn tx_control(node: &NodeEnum) -> Option<TxControl> {
    use pg_query::protobuf::TransactionStmtKind as K;
    let NodeEnum::TransactionStmt(t) = node else {
        return None;
    };
    Some(match K::try_from(t.kind).ok()? {
        K::TransStmtBegin | K::TransStmtStart => TxControl::Begin,
        K::TransStmtCommit if t.chain => TxControl::CommitChain,
        K::TransStmtCommit => TxControl::Commit,
        K::TransStmtPrepare => TxControl::Prepare,
        K::TransStmtRollback => TxControl::Rollback,
        _ => TxControl::Other,
    })
}

/// Most distinct texts kept; the cache is emptied when it fills.
const CACHE_MAX: usize = 1024;

type Cache = Mutex<HashMap<Box<str>, Arc<Result<Analysis, String>>>>;

/// [`analyze`] through a process-wide cache keyed by the exact text.
pub fn analyze_cached(sql: &str) -> Arc<Result<Analysis, String>> {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(sql) {
        return hit.clone();
    }
    let result = Arc::new(analyze(sql).map_err(|e| e.0));
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    if map.len() >= CACHE_MAX {
        map.clear();
    }
    map.insert(sql.into(), result.clone());
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements_with_offsets_and_lines() {
        let sql = "BEGIN;\n-- add an index\nCREATE INDEX i ON t (c);\nCOMMIT;";
        let a = analyze(sql).unwrap();
        assert_eq!(a.statements.len(), 3);
        assert_eq!(a.statements[0].tx, Some(TxControl::Begin));
        assert_eq!(a.statements[2].tx, Some(TxControl::Commit));
        let create = &a.statements[1];
        assert!(create.sql.starts_with("CREATE INDEX"));
        assert_eq!(create.line_in(sql), 3);
        assert!(create.finding.is_some());
        assert!(!a.is_clean());
    }

    #[test]
    fn surrounding_comments_are_skipped() {
        let sql = "SELECT 1;\n/* one /* nested */ */ -- two\n\n  -- three\nDROP TABLE \"é\" -- gone\n/* end */";
        let a = analyze(sql).unwrap();
        assert_eq!(a.statements[1].sql, "DROP TABLE \"é\"");
        assert_eq!(a.statements[1].line_in(sql), 5);
    }

    #[test]
    fn safe_statements_are_clean() {
        let a = analyze("CREATE TABLE t (id int); SELECT 1").unwrap();
        assert!(a.is_clean());
    }

    #[test]
    fn syntax_errors_are_reported_not_panicked() {
        assert!(analyze("CREATE INDEX ON").is_err());
        assert!(analyze_cached("CREATE INDEX ON").is_err());
    }
}

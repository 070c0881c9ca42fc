//! The cheap lexical check run on every Query and Parse: skip whitespace and
//! comments, read the leading keyword of each statement, and say whether any of them
//! could be DDL. Statements are split on top-level semicolons, respecting quotes,
//! dollar quotes and comments, but only when the text has a semicolon at all.

/// Leading keywords of statements that may change schema or take strong locks.
const DDL_KEYWORDS: &[&[u8]] = &[
    b"ALTER",
    b"CLUSTER",
    b"COMMENT",
    b"CREATE",
    b"DROP",
    b"REFRESH",
    b"REINDEX",
    b"TRUNCATE",
    b"VACUUM",
];

/// True when some statement in `sql` starts with a DDL keyword.
pub fn may_be_ddl(sql: &[u8]) -> bool {
    let start = skip_space_and_comments(sql);
    if is_ddl_keyword(&sql[start..]) {
        return true;
    }
    // Fast exit for the common case, one statement with at most a trailing `;`.
    match sql[start..].iter().position(|&b| b == b';') {
        None => return false,
        Some(p) if sql[start + p + 1..].iter().all(u8::is_ascii_whitespace) => return false,
        Some(_) => {}
    }
    let mut rest = &sql[start..];
    while let Some(next) = next_statement(rest) {
        rest = &next[skip_space_and_comments(next)..];
        if is_ddl_keyword(rest) {
            return true;
        }
    }
    false
}

fn is_ddl_keyword(s: &[u8]) -> bool {
    // Every DDL keyword starts with one of these letters; SELECT, INSERT, UPDATE,
    // BEGIN, COMMIT... leave here.
    if !matches!(
        s.first().map(u8::to_ascii_uppercase),
        Some(b'A' | b'C' | b'D' | b'R' | b'T' | b'V')
    ) {
        return false;
    }
    let word_len = s
        .iter()
        .position(|b| !b.is_ascii_alphabetic())
        .unwrap_or(s.len());
    let word = &s[..word_len];
    DDL_KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word))
}

/// Offset of the first byte that is not whitespace or inside a comment.
fn skip_space_and_comments(s: &[u8]) -> usize {
    let mut i = 0;
    loop {
        while i < s.len() && (s[i].is_ascii_whitespace() || s[i] == b'(') {
            i += 1;
        }
        if s[i..].starts_with(b"--") {
            i += s[i..]
                .iter()
                .position(|&b| b == b'\n')
                .unwrap_or(s.len() - i);
        } else if s[i..].starts_with(b"/*") {
            i += block_comment_len(&s[i..]);
        } else {
            return i;
        }
    }
}

/// Length of the (nestable) block comment at the start of `s`.
fn block_comment_len(s: &[u8]) -> usize {
    let mut depth = 0usize;
    let mut i = 0;
    while i < s.len() {
        if s[i..].starts_with(b"/*") {
            depth += 1;
            i += 2;
        } else if s[i..].starts_with(b"*/") {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    s.len()
}

/// The text after the first top-level semicolon, if any.
fn next_statement(s: &[u8]) -> Option<&[u8]> {
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b';' => return Some(&s[i + 1..]),
            b'\'' | b'"' => i += quoted_len(&s[i..], s[i]),
            b'-' if s[i..].starts_with(b"--") => {
                i += s[i..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .unwrap_or(s.len() - i)
            }
            b'/' if s[i..].starts_with(b"/*") => i += block_comment_len(&s[i..]),
            b'$' => i += dollar_quoted_len(&s[i..]),
            _ => i += 1,
        }
    }
    None
}

/// Length of a quoted literal or identifier; doubled quotes stay inside it.
fn quoted_len(s: &[u8], quote: u8) -> usize {
    let mut i = 1;
    while i < s.len() {
        if s[i] == quote {
            if s.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    s.len()
}

/// Length of a dollar-quoted string starting at `s`, or 1 when `$` starts none
/// (a parameter like `$1`).
fn dollar_quoted_len(s: &[u8]) -> usize {
    let tag_end = s[1..]
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_'))
        .map(|p| p + 1);
    let Some(tag_end) = tag_end else { return 1 };
    if s[tag_end] != b'$' || s.get(1).is_some_and(|b| b.is_ascii_digit()) {
        return 1;
    }
    let tag = &s[..=tag_end];
    let body = &s[tag.len()..];
    match body.windows(tag.len()).position(|w| w == tag) {
        Some(p) => tag.len() + p + tag.len(),
        None => s.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::may_be_ddl;

    #[test]
    fn plain_statements() {
        assert!(may_be_ddl(b"CREATE INDEX i ON t (c)"));
        assert!(may_be_ddl(b"  alter table t add column c int"));
        assert!(may_be_ddl(b"drop index i"));
        assert!(!may_be_ddl(b"SELECT * FROM created"));
        assert!(!may_be_ddl(b"insert into t values (1)"));
        assert!(!may_be_ddl(b"createx"));
        assert!(!may_be_ddl(b""));
    }

    #[test]
    fn comments_are_skipped() {
        assert!(may_be_ddl(b"-- migration 12\nCREATE TABLE t (id int)"));
        assert!(may_be_ddl(b"/* a /* nested */ comment */ DROP TABLE t"));
        assert!(!may_be_ddl(b"/* CREATE */ SELECT 1"));
        assert!(!may_be_ddl(b"-- CREATE"));
    }

    #[test]
    fn multi_statement_queries() {
        assert!(may_be_ddl(b"BEGIN; CREATE INDEX i ON t(c); COMMIT;"));
        assert!(!may_be_ddl(b"SELECT ';CREATE'; SELECT 2"));
        assert!(!may_be_ddl(b"SELECT $$;CREATE$$; SELECT $1"));
        assert!(!may_be_ddl(b"SELECT $q$ ; drop $q$"));
        assert!(may_be_ddl(b"SELECT \"a;\"; ALTER TABLE t RENAME TO u"));
        assert!(may_be_ddl(b"select 1; -- x;\n truncate t"));
    }

    #[test]
    fn trailing_semicolons_and_first_letters() {
        assert!(!may_be_ddl(
            b"SELECT abalance FROM pgbench_accounts WHERE aid = 1;\n"
        ));
        assert!(!may_be_ddl(b"UPDATE t SET v = ';' ; "));
        assert!(may_be_ddl(b"SELECT 1;\nCREATE TABLE x ()"));
        assert!(may_be_ddl(b"vacuum full t;"));
        assert!(!may_be_ddl(b"DELETE FROM t; DELETE FROM u;"));
        assert!(may_be_ddl(b"DELETE FROM t; DROP TABLE u;"));
    }

    #[test]
    fn unterminated_input_is_harmless() {
        assert!(!may_be_ddl(b"SELECT 'x; DROP"));
        assert!(!may_be_ddl(b"SELECT $a$; DROP"));
        assert!(!may_be_ddl(b"/* ; DROP"));
        assert!(!may_be_ddl(b"SELECT $"));
        assert!(!may_be_ddl(b";;;"));
    }
}

//! The cheap lexical check run on every Query and Parse: find where each statement
//! starts and say whether any of them begins with a keyword that could be DDL. Only
//! the texts it flags are parsed with pg_query, so it must see every statement start
//! the parser sees. It finds them with a reduced copy of Postgres' lexer (`scan.l`,
//! PG 17): everything that can hide a `;` (comments, every string and
//! quoted-identifier form, dollar quotes, strings continued across a newline), and
//! the rule that a prefix (`E'`, `B'`, `X'`, `U&'`) or a `$` opens one only at the
//! start of a token, not inside an identifier like `typee'…'` or `x$a$`. No
//! allocation; a text with no `;` before its trailing whitespace is decided by its
//! first keyword alone.
//!
//! Readers of the same text disagree in two places, so a text is read up to three
//! ways and flagged when any reading finds a DDL keyword (a second reading is needed
//! only when the first met one of the two places, so the common text is read once):
//! - pg_query, which the engine parses with: the reading the sniff must never miss.
//!   It keeps comments as tokens, so a `--` comment between `'a'` and a quote on the
//!   next line ends the string, where Postgres continues it.
//! - Postgres itself, with `standard_conforming_strings` on,
//! - and off, where a backslash escapes the next byte in plain `'…'` strings too.
//!   The session's setting is not known here.

/// Leading keywords of statements that may change schema or take strong locks. Every
/// statement kind a rule in `rules/` flags starts with one of these (a test checks
/// this against the parser, statement kind by statement kind).
const DDL_KEYWORDS: &[&[u8]] = &[
    b"ALTER",
    b"CLUSTER",
    b"COMMENT",
    b"CREATE",
    b"DROP",
    b"LOCK",
    b"REFRESH",
    b"REINDEX",
    b"TRUNCATE",
    b"VACUUM",
];

/// True when some statement in `sql` starts with a DDL keyword.
pub fn may_be_ddl(sql: &[u8]) -> bool {
    let start = skip_space_and_comments(sql, 0);
    if is_ddl_keyword(&sql[start..]) {
        return true;
    }
    // Fast exit for the common case, one statement with at most a trailing `;`:
    // another statement can only start after a `;`.
    match find_semicolon(&sql[start..]) {
        None => return false,
        Some(p) if sql[start + p + 1..].iter().all(u8::is_ascii_whitespace) => return false,
        Some(_) => {}
    }
    // Each reading matches the one before it up to a place that one marks: it runs
    // only then, and otherwise the one before stands in for it.
    let mut last = Lexer::new(sql, PG_QUERY);
    if last.finds_ddl(start) {
        return true;
    }
    if last.saw_comment_gap {
        last = Lexer::new(sql, SERVER);
        if last.finds_ddl(start) {
            return true;
        }
    }
    last.saw_backslash && Lexer::new(sql, SERVER_BACKSLASHES).finds_ddl(start)
}

/// True when `sql` may prepare or drop prepared statements in SQL (PREPARE,
/// DEALLOCATE, DISCARD anywhere in it, in any case): a cheap superset.
pub fn may_name_statements(sql: &[u8]) -> bool {
    const WORDS: [&[u8]; 3] = [b"prepare", b"dealloc", b"discard"];
    sql.windows(7)
        .any(|w| WORDS.iter().any(|word| w.eq_ignore_ascii_case(word)))
}

/// True when `text` holds `word` anywhere, in any ASCII case (an empty word
/// never matches).
/// True when `word` stands in `text`, in any case, as a whole name: not next
/// to a letter, digit, `_`, `$` or a byte of a multibyte character (`orders`
/// is not in `line_orders` or `orders2`).
pub fn contains_word_ignoring_case(text: &[u8], word: &[u8]) -> bool {
    let part = |b: Option<&u8>| {
        b.is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80)
    };
    !word.is_empty()
        && text.len() >= word.len()
        && (0..=text.len() - word.len()).any(|at| {
            text[at..at + word.len()].eq_ignore_ascii_case(word)
                && !part(at.checked_sub(1).and_then(|i| text.get(i)))
                && !part(text.get(at + word.len()))
        })
}

pub fn contains_ignoring_case(text: &[u8], word: &[u8]) -> bool {
    !word.is_empty()
        && text
            .windows(word.len())
            .any(|w| w.eq_ignore_ascii_case(word))
}

/// True when `sql` starts with INSERT or UPDATE (after spaces and comments): a
/// write to a table under rollout may set its new column too.
/// True when `sql` may change what a name in a later statement of the session
/// means, or who runs it: `SET` of the search_path, schema or role (`SET ROLE`,
/// `SET SESSION AUTHORIZATION`), any `RESET` or `DISCARD`, a `CREATE` of a
/// temporary table (which comes first on the path), or `set_config` anywhere.
/// A generous test: it only makes pgshift look again.
pub fn may_change_names(sql: &[u8]) -> bool {
    if contains_ignoring_case(sql, b"set_config") {
        return true;
    }
    let s = &sql[skip_space_and_comments(sql, 0)..];
    let word = &s[..word_len(s)];
    let has = |w: &[u8]| contains_ignoring_case(s, w);
    if word.eq_ignore_ascii_case(b"SET") {
        has(b"search_path") || has(b"schema") || has(b"role") || has(b"authorization")
    } else if word.eq_ignore_ascii_case(b"CREATE") {
        has(b"temp")
    } else {
        word.eq_ignore_ascii_case(b"RESET") || word.eq_ignore_ascii_case(b"DISCARD")
    }
}

/// True when `sql` starts with `SET` (which a transaction may need first:
/// `SET TRANSACTION` fails after any statement took a snapshot).
pub fn starts_with_set(sql: &[u8]) -> bool {
    let s = &sql[skip_space_and_comments(sql, 0)..];
    s[..word_len(s)].eq_ignore_ascii_case(b"SET")
}

pub fn starts_with_write(sql: &[u8]) -> bool {
    let s = &sql[skip_space_and_comments(sql, 0)..];
    let word = &s[..word_len(s)];
    word.eq_ignore_ascii_case(b"INSERT") || word.eq_ignore_ascii_case(b"UPDATE")
}

/// True when `sql` starts with COPY (after spaces and comments): a COPY without a
/// column list of a table under rollout needs one.
pub fn starts_with_copy(sql: &[u8]) -> bool {
    let s = &sql[skip_space_and_comments(sql, 0)..];
    s.len() >= 4 && s[..word_len(s)].eq_ignore_ascii_case(b"COPY")
}

/// True when pg_query and Postgres would split `sql` into statements differently:
/// a string continued on a later line after a `--` comment, which Postgres joins and
/// pg_query does not. The engine cannot trust its parse of such a text.
pub fn splits_differ(sql: &[u8]) -> bool {
    let mut lexer = Lexer::new(sql, PG_QUERY);
    lexer.read_all = true;
    lexer.finds_ddl(0);
    lexer.diverged
}

/// Offset of the first `;` in `s`, looking at eight bytes at a time.
fn find_semicolon(s: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const SEMICOLONS: u64 = u64::from_ne_bytes([b';'; 8]);
    let mut offset = 0;
    for chunk in s.chunks_exact(8) {
        let x = u64::from_ne_bytes(chunk.try_into().unwrap()) ^ SEMICOLONS;
        // Some byte of x is zero.
        if x.wrapping_sub(ONES) & !x & (ONES << 7) != 0 {
            break;
        }
        offset += 8;
    }
    s[offset..]
        .iter()
        .position(|&b| b == b';')
        .map(|p| p + offset)
}

fn is_ddl_keyword(s: &[u8]) -> bool {
    // Every DDL keyword starts with one of these letters; SELECT, INSERT, UPDATE,
    // BEGIN, COMMIT... leave here.
    if !matches!(
        s.first().map(u8::to_ascii_uppercase),
        Some(b'A' | b'C' | b'D' | b'L' | b'R' | b'T' | b'V')
    ) {
        return false;
    }
    // A keyword is a whole identifier: `create_x` and `create$` are not CREATE.
    let word = &s[..word_len(s)];
    DDL_KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word))
}

/// How a quoted literal ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Literal {
    /// `'…'`, `N'…'` and `U&'…'` read the standard way: `''` is a quote. (With
    /// standard_conforming_strings off the server rejects `U&'…'`.)
    Plain,
    /// `E'…'`, and `'…'` read with standard_conforming_strings off: `''` or
    /// a backslash before any byte.
    Escaped,
    /// `B'…'`, `X'…'`: the first quote ends them.
    Bits,
}

/// Where readers of a text differ.
#[derive(Debug, Clone, Copy)]
struct Reading {
    /// Plain strings take backslash escapes: standard_conforming_strings off.
    backslash_plain: bool,
    /// A `--` comment between two quotes does not stop string continuation.
    comments_continue: bool,
}

const PG_QUERY: Reading = Reading {
    backslash_plain: false,
    comments_continue: false,
};
const SERVER: Reading = Reading {
    backslash_plain: false,
    comments_continue: true,
};
const SERVER_BACKSLASHES: Reading = Reading {
    backslash_plain: true,
    comments_continue: true,
};

/// One reading of a text.
struct Lexer<'a> {
    s: &'a [u8],
    reading: Reading,
    /// A backslash appeared inside a plain string read without escapes.
    saw_backslash: bool,
    /// A `--` comment followed a closing quote.
    saw_comment_gap: bool,
    /// Read the whole text, not only up to the first DDL keyword.
    read_all: bool,
    /// A string this reading ended is continued by Postgres' reading.
    diverged: bool,
}

impl<'a> Lexer<'a> {
    fn new(s: &'a [u8], reading: Reading) -> Self {
        Lexer {
            s,
            reading,
            saw_backslash: false,
            saw_comment_gap: false,
            read_all: false,
            diverged: false,
        }
    }

    /// True when a statement after the one starting at `i` starts with a DDL keyword.
    fn finds_ddl(&mut self, mut i: usize) -> bool {
        let s = self.s;
        // Where the last token that began with `$` ended: the next token starts there.
        let mut after_dollar = 0;
        while i < s.len() {
            i = match s[i] {
                b';' => {
                    let next = skip_space_and_comments(s, i + 1);
                    if is_ddl_keyword(&s[next..]) && !self.read_all {
                        return true;
                    }
                    next
                }
                b'\'' => {
                    let kind = self.kind_at(i, after_dollar);
                    self.literal(i + 1, kind)
                }
                // `U&"…"` ends the same way.
                b'"' => quoted_identifier_end(s, i + 1),
                b'-' if s.get(i + 1) == Some(&b'-') => line_comment_end(s, i),
                b'/' if s.get(i + 1) == Some(&b'*') => block_comment_end(s, i),
                b'$' if starts_token(s, i, after_dollar) => {
                    after_dollar = dollar_end(s, i);
                    after_dollar
                }
                _ => i + 1,
            };
        }
        false
    }

    /// How the string whose opening quote is at `i` reads, by its prefix.
    fn kind_at(&self, i: usize, after_dollar: usize) -> Literal {
        let s = self.s;
        match &s[..i] {
            [.., b'e' | b'E'] if starts_token(s, i - 1, after_dollar) => Literal::Escaped,
            [.., b'b' | b'B' | b'x' | b'X'] if starts_token(s, i - 1, after_dollar) => {
                Literal::Bits
            }
            _ if self.reading.backslash_plain => Literal::Escaped,
            _ => Literal::Plain,
        }
    }

    /// End of a quoted literal whose body starts at `i`. A closing quote followed by
    /// whitespace with a newline and another quote continues the literal (SQL's
    /// string concatenation), in the same mode.
    fn literal(&mut self, mut i: usize, kind: Literal) -> usize {
        let s = self.s;
        while i < s.len() {
            let Some(p) = s[i..].iter().position(|&b| b == b'\'' || b == b'\\') else {
                return s.len();
            };
            i += p;
            if s[i] == b'\\' {
                match kind {
                    Literal::Escaped => i += 2,
                    Literal::Plain => {
                        self.saw_backslash = true;
                        i += 1;
                    }
                    Literal::Bits => i += 1,
                }
            } else if kind != Literal::Bits && s.get(i + 1) == Some(&b'\'') {
                i += 2;
            } else {
                match self.continuation(i + 1) {
                    Some(quote) => i = quote + 1,
                    None => return i + 1,
                }
            }
        }
        s.len()
    }

    /// Where a literal that closed just before `i` continues: the offset of the next
    /// opening quote when only whitespace with at least one newline comes first
    /// (and `--` comments, when they continue strings in this reading).
    fn continuation(&mut self, mut i: usize) -> Option<usize> {
        let s = self.s;
        let mut newline = false;
        loop {
            match *s.get(i)? {
                b' ' | b'\t' | b'\x0b' | b'\x0c' => i += 1,
                b'\n' | b'\r' => {
                    newline = true;
                    i += 1;
                }
                b'-' if s.get(i + 1) == Some(&b'-') => {
                    self.saw_comment_gap = true;
                    if !self.reading.comments_continue {
                        self.diverged |= Lexer::new(s, SERVER).continuation(i).is_some();
                        return None;
                    }
                    i = line_comment_end(s, i);
                }
                b'\'' if newline => return Some(i),
                _ => return None,
            }
        }
    }
}

/// Postgres' whitespace, which includes vertical tab since PG 16.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c')
}

/// First byte of an identifier (and of a dollar-quote tag).
fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

/// True when a token starts at `i`: the byte before it is no identifier character
/// (`x$a$` is one identifier, `typee'…'` a type name and a plain string), or a token
/// that began with `$` ended there.
fn starts_token(s: &[u8], i: usize, after_dollar: usize) -> bool {
    i == 0 || i == after_dollar || !is_ident_cont(s[i - 1])
}

/// Any byte of an identifier after the first.
fn is_ident_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// Length of the identifier-like word at the start of `s`: identifier characters,
/// which include digits and `$`.
fn word_len(s: &[u8]) -> usize {
    s.iter().position(|&b| !is_ident_cont(b)).unwrap_or(s.len())
}

/// End of what a `$` that starts a token at `i` starts: a parameter (`$1`), a dollar
/// quote (`$$…$$`, `$tag$…$tag$`; the tag may hold bytes >= 0x80), or just itself.
fn dollar_end(s: &[u8], i: usize) -> usize {
    let rest = &s[i + 1..];
    match rest.first() {
        Some(b) if b.is_ascii_digit() => {
            i + 1
                + rest
                    .iter()
                    .position(|b| !b.is_ascii_digit())
                    .unwrap_or(rest.len())
        }
        Some(&b) if b == b'$' || is_ident_start(b) => {
            // The tag is an identifier without `$`.
            let tag_len = rest
                .iter()
                .position(|&b| !(is_ident_start(b) || b.is_ascii_digit()))
                .unwrap_or(rest.len());
            if rest.get(tag_len) != Some(&b'$') {
                // `$name` with no closing `$`: a lone `$`, then an identifier.
                return i + 1;
            }
            let delimiter = &s[i..i + tag_len + 2];
            let mut j = i + delimiter.len();
            while let Some(p) = s[j..].iter().position(|&b| b == b'$') {
                j += p;
                if s[j..].starts_with(delimiter) {
                    return j + delimiter.len();
                }
                j += 1;
            }
            s.len()
        }
        _ => i + 1,
    }
}

/// End of a quoted identifier whose body starts at `i`; `""` stays inside it.
fn quoted_identifier_end(s: &[u8], mut i: usize) -> usize {
    while let Some(p) = s[i..].iter().position(|&b| b == b'"') {
        i += p + 1;
        if s.get(i) != Some(&b'"') {
            return i;
        }
        i += 1;
    }
    s.len()
}

/// Offset of the first byte that is not whitespace, `(` or inside a comment, from `i`.
fn skip_space_and_comments(s: &[u8], mut i: usize) -> usize {
    loop {
        while i < s.len() && (is_space(s[i]) || s[i] == b'(') {
            i += 1;
        }
        match s.get(i..i + 2) {
            Some(b"--") => i = line_comment_end(s, i),
            Some(b"/*") => i = block_comment_end(s, i),
            _ => return i,
        }
    }
}

/// End of the `--` comment at `i`: the newline (`\n` or `\r`) that ends it.
fn line_comment_end(s: &[u8], i: usize) -> usize {
    i + s[i..]
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .unwrap_or(s.len() - i)
}

/// End of the (nestable) block comment at `i`.
fn block_comment_end(s: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < s.len() {
        match s.get(i..i + 2) {
            Some(b"/*") => {
                depth += 1;
                i += 2;
            }
            Some(b"*/") => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    s.len()
}

#[cfg(test)]
mod tests {
    #[test]
    fn whole_names_only() {
        use super::contains_word_ignoring_case as w;
        assert!(w(b"update Orders set", b"orders"));
        assert!(w(b"insert into public.\"orders\" (a)", b"orders"));
        assert!(!w(b"insert into line_orders (a)", b"orders"));
        assert!(!w(b"insert into orders2 (a)", b"orders"));
        assert!(w(b"orders", b"orders"));
        assert!(!w(b"order", b"orders"));
    }

    #[test]
    fn statements_that_may_change_names() {
        use super::may_change_names as m;
        for yes in [
            "SET search_path = a",
            "set local ROLE x",
            "SET SESSION AUTHORIZATION x",
            "RESET ALL",
            "DISCARD ALL",
            "CREATE TEMP TABLE orders (id int)",
            "SELECT set_config('search_path', $1, false)",
            "INSERT INTO t VALUES (set_config('a', 'b', false))",
        ] {
            assert!(m(yes.as_bytes()), "{yes}");
        }
        for no in [
            "SELECT * FROM user_roles WHERE role = $1",
            "INSERT INTO schema_migrations VALUES ($1)",
            "SET statement_timeout = 0",
            "UPDATE orders SET note = 'temp'",
        ] {
            assert!(!m(no.as_bytes()), "{no}");
        }
    }

    use super::{may_be_ddl, starts_with_copy};

    #[test]
    fn copy_is_found_after_comments_only_as_a_word() {
        assert!(starts_with_copy(b"COPY t FROM STDIN"));
        assert!(starts_with_copy(b"  /* x */ -- y\n copy t TO STDOUT"));
        assert!(!starts_with_copy(b"COPYING t"));
        assert!(!starts_with_copy(b"SELECT 1; COPY t FROM STDIN"));
        assert!(!starts_with_copy(b"cop"));
    }

    #[test]
    fn texts_pg_query_and_postgres_split_differently() {
        use super::splits_differ;
        let split = b"DO E'BEGIN NULL; END --' -- c\n'\\''; CREATE INDEX i ON t(a); -- '";
        assert!(splits_differ(split));
        assert!(!splits_differ(b"SELECT 'a' -- c\n; CREATE INDEX i ON t(a)"));
        assert!(!splits_differ(b"SELECT 'a'\n'b'; CREATE INDEX i ON t(a)"));
        assert!(!splits_differ(b"CREATE INDEX i ON t(a) -- done"));
    }

    #[test]
    fn plain_statements() {
        assert!(may_be_ddl(b"CREATE INDEX i ON t (c)"));
        assert!(may_be_ddl(b"  alter table t add column c int"));
        assert!(may_be_ddl(b"drop index i"));
        assert!(may_be_ddl(b"LOCK TABLE t"));
        assert!(may_be_ddl(b"lock t in access exclusive mode;"));
        assert!(!may_be_ddl(b"SELECT * FROM created"));
        assert!(!may_be_ddl(b"insert into t values (1)"));
        assert!(!may_be_ddl(b"createx"));
        assert!(!may_be_ddl(b"SELECT 1; create_x"));
        assert!(!may_be_ddl(b"SELECT 1; create$ x"));
        assert!(!may_be_ddl(b"SELECT 1; locked"));
        assert!(!may_be_ddl(b""));
    }

    #[test]
    fn comments_and_whitespace_are_skipped() {
        assert!(may_be_ddl(b"-- migration 12\nCREATE TABLE t (id int)"));
        assert!(may_be_ddl(b"-- migration 12\rCREATE TABLE t (id int)"));
        assert!(may_be_ddl(b"select 1; -- x\rcreate index i on t(a)"));
        assert!(may_be_ddl(b"/* a /* nested */ comment */ DROP TABLE t"));
        assert!(may_be_ddl(b"\x0bCREATE INDEX i ON t(a)"));
        assert!(may_be_ddl(b"SELECT 1;\x0b\x0cCREATE INDEX i ON t(a)"));
        assert!(!may_be_ddl(b"/* CREATE */ SELECT 1"));
        assert!(!may_be_ddl(b"-- CREATE"));
        assert!(!may_be_ddl(b"SELECT 1; /* a /* b */ ; CREATE */ SELECT 2"));
        assert!(may_be_ddl(
            b"SELECT /* /* */ ; */ 1; CREATE INDEX i ON t(a)"
        ));
        assert!(may_be_ddl(b"SELECT 1 /* **/; CREATE INDEX i ON t(a)"));
        assert!(may_be_ddl(b"SELECT 1 +-- x\n; CREATE INDEX i ON t(a)"));
    }

    #[test]
    fn multi_statement_queries() {
        assert!(may_be_ddl(b"BEGIN; CREATE INDEX i ON t(c); COMMIT;"));
        assert!(!may_be_ddl(b"SELECT ';CREATE'; SELECT 2"));
        assert!(!may_be_ddl(b"SELECT $$;CREATE$$; SELECT $1"));
        assert!(!may_be_ddl(b"SELECT $q$ ; drop $q$"));
        assert!(may_be_ddl(b"SELECT \"a;\"; ALTER TABLE t RENAME TO u"));
        assert!(may_be_ddl(b"select 1; -- x;\n truncate t"));
        assert!(may_be_ddl(b"SELECT 1; (LOCK t)"));
        assert!(may_be_ddl(b"SELECT 1; LOCK t"));
    }

    #[test]
    fn escape_strings() {
        // The backslash escapes the quote: the string ends at the second one.
        assert!(may_be_ddl(b"SELECT E'\\''; CREATE INDEX t_e ON t(a)"));
        assert!(may_be_ddl(b"SELECT e'\\\\'; CREATE INDEX t_e ON t(a)"));
        assert!(may_be_ddl(b"SELECT E'\\'' ; CREATE INDEX t_e ON t(a)"));
        assert!(!may_be_ddl(b"SELECT E'\\'; CREATE INDEX i ON t(a)'"));
        assert!(!may_be_ddl(b"SELECT E'a''; CREATE INDEX i ON t(a)'"));
        // An E that ends an identifier is no prefix: `typee '\'` is a plain string.
        assert!(may_be_ddl(b"SELECT typee'\\'; CREATE INDEX i ON t(a)"));
        // After `.` it is one: the string swallows the rest.
        assert!(!may_be_ddl(b"SELECT x.e'\\'; CREATE INDEX i ON t(a)"));
        assert!(may_be_ddl(b"SELECT 1 e'\\''; CREATE INDEX i ON t(a)"));
    }

    #[test]
    fn backslashes_in_plain_strings_are_read_both_ways() {
        // standard_conforming_strings on: '\' is a whole string.
        assert!(may_be_ddl(b"SELECT '\\'; CREATE INDEX i ON t(a); SELECT '"));
        // off: '\'' is a whole string, and CREATE INDEX follows.
        assert!(may_be_ddl(b"SELECT '\\''; CREATE INDEX i ON t(a)"));
        assert!(may_be_ddl(b"SELECT N'\\''; CREATE INDEX i ON t(a)"));
        // Neither reading has a statement after the first.
        assert!(!may_be_ddl(b"SELECT 'a\\b;c'; "));
        assert!(!may_be_ddl(b"SELECT 'a\\b'';c'; SELECT 2"));
    }

    #[test]
    fn string_continuation_keeps_the_mode() {
        // E'a' continues on the next line, still with backslash escapes.
        assert!(may_be_ddl(b"SELECT E'x'\n'\\''; CREATE INDEX i ON t(a)"));
        // ...so the second '\' below is a string of its own and CREATE follows; no
        // single way of reading backslashes in every '' string finds it.
        assert!(may_be_ddl(
            b"SELECT E'a'\n'\\'' , '\\' ; CREATE INDEX i ON t(a); -- '"
        ));
        assert!(may_be_ddl(
            b"SELECT E'a'\r\x0b\x0c'\\''; CREATE INDEX i ON t(a)"
        ));
        // A `--` comment between the quotes: Postgres continues the string, pg_query
        // does not (`DO` takes several strings, so both parse). Only pg_query sees
        // the CREATE in the first text, only Postgres in the second.
        assert!(may_be_ddl(b"DO E'' -- c\n'\\'; CREATE INDEX i ON t(a)"));
        assert!(may_be_ddl(
            b"DO E'BEGIN NULL; END --' -- c\n'\\''; CREATE INDEX i ON t(a); -- '"
        ));
        assert!(may_be_ddl(
            b"SELECT E'a' -- c\n'\\''; CREATE INDEX i ON t(a)"
        ));
        assert!(may_be_ddl(
            b"SELECT E'a' -- c\n  \r\t'\\'' , '\\' ; CREATE INDEX i ON t(a); -- '"
        ));
        assert!(may_be_ddl(
            b"SELECT E'a' -- c\n'\\'; CREATE INDEX i ON t(a); -- '"
        ));
        // Without a newline there is no continuation.
        assert!(may_be_ddl(b"SELECT E'a' , '\\'; CREATE INDEX i ON t(a)"));
        assert!(may_be_ddl(b"SELECT B'0'\n'1;'; CREATE INDEX i ON t(a)"));
        assert!(!may_be_ddl(b"SELECT 'a'\n'; CREATE INDEX i ON t(a)'"));
    }

    #[test]
    fn other_string_forms() {
        assert!(may_be_ddl(b"SELECT B'1;0'; CREATE INDEX i ON t(a)"));
        assert!(may_be_ddl(
            b"SELECT X'1F''; CREATE INDEX i ON t(a)'; DROP TABLE u"
        ));
        assert!(!may_be_ddl(b"SELECT X'; CREATE INDEX i ON t(a)'"));
        // A quote ends B'…': with standard_conforming_strings off, '\'' follows.
        assert!(may_be_ddl(
            b"SELECT B'01''\\''; CREATE INDEX i ON t(a); -- '"
        ));
        assert!(may_be_ddl(b"SELECT N'a;b'; CREATE INDEX i ON t(a)"));
        assert!(may_be_ddl(
            b"SELECT U&'d\\0061t\\+000061;'; CREATE INDEX i ON t(a)"
        ));
        assert!(may_be_ddl(b"SELECT u&'\\\\'; CREATE INDEX i ON t(a)"));
        assert!(may_be_ddl(
            b"SELECT U&'\\' UESCAPE '!'; CREATE INDEX i ON t(a)"
        ));
        assert!(!may_be_ddl(b"SELECT U&'a''; CREATE INDEX i ON t(a)'"));
        assert!(may_be_ddl(b"SELECT U&\"a;\"\"b\"; CREATE INDEX i ON t(a)"));
        assert!(!may_be_ddl(b"SELECT U&\"x\"\"; CREATE INDEX i ON t(a)\""));
        assert!(!may_be_ddl(b"SELECT \"a; CREATE INDEX i ON t(a)"));
        assert!(may_be_ddl(b"SELECT xu&'\\'; CREATE INDEX i ON t(a)"));
    }

    #[test]
    fn dollar_quotes_and_parameters() {
        // `x$a$` is an identifier: no dollar quote swallows the CREATE.
        assert!(may_be_ddl(
            b"SELECT x$a$; CREATE INDEX i ON t(a); SELECT $a$"
        ));
        assert!(may_be_ddl(b"SELECT x$$; CREATE INDEX i ON t(a); SELECT $$"));
        assert!(may_be_ddl(
            b"SELECT \xc3\xa9$a$; CREATE INDEX i ON t(a); SELECT $a$"
        ));
        assert!(!may_be_ddl(
            b"SELECT $a$; CREATE INDEX i ON t(a); SELECT $a$"
        ));
        // Tags may hold high-bit bytes and digits, not first.
        assert!(!may_be_ddl(
            b"SELECT $\xc3\xa9$; CREATE INDEX i ON t(a) $\xc3\xa9$"
        ));
        assert!(may_be_ddl(
            b"SELECT $\xc3\xa9$;$\xc3\xa9$; CREATE INDEX i ON t(a)"
        ));
        assert!(!may_be_ddl(b"SELECT $a1$; CREATE INDEX i ON t(a) $a1$"));
        // A different tag does not close; nor does a tag cut short.
        assert!(!may_be_ddl(b"SELECT $a$ $b$; CREATE INDEX i ON t(a) $a"));
        assert!(may_be_ddl(b"SELECT $a$ $b$ $a$; CREATE INDEX i ON t(a)"));
        assert!(may_be_ddl(b"SELECT $a$$a$; CREATE INDEX i ON t(a)"));
        // Parameters, and a `$` that starts nothing.
        assert!(may_be_ddl(b"SELECT $1; CREATE INDEX i ON t(a)"));
        assert!(may_be_ddl(b"SELECT $12$; CREATE INDEX i ON t(a)"));
        assert!(may_be_ddl(b"SELECT $ab; CREATE INDEX i ON t(a)"));
        assert!(may_be_ddl(b"SELECT $; CREATE INDEX i ON t(a)"));
        assert!(may_be_ddl(b"SELECT a1$a$; CREATE INDEX i ON t(a) $a$"));
        // After a number, Postgres starts a dollar quote, but a number followed by a
        // string is a syntax error anyway; the sniff reads on.
        assert!(may_be_ddl(b"SELECT 1$a$; CREATE INDEX i ON t(a) $a$"));
        // After a dollar quote or a parameter, a token starts.
        assert!(!may_be_ddl(b"SELECT $$x$$$a$; CREATE INDEX i ON t(a) $a$"));
        assert!(!may_be_ddl(b"SELECT $x$x$x$e'\\'; CREATE INDEX i ON t(a)"));
        assert!(may_be_ddl(b"SELECT $x$x$x$'\\'; CREATE INDEX i ON t(a)"));
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
        assert!(!may_be_ddl(b"SELECT E'x\\"));
        assert!(!may_be_ddl(b"SELECT E'x\\'; DROP"));
        assert!(!may_be_ddl(b"SELECT $a$; DROP"));
        assert!(!may_be_ddl(b"SELECT U&\"; DROP"));
        assert!(!may_be_ddl(b"/* ; DROP"));
        assert!(!may_be_ddl(b"SELECT $"));
        assert!(!may_be_ddl(b"SELECT 1; $"));
        assert!(!may_be_ddl(b"SELECT 1; e"));
        assert!(!may_be_ddl(b"SELECT 1; u&"));
        assert!(!may_be_ddl(b"SELECT 'a'\n"));
        assert!(!may_be_ddl(b";;;"));
    }

    /// Every statement kind a rule flags starts with a keyword of the list, and the
    /// statements that start with any other keyword of the grammar are not flagged.
    #[test]
    fn keyword_list_matches_the_rules() {
        use crate::sql::analysis::analyze;
        let flagged = |sql: &str| {
            let a = analyze(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
            a.statements.iter().any(|s| s.finding.is_some())
        };
        for sql in FLAGGED {
            assert!(flagged(sql), "no rule flags {sql}");
            assert!(may_be_ddl(sql.as_bytes()), "sniff misses {sql}");
            let after = format!("SELECT 1; {sql}");
            assert!(may_be_ddl(after.as_bytes()), "sniff misses {after}");
        }
        for sql in NOT_FLAGGED {
            assert!(!flagged(sql), "a rule flags {sql}: add its keyword");
        }
        // LOCK takes the strongest locks but no rule reviews it yet; the sniff still
        // hands it to the engine.
        assert!(!flagged("LOCK TABLE t"));
    }

    const FLAGGED: &[&str] = &[
        "CREATE INDEX i ON t (a)",
        "CREATE UNIQUE INDEX i ON t (a)",
        "DROP INDEX i",
        "REINDEX INDEX i",
        "REINDEX TABLE t",
        "ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES u (id)",
        "ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0)",
        "ALTER TABLE t ALTER COLUMN a SET NOT NULL",
        "ALTER TABLE t ADD CONSTRAINT u UNIQUE (a)",
        "ALTER TABLE t ADD CONSTRAINT x EXCLUDE USING gist (a WITH &&)",
        "ALTER TABLE t ADD COLUMN b int",
        "ALTER TABLE t ADD COLUMN b timestamptz DEFAULT clock_timestamp()",
        "ALTER TABLE t ALTER COLUMN a TYPE bigint",
        "ALTER TABLE t RENAME COLUMN a TO b",
        "ALTER TABLE t RENAME TO u",
        "ALTER TABLE t RENAME CONSTRAINT c TO d",
        "ALTER TABLE t DROP COLUMN a",
        "DROP TABLE t",
        "TRUNCATE t",
        "VACUUM FULL t",
        "VACUUM (FULL) t",
        "CLUSTER t USING i",
        "ALTER TABLE t SET TABLESPACE s",
        "ALTER TABLE ALL IN TABLESPACE a SET TABLESPACE b",
        "REFRESH MATERIALIZED VIEW m",
        "ALTER TABLE t ATTACH PARTITION p FOR VALUES IN (1)",
        "ALTER TABLE t DETACH PARTITION p",
        "ALTER TYPE e ADD VALUE 'x'",
        "ALTER TABLE t ALTER COLUMN a SET DEFAULT 1",
        "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()",
        "CREATE OR REPLACE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()",
        "DROP TRIGGER tr ON t",
    ];

    /// One statement for every other keyword a statement can start with (gram.y's
    /// `stmt`), including the ones that wrap or reach other statements.
    const NOT_FLAGGED: &[&str] = &[
        "ABORT",
        "ANALYZE t",
        "ANALYSE (VERBOSE) t",
        "BEGIN",
        "CALL p()",
        "CHECKPOINT",
        "CLOSE c",
        "COMMIT",
        "COPY t FROM STDIN",
        "DEALLOCATE p",
        "DECLARE c CURSOR FOR SELECT 1",
        "DELETE FROM t",
        "DISCARD ALL",
        "DO $$ BEGIN EXECUTE 'CREATE INDEX i ON t (a)'; END $$",
        "END",
        "EXECUTE p",
        "EXPLAIN SELECT 1",
        "EXPLAIN ANALYZE CREATE TABLE x AS SELECT 1",
        "EXPLAIN ANALYZE REFRESH MATERIALIZED VIEW m",
        "FETCH c",
        "GRANT SELECT ON t TO r",
        "IMPORT FOREIGN SCHEMA s FROM SERVER f INTO l",
        "INSERT INTO t VALUES (1)",
        "LISTEN c",
        "LOAD 'x'",
        "MERGE INTO t USING u ON t.a = u.a WHEN MATCHED THEN DELETE",
        "MOVE c",
        "NOTIFY c",
        "PREPARE p AS SELECT 1",
        "REASSIGN OWNED BY a TO b",
        "RELEASE s",
        "RESET ALL",
        "REVOKE SELECT ON t FROM r",
        "ROLLBACK",
        "SAVEPOINT s",
        "SECURITY LABEL ON TABLE t IS 'x'",
        "SELECT f()",
        "SET search_path = a",
        "SHOW search_path",
        "START TRANSACTION",
        "TABLE t",
        "UNLISTEN c",
        "UPDATE t SET a = 1",
        "VALUES (1)",
        "WITH x AS (DELETE FROM t RETURNING 1) SELECT 1",
        "(SELECT 1)",
        "COMMENT ON TABLE t IS 'x'",
        "ANALYZE (FULL) t",
        "VACUUM t",
    ];
}

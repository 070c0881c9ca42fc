//! Property: the hot-path sniff never misses a statement that pg_query and the rules
//! call DDL. Random multi-statement texts are built from statements every rule flags
//! and from ordinary statements whose literals and identifiers use every lexical form
//! the sniff follows, with `;`, quotes, backslashes, keywords, dollar tags and comments
//! inside, joined by random whitespace and comments; byte-level mutations of them add
//! texts no template would write. For every text pg_query parses, a finding implies
//! `may_be_ddl`. Needs no Postgres (so it does not use `tests/common`).
//!
//! `SNIFF_PROPERTY_CASES` and `SNIFF_PROPERTY_SEED` run it longer or elsewhere.

use pgshift::sql::analysis::analyze;
use pgshift::sql::sniff::may_be_ddl;

/// splitmix64: deterministic, good enough to pick fragments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }
}

/// One statement for every rule (and statement kind) in `src/sql/rules/`.
const DDL: &[&str] = &[
    "CREATE INDEX i ON t (a)",
    "CREATE UNIQUE INDEX IF NOT EXISTS i ON s.t USING btree (a, (lower(b)))",
    "DROP INDEX i",
    "DROP INDEX IF EXISTS s.i CASCADE",
    "REINDEX INDEX i",
    "REINDEX TABLE t",
    "ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES u (id)",
    "ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0)",
    "ALTER TABLE t ALTER COLUMN a SET NOT NULL",
    "ALTER TABLE t ADD CONSTRAINT u UNIQUE (a)",
    "ALTER TABLE t ADD PRIMARY KEY (a)",
    "ALTER TABLE t ADD CONSTRAINT x EXCLUDE USING gist (a WITH &&)",
    "ALTER TABLE t ADD COLUMN b int",
    "ALTER TABLE t ADD COLUMN b int NOT NULL DEFAULT 0",
    "ALTER TABLE t ADD COLUMN b timestamptz DEFAULT clock_timestamp()",
    "ALTER TABLE t ALTER COLUMN a TYPE bigint",
    "ALTER TABLE t ALTER COLUMN a SET DATA TYPE text USING a::text",
    "ALTER TABLE t RENAME COLUMN a TO b",
    "ALTER TABLE t RENAME TO u",
    "ALTER TABLE t RENAME CONSTRAINT c TO d",
    "ALTER TABLE t DROP COLUMN a",
    "ALTER TABLE t ALTER COLUMN a SET DEFAULT 1",
    "ALTER TABLE t DROP CONSTRAINT c",
    "ALTER TABLE t ADD COLUMN b int, ALTER COLUMN a SET NOT NULL",
    "DROP TABLE t",
    "TRUNCATE t",
    "TRUNCATE TABLE ONLY t RESTART IDENTITY",
    "VACUUM FULL t",
    "VACUUM (FULL, VERBOSE) t",
    "CLUSTER t USING i",
    "ALTER TABLE t SET TABLESPACE s",
    "ALTER TABLE t SET UNLOGGED",
    "ALTER TABLE ALL IN TABLESPACE a SET TABLESPACE b",
    "REFRESH MATERIALIZED VIEW m",
    "ALTER TABLE t ATTACH PARTITION p FOR VALUES IN (1)",
    "ALTER TABLE t DETACH PARTITION p",
    "ALTER TYPE e ADD VALUE 'x'",
    "ALTER TYPE e ADD VALUE IF NOT EXISTS 'y;z' BEFORE 'x'",
    "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()",
    "CREATE OR REPLACE TRIGGER tr AFTER UPDATE ON t EXECUTE PROCEDURE f()",
    "DROP TRIGGER tr ON t",
    "LOCK TABLE t IN ACCESS EXCLUSIVE MODE",
];

/// Pieces of literal and identifier bodies: everything that could end a quote,
/// start one, start a comment or end a statement if misread.
const PIECES: &[&str] = &[
    ";",
    "'",
    "''",
    "\\",
    "\\'",
    "\\\\",
    "\"",
    "\"\"",
    "$",
    "$$",
    "$a$",
    "$b$",
    "$é$",
    "$1",
    "--",
    "/*",
    "*/",
    "\n",
    "\r",
    "\t",
    " ",
    "x",
    "é",
    "e",
    "E'",
    "U&'",
    "u&\"",
    "x$a$",
    "; CREATE INDEX i ON t (a); ",
    "; DROP TABLE t",
    "LOCK t",
    "-- c\n",
    "/* c */",
    ";\n",
];

const DOLLAR_TAGS: &[&str] = &["", "a", "b", "tag", "é", "a1", "_x", "ü$"];

const IDENTS: &[&str] = &[
    "a", "t", "x$a$", "x$$", "e$", "a1$b", "é$x$", "_$", "ab$1$", "e", "u", "x",
];

const NUMBERS: &[&str] = &[
    "1", "1.5", ".5", "0x1F", "1_000", "1e5", "1e-3", "0o17", "0b101", "1.", "42",
];

/// Whitespace and comments between tokens, including Postgres' less common ones
/// (`\r` alone, vertical tab, form feed, nested comments).
const SPACE: &[&str] = &[
    " ",
    "\n",
    "\t",
    "\r\n",
    "\r",
    "\x0b",
    "\x0c",
    "  ",
    "/* c */",
    "/* a /* b; */ c */",
    "-- c;\n",
    "-- c\r",
    "--\n",
    "/**/",
    "/* ' */",
    "-- $a$ '\n",
];

fn space(rng: &mut Rng) -> &'static str {
    rng.pick(SPACE)
}

fn payload(rng: &mut Rng) -> String {
    let mut out: String = (0..rng.below(6)).map(|_| rng.pick(PIECES)).collect();
    // A backslash before the closing quote splits the readings.
    if rng.percent(15) {
        out.push('\\');
    }
    out
}

/// A string literal in one of Postgres' forms, sometimes continued on a new line.
fn literal(rng: &mut Rng) -> String {
    let body = payload(rng);
    let quoted = |s: &str| s.replace('\'', "''");
    // E'' bodies: backslashes doubled, quotes as '' or \'; some real escapes.
    let escaped = |rng: &mut Rng, s: &str| {
        let mut out = String::new();
        for c in s.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\'' if rng.percent(50) => out.push_str("\\'"),
                '\'' => out.push_str("''"),
                c => out.push(c),
            }
        }
        if rng.percent(30) {
            out.push_str(rng.pick(&["\\n", "\\t", "\\x41", "\\101", "\\u00e9", "\\;", "\\\""]));
        }
        out
    };
    let unicode = |s: &str| s.replace('\\', "\\\\").replace('\'', "''") + "\\00e9";
    // With UESCAPE '!' a backslash is an ordinary character.
    let bang = |s: &str| s.replace('!', "!!").replace('\'', "''") + "!00e9";
    let bits = |s: &str| s.replace('\'', "");
    let mut suffix = "";
    let (head, rest) = match rng.below(9) {
        0 | 1 => (format!("'{}'", quoted(&body)), quoted(&payload(rng))),
        2 => (format!("E'{}'", escaped(rng, &body)), {
            let p = payload(rng);
            escaped(rng, &p)
        }),
        3 => (format!("e'{}'", escaped(rng, &body)), String::new()),
        4 => (format!("N'{}'", quoted(&body)), quoted(&payload(rng))),
        5 => (format!("U&'{}'", unicode(&body)), unicode(&payload(rng))),
        6 => {
            suffix = " UESCAPE '!'";
            (format!("u&'{}'", bang(&body)), bang(&payload(rng)))
        }
        7 => (
            format!("{}'{}'", rng.pick(&["B", "b", "X", "x"]), bits(&body)),
            bits(&payload(rng)),
        ),
        _ => {
            let tag = rng.pick(DOLLAR_TAGS);
            let delimiter = format!("${tag}$");
            if tag.contains('$') || body.contains(&delimiter) {
                return format!("'{}'", quoted(&body));
            }
            return format!("{delimiter}{body}{delimiter}");
        }
    };
    if rng.percent(20) {
        // SQL's continuation: only whitespace with a newline between the quotes.
        let gap = rng.pick(&["\n", " \n ", "\r", " -- c\n", "\n-- c\n\t", "\x0b\n"]);
        format!("{head}{gap}'{rest}'{suffix}")
    } else {
        format!("{head}{suffix}")
    }
}

fn identifier(rng: &mut Rng) -> String {
    let body = payload(rng);
    match rng.below(5) {
        0 if !body.is_empty() => format!("\"{}\"", body.replace('"', "\"\"")),
        1 if !body.is_empty() => {
            format!("U&\"{}\"", body.replace('\\', "\\\\").replace('"', "\"\""))
        }
        2 if !body.is_empty() => format!(
            "U&\"{}\" UESCAPE '!'",
            body.replace('!', "!!").replace('"', "\"\"")
        ),
        _ => rng.pick(IDENTS).to_string(),
    }
}

fn expression(rng: &mut Rng, depth: usize) -> String {
    match rng.below(if depth > 2 { 6 } else { 9 }) {
        0..=2 => literal(rng),
        3 => identifier(rng),
        4 => rng.pick(NUMBERS).to_string(),
        5 => format!("${}", 1 + rng.below(3)),
        // A type name before a string; `typee'…'` is no E'' string.
        6 => format!(
            "{}{}",
            rng.pick(&["typee", "int4 ", "text", "x.y ", "abe", "ab", "tx", "x$e", "nu&", "a1u&"]),
            literal(rng)
        ),
        7 => format!("({})", expression(rng, depth + 1)),
        _ => format!(
            "{}{}{}{}",
            expression(rng, depth + 1),
            space(rng),
            rng.pick(&["||", "+", "=", "::text ||", "<>"]),
            expression(rng, depth + 1)
        ),
    }
}

/// A statement no rule flags, with tricky literals and identifiers.
fn ordinary(rng: &mut Rng) -> String {
    let e = |rng: &mut Rng| expression(rng, 0);
    let s = |rng: &mut Rng| space(rng).to_string();
    match rng.below(10) {
        0 => format!("SELECT{}{}", s(rng), e(rng)),
        1 => format!("SELECT {}, {} AS {}", e(rng), e(rng), identifier(rng)),
        2 => format!(
            "SELECT {} FROM {} WHERE a = {}",
            e(rng),
            identifier(rng),
            e(rng)
        ),
        3 => format!("INSERT INTO t (a, b) VALUES ({}, {})", e(rng), e(rng)),
        4 => format!(
            "UPDATE t SET a ={}{}{}WHERE b = {}",
            s(rng),
            e(rng),
            s(rng),
            e(rng)
        ),
        5 => format!("DELETE FROM t WHERE a = {}", e(rng)),
        6 => rng
            .pick(&[
                "BEGIN",
                "COMMIT",
                "ROLLBACK",
                "SELECT 1",
                "START TRANSACTION",
            ])
            .to_string(),
        7 => format!("SET application_name = {}", literal(rng)),
        // DO takes several strings: pg_query parses two with a comment between.
        8 => format!("DO {}{}{}", literal(rng), s(rng), literal(rng)),
        _ => format!("SELECT {}{}FROM t", e(rng), s(rng)),
    }
}

/// A DDL statement, in random case and sometimes with spaces turned into comments.
fn ddl(rng: &mut Rng) -> String {
    let sql = rng.pick(DDL);
    let mut out = String::new();
    for c in sql.chars() {
        match c {
            ' ' if rng.percent(10) => out.push_str(space(rng)),
            c if rng.percent(50) => out.push(c.to_ascii_lowercase()),
            c => out.push(c),
        }
    }
    out
}

fn text(rng: &mut Rng) -> String {
    let mut out = String::new();
    if rng.percent(30) {
        out.push_str(space(rng));
    }
    let statements = 1 + rng.below(5);
    for n in 0..statements {
        if n > 0 {
            out.push(';');
            if rng.percent(70) {
                out.push_str(space(rng));
            }
        }
        if rng.percent(30) {
            out.push_str(&ddl(rng));
        } else {
            out.push_str(&ordinary(rng));
        }
    }
    if rng.percent(30) {
        out.push(';');
    }
    if rng.percent(20) {
        out.push_str(space(rng));
    }
    out
}

/// The text with one byte deleted, replaced or a piece inserted.
fn mutate(rng: &mut Rng, text: &str) -> Option<String> {
    let mut bytes = text.as_bytes().to_vec();
    let at = rng.below(bytes.len() + 1);
    match rng.below(3) {
        0 if at < bytes.len() => {
            bytes.remove(at);
        }
        1 if at < bytes.len() => bytes[at] = rng.pick(b"'\"$\\;-/*\nEe "),
        _ => {
            let piece = rng.pick(PIECES).as_bytes();
            bytes.splice(at..at, piece.iter().copied());
        }
    }
    String::from_utf8(bytes).ok()
}

#[derive(Debug, Default)]
struct Tally {
    texts: usize,
    parsed: usize,
    with_ddl: usize,
}

fn check(text: &str, tally: &mut Tally) {
    tally.texts += 1;
    let Ok(analysis) = analyze(text) else { return };
    tally.parsed += 1;
    let Some(flagged) = analysis.statements.iter().find(|s| s.finding.is_some()) else {
        return;
    };
    tally.with_ddl += 1;
    assert!(
        may_be_ddl(text.as_bytes()),
        "the sniff misses DDL ({:?}) in\n{text:?}",
        flagged.sql
    );
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn sniff_never_misses_what_the_rules_flag() {
    let cases = env("SNIFF_PROPERTY_CASES", 6_000);
    let mut rng = Rng(env("SNIFF_PROPERTY_SEED", 0x5eed_5111f));
    let mut tally = Tally::default();
    let start = std::time::Instant::now();
    for _ in 0..cases {
        let text = text(&mut rng);
        check(&text, &mut tally);
        for _ in 0..2 {
            if let Some(m) = mutate(&mut rng, &text) {
                check(&m, &mut tally);
            }
        }
    }
    eprintln!("{tally:?} in {:?}", start.elapsed());
    // The generator must keep producing parseable texts with DDL in them.
    assert!(tally.parsed * 3 > tally.texts, "{tally:?}");
    assert!(tally.with_ddl * 10 > tally.texts, "{tally:?}");
}

//! Parses SQL text with pg_query (the real Postgres grammar) and runs the rules over
//! each statement. The proxy asks through [`analyze_shared`]: the parse runs on a
//! parser thread (`super::parser`), bounded in size, nesting and waiting time, and
//! verdicts are cached by text per session thread (`super::parse_cache`).

use super::mentions::{self, IndexUse};
use super::plan::Finding;
use super::{nesting, parse_cache, parser, rules};
use pg_query::NodeEnum;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

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
    /// A COPY of a whole table without a column list (`COPY t FROM STDIN`).
    pub copy_target: Option<CopyTarget>,
    /// What the statement changes of a table's columns, when it adds, drops,
    /// renames or retypes them or rewrites the table.
    pub changes_columns_of: Option<ColumnChange>,
    /// What a rule found, if the statement is unsafe.
    pub finding: Option<Finding>,
    /// Databases the statement needs no other session connected to (DROP
    /// DATABASE, a rename, a tablespace move, CREATE DATABASE … TEMPLATE).
    pub exclusive_databases: Vec<String>,
    /// The table a CREATE TABLE [AS] creates, as SQL (`pgshift check` counts
    /// later statements on it as statements on a new table).
    pub creates: Option<String>,
    /// The indexes it names, when it only needs them to exist (a COMMENT, an ALTER
    /// INDEX): it follows a deferred build of one of them.
    pub index_use: Option<IndexUse>,
    /// An INSERT … VALUES or UPDATE whose values a rollout's mirror can repeat
    /// (offsets in the analysed text).
    pub write: Option<super::writes::Write>,
    /// What a RENAME changes: in a table, the name of a column or constraint
    /// (`Some`), or of the table itself (`None`).
    pub renames: Option<(TableRef, Option<String>)>,
}

/// A table as a statement names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRef {
    /// `db.schema.table`: Postgres takes it when db is the current database.
    pub catalog: Option<String>,
    pub schema: Option<String>,
    pub name: String,
}

impl TableRef {
    /// The table a parsed name (`RangeVar`) names.
    pub fn of(rel: &pg_query::protobuf::RangeVar) -> TableRef {
        TableRef {
            catalog: (!rel.catalogname.is_empty()).then(|| rel.catalogname.clone()),
            schema: (!rel.schemaname.is_empty()).then(|| rel.schemaname.clone()),
            name: rel.relname.clone(),
        }
    }
}

/// The table of a `COPY t …` without a column list, and where one would go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyTarget {
    pub schema: Option<String>,
    pub name: String,
    /// Byte offset in the analysed text just past the table's name.
    pub list_at: usize,
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

/// Why [`analyze`] gave no analysis.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not valid SQL: the server will say so too.
    #[error("{0}")]
    Syntax(String),
    /// Nested deeper than pgshift's parser takes.
    #[error("nested too deeply for pgshift's parser ({0})")]
    TooDeep(String),
    #[error("pgshift's parser failed: {0}")]
    Failed(String),
}

/// Deepest nesting, in tokens (`super::nesting`), that is parsed at all. Realistic
/// DDL stays far below (a 2,000-column CREATE TABLE: 11); Postgres itself refuses
/// 1+1+…+1 beyond ~6,000 terms (12,000 tokens) with its default max_stack_depth.
pub const MAX_NESTING: usize = 10_000;

/// Parses `sql` and reviews each statement. Recurses as deep as the statement nests
/// (up to [`MAX_NESTING`]): run it on a parser thread ([`analyze_shared`],
/// `parser::run_blocking`), not on a thread with a small stack.
pub fn analyze(sql: &str) -> Result<Analysis, ParseError> {
    match nesting::bound(sql, MAX_NESTING) {
        Some(depth) if depth > MAX_NESTING => {
            return Err(ParseError::TooDeep(format!(
                "up to {depth} levels by its tokens, over the {MAX_NESTING} it parses"
            )))
        }
        _ => {}
    }
    let parsed = pg_query::parse(sql).map_err(parse_error)?;
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
            copy_target: copy_target(node, sql),
            changes_columns_of: changes_columns_of(node),
            finding: rules::review(node, text),
            exclusive_databases: exclusive_databases(node),
            creates: creates(node),
            index_use: mentions::index_use(node),
            write: match parsed.protobuf.stmts.len() {
                1 => super::writes::of(node, sql),
                _ => None,
            },
            renames: renames(node),
        });
    }
    Ok(Analysis { statements })
}

/// What a statement changes of a table's columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnChange {
    pub table: TableRef,
    /// It adds columns.
    pub adds: bool,
    /// The columns it drops, renames or retypes.
    pub columns: Vec<String>,
    /// It may give every row a new version (a type change, SET LOGGED,
    /// UNLOGGED, ACCESS METHOD).
    pub rewrites: bool,
    /// It attaches or detaches a partition (whose columns must be the
    /// partitioned table's).
    pub partitions: bool,
}

fn changes_columns_of(node: &NodeEnum) -> Option<ColumnChange> {
    use pg_query::protobuf::{AlterTableType as At, ObjectType};
    match node {
        NodeEnum::AlterTableStmt(a) if a.objtype == ObjectType::ObjectTable as i32 => {
            let mut change = ColumnChange {
                table: TableRef::of(a.relation.as_ref()?),
                adds: false,
                columns: Vec::new(),
                rewrites: false,
                partitions: false,
            };
            for cmd in &a.cmds {
                let Some(NodeEnum::AlterTableCmd(cmd)) = cmd.node.as_ref() else {
                    continue;
                };
                match At::try_from(cmd.subtype) {
                    Ok(At::AtAddColumn) => change.adds = true,
                    Ok(At::AtDropColumn) => change.columns.push(cmd.name.clone()),
                    Ok(At::AtAlterColumnType) => {
                        change.columns.push(cmd.name.clone());
                        change.rewrites = true;
                    }
                    Ok(At::AtSetLogged | At::AtSetUnLogged | At::AtSetAccessMethod) => {
                        change.rewrites = true
                    }
                    Ok(
                        At::AtAttachPartition
                        | At::AtDetachPartition
                        | At::AtDetachPartitionFinalize,
                    ) => change.partitions = true,
                    _ => {}
                }
            }
            (change.adds || change.rewrites || change.partitions || !change.columns.is_empty())
                .then_some(change)
        }
        NodeEnum::RenameStmt(r) if r.rename_type == ObjectType::ObjectColumn as i32 => {
            Some(ColumnChange {
                table: TableRef::of(r.relation.as_ref()?),
                adds: false,
                columns: vec![r.subname.clone()],
                rewrites: false,
                partitions: false,
            })
        }
        _ => None,
    }
}

fn renames(node: &NodeEnum) -> Option<(TableRef, Option<String>)> {
    use pg_query::protobuf::ObjectType;
    let NodeEnum::RenameStmt(r) = node else {
        return None;
    };
    let table = TableRef::of(r.relation.as_ref()?);
    match ObjectType::try_from(r.rename_type) {
        Ok(ObjectType::ObjectTable) => Some((table, None)),
        Ok(ObjectType::ObjectColumn | ObjectType::ObjectTabconstraint) => {
            Some((table, Some(r.subname.clone())))
        }
        _ => None,
    }
}

fn copy_target(node: &NodeEnum, sql: &str) -> Option<CopyTarget> {
    let NodeEnum::CopyStmt(c) = node else {
        return None;
    };
    let table = c.relation.as_ref()?;
    if !c.filename.is_empty() || c.is_program || c.query.is_some() || !c.attlist.is_empty() {
        return None;
    }
    if !table.catalogname.is_empty() {
        return None;
    }
    Some(CopyTarget {
        schema: (!table.schemaname.is_empty()).then(|| table.schemaname.clone()),
        name: table.relname.clone(),
        list_at: name_end(sql, usize::try_from(table.location).ok()?)?,
    })
}

/// The end of the (possibly qualified) name that starts at byte `from`.
fn name_end(sql: &str, from: usize) -> Option<usize> {
    use pg_query::protobuf::Token;
    let comment = |t: i32| t == Token::SqlComment as i32 || t == Token::CComment as i32;
    let tokens = pg_query::scan(sql).ok()?.tokens;
    let mut rest = tokens
        .iter()
        .filter(|t| !comment(t.token))
        .skip_while(|t| usize::try_from(t.start).unwrap_or(0) < from);
    let span = |t: &pg_query::protobuf::ScanToken| {
        sql.get(usize::try_from(t.start).ok()?..usize::try_from(t.end).ok()?)
    };
    let mut end = usize::try_from(rest.next()?.end).ok()?;
    while let Some(next) = rest.next() {
        match span(next) {
            Some(".") => end = usize::try_from(rest.next()?.end).ok()?,
            // `U&"…" UESCAPE '!'`: the name goes on past its last token.
            Some(word) if word.eq_ignore_ascii_case("uescape") => return None,
            _ => break,
        }
    }
    Some(end)
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

/// The table a statement creates, as SQL.
fn creates(node: &NodeEnum) -> Option<String> {
    let rel = match node {
        // IF NOT EXISTS: the table may be an old one.
        NodeEnum::CreateStmt(c) if !c.if_not_exists => c.relation.as_ref()?,
        NodeEnum::CreateTableAsStmt(c) if !c.if_not_exists => c.into.as_ref()?.rel.as_ref()?,
        _ => return None,
    };
    Some(super::ident::relation(rel))
}

fn exclusive_databases(node: &NodeEnum) -> Vec<String> {
    use pg_query::protobuf::ObjectType;
    let option = |options: &[pg_query::protobuf::Node], name: &str| -> Option<String> {
        options.iter().find_map(|o| match o.node.as_ref()? {
            NodeEnum::DefElem(d) if d.defname == name => match d.arg.as_ref()?.node.as_ref()? {
                NodeEnum::String(s) => Some(s.sval.clone()),
                NodeEnum::TypeName(t) => t.names.last().and_then(|n| match n.node.as_ref()? {
                    NodeEnum::String(s) => Some(s.sval.clone()),
                    _ => None,
                }),
                _ => None,
            },
            _ => None,
        })
    };
    match node {
        NodeEnum::DropdbStmt(d) => vec![d.dbname.clone()],
        NodeEnum::RenameStmt(r) if r.rename_type == ObjectType::ObjectDatabase as i32 => {
            vec![r.subname.clone()]
        }
        NodeEnum::AlterDatabaseStmt(a) if option(&a.options, "tablespace").is_some() => {
            vec![a.dbname.clone()]
        }
        NodeEnum::CreatedbStmt(c) => option(&c.options, "template").into_iter().collect(),
        _ => Vec::new(),
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

fn parse_error(e: pg_query::Error) -> ParseError {
    match e {
        pg_query::Error::Parse(_) => ParseError::Syntax(e.to_string()),
        // prost refuses messages nested over 100 deep (~50 nested operators).
        pg_query::Error::Decode(d) if d.to_string().contains("recursion limit") => {
            ParseError::TooDeep("its parse tree is over 100 levels deep".into())
        }
        other => ParseError::Failed(other.to_string()),
    }
}

/// What the proxy learns about a candidate statement.
#[derive(Debug, Clone)]
pub enum Verdict {
    Parsed(Arc<Analysis>),
    /// Not valid SQL: the server reports it.
    SyntaxError(Arc<str>),
    /// pgshift did not parse it; `ddl.unparsed` decides what happens.
    Unparsed(Unparsed),
}

/// Why a candidate was not parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unparsed {
    #[error("the statement is {bytes} bytes, over ddl.max_parse_bytes ({limit})")]
    TooLarge { bytes: usize, limit: usize },
    #[error("the parse took longer than ddl.parse_timeout_ms ({ms} ms)")]
    Timeout { ms: u64 },
    #[error("pgshift's parser threads are busy and their queue is full")]
    Busy,
    #[error("{0}")]
    ParserFailed(String),
}

/// Bounds on parsing one candidate (`[ddl]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    /// Longer text is not parsed.
    pub max_bytes: usize,
    /// Longest wait for a parse.
    pub timeout: Duration,
    /// This thread's parse cache, in bytes.
    pub cache_bytes: usize,
}

/// Analyses `sql` on a parser thread, or answers from this thread's cache, without
/// blocking the calling thread. Waits at most `limits.timeout`; a parse still running
/// then finishes in the background and fills the cache.
pub async fn analyze_shared(sql: &str, limits: &ParseLimits) -> Verdict {
    let verdict = shared(sql, limits).await;
    if let Verdict::Unparsed(why) = &verdict {
        let counter = match why {
            Unparsed::TooLarge { .. } => &COUNTS.too_large,
            Unparsed::Timeout { .. } => &COUNTS.timeout,
            Unparsed::Busy => &COUNTS.busy,
            Unparsed::ParserFailed(_) => &COUNTS.parser_failed,
        };
        counter.fetch_add(1, Relaxed);
    }
    verdict
}

async fn shared(sql: &str, limits: &ParseLimits) -> Verdict {
    if sql.len() > limits.max_bytes {
        return Verdict::Unparsed(Unparsed::TooLarge {
            bytes: sql.len(),
            limit: limits.max_bytes,
        });
    }
    if let Some(hit) = parse_cache::get(sql, limits.cache_bytes) {
        return hit;
    }
    let text: Arc<str> = sql.into();
    let job = text.clone();
    let mut pending = match parser::submit(sql.len(), move || verdict_of(&job)) {
        Ok(p) => p,
        Err(parser::PoolError::Busy) => return Verdict::Unparsed(Unparsed::Busy),
        Err(e) => return Verdict::Unparsed(Unparsed::ParserFailed(e.to_string())),
    };
    let cap = limits.cache_bytes;
    match tokio::time::timeout(limits.timeout, &mut pending).await {
        Ok(Ok(verdict)) => {
            parse_cache::insert(text, verdict.clone(), cap);
            verdict
        }
        Ok(Err(e)) => Verdict::Unparsed(Unparsed::ParserFailed(e.to_string())),
        Err(_) => {
            if pending.started() {
                // Ends when the parse does; nothing else to stop.
                tokio::spawn(async move {
                    if let Ok(verdict) = pending.await {
                        parse_cache::insert(text, verdict, cap);
                    }
                });
            }
            Verdict::Unparsed(Unparsed::Timeout {
                ms: limits.timeout.as_millis() as u64,
            })
        }
    }
}

/// The verdict on `sql`, on a parser thread.
fn verdict_of(sql: &str) -> Verdict {
    match analyze(sql) {
        Ok(a) => Verdict::Parsed(Arc::new(a)),
        Err(ParseError::Syntax(m)) => Verdict::SyntaxError(m.into()),
        Err(e) => Verdict::Unparsed(Unparsed::ParserFailed(e.to_string())),
    }
}

/// Candidates not parsed since the process started, by reason.
#[derive(Debug, Default)]
pub struct UnparsedCounts {
    pub too_large: AtomicU64,
    pub timeout: AtomicU64,
    pub busy: AtomicU64,
    pub parser_failed: AtomicU64,
}

static COUNTS: UnparsedCounts = UnparsedCounts {
    too_large: AtomicU64::new(0),
    timeout: AtomicU64::new(0),
    busy: AtomicU64::new(0),
    parser_failed: AtomicU64::new(0),
};

/// The process-wide counts of candidates not parsed.
pub fn unparsed_counts() -> &'static UnparsedCounts {
    &COUNTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_without_a_column_list_says_where_one_goes() {
        fn at(sql: &str) -> Option<(Option<String>, String, &str)> {
            let t = analyze(sql).unwrap().statements[0].copy_target.clone();
            t.map(|t| (t.schema, t.name, &sql[..t.list_at]))
        }
        assert_eq!(
            at("COPY orders FROM STDIN"),
            Some((None, "orders".into(), "COPY orders"))
        );
        assert_eq!(
            at("copy /* x */ app . \"Or.ders\" TO STDOUT (FORMAT csv)"),
            Some((
                Some("app".into()),
                "Or.ders".into(),
                "copy /* x */ app . \"Or.ders\""
            ))
        );
        assert_eq!(at("COPY orders (id) FROM STDIN"), None);
        assert_eq!(at("COPY U&\"ord!0065rs\" UESCAPE '!' TO STDOUT"), None);
        assert_eq!(at("COPY (SELECT 1) TO STDOUT"), None);
        assert_eq!(at("COPY orders FROM '/tmp/x'"), None);
        assert_eq!(at("COPY db.app.orders FROM STDIN"), None);
    }

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
    fn statements_that_need_a_database_to_themselves() {
        let dbs = |sql: &str| {
            analyze(sql).unwrap().statements[0]
                .exclusive_databases
                .clone()
        };
        assert_eq!(
            dbs("DROP DATABASE IF EXISTS \"Test\" WITH (FORCE)"),
            ["Test"]
        );
        assert_eq!(dbs("ALTER DATABASE a RENAME TO b"), ["a"]);
        assert_eq!(dbs("ALTER DATABASE a SET TABLESPACE fast"), ["a"]);
        assert_eq!(dbs("CREATE DATABASE c TEMPLATE tpl"), ["tpl"]);
        assert_eq!(
            dbs("CREATE DATABASE c WITH TEMPLATE = 'tpl' OWNER x"),
            ["tpl"]
        );
        assert!(dbs("CREATE DATABASE c").is_empty());
        assert!(dbs("ALTER DATABASE a SET work_mem = '1MB'").is_empty());
        assert!(dbs("DROP TABLE t").is_empty());
    }

    #[test]
    fn safe_statements_are_clean() {
        let a = analyze("CREATE TABLE t (id int); SELECT 1").unwrap();
        assert!(a.is_clean());
    }

    #[test]
    fn syntax_errors_are_reported_not_panicked() {
        assert!(matches!(
            analyze("CREATE INDEX ON"),
            Err(ParseError::Syntax(_))
        ));
    }

    fn chain(terms: usize) -> String {
        format!("CREATE VIEW v AS SELECT 1{}", "+1".repeat(terms))
    }

    #[test]
    fn deep_statements_are_refused_not_overflowed() {
        // 4,000 terms is under the nesting bound: the C parser recurses 4,000 deep
        // (~9 MiB unoptimized, a test thread has 2 MiB), then the decoder refuses it.
        let deep = parser::run_blocking(16_000, || analyze(&chain(4_000))).unwrap();
        assert!(matches!(deep, Err(ParseError::TooDeep(_))), "{deep:?}");
        // Over the bound: refused before the parser, on any thread.
        let deeper = analyze(&chain(500_000));
        assert!(
            matches!(deeper, Err(ParseError::TooDeep(ref m)) if m.contains("over the 10000")),
            "{deeper:?}"
        );
        // Wide is fine.
        let wide = format!("CREATE VIEW v AS SELECT 1{}", ", 1+1".repeat(20_000));
        assert!(parser::run_blocking(wide.len(), move || analyze(&wide))
            .unwrap()
            .is_ok());
    }

    fn limits() -> ParseLimits {
        ParseLimits {
            max_bytes: 1 << 20,
            timeout: Duration::from_secs(10),
            cache_bytes: 1 << 20,
        }
    }

    #[tokio::test]
    async fn shared_verdicts() {
        let l = limits();
        let Verdict::Parsed(a) = analyze_shared("CREATE INDEX i ON t (c)", &l).await else {
            panic!("not parsed");
        };
        assert!(!a.is_clean());
        assert!(parse_cache::get("CREATE INDEX i ON t (c)", l.cache_bytes).is_some());
        assert!(matches!(
            analyze_shared("CREATE INDEX ON", &l).await,
            Verdict::SyntaxError(_)
        ));
        let before = COUNTS.too_large.load(Relaxed);
        let big = "x".repeat(l.max_bytes + 1);
        assert!(matches!(
            analyze_shared(&big, &l).await,
            Verdict::Unparsed(Unparsed::TooLarge { bytes, limit: 1_048_576 }) if bytes == big.len()
        ));
        assert!(COUNTS.too_large.load(Relaxed) > before);
        let deep = analyze_shared(&chain(4_000), &l).await;
        assert!(
            matches!(&deep, Verdict::Unparsed(Unparsed::ParserFailed(m)) if m.contains("nested too deeply")),
            "{deep:?}"
        );
    }

    #[tokio::test]
    async fn a_slow_parse_times_out_and_still_fills_the_cache() {
        let l = ParseLimits {
            timeout: Duration::from_millis(1),
            ..limits()
        };
        // Far more than a millisecond of parsing, under the big-job threshold.
        let sums = format!("1{}", "+1".repeat(40));
        let sql = format!("CREATE VIEW v AS SELECT {}", vec![sums; 700].join(", "));
        assert!(sql.len() < parser::BIG_JOB_BYTES);
        let before = COUNTS.timeout.load(Relaxed);
        let verdict = analyze_shared(&sql, &l).await;
        assert!(
            matches!(verdict, Verdict::Unparsed(Unparsed::Timeout { ms: 1 })),
            "{verdict:?}"
        );
        assert!(COUNTS.timeout.load(Relaxed) > before);
        for _ in 0..600 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if parse_cache::get(&sql, l.cache_bytes).is_some() {
                return;
            }
            // A job no thread had taken when the wait ended was withdrawn: again.
            analyze_shared(&sql, &l).await;
        }
        panic!("the finished parse did not reach the cache");
    }
}

//! `pgshift check FILE...`: reviews migration files offline, with the same rules the
//! proxy applies, and prints each finding with the lock it takes and what pgshift
//! would run instead. The exit code says whether a file needs attention: 1 when a
//! finding's default policy is rewrite or reject (or a file does not parse, or nests
//! too deeply to check), 0 when there are only warn/allow findings or none, 2 when a
//! file cannot be read.

use super::analysis::{self, code_span, ParseError};
use super::plan::{Finding, Placement, Policy, Step, StepKind};
use super::{naming, parser};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::PathBuf;

/// Output format of `pgshift check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// One finding, located.
#[derive(Debug, Clone)]
pub struct Located {
    pub file: String,
    pub line: usize,
    pub finding: Finding,
}

/// What checking one file's text gave.
#[derive(Debug)]
pub enum Outcome {
    Findings(Vec<(usize, Finding)>),
    /// The file does not parse: the line of the statement that fails, and the message.
    SyntaxError(usize, String),
    /// pgshift cannot parse it (nested too deeply): why.
    Unchecked(String),
}

/// Checks the text of one file.
pub fn check_text(text: &str) -> Outcome {
    match analysis::analyze(text) {
        Ok(a) => {
            // A table created earlier in the file is new: nobody else uses it yet,
            // so statements on it are safe as written (as the proxy judges it).
            let mut created: Vec<String> = Vec::new();
            let mut found = Vec::new();
            for s in a.statements {
                let line = s.line_in(text);
                if let Some(c) = s.creates {
                    created.push(c);
                }
                let Some(mut f) = s.finding else { continue };
                let locked = f.locked();
                if !locked.is_empty() && locked.iter().all(|r| created.iter().any(|c| c == r)) {
                    continue;
                }
                if let Some(plan) = &mut f.rewrite {
                    naming::name_offline(plan);
                }
                found.push((line, f));
            }
            Outcome::Findings(found)
        }
        Err(ParseError::Syntax(msg)) => Outcome::SyntaxError(error_line(text), msg),
        Err(e) => Outcome::Unchecked(e.to_string()),
    }
}

fn line_at(text: &str, offset: usize) -> usize {
    1 + text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// The line of the first statement that fails to parse on its own; pg_query's error
/// carries no position. Falls back to line 1 when the scanner itself fails.
fn error_line(text: &str) -> usize {
    let Ok(pieces) = pg_query::split_with_scanner(text) else {
        return 1;
    };
    pieces
        .into_iter()
        .find(|p| pg_query::parse(p).is_err())
        .map_or(1, |p| {
            let offset = p.as_ptr() as usize - text.as_ptr() as usize;
            line_at(text, offset + code_span(p).start)
        })
}

/// Runs the check over `files`, prints the report and returns the exit code.
pub fn run(files: &[PathBuf], format: Format) -> u8 {
    let mut texts = Vec::new();
    for path in files {
        match std::fs::read_to_string(path) {
            Ok(t) => texts.push((path.display().to_string(), t)),
            Err(e) => {
                eprintln!("pgshift: cannot read {}: {e}", path.display());
                return 2;
            }
        }
    }
    let mut found = Vec::new();
    let mut failed = false;
    for (file, text) in texts {
        // The parse recurses as deep as the SQL nests: a parser thread has the stack.
        let outcome = parser::run_blocking(text.len(), move || check_text(&text))
            .unwrap_or_else(|e| Outcome::Unchecked(e.to_string()));
        match outcome {
            Outcome::Findings(fs) => found.extend(fs.into_iter().map(|(line, finding)| Located {
                file: file.clone(),
                line,
                finding,
            })),
            Outcome::SyntaxError(line, msg) => {
                failed = true;
                match format {
                    Format::Text => println!("{file}:{line}: syntax error: {msg}"),
                    Format::Json => eprintln!("{file}:{line}: syntax error: {msg}"),
                }
            }
            Outcome::Unchecked(msg) => {
                failed = true;
                match format {
                    Format::Text => println!("{file}: not checked: {msg}"),
                    Format::Json => eprintln!("{file}: not checked: {msg}"),
                }
            }
        }
    }
    match format {
        Format::Text => print!("{}", text_report(&found)),
        Format::Json => println!("{}", json_report(&found)),
    }
    let needs_change = found
        .iter()
        .any(|l| matches!(l.finding.default_policy, Policy::Rewrite | Policy::Reject));
    u8::from(failed || needs_change)
}

fn placement(step: &Step) -> &'static str {
    match (step.placement, &step.kind) {
        (_, StepKind::Backfill { .. }) => "own transaction per batch",
        (Placement::Anywhere, _) => "anywhere",
        (Placement::OwnTransaction, _) => "own transaction",
        (Placement::OutsideTransaction, _) => "outside a transaction",
    }
}

/// The human report: one header line per finding, then its lock and plan or hint.
pub fn text_report(found: &[Located]) -> String {
    let mut out = String::new();
    for l in found {
        let f = &l.finding;
        let _ = writeln!(
            out,
            "{}:{}: {} [{}]: {}",
            l.file,
            l.line,
            f.rule,
            f.default_policy.name(),
            f.problem
        );
        let _ = writeln!(out, "    lock: {}", f.lock);
        match &f.rewrite {
            Some(plan) => {
                let _ = writeln!(out, "    safe plan: {}", plan.summary);
                for (i, s) in plan.steps.iter().enumerate() {
                    if let StepKind::Rollout { .. } = s.kind {
                        let _ = writeln!(out, "      {}. online rollout: new column and mirror trigger (ACCESS EXCLUSIVE, brief), background backfill and verify, cutover (ACCESS EXCLUSIVE, brief); outside a transaction", i + 1);
                        continue;
                    }
                    let sql = s.sql.replace('\n', "\n         ");
                    let _ = writeln!(out, "      {}. {sql}; {}; {}", i + 1, s.lock, placement(s));
                }
            }
            None => {
                let _ = writeln!(out, "    hint: {}", f.hint);
            }
        }
    }
    out
}

fn step_json(s: &Step) -> Value {
    let (kind, index) = match &s.kind {
        StepKind::Sql => ("sql", None),
        StepKind::ConcurrentIndex { index, .. } => ("concurrent-index", Some(index.as_str())),
        StepKind::Backfill { .. } => ("backfill", None),
        StepKind::TypeChange { .. } => ("type-change", None),
        StepKind::Rollout { .. } => ("rollout", None),
    };
    let placement = match s.placement {
        Placement::Anywhere => "anywhere",
        Placement::OwnTransaction => "own-transaction",
        Placement::OutsideTransaction => "outside-transaction",
    };
    let mut v = json!({
        "sql": s.sql,
        "lock": s.lock.name(),
        "placement": placement,
        "long": s.long,
        "kind": kind,
    });
    if let Some(index) = index {
        v["index"] = json!(index);
    }
    v
}

/// The machine report: one array of finding objects.
pub fn json_report(found: &[Located]) -> String {
    let items: Vec<Value> = found
        .iter()
        .map(|l| {
            let f = &l.finding;
            json!({
                "file": l.file,
                "line": l.line,
                "rule": f.rule,
                "policy": f.default_policy.name(),
                "tag": f.tag,
                "lock": f.lock.name(),
                "table": f.table,
                "problem": f.problem,
                "hint": f.hint,
                "plan": f.rewrite.as_ref().map(|p| json!({
                    "summary": p.summary,
                    "steps": p.steps.iter().map(step_json).collect::<Vec<_>>(),
                })),
            })
        })
        .collect();
    serde_json::to_string_pretty(&Value::Array(items)).unwrap_or_else(|_| "[]".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn located(sql: &str) -> Vec<Located> {
        let Outcome::Findings(fs) = check_text(sql) else {
            panic!("syntax error");
        };
        fs.into_iter()
            .map(|(line, finding)| Located {
                file: "m.sql".into(),
                line,
                finding,
            })
            .collect()
    }

    #[test]
    fn text_report_shows_plan_or_hint() {
        let sql = "BEGIN;\n\nCREATE INDEX i ON t (c);\nALTER TABLE t ALTER COLUMN id TYPE bigint;\nCOMMIT;\n";
        assert_eq!(
            text_report(&located(sql)),
            "m.sql:3: create-index [rewrite]: CREATE INDEX takes a SHARE lock on t: writes wait for the whole build\n    lock: SHARE\n    safe plan: CREATE INDEX CONCURRENTLY i ON t USING btree (c) (SHARE UPDATE EXCLUSIVE; an INVALID leftover is dropped and the build retried)\n      1. CREATE INDEX CONCURRENTLY i ON t USING btree (c); SHARE UPDATE EXCLUSIVE; outside a transaction\n\
             m.sql:4: alter-column-type [rewrite]: ALTER COLUMN id TYPE bigint rewrites all of t and its indexes under ACCESS EXCLUSIVE: reads and writes wait for the rewrite\n    lock: ACCESS EXCLUSIVE\n    safe plan: ALTER COLUMN id TYPE bigint runs as an online rollout: a new column, mirrored and backfilled in the background, swapped in at cutover\n      1. online rollout: new column and mirror trigger (ACCESS EXCLUSIVE, brief), background backfill and verify, cutover (ACCESS EXCLUSIVE, brief); outside a transaction\n"
        );
    }

    #[test]
    fn json_report_has_every_field() {
        let v: Value = serde_json::from_str(&json_report(&located(
            "ALTER TABLE t ADD COLUMN u uuid DEFAULT gen_random_uuid();",
        )))
        .unwrap();
        let f = &v[0];
        assert_eq!(f["rule"], "add-column");
        assert_eq!(f["line"], 1);
        assert_eq!(f["lock"], "ACCESS EXCLUSIVE");
        assert_eq!(f["table"], "t");
        assert_eq!(f["plan"]["steps"][2]["kind"], "backfill");
        assert_eq!(f["plan"]["steps"][2]["placement"], "own-transaction");
        assert_eq!(f["plan"]["steps"][2]["long"], true);
    }

    #[test]
    fn syntax_errors_name_the_failing_statement() {
        let sql = "SELECT 1;\n-- next\nCREATE INDEX ON;\nSELECT 2;";
        match check_text(sql) {
            Outcome::SyntaxError(line, msg) => {
                assert_eq!(line, 3);
                assert!(msg.contains("syntax error"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn deep_statements_are_not_checked_and_say_so() {
        let sql = format!(
            "SELECT 1;\nCREATE VIEW v AS SELECT 1{};",
            "+1".repeat(5_000)
        );
        let outcome = parser::run_blocking(sql.len(), move || check_text(&sql)).unwrap();
        match outcome {
            Outcome::Unchecked(msg) => assert!(msg.contains("nested too deeply"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }
}

//! `pgshift check` over the migration corpus in tests/corpus: the exact findings
//! (line and rule) of each file, the exit code, and the shape of both reports. No
//! Postgres needed: the check is offline.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

fn corpus(name: &str) -> String {
    let p: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "corpus", name]
        .iter()
        .collect();
    p.display().to_string()
}

struct Run {
    stdout: String,
    stderr: String,
    code: i32,
}

fn pgshift(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_pgshift"))
        .arg("check")
        .args(args)
        .output()
        .expect("run pgshift");
    Run {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code().unwrap_or(-1),
    }
}

/// (line, rule) of every finding, from the JSON report.
fn findings(file: &str) -> (Vec<(u64, String)>, i32) {
    let run = pgshift(&["--format", "json", &corpus(file)]);
    let v: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{file}: bad JSON ({e}): {}", run.stdout));
    let list = v
        .as_array()
        .expect("an array")
        .iter()
        .map(|f| {
            (
                f["line"].as_u64().unwrap(),
                f["rule"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (list, run.code)
}

/// A corpus file, its findings as (line, rule), and the exit code.
type Expected = (&'static str, &'static [(u64, &'static str)], i32);

#[test]
fn corpus_findings_and_exit_codes() {
    let expected: &[Expected] = &[
        // Its FK and index are on tables the same file created: new, nobody
        // else uses them, so they are safe as written.
        ("django_0001_initial.sql", &[], 0),
        // The same two statements on tables that already exist.
        (
            "django_0003_existing_tables.sql",
            &[(1, "add-foreign-key"), (2, "create-index")],
            1,
        ),
        (
            "django_0002_book_fields.sql",
            &[
                // An inline REFERENCES is added NOT VALID, then validated.
                (5, "add-column"),
                (9, "lock-timeout"),
                (10, "lock-timeout"),
                (14, "alter-column-type"),
                (18, "set-not-null"),
                (22, "add-unique"),
                (23, "create-index"),
                (24, "create-index"),
                (25, "create-index"),
            ],
            1,
        ),
        (
            "rails_20240315120000_add_status_to_users.sql",
            &[
                (3, "lock-timeout"),
                (4, "create-index"),
                (5, "add-column"),
                (6, "add-foreign-key"),
                (9, "alter-column-type"),
                (10, "rename"),
            ],
            1,
        ),
        ("rails_20240401090000_concurrent_index.sql", &[], 0),
        (
            "alembic_3f2a1b4c5d6e_accounts.sql",
            &[
                (10, "lock-timeout"),
                (12, "add-column"),
                (14, "create-index"),
                (16, "set-not-null"),
                (18, "add-check"),
            ],
            1,
        ),
        // Its CREATE INDEX is on a table the file created: new, safe as written.
        ("V1__init.sql", &[], 0),
        (
            "V2__inventory_changes.sql",
            &[
                (2, "add-column"),
                (4, "drop-index"),
                (6, "reindex"),
                (8, "truncate"),
                (10, "drop-table"),
                (12, "drop-column"),
            ],
            1,
        ),
        (
            "000003_add_payments.up.sql",
            &[(8, "add-column"), (10, "lock-timeout")],
            1,
        ),
        (
            "000003_add_payments.down.sql",
            &[(1, "drop-column"), (2, "drop-table")],
            0,
        ),
        ("safe_only.sql", &[], 0),
        (
            "prisma_quoted_identifiers.sql",
            &[
                (10, "lock-timeout"),
                // Line 14's index is on a table the file created.
                (17, "add-foreign-key"),
                (20, "set-not-null"),
            ],
            1,
        ),
        (
            "partitions.sql",
            &[
                (16, "lock-timeout"),
                (19, "attach-partition"),
                (22, "detach-partition"),
            ],
            1,
        ),
        (
            "functions_and_comments.sql",
            &[(24, "lock-timeout"), (27, "add-column")],
            1,
        ),
        (
            "warn_and_allow_only.sql",
            &[
                (2, "enum-add-value"),
                (3, "rename"),
                (4, "drop-column"),
                (5, "truncate"),
                (6, "reindex"),
                (7, "refresh-matview"),
            ],
            0,
        ),
        (
            "rejects.sql",
            &[
                (1, "table-rewrite"),
                (2, "table-rewrite"),
                (3, "alter-column-type"),
                // NOT NULL without a default is Postgres' to refuse or allow.
                (4, "lock-timeout"),
                (5, "add-column"),
                (6, "add-exclusion"),
                (7, "table-rewrite"),
                (8, "alter-column-type"),
            ],
            1,
        ),
    ];
    for (file, want, code) in expected {
        let (got, got_code) = findings(file);
        let want: Vec<(u64, String)> = want.iter().map(|(l, r)| (*l, r.to_string())).collect();
        assert_eq!(got, want, "{file}");
        assert_eq!(got_code, *code, "{file}: exit code");
    }
}

#[test]
fn json_report_has_every_field() {
    let run = pgshift(&[
        "--format",
        "json",
        &corpus("rejects.sql"),
        &corpus("alembic_3f2a1b4c5d6e_accounts.sql"),
    ]);
    assert_eq!(run.code, 1);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    let all = v.as_array().unwrap();
    assert_eq!(all.len(), 13, "findings of both files in one array");
    for f in all {
        for key in [
            "file", "line", "rule", "policy", "tag", "lock", "table", "problem", "hint", "plan",
        ] {
            assert!(f.get(key).is_some(), "missing {key} in {f}");
        }
    }
    let vacuum = &all[0];
    assert_eq!(vacuum["rule"], "table-rewrite");
    assert_eq!(vacuum["policy"], "reject");
    assert_eq!(vacuum["tag"], "VACUUM");
    assert_eq!(vacuum["lock"], "ACCESS EXCLUSIVE");
    assert_eq!(vacuum["table"], "events");
    assert!(vacuum["plan"].is_null());
    assert!(vacuum["file"].as_str().unwrap().ends_with("rejects.sql"));

    let backfill = all
        .iter()
        .find(|f| f["rule"] == "add-column" && f["line"] == 12)
        .expect("the alembic volatile default");
    let steps = backfill["plan"]["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    assert_eq!(
        steps[0]["sql"],
        "ALTER TABLE accounts ADD COLUMN external_id uuid"
    );
    assert_eq!(steps[0]["placement"], "anywhere");
    assert_eq!(steps[0]["long"], false);
    assert_eq!(steps[0]["kind"], "sql");
    assert_eq!(steps[2]["kind"], "backfill");
    assert_eq!(steps[2]["placement"], "own-transaction");
    assert_eq!(steps[2]["lock"], "ROW EXCLUSIVE");
    assert!(steps[2]["sql"]
        .as_str()
        .unwrap()
        .contains("LIMIT $1::bigint"));
    assert!(backfill["plan"]["summary"].is_string());

    let index = all.iter().find(|f| f["rule"] == "create-index").unwrap();
    let step = &index["plan"]["steps"][0];
    assert_eq!(step["kind"], "concurrent-index");
    assert_eq!(step["index"], "ix_accounts_external_id");
    assert_eq!(step["placement"], "outside-transaction");
    assert_eq!(step["long"], true);
}

#[test]
fn text_report_shows_lock_and_plan_or_hint() {
    let file = corpus("django_0003_existing_tables.sql");
    let run = pgshift(&[&file]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stdout,
        format!(
            "{file}:1: add-foreign-key [rewrite]: ADD FOREIGN KEY scans library_book holding SHARE ROW EXCLUSIVE on library_book and library_author: writes to both wait for the scan
    lock: SHARE ROW EXCLUSIVE
    safe plan: ADD CONSTRAINT library_book_author_id_6b4fe3fa_fk_library_author_id … NOT VALID, then VALIDATE CONSTRAINT in its own transaction
      1. ALTER TABLE library_book ADD CONSTRAINT library_book_author_id_6b4fe3fa_fk_library_author_id FOREIGN KEY (author_id) REFERENCES library_author (id) DEFERRABLE INITIALLY DEFERRED NOT VALID; SHARE ROW EXCLUSIVE; anywhere
      2. ALTER TABLE library_book VALIDATE CONSTRAINT library_book_author_id_6b4fe3fa_fk_library_author_id; SHARE UPDATE EXCLUSIVE; own transaction
{file}:2: create-index [rewrite]: CREATE INDEX takes a SHARE lock on library_book: writes wait for the whole build
    lock: SHARE
    safe plan: CREATE INDEX CONCURRENTLY library_book_author_id_6b4fe3fa ON library_book USING btree (author_id) (SHARE UPDATE EXCLUSIVE; an INVALID leftover is dropped and the build retried)
      1. CREATE INDEX CONCURRENTLY library_book_author_id_6b4fe3fa ON library_book USING btree (author_id); SHARE UPDATE EXCLUSIVE; outside a transaction
"
        )
    );
    let rejects = pgshift(&[&corpus("rejects.sql")]);
    assert!(
        rejects.stdout.contains("    hint: Use pg_repack (online)"),
        "{}",
        rejects.stdout
    );
}

#[test]
fn clean_files_print_nothing_and_exit_zero() {
    let run = pgshift(&[
        &corpus("safe_only.sql"),
        &corpus("rails_20240401090000_concurrent_index.sql"),
    ]);
    assert_eq!(
        (run.code, run.stdout.as_str(), run.stderr.as_str()),
        (0, "", "")
    );
    let json = pgshift(&["--format", "json", &corpus("safe_only.sql")]);
    assert_eq!(
        serde_json::from_str::<Value>(&json.stdout).unwrap(),
        Value::Array(vec![])
    );
}

#[test]
fn syntax_errors_name_the_line_and_fail() {
    let file = corpus("syntax_error.sql");
    let run = pgshift(&[&file]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stdout,
        format!("{file}:5: syntax error: Invalid statement: syntax error at or near \";\"\n")
    );
    // With JSON the error goes to stderr and stdout stays a valid (empty) array.
    let json = pgshift(&["--format", "json", &file]);
    assert_eq!(json.code, 1);
    assert!(json.stderr.starts_with(&format!("{file}:5: syntax error:")));
    assert_eq!(
        serde_json::from_str::<Value>(&json.stdout).unwrap(),
        Value::Array(vec![])
    );
}

#[test]
fn usage_and_io_errors_exit_two_with_one_line() {
    let missing = corpus("does_not_exist.sql");
    let run = pgshift(&[&corpus("rejects.sql"), &missing]);
    assert_eq!(run.code, 2);
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run
        .stderr
        .starts_with(&format!("pgshift: cannot read {missing}: ")));

    assert_eq!(pgshift(&[]).code, 2);
    assert_eq!(
        pgshift(&["--format", "yaml", &corpus("safe_only.sql")]).code,
        2
    );
}

#[test]
fn deeply_nested_files_are_reported_not_fatal() {
    // 5,000 terms overflowed the check's 8 MiB main-thread stack (unoptimized
    // builds) before the parse moved to the parser threads.
    let dir = std::env::temp_dir().join(format!("pgshift-check-deep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for terms in [4_000, 5_000, 100_000] {
        let file = dir.join(format!("deep_{terms}.sql"));
        let sql = format!(
            "CREATE INDEX i ON t (c);\nCREATE VIEW v AS SELECT 1{};\n",
            "+1".repeat(terms)
        );
        std::fs::write(&file, sql).unwrap();
        let run = pgshift(&[file.to_str().unwrap()]);
        assert_eq!(run.code, 1, "{terms}: {}{}", run.stdout, run.stderr);
        let said = run.stdout.contains("not checked: nested too deeply");
        assert!(said, "{terms} terms: {}{}", run.stdout, run.stderr);
    }
}

//! The migration never feels pgshift: each script in tests/differential runs with
//! psql directly and through pgshift (with pgshift's own NOTICEs off), each in a
//! fresh database, and must print byte for byte the same thing (rows, NOTICEs,
//! WARNINGs, errors with their caret) and leave the same schema
//! (`pg_dump --schema-only`). Through pgshift twice where the size must not matter:
//! with the default `ddl.small_table_bytes` (the test tables are small, so
//! statements run as written) and with every table judged large (the safe forms).

mod common;

use common::{fresh_db, pg, psql_at, Proxy};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

fn proxy() -> &'static Proxy {
    static PROXY: OnceLock<Proxy> = OnceLock::new();
    PROXY.get_or_init(|| {
        Proxy::start_with(|c| {
            c.ddl.notices = false;
            c.ddl.small_table_bytes = pgshift::config::Ddl::default().small_table_bytes;
        })
    })
}

/// pgshift judging every table large: what must be the same at any size.
fn proxy_judging_all_large() -> &'static Proxy {
    static PROXY: OnceLock<Proxy> = OnceLock::new();
    PROXY.get_or_init(|| Proxy::start_with(|c| c.ddl.notices = false))
}

fn script_path(name: &str) -> PathBuf {
    [env!("CARGO_MANIFEST_DIR"), "tests", "differential", name]
        .iter()
        .collect()
}

/// psql's whole output (stdout and stderr in the order psql wrote them) for the
/// script, run in `db` at `port`, continuing after errors.
fn run_psql(name: &str, port: u16, db: &str) -> String {
    let path = script_path(name);
    let cmd = format!(
        "psql -X -a -h 127.0.0.1 -p {port} -U postgres -d {db} -v ON_ERROR_STOP=0 \
         -v VERBOSITY=default -f {} 2>&1",
        path.display()
    );
    let out = Command::new("sh")
        .args(["-c", &cmd])
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGAPPNAME", "differential")
        .output()
        .expect("sh and psql");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn schema(db: &str) -> String {
    let addr = pg().tcp_address();
    let (_, port) = addr.rsplit_once(':').unwrap();
    let out = Command::new("pg_dump")
        .args(["--schema-only", "--no-owner", "--exclude-schema=pgshift"])
        .args(["-h", "127.0.0.1", "-p", port])
        .args(["-U", "postgres", "-d", db])
        .output()
        .expect("pg_dump");
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // pg_dump 15.14+ fences its output with a random key.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Line-level first difference, for a readable failure.
fn first_difference(a: &str, b: &str) -> String {
    let (al, bl): (Vec<_>, Vec<_>) = (a.lines().collect(), b.lines().collect());
    for i in 0..al.len().max(bl.len()) {
        let (x, y) = (al.get(i), bl.get(i));
        if x != y {
            let from = i.saturating_sub(3);
            return format!(
                "line {}:\n  directly: {:?}\n  pgshift:  {:?}\ncontext directly:\n{}\n",
                i + 1,
                x,
                y,
                al[from..(i + 3).min(al.len())].join("\n")
            );
        }
    }
    String::new()
}

fn differential(name: &str) {
    compare(name, proxy(), "small tables as written");
}

fn differential_any_size(name: &str) {
    compare(name, proxy(), "small tables as written");
    compare(name, proxy_judging_all_large(), "every table judged large");
}

fn compare(name: &str, proxy: &Proxy, sizes: &str) {
    let stem = name.trim_end_matches(".sql");
    let direct_db = fresh_db(&format!("d_{stem}"));
    let proxied_db = fresh_db(&format!("p_{stem}"));
    let pg_port: u16 = pg()
        .tcp_address()
        .rsplit_once(':')
        .unwrap()
        .1
        .parse()
        .unwrap();
    // Database names differ (d_… and p_…): only what psql prints is compared.
    let direct = run_psql(name, pg_port, &direct_db);
    let proxied = run_psql(name, proxy.port(), &proxied_db);
    assert!(
        direct == proxied,
        "{name} ({sizes}): output differs\n{}\n--- directly ---\n{direct}\n--- through pgshift ---\n{proxied}",
        first_difference(&direct, &proxied)
    );
    // A fill pgshift runs in the background (ADD COLUMN … DEFAULT <volatile>)
    // leaves its trigger until the last old row has its value.
    settle(pg_port, &proxied_db);
    let (a, b) = (schema(&direct_db), schema(&proxied_db));
    assert!(
        a == b,
        "{name} ({sizes}): schema differs\n{}",
        first_difference(&a, &b)
    );
}

/// Waits until no rollout pgshift started in `db` is still running.
fn settle(port: u16, db: &str) {
    let query = "SELECT count(*) FROM pgshift.rollouts \
                 WHERE phase NOT IN ('finished', 'rolled_back')";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (ok, out, err) = psql_at(port, db, &format!("\\t on\n{query};"));
        // No schema pgshift: nothing ever ran in the background there.
        if !ok && err.contains("does not exist") || ok && out.trim() == "0" {
            return;
        }
        assert!(ok, "{db}: {err}");
        assert!(
            std::time::Instant::now() < deadline,
            "{db}: rollouts still running after 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

macro_rules! scripts {
    ($run:ident: $($test:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                $run(concat!(stringify!($test), ".sql"));
            }
        )*
    };
}

// The same output at any size: pgshift's safe forms (or leaving the statement
// alone) change nothing a client sees.
scripts!(differential_any_size:
    add_column_check,
    add_column_fill_triggers,
    add_column_if_not_exists,
    add_column_not_null,
    add_column_references,
    add_column_volatile_default,
    add_foreign_key,
    alter_multi_subcommand_atomicity,
    alter_multi_subcommand_order,
    alter_serial_sequence_names,
    alter_unique_pkey_failures,
    check_and_set_not_null,
    check_naming_expressions,
    comment_on_new_index,
    create_index_if_not_exists,
    django_initial,
    drop_cascade,
    drop_if_exists,
    errors_in_ddl,
    matview_unique_index,
    multi_statement_error,
    new_table_in_transaction,
    partitioned_unnamed_index,
    primary_and_unique_constraints,
    reindex_and_analyze,
    savepoints,
    set_not_null_fails,
    set_not_null_only,
    temp_tables,
    tool_alembic,
    tool_flyway,
    tool_golang_migrate_sqitch,
    tool_liquibase,
    tool_prisma,
    tool_rails_concurrently,
    unnamed_check_and_fkey,
    unnamed_constraint_collisions,
    unnamed_index_collisions,
    unnamed_index_long_names,
    unnamed_indexes,
);

// The same output on small tables, where the statement runs as written. On large
// ones pgshift refuses these (a rewrite of the whole table, a REFRESH that cannot
// be concurrent), or its safe form differs where the client can see it: an
// event trigger fires for each of its statements.
scripts!(differential:
    alter_type_small,
    cluster_vacuum_full_small,
    event_trigger_notice,
    generated_stored,
    matview_no_unique_index,
    matview_unpopulated,
    tool_knex,
    tool_type_changes_small,
);

//! The console's commands, read from what the operator typed. Nothing typed here
//! is ever spliced into SQL: ids and numbers are parsed as numbers, a database
//! name is only compared with the databases pgshift knows, and the rest must be
//! one of the words below.

use crate::rollout::Request;

/// One command of the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Version,
    Rollouts,
    Rollout(Target),
    Request(Request, Target),
    Throttle(Target, i64),
    /// `ROLLOUT BATCH <id> <rows>`: the most rows per backfill batch.
    Batch(Target, i64),
    /// `ROLLOUT START …`.
    Start(super::start::Start),
    /// `ROLLOUT FILL …`.
    Fill(super::fill::FillColumn),
    /// A session setting a driver sends on connecting (PgJDBC's
    /// `SET extra_float_digits = 3`): answered `SET`, changing nothing.
    SessionSet,
    Config,
    Clients,
    Stats,
    Rules,
    /// The DDL journal, newest first, at most this many rows.
    Ddl(Option<i64>),
    Deferred(Option<i64>),
    /// `SET <key> = <value>`: a running setting.
    Set(String, String),
    /// `SET RULE <rule> <policy>`.
    SetRule(String, String),
    Shutdown,
    Servers,
    /// Ends one client session (its id from SHOW CLIENTS).
    Kill(u64),
    /// Reads the config file again, as SIGHUP does.
    Reload,
    /// `PAUSE [database]`: hold new queries (None: every database).
    Pause(Option<String>),
    /// `RESUME [database]`.
    Resume(Option<String>),
    Locks,
    Blockers,
}

impl Command {
    /// The command as logged: a secret setting's value is not.
    pub fn for_log(&self) -> String {
        match self {
            Command::Set(key, _) if super::knobs::secret(key) => {
                format!("Set({key:?}, \"********\")")
            }
            other => format!("{other:?}"),
        }
    }
}

/// Settings drivers set on connecting; the console's answers do not depend
/// on them.
const SESSION_SETTINGS: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "extra_float_digits",
    "intervalstyle",
    "timezone",
];

/// A rollout by id, in one database or in whichever knows the id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub id: i64,
    pub database: Option<String>,
}

/// Why a command was not understood: SQLSTATE 42601 with this text and hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown {
    pub message: String,
    pub hint: String,
}

/// The commands `SHOW HELP` lists, one line each.
pub const HELP: &[(&str, &str)] = &[
    ("SHOW HELP", "this list"),
    ("SHOW VERSION", "pgshift's version"),
    (
        "SHOW CONFIG",
        "every setting: value, default, whether SET may change it",
    ),
    (
        "SHOW CLIENTS",
        "the client sessions: user, database, state, address",
    ),
    (
        "SHOW STATS",
        "per database: clients, queries, bytes received and sent, errors",
    ),
    (
        "SHOW SERVERS",
        "each client's server connection: backend pid, address, TLS",
    ),
    (
        "SHOW LOCKS",
        "the locks pgshift's DDL steps and rollouts are trying to take, for how long",
    ),
    ("SHOW BLOCKERS", "the sessions those waits are waiting on"),
    ("SHOW RULES", "each DDL rule and its policy"),
    (
        "SHOW DDL [LIMIT <n>]",
        "the DDL journal of every database, newest first",
    ),
    (
        "SHOW DEFERRED [LIMIT <n>]",
        "DDL deferred to its transaction's commit, newest first",
    ),
    (
        "SHOW ROLLOUTS",
        "every rollout in the databases pgshift has seen",
    ),
    (
        "SHOW ROLLOUT <id> [IN <database>]",
        "one rollout: phase, progress, rows/s, ETA, last error",
    ),
    (
        "ROLLOUT PAUSE|RESUME|VERIFY|CUTOVER|FINISH|ROLLBACK <id> [IN <database>]",
        "ask the proxy that drives the rollout to do it",
    ),
    (
        "ROLLOUT START [<schema>.]<table>.<column> TYPE <type> [USING <expr>] [IN <database>]",
        "start an online rollout, as an intercepted ALTER COLUMN … TYPE does",
    ),
    (
        "ROLLOUT FILL [<schema>.]<table>.<column> [IN <database>]",
        "fill the column's NULLs with its default in the background",
    ),
    (
        "ROLLOUT THROTTLE <id> <rows_per_second> [IN <database>]",
        "the backfill's rate limit (0: none)",
    ),
    (
        "ROLLOUT BATCH <id> <rows> [IN <database>]",
        "the most rows per backfill batch (batches adapt below it)",
    ),
    (
        "SET <key> = <value>",
        "change a setting until the next reload (SHOW CONFIG lists them)",
    ),
    (
        "SET RULE <rule> <policy>",
        "a rule's policy: rewrite, warn, reject or allow",
    ),
    (
        "KILL <client id>",
        "end one client session at its next message boundary (57P01)",
    ),
    ("RELOAD", "read the config file again, as SIGHUP does"),
    (
        "PAUSE [<database>]",
        "hold new queries (between transactions); answers once running ones finished",
    ),
    ("RESUME [<database>]", "let held queries go"),
    (
        "SHUTDOWN",
        "stop accepting, drain sessions, exit (as SIGTERM)",
    ),
];

/// `[LIMIT <n>]`.
fn limit(words: &[&str]) -> Result<Option<i64>, Unknown> {
    match words {
        [] => Ok(None),
        [kw, n] if kw.eq_ignore_ascii_case("LIMIT") => n
            .parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(|| unknown(format!("{} is not a row count", quoted(n)))),
        _ => Err(unknown(format!("unexpected {}", quoted(&words.join(" "))))),
    }
}

/// A setting's name as typed: letters, digits, `_`, `-` and `.`.
fn setting_name(word: &str) -> Result<String, Unknown> {
    let ok = !word.is_empty()
        && word.len() <= 100
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    match ok {
        true => Ok(word.to_ascii_lowercase()),
        false => Err(unknown(format!("{} is not a setting name", quoted(word)))),
    }
}

/// `SET <name> [=|TO] <value>` (also `<name>=<value>`).
fn set(words: &[&str]) -> Result<Command, Unknown> {
    let joined;
    let words: Vec<&str> = match words {
        [first, rest @ ..] if first.contains('=') && first.len() > 1 => {
            let (name, value) = first.split_once('=').unwrap_or((first, ""));
            joined = [name, "=", value];
            joined
                .iter()
                .copied()
                .filter(|w| !w.is_empty())
                .chain(rest.iter().copied())
                .collect()
        }
        _ => words.to_vec(),
    };
    let (name, rest) = words
        .split_first()
        .ok_or_else(|| unknown("SET needs a setting and a value"))?;
    let rest = match rest {
        [eq, tail @ ..] if *eq == "=" || eq.eq_ignore_ascii_case("TO") => tail,
        _ => rest,
    };
    if rest.is_empty() {
        return Err(unknown(format!("SET {} needs a value", quoted(name))));
    }
    let value = rest.join(" ");
    if value.len() > 1000 {
        return Err(unknown("the value is longer than 1000 bytes"));
    }
    Ok(Command::Set(setting_name(name)?, value))
}

/// What the operator typed, as an error message quotes it: at most 200 characters.
fn quoted(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
        None => format!("{text:?}"),
    }
}

fn unknown(message: impl Into<String>) -> Unknown {
    Unknown {
        message: message.into(),
        hint: "SHOW HELP lists the commands.".into(),
    }
}

/// The words of a command: runs of anything but white space, `;` and `"`, or
/// a double-quoted name (`""` inside stands for `"`, kept doubled here); `;`
/// alone. None for an unterminated quote.
fn words(text: &str) -> Option<Vec<&str>> {
    let mut words = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        match bytes[i] {
            b if b.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            b';' => i += 1,
            b'"' => {
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => return None,
                        Some(b'"') if bytes.get(i + 1) == Some(&b'"') => i += 2,
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
            }
            _ => {
                while i < bytes.len()
                    && !bytes[i].is_ascii_whitespace()
                    && !matches!(bytes[i], b';' | b'"')
                {
                    i += 1;
                }
            }
        }
        words.push(&text[start..i]);
    }
    Some(words)
}

/// Reads one command; a trailing semicolon is allowed, a second command is not.
pub fn parse(text: &str) -> Result<Command, Unknown> {
    // Its expression is SQL, with quotes and semicolons of its own.
    if let Some(start) = super::start::parse(text) {
        return start.map(Command::Start);
    }
    if let Some(fill) = super::fill::parse(text) {
        return fill.map(Command::Fill);
    }
    let mut words = words(text).ok_or_else(|| unknown("a double quote is not closed"))?;
    while words.last() == Some(&";") {
        words.pop();
    }
    if words.contains(&";") {
        return Err(Unknown {
            message: "one command at a time: the console runs no list of commands".into(),
            hint: "Send each command on its own.".into(),
        });
    }
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let upper: Vec<&str> = upper.iter().map(String::as_str).collect();
    match upper.as_slice() {
        [] => Err(unknown("empty command")),
        ["SHOW", "HELP"] | ["HELP"] => Ok(Command::Help),
        ["SHOW", "VERSION"] => Ok(Command::Version),
        ["SHOW", "ROLLOUTS"] => Ok(Command::Rollouts),
        ["SET", name, _, ..] if SESSION_SETTINGS.contains(&name.to_ascii_lowercase().as_str()) => {
            Ok(Command::SessionSet)
        }
        ["SHOW", "CONFIG"] => Ok(Command::Config),
        ["SHOW", "CLIENTS"] => Ok(Command::Clients),
        ["SHOW", "STATS"] => Ok(Command::Stats),
        ["SHOW", "RULES"] => Ok(Command::Rules),
        ["SHOW", "DDL", ..] => Ok(Command::Ddl(limit(&words[2..])?)),
        ["SHOW", "DEFERRED", ..] => Ok(Command::Deferred(limit(&words[2..])?)),
        ["SHUTDOWN"] => Ok(Command::Shutdown),
        ["SHOW", "SERVERS"] => Ok(Command::Servers),
        ["SHOW", "LOCKS"] => Ok(Command::Locks),
        ["SHOW", "BLOCKERS"] => Ok(Command::Blockers),
        ["RELOAD"] => Ok(Command::Reload),
        ["PAUSE"] => Ok(Command::Pause(None)),
        ["RESUME"] => Ok(Command::Resume(None)),
        ["PAUSE", _] => Ok(Command::Pause(Some(database_name(words[1])?))),
        ["RESUME", _] => Ok(Command::Resume(Some(database_name(words[1])?))),
        ["KILL", id] => id
            .parse::<u64>()
            .ok()
            .filter(|i| *i > 0)
            .map(Command::Kill)
            .ok_or_else(|| unknown(format!("{} is not a client id", quoted(id)))),
        ["SET", "RULE", ..] => {
            let rest: Vec<&str> = words[2..]
                .iter()
                .copied()
                .filter(|w| *w != "=" && !w.eq_ignore_ascii_case("TO"))
                .collect();
            match rest.as_slice() {
                [rule, policy] => Ok(Command::SetRule(setting_name(rule)?, setting_name(policy)?)),
                _ => Err(unknown("SET RULE needs a rule and a policy")),
            }
        }
        ["SET", ..] => set(&words[1..]),
        ["SHOW", "ROLLOUT", ..] => Ok(Command::Rollout(target(&words[2..])?)),
        ["ROLLOUT", "THROTTLE", ..] => {
            let (target, rate) = target_and_number(&words[2..], "rows per second", 0)?;
            Ok(Command::Throttle(target, rate))
        }
        ["ROLLOUT", "BATCH", ..] => {
            let (target, rows) = target_and_number(&words[2..], "rows per batch", 1)?;
            Ok(Command::Batch(target, rows))
        }
        ["ROLLOUT", verb, ..] => {
            let request = Request::ALL
                .into_iter()
                .find(|r| r.name().eq_ignore_ascii_case(verb))
                .ok_or_else(|| unknown(format!("unknown rollout command {}", quoted(words[1]))))?;
            Ok(Command::Request(request, target(&words[2..])?))
        }
        _ => Err(unknown(format!(
            "unknown command {}",
            quoted(&words.join(" "))
        ))),
    }
}

/// `<id> <number> [IN <database>]`, the number at least `least` and at most
/// [`MAX_NUMBER`].
fn target_and_number(words: &[&str], what: &str, least: i64) -> Result<(Target, i64), Unknown> {
    let (n, rest) = match words {
        [id, n, tail @ ..] => (*n, [&[*id][..], tail].concat()),
        _ => return Err(unknown(format!("an id and {what} are needed"))),
    };
    let n: i64 = n
        .parse()
        .ok()
        .filter(|n| (least..=MAX_NUMBER).contains(n))
        .ok_or_else(|| unknown(format!("{} is not a number of {what}", quoted(n))))?;
    Ok((target(&rest)?, n))
}

/// The largest rate or batch size the console takes.
const MAX_NUMBER: i64 = 1_000_000_000;

/// `<id> [IN <database>]`.
fn target(words: &[&str]) -> Result<Target, Unknown> {
    let (id, database) = match words {
        [id] => (*id, None),
        [id, kw, db] if kw.eq_ignore_ascii_case("IN") => (*id, Some(database_name(db)?)),
        [] => return Err(unknown("a rollout id is missing")),
        _ => {
            return Err(unknown(format!(
                "unexpected {}",
                quoted(&words[1..].join(" "))
            )))
        }
    };
    let id: i64 = id
        .parse()
        .ok()
        .filter(|i| *i > 0)
        .ok_or_else(|| unknown(format!("{} is not a rollout id", quoted(id))))?;
    Ok(Target { id, database })
}

/// A database name as typed: bare (folded to lower case, as Postgres reads an
/// identifier), or in double quotes (kept as is, with `""` for `"`).
fn database_name(word: &str) -> Result<String, Unknown> {
    let name = match word.strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => word.to_lowercase(),
    };
    if name.is_empty() || name.len() > 63 {
        return Err(unknown(format!("{} is not a database name", quoted(word))));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_read_in_any_case() {
        assert_eq!(parse("show help;"), Ok(Command::Help));
        assert_eq!(parse("show help ; ;"), Ok(Command::Help));
        assert_eq!(
            parse("ROLLOUT ROLLBACK 2 IN \"a; \"\"b\"\" c\""),
            Ok(Command::Request(
                Request::Rollback,
                Target {
                    id: 2,
                    database: Some("a; \"b\" c".into())
                }
            ))
        );
        assert_eq!(parse("  SHOW   Version  "), Ok(Command::Version));
        assert_eq!(parse("pause"), Ok(Command::Pause(None)));
        assert_eq!(
            parse("RESUME \"Shop\""),
            Ok(Command::Resume(Some("Shop".into())))
        );
        assert_eq!(parse("show rollouts"), Ok(Command::Rollouts));
        assert_eq!(parse("SET extra_float_digits = 3"), Ok(Command::SessionSet));
        assert_eq!(
            parse("set application_name = 'PostgreSQL JDBC Driver'"),
            Ok(Command::SessionSet)
        );
        assert_eq!(
            parse("SHOW ROLLOUT 7 in \"My Db\""),
            Ok(Command::Rollout(Target {
                id: 7,
                database: Some("My Db".into())
            }))
        );
        assert_eq!(
            parse("rollout cutover 3"),
            Ok(Command::Request(
                Request::Cutover,
                Target {
                    id: 3,
                    database: None
                }
            ))
        );
        assert_eq!(
            parse("ROLLOUT THROTTLE 3 500 IN App"),
            Ok(Command::Throttle(
                Target {
                    id: 3,
                    database: Some("app".into())
                },
                500
            ))
        );
        assert_eq!(
            parse("rollout batch 3 2000"),
            Ok(Command::Batch(
                Target {
                    id: 3,
                    database: None
                },
                2000
            ))
        );
    }

    #[test]
    fn settings_read_in_every_spelling() {
        let want = Command::Set("ddl.lock_timeout_ms".into(), "300".into());
        for text in [
            "SET ddl.lock_timeout_ms = 300",
            "set DDL.LOCK_TIMEOUT_MS to 300",
            "SET ddl.lock_timeout_ms 300",
            "SET ddl.lock_timeout_ms=300",
            "SET ddl.lock_timeout_ms= 300",
        ] {
            assert_eq!(parse(text), Ok(want.clone()), "{text}");
        }
        assert_eq!(
            parse("SET lock_timeout = '2s'"),
            Ok(Command::Set("lock_timeout".into(), "'2s'".into()))
        );
        assert_eq!(
            parse("set rule create-index warn"),
            Ok(Command::SetRule("create-index".into(), "warn".into()))
        );
        assert_eq!(
            parse("SET RULE create-index = reject"),
            Ok(Command::SetRule("create-index".into(), "reject".into()))
        );
        assert_eq!(parse("show ddl limit 5"), Ok(Command::Ddl(Some(5))));
        assert_eq!(parse("SHOW DEFERRED"), Ok(Command::Deferred(None)));
        assert_eq!(parse("shutdown;"), Ok(Command::Shutdown));
        assert_eq!(parse("kill 12"), Ok(Command::Kill(12)));
        assert_eq!(parse("RELOAD"), Ok(Command::Reload));
        assert_eq!(parse("show servers"), Ok(Command::Servers));
    }

    #[test]
    fn errors_quote_at_most_200_characters() {
        let long = format!("EXPLODE{}", "x".repeat(10_000));
        let e = parse(&long).unwrap_err();
        assert!(e.message.len() < 300, "{}", e.message.len());
        assert!(e.message.contains("EXPLODExxx") && e.message.contains('…'));
        let e = parse("ROLLOUT PAUSE 1 IN \"Ünïcödé\" extra").unwrap_err();
        assert!(e.message.contains("extra"), "{}", e.message);
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            "SELECT 1",
            "SHOW ROLLOUT",
            "SHOW ROLLOUT x",
            "SHOW ROLLOUT -1",
            "ROLLOUT EXPLODE 1",
            "ROLLOUT PAUSE 1 2",
            "ROLLOUT PAUSE 1 IN",
            "ROLLOUT THROTTLE 1 -5",
            "ROLLOUT THROTTLE 1",
            "ROLLOUT PAUSE 1; DROP TABLE x",
            "ROLLOUT BATCH 1 0",
            "ROLLOUT BATCH 1 99999999999",
            "ROLLOUT BATCH 1",
            "SHOW ROLLOUT 1 IN \"\"",
            "SHOW ROLLOUT 1 IN \"open",
            "SHOW;ROLLOUTS",
            "SET extra_float_digits",
            "SET lock_timeout",
            "SET lock_timeout =",
            "SET \"x\" = 1",
            "SET a;b = 1",
            "SET RULE create-index",
            "SHOW DDL LIMIT 0",
            "SHOW DDL LIMIT x",
            "SHOW DDL 5",
            "SHUTDOWN NOW",
            "KILL",
            "KILL 0",
            "KILL x",
            "KILL 1 2",
            "RELOAD now",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}

//! The configuration as the console shows and changes it. `SHOW CONFIG` lists
//! every key with its value, default and whether the console may change it;
//! `SET <key> = <value>` and `SET RULE <rule> <policy>` change the running
//! settings for new statements and sessions, checked by the same validation as
//! the config file (a reload or restart goes back to the file).

use super::table::{Answer, Cell, Failed, Kind, Table};
use crate::config::{overrides::apply_override, Config};
use crate::context::{Settings, Shared};
use std::sync::Arc;

pub const COLUMNS: &[(&str, Kind)] = &[
    ("key", Kind::Text),
    ("value", Kind::Text),
    ("default", Kind::Text),
    ("changeable", Kind::Bool),
];

/// Keys (or sections, ending in `.`) fixed while pgshift runs: listeners and
/// threads are set up at start, the log subscriber too, and the console's own
/// login is not the console's to change.
/// `tls.` and `metrics.` too: certificates are read when the settings are
/// built (a reload reads them again), and the metrics listener is bound at start.
const FIXED: &[&str] = &[
    "server.listen",
    "server.workers",
    "log.",
    "admin.",
    "metrics.",
    "tls.",
];

/// Keys whose values are never shown.
const SECRET: &[&str] = &["upstream.service_password", "admin.scram_verifier"];

/// Whether the value of `key` (as typed or resolved) is kept out of sight: the
/// listed keys, and anything named like a password or a verifier.
pub fn secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET.contains(&key.as_str()) || key.contains("password") || key.contains("verifier")
}

/// Short names the console accepts for the knobs operators reach for most.
const ALIASES: &[(&str, &str)] = &[
    ("lock_timeout", "ddl.lock_timeout_ms"),
    ("stall_budget", "ddl.stall_budget_ms"),
];

pub fn changeable(key: &str) -> bool {
    !FIXED
        .iter()
        .any(|f| key == *f || (f.ends_with('.') && key.starts_with(f)))
}

/// Every key of `config` with its value as TOML writes it, sorted.
fn flatten(config: &Config) -> Vec<(String, String)> {
    fn walk(prefix: &str, value: &toml::Value, out: &mut Vec<(String, String)>) {
        match value {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = match prefix {
                        "" => k.clone(),
                        p => format!("{p}.{k}"),
                    };
                    walk(&key, v, out);
                }
            }
            toml::Value::String(s) => out.push((prefix.to_string(), s.clone())),
            other => out.push((prefix.to_string(), other.to_string())),
        }
    }
    let mut out = Vec::new();
    if let Ok(value) = toml::Value::try_from(config) {
        walk("", &value, &mut out);
    }
    out.sort();
    out
}

pub fn show(shared: &Shared) -> Answer {
    let settings = shared.settings.load_full();
    let defaults: std::collections::BTreeMap<String, String> =
        flatten(&Config::default()).into_iter().collect();
    let rows = flatten(&settings.config)
        .into_iter()
        .map(|(key, value)| {
            let hide = |v: String| match SECRET.contains(&key.as_str()) && !v.is_empty() {
                true => "********".to_string(),
                false => v,
            };
            vec![
                Cell::text(key.clone()),
                Cell::text(hide(value)),
                Cell::Text(defaults.get(&key).cloned().map(hide)),
                Cell::Bool(Some(changeable(&key))),
            ]
        })
        .collect();
    Answer::Rows(Table {
        columns: COLUMNS.to_vec(),
        rows,
    })
}

fn refused(message: String, hint: &str) -> Failed {
    Failed::new("22023", message, hint)
}

/// The full key `name` stands for: itself (`section.key`), an alias, or the one
/// key of that name in any section.
fn resolve(config: &Config, name: &str) -> Result<String, Failed> {
    let name = name.to_ascii_lowercase();
    if let Some((_, key)) = ALIASES.iter().find(|(a, _)| *a == name) {
        return Ok(key.to_string());
    }
    let keys = flatten(config);
    if name.contains('.') {
        return match keys.iter().any(|(k, _)| *k == name) || name.starts_with("ddl.rules.") {
            true => Ok(name),
            false => Err(Failed::new(
                "42704",
                format!("unknown setting {name:?}"),
                "SHOW CONFIG lists the keys.",
            )),
        };
    }
    let found: Vec<&String> = keys
        .iter()
        .map(|(k, _)| k)
        .filter(|k| k.rsplit('.').next() == Some(name.as_str()))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(Failed::new(
            "42704",
            format!("unknown setting {name:?}"),
            "SHOW CONFIG lists the keys.",
        )),
        many => Err(Failed::new(
            "42702",
            format!("{name:?} names several settings"),
            format!(
                "Give the section too: {}.",
                many.iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// A value as typed: `300ms` and `2s` for the `_ms` keys, else a TOML literal
/// or a bare word.
fn literal(key: &str, value: &str) -> String {
    let value = value
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .map(|v| v.replace("''", "'"))
        .unwrap_or_else(|| value.to_string());
    if key.ends_with("_ms") {
        if let Some(n) = value
            .strip_suffix("ms")
            .and_then(|n| n.trim().parse::<u64>().ok())
        {
            return n.to_string();
        }
        if let Some(n) = value
            .strip_suffix('s')
            .and_then(|n| n.trim().parse::<u64>().ok())
        {
            return (n.saturating_mul(1000)).to_string();
        }
    }
    match value.as_str() {
        "on" => "true".into(),
        "off" => "false".into(),
        _ => value,
    }
}

/// `SET <name> = <value>`: checked as a config file would be, then swapped in.
pub fn set(shared: &Shared, name: &str, value: &str) -> Result<Answer, Failed> {
    let _changing = shared
        .settings_change
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let settings = shared.settings.load_full();
    let key = resolve(&settings.config, name)?;
    if !changeable(&key) {
        return Err(Failed::new(
            "55P02",
            format!("{key} is fixed while pgshift runs"),
            "Change it in the config file and restart.",
        ));
    }
    let current = toml::Value::try_from(&settings.config)
        .map_err(|e| Failed::new("XX000", format!("cannot read the settings: {e}"), ""))?;
    let toml::Value::Table(mut doc) = current else {
        return Err(Failed::new("XX000", "the settings are not a table", ""));
    };
    let literal = literal(&key, value);
    apply_override(&mut doc, &format!("{key}={literal}"))
        .map_err(|e| refused(e.to_string(), "SET <key> = <value>"))?;
    let config: Config = toml::Value::Table(doc)
        .try_into()
        .map_err(|e: toml::de::Error| {
            refused(
                format!("invalid value for {key}: {}", e.message().trim()),
                "SHOW CONFIG shows the current value and the default.",
            )
        })?;
    config.validate().map_err(|e| {
        refused(
            e.to_string(),
            "SHOW CONFIG shows the current value and the default.",
        )
    })?;
    let rebuilt = Settings::build(config)
        .map_err(|e| refused(e.to_string(), "The TLS files could not be read."))?;
    shared.settings.store(Arc::new(rebuilt));
    let shown = if secret(&key) {
        "********"
    } else {
        literal.as_str()
    };
    tracing::info!(target: "pgshift::admin", %key, value = %shown, "setting changed from the console");
    Ok(Answer::Done("SET".into()))
}

/// `RELOAD`: the configuration read again (file and flags), as SIGHUP does; the
/// console's SETs are gone after it.
pub fn reload(shared: &Shared) -> Result<Answer, Failed> {
    let Some(reloader) = shared.reloader() else {
        return Err(Failed::new(
            "55000",
            "this pgshift has no configuration source to read again",
            "It was started in-process without one; restart it instead.",
        ));
    };
    let config = reloader().map_err(|e| {
        Failed::new(
            "F0000",
            format!("reload failed, the running settings stay: {e}"),
            "Fix the config file, then RELOAD again.",
        )
    })?;
    shared.reload(config).map_err(|e| {
        Failed::new(
            "F0000",
            format!("reload failed, the running settings stay: {e}"),
            "The TLS files could not be read.",
        )
    })?;
    tracing::info!(target: "pgshift::admin", "configuration reloaded from the console");
    Ok(Answer::Done("RELOAD".into()))
}

/// `SET RULE <rule> <policy>`.
pub fn set_rule(shared: &Shared, rule: &str, policy: &str) -> Result<Answer, Failed> {
    let rule = rule.to_ascii_lowercase();
    if crate::sql::rules::by_id(&rule).is_none() {
        return Err(Failed::new(
            "42704",
            format!("unknown rule {rule:?}"),
            "SHOW RULES lists them.",
        ));
    }
    let policy = policy.to_ascii_lowercase();
    if !["rewrite", "warn", "reject", "allow"].contains(&policy.as_str()) {
        return Err(refused(
            format!("unknown policy {policy:?}"),
            "A policy is rewrite, warn, reject or allow.",
        ));
    }
    set(
        shared,
        &format!("ddl.rules.{rule}"),
        &format!("\"{policy}\""),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_resolve_by_section_alias_or_unique_name() {
        let c = Config::default();
        assert_eq!(
            resolve(&c, "ddl.lock_timeout_ms").unwrap(),
            "ddl.lock_timeout_ms"
        );
        assert_eq!(resolve(&c, "LOCK_TIMEOUT").unwrap(), "ddl.lock_timeout_ms");
        assert_eq!(resolve(&c, "max_attempts").unwrap(), "ddl.max_attempts");
        assert_eq!(resolve(&c, "nope").unwrap_err().code, "42704");
        assert_eq!(resolve(&c, "ddl.nope").unwrap_err().code, "42704");
        assert_eq!(resolve(&c, "listen").unwrap_err().code, "42702");
        assert!(!changeable("server.listen"));
        assert!(!changeable("admin.user"));
        assert!(changeable("ddl.lock_timeout_ms"));
        assert!(changeable("server.max_client_conn"));
    }

    #[test]
    fn values_read_with_units() {
        assert_eq!(literal("ddl.lock_timeout_ms", "'2s'"), "2000");
        assert_eq!(literal("ddl.lock_timeout_ms", "300ms"), "300");
        assert_eq!(literal("ddl.notices", "off"), "false");
        assert_eq!(literal("ddl.unparsed", "reject"), "reject");
    }

    #[test]
    fn the_service_password_is_never_shown() {
        let keys = flatten(&Config::default());
        assert!(keys.iter().any(|(k, _)| k == "upstream.service_password"));
        assert!(SECRET.iter().all(|s| keys.iter().any(|(k, _)| k == s)));
    }
}

//! `-c section.key=value` overrides, applied to the TOML tree before it is typed, so
//! they reach every key and are checked by the same `deny_unknown_fields`.

use super::ConfigError;

/// Sets `path=value` in `doc`. The value is read as a TOML literal when it is one
/// (numbers, booleans, quoted strings), else taken as a bare string.
pub fn apply_override(doc: &mut toml::Table, spec: &str) -> Result<(), ConfigError> {
    let bad = || ConfigError::BadOverride(spec.to_string());
    let (path, raw) = spec.split_once('=').ok_or_else(bad)?;
    let keys: Vec<&str> = path.trim().split('.').collect();
    if keys.len() < 2 || keys.iter().any(|k| k.is_empty()) {
        return Err(bad());
    }
    let value = parse_value(raw.trim());
    let (last, parents) = keys.split_last().ok_or_else(bad)?;
    let mut table = doc;
    for key in parents {
        let entry = table
            .entry(key.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry.as_table_mut().ok_or_else(bad)?;
    }
    table.insert(last.to_string(), value);
    Ok(())
}

fn parse_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_and_bare_values() {
        let mut doc = toml::Table::new();
        apply_override(&mut doc, "server.workers=2").unwrap();
        apply_override(&mut doc, "server.listen=127.0.0.1:7000").unwrap();
        apply_override(&mut doc, "log.level=\"debug\"").unwrap();
        assert_eq!(doc["server"]["workers"].as_integer(), Some(2));
        assert_eq!(doc["server"]["listen"].as_str(), Some("127.0.0.1:7000"));
        assert_eq!(doc["log"]["level"].as_str(), Some("debug"));
    }

    #[test]
    fn malformed_specs_are_rejected() {
        let mut doc = toml::Table::new();
        assert!(apply_override(&mut doc, "workers=2").is_err());
        assert!(apply_override(&mut doc, "server.workers").is_err());
        assert!(apply_override(&mut doc, ".x=1").is_err());
    }
}

//! `[admin]`: the admin console on a side port (`psql -h 127.0.0.1 -p 6433 -U
//! admin pgshift`), see `crate::admin`.

use super::ConfigError;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Address of the console; empty: no console.
    pub listen: String,
    /// The one user the console knows.
    pub user: String,
    /// File whose first line is the console's password; `PGSHIFT_ADMIN_PASSWORD`
    /// in the environment wins. Without either (or a verifier), the console does
    /// not start.
    pub password_file: String,
    /// The password's SCRAM-SHA-256 verifier, as Postgres keeps it
    /// (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, from
    /// `pgshift scram-verifier` or `pg_authid.rolpassword`): the config then
    /// holds no password. A password from the file or the environment wins.
    pub scram_verifier: String,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            listen: "127.0.0.1:6433".into(),
            user: "admin".into(),
            password_file: String::new(),
            scram_verifier: String::new(),
        }
    }
}

impl Admin {
    /// `tls`: the proxy has a certificate (`[tls]`), which the console offers too.
    pub fn validate(&self, tls: bool) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.to_string(),
        };
        if self.listen.is_empty() {
            return Ok(());
        }
        let addr: std::net::SocketAddr = self
            .listen
            .parse()
            .map_err(|_| invalid("admin.listen", "expected IP:PORT, or empty for no console"))?;
        // Without TLS its commands and answers would cross the network in the
        // clear; with it, the console takes only TLS connections there.
        if !addr.ip().is_loopback() && !tls {
            return Err(invalid(
                "admin.listen",
                "a console on a non-loopback address needs TLS: set [tls] cert_file and key_file, or listen on 127.0.0.1",
            ));
        }
        if !self.scram_verifier.is_empty()
            && crate::admin::scram::Verifier::parse(&self.scram_verifier).is_none()
        {
            return Err(invalid(
                "admin.scram_verifier",
                "expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey> (pgshift scram-verifier makes one)",
            ));
        }
        if self.user.is_empty() || self.user.len() > 63 {
            return Err(invalid("admin.user", "expected 1 to 63 bytes"));
        }
        Ok(())
    }

    /// What a login is checked against: the password from
    /// `PGSHIFT_ADMIN_PASSWORD` or `password_file`, else the verifier; None
    /// when none is given (the console stays off).
    pub fn secret(&self) -> Result<Option<crate::admin::Secret>, ConfigError> {
        use crate::admin::{scram::Verifier, Secret};
        if let Some(p) = self.password_given(std::env::var("PGSHIFT_ADMIN_PASSWORD").ok())? {
            return Ok(Some(Secret::Password(p)));
        }
        Ok(Verifier::parse(&self.scram_verifier).map(Secret::Verifier))
    }

    /// `password` with the environment's value given.
    fn password_given(&self, env: Option<String>) -> Result<Option<String>, ConfigError> {
        if let Some(p) = env {
            return Ok((!p.is_empty()).then_some(p));
        }
        if self.password_file.is_empty() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&self.password_file).map_err(|e| ConfigError::Read {
            path: self.password_file.clone(),
            reason: e.to_string(),
        })?;
        let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
        Ok((!line.is_empty()).then(|| line.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_listens_beyond_loopback_only_with_tls() {
        let with = |listen: &str| Admin {
            listen: listen.into(),
            ..Admin::default()
        };
        assert!(with("127.0.0.1:6433").validate(false).is_ok());
        assert!(with("[::1]:6433").validate(false).is_ok());
        assert!(with("").validate(false).is_ok());
        assert!(with("0.0.0.0:6433").validate(false).is_err());
        assert!(with("10.0.0.5:6433").validate(false).is_err());
        assert!(with("10.0.0.5:6433").validate(true).is_ok());
        assert!(with("localhost").validate(true).is_err());
    }

    #[test]
    fn the_password_is_the_files_first_line() {
        let path = std::env::temp_dir().join(format!("pgshift_admin_pw_{}", std::process::id()));
        std::fs::write(&path, "s3cret\nignored\n").unwrap();
        let admin = Admin {
            password_file: path.display().to_string(),
            ..Admin::default()
        };
        assert_eq!(
            admin.password_given(None).unwrap().as_deref(),
            Some("s3cret")
        );
        // The environment wins; set empty, it turns the console off.
        let env = |v: &str| admin.password_given(Some(v.to_string())).unwrap();
        assert_eq!(env("from env").as_deref(), Some("from env"));
        assert_eq!(env(""), None);
        std::fs::write(&path, "\nsecond\n").unwrap();
        assert_eq!(admin.password_given(None).unwrap(), None);
        std::fs::remove_file(&path).unwrap();
        assert!(admin.password_given(None).is_err());
    }
}

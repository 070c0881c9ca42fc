//! Where the upstream Postgres is: TCP `HOST:PORT` or a Unix socket directory and
//! port, like libpq's `host=/var/run/postgresql port=5432`.

use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamAddr {
    Tcp { host: String, port: u16 },
    Unix { dir: PathBuf, port: u16 },
}

impl UpstreamAddr {
    pub fn parse(s: &str) -> Result<UpstreamAddr, String> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?}: expected HOST:PORT or /socket/dir:PORT"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{s:?}: port {port:?} is not a number"))?;
        if host.starts_with('/') {
            return Ok(UpstreamAddr::Unix {
                dir: host.into(),
                port,
            });
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{s:?}: empty host"));
        }
        Ok(UpstreamAddr::Tcp {
            host: host.to_string(),
            port,
        })
    }

    /// Path of the Unix socket file, as Postgres names it.
    pub fn socket_path(&self) -> Option<PathBuf> {
        match self {
            UpstreamAddr::Unix { dir, port } => Some(dir.join(format!(".s.PGSQL.{port}"))),
            UpstreamAddr::Tcp { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_ipv6_and_unix() {
        assert_eq!(
            UpstreamAddr::parse("db:5432"),
            Ok(UpstreamAddr::Tcp {
                host: "db".into(),
                port: 5432
            })
        );
        assert_eq!(
            UpstreamAddr::parse("[::1]:5433"),
            Ok(UpstreamAddr::Tcp {
                host: "::1".into(),
                port: 5433
            })
        );
        let unix = UpstreamAddr::parse("/var/run/postgresql:5432").unwrap();
        assert_eq!(
            unix.socket_path().unwrap(),
            PathBuf::from("/var/run/postgresql/.s.PGSQL.5432")
        );
        assert!(UpstreamAddr::parse("db").is_err());
        assert!(UpstreamAddr::parse("db:x").is_err());
        assert!(UpstreamAddr::parse(":5432").is_err());
    }
}

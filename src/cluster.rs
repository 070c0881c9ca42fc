//! Throwaway Postgres clusters for `pgshift demo` and the integration tests:
//! initdb into a temp dir, fast settings, a free port, run as the `postgres` OS
//! user when we are root. A shell guard kills the server when our process dies,
//! even without a clean drop.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{0}")]
    Missing(String),
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What a cluster needs beyond the defaults.
#[derive(Debug, Default, Clone)]
pub struct ClusterOptions {
    /// `name=value` server settings.
    pub settings: Vec<String>,
    /// pg_hba.conf lines placed before the catch-all trust lines.
    pub hba: Vec<String>,
    /// PEM certificate and key: turns on ssl.
    pub tls: Option<(String, String)>,
}

pub struct Cluster {
    pub port: u16,
    pub socket_dir: PathBuf,
    dir: PathBuf,
    bin: PathBuf,
    guard: Option<(Child, ChildStdin)>,
    /// The server settings it was started with (a restart reuses them).
    settings: Vec<String>,
}

/// Where the Postgres server binaries are: `PG_BIN`, else the newest
/// /usr/lib/postgresql/N/bin, else `pg_config --bindir`.
pub fn bin_dir() -> Result<PathBuf, ClusterError> {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return Ok(dir.into());
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    Err(ClusterError::Missing(
        "PostgreSQL server binaries not found: install them with \
         `apt-get install -y postgresql` or set PG_BIN to the directory holding initdb"
            .into(),
    ))
}

/// uid and gid of the `postgres` OS user, from /etc/passwd.
fn postgres_ids() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.first() == Some(&"postgres") && f.len() > 3)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .flatten()
    })
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Cluster {
    pub fn start(opts: &ClusterOptions) -> Result<Cluster, ClusterError> {
        let bin = bin_dir()?;
        let ids = server_ids()?;
        let dir = fresh_dir(ids)?;
        let data = dir.join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb.args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
            "-D",
        ]);
        initdb.arg(&data);
        run_tool(initdb, "initdb", ids)?;
        // Replication connections too: a test starts a standby of the cluster.
        let mut hba = String::from(
            "local all all trust\nlocal replication all trust\nhost replication all 127.0.0.1/32 trust\n",
        );
        for line in &opts.hba {
            hba.push_str(line);
            hba.push('\n');
        }
        hba.push_str("host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n");
        std::fs::write(data.join("pg_hba.conf"), hba)?;
        let mut settings = opts.settings.clone();
        if let Some((cert, key)) = &opts.tls {
            std::fs::write(data.join("server.crt"), cert)?;
            write_private(&data.join("server.key"), key)?;
            settings.push("ssl=on".into());
        }
        if let Some((uid, gid)) = ids {
            for f in ["pg_hba.conf", "server.crt", "server.key"] {
                let _ = std::os::unix::fs::chown(data.join(f), Some(uid), Some(gid));
            }
        }
        Cluster::launched(dir, bin, &settings, ids)
    }

    /// A hot standby of `primary`: a base backup (`pg_basebackup -R`) that
    /// streams from it and replays what it writes.
    pub fn replica_of(primary: &Cluster) -> Result<Cluster, ClusterError> {
        let bin = bin_dir()?;
        let ids = server_ids()?;
        let dir = fresh_dir(ids)?;
        let mut backup = Command::new(bin.join("pg_basebackup"));
        backup
            .arg("-h")
            .arg(&primary.socket_dir)
            .args(["-p", &primary.port.to_string(), "-U", "postgres"])
            .args(["-R", "-X", "stream", "--checkpoint=fast", "--no-sync", "-D"])
            .arg(dir.join("data"));
        run_tool(backup, "pg_basebackup", ids)?;
        Cluster::launched(dir, bin, &[], ids)
    }

    /// Starts the server of the data directory in `dir` on a free port.
    fn launched(
        dir: PathBuf,
        bin: PathBuf,
        settings: &[String],
        ids: Option<(u32, u32)>,
    ) -> Result<Cluster, ClusterError> {
        let mut cluster = Cluster {
            port: 0,
            socket_dir: dir.clone(),
            dir,
            bin,
            guard: None,
            settings: settings.to_vec(),
        };
        let mut last_err = String::new();
        for _ in 0..20 {
            let port = free_port();
            match cluster.launch(port, settings, ids) {
                Ok(()) => return Ok(cluster),
                Err(e) => last_err = e.to_string(),
            }
        }
        Err(ClusterError::Command {
            what: "starting postgres".into(),
            detail: last_err,
        })
    }

    fn launch(
        &mut self,
        port: u16,
        settings: &[String],
        ids: Option<(u32, u32)>,
    ) -> Result<(), ClusterError> {
        let data = self.dir.join("data");
        let log = self.dir.join(format!("postgres-{port}.log"));
        let mut args: Vec<String> = vec![
            "-D".into(),
            data.display().to_string(),
            "-p".into(),
            port.to_string(),
        ];
        let defaults = [
            "listen_addresses=127.0.0.1".to_string(),
            format!("unix_socket_directories={}", self.socket_dir.display()),
            "fsync=off".into(),
            "synchronous_commit=off".into(),
            "full_page_writes=off".into(),
            "max_connections=300".into(),
            "shared_buffers=64MB".into(),
        ];
        for s in defaults.iter().chain(settings) {
            args.push("-c".into());
            args.push(s.clone());
        }
        // The guard shell: when our end of its stdin closes (clean drop or our death),
        // it stops the server with a fast shutdown.
        let script = r#"pg="$1"; log="$2"; shift 2
"$pg" "$@" >"$log" 2>&1 &
pid=$!
cat >/dev/null
kill -INT "$pid" 2>/dev/null
wait "$pid""#;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(script)
            .arg("sh")
            .arg(self.bin.join("postgres"))
            .arg(&log)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        run_as(&mut cmd, ids);
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take().expect("piped stdin");
        let pid_file = data.join("postmaster.pid");
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                let log_text = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(ClusterError::Command {
                    what: format!("postgres on port {port} ({status})"),
                    detail: log_text.trim().to_string(),
                });
            }
            let ready = std::fs::read_to_string(&pid_file)
                .map(|s| {
                    // A standby that accepts connections says so.
                    s.lines()
                        .nth(7)
                        .is_some_and(|l| matches!(l.trim(), "ready" | "standby"))
                })
                .unwrap_or(false);
            if ready {
                self.port = port;
                self.guard = Some((child, stdin));
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(60) {
                drop(stdin);
                let _ = child.wait();
                return Err(ClusterError::Command {
                    what: "postgres".into(),
                    detail: "not ready after 60 s".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs SQL with psql over the Unix socket; returns unaligned, tuples-only output.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, ClusterError> {
        let psql = ["psql"]
            .iter()
            .map(|p| self.bin.join(p))
            .find(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("psql"));
        let mut child = Command::new(psql)
            .args([
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
                "-h",
            ])
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string(), "-d", database, "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(sql.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(ClusterError::Command {
                what: format!("psql {sql:?}"),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Creates a database and returns its name.
    pub fn create_database(&self, name: &str) -> Result<String, ClusterError> {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\";"))?;
        Ok(name.to_string())
    }

    /// `127.0.0.1:PORT`
    /// The server log of the running postmaster (statements, when log_statement is on).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("postgres-{}.log", self.port))
    }

    pub fn tcp_address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `SOCKETDIR:PORT`, for an upstream over the Unix socket.
    pub fn unix_address(&self) -> String {
        format!("{}:{}", self.socket_dir.display(), self.port)
    }

    /// Stops the server, sets the next transaction id to `next` with
    /// pg_resetwal (and the commit log's segment for it), and starts it again
    /// on the same port: how a test makes a table's row versions as old as a
    /// long-lived database's. Postgres refuses to go more than 2^31 ids past
    /// the oldest unfrozen one; VACUUM FREEZE every database between jumps.
    pub fn set_next_xid(&mut self, next: u32) -> Result<(), ClusterError> {
        self.halt();
        let ids = server_ids()?;
        let data = self.dir.join("data");
        let mut reset = Command::new(self.bin.join("pg_resetwal"));
        reset.arg("-x").arg(next.to_string()).arg("-D").arg(&data);
        run_tool(reset, "pg_resetwal", ids)?;
        // 32 pages of 8 KiB, 4 transactions a byte: 2^20 ids a segment.
        let segment = data.join("pg_xact").join(format!("{:04X}", next >> 20));
        if !segment.exists() {
            std::fs::write(&segment, vec![0u8; 256 * 1024])?;
            if let Some((uid, gid)) = ids {
                std::os::unix::fs::chown(&segment, Some(uid), Some(gid))?;
            }
        }
        let settings = self.settings.clone();
        self.launch(self.port, &settings, ids)
    }

    /// Stops the server (fast shutdown) and removes its files.
    pub fn stop(&mut self) {
        self.halt();
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Stops the server (fast shutdown: the guard shell sees its stdin close)
    /// and waits for it; its files stay.
    fn halt(&mut self) {
        if let Some((mut child, stdin)) = self.guard.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The OS user to run the server as: `postgres` when we are root.
fn server_ids() -> Result<Option<(u32, u32)>, ClusterError> {
    if !is_root() {
        return Ok(None);
    }
    postgres_ids().map(Some).ok_or_else(|| {
        ClusterError::Missing(
            "running as root, but there is no `postgres` OS user to run the server \
             (apt-get install -y postgresql creates it)"
                .into(),
        )
    })
}

/// A new directory for a cluster, owned by the user that runs the server.
fn fresh_dir(ids: Option<(u32, u32)>) -> Result<PathBuf, ClusterError> {
    remove_stale_dirs();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("pgshift-pg-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    if let Some((uid, gid)) = ids {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
    }
    Ok(dir)
}

/// Removes clusters left behind by processes that died without cleaning up.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("pgshift-pg-")) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn run_as(cmd: &mut Command, ids: Option<(u32, u32)>) {
    if let Some((uid, gid)) = ids {
        cmd.uid(uid).gid(gid).env("HOME", "/tmp");
    }
}

/// Runs one of the server's tools (as the server's user) to its end; its
/// stderr is the error when it fails.
fn run_tool(mut cmd: Command, what: &str, ids: Option<(u32, u32)>) -> Result<(), ClusterError> {
    run_as(&mut cmd, ids);
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(ClusterError::Command {
            what: what.into(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// A port below the ephemeral range that nothing listens on right now.
pub fn free_port() -> u16 {
    loop {
        let port = 20_000 + (rand::random::<u16>() % 12_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

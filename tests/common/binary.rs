//! The built pgshift binary in front of the test cluster, as its own process, so
//! that its memory can be read from /proc. Its log goes to a file in the temp dir.

use super::pg;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Binary {
    child: Child,
    pub port: u16,
    log: std::path::PathBuf,
}

impl Binary {
    /// Starts `pgshift serve` with extra `args` on a free port, and waits until it
    /// accepts connections (another port if this one was taken meanwhile).
    pub fn start(args: &[&str]) -> Binary {
        loop {
            let port = pgshift::cluster::free_port();
            let listen = format!("127.0.0.1:{port}");
            let log = std::env::temp_dir().join(format!("pgshift-binary-{port}.log"));
            let child = Command::new(env!("CARGO_BIN_EXE_pgshift"))
                .args([
                    "serve",
                    "--listen",
                    &listen,
                    "--upstream",
                    &pg().tcp_address(),
                    "--metrics-listen",
                    "",
                    "--admin-listen",
                    "",
                ])
                .args(args)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).map_or(Stdio::null(), Stdio::from))
                .spawn()
                .expect("the pgshift binary");
            let mut binary = Binary { child, port, log };
            let started = Instant::now();
            loop {
                if std::net::TcpStream::connect(&listen).is_ok() {
                    return binary;
                }
                if binary.child.try_wait().unwrap().is_some() {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "pgshift did not listen"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    pub fn conn_str(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} dbname={db} user=postgres connect_timeout=10",
            self.port
        )
    }

    /// Whether the process still runs, and the end of its log: for a failure message.
    pub fn report(&mut self) -> String {
        let state = match self.child.try_wait() {
            Ok(None) => "still running".to_string(),
            Ok(Some(status)) => format!("exited: {status}"),
            Err(e) => format!("unknown: {e}"),
        };
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("pgshift {state}; its log ends:\n{}", tail.join("\n"))
    }

    /// SIGKILL: the process ends at once, without draining or closing anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Resident set size in bytes, from /proc.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib * 1024
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

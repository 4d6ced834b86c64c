//! A private PostgreSQL server for tests: Debian's `postgresql` binaries, a fresh cluster in a
//! temporary directory, listening on 127.0.0.1 at a free port, gone when the test ends. No
//! system service and no shared database are touched.
//!
//! `initdb` refuses to run as root, so as root the cluster is made and run as the `postgres`
//! user the Debian package creates.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Postgres {
    child: Child,
    _dir: tempfile::TempDir,
    /// `postgres://kala@127.0.0.1:PORT/postgres`
    pub url: String,
}

fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL is not installed: `apt-get install postgresql` (scripts/test does this); \
             the store tests run against a real PostgreSQL"
        )
    })
}

/// `program` run as the `postgres` user when we are root, else as ourselves.
fn command(program: PathBuf) -> Command {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(
                status.success(),
                "chown of the cluster directory to postgres"
            );
        }
        let out = command(bin.join("initdb"))
            .args(["--username=kala", "--auth=trust", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let child = command(bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.path().display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres starts");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // Listening is not ready: until recovery ends it answers "starting up".
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not listen within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Postgres {
            child,
            _dir: dir,
            url: format!("postgres://kala@127.0.0.1:{port}/postgres"),
        }
    }
}

impl Postgres {
    /// A new empty database on this server, for one scenario; returns its URL.
    pub async fn database(&self, name: &str) -> String {
        use sqlx::Connection as _;
        let mut admin = sqlx::PgConnection::connect(&self.url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        self.url.replace("/postgres", &format!("/{name}"))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // A fast shutdown through pg_ctl: the server may run under runuser, which is not the
        // process to signal.
        let _ = command(bin_dir().join("pg_ctl"))
            .args(["stop", "-m", "fast", "-w", "-D"])
            .arg(self._dir.path().join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! A private ClamAV daemon for tests: Debian's `clamd` on a socket in a temporary directory,
//! loading only the signatures shipped in `fixtures/clamav/` (no downloads, no freshclam).
//!
//! The database holds two MD5 signatures: the 68-byte EICAR test string, and `clam.exe` from
//! Debian's `clamav-testfiles` (every other file there is `clam.exe` packed, archived or
//! encoded, which clamd unpacks). Built with `sigtool --md5 FILE`, the last field renamed.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian puts the test files.
pub const TESTFILES: &str = "/usr/share/clamav-testfiles";

/// The EICAR test string (68 bytes). Written in two halves so this source file is not itself
/// detected by a scanner reading the repository.
pub fn eicar() -> Vec<u8> {
    let mut bytes = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-".to_vec();
    bytes.extend_from_slice(br"ANTIVIRUS-TEST-FILE!$H+H*");
    assert_eq!(bytes.len(), 68);
    bytes
}

pub struct Clamd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub socket: PathBuf,
}

fn clamd_binary() -> PathBuf {
    for candidate in ["/usr/sbin/clamd", "/usr/bin/clamd"] {
        if Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    panic!(
        "clamd is not installed: `apt-get install clamav-daemon` (scripts/test does this); \
         the antivirus tests need a real clamd"
    );
}

impl Clamd {
    /// Starts clamd and waits until it answers PING.
    pub fn start() -> Clamd {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("clamd.sock");
        let database = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/clamav");
        let config = format!(
            "DatabaseDirectory {}\nLocalSocket {}\nForeground yes\nBytecode no\n\
             StreamMaxLength 100M\nTemporaryDirectory {}\nLogFile {}\n",
            database.display(),
            socket.display(),
            dir.path().display(),
            dir.path().join("clamd.log").display(),
        );
        std::fs::write(dir.path().join("clamd.conf"), config).unwrap();
        let mut clamd = Clamd {
            child: None,
            dir,
            socket,
        };
        clamd.run();
        clamd
    }

    fn run(&mut self) {
        let child = Command::new(clamd_binary())
            .arg("-c")
            .arg(self.dir.path().join("clamd.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("clamd starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(self.dir.path().join("clamd.log")).unwrap_or_default();
        panic!("clamd did not answer PING within 60 s; its log:\n{log}");
    }

    pub fn ping(&self) -> bool {
        let Ok(mut stream) = UnixStream::connect(&self.socket) else {
            return false;
        };
        let mut answer = String::new();
        stream.write_all(b"zPING\0").is_ok()
            && stream.read_to_string(&mut answer).is_ok()
            && answer.starts_with("PONG")
    }

    /// Kills clamd (as a crash or an admin's stop would) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    /// Starts it again on the same socket.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// The `[antivirus]` lines pointing Kala at this clamd.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("antivirus", "enabled = true".into()),
            (
                "antivirus",
                format!("clamd = \"unix:{}\"", self.socket.display()),
            ),
        ]
    }
}

impl Drop for Clamd {
    fn drop(&mut self) {
        self.stop();
    }
}

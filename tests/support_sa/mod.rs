//! SpamAssassin 4.0.1 as a peer: a private, offline `spamd` to compare Kala's rule hits with
//! and to benchmark against, and the SpamAssassin public corpus (`scripts/corpus`).
//! Use from a test with `#[path = "support_sa/mod.rs"] mod support_sa;`.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// Debian puts the daemon in sbin.
const SPAMD: &str = "/usr/sbin/spamd";
const SPAMC: &str = "/usr/bin/spamc";
const SPAMASSASSIN: &str = "/usr/bin/spamassassin";

/// The stock rules the Debian package ships. Passed explicitly so a later `sa-update`
/// (which would win from /var/lib/spamassassin) cannot change what Kala is compared with.
pub const RULES_DIR: &str = "/usr/share/spamassassin";

/// Only these groups may be used; easy-ham-2 and spam-2 are held out and never unpacked.
pub const CORPUS_GROUPS: [&str; 3] = ["easy-ham-1", "hard-ham-1", "spam-1"];

/// Offline and stateless: no DNS, no network checks, no Bayes, and no plugin that learns
/// (AWL, TxRep, DCC are not loaded by the stock .pre files; the guards keep them off if
/// one ever is).
const LOCAL_CF: &str = "\
dns_available no
skip_rbl_checks 1
skip_uribl_checks 1
use_razor2 0
use_pyzor 0
use_bayes 0
bayes_auto_learn 0
ifplugin Mail::SpamAssassin::Plugin::AWL
use_auto_whitelist 0
endif
ifplugin Mail::SpamAssassin::Plugin::TxRep
use_txrep 0
endif
ifplugin Mail::SpamAssassin::Plugin::DCC
use_dcc 0
endif
";

/// Fails the test (never skips) when SpamAssassin is not installed.
pub fn require_spamassassin() {
    for bin in [SPAMD, SPAMC, SPAMASSASSIN] {
        if !Path::new(bin).exists() {
            panic!("{bin} is missing: apt-get install spamassassin spamc");
        }
    }
}

/// A running `spamd -L` on a free loopback port with a private site config; killed on drop.
pub struct Spamd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Spamd {
    /// One child per core of the 2-core machine: more only queue on the same CPUs.
    pub fn start() -> Spamd {
        Spamd::start_with_children(2)
    }

    pub fn start_with_children(children: usize) -> Spamd {
        require_spamassassin();
        let dir = tempfile::Builder::new()
            .prefix("kala-spamd")
            .tempdir()
            .expect("tempdir for spamd");
        // spamd runs as debian-spamd when we are root: it must be able to read the config.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let site = dir.path().join("site");
        let home = dir.path().join("home");
        fs::create_dir(&site).unwrap();
        fs::create_dir(&home).unwrap();
        for entry in fs::read_dir("/etc/spamassassin").expect("read /etc/spamassassin") {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".pre") || name == "65_debian.cf" {
                fs::copy(&path, site.join(&name)).unwrap();
            }
        }
        fs::write(site.join("local.cf"), LOCAL_CF).unwrap();
        let root = effective_uid() == 0;
        if root {
            fs::set_permissions(&home, fs::Permissions::from_mode(0o777)).unwrap();
        }

        // The free port is found by binding and releasing it, so another process may take it
        // before spamd binds: retry a few times.
        let mut last_log = String::new();
        for _ in 0..3 {
            let port = free_port();
            let log = dir.path().join(format!("spamd-{port}.log"));
            let mut cmd = Command::new(SPAMD);
            cmd.arg("-L")
                .arg("-x")
                .arg(format!("--siteconfigpath={}", site.display()))
                .arg(format!("--configpath={RULES_DIR}"))
                .arg(format!("--helper-home-dir={}", home.display()))
                .arg(format!("--listen=127.0.0.1:{port}"))
                .arg("--allowed-ips=127.0.0.1")
                .arg(format!("--max-children={children}"))
                .arg(format!("--min-children={children}"))
                .arg(format!("--syslog={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                // Its own process group: Drop can end the preforked children with it, and
                // cpu_time() can find them.
                .process_group(0);
            if root {
                cmd.arg("--username=debian-spamd");
            }
            let mut child = cmd.spawn().expect("spawn spamd");
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    last_log = fs::read_to_string(&log).unwrap_or_default();
                    eprintln!("spamd exited at start ({status}), retrying:\n{last_log}");
                    break;
                }
                if ping(port) {
                    return Spamd { child, port, dir };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "spamd did not answer within 120 s:\n{}",
                        fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("spamd failed to start 3 times:\n{last_log}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The spamd master; its preforked children are in the process group of the same id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User+system CPU used so far by spamd's whole process tree: every live process in its
    /// process group, plus the children it has already reaped (respawned after
    /// --max-conn-per-child). The machine is shared, so wall time alone says little.
    pub fn cpu_time(&self) -> Duration {
        let pgid = self.pid().to_string();
        let mut ticks = 0u64;
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // Fields after the parenthesised command name, which may itself contain spaces.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
                continue;
            };
            let f: Vec<&str> = rest.split(' ').collect();
            // f[2] is pgrp; f[11..15] are utime, stime, cutime, cstime (proc(5) fields 14-17).
            if f.len() < 15 || f[2] != pgid {
                continue;
            }
            let n = |i: usize| f[i].parse::<u64>().unwrap_or(0);
            ticks += n(11) + n(12);
            if entry.file_name().to_string_lossy() == pgid {
                ticks += n(13) + n(14);
            }
        }
        Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64)
    }

    /// The names of the rules that hit `message`, via `spamc -y` (one connection per call).
    ///
    /// Measured on 4.0.1: `__`-prefixed sub-rules are never listed. Rules whose score is 0
    /// are not listed either: SpamAssassin disables them, so they are not even run and a
    /// meta rule that needs one does not hit. Rules with no score line count as 1.0 and are
    /// listed (Debian ships 72_active.cf without 72_scores.cf, so many rules are like that).
    pub fn symbols(&self, message: &[u8]) -> BTreeSet<String> {
        let mut child = Command::new(SPAMC)
            .args(["-d", "127.0.0.1", "-p", &self.port.to_string()])
            // -x: a failure is an exit code, not the silent "not spam" of the safe fallback.
            // -s: the default 500 KB limit would pass bigger messages through unchecked.
            .args(["-x", "-s", "268435456", "-y"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn spamc");
        let mut stdin = child.stdin.take().unwrap();
        let body = message.to_vec();
        // spamc reads all of its input before it answers; a thread keeps a large message from
        // blocking on the pipe. A write error shows up in spamc's exit status below.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&body);
        });
        let out = child.wait_with_output().expect("wait for spamc");
        let _ = writer.join();
        assert!(
            out.status.success(),
            "spamc -y failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Where the private site config (and spamd's log) live, for a look when a test fails.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Spamd {
    fn drop(&mut self) {
        let group = format!("-{}", self.pid());
        // TERM to the master alone: it ends and reaps its children. KILL the group after, for
        // anything it left behind.
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

/// `$KALA_CORPUS_DIR`, else `<repo>/target/corpus` (the same default as `scripts/corpus`).
pub fn corpus_dir() -> PathBuf {
    match std::env::var_os("KALA_CORPUS_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/corpus"),
    }
}

/// The first `limit` messages of `group` (easy-ham-1, hard-ham-1 or spam-1), sorted by name;
/// `usize::MAX` for all. Fetches the corpus with `scripts/corpus` on first use.
pub fn corpus_messages(group: &str, limit: usize) -> Vec<PathBuf> {
    assert!(
        CORPUS_GROUPS.contains(&group),
        "corpus group {group:?} is not one of {CORPUS_GROUPS:?} (the others are held out)"
    );
    let dir = corpus_dir();
    if !dir.join(".complete").exists() {
        let npm = Command::new("npm")
            .arg("--version")
            .stdout(Stdio::null())
            .status();
        if !npm.is_ok_and(|s| s.success()) {
            panic!(
                "npm is missing (scripts/corpus fetches the corpus with it): apt-get install npm"
            );
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/corpus");
        let status = Command::new("bash")
            .arg(&script)
            .env("KALA_CORPUS_DIR", &dir)
            .status()
            .expect("run scripts/corpus");
        assert!(status.success(), "scripts/corpus failed ({status})");
    }
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join(group))
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.join(group).display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    files.sort();
    files.truncate(limit);
    files
}

fn ping(port: u16) -> bool {
    // PING is answered by a preforked child, so success means spamd can scan.
    Command::new(SPAMC)
        .args(["-d", "127.0.0.1", "-p", &port.to_string(), "-K"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

fn effective_uid() -> u32 {
    // std has no geteuid; /proc has it without a libc dependency.
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(u32::MAX)
}

pub fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

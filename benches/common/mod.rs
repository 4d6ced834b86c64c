//! Helpers the process-level benchmarks share: free ports, child processes killed on drop,
//! their CPU time and memory from /proc, and Postfix's smtp-source as the load.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn tool(name: &str) -> String {
    for dir in ["/usr/sbin", "/usr/bin"] {
        let path = Path::new(dir).join(name);
        if path.exists() {
            return path.display().to_string();
        }
    }
    eprintln!("`{name}` is missing: apt-get install postfix");
    std::process::exit(2);
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} never started listening");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct Killed(pub Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// /proc/PID/status field in KiB (VmRSS, VmHWM).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// User+system CPU time of a process, in milliseconds.
pub fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks * 10 // USER_HZ is 100 on Linux
}

/// One smtp-source run from `sender`; returns messages per second.
pub fn source_run(
    target: SocketAddr,
    sessions: usize,
    messages: usize,
    size: usize,
    cpu: Option<&str>,
    sender: &str,
) -> f64 {
    let started = Instant::now();
    let out = command(&tool("smtp-source"), cpu)
        .args([
            "-4",
            "-s",
            &sessions.to_string(),
            "-m",
            &messages.to_string(),
            "-l",
            &size.to_string(),
        ])
        .args([
            "-f",
            sender,
            "-t",
            "it@prokuroria.example",
            "-M",
            "sender.example",
        ])
        .arg(target.to_string())
        .output()
        .unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    if !out.status.success() {
        eprintln!(
            "smtp-source failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::process::exit(1);
    }
    messages as f64 / elapsed
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn command(program: &str, pin: Option<&str>) -> Command {
    match pin {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpu, program]);
            c
        }
        None => Command::new(program),
    }
}

/// Postfix's `smtp-sink` on a free port (pinned to `cpu` when given), accepting everything.
pub fn start_smtp_sink(cpu: Option<&str>) -> (Killed, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let sink = Killed(
        command(&tool("smtp-sink"), cpu)
            .args(["-4", "-u", "nobody", "-m", "512"])
            .arg(addr.to_string())
            .arg("1024")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(addr);
    (sink, addr)
}

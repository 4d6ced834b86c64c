//! Rule reload benchmark: how long `kala rules reload` takes against a running gateway
//! (read, compile, test, record, swap), with Kala's rules and, when Debian's spamassassin
//! package is installed, with SpamAssassin's rule set too; and mail throughput through Kala
//! (Postfix's `smtp-source` -> Kala -> `smtp-sink`) with no reloads against one reload after
//! another. Prints figures; asserts nothing.
//!
//! Run: `cargo bench --bench reload` (needs `apt-get install postfix`). Options through the
//! environment: KALA_BENCH_MESSAGES (default 5000), KALA_BENCH_RELOADS (default 10).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

mod common;
use common::{Killed, command, env_or, free_port, median, source_run, wait_listening};

struct Gateway {
    addr: SocketAddr,
    config: PathBuf,
    local: PathBuf,
    _kala: Killed,
}

/// Kala reading `dirs` plus a local directory the benchmark rewrites, relaying to `sink`.
fn start(work: &Path, sink: SocketAddr, dirs: &[PathBuf]) -> Gateway {
    let local = work.join("local");
    std::fs::create_dir_all(&local).unwrap();
    std::fs::write(local.join("99_bench.cf"), "body BENCH_0 /zzqqzz/\n").unwrap();
    let mut all: Vec<String> = dirs
        .iter()
        .map(|d| format!("{:?}", d.display().to_string()))
        .collect();
    all.push(format!("{:?}", local.display().to_string()));
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = work.join("kala.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[smtp]\nlisten = [\"{addr}\"]\nmax_connections = 2000\nmax_connections_per_ip = 2000\n\
             [downstream]\naddress = \"{sink}\"\npool_size = 64\n[rules]\ndirs = [{}]\nwatch = false\n\
             [antivirus]\nenabled = false\n[auth]\nenabled = false\n[log]\nlevel = \"warn\"\n",
            work.join("var").display().to_string(),
            all.join(", ")
        ),
    )
    .unwrap();
    let log = std::fs::File::create(work.join("kala.log")).unwrap();
    let kala = Killed(
        command(env!("CARGO_BIN_EXE_kala"), None)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    wait_listening(addr);
    Gateway {
        addr,
        config,
        local,
        _kala: kala,
    }
}

/// Rewrites the local file (a new version each time) and reloads; returns the wall time.
fn reload(gateway: &Gateway, generation: usize) -> f64 {
    std::fs::write(
        gateway.local.join("99_bench.cf"),
        format!("body BENCH_{generation} /zzqqzz{generation}/\n"),
    )
    .unwrap();
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kala"))
        .args(["rules", "reload", "--config"])
        .arg(&gateway.config)
        .output()
        .unwrap();
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    assert!(
        out.status.success(),
        "reload failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    elapsed
}

fn main() {
    let messages = env_or("KALA_BENCH_MESSAGES", 5000);
    let reloads = env_or("KALA_BENCH_RELOADS", 10).max(1);
    let (_sink, sink) = common::start_smtp_sink(None);
    let kala_rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let spamassassin = PathBuf::from("/usr/share/spamassassin");
    let mut sets = vec![("Kala's rules", vec![kala_rules.clone()])];
    if spamassassin.is_dir() {
        sets.push((
            "SpamAssassin's rules + Kala's",
            vec![spamassassin, kala_rules.clone()],
        ));
    } else {
        println!(
            "(no /usr/share/spamassassin: `apt-get install spamassassin` to time its rule set too)"
        );
    }

    println!(
        "Rule reload benchmark ({reloads} reloads per rule set, median wall time of `kala rules reload`)"
    );
    for (label, dirs) in &sets {
        let work = tempfile::tempdir().unwrap();
        let gateway = start(work.path(), sink, dirs);
        let times: Vec<f64> = (1..=reloads).map(|g| reload(&gateway, g)).collect();
        println!("  {label}: {:.0} ms per reload", median(times));
    }

    let work = tempfile::tempdir().unwrap();
    let gateway = Arc::new(start(work.path(), sink, &[kala_rules]));
    let quiet = source_run(
        gateway.addr,
        20,
        messages,
        5 * 1024,
        None,
        "bench@sender.example",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let reloader = {
        let (gateway, stop, done) = (gateway.clone(), stop.clone(), done.clone());
        std::thread::spawn(move || {
            let mut generation = 1000;
            while !stop.load(Ordering::SeqCst) {
                generation += 1;
                reload(&gateway, generation);
                done.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let busy = source_run(
        gateway.addr,
        20,
        messages,
        5 * 1024,
        None,
        "bench@sender.example",
    );
    stop.store(true, Ordering::SeqCst);
    reloader.join().unwrap();
    println!(
        "\nThroughput, {messages} messages of 5 KiB, 20 sessions (smtp-source -> Kala with its rules -> smtp-sink):"
    );
    println!("  no reloads:             {quiet:.0} msg/s");
    println!(
        "  reloading all the time: {busy:.0} msg/s ({} reloads during the run)",
        done.load(Ordering::SeqCst)
    );
}

//! Proxy benchmark: Postfix's `smtp-source` → Kala → `smtp-sink`, against `smtp-source` →
//! `smtp-sink` directly, in the same run. Prints figures; asserts nothing.
//!
//! Run: `cargo bench --bench proxy` (needs `apt-get install postfix`; see README).
//! Options through the environment: KALA_BENCH_MESSAGES (default 10000), KALA_BENCH_ROUNDS
//! (default 3; the median round is reported), KALA_BENCH_SESSIONS (default 20).

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;
use common::{
    Killed, command, cpu_ms, env_or, free_port, median, source_run, status_kib, wait_listening,
};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Sequential transactions (connect, EHLO, MAIL, RCPT, DATA, QUIT), each timed, in ms.
fn latencies(target: SocketAddr, count: usize, size: usize) -> Vec<f64> {
    use std::io::{BufRead, BufReader, Write};
    let mut body = String::from(
        "From: bench@sender.example\r\nTo: it@prokuroria.example\r\nSubject: latency\r\nDate: Mon, 2 Nov 2026 10:00:00 +0100\r\nMessage-ID: <lat@sender.example>\r\n\r\n",
    );
    while body.len() < size {
        body.push_str("The quick brown fox jumps over the lazy dog, again and again.\r\n");
    }
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let stream = TcpStream::connect(target).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        let expect = |reader: &mut BufReader<TcpStream>, code: &str| loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            assert!(line.starts_with(code), "expected {code}, got {line}");
            if line.as_bytes().get(3) == Some(&b' ') {
                break;
            }
        };
        expect(&mut reader, "220");
        writer.write_all(b"EHLO bench.example\r\n").unwrap();
        expect(&mut reader, "250");
        writer
            .write_all(
                b"MAIL FROM:<bench@sender.example>\r\nRCPT TO:<it@prokuroria.example>\r\nDATA\r\n",
            )
            .unwrap();
        expect(&mut reader, "250");
        expect(&mut reader, "250");
        expect(&mut reader, "354");
        writer.write_all(body.as_bytes()).unwrap();
        writer.write_all(b".\r\nQUIT\r\n").unwrap();
        expect(&mut reader, "250");
        expect(&mut reader, "221");
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    times
}

/// The sink and Kala, started for one CPU layout.
struct Setup {
    sink_addr: SocketAddr,
    kala_addr: SocketAddr,
    pid: u32,
    _sink: Killed,
    _kala: Killed,
}

/// With `pin`, the load generator and the sink share CPU 0 and Kala has CPU 1, as if Kala ran on
/// a host of its own; without it, all three share both CPUs.
fn start(work: &Path, pin: bool) -> Setup {
    let (sink, sink_addr) = common::start_smtp_sink(pin.then_some("0"));
    let kala_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = work.join("kala.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[smtp]\nlisten = [\"{kala_addr}\"]\nmax_connections = 2000\nmax_connections_per_ip = 2000\n[downstream]\naddress = \"{sink_addr}\"\npool_size = 64\n[log]\nlevel = \"info\"\n",
            work.join("var").display().to_string()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(work.join("kala.log")).unwrap();
    let kala = Killed(
        command(env!("CARGO_BIN_EXE_kala"), pin.then_some("1"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let pid = kala.0.id();
    wait_listening(kala_addr);
    // With taskset, the child's pid is taskset's, which exec'd into Kala: the same process.
    Setup {
        sink_addr,
        kala_addr,
        pid,
        _sink: sink,
        _kala: kala,
    }
}

fn main() {
    let messages = env_or("KALA_BENCH_MESSAGES", 10_000);
    let rounds = env_or("KALA_BENCH_ROUNDS", 3).max(1);
    let sessions = env_or("KALA_BENCH_SESSIONS", 20);
    let work = tempfile::tempdir().unwrap();

    println!(
        "Kala proxy benchmark: {messages} messages, {sessions} parallel sessions, median of {rounds} rounds"
    );
    println!(
        "(smtp-source -> Kala -> smtp-sink vs smtp-source -> smtp-sink, same machine, same run)"
    );
    for pin in [false, true] {
        let setup = start(work.path(), pin);
        let source_cpu = pin.then_some("0");
        println!(
            "\n{}",
            if pin {
                "Layout B: smtp-source and smtp-sink on CPU 0, Kala alone on CPU 1"
            } else {
                "Layout A: smtp-source, smtp-sink and Kala all sharing both CPUs"
            }
        );
        println!(
            "{:>8} | {:>12} | {:>12} | {:>6} | {:>15} | {:>14}",
            "size", "direct msg/s", "Kala msg/s", "ratio", "Kala CPU ms/msg", "Kala peak RSS"
        );
        for size in [5 * 1024, 100 * 1024] {
            let mut direct = Vec::new();
            let mut proxied = Vec::new();
            let cpu_before = cpu_ms(setup.pid);
            for _ in 0..rounds {
                direct.push(source_run(
                    setup.sink_addr,
                    sessions,
                    messages,
                    size,
                    source_cpu,
                    "bench@sender.example",
                ));
                proxied.push(source_run(
                    setup.kala_addr,
                    sessions,
                    messages,
                    size,
                    source_cpu,
                    "bench@sender.example",
                ));
            }
            let cpu_per_msg = (cpu_ms(setup.pid) - cpu_before) as f64 / (messages * rounds) as f64;
            let (d, k) = (median(direct), median(proxied));
            println!(
                "{:>6}KiB | {:>12.0} | {:>12.0} | {:>5.0}% | {:>15.3} | {:>10.1} MiB",
                size / 1024,
                d,
                k,
                100.0 * k / d,
                cpu_per_msg,
                status_kib(setup.pid, "VmHWM:") as f64 / 1024.0
            );
        }
        if pin {
            break;
        }
        latency_and_idle(&setup, messages);
    }
}

fn latency_and_idle(setup: &Setup, messages: usize) {
    let (sink_addr, kala_addr, pid) = (setup.sink_addr, setup.kala_addr, setup.pid);
    let n = messages.min(1000);
    let direct = latencies(sink_addr, n, 5 * 1024);
    let proxied = latencies(kala_addr, n, 5 * 1024);
    println!("\nTime per transaction, 5 KiB, {n} sequential connections (connect to QUIT):");
    for (label, p) in [("p50", 0.5), ("p99", 0.99)] {
        let (d, k) = (percentile(&direct, p), percentile(&proxied, p));
        println!(
            "  {label}: direct {d:.3} ms, through Kala {k:.3} ms, added {:.3} ms",
            k - d
        );
    }

    let idle_count = 500;
    let before = status_kib(pid, "VmRSS:");
    let mut idle = Vec::with_capacity(idle_count);
    for _ in 0..idle_count {
        use std::io::{BufRead, BufReader, Write};
        let mut stream = TcpStream::connect(kala_addr).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("220"), "idle connection refused: {line}");
        stream.write_all(b"EHLO idle.example\r\n").unwrap();
        idle.push((stream, reader));
    }
    std::thread::sleep(Duration::from_millis(500));
    println!(
        "\nRSS with {idle_count} idle connections open: {:.1} MiB (before opening them: {:.1} MiB); peak RSS so far: {:.1} MiB",
        status_kib(pid, "VmRSS:") as f64 / 1024.0,
        before as f64 / 1024.0,
        status_kib(pid, "VmHWM:") as f64 / 1024.0
    );
}

//! Reputation benchmark: messages per second through Kala with the whole reputation layer on
//! (two DNSBLs, a domain blocklist, SPF/DKIM/DMARC, rate limits, a feed of a million hosts)
//! against the same Kala with it off, in the same run; a local DNS server answers
//! (`tests/support_dns`, the zones of `fixtures/dns`). Then the memory and lookup speed of a
//! bloom-filtered feed per million entries. Prints figures; asserts nothing.
//!
//! Run: `cargo bench --bench reputation` (needs `apt-get install postfix` for smtp-source
//! and smtp-sink). KALA_BENCH_MESSAGES (default 5000), KALA_BENCH_SESSIONS (default 20).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

mod common;
#[path = "../tests/support_dns/mod.rs"]
mod support_dns;

use common::{Killed, command, cpu_ms, env_or, free_port, source_run, status_kib, wait_listening};

/// Kala as its own process (so its CPU time is its own), relaying to `sink`.
fn start_kala(work: &Path, name: &str, sink: SocketAddr, extra: &str) -> (Killed, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = work.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[smtp]\nlisten = [\"{addr}\"]\nmax_connections_per_ip = 2000\n[downstream]\naddress = \"{sink}\"\npool_size = 64\n[antivirus]\nenabled = false\n[log]\nlevel = \"warn\"\n{extra}",
            work.join(name).display().to_string()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(work.join(format!("{name}.log"))).unwrap();
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
    (kala, addr)
}

/// Runs `messages` through `kala` from smtp-source; returns (msg/s, Kala CPU ms per msg).
fn measure(kala: &Killed, addr: SocketAddr, messages: usize, sessions: usize) -> (f64, f64) {
    let pid = kala.0.id();
    // Warm-up: the first answers fill the resolver's cache, as steady traffic would.
    source_run(addr, 4, 200, 2048, None, "bench@pass.sender.test");
    let before = cpu_ms(pid);
    let rate = source_run(
        addr,
        sessions,
        messages,
        2048,
        None,
        "bench@pass.sender.test",
    );
    let cpu = (cpu_ms(pid) - before) as f64 / messages as f64;
    (rate, cpu)
}

fn feed_figures(work: &Path) {
    println!(
        "\nBloom-filtered feed (false-positive rate {})",
        kala::feeds::FALSE_POSITIVE_RATE
    );
    println!(
        "{:>10} | {:>10} | {:>12} | {:>16} | {:>16}",
        "entries", "load s", "memory MiB", "absent lookups/s", "listed lookups/s"
    );
    for million in [1usize, 2] {
        let entries = million * 1_000_000;
        let dir = work.join(format!("feeds-{million}"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bench.hosts");
        let mut text = String::with_capacity(entries * 24);
        for i in 0..entries {
            text.push_str(&format!("h{i:07}.listed-{}.example\n", i % 97));
        }
        std::fs::write(&path, text).unwrap();
        let started = Instant::now();
        let feed = kala::feeds::Feed::load(&path, &dir.join("cache")).unwrap();
        let load = started.elapsed().as_secs_f64();
        let probes = 200_000;
        let started = Instant::now();
        let mut found = 0;
        let mut maybe = 0;
        for i in 0..probes {
            let item = format!("n{i:07}.absent.example");
            found += feed.contains(&item) as usize;
            maybe += feed.maybe_contains(&item) as usize;
        }
        let absent = probes as f64 / started.elapsed().as_secs_f64();
        let listed_probes = 20_000;
        let started = Instant::now();
        for i in 0..listed_probes {
            let i = (i * 7919) % entries;
            found += feed.contains(&format!("h{i:07}.listed-{}.example", i % 97)) as usize;
        }
        let listed = listed_probes as f64 / started.elapsed().as_secs_f64();
        println!(
            "{:>10} | {:>10.2} | {:>12.2} | {:>16.0} | {:>16.0}",
            entries,
            load,
            feed.memory() as f64 / (1024.0 * 1024.0),
            absent,
            listed
        );
        println!(
            "{:>10}   {maybe} of {probes} absent probes passed the filter ({:.3} %); the exact check refused {} of them",
            "",
            100.0 * maybe as f64 / probes as f64,
            maybe - found.saturating_sub(listed_probes),
        );
        let _ = std::fs::remove_file(&path);
    }
}

fn main() {
    let messages = env_or("KALA_BENCH_MESSAGES", 5_000);
    let sessions = env_or("KALA_BENCH_SESSIONS", 20);
    let work = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dns = runtime.block_on(support_dns::DnsServer::start(&[]));

    let (_sink, sink_addr) = common::start_smtp_sink(None);

    // A million-host feed, so every message also pays the bloom lookups.
    let feeds = work.path().join("feeds");
    std::fs::create_dir_all(&feeds).unwrap();
    let hosts: String = (0..1_000_000)
        .map(|i| format!("h{i:07}.bad.example\n"))
        .collect();
    std::fs::write(feeds.join("big.hosts"), hosts).unwrap();

    let reputation = format!(
        r#"[dns]
servers = ["{dns}"]
[dnsbl]
lists = [
  {{ name = "BL", zone = "bl.test", weights = {{ "127.0.0.2" = 3.0 }} }},
  {{ name = "BL2", zone = "bl2.test", weights = {{ "127.0.0.2" = 2.0 }} }},
]
[uribl]
lists = [{{ name = "DBL", zone = "dbl.test" }}]
[auth]
enabled = true
[ratelimit]
client = {{ messages = 1000000, per = "1m" }}
sender = {{ messages = 1000000, per = "1m" }}
[feeds]
dir = {feeds:?}
"#,
        dns = dns.addr,
        feeds = feeds.display().to_string()
    );
    let plain = "[auth]\nenabled = false\n[feeds]\nenabled = false\n";

    println!(
        "Kala reputation benchmark: {messages} messages of 2 KiB, {sessions} parallel sessions"
    );
    println!("(smtp-source -> Kala -> smtp-sink; DNS from a local server on 127.0.0.1)");
    println!(
        "{:>34} | {:>10} | {:>15} | {:>14}",
        "configuration", "msg/s", "Kala CPU ms/msg", "Kala peak RSS"
    );
    for (name, extra) in [
        ("without reputation checks", plain),
        ("with the reputation layer", reputation.as_str()),
    ] {
        let dir = if extra == plain {
            "plain"
        } else {
            "reputation"
        };
        let (kala, addr) = start_kala(work.path(), dir, sink_addr, extra);
        let (rate, cpu) = measure(&kala, addr, messages, sessions);
        println!(
            "{:>34} | {:>10.0} | {:>15.3} | {:>10.1} MiB",
            name,
            rate,
            cpu,
            status_kib(kala.0.id(), "VmHWM:") as f64 / 1024.0
        );
    }
    println!(
        "DNS queries the local server answered: {} (the rest came from Kala's resolver cache)",
        dns.queries()
    );
    feed_figures(work.path());
}

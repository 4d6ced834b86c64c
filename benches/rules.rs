//! Rule-engine throughput on one core, next to SpamAssassin in the same run.
//!
//! Over the training part of the public corpus (easy-ham-1, hard-ham-1, spam-1; fetched by
//! `scripts/corpus`), one thread parses and scans each message with (a) Kala's own rules in
//! `rules/` and (b) the whole SpamAssassin 4.0.1 rule set of Debian's package; then `spamd`
//! (one child, network tests and Bayes off) scans a sample of the same messages through
//! `spamc`. Rates are messages per CPU-second of the scanning process, so the two programs
//! compare even on a shared machine.
//!
//! `cargo bench --bench rules` (needs `apt-get install spamassassin spamc npm`).
//! Options through the environment: KALA_BENCH_SPAMD_EVERY (default 10: spamd scans every
//! 10th message, Kala both the sample and the whole corpus).
//!
//! spamd's pass over the sample takes 20 to 30 CPU-seconds, Kala's 0.2 to 0.3; a short pass
//! catches more of the machine's noise, and the machine's speed drifts over minutes. So Kala
//! scans the sample in five passes before spamd runs and five after, and the ratio compares
//! spamd with the mean of the two.

#[path = "../tests/support_sa/mod.rs"]
mod support_sa;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kala::envelope::Envelope;
use kala::message::Message;
use kala::rules::RuleSet;
use support_sa::{CORPUS_GROUPS, RULES_DIR, Spamd, corpus_messages};

fn main() {
    let every: usize = std::env::var("KALA_BENCH_SPAMD_EVERY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .max(1);
    let mut corpus = Vec::new();
    for group in CORPUS_GROUPS {
        for path in corpus_messages(group, usize::MAX) {
            corpus.push(std::fs::read(&path).unwrap());
        }
    }
    let sample: Vec<Vec<u8>> = corpus.iter().step_by(every).cloned().collect();
    let bytes: usize = corpus.iter().map(Vec::len).sum();
    println!(
        "Rule engine benchmark: {} training messages ({:.1} MiB); spamd sample: every {every}th, {} messages",
        corpus.len(),
        bytes as f64 / (1 << 20) as f64,
        sample.len()
    );
    println!(
        "\n{:<46} | {:>9} | {:>10} | {:>12} | {:>14} | {:>10}",
        "engine and rules", "messages", "CPU s", "msg/CPU-s", "ms/msg (CPU)", "rules"
    );

    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules");
    let mut sample_rates = Vec::new();
    let mut sa_rules = None;
    for (label, dir) in [
        ("Kala, Kala's rules", local),
        ("Kala, SpamAssassin rules", PathBuf::from(RULES_DIR)),
    ] {
        let compile = Instant::now();
        let rules = RuleSet::load(&[dir]);
        let compiled = compile.elapsed();
        // One pass to warm the regex caches, as a running gateway has them.
        scan_all(&rules, &sample);
        let (messages, cpu) = scan_passes(&rules, &sample);
        print_row(&format!("{label} (sample)"), messages, cpu, rules.len());
        let sample_rate = messages as f64 / cpu.as_secs_f64();
        let cpu = scan_all(&rules, &corpus);
        print_row(&format!("{label} (all)"), corpus.len(), cpu, rules.len());
        println!(
            "  (compiled in {compiled:.2?}; peak RSS so far {:.0} MiB)",
            peak_rss_mib()
        );
        if label.ends_with("SpamAssassin rules") {
            sample_rates.push(sample_rate);
            sa_rules = Some(rules);
        }
    }

    let spamd = Spamd::start_with_children(1);
    for raw in sample.iter().take(5) {
        spamd.symbols(raw);
    }
    let before = spamd.cpu_time();
    for raw in &sample {
        spamd.symbols(raw);
    }
    let cpu = spamd.cpu_time() - before;
    let spamd_rate = sample.len() as f64 / cpu.as_secs_f64();
    print_row("spamd, SpamAssassin rules", sample.len(), cpu, 0);
    drop(spamd);
    let rules = sa_rules.expect("SpamAssassin's rules were loaded");
    let (messages, cpu) = scan_passes(&rules, &sample);
    print_row(
        "Kala, SpamAssassin rules (sample, after spamd)",
        messages,
        cpu,
        rules.len(),
    );
    sample_rates.push(messages as f64 / cpu.as_secs_f64());
    let kala_rate = sample_rates.iter().sum::<f64>() / sample_rates.len() as f64;
    println!(
        "\nKala with SpamAssassin's rules vs spamd on the same sample: {:.0}x the messages per CPU-second (before spamd {:.0}x, after {:.0}x; target: 100x)",
        kala_rate / spamd_rate,
        sample_rates[0] / spamd_rate,
        sample_rates[1] / spamd_rate,
    );
}

/// Passes over the sample per measurement.
const SAMPLE_PASSES: usize = 5;

/// Scans `sample` [`SAMPLE_PASSES`] times: the messages scanned and the CPU time.
fn scan_passes(rules: &RuleSet, sample: &[Vec<u8>]) -> (usize, Duration) {
    let cpu = (0..SAMPLE_PASSES).map(|_| scan_all(rules, sample)).sum();
    (sample.len() * SAMPLE_PASSES, cpu)
}

/// Parses and scans every message on this thread; returns the thread's CPU time.
fn scan_all(rules: &RuleSet, messages: &[Vec<u8>]) -> Duration {
    let envelope = Envelope::offline("", vec![]);
    let before = thread_cpu();
    for raw in messages {
        let message = Message::parse(raw, raw.len());
        std::hint::black_box(rules.evaluate(&message, &envelope));
    }
    thread_cpu() - before
}

fn print_row(label: &str, messages: usize, cpu: Duration, rules: usize) {
    let secs = cpu.as_secs_f64();
    println!(
        "{label:<46} | {messages:>9} | {secs:>10.2} | {:>12.0} | {:>14.3} | {:>10}",
        messages as f64 / secs,
        secs * 1000.0 / messages as f64,
        if rules == 0 {
            "-".to_string()
        } else {
            rules.to_string()
        }
    );
}

/// CPU time of the calling thread, in nanoseconds (`CLOCK_THREAD_CPUTIME_ID`). The 10 ms
/// clock ticks of proc(5) made a 0.2 s measurement move by 5 %.
fn thread_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to fill.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(status, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

//! Antivirus benchmark: messages with 1, 5 and 20 attachments of 100 KiB sent through Kala
//! (with clamd, and with antivirus off) to a recording sink, next to `clamdscan --stream` on
//! the same files and to Kala's own INSTREAM calls (clamd's time, the floor). Prints figures;
//! asserts nothing.
//!
//! Run: `cargo bench --bench antivirus` (needs `apt-get install clamav-daemon`). clamd runs
//! privately on the signatures in `fixtures/clamav/`; a production database is far larger,
//! so clamd's own time there is higher (not measurable on this machine, see the README).
//! KALA_BENCH_MESSAGES sets messages per case (default 40).

#[path = "../tests/support/mod.rs"]
mod support;
#[path = "../tests/support_clamd/mod.rs"]
mod support_clamd;

use std::time::{Duration, Instant};

use kala::antivirus::{Clamd, Endpoint, Scanner};
use support::{Kala, Sink};

const ATTACHMENT: usize = 100 * 1024;

/// Bytes a scanner cannot shortcut: a xorshift stream, different per seed.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn message(index: usize, attachments: &[Vec<u8>]) -> Vec<u8> {
    let names: Vec<String> = (0..attachments.len())
        .map(|i| format!("file{i}.bin"))
        .collect();
    let files: Vec<(&str, &[u8])> = names
        .iter()
        .zip(attachments)
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    support::with_attachments(&format!("bench {index}"), &files)
}

/// Sends the messages one after another; returns seconds per message.
async fn through(kala: &Kala, sink: &Sink, messages: &[Vec<u8>]) -> f64 {
    let before = sink.deliveries().len();
    let started = Instant::now();
    for m in messages {
        let reply = kala
            .client()
            .await
            .send_mail("bench@sender.example", &["it@prokuroria.example"], m)
            .await;
        assert!(reply.starts_with("250"), "{reply}");
    }
    sink.wait_for(before + messages.len()).await;
    started.elapsed().as_secs_f64() / messages.len() as f64
}

fn clamdscan_seconds(
    clamd: &support_clamd::Clamd,
    files: &[std::path::PathBuf],
    rounds: usize,
) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("clamd.conf");
    std::fs::write(&conf, format!("LocalSocket {}\n", clamd.socket.display())).unwrap();
    let started = Instant::now();
    for _ in 0..rounds {
        let out = std::process::Command::new("clamdscan")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--stream", "--no-summary", "--quiet"])
            .args(files)
            .output()
            .expect("clamdscan runs (apt-get install clamav-daemon)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    started.elapsed().as_secs_f64() / rounds as f64
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let count: usize = std::env::var("KALA_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let clamd = support_clamd::Clamd::start();
    let sink = Sink::start().await;
    let settings = clamd.settings();
    let with_av: Vec<(&str, &str)> = settings.iter().map(|(s, l)| (*s, l.as_str())).collect();
    let kala_av = Kala::start(sink.addr, &with_av).await;
    let kala_plain = Kala::start(sink.addr, &[]).await;
    let scanner = Clamd {
        endpoint: Endpoint::Unix(clamd.socket.clone()),
        timeout: Duration::from_secs(30),
        max_stream_size: 100 << 20,
    };

    println!(
        "Antivirus benchmark: {count} messages per case, attachments of 100 KiB, one SMTP client at a time"
    );
    println!(
        "{:<13} | {:>11} | {:>13} | {:>12} | {:>15} | {:>17}",
        "attachments",
        "Kala+AV msg/s",
        "Kala+AV ms/msg",
        "Kala ms/msg",
        "added by AV ms",
        "clamdscan ms/msg"
    );
    for n in [1usize, 5, 20] {
        let attachments: Vec<Vec<Vec<u8>>> = (0..count)
            .map(|m| {
                (0..n)
                    .map(|i| noise((m * 100 + i) as u64, ATTACHMENT))
                    .collect()
            })
            .collect();
        let messages: Vec<Vec<u8>> = attachments
            .iter()
            .enumerate()
            .map(|(i, a)| message(i, a))
            .collect();
        // One warm-up message each, so connection set-up and caches are not counted.
        through(&kala_av, &sink, &messages[..1]).await;
        through(&kala_plain, &sink, &messages[..1]).await;
        let av = through(&kala_av, &sink, &messages).await;
        let plain = through(&kala_plain, &sink, &messages).await;

        let dir = tempfile::tempdir().unwrap();
        let files: Vec<std::path::PathBuf> = attachments[0]
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                let path = dir.path().join(format!("file{i}.bin"));
                std::fs::write(&path, bytes).unwrap();
                path
            })
            .collect();
        let clamdscan = clamdscan_seconds(&clamd, &files, 10.min(count));
        // clamd's own time: the same attachments streamed by Kala's client, one after another.
        let started = Instant::now();
        for a in &attachments {
            for bytes in a {
                scanner.scan(bytes).await.unwrap();
            }
        }
        let floor = started.elapsed().as_secs_f64() / count as f64;
        println!(
            "{n:<13} | {:>13.1} | {:>14.2} | {:>12.2} | {:>15.2} | {:>17.2}   (clamd INSTREAM alone: {:.2} ms)",
            1.0 / av,
            av * 1e3,
            plain * 1e3,
            (av - plain) * 1e3,
            clamdscan * 1e3,
            floor * 1e3
        );
    }
}

//! Attachment policy through Kala over SMTP (no clamd needed): each banned shape gets its
//! symbol and the message is held, and a zip bomb ends in bounded time and memory.

mod support;

use std::time::{Duration, Instant};

use support::{Kala, Sink, with_attachment, zip_of};

/// The smallest bytes Windows would load as a program: `MZ`, and at `e_lfanew` the PE header.
fn program() -> Vec<u8> {
    let mut bytes = vec![0u8; 512];
    bytes[..2].copy_from_slice(b"MZ");
    bytes[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
    bytes[0x80..0x84].copy_from_slice(b"PE\0\0");
    bytes
}

async fn held_symbols(kala: &Kala, sink: &Sink, message: &[u8]) -> (String, Vec<String>) {
    let before = kala.quarantined().await.len();
    let reply = kala
        .client()
        .await
        .send_mail("ana@sender.example", &["it@prokuroria.example"], message)
        .await;
    let held = kala.quarantined().await;
    if held.len() == before {
        // Relayed (tagged or accepted): the symbols are in X-Kala-Symbols.
        let Some(last) = sink.deliveries().pop() else {
            return (reply, Vec::new());
        };
        let (header, _) = support::split_added_headers(&last.data);
        let symbols = header
            .split("X-Kala-Symbols:")
            .nth(1)
            .unwrap_or("")
            .split(',')
            .map(|s| s.trim().to_string())
            .collect();
        return (format!("{reply} (relayed)"), symbols);
    }
    let record = &held.last().unwrap().record;
    let names = record["verdict"]["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{} {}",
                s["name"].as_str().unwrap(),
                s["detail"].as_str().unwrap_or("")
            )
        })
        .collect();
    (reply, names)
}

#[tokio::test(flavor = "multi_thread")]
async fn each_banned_shape_gets_its_symbol_and_is_held() {
    let sink = Sink::start().await;
    let kala = Kala::start(sink.addr, &[]).await;
    let docm = zip_of(&[
        ("[Content_Types].xml", b"<Types/>"),
        ("word/document.xml", b"<w:document/>"),
        (
            "word/vbaProject.bin",
            b"\xd0\xcf\x11\xe0 not really a project",
        ),
    ]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "double",
            with_attachment("double", "invoice.pdf.exe", b"hello"),
            "ATTACHMENT_DOUBLE_EXTENSION invoice.pdf.exe",
        ),
        (
            "rtlo",
            with_attachment("rtlo", "photo\u{202E}gpj.exe", b"hello"),
            "ATTACHMENT_RTLO_NAME",
        ),
        (
            "disguised",
            with_attachment("disguised", "report.pdf", &program()),
            "ATTACHMENT_DISGUISED_EXECUTABLE report.pdf",
        ),
        (
            "in-zip",
            with_attachment(
                "in-zip",
                "docs.zip",
                &zip_of(&[("docs/run.exe", &program())]),
            ),
            "ARCHIVE_BANNED_ENTRY docs.zip",
        ),
        (
            "zip-in-zip",
            with_attachment(
                "zip-in-zip",
                "outer.zip",
                &zip_of(&[("inner.zip", &zip_of(&[("setup.scr", b"x")]))]),
            ),
            "ARCHIVE_BANNED_ENTRY outer.zip",
        ),
        // Macros alone only tag (legitimate senders use them too): relayed, marked.
        (
            "macro",
            with_attachment("macro", "letter.docm", &docm),
            "OFFICE_MACRO",
        ),
    ];
    let mut problems = Vec::new();
    for (case, message, expected) in cases {
        let (reply, symbols) = held_symbols(&kala, &sink, &message).await;
        println!("{case}: {reply} {symbols:?}");
        if !symbols.iter().any(|s| s.starts_with(expected)) {
            problems.push(format!(
                "{case}: expected `{expected}`, got {reply} {symbols:?}"
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nested_zip_bomb_ends_in_bounded_time_and_memory() {
    // 42.zip's shape: 16 copies of a zip, each of 16 copies of ..., at the bottom 64 MiB of
    // zeros. Fully expanded that is 64 MiB x 16^3 = 256 GiB; sent, about 300 KiB.
    let zeros = vec![0u8; 64 << 20];
    let mut level = zip_of(&[("0.bin", &zeros)]);
    drop(zeros);
    for depth in 0..3 {
        let names: Vec<String> = (0..16).map(|i| format!("{depth}-{i}.zip")).collect();
        let entries: Vec<(&str, &[u8])> = names
            .iter()
            .map(|n| (n.as_str(), level.as_slice()))
            .collect();
        level = zip_of(&entries);
    }
    println!("bomb: {} bytes", level.len());
    let sink = Sink::start().await;
    let kala = Kala::start(sink.addr, &[]).await;
    let started = Instant::now();
    let (reply, symbols) = tokio::time::timeout(
        Duration::from_secs(120),
        held_symbols(&kala, &sink, &with_attachment("bomb", "bomb.zip", &level)),
    )
    .await
    .expect("a zip bomb must not hang the scan");
    println!(
        "{reply} {symbols:?} in {:?}, peak RSS {} MiB",
        started.elapsed(),
        peak_rss_mib()
    );
    assert!(
        symbols.iter().any(|s| s.starts_with("ARCHIVE_BOMB")),
        "{reply} {symbols:?}"
    );
    assert!(
        peak_rss_mib() < 1024,
        "expanded instead of bounded: {} MiB",
        peak_rss_mib()
    );
}

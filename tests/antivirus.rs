//! Antivirus through Kala over SMTP, with a real clamd (`tests/support_clamd`) and a recording
//! downstream: what is caught, what the quarantine record says, and what happens when clamd
//! goes away and comes back.

mod support;
mod support_clamd;

use std::collections::BTreeSet;
use std::time::Duration;

use support::{Kala, Sink, clean_message, with_attachment, zip_of};
use support_clamd::{Clamd, TESTFILES, eicar};

async fn start(clamd: &Clamd, sink: &Sink, extra: &[(&str, &str)]) -> Kala {
    let settings = clamd.settings();
    let mut all: Vec<(&str, &str)> = settings.iter().map(|(s, l)| (*s, l.as_str())).collect();
    all.extend_from_slice(extra);
    Kala::start(sink.addr, &all).await
}

async fn send(kala: &Kala, message: &[u8]) -> String {
    kala.client()
        .await
        .send_mail("ana@sender.example", &["it@prokuroria.example"], message)
        .await
}

/// The quarantine records (envelope and verdict as JSON) not seen before.
async fn new_records(kala: &Kala, seen: &mut BTreeSet<String>) -> Vec<serde_json::Value> {
    let mut records = Vec::new();
    for held in kala.quarantined().await {
        if seen.insert(held.id.clone()) {
            records.push(held.record);
        }
    }
    records
}

/// The detail of a symbol in a quarantine record's verdict.
fn symbol_detail(record: &serde_json::Value, name: &str) -> Option<String> {
    record["verdict"]["symbols"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)
        .map(|s| s["detail"].as_str().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_clamav_testfile_is_caught_with_its_attachment_named() {
    let dir = std::path::Path::new(TESTFILES);
    assert!(
        dir.is_dir(),
        "{TESTFILES} is missing: `apt-get install clamav-testfiles` (scripts/test does this)"
    );
    let clamd = Clamd::start();
    let sink = Sink::start().await;
    let kala = start(&clamd, &sink, &[]).await;
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 40, "only {} test files", files.len());

    let mut seen = BTreeSet::new();
    let mut table = vec![(
        "file".to_string(),
        "symbol".to_string(),
        "signature in attachment".to_string(),
    )];
    let mut missed = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let reply = send(
            &kala,
            &with_attachment(&name, &name, &std::fs::read(file).unwrap()),
        )
        .await;
        assert!(reply.starts_with("250"), "{name}: {reply}");
        let records = new_records(&kala, &mut seen).await;
        let detail = records
            .first()
            .and_then(|r| symbol_detail(r, "VIRUS"))
            .unwrap_or_default();
        if detail.contains(&format!("attachment \"{name}\"")) {
            table.push((name, "VIRUS".into(), detail));
        } else {
            missed.push(format!("{name}: {detail:?}"));
        }
    }
    println!("\n{:<28} {:<7} {}", table[0].0, table[0].1, table[0].2);
    for (file, symbol, detail) in &table[1..] {
        println!("{file:<28} {symbol:<7} {detail}");
    }
    assert!(missed.is_empty(), "not caught or not named: {missed:#?}");
    assert!(sink.deliveries().is_empty(), "a virus was relayed");
}

#[tokio::test(flavor = "multi_thread")]
async fn eicar_in_the_body_an_attachment_a_zip_and_a_zip_in_a_zip() {
    let clamd = Clamd::start();
    let sink = Sink::start().await;
    let kala = start(&clamd, &sink, &[]).await;
    let mut seen = BTreeSet::new();
    let body = String::from_utf8(eicar()).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "inline",
            clean_message("inline", &format!("{body}\r\n")),
            "message body",
        ),
        (
            "attached",
            with_attachment("attached", "eicar.txt", &eicar()),
            "attachment \"eicar.txt\"",
        ),
        (
            "zipped",
            with_attachment("zipped", "eicar.zip", &zip_of(&[("eicar.txt", &eicar())])),
            "attachment \"eicar.zip\"",
        ),
        (
            "zip-in-zip",
            with_attachment(
                "zip-in-zip",
                "outer.zip",
                &zip_of(&[("inner.zip", &zip_of(&[("eicar.txt", &eicar())]))]),
            ),
            "attachment \"outer.zip\"",
        ),
    ];
    for (case, message, place) in cases {
        let reply = send(&kala, &message).await;
        assert!(reply.starts_with("250"), "{case}: {reply}");
        let records = new_records(&kala, &mut seen).await;
        assert_eq!(records.len(), 1, "{case}: one message quarantined");
        let detail = symbol_detail(&records[0], "VIRUS").unwrap_or_default();
        assert!(
            detail.contains("Kala.Test.EICAR") && detail.contains(place),
            "{case}: {detail:?}"
        );
        assert_eq!(records[0]["verdict"]["action"], "quarantine", "{case}");
    }
    assert!(sink.deliveries().is_empty(), "EICAR was relayed");
}

#[tokio::test(flavor = "multi_thread")]
async fn uuencoded_and_binhex_bodies_are_caught_by_the_whole_message_scan() {
    let clamd = Clamd::start();
    let sink = Sink::start().await;
    let kala = start(&clamd, &sink, &[]).await;
    let mut seen = BTreeSet::new();
    let testfile = |name: &str| {
        std::fs::read(std::path::Path::new(TESTFILES).join(name))
            .unwrap_or_else(|e| panic!("{name}: {e} (apt-get install clamav-testfiles)"))
    };
    // A whole mail whose only part is x-uuencode (the mbox "From " line dropped).
    let uu = testfile("clam.exe.mbox.uu");
    let uu = String::from_utf8_lossy(&uu[uu.iter().position(|&b| b == b'\n').unwrap() + 1..])
        .replace('\n', "\r\n")
        .into_bytes();
    // BinHex pasted into a plain-text body: no MIME part says what it is.
    let binhex = String::from_utf8_lossy(&testfile("clam.exe.binhex")).replace('\n', "\r\n");
    let cases = [
        ("uuencoded", uu),
        ("binhex", clean_message("binhex", &binhex)),
    ];
    for (case, message) in cases {
        let reply = send(&kala, &message).await;
        assert!(reply.starts_with("250"), "{case}: {reply}");
        let records = new_records(&kala, &mut seen).await;
        assert_eq!(records.len(), 1, "{case}: quarantined");
        let detail = symbol_detail(&records[0], "VIRUS").unwrap_or_default();
        assert!(detail.contains("Kala.Test.ClamExe"), "{case}: {detail:?}");
        println!("{case}: {detail}");
    }
    assert!(sink.deliveries().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn clamd_stopped_gives_451_and_mail_flows_again_when_it_is_back() {
    let mut clamd = Clamd::start();
    let sink = Sink::start().await;
    let kala = start(&clamd, &sink, &[]).await;

    let reply = send(&kala, &clean_message("before", "hello\r\n")).await;
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(sink.wait_for(1).await.len(), 1);

    clamd.stop();
    let reply = send(&kala, &clean_message("during", "hello\r\n")).await;
    assert!(
        reply.starts_with("451"),
        "clamd down must tempfail: {reply}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sink.deliveries().len(), 1, "nothing relayed unscanned");

    clamd.restart();
    let reply = send(&kala, &clean_message("after", "hello\r\n")).await;
    assert!(
        reply.starts_with("250"),
        "no restart of Kala needed: {reply}"
    );
    assert_eq!(sink.wait_for(2).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_open_relays_marked_and_too_large_is_never_passed_silently() {
    let mut clamd = Clamd::start();
    let sink = Sink::start().await;
    let open = start(&clamd, &sink, &[("antivirus", "fail_open = true")]).await;
    clamd.stop();
    let reply = send(&open, &clean_message("open", "hello\r\n")).await;
    assert!(reply.starts_with("250"), "{reply}");
    let delivered = sink.wait_for(1).await;
    let data = String::from_utf8_lossy(&delivered[0].data).to_string();
    assert!(data.contains("X-Kala-Virus: unchecked\r\n"), "{data}");
    assert!(data.contains("AV_UNCHECKED"), "{data}");
    assert!(kala::checks::PASSED_UNSCANNED.load(std::sync::atomic::Ordering::Relaxed) >= 1);

    clamd.restart();
    let small = start(
        &clamd,
        &sink,
        &[("antivirus", "max_stream_size = \"1KiB\"")],
    )
    .await;
    let reply = send(
        &small,
        &with_attachment("big", "big.bin", &vec![b'x'; 4096]),
    )
    .await;
    assert!(reply.starts_with("250"), "{reply}");
    let mut seen = BTreeSet::new();
    let records = new_records(&small, &mut seen).await;
    assert_eq!(records.len(), 1, "quarantined, not relayed");
    let detail = symbol_detail(&records[0], "AV_TOO_LARGE").expect("AV_TOO_LARGE");
    assert!(detail.contains("big.bin"), "{detail}");
    assert_eq!(sink.deliveries().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn health_check_reads_the_engine_and_notices_clamd_gone() {
    use kala::antivirus::{Clamd as ClamdClient, Endpoint, Scanner, log_health};
    let mut clamd = Clamd::start();
    let client = ClamdClient {
        endpoint: Endpoint::Unix(clamd.socket.clone()),
        timeout: Duration::from_secs(5),
        max_stream_size: 1 << 20,
    };
    client.ping().await.expect("PONG");
    let version = client.version().await.expect("VERSION");
    assert!(version.engine.starts_with("ClamAV "), "{version:?}");
    // Local test signatures only: no daily database, so no age to warn about.
    assert_eq!(version.database, None);
    let endpoint = client.endpoint.to_string();
    assert!(log_health(&client, &endpoint, Duration::from_secs(86_400), false).await);
    clamd.stop();
    assert!(client.ping().await.is_err());
    assert!(!log_health(&client, &endpoint, Duration::from_secs(86_400), false).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_allow_listed_sender_is_still_scanned_for_viruses() {
    let clamd = Clamd::start();
    let sink = Sink::start().await;
    // Allowed by domain and by network: -20 each way, and still the virus forces quarantine.
    let kala = start(
        &clamd,
        &sink,
        &[("lists", "allow = [\"@sender.example\", \"127.0.0.0/8\"]")],
    )
    .await;
    let reply = send(&kala, &with_attachment("allowed", "eicar.txt", &eicar())).await;
    assert!(reply.starts_with("250"), "{reply}");
    let records = new_records(&kala, &mut BTreeSet::new()).await;
    assert_eq!(records.len(), 1);
    assert!(
        symbol_detail(&records[0], "KALA_SENDER_ALLOWED").is_some(),
        "{}",
        records[0]
    );
    assert!(
        symbol_detail(&records[0], "VIRUS").is_some(),
        "{}",
        records[0]
    );
    assert_eq!(records[0]["verdict"]["action"], "quarantine");
    assert!(
        sink.deliveries().is_empty(),
        "an allowed sender's virus was relayed"
    );
}

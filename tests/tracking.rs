//! Message tracking: every message's path (relayed with Exchange's reply, held with its
//! quarantine id, refused before scanning, a recipient Exchange refused) found by sender, recipient, Message-ID, client
//! address and time, from `kala track` and from the tracking page.

mod support;

use std::time::Duration;

use support::http::Browser;
use support::{Kala, Sink, kala_cli};

const PASSWORD: &str = "correct horse battery";

fn kala_track(kala: &Kala, args: &[&str]) -> String {
    let (ok, out) = kala_cli(&kala.cli_config(), &[&["track"], args].concat());
    assert!(ok, "{out}");
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn every_message_can_be_found_with_what_happened_to_it() {
    let sink = Sink::start().await;
    let kala = Kala::start(
        sink.addr,
        &[("policy", "tag_score = 0.5\nquarantine_score = 1.0")],
    )
    .await;
    let relayed = support::clean_message("Backup report", "All jobs finished.\r\n");
    let held = b"From: b@sender.example\r\nSubject: undated note\r\nMessage-ID: <held-1@sender.example>\r\n\r\nbody\r\n";
    for (from, to, message) in [
        ("ana@sender.example", "it@prokuroria.example", &relayed[..]),
        ("bob@other.example", "arta@prokuroria.example", &held[..]),
    ] {
        let reply = kala.client().await.send_mail(from, &[to], message).await;
        assert!(reply.starts_with("250"), "{reply}");
    }
    // Refused before scanning: a bare LF in the body.
    let reply = kala
        .client()
        .await
        .send_mail(
            "eve@sender.example",
            &["it@prokuroria.example"],
            b"Subject: x\r\n\r\nbare\nline\r\n",
        )
        .await;
    assert!(reply.starts_with("554"), "{reply}");
    // Refused before DATA: Exchange does not know the recipient.
    let mut client = kala.client().await;
    client.cmd("EHLO client.example.org").await;
    client.cmd("MAIL FROM:<carol@sender.example>").await;
    let reply = client.cmd("RCPT TO:<unknown@prokuroria.example>").await;
    assert!(reply.starts_with("550"), "{reply}");
    client.cmd("QUIT").await;

    // The records are written just after each reply.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let all = loop {
        let out = kala_track(&kala, &["--json"]);
        if out.lines().count() == 4 {
            break out;
        }
        assert!(std::time::Instant::now() < deadline, "not tracked: {out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let rows: Vec<serde_json::Value> = all
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by_sender = |s: &str| rows.iter().find(|r| r["sender"] == s).unwrap().clone();
    let ana = by_sender("ana@sender.example");
    assert_eq!(ana["action"], "accept");
    assert_eq!(ana["subject"], "Backup report");
    assert!(ana["reply"].as_str().unwrap().starts_with("250"), "{ana}");
    assert_eq!(ana["client_ip"], "127.0.0.1");
    let bob = by_sender("bob@other.example");
    assert_eq!(bob["action"], "quarantine");
    assert_eq!(bob["quarantine_id"], bob["queue_id"]);
    assert!(
        bob["symbols"]
            .as_str()
            .unwrap()
            .contains("KALA_MISSING_DATE"),
        "{bob}"
    );
    let eve = by_sender("eve@sender.example");
    assert_eq!(eve["action"], "reject");
    assert!(eve["reply"].as_str().unwrap().starts_with("554"), "{eve}");
    let carol = by_sender("carol@sender.example");
    assert_eq!(carol["action"], "reject");
    assert_eq!(carol["recipients"][0], "unknown@prokuroria.example");
    assert!(
        carol["reply"].as_str().unwrap().contains("User unknown"),
        "{carol}"
    );

    // Narrowed searches, as the helpdesk types them.
    let out = kala_track(&kala, &["--recipient", "ARTA@"]);
    assert!(
        out.contains("bob@other.example") && out.ends_with("1 message(s)\n"),
        "{out}"
    );
    assert!(out.contains("held: kala quarantine show"), "{out}");
    let out = kala_track(&kala, &["--message-id", "held-1@sender.example"]);
    assert!(out.ends_with("1 message(s)\n"), "{out}");
    let out = kala_track(&kala, &["--since", "1h", "--client-ip", "127.0.0.1"]);
    assert!(out.ends_with("4 message(s)\n"), "{out}");
    let out = kala_track(&kala, &["--until", "2000-01-01"]);
    assert!(out.ends_with("0 message(s)\n"), "{out}");

    // The same search in the UI, by a reviewer, with a link to the held copy.
    kala.add_user("rita", PASSWORD, "reviewer").await;
    let mut browser = Browser::new(kala.start_web().await);
    let csrf = browser.get("/login").await.csrf();
    let r = browser
        .post(
            "/login",
            &[("csrf", &csrf), ("user", "rita"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 303);
    let page = browser.get("/track?sender=other.example&since=1h").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Messages found: 1"), "{}", page.body);
    let id = bob["queue_id"].as_str().unwrap();
    assert!(
        page.body.contains(&format!("href=\"/quarantine/{id}\"")),
        "{}",
        page.body
    );
    let page = browser.get("/track?since=soon").await;
    assert!(page.body.contains("id=\"bad-time\""), "{}", page.body);
}

//! The review UI in a real browser (Debian's headless Chromium): log in, filter the list,
//! open a message, release it (the downstream receives it byte for byte), switch to
//! Albanian; and a hostile message that runs no script and loads nothing remote.

mod support;
mod support_browser;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fantoccini::Locator;
use support::{Kala, Sink};
use support_browser::Browser;

const PASSWORD: &str = "correct horse battery";

/// A web server standing for every remote resource a hostile message points at: it counts
/// the connections it gets (there must be none).
async fn tracker() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt as _;
                let mut first = vec![0u8; 200];
                let n = stream.read(&mut first).await.unwrap_or(0);
                eprintln!("remote request: {:?}", String::from_utf8_lossy(&first[..n]));
            });
        }
    });
    (addr, hits)
}

const PATIENCE: Duration = Duration::from_secs(10);

/// Saves what the browser shows as `target/tmp/screenshots/NAME.png`, for the admin manual
/// (`scripts/screenshots` copies them into `docs/manual/img/`).
async fn screenshot(c: &fantoccini::Client, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "the browser returned a PNG");
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// Waits until the element at `locator` reads `want`. Reads that fail (the element is not
/// there yet, or went stale because the page was replaced) are retried until the deadline.
async fn wait_for_text(c: &fantoccini::Client, locator: Locator<'_>, want: &str) {
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut last: String;
    loop {
        match c.find(locator).await {
            Ok(element) => match element.text().await {
                Ok(text) if text == want => return,
                Ok(text) => last = text,
                Err(error) => last = format!("({error})"),
            },
            Err(error) => last = format!("({error})"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "waited {PATIENCE:?} for {want:?}; the page shows {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the browser's address ends with `path`.
async fn wait_for_url(c: &fantoccini::Client, path: &str) {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let url = c.current_url().await.unwrap();
        if url.path() == path {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "waited {PATIENCE:?} to reach {path}; the browser is at {url}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn review_in_a_real_browser() {
    let sink = Sink::start().await;
    let kala = Kala::start(
        sink.addr,
        &[("policy", "tag_score = 0.5\nquarantine_score = 1.0")],
    )
    .await;
    let (remote, remote_hits) = tracker().await;
    let plain = b"From: Ana <ana@sender.example>\r\nTo: it@prokuroria.example\r\nSubject: Invoice March\r\nMessage-ID: <1@sender.example>\r\n\r\nPlease find the invoice.\r\n".to_vec();
    let other = b"From: Bob <bob@sender.example>\r\nTo: it@prokuroria.example\r\nSubject: Weekly report\r\nMessage-ID: <3@sender.example>\r\n\r\nNumbers.\r\n".to_vec();
    let hostile = format!(
        "From: Evil <evil@attacker.example>\r\nTo: it@prokuroria.example\r\nSubject: Prize <img src=x onerror=alert(1)>\r\nMessage-ID: <2@attacker.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nClick <script>alert('text')</script> now\r\n--B\r\nContent-Type: text/html\r\n\r\n<html><head><link rel=stylesheet href=\"http://{remote}/s.css\"></head><body onload=\"alert('onload')\"><script>alert('html'); fetch('http://{remote}/x')</script><img src=\"http://{remote}/p.gif\"><a href=\"javascript:alert(1)\">win</a><iframe src=\"http://{remote}/frame\"></iframe><div style=\"background:url(http://{remote}/bg.png)\">x</div></body></html>\r\n--B--\r\n"
    )
    .into_bytes();
    for message in [&plain, &other, &hostile] {
        let reply = kala
            .client()
            .await
            .send_mail("ana@sender.example", &["it@prokuroria.example"], message)
            .await;
        assert!(reply.starts_with("250 2.0.0"), "{reply}");
    }
    let held = kala.quarantined().await;
    kala.add_user("rita", PASSWORD, "reviewer").await;
    let web = kala.start_web().await;
    let base = format!("http://{web}");

    let browser = Browser::start().await;
    let c = &browser.client;
    c.goto(&format!("{base}/quarantine")).await.unwrap();
    // No session: the login page.
    screenshot(c, "login").await;
    c.find(Locator::Id("login-user"))
        .await
        .unwrap()
        .send_keys("rita")
        .await
        .unwrap();
    c.find(Locator::Id("login-password"))
        .await
        .unwrap()
        .send_keys(PASSWORD)
        .await
        .unwrap();
    c.find(Locator::Id("login-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let count = c.wait().for_element(Locator::Id("count")).await.unwrap();
    assert_eq!(count.text().await.unwrap(), "3 shown of 3 matching");
    screenshot(c, "quarantine-list").await;

    // Filter by subject words.
    c.find(Locator::Id("filter-subject"))
        .await
        .unwrap()
        .send_keys("invoice")
        .await
        .unwrap();
    c.find(Locator::Id("filter-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The submit reloads the page: poll until the new page shows the filtered count. An
    // element found on the old page goes stale mid-read, so a failed read just retries.
    wait_for_text(c, Locator::Id("count"), "1 shown of 1 matching").await;

    // Open it and release it.
    c.find(Locator::LinkText("Invoice March"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let symbols = c.wait().for_element(Locator::Id("symbols")).await.unwrap();
    screenshot(c, "message").await;
    assert!(symbols.text().await.unwrap().contains("KALA_MISSING_DATE"));
    c.find(Locator::Id("release"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let result = c.wait().for_element(Locator::Id("result")).await.unwrap();
    assert!(
        result
            .text()
            .await
            .unwrap()
            .starts_with("Released: the mail server answered 250"),
        "{}",
        result.text().await.unwrap()
    );
    let delivered = sink.wait_for(1).await;
    let invoice = held.iter().find(|h| h.raw.ends_with(&plain)).unwrap();
    assert_eq!(
        delivered[0].data, invoice.raw,
        "the downstream got the held bytes exactly"
    );

    // The hostile message: shown, nothing runs, nothing remote loads, even with the HTML
    // view opened.
    let hostile_id = &held.iter().find(|h| h.raw.ends_with(&hostile)).unwrap().id;
    c.goto(&format!("{base}/quarantine/{hostile_id}"))
        .await
        .unwrap();
    let body = c.wait().for_element(Locator::Id("body")).await.unwrap();
    assert!(
        body.text()
            .await
            .unwrap()
            .contains("<script>alert('text')</script>")
    );
    c.find(Locator::Css("details summary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        c.get_alert_text().await.is_err(),
        "a script from the message ran"
    );
    assert_eq!(
        remote_hits.load(Ordering::SeqCst),
        0,
        "the browser loaded something remote"
    );

    // Albanian, chosen in the page.
    c.goto(&format!("{base}/quarantine")).await.unwrap();
    c.find(Locator::Css("select[name=lang]"))
        .await
        .unwrap()
        .select_by_value("sq")
        .await
        .unwrap();
    c.find(Locator::Id("set-language"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The form redirects to the dashboard once the choice is saved; wait for that before
    // leaving, or the next page could load before the choice is stored.
    wait_for_url(c, "/dashboard").await;
    c.goto(&format!("{base}/quarantine")).await.unwrap();
    wait_for_text(c, Locator::Css("h1"), "Mesazhet e mbajtura").await;
    let html = c.source().await.unwrap();
    assert!(html.contains("lang=\"sq\""));

    browser.client.clone().close().await.unwrap();
}

/// The rules pages in the browser: a rule with its hits graph (drawn as SVG under the strict
/// CSP), an edit refused with its problem shown, and a sound one that becomes a version.
#[tokio::test(flavor = "multi_thread")]
async fn rules_pages_in_a_real_browser() {
    let sink = Sink::start().await;
    let rules = tempfile::tempdir().unwrap();
    let local = rules.path().join("10_local.cf");
    std::fs::write(
        &local,
        "body KALA_T_PRIZE /won a prize/i\ndescribe KALA_T_PRIZE Promises a prize\nscore KALA_T_PRIZE 0.5\n",
    )
    .unwrap();
    let kala = Kala::start(
        sink.addr,
        &[(
            "rules",
            &format!("dirs = [{:?}]\nwatch = false", rules.path()),
        )],
    )
    .await;
    let prize = b"From: Ana <ana@sender.example>\r\nTo: it@prokuroria.example\r\nSubject: News\r\nDate: Sun, 29 Nov 2026 10:00:00 +0000\r\nMessage-ID: <p@sender.example>\r\n\r\nYou won a prize.\r\n";
    let reply = kala
        .client()
        .await
        .send_mail("ana@sender.example", &["it@prokuroria.example"], prize)
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    kala.add_user("root", PASSWORD, "admin").await;
    let base = format!("http://{}", kala.start_web().await);

    let browser = Browser::start().await;
    let c = &browser.client;
    c.goto(&format!("{base}/login")).await.unwrap();
    for (id, text) in [("login-user", "root"), ("login-password", PASSWORD)] {
        c.find(Locator::Id(id))
            .await
            .unwrap()
            .send_keys(text)
            .await
            .unwrap();
    }
    c.find(Locator::Id("login-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait().for_element(Locator::Id("count")).await.unwrap();

    c.goto(&format!("{base}/rules")).await.unwrap();
    c.wait().for_element(Locator::Id("count")).await.unwrap();
    screenshot(c, "rules").await;
    c.wait()
        .for_element(Locator::LinkText("KALA_T_PRIZE"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait().for_element(Locator::Id("hits")).await.unwrap();
    screenshot(c, "rule").await;
    let bars = c.find_all(Locator::Css("#hits rect")).await.unwrap();
    assert_eq!(bars.len(), 30, "a bar per day");
    let total = c.find(Locator::Id("total")).await.unwrap();
    assert!(total.text().await.unwrap().starts_with("Total: 1"));

    // A broken edit: refused, the problem shown, the file unchanged.
    c.goto(&format!("{base}/rules/edit?file=10_local.cf"))
        .await
        .unwrap();
    let text = c
        .wait()
        .for_element(Locator::Css("textarea"))
        .await
        .unwrap();
    text.send_keys("body KALA_T_BAD /unclosed(/\n")
        .await
        .unwrap();
    c.find(Locator::Id("save"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let problems = c.wait().for_element(Locator::Id("problems")).await.unwrap();
    assert!(problems.text().await.unwrap().contains("10_local.cf:4"));
    assert!(
        !std::fs::read_to_string(&local)
            .unwrap()
            .contains("KALA_T_BAD")
    );

    // Remove the broken line and add a sound rule: saved and active as version 2.
    let text = c.find(Locator::Css("textarea")).await.unwrap();
    text.clear().await.unwrap();
    text.send_keys(
        "body KALA_T_PRIZE /won a prize/i\nscore KALA_T_PRIZE 0.5\nbody KALA_T_NEW /brand new/\n",
    )
    .await
    .unwrap();
    c.find(Locator::Id("save"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(c, Locator::Id("result"), "Saved; version 2 is now active.").await;
    assert!(
        std::fs::read_to_string(&local)
            .unwrap()
            .contains("KALA_T_NEW")
    );

    // Message tracking finds the prize message, relayed, with Exchange's reply.
    c.goto(&format!("{base}/track?since=1h")).await.unwrap();
    let found = c
        .wait()
        .for_element(Locator::Id("track-count"))
        .await
        .unwrap();
    assert_eq!(found.text().await.unwrap(), "Messages found: 1");
    let table = c.find(Locator::Id("track")).await.unwrap();
    let table = table.text().await.unwrap();
    assert!(
        table.contains("ana@sender.example") && table.contains("accept"),
        "{table}"
    );
    screenshot(c, "track").await;

    browser.client.clone().close().await.unwrap();
}

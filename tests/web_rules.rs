//! The rule management pages over HTTP, as an admin without JavaScript uses them: the list
//! and its search, one rule with its hits graph, an edit refused before it touches the file,
//! an edit that becomes a new version, the diff and a rollback that puts the old file back,
//! a reload refused with its problems shown, and a reviewer kept from changing anything.

mod support;

use std::net::SocketAddr;

use support::http::Browser;
use support::{Kala, Sink, clean_message};

const PASSWORD: &str = "correct horse battery";

const LOCAL_RULES: &str = "\
body KALA_TEST_PRIZE /you have won a prize/i
describe KALA_TEST_PRIZE Promises a prize
score KALA_TEST_PRIZE 2.5
header KALA_TEST_TRANSFER Subject =~ /urgent transfer/i
describe KALA_TEST_TRANSFER Subject asks for an urgent transfer
";

async fn logged_in(web: SocketAddr, user: &str) -> Browser {
    let mut browser = Browser::new(web);
    let csrf = browser.get("/login").await.csrf();
    let r = browser
        .post(
            "/login",
            &[("csrf", &csrf), ("user", user), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 303, "{user} logs in: {}", r.body);
    browser
}

/// The part of the rules page before the never-fired list (which names every quiet rule).
fn table(body: &str) -> &str {
    &body[..body
        .find("id=\"never-fired\"")
        .expect("the never-fired list")]
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_are_listed_edited_versioned_and_rolled_back() {
    let rules = tempfile::tempdir().unwrap();
    let dir = rules.path().to_path_buf();
    let local = dir.join("10_local.cf");
    std::fs::write(&local, LOCAL_RULES).unwrap();
    let sink = Sink::start().await;
    let kala = Kala::start(
        sink.addr,
        &[(
            "rules",
            &format!("dirs = [{:?}]\nwatch = false\nsample_relayed = 5", dir),
        )],
    )
    .await;
    kala.add_user("admin", PASSWORD, "admin").await;
    kala.add_user("rita", PASSWORD, "reviewer").await;
    let web = kala.start_web().await;
    let reply = kala
        .client()
        .await
        .send_mail(
            "ana@sender.example",
            &["it@prokuroria.example"],
            &clean_message("Hello", "Good news: you have won a prize.\r\n"),
        )
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    let mut admin = logged_in(web, "admin").await;

    // The list: every rule with its description, file:line and hits; the active version.
    let page = admin.get("/rules").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("href=\"/rules\""), "a nav link");
    let rows = table(&page.body);
    assert!(rows.contains("KALA_TEST_PRIZE"), "{rows}");
    assert!(rows.contains("Promises a prize"), "{rows}");
    assert!(rows.contains(&format!("{}:1", local.display())), "{rows}");
    assert!(rows.contains("KALA_TEST_TRANSFER"), "{rows}");
    assert!(rows.contains("Version 1"), "the active version: {rows}");
    assert!(!page.body.contains("id=\"refused\""));
    let never_fired = &page.body[page.body.find("id=\"never-fired\"").unwrap()..];
    assert!(never_fired.contains("KALA_TEST_TRANSFER"), "{never_fired}");
    assert!(!never_fired.contains("KALA_TEST_PRIZE"), "it fired once");

    // Search by description words (any case) and by kind.
    let found = admin.get("/rules?q=PRIZE").await;
    assert!(table(&found.body).contains("KALA_TEST_PRIZE"));
    assert!(!table(&found.body).contains("KALA_TEST_TRANSFER"));
    assert!(found.body.contains("1 of 2 rules shown"), "{}", found.body);
    let headers = admin.get("/rules?kind=header").await;
    assert!(table(&headers.body).contains("KALA_TEST_TRANSFER"));
    assert!(!table(&headers.body).contains("KALA_TEST_PRIZE"));

    // One rule: its definition, score and a month of hits drawn server-side.
    let rule = admin.get("/rules/KALA_TEST_PRIZE").await;
    assert_eq!(rule.status, 200, "{}", rule.body);
    assert!(
        rule.body
            .contains("body KALA_TEST_PRIZE /you have won a prize/i"),
        "{}",
        rule.body
    );
    assert!(rule.body.contains("<svg"), "{}", rule.body);
    assert!(rule.body.contains("Total: <b>1</b>"), "{}", rule.body);
    assert!(rule.body.contains("2.5"));
    assert_eq!(admin.get("/rules/NO_SUCH_RULE").await.status, 404);

    // A broken edit is refused with the problem's file and line; the file is not touched.
    let form = admin.get("/rules/edit?file=10_local.cf").await;
    assert_eq!(form.status, 200, "{}", form.body);
    assert!(
        form.body.contains("KALA_TEST_TRANSFER Subject =~"),
        "{}",
        form.body
    );
    let csrf = form.csrf();
    let broken = format!("{LOCAL_RULES}body BAD /unclosed(/\n");
    let r = admin
        .post(
            "/rules/edit",
            &[("csrf", &csrf), ("file", "10_local.cf"), ("text", &broken)],
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body.contains(&format!("{}:6:", local.display())),
        "the real path and line: {}",
        r.body
    );
    assert!(r.body.contains("BAD"), "{}", r.body);
    assert_eq!(std::fs::read_to_string(&local).unwrap(), LOCAL_RULES);
    // A bad name is refused before anything is read or written.
    let r = admin
        .post(
            "/rules/edit",
            &[("csrf", &csrf), ("file", "../escape.cf"), ("text", "")],
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(!dir.parent().unwrap().join("escape.cf").exists());

    // The dry run: the prize mail was relayed (2.5) and sampled; scoring it 25 would refuse
    // it. Nothing is written.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await; // the sample is written after the reply
    let harsher = LOCAL_RULES.replace("score KALA_TEST_PRIZE 2.5", "score KALA_TEST_PRIZE 25");
    let r = admin
        .post(
            "/rules/edit",
            &[
                ("csrf", &csrf),
                ("file", "10_local.cf"),
                ("text", &harsher),
                ("action", "try"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains("Scanned 0 held and 1 relayed"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains(
            "id=\"newly-caught\">Relayed mail that would now be held or refused: <b>1</b>"
        ),
        "{}",
        r.body
    );
    assert!(r.body.contains("Reject 25.0"), "{}", r.body);
    assert_eq!(std::fs::read_to_string(&local).unwrap(), LOCAL_RULES);

    // A sound edit (sent with CRLF, as browsers send a textarea) becomes version 2.
    let added = "body KALA_TEST_NEW /brand new phrase/\ndescribe KALA_TEST_NEW A new rule\n";
    let edited = format!("{LOCAL_RULES}{added}");
    let r = admin
        .post(
            "/rules/edit",
            &[
                ("csrf", &csrf),
                ("file", "10_local.cf"),
                ("text", &edited.replace('\n', "\r\n")),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains("Saved; version 2 is now active."),
        "{}",
        r.body
    );
    assert_eq!(std::fs::read_to_string(&local).unwrap(), edited);
    assert!(
        table(&admin.get("/rules").await.body).contains("KALA_TEST_NEW"),
        "the new rule is live"
    );

    // The history shows both versions; version 2's diff is the added rule.
    let history = admin.get("/rules/versions").await;
    assert_eq!(history.status, 200, "{}", history.body);
    assert!(
        history.body.contains("id=\"version-2\""),
        "{}",
        history.body
    );
    assert!(
        history.body.contains("id=\"version-1\""),
        "{}",
        history.body
    );
    let diff = admin.get("/rules/versions?diff=2").await;
    assert!(
        diff.body.contains("+body KALA_TEST_NEW /brand new phrase/"),
        "{}",
        diff.body
    );
    let oldest = admin.get("/rules/versions?diff=1").await;
    assert!(
        oldest.body.contains("no earlier version"),
        "{}",
        oldest.body
    );

    // Rolling back to version 1 puts its file back and activates it as version 3.
    let csrf = history.csrf();
    let r = admin
        .post("/rules/versions/1/rollback", &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let target = r.header("location").unwrap().to_string();
    let after = admin.get(&target).await;
    assert!(
        after.body.contains("Version 3 is now active."),
        "{}",
        after.body
    );
    assert_eq!(std::fs::read_to_string(&local).unwrap(), LOCAL_RULES);
    assert!(!table(&admin.get("/rules").await.body).contains("KALA_TEST_NEW"));

    // A reviewer reads the pages but may not reload, roll back or edit.
    let mut rita = logged_in(web, "rita").await;
    let page = rita.get("/rules").await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("id=\"reload\""));
    let csrf = page.csrf();
    let r = rita.post("/rules/reload", &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = rita
        .post("/rules/versions/2/rollback", &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(rita.get("/rules/edit").await.status, 403);
    // And no one changes anything without the form's token.
    let r = admin.post("/rules/reload", &[("csrf", "forged")]).await;
    assert_eq!(r.status, 403);

    // A broken file put on disk by hand: the reload is refused and every problem shown.
    std::fs::write(dir.join("20_typo.cf"), "body TYPO /(/\nheader\n").unwrap();
    let csrf = admin.get("/rules").await.csrf();
    let r = admin.post("/rules/reload", &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/rules?result=refused"));
    let page = admin.get("/rules?result=refused").await;
    let refused = &page.body[page.body.find("id=\"refused\"").expect("the error box")..];
    let typo = dir.join("20_typo.cf");
    assert!(
        refused.contains(&format!("{}:1:", typo.display())),
        "{refused}"
    );
    assert!(
        refused.contains(&format!("{}:2:", typo.display())),
        "{refused}"
    );
    assert!(page.body.contains("Version 3"), "version 3 stays active");

    // Every change is in the audit log.
    let audit = admin.get("/audit").await.body;
    for action in [
        "rules-edit",
        "rules-activate",
        "rules-rollback",
        "rules-refused",
    ] {
        assert!(audit.contains(action), "{action} audited: {audit}");
    }
}

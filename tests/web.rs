//! The review UI over HTTP on a real socket, as a browser without JavaScript uses it: login
//! and its limits, CSRF, roles, the list, the message page, release and delete, languages,
//! a hostile message shown safely, and the JSON API with tokens.

mod support;

use std::net::SocketAddr;

use support::http::Browser;
use support::{Kala, Sink};

const HOLD_UNDATED: (&str, &str) = ("policy", "tag_score = 0.5\nquarantine_score = 1.0");
const PASSWORD: &str = "correct horse battery";

struct Setup {
    sink: Sink,
    kala: Kala,
    web: SocketAddr,
    ids: Vec<String>,
}

/// A gateway that held two messages (one hostile), with an admin, a reviewer and an auditor.
async fn setup() -> Setup {
    let sink = Sink::start().await;
    let kala = Kala::start(sink.addr, &[HOLD_UNDATED]).await;
    let plain = b"From: Ana <ana@sender.example>\r\nTo: it@prokuroria.example\r\nSubject: Invoice March\r\nMessage-ID: <1@sender.example>\r\n\r\nPlease find the invoice.\r\n";
    let giant = "x".repeat(50_000);
    let hostile = format!(
        "From: Evil <evil@attacker.example>\r\nTo: it@prokuroria.example\r\nSubject: <script>alert('subject')</script> Prize\r\nMessage-ID: <2@attacker.example>\r\nX-Giant: {giant}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nClick <script>alert('text')</script> now\r\n--B\r\nContent-Type: text/html\r\n\r\n<html><body><script>alert('html')</script><img src=\"http://tracker.example/p.gif\"><a href=\"javascript:alert(1)\">win</a><iframe src=\"http://evil.example/\"></iframe></body></html>\r\n--B--\r\n"
    );
    for message in [plain.to_vec(), hostile.into_bytes()] {
        let reply = kala
            .client()
            .await
            .send_mail("ana@sender.example", &["it@prokuroria.example"], &message)
            .await;
        assert!(reply.starts_with("250 2.0.0"), "{reply}");
    }
    let ids = kala.quarantined().await.into_iter().map(|h| h.id).collect();
    kala.add_user("admin", PASSWORD, "admin").await;
    kala.add_user("rita", PASSWORD, "reviewer").await;
    kala.add_user("audra", PASSWORD, "auditor").await;
    let web = kala.start_web().await;
    Setup {
        sink,
        kala,
        web,
        ids,
    }
}

impl Setup {
    /// The gateway's store, read through the library.
    async fn kala_store(&self) -> kala::store::Store {
        kala::store::Store::open(&self.kala.store_url)
            .await
            .unwrap()
    }
}

async fn logged_in(web: SocketAddr, user: &str) -> Browser {
    let mut browser = Browser::new(web);
    let form = browser.get("/login").await;
    assert_eq!(form.status, 200);
    let csrf = form.csrf();
    let r = browser
        .post(
            "/login",
            &[("csrf", &csrf), ("user", user), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 303, "{user} logs in: {}", r.body);
    assert_eq!(r.header("location"), Some("/quarantine"));
    browser
}

#[tokio::test(flavor = "multi_thread")]
async fn login_failures_are_limited_and_pages_need_a_session() {
    let s = setup().await;
    let mut browser = Browser::new(s.web);
    let r = browser.get("/quarantine").await;
    assert_eq!(r.status, 303, "no session: to the login page");
    assert_eq!(r.header("location"), Some("/login"));

    let form = browser.get("/login").await;
    for header in [
        "content-security-policy",
        "x-frame-options",
        "referrer-policy",
        "x-content-type-options",
    ] {
        assert!(form.header(header).is_some(), "{header} missing");
    }
    assert!(
        form.header("content-security-policy")
            .unwrap()
            .contains("default-src 'none'")
    );
    let csrf = form.csrf();

    // A login form posted without its cookie (from another site) is refused.
    let mut stranger = Browser::new(s.web);
    let r = stranger
        .post(
            "/login",
            &[("csrf", &csrf), ("user", "admin"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 403);

    // Each login page comes with a fresh form token (and its cookie).
    let mut csrf = csrf;
    for _ in 0..5 {
        let r = browser
            .post(
                "/login",
                &[
                    ("csrf", &csrf),
                    ("user", "admin"),
                    ("password", "wrong password"),
                ],
            )
            .await;
        assert_eq!(r.status, 401);
        assert!(
            r.body.contains("Wrong user name or password."),
            "{}",
            r.body
        );
        csrf = r.csrf();
    }
    // Past the limit even the right password is refused, without being checked.
    let r = browser
        .post(
            "/login",
            &[("csrf", &csrf), ("user", "admin"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 429);
    assert!(r.body.contains("Too many failed attempts"), "{}", r.body);

    // The address is locked out too: guessing other names from it does not help.
    let form = browser.get("/login").await;
    let r = browser
        .post(
            "/login",
            &[
                ("csrf", &form.csrf()),
                ("user", "rita"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, 429);
    let audit = s.kala.quarantined().await;
    assert_eq!(audit.len(), 2, "nothing changed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reviewer_filters_opens_and_releases_and_the_downstream_gets_it_byte_exact() {
    let s = setup().await;
    let mut browser = logged_in(s.web, "rita").await;
    let list = browser.get("/quarantine").await;
    assert!(list.body.contains("2 shown of 2 matching"), "{}", list.body);
    let list = browser.get("/quarantine?subject=invoice").await;
    assert!(list.body.contains("1 shown of 1 matching"), "{}", list.body);
    assert!(list.body.contains("Invoice March"));

    let id = &s.ids[0];
    let page = browser.get(&format!("/quarantine/{id}")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("KALA_MISSING_DATE"), "{}", page.body);
    assert!(page.body.contains("Please find the invoice."));

    // Without the form's token the action is refused and nothing happens.
    let r = browser
        .post(&format!("/quarantine/{id}"), &[("action", "release")])
        .await;
    assert_eq!(r.status, 403);
    assert!(s.sink.deliveries().is_empty());

    let r = browser
        .post(
            &format!("/quarantine/{id}"),
            &[("csrf", &page.csrf()), ("action", "release")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let held = s.kala.quarantined().await;
    let delivered = s.sink.wait_for(1).await;
    assert_eq!(delivered[0].data, held[0].raw, "released byte for byte");
    let page = browser.get(r.header("location").unwrap()).await;
    assert!(
        page.body.contains("Released: the mail server answered 250"),
        "{}",
        page.body
    );
    assert!(page.body.contains("Released"));

    // A reviewer cannot download raw messages or read the audit log.
    assert_eq!(
        browser
            .get(&format!("/quarantine/{}/raw", s.ids[1]))
            .await
            .status,
        403
    );
    assert_eq!(browser.get("/audit").await.status, 403);

    // The admin sees who did what.
    let mut admin = logged_in(s.web, "admin").await;
    let audit = admin.get("/audit").await;
    assert_eq!(audit.status, 200);
    assert!(
        audit.body.contains("rita") && audit.body.contains("release"),
        "{}",
        audit.body
    );
    let raw = admin.get(&format!("/quarantine/{}/raw", s.ids[1])).await;
    assert_eq!(raw.status, 200);
    assert!(
        raw.header("content-disposition")
            .unwrap()
            .starts_with("attachment")
    );
    let audit = admin.get("/audit").await;
    assert!(audit.body.contains("download"), "downloads are audited");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_auditor_reads_but_changes_nothing() {
    let s = setup().await;
    let mut browser = logged_in(s.web, "audra").await;
    let page = browser.get(&format!("/quarantine/{}", s.ids[0])).await;
    assert_eq!(page.status, 200);
    assert!(
        !page.body.contains("id=\"release\""),
        "no action buttons for an auditor"
    );
    let r = browser
        .post(
            &format!("/quarantine/{}", s.ids[0]),
            &[("csrf", &page.csrf()), ("action", "delete")],
        )
        .await;
    assert_eq!(r.status, 403);
    let r = browser
        .post(
            "/quarantine/action",
            &[
                ("csrf", &page.csrf()),
                ("action", "release"),
                ("id", &s.ids[0]),
            ],
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(browser.get("/audit").await.status, 200);
    assert!(s.sink.deliveries().is_empty());
    assert_eq!(s.kala.quarantined().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn bulk_delete_of_a_selection_and_release_of_a_search_result() {
    let s = setup().await;
    let mut browser = logged_in(s.web, "admin").await;
    let list = browser.get("/quarantine").await;
    let r = browser
        .post(
            "/quarantine/action",
            &[
                ("csrf", &list.csrf()),
                ("scope", "selected"),
                ("action", "delete"),
                ("id", &s.ids[0]),
                ("id", &s.ids[1]),
            ],
        )
        .await;
    assert_eq!(r.status, 303);
    let list = browser.get(r.header("location").unwrap()).await;
    assert!(list.body.contains("2 of 2 done."), "{}", list.body);
    assert!(list.body.contains("0 shown of 0 matching"), "{}", list.body);

    // Every message matching a search, however many pages: two new ones about reports.
    for subject in ["Report one", "Report two"] {
        let message = format!("From: a@sender.example\r\nSubject: {subject}\r\n\r\nbody\r\n");
        let reply = s
            .kala
            .client()
            .await
            .send_mail(
                "ana@sender.example",
                &["it@prokuroria.example"],
                message.as_bytes(),
            )
            .await;
        assert!(reply.starts_with("250 2.0.0"), "{reply}");
    }
    let list = browser.get("/quarantine?subject=report").await;
    assert!(list.body.contains("2 shown of 2 matching"), "{}", list.body);
    let r = browser
        .post(
            "/quarantine/action",
            &[
                ("csrf", &list.csrf()),
                ("scope", "matching"),
                ("search", "subject=report"),
                ("action", "release"),
            ],
        )
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(s.sink.wait_for(2).await.len(), 2, "both released");
    let list = browser.get(r.header("location").unwrap()).await;
    assert!(list.body.contains("2 of 2 done."), "{}", list.body);

    // Logout ends the session on the server too.
    let token = browser.cookies["kala_session"].clone();
    let r = browser.post("/logout", &[("csrf", &list.csrf())]).await;
    assert_eq!(r.status, 303);
    let mut replay = Browser::new(s.web);
    replay.cookies.insert("kala_session".into(), token);
    assert_eq!(
        replay.get("/quarantine").await.status,
        303,
        "the old cookie is dead"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_language_follows_the_browser_then_the_user_choice() {
    let s = setup().await;
    let mut browser = Browser::new(s.web);
    browser.accept_language = "sq-AL,sq;q=0.9,en;q=0.5".into();
    let form = browser.get("/login").await;
    assert!(
        form.body.contains("Fjalëkalimi"),
        "Albanian login: {}",
        form.body
    );
    assert!(form.body.contains("lang=\"sq\""));

    let mut browser = logged_in(s.web, "admin").await;
    let list = browser.get("/quarantine").await;
    assert!(list.body.contains("Held messages"));
    let r = browser
        .post("/language", &[("csrf", &list.csrf()), ("lang", "sr")])
        .await;
    assert_eq!(r.status, 303);
    let list = browser.get("/quarantine").await;
    assert!(
        list.body.contains("Zadržane poruke"),
        "Serbian: {}",
        list.body
    );
    let r = browser
        .post("/language", &[("csrf", &list.csrf()), ("lang", "sq")])
        .await;
    assert_eq!(r.status, 303);
    let page = browser.get(&format!("/quarantine/{}", s.ids[0])).await;
    assert!(
        page.body.contains("Pse u mbajt"),
        "Albanian message page: {}",
        page.body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_message_is_shown_inert() {
    let s = setup().await;
    let mut browser = logged_in(s.web, "admin").await;
    let page = browser.get(&format!("/quarantine/{}", s.ids[1])).await;
    assert_eq!(page.status, 200);
    let body = &page.body;
    assert!(
        !body.contains("<script>alert"),
        "a script from the message reached the page"
    );
    assert!(
        body.contains("&#60;script&#62;alert"),
        "shown as text: {body}"
    );
    assert!(
        !body.contains("tracker.example/p.gif\""),
        "no remote image in the page"
    );
    assert!(!body.contains("href=\"javascript:"), "no javascript: link");
    assert!(body.len() < 60_000 + 20_000, "the giant header is cut");
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'") && !csp.contains("script-src"));

    // The HTML view carries its own sandbox: no script runs and nothing remote loads even
    // when it is opened directly.
    let html = browser.get(&format!("/quarantine/{}/html", s.ids[1])).await;
    assert_eq!(html.status, 200);
    let csp = html.header("content-security-policy").unwrap();
    assert!(
        csp.starts_with("sandbox") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("http"), "{csp}");
    assert!(
        !html.body.contains("tracker.example") && !html.body.contains("<script"),
        "the HTML itself is cleaned: {}",
        html.body
    );
    assert!(html.body.contains("win"), "the text stays");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_json_api_takes_tokens_and_respects_roles() {
    let s = setup().await;
    let store = kala::store::Store::open(&s.kala.store_url).await.unwrap();
    let accounts = kala::web::auth::Accounts::new(store);
    let reviewer = accounts.add_token("rita", "script").await.unwrap();
    let auditor = accounts.add_token("audra", "report").await.unwrap();
    let mut client = Browser::new(s.web);

    let r = client.get("/api/quarantine").await;
    assert_eq!(r.status, 401);
    let bearer = |t: &str| format!("Bearer {t}");
    let r = client
        .request(
            "GET",
            "/api/quarantine",
            &[("Authorization", &bearer(&auditor))],
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let page: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(page["total"], 2);

    let path = format!("/api/quarantine/{}/release", s.ids[0]);
    let r = client
        .request("POST", &path, &[("Authorization", &bearer(&auditor))], None)
        .await;
    assert_eq!(r.status, 403);
    let r = client
        .request(
            "POST",
            &path,
            &[("Authorization", &bearer(&reviewer))],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let released: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(released["delivered"], true);
    assert_eq!(s.sink.wait_for(1).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_counts_the_last_day_and_checks_the_peers() {
    let s = setup().await;
    let mut browser = logged_in(s.web, "audra").await;
    let page = browser.get("/dashboard").await;
    assert_eq!(page.status, 200);
    let body = &page.body;
    let row = |label: &str| {
        let at = body
            .find(label)
            .unwrap_or_else(|| panic!("{label} missing: {body}"));
        body[at..(at + 120).min(body.len())].to_string()
    };
    assert!(
        row("<td>Quarantined</td>").contains(">2<"),
        "{}",
        row("<td>Quarantined</td>")
    );
    assert!(row("KALA_MISSING_DATE").contains(">2<"));
    assert!(row("<td>Spam</td>").contains(">2<"), "held spam");
    assert!(row("Mail server (downstream)").contains("answering"));
    assert!(row("ClamAV (clamd)").contains("disabled in the configuration"));
    s.sink.stop().await;
    let page = browser.get("/dashboard").await;
    assert!(
        page.body.contains("NOT answering"),
        "the downstream gone is shown: {}",
        page.body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn block_and_allow_lists_made_in_the_quarantine_apply_to_the_next_messages() {
    let s = setup().await;
    let mut browser = logged_in(s.web, "rita").await;
    // ana@sender.example sent the first held message: block her address.
    let page = browser.get(&format!("/quarantine/{}", s.ids[0])).await;
    let r = browser
        .post(
            &format!("/quarantine/{}", s.ids[0]),
            &[("csrf", &page.csrf()), ("action", "block-address")],
        )
        .await;
    assert_eq!(r.status, 303);
    let page = browser.get(r.header("location").unwrap()).await;
    assert!(page.body.contains("Added to the list"), "{}", page.body);
    let undated = b"From: a@sender.example\r\nSubject: again\r\n\r\nbody\r\n";
    let reply = s
        .kala
        .client()
        .await
        .send_mail("ana@sender.example", &["it@prokuroria.example"], undated)
        .await;
    assert!(
        reply.starts_with("550") && reply.contains("KALA_SENDER_BLOCKED"),
        "{reply}"
    );

    // The hostile message came from the same envelope sender's domain; allow the domain for
    // this recipient only: the block on the address still wins for ana...
    let page = browser.get(&format!("/quarantine/{}", s.ids[1])).await;
    let r = browser
        .post(
            &format!("/quarantine/{}", s.ids[1]),
            &[
                ("csrf", &page.csrf()),
                ("action", "allow-domain"),
                ("only_recipients", "1"),
            ],
        )
        .await;
    assert_eq!(r.status, 303);
    let reply = s
        .kala
        .client()
        .await
        .send_mail("ana@sender.example", &["it@prokuroria.example"], undated)
        .await;
    assert!(
        reply.starts_with("550"),
        "a block wins over an allow: {reply}"
    );
    // ...and anyone else at the domain now gets through to that recipient, undated or not.
    let reply = s
        .kala
        .client()
        .await
        .send_mail("bob@sender.example", &["it@prokuroria.example"], undated)
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    let delivered = s.sink.wait_for(1).await;
    let header = String::from_utf8_lossy(&delivered[0].data).to_string();
    assert!(header.contains("KALA_SENDER_ALLOWED"), "{header}");
    // Not for another recipient.
    let reply = s
        .kala
        .client()
        .await
        .send_mail("bob@sender.example", &["other@prokuroria.example"], undated)
        .await;
    assert!(
        reply.starts_with("250 2.0.0 Ok: queued"),
        "held as before: {reply}"
    );

    let mut admin = logged_in(s.web, "admin").await;
    let audit = admin.get("/audit").await;
    assert!(audit.body.contains("block-address") && audit.body.contains("allow-domain"));
}

#[tokio::test(flavor = "multi_thread")]
async fn over_tls_the_ui_uses_the_smtp_certificate_hsts_and_secure_cookies() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sink = Sink::start().await;
    let kala = Kala::start(sink.addr, &[("web", "tls = true")]).await;
    let web = kala.start_web().await;
    // The self-signed pair Kala made for STARTTLS, trusted for this test.
    let cert = kala.data_dir.path().join("tls/cert.pem");
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::pem::PemObject::pem_file_iter(&cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(web).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("kala.test").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .expect("a verified handshake");
    tls.write_all(b"GET /login HTTP/1.1\r\nHost: kala.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response).to_lowercase();
    assert!(response.starts_with("http/1.1 200"), "{response}");
    assert!(
        response.contains("strict-transport-security: max-age="),
        "{response}"
    );
    assert!(
        response.contains("set-cookie: kala_login=") && response.contains("; secure"),
        "{response}"
    );
    // Plain HTTP on the TLS port gets nothing useful.
    let mut stream = tokio::net::TcpStream::connect(web).await.unwrap();
    stream
        .write_all(b"GET /login HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut answer),
    )
    .await;
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_adds_users_in_the_ui_and_only_an_admin_can() {
    let s = setup().await;
    let mut reviewer = logged_in(s.web, "rita").await;
    assert_eq!(reviewer.get("/users").await.status, 403);

    let mut admin = logged_in(s.web, "admin").await;
    let page = admin.get("/users").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("rita") && page.body.contains("Auditor"));
    let r = admin
        .post(
            "/users",
            &[
                ("csrf", &page.csrf()),
                ("name", "helpdesk1"),
                ("password", "short"),
                ("role", "reviewer"),
            ],
        )
        .await;
    let page = admin.get(r.header("location").unwrap()).await;
    assert!(page.body.contains("Not added"), "{}", page.body);
    let r = admin
        .post(
            "/users",
            &[
                ("csrf", &page.csrf()),
                ("name", "helpdesk1"),
                ("password", PASSWORD),
                ("role", "reviewer"),
            ],
        )
        .await;
    let page = admin.get(r.header("location").unwrap()).await;
    assert!(page.body.contains("The user was added."), "{}", page.body);
    let mut newcomer = logged_in(s.web, "helpdesk1").await;
    assert_eq!(newcomer.get("/quarantine").await.status, 200);
    let audit = admin.get("/audit").await;
    assert!(audit.body.contains("user-add"), "user changes are audited");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_lists_page_adds_and_removes_entries_that_the_gateway_obeys() {
    let s = setup().await;
    let mut browser = logged_in(s.web, "rita").await;
    let page = browser.get("/lists").await;
    assert_eq!(page.status, 200);
    let r = browser
        .post(
            "/lists",
            &[
                ("csrf", &page.csrf()),
                ("kind", "block"),
                ("entry", "127.0.0.0/8"),
                ("recipient", "it@prokuroria.example"),
            ],
        )
        .await;
    assert_eq!(r.status, 303);
    let page = browser.get("/lists?result=added").await;
    assert!(page.body.contains("127.0.0.0/8"), "{}", page.body);
    let refused = browser
        .post(
            "/lists",
            &[
                ("csrf", &page.csrf()),
                ("kind", "allow"),
                ("entry", "not an entry"),
            ],
        )
        .await;
    assert_eq!(refused.header("location"), Some("/lists?result=refused"));

    // The gateway now blocks this client for that recipient (rejected: 20 reaches reject_score).
    let message = support::clean_message("after the block", "hello");
    let reply = s
        .kala
        .client()
        .await
        .send_mail("ana@sender.example", &["it@prokuroria.example"], &message)
        .await;
    assert!(reply.starts_with("550"), "{reply}");
    assert!(reply.contains("KALA_SENDER_BLOCKED"), "{reply}");

    // Removed again, from the page.
    let entries = s.kala_store().await.list_entries().await.unwrap();
    let id = entries
        .iter()
        .find(|e| e.sender == "127.0.0.0/8")
        .unwrap()
        .id;
    let r = browser
        .post(&format!("/lists/{id}/remove"), &[("csrf", &page.csrf())])
        .await;
    assert_eq!(r.header("location"), Some("/lists?result=removed"));
    assert!(
        s.kala_store()
            .await
            .list_entries()
            .await
            .unwrap()
            .is_empty()
    );
    let audit: Vec<String> = s
        .kala_store()
        .await
        .audit_log(None, 10, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(audit.contains(&"block-add".to_string()), "{audit:?}");
    assert!(audit.contains(&"block-remove".to_string()), "{audit:?}");

    // An auditor sees the page but may not change it.
    let mut auditor = logged_in(s.web, "audra").await;
    let page = auditor.get("/lists").await;
    assert!(!page.body.contains("id=\"add-entry\""));
    let r = auditor
        .post(
            "/lists",
            &[
                ("csrf", &page.csrf()),
                ("kind", "allow"),
                ("entry", "@x.example"),
            ],
        )
        .await;
    assert_eq!(r.status, 403);
}

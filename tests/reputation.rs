//! The reputation layer over real sockets: Kala, a recording downstream, and a DNS server on
//! 127.0.0.1 answering from `fixtures/dns/` (no network beyond loopback).

mod support;
mod support_dns;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use support::{Client, Kala, Sink, clean_message, split_added_headers};
use support_dns::{DnsServer, SilentDns};

const LISTS: &str = r#"lists = [
  { name = "BL", zone = "bl.test", weights = { "127.0.0.2" = 3.0, "*" = 1.0 } },
  { name = "BL2", zone = "bl2.test", weights = { "127.0.0.2" = 2.0 } },
]"#;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Sends one clean message from `source`; returns the symbols header the downstream got.
async fn symbols_for(kala: &Kala, sink: &Sink, source: &str) -> String {
    let before = sink.deliveries().len();
    let (mut client, greeting) = Client::connect_from(kala.addr, ip(source)).await;
    assert!(greeting.starts_with("220 "), "{source}: {greeting}");
    let reply = client
        .send_mail(
            "ana@sender.example",
            &["it@prokuroria.example"],
            &clean_message("reputation", "hello"),
        )
        .await;
    assert!(reply.starts_with("250"), "{source}: {reply}");
    let delivered = sink.wait_for(before + 1).await;
    let (added, _) = split_added_headers(&delivered[before].data);
    added
        .lines()
        .skip_while(|l| !l.starts_with("X-Kala-Symbols:"))
        .take_while(|l| l.starts_with("X-Kala-Symbols:") || l.starts_with('\t'))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn kala_with_lists(sink: &Sink, dns: std::net::SocketAddr, extra: &[(&str, &str)]) -> Kala {
    let servers = format!("servers = [\"{dns}\"]");
    let mut settings = vec![("dns", servers.as_str()), ("dnsbl", LISTS)];
    settings.extend_from_slice(extra);
    Kala::start(sink.addr, &settings).await
}

#[tokio::test]
async fn listings_add_their_weights_over_lists_and_unlisted_clients_get_none() {
    let dns = DnsServer::start(&[]).await;
    let sink = Sink::start().await;
    let kala = kala_with_lists(&sink, dns.addr, &[]).await;

    // 127.0.0.2 is in both lists: 3 + 2.
    let listed = symbols_for(&kala, &sink, "127.0.0.2").await;
    assert!(listed.contains("RBL_BL(3.00)"), "{listed}");
    assert!(listed.contains("RBL_BL2(2.00)"), "{listed}");

    // 127.0.0.3 is in bl.test only, with two answers: 127.0.0.2 (3) and another (the "*", 1).
    let two_codes = symbols_for(&kala, &sink, "127.0.0.3").await;
    assert!(two_codes.contains("RBL_BL(4.00)"), "{two_codes}");
    assert!(!two_codes.contains("RBL_BL2"), "{two_codes}");

    let clean = symbols_for(&kala, &sink, "127.0.0.1").await;
    assert!(!clean.contains("RBL_"), "{clean}");
}

#[tokio::test]
async fn a_client_whose_weights_reach_the_threshold_is_refused_before_the_greeting() {
    let dns = DnsServer::start(&[]).await;
    let sink = Sink::start().await;
    let kala = kala_with_lists(&sink, dns.addr, &[("dnsbl", "reject_at = 5.0")]).await;

    let (mut client, greeting) = Client::connect_from(kala.addr, ip("127.0.0.2")).await;
    assert!(greeting.starts_with("554 5.7.1"), "{greeting}");
    // A generic text: neither the list nor the weights leak.
    assert!(!greeting.contains("bl.test"), "{greeting}");
    assert_eq!(client.reply().await, "<closed>");

    // 4 is under 5: this one may send, with its symbol.
    let below = symbols_for(&kala, &sink, "127.0.0.3").await;
    assert!(below.contains("RBL_BL(4.00)"), "{below}");
    assert_eq!(sink.deliveries().len(), 1);
}

#[tokio::test]
async fn answers_are_cached_for_their_ttl() {
    let dns = DnsServer::start(&[]).await;
    let sink = Sink::start().await;
    let kala = kala_with_lists(&sink, dns.addr, &[]).await;

    symbols_for(&kala, &sink, "127.0.0.2").await;
    let after_first = dns.queries();
    assert_eq!(after_first, 2, "one query per list");
    let again = symbols_for(&kala, &sink, "127.0.0.2").await;
    assert!(again.contains("RBL_BL(3.00)"), "{again}");
    assert_eq!(
        dns.queries(),
        after_first,
        "the second connection was answered from the cache"
    );
}

#[tokio::test]
async fn a_blocklist_refusing_our_resolver_is_no_listing_and_raises_a_warning() {
    let dns = DnsServer::start(&[]).await;
    let sink = Sink::start().await;
    let kala = kala_with_lists(&sink, dns.addr, &[("dnsbl", "reject_at = 1.0")]).await;

    // bl.test answers 127.255.255.254 for 127.0.0.4: "your resolver may not ask".
    let symbols = symbols_for(&kala, &sink, "127.0.0.4").await;
    assert!(symbols.contains("RBL_BL_REFUSED(0.00)"), "{symbols}");
    assert!(!symbols.contains("RBL_BL("), "{symbols}");
    let warnings = kala.server.as_ref().unwrap().shared.health.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].text.contains("bl.test"), "{warnings:?}");

    // And the dashboard says so.
    kala.add_user("admin", "a long enough password", "admin")
        .await;
    let web = kala.start_web().await;
    let mut browser = support::http::Browser::new(web);
    let form = browser.get("/login").await;
    let csrf = form.csrf();
    browser
        .post(
            "/login",
            &[
                ("csrf", &csrf),
                ("user", "admin"),
                ("password", "a long enough password"),
            ],
        )
        .await;
    let dashboard = browser.get("/dashboard").await;
    assert!(
        dashboard.body.contains("id=\"health-warning\""),
        "{}",
        dashboard.body
    );
    assert!(dashboard.body.contains("bl.test"), "{}", dashboard.body);
}

#[tokio::test]
async fn a_clients_host_name_counts_only_when_its_address_confirms_it() {
    let dns = DnsServer::start(&[]).await;
    let settings =
        kala::config::Settings::parse(&format!("[dns]\nservers = [\"{}\"]\n", dns.addr), "test")
            .unwrap();
    let resolver = kala::dns::Dns::new(&settings.dns).unwrap();
    let name = |ip: &str| resolver.client_name(ip.parse().unwrap());
    assert_eq!(
        name("192.0.2.44").await.as_deref(),
        Some("dsl-192-0-2-44.pool.rdns.test")
    );
    // The same client seen through an IPv6 socket.
    assert_eq!(
        name("::ffff:192.0.2.44").await.as_deref(),
        Some("dsl-192-0-2-44.pool.rdns.test")
    );
    // The PTR names a host whose A record is another address: anyone can write that.
    assert_eq!(name("192.0.2.45").await, None);
    // No PTR record at all.
    assert_eq!(name("192.0.2.46").await, None);
}

#[tokio::test]
async fn a_dns_server_that_never_answers_delays_mail_only_up_to_the_timeout() {
    let silent = SilentDns::start().await;
    let sink = Sink::start().await;
    let kala = kala_with_lists(&sink, silent.addr, &[("dns", "timeout = \"500ms\"")]).await;

    let started = Instant::now();
    let symbols = symbols_for(&kala, &sink, "127.0.0.2").await;
    let took = started.elapsed();
    assert!(symbols.contains("RBL_BL_UNCHECKED(0.00)"), "{symbols}");
    assert!(symbols.contains("RBL_BL2_UNCHECKED(0.00)"), "{symbols}");
    // Both lists are asked at once: one timeout, not two, plus the SMTP dialogue.
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[tokio::test]
async fn ipv6_clients_are_looked_up_by_nibbles() {
    use kala::checks::{Check, Context, CpuSlots, Dnsbl, Phase};
    let dns = DnsServer::start(&[]).await;
    let settings = kala::config::Settings::parse(
        &format!("[dns]\nservers = [\"{}\"]\n[dnsbl]\n{LISTS}\n", dns.addr),
        "test",
    )
    .unwrap();
    let health = std::sync::Arc::new(kala::health::Health::default());
    let check = Dnsbl::new(
        kala::dns::Dns::new(&settings.dns).unwrap(),
        settings.dnsbl.clone(),
        health,
    );
    let mut envelope = kala::envelope::Envelope::offline("a@b.example", vec![]);
    envelope.client_ip = ip("2001:db8::2");
    let cpu = CpuSlots::new(1);
    let ctx = Context {
        phase: Phase::Connect,
        envelope: &envelope,
        message: None,
        cpu: &cpu,
    };
    let outcome = check.check(&ctx).await.unwrap();
    let names: Vec<String> = outcome.symbols.iter().map(|s| s.to_string()).collect();
    assert_eq!(names, ["RBL_BL(3.00)"]);
}

// ---------------------------------------------------------------------------------------------
// SPF, DKIM, DMARC

/// Kala with SPF/DKIM/DMARC on, asking the test DNS server.
async fn kala_with_auth(sink: &Sink, dns: &DnsServer) -> Kala {
    let servers = format!("servers = [\"{}\"]", dns.addr);
    Kala::start(
        sink.addr,
        &[("dns", servers.as_str()), ("auth", "enabled = true")],
    )
    .await
}

fn message_from(from: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: it@prokuroria.example\r\nSubject: auth\r\nDate: Mon, 2 Nov 2026 10:00:00 +0100\r\nMessage-ID: <auth@sender.test>\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// Sends `message` from 127.0.0.1 with `sender`; returns the final reply and, when relayed,
/// the header lines Kala added.
async fn send_as(kala: &Kala, sink: &Sink, sender: &str, message: &[u8]) -> (String, String) {
    let before = sink.deliveries().len();
    let mut client = kala.client().await;
    let reply = client
        .send_mail(sender, &["it@prokuroria.example"], message)
        .await;
    if !reply.starts_with("250") {
        return (reply, String::new());
    }
    let delivered = sink.wait_for(before + 1).await;
    let (added, _) = split_added_headers(&delivered[before].data);
    (reply, added)
}

/// [`send_as`] with a plain message whose `From:` is the envelope sender.
async fn send_from(kala: &Kala, sink: &Sink, sender: &str, body: &str) -> (String, String) {
    send_as(kala, sink, sender, &message_from(sender, body)).await
}

#[tokio::test]
async fn spf_pass_fail_and_softfail_become_symbols_and_a_results_header() {
    let dns = DnsServer::start(&[]).await;
    let sink = Sink::start().await;
    let kala = kala_with_auth(&sink, &dns).await;

    let (_, pass) = send_from(&kala, &sink, "a@pass.sender.test", "x").await;
    assert!(pass.contains("SPF_PASS"), "{pass}");
    assert!(
        pass.contains("Authentication-Results: kala.test;"),
        "{pass}"
    );
    assert!(pass.contains("spf=pass"), "{pass}");

    let (_, fail) = send_from(&kala, &sink, "a@fail.sender.test", "x").await;
    assert!(fail.contains("SPF_FAIL(2.00)"), "{fail}");
    assert!(fail.contains("spf=fail"), "{fail}");

    let (_, soft) = send_from(&kala, &sink, "a@soft.sender.test", "x").await;
    assert!(soft.contains("SPF_SOFTFAIL"), "{soft}");
    assert!(soft.contains("spf=softfail"), "{soft}");
}

#[tokio::test]
async fn dmarc_reject_policy_is_honoured_by_default() {
    let dns = DnsServer::start(&[]).await;
    let sink = Sink::start().await;
    let kala = kala_with_auth(&sink, &dns).await;
    // SPF fails for strict.sender.test, there is no signature, and its policy says reject.
    let (reply, _) = send_from(&kala, &sink, "a@strict.sender.test", "x").await;
    assert!(reply.starts_with("550"), "{reply}");
    assert!(reply.contains("DMARC_REJECT_POLICY"), "{reply}");
    assert!(sink.deliveries().is_empty());
}

#[tokio::test]
async fn dmarc_reject_action_is_configurable() {
    let dns = DnsServer::start(&[]).await;
    let sink = Sink::start().await;
    let servers = format!("servers = [\"{}\"]", dns.addr);
    let kala = Kala::start(
        sink.addr,
        &[
            ("dns", servers.as_str()),
            ("auth", "enabled = true"),
            ("auth", "dmarc_reject_action = \"quarantine\""),
        ],
    )
    .await;
    let reply = kala
        .client()
        .await
        .send_mail(
            "a@strict.sender.test",
            &["it@prokuroria.example"],
            &message_from("a@strict.sender.test", "x"),
        )
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    let held = kala.quarantined().await;
    assert_eq!(held.len(), 1);
    assert!(
        held[0].record.to_string().contains("DMARC_REJECT_POLICY"),
        "{}",
        held[0].record
    );
}

/// A DKIM key made for this test and its DNS record at `selector._domainkey.NAME` in
/// sender.test.
fn dkim_key_at(name: &str) -> (Vec<u8>, String) {
    let (pkcs8, record) = dkim_key();
    (
        pkcs8,
        record.replace("._domainkey.signed ", &format!("._domainkey.{name} ")),
    )
}

/// A DKIM key made for this test, its DNS record, and a signer.
fn dkim_key() -> (Vec<u8>, String) {
    use base64::Engine;
    use ring::signature::KeyPair;
    let pkcs8 = mail_auth::common::crypto::Ed25519Key::generate_pkcs8().unwrap();
    let public = ring::signature::Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap();
    let p = base64::engine::general_purpose::STANDARD.encode(public.public_key().as_ref());
    (
        pkcs8,
        format!("test._domainkey.signed IN TXT \"v=DKIM1; k=ed25519; p={p}\""),
    )
}

fn signed(pkcs8: &[u8], message: &[u8]) -> Vec<u8> {
    use mail_auth::common::headers::HeaderWriter;
    let key = mail_auth::common::crypto::Ed25519Key::from_pkcs8_der(pkcs8).unwrap();
    let signature = mail_auth::dkim::DkimSigner::from_key(key)
        .domain("signed.sender.test")
        .selector("test")
        .headers(["From", "To", "Subject", "Date", "Message-ID"])
        .sign(message)
        .unwrap();
    let mut out = signature.to_header().into_bytes();
    out.extend_from_slice(message);
    out
}

#[tokio::test]
async fn a_dkim_signature_verifies_and_fails_after_the_body_changes() {
    let (pkcs8, record) = dkim_key();
    let dns = DnsServer::start(&[("sender.test", record)]).await;
    let sink = Sink::start().await;
    let servers = format!("servers = [\"{}\"]", dns.addr);
    // DMARC failures only score here, so the tampered copy is relayed and its symbols seen.
    let kala = Kala::start(
        sink.addr,
        &[
            ("dns", servers.as_str()),
            ("auth", "enabled = true"),
            ("auth", "dmarc_reject_action = \"accept\""),
        ],
    )
    .await;

    // SPF fails for signed.sender.test from 127.0.0.1, but the aligned signature carries DMARC.
    let good = signed(
        &pkcs8,
        &message_from("a@signed.sender.test", "the original body"),
    );
    let (reply, added) = send_as(&kala, &sink, "a@signed.sender.test", &good).await;
    assert!(reply.starts_with("250"), "{reply}");
    assert!(added.contains("DKIM_VALID"), "{added}");
    assert!(added.contains("DMARC_PASS"), "{added}");
    assert!(added.contains("dkim=pass"), "{added}");
    assert!(added.contains("dmarc=pass"), "{added}");

    // The same signature over a changed body: invalid, and DMARC (p=reject) now fails.
    let text = String::from_utf8(good).unwrap();
    let tampered = text.replace("the original body", "a changed body");
    let (reply, added) = send_as(&kala, &sink, "a@signed.sender.test", tampered.as_bytes()).await;
    assert!(reply.starts_with("250"), "{reply}");
    assert!(added.contains("DKIM_INVALID"), "{added}");
    assert!(added.contains("DMARC_REJECT_POLICY"), "{added}");
    assert!(added.contains("dmarc=fail"), "{added}");
}

// ---------------------------------------------------------------------------------------------
// Connection behaviour

/// Connects and writes `early` before waiting for anything; returns the client and the
/// first reply (the greeting or a refusal).
async fn connect_talking(kala: &Kala, early: &[u8]) -> (Client<tokio::net::TcpStream>, String) {
    let stream = tokio::net::TcpStream::connect(kala.addr).await.unwrap();
    let mut client = Client {
        stream: tokio::io::BufReader::new(stream),
    };
    client.send(early).await;
    let first = client.reply().await;
    (client, first)
}

#[tokio::test]
async fn a_client_that_talks_before_the_greeting_is_scored() {
    let sink = Sink::start().await;
    let kala = Kala::start(sink.addr, &[("smtp", "greet_delay = \"300ms\"")]).await;

    let (mut bot, greeting) = connect_talking(&kala, b"EHLO bot.example\r\n").await;
    assert!(greeting.starts_with("220 "), "{greeting}");
    // Its early EHLO is answered like a pipelined command.
    let ehlo = bot.reply().await;
    assert!(ehlo.starts_with("250"), "{ehlo}");
    bot.expect("MAIL FROM:<bot@sender.example>", "250").await;
    bot.expect("RCPT TO:<it@prokuroria.example>", "250").await;
    bot.expect("DATA", "354").await;
    bot.send(&support::dot_stuff(&clean_message("early", "hi")))
        .await;
    bot.expect(".", "250").await;
    let (added, _) = split_added_headers(&sink.wait_for(1).await[0].data);
    assert!(added.contains("KALA_PREGREET(3.00)"), "{added}");

    // A client that waits for the greeting is not.
    let polite = symbols_for(&kala, &sink, "127.0.0.1").await;
    assert!(!polite.contains("KALA_PREGREET"), "{polite}");
}

#[tokio::test]
async fn a_pregreeting_client_can_be_refused() {
    let sink = Sink::start().await;
    let kala = Kala::start(
        sink.addr,
        &[
            ("smtp", "greet_delay = \"300ms\""),
            ("smtp", "pregreet_reject = true"),
        ],
    )
    .await;
    let (mut bot, first) = connect_talking(&kala, b"EHLO bot.example\r\n").await;
    assert!(first.starts_with("554 5.5.1"), "{first}");
    assert_eq!(bot.reply().await, "<closed>");
    // A client that waits is greeted after the delay.
    let (_, greeting) = Client::connect_from(kala.addr, ip("127.0.0.1")).await;
    assert!(greeting.starts_with("220 "), "{greeting}");
}

#[tokio::test]
async fn a_helo_claiming_to_be_the_gateway_is_scored_or_refused() {
    let sink = Sink::start().await;
    let kala = Kala::start(sink.addr, &[]).await;
    let mut client = kala.client().await;
    client.expect("EHLO kala.test", "250").await;
    client.expect("MAIL FROM:<a@sender.example>", "250").await;
    client
        .expect("RCPT TO:<it@prokuroria.example>", "250")
        .await;
    client.expect("DATA", "354").await;
    client
        .send(&support::dot_stuff(&clean_message("forged helo", "hi")))
        .await;
    client.expect(".", "250").await;
    let (added, _) = split_added_headers(&sink.wait_for(1).await[0].data);
    assert!(added.contains("KALA_HELO_FORGED(3.00)"), "{added}");

    let strict = Kala::start(
        sink.addr,
        &[("smtp", "helo_reject = [\"forged\", \"bare_ip\"]")],
    )
    .await;
    let mut client = strict.client().await;
    client.expect("EHLO kala.test", "554 5.7.1").await;
    client.expect("EHLO 192.0.2.7", "554 5.7.1").await;
    // A proper name still works on the same connection.
    client.expect("EHLO mail.sender.example", "250").await;
}

// ---------------------------------------------------------------------------------------------
// Domain blocklists

const DBL: &str = r#"lists = [
  { name = "DBL", zone = "dbl.test", weights = { "127.0.1.2" = 4.0, "127.0.1.4" = 6.0 } },
]"#;

#[tokio::test]
async fn linked_domains_are_looked_up_by_their_registrable_domain() {
    let dns = DnsServer::start(&[]).await;
    let sink = Sink::start().await;
    let servers = format!("servers = [\"{}\"]", dns.addr);
    let kala = Kala::start(sink.addr, &[("dns", servers.as_str()), ("uribl", DBL)]).await;

    let body = "Offer: http://www.deals.spam.test/buy and https://login.phish.test/x and \
                http://192.0.2.9/ and http://fine.example.org/";
    let (reply, added) = send_from(&kala, &sink, "a@pass.sender.test", body).await;
    assert!(reply.starts_with("250"), "{reply}");
    // The heaviest listing scores; every listed domain is named.
    assert!(added.contains("URIBL_DBL(6.00)"), "{added}");

    let (_, clean) = send_from(
        &kala,
        &sink,
        "a@pass.sender.test",
        "see http://fine.example.org/",
    )
    .await;
    assert!(!clean.contains("URIBL_"), "{clean}");
}

#[tokio::test]
async fn domain_lookups_per_message_are_capped() {
    let dns = DnsServer::start(&[]).await;
    let sink = Sink::start().await;
    let servers = format!("servers = [\"{}\"]", dns.addr);
    let kala = Kala::start(
        sink.addr,
        &[
            ("dns", servers.as_str()),
            ("uribl", DBL),
            ("uribl", "max_domains = 2"),
        ],
    )
    .await;
    let body = "http://one.example.org/ http://two.example.net/ http://spam.test/";
    let (_, added) = send_from(&kala, &sink, "a@pass.sender.test", body).await;
    // The sender's domain and one.example.org fill the cap: spam.test is never asked.
    assert!(added.contains("URIBL_CAPPED"), "{added}");
    assert!(!added.contains("URIBL_DBL("), "{added}");
    assert!(dns.queries() <= 2, "{} queries", dns.queries());
}

// ---------------------------------------------------------------------------------------------
// Allow and block lists from the configuration

#[tokio::test]
async fn configured_lists_match_domains_and_client_networks_and_block_wins() {
    let sink = Sink::start().await;
    let kala = Kala::start(
        sink.addr,
        &[
            ("lists", "allow = [\"127.0.0.0/8\"]"),
            ("lists", "block = [\"@spammer.example\"]"),
        ],
    )
    .await;
    // Any sender from the allowed network...
    let (reply, added) = send_from(&kala, &sink, "ana@sender.example", "x").await;
    assert!(reply.starts_with("250"), "{reply}");
    assert!(added.contains("KALA_SENDER_ALLOWED(-20.00)"), "{added}");
    // ...but a blocked domain (a subdomain of it too) from that network is blocked.
    let (reply, _) = send_from(&kala, &sink, "x@mail.spammer.example", "x").await;
    assert!(reply.starts_with("550"), "{reply}");
    assert!(reply.contains("KALA_SENDER_BLOCKED"), "{reply}");

    let error = kala::config::Settings::parse("[lists]\nallow = [\"nonsense\"]\n", "kala.toml")
        .unwrap_err();
    assert_eq!(error.key, "lists.allow", "{error}");
}

// ---------------------------------------------------------------------------------------------
// Bloom-filtered feeds

#[tokio::test]
async fn feed_files_catch_hosts_domains_and_attachment_hashes_and_reload_on_change() {
    let feeds = tempfile::tempdir().unwrap();
    let payload = b"MZ pretend this is a known bad program";
    let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, payload));
    std::fs::write(
        feeds.path().join("phish.hosts"),
        "# phishing hosts\nevil.example\n",
    )
    .unwrap();
    std::fs::write(feeds.path().join("malware.sha256"), format!("{digest}\n")).unwrap();
    std::fs::write(feeds.path().join("spam.domains"), "spammer.example\n").unwrap();
    let sink = Sink::start().await;
    let dir = format!("dir = {:?}", feeds.path().display().to_string());
    let kala = Kala::start(
        sink.addr,
        &[
            ("feeds", dir.as_str()),
            ("feeds", "reload_every = \"1s\""),
            ("policy", "quarantine_score = 100\nreject_score = 200"),
        ],
    )
    .await;

    let (_, added) = send_from(
        &kala,
        &sink,
        "a@ok.example",
        "login at https://www.evil.example/x",
    )
    .await;
    assert!(added.contains("KALA_FEED_PHISH(6.00)"), "{added}");
    let attached = support::with_attachment("invoice", "invoice.exe", payload);
    let (_, added) = send_as(&kala, &sink, "a@ok.example", &attached).await;
    assert!(added.contains("KALA_FEED_MALWARE(6.00)"), "{added}");
    let (_, added) = send_from(&kala, &sink, "x@mail.spammer.example", "hi").await;
    assert!(added.contains("KALA_FEED_SPAM(6.00)"), "{added}");
    let (_, clean) = send_from(&kala, &sink, "a@ok.example", "see https://fine.example/").await;
    assert!(!clean.contains("KALA_FEED"), "{clean}");

    // A host added to the file is caught once the watcher has reloaded it.
    std::fs::write(
        feeds.path().join("phish.hosts"),
        "evil.example\nfine.example\n",
    )
    .unwrap();
    let later = std::time::SystemTime::now() + Duration::from_secs(2);
    std::fs::File::options()
        .write(true)
        .open(feeds.path().join("phish.hosts"))
        .unwrap()
        .set_modified(later)
        .unwrap();
    let started = Instant::now();
    loop {
        let (_, added) = send_from(&kala, &sink, "a@ok.example", "see https://fine.example/").await;
        if added.contains("KALA_FEED_PHISH") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the changed feed was not reloaded: {added}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `message` as a forwarder at fwd.sender.test passes it on: with an ARC set sealed by its key.
fn arc_sealed(pkcs8: &[u8], message: &[u8]) -> Vec<u8> {
    use mail_auth::common::headers::HeaderWriter;
    let key = mail_auth::common::crypto::Ed25519Key::from_pkcs8_der(pkcs8).unwrap();
    let parsed = mail_auth::AuthenticatedMessage::parse(message).unwrap();
    let results = mail_auth::AuthenticationResults::new("fwd.sender.test");
    let set = mail_auth::arc::ArcSealer::from_key(key)
        .domain("fwd.sender.test")
        .selector("test")
        .headers(["From", "To", "Subject", "Date", "Message-ID"])
        .seal(&parsed, &results, &mail_auth::ArcOutput::default())
        .unwrap();
    let mut out = set.to_header().into_bytes();
    out.extend_from_slice(results.to_header().as_bytes());
    out.extend_from_slice(message);
    out
}

#[tokio::test]
async fn an_arc_chain_verifies_and_fails_after_the_body_changes() {
    let (pkcs8, record) = dkim_key_at("fwd");
    let dns = DnsServer::start(&[("sender.test", record)]).await;
    let sink = Sink::start().await;
    let kala = kala_with_auth(&sink, &dns).await;

    let sealed = arc_sealed(
        &pkcs8,
        &message_from("a@pass.sender.test", "forwarded body"),
    );
    let (reply, added) = send_as(&kala, &sink, "a@pass.sender.test", &sealed).await;
    assert!(reply.starts_with("250"), "{reply}");
    assert!(added.contains("ARC_VALID"), "{added}");
    assert!(added.contains("arc=pass"), "{added}");

    let tampered = String::from_utf8(sealed)
        .unwrap()
        .replace("forwarded body", "changed body");
    let (_, added) = send_as(&kala, &sink, "a@pass.sender.test", tampered.as_bytes()).await;
    assert!(added.contains("ARC_INVALID"), "{added}");
}

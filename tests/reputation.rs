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

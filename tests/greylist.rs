//! Greylisting and rate limits through a real SMTP client, with the state in the embedded
//! store and in a real Redis (a private `redis-server` the test starts).

mod support;
mod support_redis;

use std::time::Duration;

use support::{Kala, Sink, clean_message};
use support_redis::Redis;

/// Kala greylisting with a 1 s delay; `extra` adds settings (such as `state.redis`).
async fn greylisting(sink: &Sink, extra: &[(&str, &str)]) -> Kala {
    let mut settings = vec![
        ("greylist", "enabled = true"),
        ("greylist", "delay = \"1s\""),
        ("greylist", "retry_window = \"1h\""),
        // No DNS here: the SPF exemption is tested elsewhere.
        ("greylist", "skip_spf_pass = false"),
    ];
    settings.extend_from_slice(extra);
    Kala::start(sink.addr, &settings).await
}

/// MAIL and RCPT on a fresh connection; returns the RCPT reply.
async fn rcpt_reply(kala: &Kala, sender: &str, recipient: &str) -> String {
    let mut client = kala.client().await;
    client.expect("EHLO mta.sender.example", "250").await;
    client.expect(&format!("MAIL FROM:<{sender}>"), "250").await;
    client.cmd(&format!("RCPT TO:<{recipient}>")).await
}

async fn first_attempt_is_deferred_and_a_retry_after_the_delay_passes(kala: &Kala, sink: &Sink) {
    let first = rcpt_reply(kala, "ana@sender.example", "it@prokuroria.example").await;
    assert!(first.starts_with("451 4.7.1"), "{first}");
    // Too early: still deferred.
    let early = rcpt_reply(kala, "ana@sender.example", "it@prokuroria.example").await;
    assert!(early.starts_with("451 4.7.1"), "{early}");

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut client = kala.client().await;
    let reply = client
        .send_mail(
            "ana@sender.example",
            &["it@prokuroria.example"],
            &clean_message("after greylisting", "hello"),
        )
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    let delivered = sink.wait_for(1).await;
    let text = String::from_utf8_lossy(&delivered[0].data);
    assert!(text.contains("KALA_GREYLIST_PASSED"), "{text}");

    // The client's network retried once: another sender and recipient pass at once.
    let other = rcpt_reply(kala, "boss@other.example", "helpdesk@prokuroria.example").await;
    assert!(other.starts_with("250"), "{other}");
}

#[tokio::test]
async fn greylisting_in_the_embedded_store() {
    let sink = Sink::start().await;
    let kala = greylisting(&sink, &[]).await;
    first_attempt_is_deferred_and_a_retry_after_the_delay_passes(&kala, &sink).await;
}

#[tokio::test]
async fn greylisting_in_redis() {
    let redis = Redis::start();
    let sink = Sink::start().await;
    let url = format!("redis = \"{}\"", redis.url);
    let kala = greylisting(&sink, &[("state", url.as_str())]).await;
    first_attempt_is_deferred_and_a_retry_after_the_delay_passes(&kala, &sink).await;

    // A second gateway on the same Redis knows the client already.
    let sink2 = Sink::start().await;
    let second = greylisting(&sink2, &[("state", url.as_str())]).await;
    let reply = rcpt_reply(&second, "new@third.example", "it@prokuroria.example").await;
    assert!(reply.starts_with("250"), "{reply}");
}

#[tokio::test]
async fn auto_allow_can_be_turned_off() {
    let sink = Sink::start().await;
    let kala = greylisting(&sink, &[("greylist", "auto_allow = false")]).await;
    assert!(
        rcpt_reply(&kala, "a@sender.example", "it@prokuroria.example")
            .await
            .starts_with("451")
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(
        rcpt_reply(&kala, "a@sender.example", "it@prokuroria.example")
            .await
            .starts_with("250")
    );
    // Without auto-allow, a new triplet from the same client is deferred again.
    let other = rcpt_reply(&kala, "b@sender.example", "it@prokuroria.example").await;
    assert!(other.starts_with("451"), "{other}");
}

#[tokio::test]
async fn allow_listed_senders_and_internal_networks_skip_greylisting() {
    let sink = Sink::start().await;
    let kala = greylisting(&sink, &[]).await;
    let store = kala::store::Store::open(&kala.store_url).await.unwrap();
    store
        .list_add(
            kala::store::lists::ListKind::Allow,
            "@friend.example",
            "",
            "test",
        )
        .await
        .unwrap();
    let reply = rcpt_reply(&kala, "ana@friend.example", "it@prokuroria.example").await;
    assert!(reply.starts_with("250"), "{reply}");

    // Loopback is internal when the admin says so.
    let internal = greylisting(&sink, &[("greylist", "skip_networks = [\"127.0.0.0/8\"]")]).await;
    let reply = rcpt_reply(&internal, "ana@sender.example", "it@prokuroria.example").await;
    assert!(reply.starts_with("250"), "{reply}");
}

async fn rate_limited(kala: &Kala) {
    let mut client = kala.client().await;
    client.expect("EHLO mta.sender.example", "250").await;
    for _ in 0..3 {
        client
            .expect("MAIL FROM:<bulk@sender.example>", "250")
            .await;
        client.expect("RSET", "250").await;
    }
    let fourth = client.cmd("MAIL FROM:<bulk@sender.example>").await;
    assert!(fourth.starts_with("450 4.7.1"), "{fourth}");
    // Another sender from the same client still may (the sender limit is what was hit).
    client
        .expect("MAIL FROM:<other@sender.example>", "250")
        .await;
}

#[tokio::test]
async fn a_sender_over_its_rate_gets_450() {
    let sink = Sink::start().await;
    let kala = Kala::start(
        sink.addr,
        &[("ratelimit", "sender = { messages = 3, per = \"1h\" }")],
    )
    .await;
    rate_limited(&kala).await;
}

#[tokio::test]
async fn rate_counters_in_redis_are_shared_by_gateways() {
    let redis = Redis::start();
    let sink = Sink::start().await;
    let url = format!("redis = \"{}\"", redis.url);
    let settings = [
        ("ratelimit", "client = { messages = 2, per = \"1h\" }"),
        ("state", url.as_str()),
    ];
    let one = Kala::start(sink.addr, &settings).await;
    let two = Kala::start(sink.addr, &settings).await;
    let mut a = one.client().await;
    a.expect("EHLO mta.sender.example", "250").await;
    a.expect("MAIL FROM:<x@sender.example>", "250").await;
    let mut b = two.client().await;
    b.expect("EHLO mta.sender.example", "250").await;
    b.expect("MAIL FROM:<y@sender.example>", "250").await;
    // The third message from this client, counted across both gateways.
    a.expect("RSET", "250").await;
    a.expect("MAIL FROM:<z@sender.example>", "450 4.7.1").await;
}

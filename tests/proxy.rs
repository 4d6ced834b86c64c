//! The inline proxy end to end: a real SMTP client → Kala → a recording downstream, all on
//! 127.0.0.1 sockets.

mod support;

use std::time::Duration;

use support::{Client, Kala, Sink, SinkBehavior, clean_message, dot_stuff, split_added_headers};

#[tokio::test]
async fn relays_byte_exact_with_added_headers_and_exact_recipients() {
    let sink = Sink::start().await;
    let kala = Kala::start(sink.addr, &[]).await;
    let mut body = String::new();
    for i in 0..50 {
        body.push_str(&format!(
            "Line {i}: Përshëndetje, поздрав, hello \t trailing space \r\n"
        ));
    }
    body.push_str(".leading dot\r\n..two dots\r\n");
    let message = clean_message("Raporti mujor", &body);
    let mut client = kala.client().await;
    let reply = client
        .send_mail(
            "ana@sender.example",
            &["it@prokuroria.example", "helpdesk@prokuroria.example"],
            &message,
        )
        .await;
    assert!(
        reply.starts_with("250 2.6.0"),
        "the downstream's own 250 comes back: {reply}"
    );
    assert_eq!(client.cmd("QUIT").await, "221 2.0.0 Bye");

    let got = sink.wait_for(1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].mail_from, "ana@sender.example");
    assert_eq!(
        got[0].rcpt_to,
        ["it@prokuroria.example", "helpdesk@prokuroria.example"]
    );
    let (added, original) = split_added_headers(&got[0].data);
    assert_eq!(
        original, message,
        "everything but the added headers is byte-exact"
    );
    assert!(
        added.starts_with("Received: from client.example.org ([127.0.0.1])"),
        "{added}"
    );
    assert!(
        added.contains("by kala.test (Kala) with ESMTP id "),
        "{added}"
    );
    assert!(
        added.contains("X-Kala-Status: No, score=0.00, action=accept\r\n"),
        "{added}"
    );
    assert!(added.contains("X-Kala-Score: 0.00\r\n"), "{added}");
    assert!(added.contains("X-Kala-Symbols: (none)\r\n"), "{added}");
}

#[tokio::test]
async fn forged_kala_headers_are_removed() {
    let sink = Sink::start().await;
    let kala = Kala::start(sink.addr, &[]).await;
    let message = b"X-Kala-Status: No, score=-50\r\nX-Kala-Score: -50\r\nFrom: a@sender.example\r\nSubject: s\r\nDate: Mon, 2 Nov 2026 10:00:00 +0100\r\nMessage-ID: <f@sender.example>\r\n\r\nhi\r\n";
    let reply = kala
        .client()
        .await
        .send_mail("a@sender.example", &["it@prokuroria.example"], message)
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    let data = String::from_utf8(sink.wait_for(1).await[0].data.clone()).unwrap();
    assert!(!data.contains("-50"), "{data}");
    assert_eq!(data.matches("X-Kala-Status:").count(), 1, "{data}");
}

#[tokio::test]
async fn downstream_down_gives_451() {
    // A port nothing listens on: bind, note it, close.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let kala = Kala::start(closed, &[]).await;
    let mut client = kala.client().await;
    client.expect("EHLO client.example.org", "250").await;
    let reply = client.cmd("MAIL FROM:<a@sender.example>").await;
    assert!(reply.starts_with("451 4.4.1"), "{reply}");
    // The session stays usable: the sender may retry or quit.
    assert_eq!(client.cmd("NOOP").await, "250 2.0.0 Ok");
}

#[tokio::test]
async fn downstream_refusals_are_passed_back_per_recipient() {
    let sink = Sink::start().await;
    let kala = Kala::start(sink.addr, &[]).await;
    let mut client = kala.client().await;
    client.expect("EHLO client.example.org", "250").await;
    client.expect("MAIL FROM:<a@sender.example>", "250").await;
    assert_eq!(
        client.cmd("RCPT TO:<it@prokuroria.example>").await,
        "250 2.1.5 Recipient OK"
    );
    assert_eq!(
        client.cmd("RCPT TO:<unknown@prokuroria.example>").await,
        "550 5.1.1 User unknown"
    );
    assert_eq!(
        client.cmd("RCPT TO:<full@prokuroria.example>").await,
        "452 4.2.2 Mailbox full"
    );
    assert_eq!(
        client.cmd("RCPT TO:<ops@prokuroria.example>").await,
        "250 2.1.5 Recipient OK"
    );
    client.expect("DATA", "354").await;
    client.send(&clean_message("s", "hi\r\n")).await;
    let reply = client.cmd(".").await;
    assert!(reply.starts_with("250"), "{reply}");
    let got = sink.wait_for(1).await;
    assert_eq!(
        got[0].rcpt_to,
        ["it@prokuroria.example", "ops@prokuroria.example"]
    );
}

#[tokio::test]
async fn downstream_too_slow_gives_451_and_nothing_is_acknowledged() {
    let sink = Sink::start_with(SinkBehavior {
        data_reply_delay: Duration::from_secs(3),
        ..SinkBehavior::default()
    })
    .await;
    let kala = Kala::start(sink.addr, &[("downstream", "data_timeout = \"500ms\"")]).await;
    let reply = kala
        .client()
        .await
        .send_mail(
            "a@sender.example",
            &["it@prokuroria.example"],
            &clean_message("s", "hi\r\n"),
        )
        .await;
    assert!(reply.starts_with("451 4.4.1"), "{reply}");
}

#[tokio::test]
async fn pipelined_client_gets_every_reply_in_order() {
    let sink = Sink::start().await;
    let kala = Kala::start(sink.addr, &[]).await;
    let mut client = kala.client().await;
    assert!(
        client
            .cmd("EHLO client.example.org")
            .await
            .contains("250-PIPELINING")
    );
    // RFC 2920: everything up to DATA in one write.
    client
        .send(b"MAIL FROM:<a@sender.example>\r\nRCPT TO:<it@prokuroria.example>\r\nRCPT TO:<unknown@prokuroria.example>\r\nRCPT TO:<ops@prokuroria.example>\r\nDATA\r\n")
        .await;
    assert!(client.reply().await.starts_with("250"));
    assert!(client.reply().await.starts_with("250"));
    assert!(client.reply().await.starts_with("550 5.1.1"));
    assert!(client.reply().await.starts_with("250"));
    assert!(client.reply().await.starts_with("354"));
    // The message, its end, and the next transaction in one write too.
    let mut burst = dot_stuff(&clean_message("one", "first\r\n"));
    burst.extend_from_slice(
        b".\r\nMAIL FROM:<b@sender.example>\r\nRCPT TO:<it@prokuroria.example>\r\nDATA\r\n",
    );
    client.send(&burst).await;
    assert!(client.reply().await.starts_with("250"));
    assert!(client.reply().await.starts_with("250"));
    assert!(client.reply().await.starts_with("250"));
    assert!(client.reply().await.starts_with("354"));
    client
        .send(&dot_stuff(&clean_message("two", "second\r\n")))
        .await;
    client.send(b".\r\nQUIT\r\n").await;
    assert!(client.reply().await.starts_with("250"));
    assert_eq!(client.reply().await, "221 2.0.0 Bye");
    let got = sink.wait_for(2).await;
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0].rcpt_to,
        ["it@prokuroria.example", "ops@prokuroria.example"]
    );
    assert_eq!(got[1].mail_from, "b@sender.example");
}

#[tokio::test]
async fn ehlo_advertises_the_extensions_and_replies_carry_status_codes() {
    let sink = Sink::start().await;
    let kala = Kala::start(sink.addr, &[("smtp", "max_message_size = 1000000")]).await;
    let mut client = kala.client().await;
    let ehlo = client.cmd("EHLO client.example.org").await;
    for ext in [
        "PIPELINING",
        "SIZE 1000000",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
        "STARTTLS",
    ] {
        assert!(
            ehlo.lines().any(|l| &l[4..] == ext),
            "{ext} missing in {ehlo}"
        );
    }
    client.expect("VRFY it", "252 2.5.0").await;
    client.expect("HELP", "214 2.0.0").await;
    client.expect("NOOP", "250 2.0.0").await;
    client.expect("RSET", "250 2.0.0").await;
    client
        .expect("RCPT TO:<it@prokuroria.example>", "503 5.5.1")
        .await;
    client.expect("DATA", "503 5.5.1").await;
    client.expect("BOGUS", "500 5.5.2").await;
    client.expect("MAIL FROM:<not an address", "501 5.").await;
    client.expect("QUIT", "221 2.0.0").await;
}

#[tokio::test]
async fn smtputf8_and_8bitmime_pass_through() {
    let sink = Sink::start().await;
    let kala = Kala::start(sink.addr, &[]).await;
    let mut client = kala.client().await;
    client.expect("EHLO client.example.org", "250").await;
    let r = client
        .cmd("MAIL FROM:<përdorues@shembull.example> SMTPUTF8 BODY=8BITMIME")
        .await;
    assert!(r.starts_with("250"), "{r}");
    let r = client.cmd("RCPT TO:<tëknik@prokuroria.example>").await;
    assert!(r.starts_with("250"), "{r}");
    client.expect("DATA", "354").await;
    client.send(&clean_message("Тест", "Çështje\r\n")).await;
    client.expect(".", "250").await;
    let got = sink.wait_for(1).await;
    assert_eq!(got[0].mail_from, "përdorues@shembull.example");
    assert_eq!(got[0].rcpt_to, ["tëknik@prokuroria.example"]);
}

#[tokio::test]
async fn size_limits_are_announced_and_enforced() {
    let sink = Sink::start().await;
    let kala = Kala::start(sink.addr, &[("smtp", "max_message_size = 10000")]).await;
    let mut client = kala.client().await;
    assert!(
        client
            .cmd("EHLO client.example.org")
            .await
            .contains("SIZE 10000")
    );
    let r = client.cmd("MAIL FROM:<a@sender.example> SIZE=20000").await;
    assert!(r.starts_with("552 5.3.4"), "{r}");
    // A sender that lies about SIZE is stopped while reading.
    client
        .expect("MAIL FROM:<a@sender.example> SIZE=500", "250")
        .await;
    client
        .expect("RCPT TO:<it@prokuroria.example>", "250")
        .await;
    client.expect("DATA", "354").await;
    let big = clean_message(
        "big",
        &"x".repeat(100)
            .repeat(200)
            .replace("xxxxxxxxxx", "xxxxxxxx\r\n"),
    );
    client.send(&big).await;
    let r = client.cmd(".").await;
    assert!(r.starts_with("552 5.3.4"), "{r}");
    // The session goes on, and nothing reached the downstream.
    client.expect("NOOP", "250").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(sink.deliveries().is_empty());
}

#[tokio::test]
async fn too_many_recipients_get_452() {
    let sink = Sink::start().await;
    let kala = Kala::start(sink.addr, &[("smtp", "max_recipients = 2")]).await;
    let mut client = kala.client().await;
    client.expect("EHLO client.example.org", "250").await;
    client.expect("MAIL FROM:<a@sender.example>", "250").await;
    client
        .expect("RCPT TO:<a1@prokuroria.example>", "250")
        .await;
    client
        .expect("RCPT TO:<a2@prokuroria.example>", "250")
        .await;
    let r = client.cmd("RCPT TO:<a3@prokuroria.example>").await;
    assert!(r.starts_with("452 4.5.3"), "{r}");
    client.expect("DATA", "354").await;
    client.send(&clean_message("s", "hi\r\n")).await;
    client.expect(".", "250").await;
    assert_eq!(sink.wait_for(1).await[0].rcpt_to.len(), 2);
}

#[tokio::test]
async fn idle_client_is_dropped_with_421() {
    let sink = Sink::start().await;
    let kala = Kala::start(sink.addr, &[("smtp", "command_timeout = \"300ms\"")]).await;
    let mut client = kala.client().await;
    client.expect("EHLO client.example.org", "250").await;
    let started = std::time::Instant::now();
    let r = client.reply().await;
    assert!(r.starts_with("421 4.4.2"), "{r}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(client.reply().await, "<closed>");
}

#[tokio::test]
async fn stalled_data_is_dropped_with_421() {
    let sink = Sink::start().await;
    let kala = Kala::start(sink.addr, &[("smtp", "data_timeout = \"300ms\"")]).await;
    let mut client = kala.client().await;
    client.expect("EHLO client.example.org", "250").await;
    client.expect("MAIL FROM:<a@sender.example>", "250").await;
    client
        .expect("RCPT TO:<it@prokuroria.example>", "250")
        .await;
    client.expect("DATA", "354").await;
    client.send(b"Subject: half a message\r\n").await;
    assert!(client.reply().await.starts_with("421 4.4.2"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(sink.deliveries().is_empty());
}

/// The smuggling shapes of DEVELOPERS' issue 2 (and `<CR><LF>.<CR>`): each hides a second
/// message behind a line end that is not CRLF. None may reach the downstream as two.
#[tokio::test]
async fn smuggling_shapes_never_yield_two_messages() {
    let sink = Sink::start().await;
    let kala = Kala::start(sink.addr, &[]).await;
    let shapes: [&[u8]; 5] = [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r"];
    for shape in shapes {
        let mut client = kala.client().await;
        client.expect("EHLO client.example.org", "250").await;
        client.expect("MAIL FROM:<a@sender.example>", "250").await;
        client
            .expect("RCPT TO:<it@prokuroria.example>", "250")
            .await;
        client.expect("DATA", "354").await;
        let mut payload = clean_message("first", "innocent");
        payload.extend_from_slice(shape);
        payload.extend_from_slice(
            b"MAIL FROM:<ceo@prokuroria.example>\r\nRCPT TO:<it@prokuroria.example>\r\nDATA\r\nFrom: ceo@prokuroria.example\r\nSubject: smuggled\r\n\r\nwire the money\r\n",
        );
        client.send(&payload).await;
        let r = client.cmd(".").await;
        assert!(r.starts_with("554 5.6.0"), "shape {shape:?}: {r}");
        // Whatever followed was data, not commands: the session is in a clean state.
        assert!(
            client
                .cmd("RCPT TO:<it@prokuroria.example>")
                .await
                .starts_with("503"),
            "shape {shape:?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        sink.deliveries().len(),
        0,
        "nothing with a bare line end is relayed"
    );
}

#[tokio::test]
async fn dot_stuffing_round_trips_and_empty_message_works() {
    let sink = Sink::start().await;
    // Thresholds out of reach: these odd messages must be relayed untouched, not tagged.
    let kala = Kala::start(
        sink.addr,
        &[(
            "policy",
            "tag_score = 100.0\nquarantine_score = 200.0\nreject_score = 300.0",
        )],
    )
    .await;
    let mut client = kala.client().await;
    // The first line of the data starts with a dot (smtp-proto's receiver got this wrong).
    let message = b".X-First: dotted\r\nFrom: a@sender.example\r\n\r\n.\r\n..\r\n.hidden\r\n";
    assert!(
        client
            .send_mail("a@sender.example", &["it@prokuroria.example"], message)
            .await
            .starts_with("250")
    );
    // An empty message: `.` straight after 354.
    client.expect("MAIL FROM:<a@sender.example>", "250").await;
    client
        .expect("RCPT TO:<it@prokuroria.example>", "250")
        .await;
    client.expect("DATA", "354").await;
    let r = client.cmd(".").await;
    assert!(r.starts_with("250"), "{r}");
    let got = sink.wait_for(2).await;
    let (_, original) = split_added_headers(&got[0].data);
    assert_eq!(original, message);
    let (added, original) = split_added_headers(&got[1].data);
    assert!(
        original.is_empty() && added.contains("KALA_EMPTY_BODY"),
        "{added}"
    );
}

#[tokio::test]
async fn large_message_spills_to_disk_and_relays_exactly() {
    let sink = Sink::start().await;
    let kala = Kala::start(sink.addr, &[("smtp", "memory_spool_size = \"4 KiB\"")]).await;
    let mut body = String::new();
    for i in 0..20_000 {
        body.push_str(&format!(
            "{i:08} the quick brown fox jumps over the lazy dog\r\n"
        ));
    }
    let message = clean_message("large", &body);
    assert!(message.len() > 1_000_000);
    let r = kala
        .client()
        .await
        .send_mail("a@sender.example", &["it@prokuroria.example"], &message)
        .await;
    assert!(r.starts_with("250"), "{r}");
    let (_, original) = split_added_headers(&sink.wait_for(1).await[0].data);
    assert!(original == message, "large message differs after relay");
}

#[tokio::test]
async fn huge_header_section_is_refused() {
    let sink = Sink::start().await;
    let kala = Kala::start(sink.addr, &[("smtp", "max_header_size = \"4 KiB\"")]).await;
    let mut message = Vec::new();
    for i in 0..200 {
        message.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(60)).as_bytes());
    }
    message.extend_from_slice(b"\r\nbody\r\n");
    let mut client = kala.client().await;
    let r = client
        .send_mail("a@sender.example", &["it@prokuroria.example"], &message)
        .await;
    assert!(r.starts_with("552 5.3.4"), "{r}");
}

#[tokio::test]
async fn long_command_line_is_refused_and_session_survives() {
    let sink = Sink::start().await;
    let kala = Kala::start(sink.addr, &[("smtp", "max_line_length = 600")]).await;
    let mut client = kala.client().await;
    let r = client.cmd(&format!("EHLO {}", "a".repeat(5000))).await;
    assert!(r.starts_with("500 5.5.2"), "{r}");
    client.expect("EHLO client.example.org", "250").await;
}

#[tokio::test]
async fn connections_beyond_the_per_ip_limit_get_421() {
    let sink = Sink::start().await;
    let kala = Kala::start(sink.addr, &[("smtp", "max_connections_per_ip = 2")]).await;
    let _a = kala.client().await;
    let _b = kala.client().await;
    let mut third = tokio::net::TcpStream::connect(kala.addr).await.unwrap();
    let mut buf = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut third, &mut buf)
        .await
        .unwrap();
    assert!(buf.starts_with("421 4.7.0"), "{buf}");
    drop(_a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _c = kala.client().await; // a place is free again
}

#[tokio::test]
async fn downstream_connections_are_reused() {
    let sink = Sink::start().await;
    let kala = Kala::start(sink.addr, &[]).await;
    for i in 0..5 {
        let mut client = kala.client().await;
        let r = client
            .send_mail(
                "a@sender.example",
                &["it@prokuroria.example"],
                &clean_message(&format!("m{i}"), "x\r\n"),
            )
            .await;
        assert!(r.starts_with("250"), "{r}");
        client.cmd("QUIT").await;
    }
    assert_eq!(sink.wait_for(5).await.len(), 5);
    assert_eq!(
        *sink.connections.lock().unwrap(),
        1,
        "one pooled downstream connection carried all five"
    );
}

#[tokio::test]
async fn each_action_does_what_it_says() {
    let sink = Sink::start().await;
    // A message without Date scores KALA_MISSING_DATE; the config turns that into each action.
    let undated = b"From: a@sender.example\r\nSubject: Fatura\r\nMessage-ID: <u@sender.example>\r\n\r\nPaguani sot\r\n";

    let tag = Kala::start(sink.addr, &[("policy", "tag_score = 1.0")]).await;
    let r = tag
        .client()
        .await
        .send_mail("a@sender.example", &["it@prokuroria.example"], undated)
        .await;
    assert!(r.starts_with("250"), "{r}");
    let data = String::from_utf8(sink.wait_for(1).await[0].data.clone()).unwrap();
    assert!(data.contains("Subject: [SPAM] Fatura\r\n"), "{data}");
    assert!(
        data.contains("X-Kala-Status: Yes, score=1.00, action=tag"),
        "{data}"
    );
    assert!(
        data.contains("X-Kala-Symbols: KALA_MISSING_DATE(1.00)"),
        "{data}"
    );

    let quarantine = Kala::start(
        sink.addr,
        &[("policy", "tag_score = 0.5\nquarantine_score = 1.0")],
    )
    .await;
    let r = quarantine
        .client()
        .await
        .send_mail("a@sender.example", &["it@prokuroria.example"], undated)
        .await;
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    let held = quarantine.quarantined().await;
    assert_eq!(held.len(), 1);
    assert!(
        held[0].raw.ends_with(undated),
        "the held copy is the message as received"
    );
    let record = held[0].record.to_string();
    assert!(
        record.contains("KALA_MISSING_DATE") && record.contains("\"quarantine\""),
        "{record}"
    );

    let reject = Kala::start(
        sink.addr,
        &[(
            "policy",
            "tag_score = 0.2\nquarantine_score = 0.5\nreject_score = 1.0",
        )],
    )
    .await;
    let r = reject
        .client()
        .await
        .send_mail("a@sender.example", &["it@prokuroria.example"], undated)
        .await;
    assert_eq!(r, "550 5.7.1 Message rejected as spam (KALA_MISSING_DATE)");

    let tempfail = Kala::start(
        sink.addr,
        &[("policy.force_actions", "KALA_MISSING_DATE = \"tempfail\"")],
    )
    .await;
    let r = tempfail
        .client()
        .await
        .send_mail("a@sender.example", &["it@prokuroria.example"], undated)
        .await;
    assert!(r.starts_with("451 4.7.1"), "{r}");

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        sink.deliveries().len(),
        1,
        "only the tagged message was relayed"
    );
}

#[tokio::test]
async fn helo_symbols_reach_the_verdict() {
    let sink = Sink::start().await;
    let kala = Kala::start(sink.addr, &[]).await;
    let mut client = kala.client().await;
    client.expect("EHLO desktop", "250").await;
    client.expect("MAIL FROM:<a@sender.example>", "250").await;
    client
        .expect("RCPT TO:<it@prokuroria.example>", "250")
        .await;
    client.expect("DATA", "354").await;
    client.send(&clean_message("s", "hi\r\n")).await;
    client.expect(".", "250").await;
    let data = String::from_utf8(sink.wait_for(1).await[0].data.clone()).unwrap();
    assert!(
        data.contains("X-Kala-Symbols: KALA_HELO_NOT_FQDN(1.00)"),
        "{data}"
    );
}

#[tokio::test]
async fn shutdown_drains_in_flight_transactions_and_refuses_new_work() {
    let sink = Sink::start().await;
    let mut kala = Kala::start(sink.addr, &[("smtp", "shutdown_grace = \"10s\"")]).await;
    let mut idle = kala.client().await;
    idle.expect("EHLO idle.example.org", "250").await;
    let mut busy = kala.client().await;
    busy.expect("EHLO busy.example.org", "250").await;
    busy.expect("MAIL FROM:<a@sender.example>", "250").await;
    busy.expect("RCPT TO:<it@prokuroria.example>", "250").await;

    let server = kala.server.take().unwrap();
    let shutdown = tokio::spawn(server.shutdown());
    // The idle session is told at once.
    assert!(idle.reply().await.starts_with("421 4.3.2"));
    // A new connection is refused with 421.
    let mut late = tokio::net::TcpStream::connect(kala.addr).await.unwrap();
    let mut buf = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut late, &mut buf)
        .await
        .unwrap();
    assert!(buf.starts_with("421 4.3.2"), "{buf}");
    // The transaction in flight finishes and is delivered; the next command gets 421.
    busy.expect("DATA", "354").await;
    busy.send(&clean_message("in flight", "hi\r\n")).await;
    busy.expect(".", "250").await;
    busy.expect("MAIL FROM:<b@sender.example>", "421").await;
    assert_eq!(
        shutdown.await.unwrap(),
        0,
        "all sessions ended within the grace period"
    );
    assert_eq!(sink.wait_for(1).await.len(), 1);
}

#[tokio::test]
async fn pipelined_commands_behind_starttls_are_discarded() {
    let sink = Sink::start().await;
    let kala = Kala::start(sink.addr, &[]).await;
    let mut client: Client<tokio::net::TcpStream> = kala.client().await;
    client.expect("EHLO client.example.org", "250").await;
    client
        .send(b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n")
        .await;
    assert!(client.reply().await.starts_with("220 2.0.0"));
    let mut tls = support::tls_upgrade(client, &kala).await;
    // After the handshake the injected MAIL must not have been acted on: EHLO is required
    // and no transaction is open.
    tls.expect("RCPT TO:<it@prokuroria.example>", "503").await;
    tls.expect("EHLO client.example.org", "250").await;
}

#[tokio::test]
async fn starttls_with_a_verifying_client_then_relay() {
    let sink = Sink::start().await;
    let kala = Kala::start(sink.addr, &[]).await;
    let mut client = kala.client().await;
    assert!(
        client
            .cmd("EHLO client.example.org")
            .await
            .contains("250-STARTTLS")
    );
    assert_eq!(client.cmd("STARTTLS").await, "220 2.0.0 Ready to start TLS");
    let mut tls = support::tls_upgrade(client, &kala).await;
    let ehlo = tls.cmd("EHLO client.example.org").await;
    assert!(!ehlo.contains("STARTTLS"), "not offered twice: {ehlo}");
    let r = tls
        .send_mail(
            "a@sender.example",
            &["it@prokuroria.example"],
            &clean_message("tls", "secret\r\n"),
        )
        .await;
    assert!(r.starts_with("250"), "{r}");
    let data = String::from_utf8(sink.wait_for(1).await[0].data.clone()).unwrap();
    assert!(
        data.contains("(using TLSv1.3)") && data.contains("with ESMTPS id"),
        "{data}"
    );
}

#[tokio::test]
async fn a_pooled_connection_the_downstream_closed_is_replaced_unnoticed() {
    let sink = Sink::start_with(SinkBehavior {
        close_after_delivery: true,
        ..SinkBehavior::default()
    })
    .await;
    let kala = Kala::start(sink.addr, &[]).await;
    for i in 0..3 {
        let r = kala
            .client()
            .await
            .send_mail(
                "a@sender.example",
                &["it@prokuroria.example"],
                &clean_message(&format!("m{i}"), "x\r\n"),
            )
            .await;
        assert!(r.starts_with("250"), "message {i}: {r}");
    }
    assert_eq!(sink.wait_for(3).await.len(), 3);
}

#[tokio::test]
async fn a_sender_the_downstream_refuses_is_refused_at_rcpt() {
    let sink = Sink::start().await;
    let kala = Kala::start(sink.addr, &[]).await;
    let mut client = kala.client().await;
    client.expect("EHLO client.example.org", "250").await;
    client
        .expect("MAIL FROM:<blocked@sender.example>", "250")
        .await;
    assert_eq!(
        client.cmd("RCPT TO:<it@prokuroria.example>").await,
        "550 5.7.1 Sender blocked"
    );
    assert_eq!(
        client.cmd("RCPT TO:<ops@prokuroria.example>").await,
        "550 5.7.1 Sender blocked"
    );
    client.expect("DATA", "554 5.5.1").await;
    // After RSET the same connection works for a good sender.
    client.expect("RSET", "250").await;
    let r = client
        .send_mail(
            "ana@sender.example",
            &["it@prokuroria.example"],
            &clean_message("ok", "x\r\n"),
        )
        .await;
    assert!(r.starts_with("250"), "{r}");
}

/// Kala in front of Kala: the inner one offers STARTTLS with its self-signed certificate, the
/// outer one must use it, verifying against that certificate (`tls = "required"`).
#[tokio::test]
async fn downstream_starttls_verified_against_a_trusted_ca() {
    let sink = Sink::start().await;
    let inner = Kala::start(sink.addr, &[]).await;
    let ca = inner.data_dir.path().join("tls/cert.pem");
    let ca_line = format!("ca_file = {:?}", ca.display().to_string());
    let outer = Kala::start(
        inner.addr,
        &[
            ("downstream", "tls = \"required\""),
            ("downstream", &ca_line),
            ("downstream", "tls_server_name = \"kala.test\""),
        ],
    )
    .await;
    let r = outer
        .client()
        .await
        .send_mail(
            "a@sender.example",
            &["it@prokuroria.example"],
            &clean_message("via tls", "x\r\n"),
        )
        .await;
    assert!(r.starts_with("250"), "{r}");
    let data = String::from_utf8(sink.wait_for(1).await[0].data.clone()).unwrap();
    // The inner Kala's Received header says the outer one reached it over TLS.
    assert!(
        data.starts_with("Received: from kala.test ([127.0.0.1]) (using TLSv1.3)"),
        "{data}"
    );

    // A CA that did not issue the downstream's certificate: no TLS, so no relay; 451.
    let other = Kala::start(sink.addr, &[]).await;
    let wrong_ca = format!(
        "ca_file = {:?}",
        other
            .data_dir
            .path()
            .join("tls/cert.pem")
            .display()
            .to_string()
    );
    let strict = Kala::start(
        inner.addr,
        &[
            ("downstream", "tls = \"required\""),
            ("downstream", &wrong_ca),
            ("downstream", "tls_server_name = \"kala.test\""),
        ],
    )
    .await;
    let mut client = strict.client().await;
    client.expect("EHLO client.example.org", "250").await;
    let r = client.cmd("MAIL FROM:<a@sender.example>").await;
    assert!(r.starts_with("451 4.4.1"), "{r}");
}

#[tokio::test]
async fn downstream_opportunistic_tls_accepts_a_self_signed_certificate() {
    let sink = Sink::start().await;
    let inner = Kala::start(sink.addr, &[]).await;
    let outer = Kala::start(inner.addr, &[("downstream", "tls = \"opportunistic\"")]).await;
    let r = outer
        .client()
        .await
        .send_mail(
            "a@sender.example",
            &["it@prokuroria.example"],
            &clean_message("opportunistic", "x\r\n"),
        )
        .await;
    assert!(r.starts_with("250"), "{r}");
    let data = String::from_utf8(sink.wait_for(1).await[0].data.clone()).unwrap();
    assert!(
        data.contains("(using TLSv1.3)\r\n\tby kala.test (Kala) with ESMTPS"),
        "{data}"
    );
}

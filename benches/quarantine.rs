//! Quarantine benchmark: durable holds per second, list queries over 100,000 held messages
//! (filtered and unfiltered, p50/p99), and releasing 1,000 messages in bulk to a recording
//! downstream. Prints figures; asserts nothing.
//!
//! Run: `cargo bench --bench quarantine`. KALA_BENCH_HELD (default 100000) sets the size of
//! the quarantine; KALA_BENCH_STORE=postgres://... runs it on PostgreSQL instead of SQLite.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use kala::envelope::Envelope;
use kala::quarantine::{Category, Filter, Headline, HoldRecord, Quarantine, Retention, Sort};
use kala::store::{Store, now};
use kala::verdict::{Action, Symbol, Verdict};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A typical held message: 6 KiB of headers and text.
fn sample_message(n: usize) -> Vec<u8> {
    let mut raw = format!(
        "Received: from mail.sender{n}.example (mail.sender{n}.example [192.0.2.{}])\r\n\tby kala.test with ESMTP id B{n}\r\nFrom: Sender <user{n}@sender{n}.example>\r\nTo: it@prokuroria.example\r\nSubject: Offer number {n}\r\nMessage-ID: <{n}@sender.example>\r\n\r\n",
        n % 250
    )
    .into_bytes();
    while raw.len() < 6 * 1024 {
        raw.extend_from_slice(b"Dear customer, our best prices this week only. Reply now.\r\n");
    }
    raw
}

fn spam_verdict(n: usize) -> Verdict {
    Verdict {
        action: Action::Quarantine,
        score: 10.0 + (n % 17) as f64,
        symbols: vec![
            Symbol::new("BIG_MONEY", 6.0, "Talks about lots of money"),
            Symbol::new(format!("RULE_{}", n % 50), 3.0, "Some rule"),
            Symbol::new("KALA_MISSING_DATE", 1.0, "No Date header"),
        ],
        forced_by: None,
        headers: Vec::new(),
    }
}

/// Durable holds through the real path (one commit, one fsync each).
async fn measure_holds(q: &Quarantine, count: usize) -> f64 {
    let started = Instant::now();
    for n in 0..count {
        let envelope = Envelope::offline(
            &format!("user{n}@sender{n}.example"),
            vec!["it@prokuroria.example".into()],
        );
        let verdict = spam_verdict(n);
        let headline = Headline {
            subject: format!("Offer number {n}"),
            from: format!("user{n}@sender{n}.example"),
            message_id: format!("<{n}@sender.example>"),
        };
        let record = HoldRecord {
            envelope: &envelope,
            verdict: &verdict,
        };
        q.hold(&record, &headline, sample_message(n)).await.unwrap();
    }
    count as f64 / started.elapsed().as_secs_f64()
}

/// Fills the store to `total` held messages with one SQL statement per table (the real hold
/// path would take minutes of fsyncs): a month of mail, mixed categories, 3 symbols each.
async fn fill(store: &Store, total: usize) {
    let compressed = {
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&sample_message(0)).unwrap();
        encoder.finish().unwrap()
    };
    let now = now() as i64;
    let step = (30 * 24 * 3600 / total.max(1)) as i64;
    let rows = format!(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {})",
        total - 1
    );
    let statements = [
        format!(
            "{rows} INSERT INTO quarantine (id, received_at, expires_at, category, state, sender, \
             recipients, subject, from_header, message_id, score, size, client_ip, symbols, record) \
             SELECT 'F' || i, {now} - i * {step}, {now} + 2592000, \
             CASE WHEN i % 20 = 0 THEN 'virus' WHEN i % 20 = 1 THEN 'banned' ELSE 'spam' END, \
             'held', 'user' || (i % 997) || '@sender' || (i % 101) || '.example', \
             'user' || (i % 200) || '@prokuroria.example', \
             'Offer ' || (i % 1000) || ' for ' || (CASE i % 3 WHEN 0 THEN 'watches' WHEN 1 THEN 'loans' ELSE 'pills' END), \
             'Sender <x@y>', '<' || i || '@sender.example>', 5.0 + (i % 20), 6144, '192.0.2.' || (i % 250), \
             'BIG_MONEY RULE_' || (i % 50) || ' KALA_MISSING_DATE', \
             '{{\"envelope\":{{}},\"verdict\":{{\"action\":\"quarantine\",\"score\":10.0,\"symbols\":[]}}}}' FROM n"
        ),
        format!(
            "{rows} INSERT INTO quarantine_recipient (held_id, recipient) \
             SELECT 'F' || i, 'user' || (i % 200) || '@prokuroria.example' FROM n"
        ),
        format!(
            "{rows} INSERT INTO quarantine_symbol (held_id, name, score) \
             SELECT 'F' || i, 'BIG_MONEY', 6.0 FROM n UNION ALL \
             SELECT 'F' || i, 'RULE_' || (i % 50), 3.0 FROM n UNION ALL \
             SELECT 'F' || i, 'KALA_MISSING_DATE', 1.0 FROM n"
        ),
        format!("{rows} INSERT INTO quarantine_raw (held_id, raw) SELECT 'F' || i, $1 FROM n"),
    ];
    for sql in statements {
        let takes_body = sql.contains("$1");
        let query = sqlx::query(sqlx::AssertSqlSafe(sql));
        let query = if takes_body {
            query.bind(compressed.clone())
        } else {
            query
        };
        query.execute(store.pool()).await.unwrap();
    }
    sqlx::raw_sql("ANALYZE").execute(store.pool()).await.ok();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn time_list(q: &Quarantine, name: &str, filter: Filter) {
    let runs = 40;
    let mut times = Vec::with_capacity(runs);
    let mut total = 0;
    for _ in 0..runs {
        let started = Instant::now();
        let page = q.list(&filter).await.unwrap();
        times.push(started.elapsed());
        total = page.total;
    }
    times.sort();
    println!(
        "  {name:<44} {:>8} match   p50 {:>7.2} ms   p99 {:>7.2} ms",
        total,
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3
    );
}

/// The list page through the real UI over HTTP (login, render, send), p50/p99.
async fn measure_pages(url: &str, data_dir: &std::path::Path, downstream: std::net::SocketAddr) {
    let config = format!(
        "data_dir = {:?}\n[store]\nurl = \"{url}\"\n[rules]\ndirs = []\n[antivirus]\nenabled = false\n\
         [web]\nlisten = \"127.0.0.1:0\"\n[downstream]\naddress = \"{downstream}\"\n",
        data_dir.display().to_string()
    );
    let settings = kala::config::Settings::parse(&config, "bench").unwrap();
    let shared = std::sync::Arc::new(kala::smtp::Shared::new(settings).await.unwrap());
    let accounts = kala::web::auth::Accounts::new(shared.quarantine.store().clone());
    accounts
        .add("bench", "a bench password", kala::web::auth::Role::Reviewer)
        .await
        .unwrap();
    let web = kala::web::start(shared).await.unwrap();
    let mut browser = support::http::Browser::new(web.local_addr);
    let form = browser.get("/login").await;
    let r = browser
        .post(
            "/login",
            &[
                ("csrf", &form.csrf()),
                ("user", "bench"),
                ("password", "a bench password"),
            ],
        )
        .await;
    assert_eq!(r.status, 303);
    println!("List page over HTTP (the UI: query, template, 50 rows):");
    for (name, path) in [
        ("unfiltered", "/quarantine"),
        ("page 100", "/quarantine?page=99"),
        ("category virus", "/quarantine?category=virus"),
        (
            "subject words \"offer loans\"",
            "/quarantine?subject=offer+loans",
        ),
        (
            "sender contains \"user42@\"",
            "/quarantine?sender=user42%40",
        ),
    ] {
        let mut times = Vec::new();
        for _ in 0..40 {
            let started = Instant::now();
            let page = browser.get(path).await;
            times.push(started.elapsed());
            assert_eq!(page.status, 200);
        }
        times.sort();
        println!(
            "  {name:<44} p50 {:>7.2} ms   p99 {:>7.2} ms",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3
        );
    }
    web.stop();
}

#[tokio::main]
async fn main() {
    let held = env_or("KALA_BENCH_HELD", 100_000);
    let dir = tempfile::tempdir().unwrap();
    let url = std::env::var("KALA_BENCH_STORE").unwrap_or_else(|_| Store::sqlite_url(dir.path()));
    let store = Store::open(&url).await.unwrap();
    let q = Quarantine::new(store.clone(), Retention::default());
    println!("Quarantine benchmark on {}", kala::store::redact(&url));

    let holds = measure_holds(&q, 500).await;
    println!("Durable holds (6 KiB message, commit with fsync each): {holds:.0} per second");

    let started = Instant::now();
    fill(&store, held).await;
    println!(
        "Filled to {} held messages in {:.1} s (bulk SQL)",
        held + 500,
        started.elapsed().as_secs_f64()
    );

    println!(
        "List page (50 rows and the total count), {} held:",
        held + 500
    );
    let day_ago = now() as i64 - 24 * 3600;
    let cases: Vec<(&str, Filter)> = vec![
        ("unfiltered, newest first", Filter::default()),
        (
            "unfiltered, page 100",
            Filter {
                offset: 99 * 50,
                ..Filter::default()
            },
        ),
        (
            "unfiltered, highest score first",
            Filter {
                sort: Sort::HighestScore,
                ..Filter::default()
            },
        ),
        (
            "category virus",
            Filter {
                category: Some(Category::Virus),
                ..Filter::default()
            },
        ),
        (
            "last 24 hours",
            Filter {
                since: Some(day_ago),
                ..Filter::default()
            },
        ),
        (
            "sender contains \"user42@\"",
            Filter {
                sender: Some("user42@".into()),
                ..Filter::default()
            },
        ),
        (
            "recipient contains \"user7@\"",
            Filter {
                recipient: Some("user7@".into()),
                ..Filter::default()
            },
        ),
        (
            "subject words \"offer loans\"",
            Filter {
                subject: Some("offer loans".into()),
                ..Filter::default()
            },
        ),
        (
            "symbol RULE_7",
            Filter {
                symbol: Some("RULE_7".into()),
                ..Filter::default()
            },
        ),
        (
            "score 20 to 24",
            Filter {
                min_score: Some(20.0),
                max_score: Some(24.0),
                ..Filter::default()
            },
        ),
    ];
    for (name, filter) in cases {
        time_list(&q, name, filter).await;
    }

    let sink = support::Sink::start().await;
    measure_pages(&url, dir.path(), sink.addr).await;

    let settings = kala::config::Settings::parse(
        &format!("[downstream]\naddress = \"{}\"\n", sink.addr),
        "bench",
    )
    .unwrap();
    let downstream = kala::smtp::relay::Downstream::new(&settings.downstream).unwrap();
    let ids: Vec<String> = q
        .list(&Filter {
            limit: 1000,
            ..Filter::default()
        })
        .await
        .unwrap()
        .messages
        .into_iter()
        .map(|m| m.id)
        .collect();
    let started = Instant::now();
    for id in &ids {
        let released = q.release(id, &downstream).await.unwrap();
        assert!(released.delivered, "{released:?}");
    }
    let elapsed = started.elapsed();
    println!(
        "Bulk release of {} messages to a local SMTP sink: {:.2} s ({:.1} ms each)",
        ids.len(),
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e3 / ids.len() as f64
    );
}

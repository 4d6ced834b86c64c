//! The store and the quarantine's actions through the library, the same scenarios on both
//! backends: SQLite (the embedded default) and a real PostgreSQL server started for the test.

mod support;
mod support_postgres;

use kala::envelope::Envelope;
use kala::quarantine::{
    Category, Filter, Headline, HoldRecord, Mark, Quarantine, Retention, Sort, State,
};
use kala::store::{Store, now};
use kala::verdict::{Action, Symbol, Verdict};
use support::{Kala, Sink};
use support_postgres::Postgres;

fn verdict(score: f64, symbols: &[(&str, f64)], forced_by: Option<&str>) -> Verdict {
    Verdict {
        action: Action::Quarantine,
        score,
        symbols: symbols
            .iter()
            .map(|(n, s)| Symbol::new(*n, *s, format!("{n} described")))
            .collect(),
        forced_by: forced_by.map(String::from),
        headers: Vec::new(),
    }
}

async fn hold(q: &Quarantine, sender: &str, rcpt: &str, subject: &str, v: &Verdict) -> String {
    let envelope = Envelope::offline(sender, vec![rcpt.into()]);
    let headline = Headline {
        subject: subject.into(),
        from: sender.into(),
        message_id: "<m@x>".into(),
    };
    let raw = format!("Received: x\r\nSubject: {subject}\r\n\r\nbody\r\n").into_bytes();
    let record = HoldRecord {
        envelope: &envelope,
        verdict: v,
    };
    q.hold(&record, &headline, raw).await.unwrap();
    envelope.queue_id
}

async fn holds_the_raw_message_and_every_symbol(q: Quarantine) {
    let v = verdict(12.5, &[("BIG_MONEY", 8.0), ("NO_DATE", 4.5)], None);
    let id = hold(&q, "a@example.org", "B@Example.net", "Win big", &v).await;
    assert_eq!(
        q.raw(&id).await.unwrap().unwrap(),
        b"Received: x\r\nSubject: Win big\r\n\r\nbody\r\n"
    );
    let held = q.get(&id).await.unwrap().unwrap();
    assert_eq!(held.summary.category, Category::Spam);
    assert_eq!(held.summary.state, State::Held);
    assert_eq!(held.summary.symbols, ["BIG_MONEY", "NO_DATE"]);
    assert_eq!(held.verdict.symbols[1].description, "NO_DATE described");
    assert_eq!(
        held.expires_at - held.summary.received_at,
        30 * 24 * 3600,
        "spam is kept 30 days"
    );
    let v = verdict(0.0, &[("VIRUS", 0.0)], Some("VIRUS"));
    let id = hold(&q, "a@example.org", "b@example.net", "Scan", &v).await;
    let held = q.get(&id).await.unwrap().unwrap();
    assert_eq!(
        held.expires_at - held.summary.received_at,
        90 * 24 * 3600,
        "viruses are kept 90 days"
    );
    assert!(q.get("no-such-id").await.unwrap().is_none());
}

async fn filters_narrow_the_list_and_count(q: Quarantine) {
    let spam = verdict(12.0, &[("BIG_MONEY", 12.0)], None);
    let virus = verdict(0.0, &[("VIRUS", 0.0)], Some("VIRUS"));
    let banned = verdict(
        0.0,
        &[("ATTACHMENT_BANNED_EXTENSION", 0.0)],
        Some("ATTACHMENT_BANNED_EXTENSION"),
    );
    hold(
        &q,
        "a@spam.example",
        "ann@corp.example",
        "Cheap 100% watches",
        &spam,
    )
    .await;
    hold(
        &q,
        "b@spam.example",
        "bob@corp.example",
        "Invoice attached",
        &virus,
    )
    .await;
    hold(
        &q,
        "c@other.example",
        "ann@corp.example",
        "Your invoice",
        &banned,
    )
    .await;

    let count = |change: fn(&mut Filter)| {
        let q = q.clone();
        async move {
            let mut filter = Filter::default();
            change(&mut filter);
            q.list(&filter).await.unwrap().total
        }
    };
    assert_eq!(count(|_| {}).await, 3);
    assert_eq!(count(|f| f.category = Some(Category::Virus)).await, 1);
    assert_eq!(count(|f| f.category = Some(Category::Banned)).await, 1);
    assert_eq!(count(|f| f.sender = Some("SPAM.example".into())).await, 2);
    assert_eq!(count(|f| f.recipient = Some("ann@".into())).await, 2);
    assert_eq!(count(|f| f.subject = Some("invoice YOUR".into())).await, 1);
    assert_eq!(
        count(|f| f.subject = Some("%".into())).await,
        1,
        "% is literal"
    );
    assert_eq!(
        count(|f| f.subject = Some("_".into())).await,
        0,
        "_ is literal"
    );
    assert_eq!(count(|f| f.min_score = Some(5.0)).await, 1);
    assert_eq!(count(|f| f.max_score = Some(5.0)).await, 2);
    assert_eq!(count(|f| f.symbol = Some("VIRUS".into())).await, 1);
    assert_eq!(count(|f| f.since = Some(now() as i64 - 60)).await, 3);
    assert_eq!(count(|f| f.until = Some(now() as i64 - 60)).await, 0);
    let page = q
        .list(&Filter {
            sort: Sort::HighestScore,
            limit: 1,
            ..Filter::default()
        })
        .await
        .unwrap();
    assert_eq!((page.total, page.messages.len()), (3, 1));
    assert_eq!(page.messages[0].subject, "Cheap 100% watches");
    let page = q
        .list(&Filter {
            sort: Sort::HighestScore,
            limit: 2,
            offset: 2,
            ..Filter::default()
        })
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 1, "the last page");
}

async fn delete_mark_and_purge(q: Quarantine) {
    let v = verdict(11.0, &[("X", 11.0)], None);
    let id = hold(&q, "a@example.org", "b@example.net", "s", &v).await;
    let kept = hold(&q, "a@example.org", "b@example.net", "t", &v).await;
    assert!(q.delete(&id).await.unwrap());
    assert!(!q.delete(&id).await.unwrap(), "already deleted");
    assert!(q.raw(&id).await.unwrap().is_none());
    assert_eq!(
        q.get(&id).await.unwrap().unwrap().summary.state,
        State::Deleted
    );
    assert!(q.mark(&kept, Mark::Ham).await.unwrap());
    assert_eq!(q.get(&kept).await.unwrap().unwrap().summary.mark, "ham");

    assert_eq!(
        q.purge_expired(now()).await.unwrap(),
        0,
        "nothing expired yet"
    );
    assert_eq!(q.purge_expired(now() + 31 * 24 * 3600).await.unwrap(), 2);
    assert!(q.get(&kept).await.unwrap().is_none());
    let everything = Filter {
        state: None,
        ..Filter::default()
    };
    assert_eq!(q.list(&everything).await.unwrap().total, 0);
}

async fn release_reinjects_byte_for_byte(q: Quarantine) {
    let sink = Sink::start().await;
    let settings = kala::config::Settings::parse(
        &format!("[downstream]\naddress = \"{}\"\n", sink.addr),
        "test",
    )
    .unwrap();
    let downstream = kala::smtp::relay::Downstream::new(&settings.downstream).unwrap();
    let v = verdict(11.0, &[("X", 11.0)], None);
    let id = hold(&q, "a@example.org", "b@example.net", "Release me", &v).await;
    let released = q.release(&id, &downstream).await.unwrap();
    assert!(released.delivered, "{released:?}");
    let delivered = sink.wait_for(1).await;
    assert_eq!(
        delivered[0].data,
        b"Received: x\r\nSubject: Release me\r\n\r\nbody\r\n"
    );
    let held = q.get(&id).await.unwrap().unwrap();
    assert_eq!(held.summary.state, State::Released);
    assert!(
        held.downstream_reply.starts_with("250"),
        "{}",
        held.downstream_reply
    );
    assert!(
        q.release(&id, &downstream).await.is_err(),
        "released once only"
    );
}

/// Rule set versions, hit counts and relayed samples (issue 8's tables) on this store.
async fn rule_versions_hits_and_samples(q: Quarantine) {
    use kala::store::rules::RuleVersion;
    let store = q.store();
    for (n, hash) in ["aa", "bb", "cc"].into_iter().enumerate() {
        let version = RuleVersion {
            id: 0,
            hash: hash.into(),
            activated_at: n as i64,
            actor: "cli:root".into(),
            note: String::new(),
            rules: 10,
        };
        let id = store
            .add_rule_version(&version, &[n as u8, 0, 255], 2)
            .await
            .unwrap();
        assert!(id > 0);
    }
    let versions = store.rule_versions(10).await.unwrap();
    let hashes: Vec<&str> = versions.iter().map(|v| v.hash.as_str()).collect();
    assert_eq!(hashes, ["cc", "bb"], "the newest 2 kept, newest first");
    let (_, files) = store.rule_version(versions[0].id).await.unwrap().unwrap();
    assert_eq!(files, [2, 0, 255]);

    store.add_rule_hits(100, &[("A".into(), 2)]).await.unwrap();
    store
        .add_rule_hits(100, &[("A".into(), 3), ("B".into(), 1)])
        .await
        .unwrap();
    store.add_rule_hits(101, &[("A".into(), 1)]).await.unwrap();
    assert_eq!(
        store.rule_hit_totals(100).await.unwrap(),
        [("A".to_string(), 6), ("B".to_string(), 1)]
    );
    assert_eq!(store.rule_hits("A", 0).await.unwrap(), [(100, 5), (101, 1)]);

    let v = verdict(3.0, &[("KALA_X", 3.0)], None);
    for n in 0..3u8 {
        store.add_rule_sample(&v, &[n], 2, 3600).await.unwrap();
    }
    let samples = store.rule_samples(10).await.unwrap();
    assert_eq!(samples.len(), 2, "the newest 2 kept");
    assert_eq!(samples[0].raw, [2]);
    assert_eq!(samples[0].verdict, v);
}

macro_rules! on_each_backend {
    ($($scenario:ident),* $(,)?) => {
        #[tokio::test(flavor = "multi_thread")]
        async fn every_scenario_on_sqlite() {
            $(
                let dir = tempfile::tempdir().unwrap();
                let store = Store::open(&Store::sqlite_url(dir.path())).await.unwrap();
                $scenario(Quarantine::new(store, Retention::default())).await;
            )*
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn every_scenario_on_postgres() {
            let postgres = Postgres::start();
            $(
                let url = postgres.database(stringify!($scenario)).await;
                let store = Store::open(&url).await.unwrap();
                assert_eq!(store.dialect(), kala::store::Dialect::Postgres);
                $scenario(Quarantine::new(store, Retention::default())).await;
            )*
        }
    };
}

on_each_backend!(
    holds_the_raw_message_and_every_symbol,
    filters_narrow_the_list_and_count,
    delete_mark_and_purge,
    release_reinjects_byte_for_byte,
    rule_versions_hits_and_samples,
);

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_holds_into_postgresql_when_configured() {
    let postgres = Postgres::start();
    let url = postgres.database("gateway").await;
    let sink = Sink::start().await;
    let store = format!("url = \"{url}\"");
    let kala = Kala::start(
        sink.addr,
        &[
            ("policy", "tag_score = 0.5\nquarantine_score = 1.0"),
            ("store", &store),
        ],
    )
    .await;
    let message = b"From: a@sender.example\r\nSubject: undated\r\n\r\nbody\r\n";
    let reply = kala
        .client()
        .await
        .send_mail("a@sender.example", &["it@prokuroria.example"], message)
        .await;
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    let held = kala.quarantined().await;
    assert_eq!(held.len(), 1);
    assert!(held[0].raw.ends_with(message));
    assert!(
        !kala.data_dir.path().join("kala.db").exists(),
        "nothing written to SQLite"
    );
}

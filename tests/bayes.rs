//! The Bayes classifier's storage and learning sources, against real stores: SQLite,
//! PostgreSQL and Redis give the same probabilities for the same lessons; learning is
//! idempotent from `kala learn` and from the quarantine; a release teaches ham exactly once;
//! each store keeps the tokenizer version its model was learned with.

mod support;
mod support_postgres;
mod support_redis;

use std::process::Command;
use std::sync::Arc;

use kala::bayes::{Classifier, Model, Totals};
use kala::message::Message;
use kala::store::bayes::{Learned, TokenStore};
use support::{Kala, Sink};

/// A small vocabulary per class, so 210 messages of each teach a model something.
fn synthetic(n: usize, spam: bool) -> Vec<u8> {
    let words: &[&str] = if spam {
        &[
            "winner", "prize", "claim", "urgent", "lottery", "transfer", "fitim", "dobitak",
        ]
    } else {
        &[
            "meeting", "backup", "server", "report", "exchange", "takim", "sastanak", "raport",
        ]
    };
    let pick = |k: usize| words[(n * 7 + k * 3) % words.len()];
    format!(
        "From: {} <sender{n}@example.org>\r\nTo: it@prokuroria.example\r\nSubject: {} {}\r\n\
         Message-ID: <{n}.{spam}@example.org>\r\n\r\n{} {} {} {}\r\n",
        if spam { "Promo" } else { "Colleague" },
        pick(0),
        pick(1),
        pick(2),
        pick(3),
        pick(4),
        n
    )
    .into_bytes()
}

async fn teach(store: &dyn TokenStore) {
    let lessons: Vec<_> = (0..210)
        .flat_map(|n| [(n, true), (n, false)])
        .map(|(n, spam)| {
            let raw = synthetic(n, spam);
            kala::bayes::lesson(&Message::parse(&raw, raw.len()), spam)
        })
        .collect();
    let outcomes = store.learn(&lessons, kala::store::now()).await.unwrap();
    assert!(outcomes.iter().all(|o| *o == Learned::New));
    // Learning the same messages again changes nothing.
    let again = store
        .learn(&lessons[..50], kala::store::now())
        .await
        .unwrap();
    assert!(
        again.iter().all(|o| *o == Learned::AlreadyKnown),
        "{again:?}"
    );
    assert_eq!(
        store.totals().await.unwrap(),
        Totals {
            spam: 210,
            ham: 210
        }
    );
}

async fn probabilities(store: Arc<dyn TokenStore>) -> Vec<Option<f64>> {
    let model = Model::new(store, Classifier::default());
    let mut out = Vec::new();
    for (n, spam) in [(1000, true), (1001, false), (1002, true)] {
        let raw = synthetic(n, spam);
        out.push(
            model
                .probability(&Message::parse(&raw, raw.len()))
                .await
                .unwrap(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_postgresql_and_redis_give_the_same_probabilities_for_the_same_lessons() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = kala::store::Store::open(&kala::store::Store::sqlite_url(dir.path()))
        .await
        .unwrap();
    let postgres_server = support_postgres::Postgres::start();
    let postgres = kala::store::Store::open(&postgres_server.database("bayes").await)
        .await
        .unwrap();
    let redis_server = support_redis::Redis::start();
    let redis = kala::store::redis::RedisTokens::new(
        kala::store::redis::RedisState::connect(&redis_server.url)
            .await
            .unwrap(),
        86_400,
    );
    let stores: Vec<(&str, Arc<dyn TokenStore>)> = vec![
        ("sqlite", Arc::new(sqlite)),
        ("postgres", Arc::new(postgres)),
        ("redis", Arc::new(redis)),
    ];
    let mut seen = Vec::new();
    for (name, store) in &stores {
        teach(store.as_ref()).await;
        let p = probabilities(store.clone()).await;
        assert!(p[0].unwrap() > 0.9 && p[1].unwrap() < 0.1, "{name}: {p:?}");
        seen.push((name, p));
    }
    for (name, p) in &seen[1..] {
        assert_eq!(p, &seen[0].1, "{name} differs from {}", seen[0].0);
    }
    for (name, store) in &stores {
        forget_and_teach_again(name, store.as_ref()).await;
    }
    for (name, store) in &stores {
        the_tokenizer_version_is_kept_and_an_older_one_reported(name, store.clone()).await;
    }
}

/// A model learned from nothing records the tokenizer that made its tokens; one learned by an
/// older tokenizer (or before the record) is reported, and a reset clears the record.
async fn the_tokenizer_version_is_kept_and_an_older_one_reported(
    name: &str,
    store: Arc<dyn TokenStore>,
) {
    let model = Model::new(store.clone(), Classifier::default());
    // `teach` went around the model, as a Kala older than the record did.
    assert_eq!(store.tokenizer().await.unwrap(), 0, "{name}");
    assert_eq!(model.outdated_tokenizer().await.unwrap(), Some(0), "{name}");
    let warning = model.tokenizer_warning().await.unwrap().unwrap();
    assert!(warning.contains("kala learn --reset"), "{name}: {warning}");

    store.reset().await.unwrap();
    assert_eq!(
        model.outdated_tokenizer().await.unwrap(),
        None,
        "{name}: empty"
    );
    let raw = synthetic(0, true);
    let lesson = kala::bayes::lesson(&Message::parse(&raw, raw.len()), true);
    model.learn(&[lesson]).await.unwrap();
    assert_eq!(
        store.tokenizer().await.unwrap(),
        kala::bayes::TOKENIZER_VERSION,
        "{name}"
    );
    assert_eq!(model.outdated_tokenizer().await.unwrap(), None, "{name}");

    store.set_tokenizer(2).await.unwrap();
    assert_eq!(model.outdated_tokenizer().await.unwrap(), Some(2), "{name}");
    let warning = model.tokenizer_warning().await.unwrap().unwrap();
    assert!(warning.contains("tokenizer version 2"), "{name}: {warning}");
    store.reset().await.unwrap();
    assert_eq!(store.tokenizer().await.unwrap(), 0, "{name}: after reset");
}

/// After a reset the model knows nothing, and the same mail is learned anew.
async fn forget_and_teach_again(name: &str, store: &dyn TokenStore) {
    let raw = synthetic(0, true);
    let tokens = kala::bayes::tokenizer::tokens(&Message::parse(&raw, raw.len()));
    assert!(store.counts(&tokens).await.unwrap()[0].spam > 0, "{name}");
    let forgotten = store.reset().await.unwrap();
    assert!(
        forgotten >= tokens.len() as u64,
        "{name}: {forgotten} tokens"
    );
    assert_eq!(store.totals().await.unwrap(), Totals::default(), "{name}");
    assert!(
        store
            .counts(&tokens)
            .await
            .unwrap()
            .iter()
            .all(|c| c.spam == 0 && c.ham == 0),
        "{name}"
    );
    teach(store).await;
}

#[test]
fn kala_learn_reads_a_directory_a_second_run_learns_nothing_new_and_reset_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let mail = dir.path().join("mail");
    std::fs::create_dir(&mail).unwrap();
    for n in 0..5 {
        std::fs::write(mail.join(format!("{n}.eml")), synthetic(n, true)).unwrap();
    }
    let config = dir.path().join("kala.toml");
    std::fs::write(
        &config,
        format!("data_dir = {:?}\n", dir.path().display().to_string()),
    )
    .unwrap();
    let run = |options: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_kala"))
            .arg("learn")
            .args(options)
            .arg(&mail)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = run(&["--spam"]);
    assert!(first.contains("5 messages as spam: 5 learned"), "{first}");
    let second = run(&["--spam"]);
    assert!(
        second.contains("0 learned, 0 moved from the other class, 5 already known"),
        "{second}"
    );
    assert!(second.contains("learned 5 spam and 0 ham"), "{second}");
    // After a reset the same mail is learned anew, and counted once.
    let reset = run(&["--reset", "--spam"]);
    assert!(reset.contains("the model was reset"), "{reset}");
    assert!(reset.contains("5 messages as spam: 5 learned"), "{reset}");
    assert!(reset.contains("learned 5 spam and 0 ham"), "{reset}");
}

/// Every message without a Date header is quarantined (KALA_MISSING_DATE scores 1).
const HOLD_UNDATED: (&str, &str) = ("policy", "tag_score = 0.5\nquarantine_score = 1.0");

#[tokio::test(flavor = "multi_thread")]
async fn a_message_released_from_quarantine_is_learned_as_ham_exactly_once() {
    let sink = Sink::start().await;
    let kala = Kala::start(sink.addr, &[HOLD_UNDATED]).await;
    let message = b"From: Ana <ana@sender.example>\r\nTo: it@prokuroria.example\r\n\
        Subject: Backup schedule\r\nMessage-ID: <backup.1@sender.example>\r\n\r\n\
        The backup window moves to 02:00.\r\n";
    let shared = kala.server.as_ref().unwrap().shared.clone();
    let store = kala::store::Store::open(&kala.store_url).await.unwrap();
    // Held twice (the sender retried, or a colleague forwarded the same message), released
    // both times, and marked as ham once more by a reviewer: one lesson.
    for round in 1..=2 {
        let reply = kala
            .client()
            .await
            .send_mail("ana@sender.example", &["it@prokuroria.example"], message)
            .await;
        assert!(reply.starts_with("250 "), "{reply}");
        let id = kala.quarantined().await.last().unwrap().id.clone();
        let released = shared
            .quarantine
            .release(&id, &shared.downstream)
            .await
            .unwrap();
        assert!(released.delivered, "{released:?}");
        sink.wait_for(round).await;
        shared
            .quarantine
            .mark(&id, kala::quarantine::Mark::Ham)
            .await
            .unwrap();
        assert_eq!(
            store.totals().await.unwrap(),
            Totals { spam: 0, ham: 1 },
            "round {round}"
        );
    }
    // A reviewer who then marks it as spam moves the one lesson over.
    let id = kala.quarantined().await[0].id.clone();
    shared
        .quarantine
        .mark(&id, kala::quarantine::Mark::Spam)
        .await
        .unwrap();
    assert_eq!(store.totals().await.unwrap(), Totals { spam: 1, ham: 0 });
}

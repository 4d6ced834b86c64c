use super::*;
use crate::verdict::Action;

async fn quarantine() -> (tempfile::TempDir, Quarantine) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&Store::sqlite_url(dir.path())).await.unwrap();
    (dir, Quarantine::new(store, Retention::default()))
}

fn verdict(score: f64, symbols: &[(&str, f64)], forced_by: Option<&str>) -> Verdict {
    Verdict {
        action: Action::Quarantine,
        score,
        symbols: symbols
            .iter()
            .map(|(n, s)| Symbol::new(*n, *s, format!("{n} described")))
            .collect(),
        forced_by: forced_by.map(String::from),
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
    q.hold(
        &HoldRecord {
            envelope: &envelope,
            verdict: v,
        },
        &headline,
        raw,
    )
    .await
    .unwrap();
    envelope.queue_id
}

#[tokio::test]
async fn holds_the_raw_message_and_every_symbol() {
    let (_dir, q) = quarantine().await;
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
}

#[tokio::test]
async fn filters_narrow_the_list_and_count() {
    let (_dir, q) = quarantine().await;
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

    let count = |f: Filter| {
        let q = q.clone();
        async move { q.list(&f).await.unwrap().total }
    };
    assert_eq!(count(Filter::default()).await, 3);
    let by = |f: fn(&mut Filter)| {
        let mut filter = Filter::default();
        f(&mut filter);
        filter
    };
    assert_eq!(count(by(|f| f.category = Some(Category::Virus))).await, 1);
    assert_eq!(count(by(|f| f.category = Some(Category::Banned))).await, 1);
    assert_eq!(
        count(by(|f| f.sender = Some("SPAM.example".into()))).await,
        2
    );
    assert_eq!(count(by(|f| f.recipient = Some("ann@".into()))).await, 2);
    assert_eq!(
        count(by(|f| f.subject = Some("invoice YOUR".into()))).await,
        1
    );
    assert_eq!(count(by(|f| f.subject = Some("100%".into()))).await, 1);
    assert_eq!(
        count(by(|f| f.subject = Some("%".into()))).await,
        1,
        "% is literal"
    );
    assert_eq!(count(by(|f| f.min_score = Some(5.0))).await, 1);
    assert_eq!(count(by(|f| f.symbol = Some("VIRUS".into()))).await, 1);
    let page = q
        .list(&by(|f| {
            f.sort = Sort::HighestScore;
            f.limit = 1;
        }))
        .await
        .unwrap();
    assert_eq!((page.total, page.messages.len()), (3, 1));
    assert_eq!(page.messages[0].subject, "Cheap 100% watches");
}

#[tokio::test]
async fn delete_drops_the_body_and_purge_drops_expired_rows() {
    let (_dir, q) = quarantine().await;
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
    let later = now() + 31 * 24 * 3600;
    assert_eq!(q.purge_expired(later).await.unwrap(), 2);
    assert!(q.get(&kept).await.unwrap().is_none());
    let everything = Filter {
        state: None,
        ..Filter::default()
    };
    assert_eq!(q.list(&everything).await.unwrap().total, 0);
}

#[test]
fn categories_follow_the_symbol_that_forced_the_action() {
    assert_eq!(Category::of(&verdict(20.0, &[], None)), Category::Spam);
    assert_eq!(
        Category::of(&verdict(0.0, &[], Some("VIRUS"))),
        Category::Virus
    );
    assert_eq!(
        Category::of(&verdict(0.0, &[], Some("ARCHIVE_BANNED_ENTRY"))),
        Category::Banned
    );
    assert_eq!(
        Category::of(&verdict(0.0, &[], Some("ARCHIVE_ENCRYPTED"))),
        Category::Policy
    );
}

//! Backup and restore: an archive taken while 1,000 messages are being sent restores into a
//! fresh data directory with every message acknowledged before the backup began, the
//! accounts, the lists, the config and the rules; a damaged archive is refused.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{Kala, Sink, kala_cli};

const MESSAGES: usize = 1000;
const SENDERS: usize = 4;

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_taken_under_load_restores_with_nothing_lost() {
    let sink = Sink::start().await;
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(rules.path().join("10_local.cf"), "body LOCAL_X /zzqqzz/\n").unwrap();
    let rules_line = format!("dirs = [{:?}]\nwatch = false", rules.path());
    // Every message is held (no Date header scores 1): the quarantine is what must survive.
    let policy = "tag_score = 0.5\nquarantine_score = 1.0";
    let kala = Kala::start(sink.addr, &[("rules", &rules_line), ("policy", policy)]).await;
    kala.add_user("rita", "correct horse battery", "reviewer")
        .await;
    let store = kala::store::Store::open(&kala.store_url).await.unwrap();
    store
        .list_add(
            kala::store::lists::ListKind::Block,
            "@spam.example",
            "",
            "rita",
        )
        .await
        .unwrap();
    let config = kala.data_dir.path().join("kala.toml");
    let config_text = format!(
        "data_dir = {:?}\n[rules]\n{rules_line}\n[policy]\n{policy}\n",
        kala.data_dir.path().display().to_string()
    );
    std::fs::write(&config, &config_text).unwrap();

    // Senders: each reply's queue id and when it came.
    let acked: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let (addr, acked) = (kala.addr, acked.clone());
        senders.push(tokio::spawn(async move {
            let mut client = support::Client::connect(addr).await;
            for n in 0..MESSAGES / SENDERS {
                let message = format!(
                    "From: a@sender.example\r\nSubject: load {s}-{n}\r\nMessage-ID: <{s}.{n}@sender.example>\r\n\r\nbody\r\n"
                );
                let reply = client
                    .send_mail("a@sender.example", &["it@prokuroria.example"], message.as_bytes())
                    .await;
                let id = reply
                    .strip_prefix("250 2.0.0 Ok: queued as ")
                    .unwrap_or_else(|| panic!("not held: {reply}"))
                    .trim()
                    .to_string();
                acked.lock().unwrap().push((id, Instant::now()));
            }
        }));
    }
    while acked.lock().unwrap().len() < MESSAGES / 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let backup_dir = tempfile::tempdir().unwrap();
    let archive = backup_dir.path().join("kala.zip");
    let started = Instant::now();
    let (ok, out) = {
        let (archive, config) = (archive.clone(), config.clone());
        tokio::task::spawn_blocking(move || {
            kala_cli(&config, &["backup", archive.to_str().unwrap()])
        })
        .await
        .unwrap()
    };
    assert!(ok, "{out}");
    let during = acked.lock().unwrap().len();
    for sender in senders {
        sender.await.unwrap();
    }
    let before: Vec<String> = acked
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, at)| *at < started)
        .map(|(id, _)| id.clone())
        .collect();
    assert!(
        during < MESSAGES,
        "the backup ran while mail flowed ({during} of {MESSAGES} sent when it ended)"
    );
    assert!(before.len() >= MESSAGES / 3, "{}", before.len());

    // A damaged copy is refused.
    let damaged = backup_dir.path().join("damaged.zip");
    let mut bytes = std::fs::read(&archive).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&damaged, bytes).unwrap();
    std::fs::copy(
        archive.with_extension("zip.sha256"),
        damaged.with_extension("zip.sha256"),
    )
    .unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let restore_config = fresh.path().join("restore.toml");
    std::fs::write(
        &restore_config,
        format!(
            "data_dir = {:?}\n",
            fresh.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let (ok, out) = kala_cli(&restore_config, &["restore", damaged.to_str().unwrap()]);
    assert!(!ok && out.contains("damaged"), "{out}");

    // The genuine archive, into a fresh data directory.
    let (ok, out) = kala_cli(&restore_config, &["restore", archive.to_str().unwrap()]);
    assert!(ok, "{out}");
    let data = fresh.path().join("data");
    let restored = kala::store::Store::open(&kala::store::Store::sqlite_url(&data))
        .await
        .unwrap();
    let quarantine =
        kala::quarantine::Quarantine::new(restored.clone(), kala::quarantine::Retention::default());
    let page = quarantine
        .list(&kala::quarantine::Filter {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let held: std::collections::HashSet<String> = page.messages.into_iter().map(|m| m.id).collect();
    for id in &before {
        assert!(
            held.contains(id),
            "{id} was acknowledged before the backup and is missing"
        );
    }
    let one = quarantine
        .raw(&before[0])
        .await
        .unwrap()
        .expect("the held bytes");
    assert!(String::from_utf8_lossy(&one).contains("Subject: load"));
    let users = kala::web::auth::Accounts::new(restored.clone())
        .list()
        .await
        .unwrap();
    assert!(users.iter().any(|u| u.name == "rita"));
    let lists = restored.list_entries().await.unwrap();
    assert!(lists.iter().any(|e| e.sender == "@spam.example"));
    assert_eq!(
        std::fs::read_to_string(data.join("restored/kala.toml")).unwrap(),
        config_text
    );
    assert_eq!(
        std::fs::read_to_string(data.join("restored/rules/0/10_local.cf")).unwrap(),
        "body LOCAL_X /zzqqzz/\n"
    );
    assert!(out.contains("restored"), "{out}");

    // Restoring over a store that exists is refused.
    let (ok, out) = kala_cli(&restore_config, &["restore", archive.to_str().unwrap()]);
    assert!(!ok && out.contains("fresh data directory"), "{out}");
}

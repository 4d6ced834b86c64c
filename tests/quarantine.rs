//! The quarantine as an admin on the server uses it: messages held over SMTP, then listed,
//! shown, released to the downstream and deleted with `kala quarantine`, on the same store
//! the gateway writes.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use support::{Kala, Sink, SinkBehavior};

/// Every message without a Date header is quarantined (KALA_MISSING_DATE scores 1).
const HOLD_UNDATED: (&str, &str) = ("policy", "tag_score = 0.5\nquarantine_score = 1.0");

fn undated(subject: &str) -> Vec<u8> {
    format!(
        "From: Ana <ana@sender.example>\r\nTo: it@prokuroria.example\r\nSubject: {subject}\r\n\
         Message-ID: <{}@sender.example>\r\n\r\nHello,\r\n.leading dot line\r\nbye\r\n",
        subject.replace(' ', ".")
    )
    .into_bytes()
}

/// A config for the CLI: the gateway's data directory, and `downstream` to release to.
fn cli_config(data_dir: &Path, downstream: SocketAddr) -> PathBuf {
    let path = data_dir.join("cli.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = {:?}\n[downstream]\naddress = \"{downstream}\"\nconnect_timeout = \"2s\"\n\
             [rules]\ndirs = []\n[antivirus]\nenabled = false\n",
            data_dir.display().to_string()
        ),
    )
    .unwrap();
    path
}

/// Runs `kala quarantine ARGS --config CONFIG`; returns (success, stdout, stderr).
fn kala_quarantine(config: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kala"))
        .arg("quarantine")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn hold_three(kala: &Kala) -> Vec<String> {
    for subject in ["Invoice March", "Cheap watches", "Invoice April"] {
        let reply = kala
            .client()
            .await
            .send_mail(
                "ana@sender.example",
                &["it@prokuroria.example"],
                &undated(subject),
            )
            .await;
        assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    }
    kala.quarantined().await.into_iter().map(|h| h.id).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn list_show_release_and_delete_from_the_command_line() {
    let sink = Sink::start().await;
    let kala = Kala::start(sink.addr, &[HOLD_UNDATED]).await;
    let ids = hold_three(&kala).await;
    assert_eq!(ids.len(), 3);
    assert!(sink.deliveries().is_empty(), "held, not relayed");
    let config = cli_config(kala.data_dir.path(), sink.addr);

    let (ok, out, err) = kala_quarantine(&config, &["list"]);
    assert!(ok, "{err}");
    assert!(out.contains("3 shown of 3 matching"), "{out}");
    assert!(
        out.contains("Cheap watches") && out.contains("ana@sender.example"),
        "{out}"
    );

    let (ok, out, err) = kala_quarantine(&config, &["list", "--subject", "invoice", "--json"]);
    assert!(ok, "{err}");
    let page: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(page["total"], 2, "{out}");

    let (ok, out, err) = kala_quarantine(&config, &["show", &ids[0]]);
    assert!(ok, "{err}");
    assert!(
        out.contains("KALA_MISSING_DATE") && out.contains("Subject:     Invoice March"),
        "{out}"
    );

    // Release: the downstream receives exactly what was held.
    let held = kala.quarantined().await;
    let (ok, out, err) = kala_quarantine(&config, &["release", &ids[0]]);
    assert!(ok, "{out}{err}");
    assert!(out.contains(&format!("{}: released: 250", ids[0])), "{out}");
    let delivered = sink.wait_for(1).await;
    assert_eq!(delivered[0].data, held[0].raw, "released byte for byte");
    assert!(held[0].raw.ends_with(&undated("Invoice March")));
    assert_eq!(delivered[0].mail_from, "ana@sender.example");
    assert_eq!(delivered[0].rcpt_to, ["it@prokuroria.example"]);

    // Released once only.
    let (ok, out, _) = kala_quarantine(&config, &["release", &ids[0]]);
    assert!(!ok && out.contains("already released"), "{out}");

    // Bulk delete of a search result.
    let (ok, out, err) =
        kala_quarantine(&config, &["delete", "--matching", "--subject", "invoice"]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 1, "only the held invoice: {out}");
    let (_, out, _) = kala_quarantine(&config, &["list", "--json"]);
    let page: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(page["total"], 1);
    assert_eq!(page["messages"][0]["subject"], "Cheap watches");
    let (_, out, _) = kala_quarantine(&config, &["show", "--raw", &ids[2]]);
    assert!(out.is_empty(), "a deleted message's body is gone: {out}");

    let (ok, _, err) = kala_quarantine(&config, &["delete"]);
    assert!(!ok && err.contains("--matching"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_the_downstream_refuses_stays_held_with_the_reply_shown() {
    let sink = Sink::start().await;
    let kala = Kala::start(sink.addr, &[HOLD_UNDATED]).await;
    let ids = hold_three(&kala).await;

    let refusing = Sink::start_with(SinkBehavior {
        rcpt_reply: Arc::new(|_| "550 5.7.1 Policy says no".to_string()),
        ..SinkBehavior::default()
    })
    .await;
    let config = cli_config(kala.data_dir.path(), refusing.addr);
    let (ok, out, _) = kala_quarantine(&config, &["release", &ids[1]]);
    assert!(!ok, "a refused release is a failure: {out}");
    assert!(out.contains("NOT released, still held: 550 5.7.1"), "{out}");
    let (_, out, _) = kala_quarantine(&config, &["show", &ids[1]]);
    assert!(
        out.contains("state:       held") && out.contains("downstream:  550 5.7.1 Policy says no"),
        "{out}"
    );

    // Nothing listening: the error is recorded the same way.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = closed.local_addr().unwrap();
    drop(closed);
    let config = cli_config(kala.data_dir.path(), nowhere);
    let (ok, out, _) = kala_quarantine(&config, &["release", &ids[1]]);
    assert!(!ok && out.contains("cannot connect to downstream"), "{out}");
    assert!(refusing.deliveries().is_empty() && sink.deliveries().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unwritable_store_gives_451_and_nothing_is_lost() {
    let sink = Sink::start().await;
    let kala = Kala::start(sink.addr, &[HOLD_UNDATED]).await;
    // Break the store under the running gateway: its tables go away.
    let url = kala::store::Store::sqlite_url(kala.data_dir.path());
    let store = kala::store::Store::open(&url).await.unwrap();
    sqlx::raw_sql("DROP TABLE quarantine_raw")
        .execute(store.pool())
        .await
        .unwrap();
    let reply = kala
        .client()
        .await
        .send_mail(
            "ana@sender.example",
            &["it@prokuroria.example"],
            &undated("Lost?"),
        )
        .await;
    assert!(
        reply.starts_with("451 4.3.0"),
        "the sender retries: {reply}"
    );
    assert!(sink.deliveries().is_empty());
}

#[test]
fn the_first_admin_is_made_from_the_command_line_never_with_a_default_password() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kala.toml");
    std::fs::write(
        &config,
        format!("data_dir = {:?}\n", dir.path().display().to_string()),
    )
    .unwrap();
    let user = |args: &[&str], stdin: &str| {
        use std::io::Write as _;
        let mut child = Command::new(env!("CARGO_BIN_EXE_kala"))
            .arg("user")
            .args(args)
            .arg("--config")
            .arg(&config)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The command may exit before reading input it does not need (`exists already`);
        // the write then fails with a broken pipe, and its output is what the test checks.
        if let Err(e) = child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = user(&["list"], "");
    assert!(
        ok && out.trim().is_empty(),
        "no account exists at first: {out}"
    );
    let (ok, out) = user(&["add", "--role", "admin", "ana"], "short\n");
    assert!(!ok && out.contains("at least 10 characters"), "{out}");
    let (ok, out) = user(&["add", "--role", "admin", "ana"], "a long passphrase\n");
    assert!(ok, "{out}");
    let (ok, out) = user(&["add", "--role", "admin", "ana"], "a long passphrase\n");
    assert!(!ok && out.contains("exists already"), "{out}");
    let (ok, out) = user(&["add", "--role", "boss", "bob"], "a long passphrase\n");
    assert!(!ok && out.contains("not a role"), "{out}");
    let (ok, out) = user(&["list"], "");
    assert!(ok && out.contains("ana") && out.contains("admin"), "{out}");
    let (ok, out) = user(&["token", "ana", "--label", "backup script"], "");
    assert!(ok && out.trim().len() == 64, "a 256-bit token: {out}");
}

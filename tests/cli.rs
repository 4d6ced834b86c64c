//! The `kala` binary as an admin runs it: config check, scan, and serve (embedded defaults,
//! structured log lines, graceful stop on SIGTERM).

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Client, Sink, clean_message};

fn kala() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kala"))
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(name)
        .display()
        .to_string()
}

#[test]
fn config_check_accepts_the_example_and_names_key_and_file_on_error() {
    let out = kala()
        .args(["config", "check", &fixture("kala.example.toml")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: config: "));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[downstream]\naddress = \"exchange.example.org:25\"\nretries = 3\n",
    )
    .unwrap();
    let out = kala().args(["config", "check"]).arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml: downstream.retries: ") && err.contains("unknown field"),
        "{err}"
    );
}

#[test]
fn scan_prints_the_verdict_in_human_and_json_form() {
    // No rule files: only the structural checks, so the figures below are fixed.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kala.toml");
    std::fs::write(
        &config,
        "[rules]\ndirs = []\n[antivirus]\nenabled = false\n",
    )
    .unwrap();
    let out = kala()
        .args(["scan", "--config"])
        .arg(&config)
        .arg(fixture("fixtures/mail/missing-headers.eml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("action accept, score "), "{text}");
    assert!(
        text.contains("KALA_MISSING_FROM") && text.contains("Message has no From header"),
        "{text}"
    );

    let out = kala()
        .args(["scan", "--json", "--config"])
        .arg(&config)
        .arg(fixture("fixtures/mail/missing-headers.eml"))
        .output()
        .unwrap();
    let verdict: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verdict["action"], "accept");
    assert!(verdict["score"].as_f64().unwrap() >= 4.0);
    let names: Vec<&str> = verdict["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names[..3],
        [
            "KALA_MISSING_FROM",
            "KALA_MISSING_DATE",
            "KALA_MISSING_MESSAGE_ID"
        ]
    );
}

/// A `kala serve` child whose stderr (the log) is collected line by line.
struct Served {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Served {
    fn start(mut command: Command) -> Served {
        let mut child = command
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Served {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a log line containing `needle`.
    fn wait_for_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                self.seen.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
        }
        panic!(
            "no log line with `{needle}`; log so far:\n{}",
            self.seen.join("\n")
        );
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "kala did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

#[test]
fn serve_without_config_runs_on_embedded_defaults_and_stops_on_sigterm() {
    let cwd = tempfile::tempdir().unwrap();
    let mut command = kala();
    command
        .arg("serve")
        .current_dir(cwd.path())
        .env_remove("KALA_CONFIG")
        .env_remove("KALA_LOG");
    let mut served = Served::start(command);
    served.wait_for_line("running on embedded defaults");
    let summary = served.wait_for_line("config: embedded defaults");
    assert!(
        summary.contains("SMTP on 127.0.0.1:2525")
            && summary.contains("data in ./var")
            && summary.contains("downstream 127.0.0.1:25"),
        "{summary}"
    );
    served.wait_for_line("listening for SMTP");
    assert!(
        cwd.path().join("var/tls/cert.pem").exists(),
        "self-signed certificate kept in the data dir"
    );
    assert!(served.terminate().success());
    served.wait_for_line("stopped");
}

/// Runs `kala serve` with `log` added to its `[log]` section, sends one message, and returns
/// the message's JSON log line.
async fn message_log_line(log: &str) -> serde_json::Value {
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("kala.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[smtp]\nlisten = [\"127.0.0.1:{port}\"]\n[downstream]\naddress = \"{}\"\n[log]\nformat = \"json\"\n{log}\n[antivirus]\nenabled = false\n",
            dir.path().join("var").display().to_string(),
            sink.addr
        ),
    )
    .unwrap();
    let mut command = kala();
    command
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env_remove("KALA_LOG");
    let mut served = tokio::task::spawn_blocking(move || {
        let mut s = Served::start(command);
        s.wait_for_line("listening for SMTP");
        s
    })
    .await
    .unwrap();

    let mut client = Client::connect(format!("127.0.0.1:{port}").parse().unwrap()).await;
    let r = client
        .send_mail(
            "ana@sender.example",
            &["it@prokuroria.example"],
            &clean_message("logged", "hi\r\n"),
        )
        .await;
    assert!(r.starts_with("250"), "{r}");
    let line = tokio::task::spawn_blocking(move || {
        let line = served.wait_for_line("\"queue_id\"");
        assert!(served.terminate().success());
        line
    })
    .await
    .unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[tokio::test]
async fn serve_logs_one_json_line_per_message() {
    let entry = message_log_line("").await;
    let line = entry.to_string();
    for field in [
        "queue_id",
        "client_ip",
        "helo",
        "sender",
        "recipients",
        "size",
        "score",
        "symbols",
        "action",
        "reason",
        "reply",
        "ms",
    ] {
        assert!(entry.get(field).is_some(), "`{field}` missing in {line}");
    }
    assert_eq!(entry["sender"], "ana@sender.example");
    assert_eq!(entry["recipients"], "it@prokuroria.example");
    assert_eq!(entry["action"], "accept");
    assert!(entry["reply"].as_str().unwrap().starts_with("250 2.6.0"));
    // Privacy by default: no subject, no Message-ID, no body text in the log.
    assert!(
        entry.get("subject").is_none() && !line.contains("logged"),
        "{line}"
    );
    assert!(!line.contains("hi"), "{line}");

    // An admin who wants them turns them on.
    let entry = message_log_line("message_details = true").await;
    assert_eq!(entry["subject"], "logged");
    assert!(
        entry["message_id"]
            .as_str()
            .unwrap()
            .ends_with("@sender.example>")
    );
}

#[test]
fn scan_explain_shows_where_a_rule_is_and_what_it_matched() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.cf"),
        "body T_PRIZE /claim your prize/i\nscore T_PRIZE 2.5\ndescribe T_PRIZE Prize claim\n",
    )
    .unwrap();
    let config = dir.path().join("kala.toml");
    std::fs::write(
        &config,
        format!(
            "[rules]\ndirs = [{:?}]\n[antivirus]\nenabled = false\n",
            dir.path().display().to_string()
        ),
    )
    .unwrap();
    let out = kala()
        .args(["scan", "--explain", "--config"])
        .arg(&config)
        .arg(fixture("fixtures/mail/missing-headers.eml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("T_PRIZE") && text.contains("2.50  Prize claim"),
        "{text}"
    );
    assert!(
        text.contains("t.cf:1") && text.contains("matched: \"Claim your prize\""),
        "{text}"
    );
}

#[test]
fn rules_check_prints_the_table_and_fails_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ok.cf"),
        "body A /a/\nheader B Subject =~ /b/\nmeta C A && B\nbody E eval:check_x()\n",
    )
    .unwrap();
    let out = kala()
        .args(["rules", "check"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("type") && text.contains("regex") && text.contains("not running"),
        "{text}"
    );
    assert!(
        text.contains("eval:check_x has no native check in Kala"),
        "{text}"
    );

    std::fs::write(dir.path().join("bad.cf"), "body BROKEN /(unclosed/\n").unwrap();
    let out = kala()
        .args(["rules", "check"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.cf:1: rule BROKEN"), "{err}");
}

/// Bulk mail whose headers alone give it away (a Message-ID that imitates Outlook's, an
/// `ADV:` subject padded before a code, a Windows script's X-Mailer), and plain ham.
fn eval_corpus(dir: &Path, group: &str, spam: bool, count: usize) -> String {
    let path = dir.join(group);
    std::fs::create_dir_all(&path).unwrap();
    for i in 0..count {
        let text = if spam {
            format!(
                "From: \"RATES DIRECT\" <offers{i}@rates.example>\r\nTo: reader@ours.example\r\n\
                 Subject: ADV: Lower your rate today        {i}x7kq\r\n\
                 Date: Wed, 18 Nov 2026 09:13:58 +0000\r\n\
                 Message-ID: <{i:04}c1$0000{i:04}$0000abcd@rates>\r\n\
                 X-Mailer: Microsoft CDO for Windows 2000\r\n\r\n\
                 Dear friend, lower your mortgage payments today, even with bad credit.\r\n"
            )
        } else {
            format!(
                "From: Backup Team <backup@ours.example>\r\nTo: it@ours.example\r\n\
                 Subject: Minutes of backup meeting {i}\r\n\
                 Date: Wed, 18 Nov 2026 10:00:00 +0100\r\n\
                 Message-ID: <minutes-{i}@ours.example>\r\n\r\n\
                 The restore test of the file server passed; tapes rotate on Friday.\r\n"
            )
        };
        std::fs::write(path.join(format!("{i}.eml")), text).unwrap();
    }
    path.display().to_string()
}

#[test]
fn eval_reports_caught_and_flagged_with_and_without_bayes_and_the_curve() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kala.toml");
    // Four messages of each class are enough for a verdict here (the default wants 200).
    std::fs::write(&config, "[bayes]\nmin_learned = 4\n").unwrap();
    let args = [
        "eval".to_string(),
        "--config".into(),
        config.display().to_string(),
        "--train-ham".into(),
        eval_corpus(dir.path(), "train-ham", false, 4),
        "--train-spam".into(),
        eval_corpus(dir.path(), "train-spam", true, 4),
        "--test-ham".into(),
        eval_corpus(dir.path(), "test-ham", false, 3),
        "--test-spam".into(),
        eval_corpus(dir.path(), "test-spam", true, 3),
    ];
    let out = kala().args(&args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "trained on 4 spam and 4 ham; tested 3 spam and 3 ham",
        "at the tag threshold 5.0: spam caught 100.0 % (3 of 3), ham flagged 0.00 % (0 of 3)",
        "without the Bayes symbol (rules and checks alone): spam caught 100.0 % (3 of 3), ham flagged 0.00 % (0 of 3)",
        "threshold  spam caught        ham flagged",
    ] {
        assert!(text.contains(line), "no `{line}` in:\n{text}");
    }
    assert!(text.contains("messages per CPU-second"), "{text}");
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("15.0 ")),
        "{text}"
    );

    // --json: one line per test message, with the Bayes verdict and its score apart.
    let out = kala().args(&args).arg("--json").output().unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    for line in &lines {
        let spam = line["spam"].as_bool().unwrap();
        let symbols = line["symbols"].as_str().unwrap();
        assert_eq!(symbols.contains("KALA_MSGID_FAKE_OUTLOOK"), spam, "{line}");
        let bayes = line["bayes"].as_f64().expect("the model gave a verdict");
        assert!(if spam { bayes > 0.5 } else { bayes < 0.5 }, "{line}");
        let score = line["bayes_score"].as_f64().unwrap();
        assert!(if spam { score > 0.0 } else { score < 0.0 }, "{line}");
    }
}

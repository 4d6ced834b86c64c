//! Rule management against a running gateway: reloads while mail flows (broken sets never
//! go live), reloading on file change and SIGHUP, rollback, signed update bundles, rule tests
//! from the command line, hit statistics and the dry run.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kala::control::{self, Request};
use support::{Kala, Sink, kala_cli};

const MAGIC: &[u8] = b"From: Ana <ana@sender.example>\r\nTo: it@prokuroria.example\r\nSubject: report\r\nDate: Sun, 29 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m@sender.example>\r\n\r\nThe magic words are here.\r\n";

/// Version `k` of the generated rule file, good or broken in one of two ways.
fn generation(k: usize) -> (String, Kind) {
    let kind = match k % 5 {
        1 => Kind::Syntax,
        3 => Kind::FailingTest,
        _ => Kind::Good,
    };
    let text = match kind {
        Kind::Good => format!(
            "body GEN_{k} /magic/\nscore GEN_{k} 0.1\ndescribe GEN_{k} generation {k}\n\
             test_message tests/magic.eml GEN_{k}\n"
        ),
        Kind::Syntax => format!("body GEN_{k} /magic(/\nscore GEN_{k} 0.1\n"),
        // Compiles, but its own test says it must fire on the fixture, and it does not.
        Kind::FailingTest => {
            format!("body GEN_{k} /nowhere/\ntest_message tests/magic.eml GEN_{k}\n")
        }
    };
    (text, kind)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Good,
    Syntax,
    FailingTest,
}

/// Writes a file the way an editor that saves safely does (temporary file, rename), so a
/// reader never sees half of it.
fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn rules_dir(root: &Path) -> std::path::PathBuf {
    let dir = root.join("rules");
    std::fs::create_dir_all(dir.join("tests")).unwrap();
    std::fs::write(dir.join("tests/magic.eml"), MAGIC).unwrap();
    write(&dir.join("50_gen.cf"), &generation(0).0);
    dir
}

/// The GEN_ rules named in a relayed message's X-Kala-Symbols header.
fn generations_in(data: &[u8]) -> Vec<usize> {
    let text = String::from_utf8_lossy(data);
    let line = text
        .lines()
        .find(|l| l.starts_with("X-Kala-Symbols:"))
        .unwrap_or("");
    line.split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .filter_map(|word| word.strip_prefix("GEN_")?.parse().ok())
        .collect()
}

async fn reload(kala: &Kala) -> control::Answer {
    let request = Request::Reload {
        actor: "test".into(),
        force: false,
    };
    control::request(kala.data_dir.path(), &request)
        .await
        .unwrap()
        .expect("the gateway answers on its control socket")
}

#[tokio::test(flavor = "multi_thread")]
async fn reloads_under_load_never_drop_mail_and_never_activate_a_broken_set() {
    let sink = Sink::start().await;
    let root = tempfile::tempdir().unwrap();
    let dir = rules_dir(root.path());
    let kala = Kala::start(
        sink.addr,
        &[("rules", &format!("dirs = [{dir:?}]\nwatch = false"))],
    )
    .await;

    // A sender that keeps sending until told to stop; every reply is kept.
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        let addr = kala.addr;
        tokio::spawn(async move {
            let mut replies = Vec::new();
            let mut client = support::Client::connect(addr).await;
            while !stop.load(Ordering::SeqCst) {
                let reply = client
                    .send_mail("ana@sender.example", &["it@prokuroria.example"], MAGIC)
                    .await;
                replies.push(reply);
            }
            replies
        })
    };

    let mut good = vec![0];
    for k in 1..=50 {
        let (text, kind) = generation(k);
        write(&dir.join("50_gen.cf"), &text);
        let answer = reload(&kala).await;
        match kind {
            Kind::Good => {
                assert!(answer.ok, "generation {k} should activate: {}", answer.text);
                good.push(k);
            }
            Kind::Syntax => {
                assert!(!answer.ok, "generation {k} is broken: {}", answer.text);
                assert!(
                    answer.text.contains("50_gen.cf:1") && answer.text.contains("magic("),
                    "the refusal names the file, line and pattern: {}",
                    answer.text
                );
            }
            Kind::FailingTest => {
                assert!(!answer.ok, "generation {k} fails its test: {}", answer.text);
                assert!(
                    answer.text.contains(&format!("missing GEN_{k}")),
                    "{}",
                    answer.text
                );
            }
        }
        // Let some mail through between changes.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let replies = sender.await.unwrap();
    assert!(replies.len() >= 20, "only {} messages sent", replies.len());
    for reply in &replies {
        assert!(reply.starts_with("250"), "a message was refused: {reply}");
    }
    let delivered = sink.wait_for(replies.len()).await;
    assert_eq!(
        delivered.len(),
        replies.len(),
        "every accepted message relayed"
    );
    let mut seen = std::collections::BTreeSet::new();
    for delivery in &delivered {
        let generations = generations_in(&delivery.data);
        assert_eq!(
            generations.len(),
            1,
            "each message was scanned by exactly one whole set: {generations:?}"
        );
        assert!(
            good.contains(&generations[0]),
            "a refused generation {} scored mail",
            generations[0]
        );
        seen.insert(generations[0]);
    }
    assert!(
        seen.len() > 1,
        "mail saw several sets while they changed: {seen:?}"
    );

    // SIGHUP reloads too (this test process is the gateway; the watcher is off here).
    write(&dir.join("50_gen.cf"), &generation(52).0);
    unsafe { libc::kill(libc::getpid(), libc::SIGHUP) };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let before = sink.deliveries().len();
        let reply = kala
            .client()
            .await
            .send_mail("ana@sender.example", &["it@prokuroria.example"], MAGIC)
            .await;
        assert!(reply.starts_with("250"), "{reply}");
        let delivered = sink.wait_for(before + 1).await;
        if generations_in(&delivered[before].data) == [52] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Versions: one per good generation (and the start), none for the broken ones.
    let store = kala::store::Store::open(&kala.store_url).await.unwrap();
    let versions = store.rule_versions(100).await.unwrap();
    assert_eq!(versions.len(), 20, "the newest 20 are kept");
    let audit = store.audit_log(None, 500, 0).await.unwrap();
    let refused = audit.iter().filter(|e| e.action == "rules-refused").count();
    // (A SIGHUP another test sends this process may add a refusal of its own.)
    assert!(refused >= 20, "every refusal is audited: {refused}");

    // --force activates a set whose test fails (never one with errors), and says so.
    write(&dir.join("50_gen.cf"), &generation(53).0);
    let forced = Request::Reload {
        actor: "test".into(),
        force: true,
    };
    let answer = control::request(kala.data_dir.path(), &forced)
        .await
        .unwrap()
        .unwrap();
    assert!(answer.ok, "{}", answer.text);
    let newest = &store.rule_versions(1).await.unwrap()[0];
    assert!(
        newest.note.contains("forced past failing tests") && newest.note.contains("missing GEN_53"),
        "{newest:?}"
    );
    write(&dir.join("50_gen.cf"), &generation(51).0);
    let answer = control::request(kala.data_dir.path(), &forced)
        .await
        .unwrap()
        .unwrap();
    assert!(
        !answer.ok,
        "a syntax error is never forced: {}",
        answer.text
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_change_or_sighup_reloads_and_rollback_restores_the_files() {
    let sink = Sink::start().await;
    let root = tempfile::tempdir().unwrap();
    let dir = rules_dir(root.path());
    let kala = Kala::start(
        sink.addr,
        &[(
            "rules",
            &format!("dirs = [{dir:?}]\nwatch = true\nwatch_every = \"100ms\""),
        )],
    )
    .await;
    let generation_now = || async {
        let reply = kala
            .client()
            .await
            .send_mail("ana@sender.example", &["it@prokuroria.example"], MAGIC)
            .await;
        assert!(reply.starts_with("250"), "{reply}");
        let delivered = sink.deliveries();
        generations_in(&delivered.last().unwrap().data)
    };
    assert_eq!(generation_now().await, [0]);

    // The watcher picks up a saved file by itself.
    write(&dir.join("50_gen.cf"), &generation(2).0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while generation_now().await != [2] {
        assert!(
            std::time::Instant::now() < deadline,
            "the change was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A broken save is refused, and the set stays as it was.
    write(&dir.join("50_gen.cf"), &generation(1).0);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(generation_now().await, [2]);
    let refused = kala
        .server
        .as_ref()
        .unwrap()
        .shared
        .rulesets
        .status()
        .refused;
    let refused = refused.expect("the refusal is kept for the UI");
    assert!(refused.problems[0].contains("50_gen.cf:1"), "{refused:?}");

    // A second good save, picked up the same way.
    write(&dir.join("50_gen.cf"), &generation(4).0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while generation_now().await != [4] {
        assert!(
            std::time::Instant::now() < deadline,
            "the change was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Roll back: the previous version's file is back on disk and scores mail again.
    let answer = control::request(
        kala.data_dir.path(),
        &Request::Rollback {
            actor: "test".into(),
            version: None,
        },
    )
    .await
    .unwrap()
    .unwrap();
    assert!(answer.ok, "{}", answer.text);
    assert_eq!(
        std::fs::read_to_string(dir.join("50_gen.cf")).unwrap(),
        generation(2).0
    );
    assert_eq!(generation_now().await, [2]);
    // The watcher sees the restored file as the active set: nothing more changes.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let store = kala::store::Store::open(&kala.store_url).await.unwrap();
    let versions = store.rule_versions(10).await.unwrap();
    assert!(
        versions[0].note.starts_with("rollback to version"),
        "{versions:?}"
    );
    assert_eq!(versions[0].hash, versions[2].hash, "{versions:?}");
}

/// `kala rules keygen` then `kala rules sign SOURCE`: the public key line for the config,
/// and the directory holding the signed bundle.
fn keygen_and_sign(root: &Path, source: &Path) -> (String, std::path::PathBuf) {
    let scratch = root.join("scratch.toml");
    std::fs::write(&scratch, "").unwrap();
    let keys = root.join("keys");
    let (ok, out) = kala_cli(&scratch, &["rules", "keygen", keys.to_str().unwrap()]);
    assert!(ok, "{out}");
    let key_line = out
        .lines()
        .find_map(|l| l.strip_prefix("update_key = "))
        .expect("keygen prints the key line")
        .trim_matches('"')
        .to_string();
    let published = root.join("published");
    let key = keys.join("kala-rules.key");
    let args = [
        "rules",
        "sign",
        source.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    let (ok, out) = kala_cli(
        &scratch,
        &[&args[..], &["--out", published.to_str().unwrap()]].concat(),
    );
    assert!(ok, "{out}");
    (key_line, published)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_bundle_is_refused_and_a_signed_one_activates() {
    let sink = Sink::start().await;
    let root = tempfile::tempdir().unwrap();
    let dir = rules_dir(root.path());
    let bundle_src = root.path().join("upstream");
    std::fs::create_dir_all(bundle_src.join("tests")).unwrap();
    std::fs::write(
        bundle_src.join("20_upstream.cf"),
        "body UPSTREAM_MAGIC /magic words/\nscore UPSTREAM_MAGIC 0.2\n\
         test_message tests/m.eml UPSTREAM_MAGIC\n",
    )
    .unwrap();
    std::fs::write(bundle_src.join("tests/m.eml"), MAGIC).unwrap();

    let (key_line, published) = keygen_and_sign(root.path(), &bundle_src);

    let settings = format!(
        "dirs = [{dir:?}]\nwatch = false\nupdate_from = {:?}\nupdate_key = {key_line:?}",
        published.display().to_string()
    );
    let kala = Kala::start(sink.addr, &[("rules", &settings)]).await;
    let config = root.path().join("kala.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[rules]\n{settings}\n",
            kala.data_dir.path().display().to_string()
        ),
    )
    .unwrap();

    // Tampered: one byte of the bundle changed after signing.
    let zip = published.join("kala-rules.zip");
    let good = std::fs::read(&zip).unwrap();
    let mut bad = good.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0x20;
    std::fs::write(&zip, &bad).unwrap();
    let (ok, out) = kala_cli(&config, &["rules", "update"]);
    assert!(!ok, "a tampered bundle must be refused: {out}");
    assert!(out.contains("signature does not verify"), "{out}");
    assert!(!kala.data_dir.path().join("rule-updates").exists());

    // The genuine bundle: verified, tested, installed and active in the running gateway.
    std::fs::write(&zip, &good).unwrap();
    let (ok, out) = kala_cli(&config, &["rules", "update"]);
    assert!(ok, "{out}");
    // (Another test's SIGHUP may have made this gateway reload the update first.)
    assert!(
        out.contains("activated version") || out.contains("is already active"),
        "{out}"
    );
    let reply = kala
        .client()
        .await
        .send_mail("ana@sender.example", &["it@prokuroria.example"], MAGIC)
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    let delivered = sink.wait_for(1).await;
    let data = String::from_utf8_lossy(&delivered[0].data);
    assert!(data.contains("UPSTREAM_MAGIC"), "{data}");
    assert!(data.contains("GEN_0"), "the local rules still run: {data}");

    let store = kala::store::Store::open(&kala.store_url).await.unwrap();
    let actions: Vec<String> = store
        .audit_log(None, 50, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(
        actions.contains(&"rules-update-refused".to_string()),
        "{actions:?}"
    );
    assert!(actions.contains(&"rules-update".to_string()), "{actions:?}");
}

#[test]
fn kala_rules_test_names_a_missing_expected_symbol() {
    let root = tempfile::tempdir().unwrap();
    let dir = rules_dir(root.path());
    std::fs::write(
        dir.join("tests/more.cf"),
        "# the fixture must produce GEN_0 and must not produce GEN_0\n\
         test_message magic.eml GEN_0\ntest_message magic.eml !GEN_0\n",
    )
    .unwrap();
    write(
        &dir.join("50_gen.cf"),
        "body GEN_0 /magic/\nbody GEN_9 /absent/\ntest_message tests/magic.eml GEN_9\n",
    );
    let config = root.path().join("kala.toml");
    std::fs::write(
        &config,
        format!("data_dir = {:?}\n", root.path().display().to_string()),
    )
    .unwrap();
    let (ok, out) = kala_cli(&config, &["rules", "test", dir.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("50_gen.cf:3 (magic.eml): FAILED: missing GEN_9"),
        "{out}"
    );
    assert!(
        out.contains("more.cf:3 (magic.eml): FAILED: unexpected GEN_0"),
        "{out}"
    );
    assert!(out.contains("3 tests, 1 passed, 2 failed"), "{out}");

    write(&dir.join("50_gen.cf"), "body GEN_0 /magic/\n");
    std::fs::remove_file(dir.join("tests/more.cf")).unwrap();
    let (ok, out) = kala_cli(&config, &["rules", "test", dir.to_str().unwrap()]);
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn hits_are_counted_and_a_dry_run_shows_what_a_candidate_changes() {
    let sink = Sink::start().await;
    let root = tempfile::tempdir().unwrap();
    let dir = rules_dir(root.path());
    // GEN_0 alone would hold everything with "magic"; SHADOWED only watches.
    write(
        &dir.join("50_gen.cf"),
        "body GEN_0 /magic/\nscore GEN_0 5\nbody SHADOWED /words/\nscore SHADOWED 4\n\
         tflags SHADOWED shadow\nbody NEVER /zzqqzz/\n",
    );
    let settings = format!("dirs = [{dir:?}]\nwatch = false\nsample_relayed = 10");
    let kala = Kala::start(
        sink.addr,
        &[
            ("rules", &settings),
            ("policy", "tag_score = 3.0\nquarantine_score = 4.0"),
        ],
    )
    .await;
    let plain = b"From: b@sender.example\r\nTo: it@prokuroria.example\r\nSubject: hi\r\nDate: Sun, 29 Nov 2026 10:00:00 +0000\r\nMessage-ID: <p@sender.example>\r\n\r\nA quiet note about prizes.\r\n";
    for message in [MAGIC, &plain[..]] {
        let reply = kala
            .client()
            .await
            .send_mail("ana@sender.example", &["it@prokuroria.example"], message)
            .await;
        assert!(reply.starts_with("250"), "{reply}");
    }
    assert_eq!(
        kala.quarantined().await.len(),
        1,
        "the magic message is held"
    );
    // The shadow rule fired (listed, scored 0) without holding anything on its own.
    let store = kala::store::Store::open(&kala.store_url).await.unwrap();
    let quarantine =
        kala::quarantine::Quarantine::new(store.clone(), kala::quarantine::Retention::default());
    let held = quarantine
        .get(&kala.quarantined().await[0].id)
        .await
        .unwrap()
        .unwrap();
    let shadowed = held.verdict.symbols.iter().find(|s| s.name == "SHADOWED");
    let shadowed = shadowed.expect("the shadow rule is listed");
    assert_eq!(shadowed.score, 0.0);
    assert!(
        shadowed.description.contains("shadow, would score 4"),
        "{shadowed:?}"
    );
    assert_eq!(held.verdict.score, 5.0);
    sink.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // the sample is written after the reply

    let config = root.path().join("kala.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[rules]\n{settings}\n[policy]\ntag_score = 3.0\nquarantine_score = 4.0\n",
            kala.data_dir.path().display().to_string()
        ),
    )
    .unwrap();
    let (ok, out) = kala_cli(&config, &["rules", "stats", "--days", "30"]);
    assert!(ok, "{out}");
    assert!(out.contains("1  GEN_0"), "{out}");
    assert!(out.contains("1  SHADOWED"), "{out}");
    let never = out.split("never fired").nth(1).unwrap_or("");
    assert!(never.contains("NEVER") && !never.contains("GEN_0"), "{out}");

    // The candidate stops scoring "magic" and starts scoring "prizes".
    let candidate = root.path().join("candidate");
    std::fs::create_dir_all(&candidate).unwrap();
    std::fs::write(
        candidate.join("50_gen.cf"),
        "body GEN_0 /magic/\nscore GEN_0 0.5\nbody PRIZES /prizes/\nscore PRIZES 5\n",
    )
    .unwrap();
    let (ok, out) = kala_cli(&config, &["rules", "try", candidate.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(out.contains("scanned 1 held and 1 relayed"), "{out}");
    assert!(
        out.contains("newly caught (relayed, would now be held or refused): 1"),
        "{out}"
    );
    assert!(
        out.contains("newly passed (held, would now be relayed): 1"),
        "{out}"
    );
    assert!(out.contains("+PRIZES"), "{out}");
}

/// Serves the files of `dir` over HTTPS on loopback with a self-signed certificate for
/// `localhost`; returns the port and the certificate (PEM) to trust.
async fn https_file_server(dir: std::path::PathBuf) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let pem = generated.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![generated.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, dir) = (acceptor.clone(), dir.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&request);
                let path = text.split_whitespace().nth(1).unwrap_or("/");
                let name = path.trim_start_matches('/');
                let response = match std::fs::read(dir.join(name)) {
                    Ok(body) => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend_from_slice(&body);
                        r
                    }
                    Err(_) => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = tls.write_all(&response).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, pem)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_bundle_is_fetched_over_https_and_installed_without_a_running_gateway() {
    kala::install_crypto_provider();
    let root = tempfile::tempdir().unwrap();
    let dir = rules_dir(root.path());
    let upstream = root.path().join("upstream");
    std::fs::create_dir_all(&upstream).unwrap();
    std::fs::write(
        upstream.join("20_upstream.cf"),
        "body UPSTREAM_MAGIC /magic words/\nscore UPSTREAM_MAGIC 0.2\n",
    )
    .unwrap();
    let (key_line, published) = keygen_and_sign(root.path(), &upstream);
    let (port, pem) = https_file_server(published).await;
    let ca = root.path().join("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let data_dir = root.path().join("data");
    let config = root.path().join("kala.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[rules]\ndirs = [{dir:?}]\nupdate_from = \"https://localhost:{port}/\"\n\
             update_key = {key_line:?}\n",
            data_dir.display().to_string()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kala"))
        .args(["rules", "update", "--config"])
        .arg(&config)
        .env("SSL_CERT_FILE", &ca)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("verified and installed 1 files"), "{text}");
    assert!(text.contains("no gateway is running"), "{text}");
    assert!(data_dir.join("rule-updates/20_upstream.cf").exists());
    let (ok, out) = kala_cli(&config, &["rules", "versions"]);
    assert!(ok && out.contains("(update)"), "{out}");

    // Without the certificate trusted, the fetch fails and nothing changes.
    let out = Command::new(env!("CARGO_BIN_EXE_kala"))
        .args(["rules", "update", "--config"])
        .arg(&config)
        .env("SSL_CERT_FILE", root.path().join("none.pem"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TLS with localhost failed"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_reads_the_score_table_and_lists_from_the_config_file_again() {
    kala::install_crypto_provider();
    let sink = Sink::start().await;
    let root = tempfile::tempdir().unwrap();
    let dir = rules_dir(root.path());
    write(
        &dir.join("50_gen.cf"),
        "body GEN_0 /magic/\nscore GEN_0 5\n",
    );
    let data_dir = root.path().join("data");
    let config = root.path().join("kala.toml");
    let config_text = |policy: &str, lists: &str| {
        format!(
            "data_dir = {:?}\n[smtp]\nlisten = [\"127.0.0.1:0\"]\nhostname = \"kala.test\"\n\
             [downstream]\naddress = \"{}\"\n[rules]\ndirs = [{dir:?}]\nwatch = false\n\
             [antivirus]\nenabled = false\n[auth]\nenabled = false\n[policy]\n{policy}\n[lists]\n{lists}\n",
            data_dir.display().to_string(),
            sink.addr
        )
    };
    write(
        &config,
        &config_text("quarantine_score = 9.0\ntag_score = 8.0", ""),
    );
    let settings = kala::config::Settings::load(&config).unwrap();
    let server = kala::smtp::start(settings).await.unwrap();
    let addr = server.local_addrs[0];
    let send = |from: &'static str| async move {
        support::Client::connect(addr)
            .await
            .send_mail(from, &["it@prokuroria.example"], MAGIC)
            .await
    };
    let reload = || async {
        let request = Request::Reload {
            actor: "test".into(),
            force: false,
        };
        control::request(&data_dir, &request)
            .await
            .unwrap()
            .unwrap()
    };
    assert!(send("ana@sender.example").await.starts_with("250"));
    assert_eq!(
        sink.wait_for(1).await.len(),
        1,
        "score 5 is under 9: relayed"
    );

    // New thresholds and a block list entry, read by a reload.
    write(
        &config,
        &config_text(
            "quarantine_score = 4.0\ntag_score = 3.0",
            "block = [\"@blocked.example\"]",
        ),
    );
    let answer = reload().await;
    assert!(answer.ok, "{}", answer.text);
    assert!(send("ana@sender.example").await.starts_with("250"));
    assert!(
        send("eve@blocked.example").await.starts_with("5"),
        "blocked"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        sink.deliveries().len(),
        1,
        "score 5 is now held, not relayed"
    );

    // A config that does not validate changes nothing, and says which key is wrong.
    write(&config, &config_text("quarantine_score = \"high\"", ""));
    let answer = reload().await;
    assert!(!answer.ok);
    assert!(
        answer.text.contains("policy.quarantine_score"),
        "{}",
        answer.text
    );
    assert!(
        send("eve@blocked.example").await.starts_with("5"),
        "still blocked"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_rule_files_at_start_up_run_the_last_active_version() {
    kala::install_crypto_provider();
    let sink = Sink::start().await;
    let root = tempfile::tempdir().unwrap();
    let dir = rules_dir(root.path());
    let config = root.path().join("kala.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[smtp]\nlisten = [\"127.0.0.1:0\"]\nhostname = \"kala.test\"\n\
             [downstream]\naddress = \"{}\"\n[rules]\ndirs = [{dir:?}]\nwatch = false\n\
             [antivirus]\nenabled = false\n[auth]\nenabled = false\n",
            root.path().join("data").display().to_string(),
            sink.addr
        ),
    )
    .unwrap();
    let start = || async {
        let settings = kala::config::Settings::load(&config).unwrap();
        kala::smtp::start(settings).await.unwrap()
    };
    let server = start().await;
    server.shutdown().await;

    // Broken while the gateway was down: the next start runs version 1 and says why.
    write(&dir.join("50_gen.cf"), &generation(1).0);
    let server = start().await;
    let status = server.shared.rulesets.status();
    assert_eq!(status.active.as_ref().map(|v| v.id), Some(1), "{status:?}");
    let refused = status.refused.expect("the refusal is shown");
    assert!(refused.problems[0].contains("50_gen.cf:1"), "{refused:?}");
    let reply = support::Client::connect(server.local_addrs[0])
        .await
        .send_mail("ana@sender.example", &["it@prokuroria.example"], MAGIC)
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(generations_in(&sink.wait_for(1).await[0].data), [0]);
}

//! Interop with SMTP clients and servers no one here wrote: Python's smtplib, swaks, and
//! Postfix's smtp-source sending through Kala into Postfix's smtp-sink.
//! `.ci/run` installs them; a missing one fails the test with the package to install.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::{Kala, Sink};

/// Fails (never skips) when a tool is missing, saying how to get it.
fn require(program: &str, package: &str) -> String {
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"] {
        let path = Path::new(dir).join(program);
        if path.exists() {
            return path.display().to_string();
        }
    }
    if let Ok(out) = Command::new("which").arg(program).output()
        && out.status.success()
    {
        return String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    panic!(
        "`{program}` is not installed; run: apt-get install {package} (or .ci/run, which installs it)"
    );
}

async fn run(mut command: Command) -> std::process::Output {
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    if !output.status.success() {
        panic!(
            "command failed: {}\nstdout:\n{}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output
}

#[tokio::test]
async fn python_smtplib_sends_plain_and_over_starttls() {
    let python = require("python3", "python3");
    let sink = Sink::start().await;
    let kala = Kala::start(sink.addr, &[]).await;
    let cert = kala.data_dir.path().join("tls/cert.pem");
    let script = r#"
import smtplib, ssl, sys
host, port, cafile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
msg = ("From: ana@sender.example\r\nTo: it@prokuroria.example\r\nSubject: smtplib {}\r\n"
       "Date: Mon, 2 Nov 2026 10:00:00 +0100\r\nMessage-ID: <{}@sender.example>\r\n\r\n.dot line\r\nbody\r\n")
with smtplib.SMTP(host, port, timeout=20) as s:
    refused = s.sendmail("ana@sender.example", ["it@prokuroria.example", "unknown@prokuroria.example"], msg.format("plain", 1))
    assert list(refused) == ["unknown@prokuroria.example"], refused
ctx = ssl.create_default_context(cafile=cafile)
ctx.check_hostname = False  # the certificate names kala.test; we connect to an IP
with smtplib.SMTP(host, port, timeout=20) as s:
    s.starttls(context=ctx)
    s.sendmail("ana@sender.example", ["it@prokuroria.example"], msg.format("tls", 2))
print("sent")
"#;
    let mut command = Command::new(python);
    command
        .arg("-c")
        .arg(script)
        .arg(kala.addr.ip().to_string())
        .arg(kala.addr.port().to_string())
        .arg(&cert);
    let out = run(command).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "sent");
    let got = sink.wait_for(2).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].rcpt_to, ["it@prokuroria.example"]);
    let tls = String::from_utf8_lossy(&got[1].data);
    assert!(
        tls.contains("with ESMTPS") && tls.contains("Subject: smtplib tls"),
        "{tls}"
    );
    assert!(String::from_utf8_lossy(&got[0].data).contains("\r\n.dot line\r\n"));
}

#[tokio::test]
async fn swaks_sends_plain_pipelined_and_over_tls() {
    let swaks = require("swaks", "swaks libnet-ssleay-perl");
    let sink = Sink::start().await;
    let kala = Kala::start(sink.addr, &[]).await;
    for extra in [&["--pipeline"][..], &["--tls"][..]] {
        let mut command = Command::new(&swaks);
        command
            .args([
                "--server",
                &kala.addr.ip().to_string(),
                "--port",
                &kala.addr.port().to_string(),
            ])
            .args([
                "--from",
                "ana@sender.example",
                "--to",
                "it@prokuroria.example",
            ])
            .args([
                "--helo",
                "swaks.example.org",
                "--header",
                "Subject: from swaks",
                "--timeout",
                "20",
            ])
            .args(extra);
        let out = run(command).await;
        let transcript = String::from_utf8_lossy(&out.stdout);
        assert!(transcript.contains("<-  250"), "{transcript}");
    }
    let got = sink.wait_for(2).await;
    assert_eq!(got.len(), 2);
    assert!(String::from_utf8_lossy(&got[1].data).contains("with ESMTPS"));
}

#[tokio::test]
async fn postfix_smtp_source_through_kala_into_postfix_smtp_sink() {
    let source = require("smtp-source", "postfix");
    let sink_bin = require("smtp-sink", "postfix");
    let dump_dir = tempfile::tempdir().unwrap();
    // smtp-sink drops privileges to `nobody` (required as root) and must write its dump.
    std::fs::set_permissions(
        dump_dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let dump = dump_dir.path().join("dump");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut sink = Command::new(sink_bin)
        .args(["-4", "-u", "nobody", "-D"])
        .arg(&dump)
        .arg(format!("127.0.0.1:{port}"))
        .arg("64")
        .spawn()
        .unwrap();
    let downstream: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(downstream).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "smtp-sink did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let kala = Kala::start(downstream, &[]).await;
    let mut command = Command::new(source);
    command
        .args(["-4", "-s", "5", "-m", "50", "-l", "2048"])
        .args([
            "-f",
            "ana@sender.example",
            "-t",
            "it@prokuroria.example",
            "-M",
            "sender.example",
        ])
        .arg(kala.addr.to_string());
    run(command).await;
    // smtp-sink appends each transaction to the dump file as it completes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = sink.kill();
    let _ = sink.wait();
    let dumped = std::fs::read(&dump).unwrap_or_default();
    let dumped = String::from_utf8_lossy(&dumped);
    assert_eq!(
        dumped.matches("X-Kala-Status:").count(),
        50,
        "50 messages relayed with Kala's headers"
    );
}

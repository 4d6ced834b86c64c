//! Test harness: a recording downstream (the Exchange stand-in), Kala on real loopback
//! sockets, and a small SMTP client that shows every reply.
#![allow(dead_code)]

pub mod http;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use kala::config::Settings;
use kala::smtp::RunningServer;

/// Runs the `kala` binary with `args` and `--config CONFIG`, as an admin at a shell would:
/// whether it succeeded, and what it printed (standard output, then standard error).
pub fn kala_cli(config: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kala"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Generous bound on any single wait, so a broken test fails instead of hanging.
pub const WAIT: Duration = Duration::from_secs(20);

/// One message as the downstream received it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The message after dot-unstuffing, as the downstream would store it.
    pub data: Vec<u8>,
}

/// How the recording downstream answers.
#[derive(Clone)]
pub struct SinkBehavior {
    /// The reply to `RCPT TO:<addr>`.
    pub rcpt_reply: Arc<dyn Fn(&str) -> String + Send + Sync>,
    /// Wait this long before answering the end of DATA.
    pub data_reply_delay: Duration,
    /// Close the connection right after each delivery (a downstream with a short idle timeout).
    pub close_after_delivery: bool,
}

impl Default for SinkBehavior {
    fn default() -> Self {
        SinkBehavior {
            rcpt_reply: Arc::new(|addr: &str| {
                if addr.starts_with("unknown") {
                    "550 5.1.1 User unknown".to_string()
                } else if addr.starts_with("full") {
                    "452 4.2.2 Mailbox full".to_string()
                } else {
                    "250 2.1.5 Recipient OK".to_string()
                }
            }),
            data_reply_delay: Duration::ZERO,
            close_after_delivery: false,
        }
    }
}

/// A real SMTP server on 127.0.0.1 that records what it receives.
pub struct Sink {
    pub addr: SocketAddr,
    pub deliveries: Arc<Mutex<Vec<Delivery>>>,
    /// Connections accepted so far (to see connection reuse).
    pub connections: Arc<Mutex<usize>>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Sink {
    pub async fn start() -> Sink {
        Sink::start_with(SinkBehavior::default()).await
    }

    pub async fn start_with(behavior: SinkBehavior) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let (d, c) = (deliveries.clone(), connections.clone());
        let accepting = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                *c.lock().unwrap() += 1;
                let _ = stream.set_nodelay(true);
                tokio::spawn(sink_session(stream, behavior.clone(), d.clone()));
            }
        });
        Sink {
            addr,
            deliveries,
            connections,
            accepting,
        }
    }

    /// Stops listening (the downstream goes away); sessions in progress finish.
    pub async fn stop(&self) {
        self.accepting.abort();
        while !self.accepting.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }

    /// Waits until `n` deliveries arrived (they are recorded before the 250 is sent).
    pub async fn wait_for(&self, n: usize) -> Vec<Delivery> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got = self.deliveries();
            if got.len() >= n || tokio::time::Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn sink_session(
    stream: TcpStream,
    behavior: SinkBehavior,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
) {
    let mut stream = BufReader::new(stream);
    let _ = stream.write_all(b"220 sink.test ESMTP test sink\r\n").await;
    let mut mail_from = String::new();
    let mut rcpt_to = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if stream.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        let upper = text.to_ascii_uppercase();
        let reply = if upper.starts_with("EHLO") {
            "250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 104857600"
                .to_string()
        } else if upper.starts_with("HELO") {
            "250 sink.test".to_string()
        } else if upper.starts_with("MAIL FROM:") {
            mail_from = angle(&text);
            rcpt_to.clear();
            if mail_from.starts_with("blocked") {
                "550 5.7.1 Sender blocked".to_string()
            } else {
                "250 2.1.0 Sender OK".to_string()
            }
        } else if upper.starts_with("RCPT TO:") {
            let addr = angle(&text);
            let reply = (behavior.rcpt_reply)(&addr);
            if reply.starts_with('2') {
                rcpt_to.push(addr);
            }
            reply
        } else if upper == "DATA" {
            let _ = stream.write_all(b"354 go ahead\r\n").await;
            let mut data = Vec::new();
            loop {
                line.clear();
                if stream.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                if line == b".\r\n" {
                    break;
                }
                let unstuffed = if line.starts_with(b".") {
                    &line[1..]
                } else {
                    &line[..]
                };
                data.extend_from_slice(unstuffed);
            }
            tokio::time::sleep(behavior.data_reply_delay).await;
            deliveries.lock().unwrap().push(Delivery {
                mail_from: mail_from.clone(),
                rcpt_to: std::mem::take(&mut rcpt_to),
                data,
            });
            if behavior.close_after_delivery {
                let _ = stream
                    .write_all(b"250 2.6.0 Queued mail for delivery\r\n")
                    .await;
                return;
            }
            "250 2.6.0 Queued mail for delivery".to_string()
        } else if upper == "RSET" {
            rcpt_to.clear();
            "250 2.0.0 Reset OK".to_string()
        } else if upper == "QUIT" {
            let _ = stream.write_all(b"221 2.0.0 Bye\r\n").await;
            return;
        } else if upper == "NOOP" {
            "250 2.0.0 OK".to_string()
        } else {
            "500 5.5.2 Unknown command".to_string()
        };
        if stream
            .write_all(format!("{reply}\r\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

fn angle(line: &str) -> String {
    let start = line.find('<').map(|i| i + 1).unwrap_or(0);
    let end = line[start..]
        .find('>')
        .map(|i| start + i)
        .unwrap_or(line.len());
    line[start..end].to_string()
}

/// Kala serving on 127.0.0.1 with its own data dir.
pub struct Kala {
    pub server: Option<RunningServer>,
    pub addr: SocketAddr,
    pub data_dir: tempfile::TempDir,
    /// The store the gateway writes (SQLite in `data_dir` unless the test chose one).
    pub store_url: String,
}

impl Kala {
    /// Starts Kala relaying to `downstream`. `settings` adds `(section, "key = value")` lines.
    pub async fn start(downstream: SocketAddr, settings: &[(&str, &str)]) -> Kala {
        kala::install_crypto_provider();
        let data_dir = tempfile::tempdir().unwrap();
        let mut sections: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        sections
            .entry("smtp")
            .or_default()
            .push("listen = [\"127.0.0.1:0\"]".into());
        sections
            .entry("smtp")
            .or_default()
            .push("hostname = \"kala.test\"".into());
        sections
            .entry("downstream")
            .or_default()
            .push(format!("address = \"{downstream}\""));
        sections
            .entry("downstream")
            .or_default()
            .push("connect_timeout = \"2s\"".into());
        // The review UI is started by the tests that want it (Kala::start_web).
        sections
            .entry("web")
            .or_default()
            .push("listen = \"127.0.0.1:0\"".into());
        // The SMTP tests are not about rules: none loaded, unless a test asks for them.
        if !settings.iter().any(|(section, _)| *section == "rules") {
            sections
                .entry("rules")
                .or_default()
                .push("dirs = []".into());
        }
        // Nor about viruses: no clamd unless a test starts one and says where.
        if !settings.iter().any(|(section, _)| *section == "antivirus") {
            sections
                .entry("antivirus")
                .or_default()
                .push("enabled = false".into());
        }
        // Nor about SPF/DKIM/DMARC, which would ask the system's resolver (no network here).
        if !settings.iter().any(|(section, _)| *section == "auth") {
            sections
                .entry("auth")
                .or_default()
                .push("enabled = false".into());
        }
        for (section, line) in settings {
            sections.entry(section).or_default().push(line.to_string());
        }
        let mut text = format!("data_dir = {:?}\n", data_dir.path().display().to_string());
        for (section, lines) in sections {
            text.push_str(&format!("[{section}]\n{}\n", lines.join("\n")));
        }
        let settings =
            Settings::parse(&text, "test config").unwrap_or_else(|e| panic!("{e}\n{text}"));
        let store_url = settings.store.url.clone();
        let server = kala::smtp::start(settings).await.unwrap();
        let addr = server.local_addrs[0];
        Kala {
            server: Some(server),
            addr,
            data_dir,
            store_url,
        }
    }

    /// A config file naming this gateway's data directory (so its store and control socket),
    /// for running the command line beside it.
    pub fn cli_config(&self) -> std::path::PathBuf {
        let config = self.data_dir.path().join("cli.toml");
        let text = format!(
            "data_dir = {:?}\n",
            self.data_dir.path().display().to_string()
        );
        std::fs::write(&config, text).unwrap();
        config
    }

    /// Starts the review UI on a free loopback port; returns its address.
    pub async fn start_web(&self) -> SocketAddr {
        let shared = self.server.as_ref().unwrap().shared.clone();
        let web = kala::web::start(shared).await.unwrap();
        let addr = web.local_addr;
        // Runs until the test process ends.
        std::mem::forget(web);
        addr
    }

    /// Creates a UI account on the gateway's store.
    pub async fn add_user(&self, name: &str, password: &str, role: &str) {
        let store = kala::store::Store::open(&self.store_url).await.unwrap();
        kala::web::auth::Accounts::new(store)
            .add(name, password, role.parse().unwrap())
            .await
            .unwrap();
    }

    pub async fn client(&self) -> Client<TcpStream> {
        Client::connect(self.addr).await
    }

    /// Every message in the quarantine store, oldest first: what Kala held, read back through
    /// the library on the same database.
    pub async fn quarantined(&self) -> Vec<HeldCopy> {
        let store = kala::store::Store::open(&self.store_url).await.unwrap();
        let quarantine =
            kala::quarantine::Quarantine::new(store, kala::quarantine::Retention::default());
        let filter = kala::quarantine::Filter {
            state: None,
            sort: kala::quarantine::Sort::Oldest,
            limit: 1000,
            ..Default::default()
        };
        let mut held = Vec::new();
        for summary in quarantine.list(&filter).await.unwrap().messages {
            held.push(HeldCopy {
                raw: quarantine
                    .raw(&summary.id)
                    .await
                    .unwrap()
                    .unwrap_or_default(),
                record: quarantine.record(&summary.id).await.unwrap().unwrap(),
                id: summary.id,
            });
        }
        held
    }
}

/// A quarantined message as the store keeps it.
pub struct HeldCopy {
    pub id: String,
    /// The message exactly as it would have been relayed.
    pub raw: Vec<u8>,
    /// Envelope and verdict, as JSON.
    pub record: serde_json::Value,
}

/// A deliberately plain SMTP client: writes what it is told, returns replies verbatim.
pub struct Client<S> {
    pub stream: BufReader<S>,
}

impl Client<TcpStream> {
    /// Connects from `source` (any 127.0.0.0/8 address works on loopback, which lets a test
    /// be a blocklisted client); returns the client and the greeting, whatever it was.
    pub async fn connect_from(
        addr: SocketAddr,
        source: std::net::IpAddr,
    ) -> (Client<TcpStream>, String) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(source, 0)).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut client = Client {
            stream: BufReader::new(stream),
        };
        let greeting = client.reply().await;
        (client, greeting)
    }

    pub async fn connect(addr: SocketAddr) -> Client<TcpStream> {
        let stream = TcpStream::connect(addr).await.unwrap();
        // As a real MTA does: without it, a message sent in pieces waits on delayed ACKs
        // (40 ms each), which the antivirus benchmark would count as Kala's time.
        stream.set_nodelay(true).unwrap();
        let mut client = Client {
            stream: BufReader::new(stream),
        };
        let greeting = client.reply().await;
        assert!(greeting.starts_with("220 "), "greeting: {greeting}");
        client
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.get_mut().write_all(bytes).await.unwrap();
    }

    /// One complete reply, its lines joined with `\n`, without CRLFs.
    pub async fn reply(&mut self) -> String {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(WAIT, self.stream.read_line(&mut line))
                .await
                .expect("timed out waiting for a reply")
                .unwrap();
            if n == 0 {
                lines.push("<closed>".to_string());
                break;
            }
            let line = line.trim_end().to_string();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                break;
            }
        }
        lines.join("\n")
    }

    pub async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// Sends a command and asserts its reply starts with `expected` (a code, or more).
    pub async fn expect(&mut self, line: &str, expected: &str) -> String {
        let reply = self.cmd(line).await;
        assert!(
            reply.starts_with(expected),
            "{line}: expected {expected}, got {reply}"
        );
        reply
    }

    /// EHLO, MAIL, RCPTs, DATA, message, `.`: returns the final reply. Panics if a step fails.
    pub async fn send_mail(&mut self, from: &str, to: &[&str], message: &[u8]) -> String {
        let r = self.cmd("EHLO client.example.org").await;
        assert!(r.starts_with("250"), "EHLO: {r}");
        let r = self.cmd(&format!("MAIL FROM:<{from}>")).await;
        assert!(r.starts_with("250"), "MAIL: {r}");
        for rcpt in to {
            let r = self.cmd(&format!("RCPT TO:<{rcpt}>")).await;
            assert!(r.starts_with("250"), "RCPT {rcpt}: {r}");
        }
        let r = self.cmd("DATA").await;
        assert!(r.starts_with("354"), "DATA: {r}");
        self.send(&dot_stuff(message)).await;
        self.send(b".\r\n").await;
        self.reply().await
    }
}

/// A clean, complete message: nothing in it should score.
pub fn clean_message(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Ana Hoxha <ana@sender.example>\r\nTo: IT <it@prokuroria.example>\r\nSubject: {subject}\r\nDate: Mon, 2 Nov 2026 10:00:00 +0100\r\nMessage-ID: <{}@sender.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}",
        subject.len()
    )
    .into_bytes()
}

/// Dot-stuffing as a sending client does it.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 16);
    let mut line_start = true;
    for &b in message {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") && !out.is_empty() {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Splits what the downstream got into Kala's added header lines and the original message.
pub fn split_added_headers(data: &[u8]) -> (String, Vec<u8>) {
    let text = String::from_utf8_lossy(data);
    let mut added = 0;
    let mut in_added = false;
    for line in text.split_inclusive("\r\n") {
        let is_continuation = line.starts_with(' ') || line.starts_with('\t');
        if line.starts_with("Received: ")
            || line.starts_with("Authentication-Results: ")
            || line.starts_with("X-Kala-")
            || (in_added && is_continuation)
        {
            in_added = true;
            added += line.len();
        } else {
            break;
        }
    }
    (text[..added].to_string(), data[added..].to_vec())
}

/// STARTTLS has been answered 220; do the handshake, trusting only Kala's own certificate
/// (the self-signed one it generated in its data dir, issued for `kala.test`).
pub async fn tls_upgrade(
    client: Client<TcpStream>,
    kala: &Kala,
) -> Client<tokio_rustls::client::TlsStream<TcpStream>> {
    use rustls::pki_types::pem::PemObject;
    let pem = kala.data_dir.path().join("tls/cert.pem");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_file(&pem).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    assert!(
        client.stream.buffer().is_empty(),
        "nothing may follow the 220 in the clear"
    );
    let tcp = client.stream.into_inner();
    let name = rustls::pki_types::ServerName::try_from("kala.test").unwrap();
    let tls = tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .unwrap()
        .unwrap();
    Client {
        stream: BufReader::new(tls),
    }
}

/// A message with one attachment, base64-encoded in 76-column lines as a mail client sends it.
pub fn with_attachment(subject: &str, name: &str, bytes: &[u8]) -> Vec<u8> {
    with_attachments(subject, &[(name, bytes)])
}

/// A multipart message: a short text part, then each `(file name, bytes)` as an attachment.
pub fn with_attachments(subject: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    use base64::Engine;
    let mut out = format!(
        "From: Ana Hoxha <ana@sender.example>\r\nTo: IT <it@prokuroria.example>\r\n\
         Subject: {subject}\r\nDate: Mon, 2 Nov 2026 10:00:00 +0100\r\n\
         Message-ID: <{}.{}@sender.example>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"kala-b1\"\r\n\r\n\
         --kala-b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee the attachment.\r\n",
        subject.len(),
        subject.bytes().map(u32::from).sum::<u32>()
    );
    for (name, bytes) in files {
        let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
        let lines: Vec<&str> = encoded
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        out.push_str(&format!(
            "--kala-b1\r\nContent-Type: application/octet-stream; name=\"{name}\"\r\n\
             Content-Disposition: attachment; filename=\"{name}\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            lines.join("\r\n")
        ));
    }
    out.push_str("--kala-b1--\r\n");
    out.into_bytes()
}

/// A zip of `(name, bytes)` entries, deflated, in memory.
pub fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in entries {
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file(*name, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

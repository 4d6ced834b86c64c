//! The downstream client: Kala's SMTP connection to Exchange.
//!
//! Each inbound transaction holds one downstream transaction open: MAIL (sent with the first
//! RCPT) and every RCPT are forwarded live, so Exchange's own answer (e.g. `550 5.1.1 unknown recipient`) reaches the
//! sender at RCPT time and Kala never accepts mail it would later have to bounce. After the
//! message (or RSET) the connection goes back to a small pool for the next transaction.

use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use smtp_proto::response::parser::ResponseReceiver;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::Io;
use super::reply::Reply;
use super::spool::SpoolReader;
use crate::config::{DownstreamSettings, DownstreamTls};

/// Why talking to the downstream failed (as opposed to it answering 4xx/5xx).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("cannot connect to downstream {address}: {source}")]
    Connect { address: String, source: io::Error },
    #[error("downstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("downstream connection failed: {0}")]
    Io(#[from] io::Error),
    #[error("downstream spoke no SMTP we understand: {0}")]
    Protocol(String),
    #[error("downstream refused the session: {0}")]
    Refused(Reply),
    #[error("downstream TLS: {0}")]
    Tls(String),
}

/// What the downstream said in EHLO, as far as Kala cares.
#[derive(Debug, Default, Clone, Copy)]
pub struct Capabilities {
    pub starttls: bool,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    pub pipelining: bool,
    /// SIZE limit; 0 when none was announced.
    pub size: usize,
}

/// The MAIL command for the downstream, with the parameters it can take.
pub fn mail_command(
    sender: &str,
    body_8bitmime: bool,
    smtputf8: bool,
    caps: &Capabilities,
) -> String {
    let mut line = format!("MAIL FROM:<{sender}>");
    if body_8bitmime && caps.eight_bit_mime {
        line.push_str(" BODY=8BITMIME");
    }
    if smtputf8 && caps.smtputf8 {
        line.push_str(" SMTPUTF8");
    }
    line
}

/// The pool and how to make new connections.
pub struct Downstream {
    settings: DownstreamSettings,
    tls: Option<TlsConnector>,
    idle: Mutex<Vec<(Connection, Instant)>>,
}

/// One SMTP connection to the downstream.
pub struct Connection {
    io: Box<dyn Io>,
    rbuf: Vec<u8>,
    pub capabilities: Capabilities,
    messages: usize,
    command_timeout: Duration,
    data_timeout: Duration,
    /// Set when the connection must not be reused (an error, a timeout, a 421).
    broken: bool,
    /// Came from the pool: the downstream may have closed it meanwhile.
    pub reused: bool,
    /// MAIL was accepted and the transaction has not ended yet.
    in_transaction: bool,
}

impl Downstream {
    pub fn new(settings: &DownstreamSettings) -> anyhow::Result<Downstream> {
        let tls = super::tls::client_config(settings)?.map(TlsConnector::from);
        // Fail at start, not at the first message, when the name is unusable.
        if tls.is_some() {
            super::tls::server_name(&settings.tls_server_name)?;
        }
        Ok(Downstream {
            settings: settings.clone(),
            tls,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// A connection for a new transaction: a pooled one if any, else a new one.
    pub async fn checkout(&self) -> Result<Connection, RelayError> {
        match self.take_idle() {
            Some(conn) => Ok(conn),
            None => self.connect().await,
        }
    }

    /// Ends a transaction: the connection returns to the pool if it is healthy.
    pub fn release(&self, mut conn: Connection) {
        conn.messages += 1;
        if conn.broken
            || conn.messages >= self.settings.max_messages_per_connection
            || self.settings.pool_size == 0
        {
            return;
        }
        let mut idle = self.idle.lock().expect("pool lock");
        if idle.len() < self.settings.pool_size {
            idle.push((conn, Instant::now()));
        }
    }

    /// Ends a transaction however far it got: RSET if MAIL was accepted, then back to the pool.
    pub async fn finish(&self, mut conn: Connection) {
        if conn.in_transaction {
            match conn.command("RSET").await {
                Ok(reply) if reply.is_positive() => conn.in_transaction = false,
                _ => return,
            }
        }
        self.release(conn);
    }

    fn take_idle(&self) -> Option<Connection> {
        let mut idle = self.idle.lock().expect("pool lock");
        let max_age = self.settings.pool_idle_timeout;
        idle.retain(|(_, since)| since.elapsed() < max_age);
        idle.pop().map(|(mut conn, _)| {
            conn.reused = true;
            conn
        })
    }

    /// Opens a connection: greeting, EHLO, STARTTLS when offered (or required), EHLO again.
    pub async fn connect(&self) -> Result<Connection, RelayError> {
        let s = &self.settings;
        let tcp = tokio::time::timeout(s.connect_timeout, TcpStream::connect(&s.address))
            .await
            .map_err(|_| RelayError::Timeout(s.connect_timeout))?
            .map_err(|source| RelayError::Connect {
                address: s.address.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let mut conn = Connection {
            io: Box::new(tcp),
            rbuf: Vec::with_capacity(4096),
            capabilities: Capabilities::default(),
            messages: 0,
            command_timeout: s.command_timeout,
            data_timeout: s.data_timeout,
            broken: false,
            reused: false,
            in_transaction: false,
        };
        let greeting = conn.read_reply(s.command_timeout).await?;
        if !greeting.is_positive() {
            return Err(RelayError::Refused(greeting));
        }
        conn.ehlo(&s.helo_name).await?;
        match (&self.tls, conn.capabilities.starttls) {
            (Some(connector), true) => {
                let reply = conn.command("STARTTLS").await?;
                if reply.code != 220 {
                    if s.tls == DownstreamTls::Required {
                        return Err(RelayError::Tls(format!("STARTTLS refused: {reply}")));
                    }
                } else {
                    conn = conn.start_tls(connector, &s.tls_server_name).await?;
                    conn.ehlo(&s.helo_name).await?;
                }
            }
            (Some(_), false) if s.tls == DownstreamTls::Required => {
                return Err(RelayError::Tls(
                    "the downstream does not offer STARTTLS".into(),
                ));
            }
            _ => {}
        }
        Ok(conn)
    }
}

impl Connection {
    /// MAIL and the first RCPT in one write when the downstream takes PIPELINING (RFC 2920),
    /// saving a round trip per message. The RCPT reply is `None` when MAIL was refused
    /// without pipelining (RCPT was then not sent).
    pub async fn mail_and_rcpt(
        &mut self,
        mail: &str,
        rcpt: &str,
    ) -> Result<(Reply, Option<Reply>), RelayError> {
        if !self.capabilities.pipelining {
            let mail_reply = self.command(mail).await?;
            self.in_transaction = mail_reply.is_positive();
            if !mail_reply.is_positive() {
                return Ok((mail_reply, None));
            }
            let rcpt_reply = self.command(rcpt).await?;
            return Ok((mail_reply, Some(rcpt_reply)));
        }
        self.write(format!("{mail}\r\n{rcpt}\r\n").as_bytes())
            .await?;
        let mail_reply = self.read_reply(self.command_timeout).await?;
        let rcpt_reply = self.read_reply(self.command_timeout).await?;
        self.in_transaction = mail_reply.is_positive();
        if mail_reply.code == 421 || rcpt_reply.code == 421 {
            self.broken = true;
        }
        Ok((mail_reply, Some(rcpt_reply)))
    }

    /// Sends one command line (without CRLF) and reads the reply.
    pub async fn command(&mut self, line: &str) -> Result<Reply, RelayError> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.write(&bytes).await?;
        let reply = self.read_reply(self.command_timeout).await?;
        if reply.code == 421 {
            self.broken = true;
        }
        Ok(reply)
    }

    /// Sends the message: DATA, then `header` and `body` dot-stuffed, then the final dot.
    /// The content must use CRLF line ends only (the session guarantees it).
    pub async fn data(
        &mut self,
        header: &[u8],
        body: SpoolReader<'_>,
    ) -> Result<Reply, RelayError> {
        let reply = self.command("DATA").await?;
        if reply.code != 354 {
            return Ok(reply);
        }
        let mut stuffer = DotStuffer::default();
        let mut out = Vec::with_capacity(header.len() + 64 * 1024);
        stuffer.push(header, &mut out);
        match body {
            // In memory: stuff it straight from the spool, no copy through a read buffer.
            SpoolReader::Memory(bytes) => {
                for piece in bytes.chunks(64 * 1024) {
                    if out.len() >= 64 * 1024 {
                        self.write(&out).await?;
                        out.clear();
                    }
                    stuffer.push(piece, &mut out);
                }
            }
            SpoolReader::File(mut file) => {
                let mut chunk = vec![0u8; 64 * 1024];
                loop {
                    let n = file.read(&mut chunk).await?;
                    if n == 0 {
                        break;
                    }
                    if out.len() >= 64 * 1024 {
                        self.write(&out).await?;
                        out.clear();
                    }
                    stuffer.push(&chunk[..n], &mut out);
                }
            }
        }
        stuffer.finish(&mut out);
        self.write(&out).await?;
        let reply = self.read_reply(self.data_timeout).await?;
        self.in_transaction = false;
        if reply.code == 421 {
            self.broken = true;
        }
        Ok(reply)
    }

    async fn ehlo(&mut self, name: &str) -> Result<(), RelayError> {
        let reply = self.command(&format!("EHLO {name}")).await?;
        if !reply.is_positive() {
            // Not an ESMTP server: plain HELO, no extensions.
            let reply = self.command(&format!("HELO {name}")).await?;
            if !reply.is_positive() {
                return Err(RelayError::Refused(reply));
            }
            self.capabilities = Capabilities::default();
            return Ok(());
        }
        let mut caps = Capabilities::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_whitespace();
            match words.next().map(str::to_ascii_uppercase).as_deref() {
                Some("STARTTLS") => caps.starttls = true,
                Some("8BITMIME") => caps.eight_bit_mime = true,
                Some("SMTPUTF8") => caps.smtputf8 = true,
                Some("PIPELINING") => caps.pipelining = true,
                Some("SIZE") => caps.size = words.next().and_then(|n| n.parse().ok()).unwrap_or(0),
                _ => {}
            }
        }
        self.capabilities = caps;
        Ok(())
    }

    async fn start_tls(
        self,
        connector: &TlsConnector,
        name: &str,
    ) -> Result<Connection, RelayError> {
        let server_name =
            super::tls::server_name(name).map_err(|e| RelayError::Tls(e.to_string()))?;
        let handshake = connector.connect(server_name, self.io);
        let tls = tokio::time::timeout(self.command_timeout, handshake)
            .await
            .map_err(|_| RelayError::Timeout(self.command_timeout))?
            .map_err(|e| RelayError::Tls(e.to_string()))?;
        Ok(Connection {
            io: Box::new(tls),
            // RFC 3207 §4.2: nothing sent before the handshake counts afterwards.
            rbuf: Vec::with_capacity(4096),
            ..self
        })
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), RelayError> {
        let write = async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        };
        match tokio::time::timeout(self.command_timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.broken = true;
                Err(e.into())
            }
            Err(_) => {
                self.broken = true;
                Err(RelayError::Timeout(self.command_timeout))
            }
        }
    }

    async fn read_reply(&mut self, timeout: Duration) -> Result<Reply, RelayError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut receiver = ResponseReceiver::default();
        loop {
            if !self.rbuf.is_empty() {
                let mut iter = self.rbuf.iter();
                let result = receiver.parse(&mut iter);
                let consumed = self.rbuf.len() - iter.len();
                self.rbuf.drain(..consumed);
                match result {
                    Ok(response) => return Ok(Reply::relayed(response)),
                    Err(smtp_proto::Error::NeedsMoreData { .. }) => {}
                    Err(e) => {
                        self.broken = true;
                        return Err(RelayError::Protocol(format!("{e:?}")));
                    }
                }
            }
            let read = tokio::time::timeout_at(deadline, self.io.read_buf(&mut self.rbuf)).await;
            match read {
                Ok(Ok(0)) => {
                    self.broken = true;
                    return Err(RelayError::Io(io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    self.broken = true;
                    return Err(e.into());
                }
                Err(_) => {
                    self.broken = true;
                    return Err(RelayError::Timeout(timeout));
                }
            }
        }
    }
}

/// Dot-stuffing for the way out (RFC 5321 §4.5.2): a line that starts with `.` gets another.
#[derive(Default)]
struct DotStuffer {
    /// The last byte written was LF (or nothing was written yet).
    mid_line: bool,
    last: Option<u8>,
}

impl DotStuffer {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'.' && !self.mid_line {
                out.extend_from_slice(&bytes[start..i]);
                out.push(b'.');
                start = i;
            }
            self.mid_line = b != b'\n';
        }
        out.extend_from_slice(&bytes[start..]);
        if let Some(&b) = bytes.last() {
            self.last = Some(b);
        }
    }

    /// The end-of-data marker, with a CRLF first if the content did not end with one.
    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.last.is_some() && self.last != Some(b'\n') {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuffs_every_line_start_including_the_first() {
        let mut s = DotStuffer::default();
        let mut out = Vec::new();
        s.push(b".a\r\n", &mut out);
        s.push(b"b\r\n.", &mut out);
        s.push(b"\r\n..c", &mut out);
        s.finish(&mut out);
        assert_eq!(out, b"..a\r\nb\r\n..\r\n...c\r\n.\r\n");
    }

    #[test]
    fn empty_message_is_just_the_dot() {
        let mut s = DotStuffer::default();
        let mut out = Vec::new();
        s.finish(&mut out);
        assert_eq!(out, b".\r\n");
    }
}

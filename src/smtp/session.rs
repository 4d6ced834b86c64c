//! One SMTP connection, from greeting to QUIT.
//!
//! Commands are read line by line from a buffer, so pipelined commands (RFC 2920) need nothing
//! special: replies are queued and flushed whenever the session is about to wait for input.
//! Each transaction holds a downstream transaction open (see [`super::relay`]); the final 250
//! is the downstream's own, or comes after the quarantine's fsync.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smtp_proto::{MAIL_BODY_8BITMIME, MAIL_SMTPUTF8, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::data::{DataReader, Feed};
use super::relay;
use super::reply::Reply;
use super::spool::Spool;
use super::{Io, Shared, rewrite};
use crate::checks::{Phase, Refusal};
use crate::envelope::{Envelope, new_queue_id, unix_now};
use crate::quarantine::{Headline, HoldRecord};
use crate::verdict::{Action, Symbol, Verdict};

/// The session is over: the client quit or went away, or we closed after a 421.
struct Closed;

/// One open transaction (MAIL FROM until the message is done or RSET).
struct Transaction {
    envelope: Envelope,
    /// Symbols from the connect, HELO, MAIL and RCPT phases, carried into the verdict.
    symbols: Vec<Symbol>,
    /// The downstream transaction; `None` after the downstream failed mid-transaction.
    downstream: Option<relay::Connection>,
    /// MAIL FROM as the downstream will get it, and what it said to it so far.
    mail_command: String,
    sender: SenderState,
    started: Instant,
}

/// Where the downstream stands on the envelope sender.
enum SenderState {
    /// MAIL not sent yet: it goes with the first RCPT.
    Pending,
    Accepted,
    /// The downstream refused MAIL: every RCPT gets this answer.
    Refused(Reply),
}

/// Per-connection state.
pub struct Session {
    io: Box<dyn Io>,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    /// The client's forward-confirmed host name, looked up once at connect.
    client_name: Option<String>,
    helo: Option<String>,
    esmtp: bool,
    tls: Option<String>,
    /// Symbols of the connect and HELO phases, for every transaction on this connection.
    connection_symbols: Vec<Symbol>,
    tx: Option<Transaction>,
    errors: usize,
}

impl Session {
    pub fn new(
        io: Box<dyn Io>,
        peer: SocketAddr,
        shared: Arc<Shared>,
        shutdown: watch::Receiver<bool>,
    ) -> Session {
        Session {
            io,
            rbuf: Vec::with_capacity(4096),
            wbuf: Vec::with_capacity(1024),
            peer,
            shared,
            shutdown,
            client_name: None,
            helo: None,
            esmtp: false,
            tls: None,
            connection_symbols: Vec::new(),
            tx: None,
            errors: 0,
        }
    }

    /// Runs the dialogue to its end. Never panics on client input; errors end the connection.
    pub async fn run(mut self) {
        let _ = self.dialogue().await;
        let _ = self.flush().await;
        self.abort_transaction().await;
        if self.tls.is_some() {
            // TLS wants its close_notify; plain TCP is closed by the drop, one syscall fewer.
            let _ = self.io.shutdown().await;
        }
    }

    async fn dialogue(&mut self) -> Result<(), Closed> {
        if let Some(dns) = &self.shared.client_names
            && is_internet_address(self.peer.ip())
        {
            self.client_name = dns.client_name(self.peer.ip()).await;
        }
        let envelope = self.envelope_for_checks();
        let outcome = self
            .shared
            .pipeline
            .run_phase(Phase::Connect, &envelope, None)
            .await;
        if let Some(refusal) = outcome.refusal {
            let reply = refusal_reply(&refusal);
            track_refused(&self.shared, &envelope, None, &reply);
            self.reply(reply);
            return Err(Closed);
        }
        self.connection_symbols = outcome.symbols;
        self.wait_for_pregreet().await?;
        let greeting = format!("{} ESMTP Kala", self.shared.settings.smtp.hostname);
        self.reply(Reply::plain(220, vec![greeting]));

        loop {
            let line = self.read_command_line().await?;
            let line = match line {
                Some(line) => line,
                None => {
                    self.reply(Reply::new(500, (5, 5, 2), "Line too long"));
                    self.count_error()?;
                    continue;
                }
            };
            let request = Request::parse(&mut line.iter()).map(owned_request);
            match request {
                Ok(request) => self.command(request).await?,
                Err(error) => {
                    self.reply(syntax_error_reply(error));
                    self.count_error()?;
                }
            }
        }
    }

    /// Holds the greeting for `smtp.greet_delay`. A real MTA waits for it (RFC 5321 §3.1);
    /// bots that blast their commands at once talk into the silence, as Postfix's postscreen
    /// found. What they sent stays in the buffer and is answered like pipelined commands.
    async fn wait_for_pregreet(&mut self) -> Result<(), Closed> {
        let smtp = &self.shared.settings.smtp;
        if smtp.greet_delay.is_zero() {
            return Ok(());
        }
        let reject = smtp.pregreet_reject;
        self.rbuf.reserve(4096);
        let read = tokio::time::timeout(smtp.greet_delay, self.io.read_buf(&mut self.rbuf));
        match read.await {
            Err(_) => Ok(()),
            Ok(Ok(0)) | Ok(Err(_)) => Err(Closed),
            Ok(Ok(_)) => {
                let said = String::from_utf8_lossy(&self.rbuf[..self.rbuf.len().min(40)])
                    .escape_debug()
                    .to_string();
                tracing::info!(client = %self.peer.ip(), said, "client talked before the greeting");
                if reject {
                    self.reply(Reply::new(
                        554,
                        (5, 5, 1),
                        "Protocol error: commands sent before the greeting",
                    ));
                    return Err(Closed);
                }
                self.connection_symbols.push(
                    Symbol::new(
                        "KALA_PREGREET",
                        3.0,
                        "The client talked before the greeting, as spam bots do",
                    )
                    .with_detail(said),
                );
                Ok(())
            }
        }
    }

    async fn command(&mut self, request: Request<String>) -> Result<(), Closed> {
        match request {
            Request::Ehlo { host } => self.hello(host, true).await,
            Request::Helo { host } => self.hello(host, false).await,
            Request::Mail { from } => self.mail(from).await,
            Request::Rcpt { to } => self.rcpt(to).await,
            Request::Data => self.data().await,
            Request::Rset => {
                self.abort_transaction().await;
                self.reply(Reply::new(250, (2, 0, 0), "Ok"));
                Ok(())
            }
            Request::Noop { .. } => {
                self.reply(Reply::new(250, (2, 0, 0), "Ok"));
                Ok(())
            }
            Request::Quit => {
                self.reply(Reply::new(221, (2, 0, 0), "Bye"));
                Err(Closed)
            }
            Request::Vrfy { .. } => {
                // RFC 5321 §3.5.3: 252 rather than revealing which mailboxes exist.
                self.reply(Reply::new(
                    252,
                    (2, 5, 0),
                    "Cannot VRFY user, but will accept message and attempt delivery",
                ));
                Ok(())
            }
            Request::Help { .. } => {
                self.reply(Reply::new(214, (2, 0, 0), "Kala mail gateway; commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS"));
                Ok(())
            }
            Request::StartTls => self.start_tls().await,
            Request::Bdat { .. } => {
                // CHUNKING is not offered; the chunk that follows would be read as commands,
                // so the only safe answer is to close.
                self.reply(Reply::new(
                    554,
                    (5, 5, 1),
                    "BDAT is not offered here; closing",
                ));
                Err(Closed)
            }
            Request::Auth { .. } => {
                self.reply(Reply::new(
                    502,
                    (5, 5, 1),
                    "AUTH is not offered on this gateway",
                ));
                self.count_error()
            }
            Request::Lhlo { .. }
            | Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => {
                self.reply(Reply::new(502, (5, 5, 1), "Command not implemented"));
                self.count_error()
            }
        }
    }

    async fn hello(&mut self, host: String, esmtp: bool) -> Result<(), Closed> {
        self.abort_transaction().await;
        self.helo = Some(host.clone());
        self.esmtp = esmtp;
        let envelope = self.envelope_for_checks();
        let outcome = self
            .shared
            .pipeline
            .run_phase(Phase::Helo, &envelope, None)
            .await;
        if let Some(refusal) = outcome.refusal {
            self.helo = None;
            self.reply(refusal_reply(&refusal));
            return Ok(());
        }
        // A second EHLO replaces what the first one found.
        self.connection_symbols
            .retain(|s| !s.name.starts_with("KALA_HELO_"));
        self.connection_symbols.extend(outcome.symbols);
        let smtp = &self.shared.settings.smtp;
        let greet = format!("{} Hello {host} [{}]", smtp.hostname, self.peer.ip());
        if !esmtp {
            self.reply(Reply::plain(250, vec![greet]));
            return Ok(());
        }
        let mut lines = vec![
            greet,
            "PIPELINING".into(),
            format!("SIZE {}", smtp.max_message_size),
            "8BITMIME".into(),
            "ENHANCEDSTATUSCODES".into(),
            "SMTPUTF8".into(),
        ];
        if self.shared.tls.is_some() && self.tls.is_none() {
            lines.push("STARTTLS".into());
        }
        lines.push("HELP".into());
        self.reply(Reply::plain(250, lines));
        Ok(())
    }

    async fn mail(&mut self, from: smtp_proto::MailFrom<String>) -> Result<(), Closed> {
        if self.helo.is_none() {
            self.reply(Reply::new(503, (5, 5, 1), "Send EHLO or HELO first"));
            return self.count_error();
        }
        if self.tx.is_some() {
            self.reply(Reply::new(503, (5, 5, 1), "Nested MAIL command"));
            return self.count_error();
        }
        if *self.shutdown.borrow() {
            self.reply(Reply::new(
                421,
                (4, 3, 2),
                "Service shutting down, try again later",
            ));
            return Err(Closed);
        }
        let max = self.shared.settings.smtp.max_message_size;
        if from.size > max {
            self.reply(Reply::new(
                552,
                (5, 3, 4),
                format!("Message size exceeds the limit of {max} bytes"),
            ));
            return Ok(());
        }
        let smtputf8 = from.flags & MAIL_SMTPUTF8 != 0;
        let mut envelope = self.envelope_for_checks();
        envelope.queue_id = new_queue_id();
        envelope.sender = from.address.clone();
        envelope.body_8bitmime = from.flags & MAIL_BODY_8BITMIME != 0;
        envelope.smtputf8 = smtputf8;
        envelope.received_at = unix_now();
        let outcome = self
            .shared
            .pipeline
            .run_phase(Phase::Mail, &envelope, None)
            .await;
        if let Some(refusal) = outcome.refusal {
            let reply = refusal_reply(&refusal);
            track_refused(&self.shared, &envelope, None, &reply);
            self.reply(reply);
            return Ok(());
        }

        // The downstream hears MAIL together with the first RCPT (one round trip fewer);
        // the connection is made now so an unreachable downstream is reported at MAIL.
        let conn = match self.shared.downstream.checkout().await {
            Ok(conn) => conn,
            Err(error) => {
                tracing::warn!(client_ip = %self.peer.ip(), %error, "downstream unavailable at MAIL");
                self.reply(downstream_unavailable());
                return Ok(());
            }
        };
        if smtputf8 && !conn.capabilities.smtputf8 && !from.address.is_ascii() {
            self.shared.downstream.finish(conn).await;
            self.reply(Reply::new(
                553,
                (5, 6, 7),
                "The destination cannot take UTF-8 addresses",
            ));
            return Ok(());
        }
        self.tx = Some(Transaction {
            envelope,
            symbols: self
                .connection_symbols
                .iter()
                .cloned()
                .chain(outcome.symbols)
                .collect(),
            mail_command: relay::mail_command(
                &from.address,
                from.flags & MAIL_BODY_8BITMIME != 0,
                from.flags & MAIL_SMTPUTF8 != 0,
                &conn.capabilities,
            ),
            sender: SenderState::Pending,
            downstream: Some(conn),
            started: Instant::now(),
        });
        self.reply(Reply::new(250, (2, 1, 0), "Sender OK"));
        Ok(())
    }

    async fn rcpt(&mut self, to: smtp_proto::RcptTo<String>) -> Result<(), Closed> {
        let max = self.shared.settings.smtp.max_recipients;
        let Some(tx) = self.tx.as_mut() else {
            self.reply(Reply::new(503, (5, 5, 1), "Need MAIL before RCPT"));
            return self.count_error();
        };
        if tx.envelope.recipients.len() >= max {
            // RFC 5321 §4.5.3.1.10: 452 so the client sends the rest in another transaction.
            self.reply(Reply::new(
                452,
                (4, 5, 3),
                format!("Too many recipients (at most {max} per message)"),
            ));
            return Ok(());
        }
        if !to.address.is_ascii() && !tx.envelope.smtputf8 {
            self.reply(Reply::new(
                553,
                (5, 6, 7),
                "UTF-8 address needs MAIL FROM with SMTPUTF8",
            ));
            return Ok(());
        }
        let mut candidate = tx.envelope.clone();
        candidate.recipients.push(to.address.clone());
        let outcome = self
            .shared
            .pipeline
            .run_phase(Phase::Rcpt, &candidate, None)
            .await;
        if let Some(refusal) = outcome.refusal {
            let reply = refusal_reply(&refusal);
            track_refused(&self.shared, &candidate, Some(&to.address), &reply);
            self.reply(reply);
            return Ok(());
        }
        let tx = self.tx.as_mut().expect("checked above");
        let Some(conn) = tx.downstream.as_mut() else {
            self.reply(downstream_unavailable());
            return Ok(());
        };
        let rcpt_command = format!("RCPT TO:<{}>", to.address);
        let answer = match &tx.sender {
            SenderState::Refused(reply) => Ok(reply.clone()),
            SenderState::Accepted => conn.command(&rcpt_command).await,
            SenderState::Pending => {
                let mut sent = conn.mail_and_rcpt(&tx.mail_command, &rcpt_command).await;
                if sent.is_err() && conn.reused {
                    // The pooled connection was closed by the downstream meanwhile; the
                    // sender should not notice, so once more on a fresh one.
                    tracing::debug!("pooled downstream connection was stale");
                    match self.shared.downstream.connect().await {
                        Ok(fresh) => {
                            *conn = fresh;
                            sent = conn.mail_and_rcpt(&tx.mail_command, &rcpt_command).await;
                        }
                        Err(error) => sent = Err(error),
                    }
                }
                sent.map(|(mail_reply, rcpt_reply)| match rcpt_reply {
                    Some(rcpt_reply) if mail_reply.is_positive() => {
                        tx.sender = SenderState::Accepted;
                        rcpt_reply
                    }
                    _ => {
                        tx.sender = SenderState::Refused(mail_reply.clone());
                        mail_reply
                    }
                })
            }
        };
        match answer {
            Ok(reply) => {
                if reply.is_positive() {
                    tx.envelope.recipients.push(to.address);
                    tx.symbols.extend(outcome.symbols);
                } else {
                    // Exchange refused the recipient (unknown, full, ...): the helpdesk's
                    // most common "where is my mail" answer.
                    track_refused(&self.shared, &candidate, Some(&to.address), &reply);
                }
                self.reply(reply);
            }
            Err(error) => {
                tracing::warn!(%error, "downstream failed at RCPT");
                tx.downstream = None;
                let reply = downstream_unavailable();
                track_refused(&self.shared, &candidate, Some(&to.address), &reply);
                self.reply(reply);
            }
        }
        Ok(())
    }

    async fn data(&mut self) -> Result<(), Closed> {
        let Some(tx) = self.tx.as_ref() else {
            self.reply(Reply::new(503, (5, 5, 1), "Need MAIL before DATA"));
            return self.count_error();
        };
        if tx.envelope.recipients.is_empty() {
            self.reply(Reply::new(554, (5, 5, 1), "No valid recipients"));
            return Ok(());
        }
        if tx.downstream.is_none() {
            self.reply(downstream_unavailable());
            return Ok(());
        }
        self.reply(Reply::plain(
            354,
            vec!["End data with <CR><LF>.<CR><LF>".into()],
        ));
        self.flush().await?;

        let received = self.read_message().await?;
        let mut tx = self.tx.take().expect("checked above");
        let reply = self.deliver(&mut tx, received).await;
        self.reply(reply);
        if let Some(conn) = tx.downstream.take() {
            self.shared.downstream.finish(conn).await;
        }
        Ok(())
    }

    /// Reads DATA into a spool until `<CRLF>.<CRLF>`, whatever else happens on the way.
    async fn read_message(&mut self) -> Result<ReceivedData, Closed> {
        let smtp = &self.shared.settings.smtp;
        let mut reader = DataReader::new(smtp.max_message_size);
        let mut spool = Spool::new(smtp.memory_spool_size);
        let mut spool_error = None;
        let mut chunk = Vec::with_capacity(64 * 1024);
        let data_timeout = smtp.data_timeout;
        loop {
            if !self.rbuf.is_empty() {
                chunk.clear();
                let feed = reader.feed(&self.rbuf, &mut chunk);
                if spool_error.is_none()
                    && let Err(e) = spool.write(&chunk, &self.shared.tmp_dir).await
                {
                    spool_error = Some(e);
                }
                match feed {
                    Feed::Done { consumed } => {
                        self.rbuf.drain(..consumed);
                        break;
                    }
                    Feed::NeedMore => self.rbuf.clear(),
                }
            }
            // RFC 5321 §4.5.3.2.6: 3 minutes for each block of data.
            self.read_more(data_timeout).await?;
        }
        Ok(ReceivedData {
            size: reader.size(),
            oversized: reader.oversized,
            bare_line_end: reader.bare_line_end,
            spool_error,
            spool,
        })
    }

    /// Decides and acts on one complete message; the reply is what the sender gets.
    async fn deliver(&mut self, tx: &mut Transaction, data: ReceivedData) -> Reply {
        let settings = &self.shared.settings;
        let envelope = &tx.envelope;
        let early = |reason: &str, reply: Reply| {
            log_message(
                envelope,
                data.size,
                Outcome::Refused(reason),
                &reply,
                tx.started,
                None,
            );
            track(
                &self.shared,
                envelope,
                data.size,
                None,
                None,
                refused_action(&reply),
                &reply,
            );
            reply
        };
        if data.oversized {
            let max = settings.smtp.max_message_size;
            return early(
                "size",
                Reply::new(
                    552,
                    (5, 3, 4),
                    format!("Message size exceeds the limit of {max} bytes"),
                ),
            );
        }
        if data.bare_line_end {
            return early(
                "bare_line_end",
                Reply::new(
                    554,
                    (5, 6, 0),
                    "Message contains a bare CR or LF; lines must end with CRLF (RFC 5321 2.3.8)",
                ),
            );
        }
        if let Some(error) = &data.spool_error {
            tracing::error!(%error, dir = %self.shared.tmp_dir.display(), "cannot spool message");
            return early(
                "spool_error",
                Reply::new(451, (4, 3, 0), "Local problem, try again later"),
            );
        }
        let spool = &data.spool;
        let max_header = settings.smtp.max_header_size;
        let received = rewrite::received_header(envelope, &settings.smtp.hostname);
        let pipeline = &self.shared.pipeline;
        let scan_len = pipeline.max_scan_size().saturating_sub(received.len());
        // One read serves both the header check and the scan.
        let head = match spool.read_range(0, scan_len.max(max_header + 2)).await {
            Ok(head) => head,
            Err(error) => {
                tracing::error!(%error, "cannot read spool");
                return early(
                    "spool_error",
                    Reply::new(451, (4, 3, 0), "Local problem, try again later"),
                );
            }
        };
        let prefix = &head[..head.len().min(max_header + 2)];
        let Some(header_len) =
            rewrite::header_len(prefix, spool.len()).filter(|&n| n <= max_header)
        else {
            return early(
                "header_size",
                Reply::new(
                    552,
                    (5, 3, 4),
                    format!("Header section exceeds the limit of {max_header} bytes"),
                ),
            );
        };

        let mut raw = Vec::with_capacity(received.len() + head.len().min(scan_len));
        raw.extend_from_slice(received.as_bytes());
        raw.extend_from_slice(&head[..head.len().min(scan_len)]);
        let message = pipeline.parse(raw, received.len() + spool.len()).await;
        let verdict = pipeline
            .scan(envelope, &message, std::mem::take(&mut tx.symbols))
            .await;

        let original_header = &prefix[..header_len];
        let reply = match verdict.action {
            Action::Accept | Action::Tag => {
                let header = rewrite::stamped_header(
                    &received,
                    &verdict,
                    &pipeline.policy().subject_prefix,
                    &self.shared.settings.smtp.hostname,
                    original_header,
                );
                relay_message(&self.shared.downstream, tx, &header, spool, header_len).await
            }
            Action::Quarantine => {
                let record = HoldRecord {
                    envelope,
                    verdict: &verdict,
                };
                let held = match read_spool(received.as_bytes(), spool).await {
                    Ok(raw) => {
                        self.shared
                            .quarantine
                            .hold(&record, &Headline::of(&message), raw)
                            .await
                    }
                    Err(e) => Err(e.into()),
                };
                match held {
                    Ok(_) => Reply::new(
                        250,
                        (2, 0, 0),
                        format!("Ok: queued as {}", envelope.queue_id),
                    ),
                    Err(error) => {
                        tracing::error!(
                            error = format!("{error:#}"),
                            "cannot write to the quarantine store"
                        );
                        Reply::new(451, (4, 3, 0), "Local problem, try again later")
                    }
                }
            }
            Action::Reject => Reply::new(
                550,
                (5, 7, 1),
                format!("Message rejected as spam ({})", verdict.top_symbols(3)),
            ),
            Action::Tempfail => Reply::new(
                451,
                (4, 7, 1),
                "Message could not be checked now, try again later",
            ),
        };
        let headline = Headline::of(&message);
        log_message(
            &tx.envelope,
            spool.len(),
            Outcome::Decided(&verdict),
            &reply,
            tx.started,
            settings.log.message_details.then_some(&headline),
        );
        // What the sender saw decides: a hold that failed was a tempfail.
        let outcome = match reply.code {
            400..=499 => Action::Tempfail,
            500..=599 => Action::Reject,
            _ => verdict.action,
        };
        track(
            &self.shared,
            &tx.envelope,
            spool.len(),
            Some(&headline),
            Some(&verdict),
            outcome,
            &reply,
        );
        self.shared
            .activity
            .record(outcome, Some(&verdict), crate::store::now());
        crate::metrics::metrics().message(outcome, Some(&verdict));
        if let Some(model) = &self.shared.bayes
            && outcome != Action::Tempfail
            && let Some(spam) = crate::bayes::autolearn_class(&verdict, &self.shared.settings.bayes)
        {
            crate::bayes::spawn_autolearn(model.clone(), message.clone(), spam);
        }
        let rules = &self.shared.settings.rules;
        if rules.sample_relayed > 0 && matches!(outcome, Action::Accept | Action::Tag) {
            // Kept (off by default) so `kala rules try` can show what new rules would do to
            // mail that passed; written after the reply is decided, never delaying it.
            let store = self.shared.quarantine.store().clone();
            let (keep, max_age) = (rules.sample_relayed, rules.sample_retention.as_secs());
            let (verdict, message) = (verdict.clone(), message.clone());
            tokio::spawn(async move {
                if let Err(e) = store
                    .add_rule_sample(&verdict, &message.raw, keep, max_age)
                    .await
                {
                    tracing::warn!(error = %e, "relayed sample not kept");
                }
            });
        }
        reply
    }

    async fn start_tls(&mut self) -> Result<(), Closed> {
        let Some(acceptor) = self.shared.tls.clone() else {
            self.reply(Reply::new(502, (5, 5, 1), "STARTTLS not available"));
            return self.count_error();
        };
        if self.tls.is_some() {
            self.reply(Reply::new(503, (5, 5, 1), "TLS already active"));
            return self.count_error();
        }
        self.reply(Reply::new(220, (2, 0, 0), "Ready to start TLS"));
        self.flush().await?;
        // RFC 3207 §4.2: commands pipelined behind STARTTLS were sent in the clear and must
        // not be acted on after the handshake (the STARTTLS command-injection attack).
        self.rbuf.clear();
        let io = std::mem::replace(
            &mut self.io,
            Box::new(tokio::io::join(tokio::io::empty(), tokio::io::sink())),
        );
        let timeout = self.shared.settings.smtp.command_timeout;
        let stream = match tokio::time::timeout(timeout, acceptor.accept(io)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::debug!(client_ip = %self.peer.ip(), %error, "TLS handshake failed");
                return Err(Closed);
            }
            Err(_) => return Err(Closed),
        };
        let version = stream
            .get_ref()
            .1
            .protocol_version()
            .and_then(|v| v.as_str())
            .unwrap_or("TLS")
            .replace('_', ".");
        self.io = Box::new(stream);
        self.tls = Some(version);
        // RFC 3207 §4.2: forget everything learnt before TLS; the client starts with EHLO.
        self.abort_transaction().await;
        self.helo = None;
        self.esmtp = false;
        self.connection_symbols
            .retain(|s| !s.name.starts_with("KALA_HELO_"));
        Ok(())
    }

    /// Ends the open transaction, if any, without a message (RSET, EHLO, QUIT, error).
    async fn abort_transaction(&mut self) {
        if let Some(mut tx) = self.tx.take()
            && let Some(conn) = tx.downstream.take()
        {
            self.shared.downstream.finish(conn).await;
        }
    }

    fn envelope_for_checks(&self) -> Envelope {
        Envelope {
            queue_id: String::new(),
            client_ip: self.peer.ip(),
            client_name: self.client_name.clone(),
            helo: self.helo.clone(),
            esmtp: self.esmtp,
            tls: self.tls.clone(),
            sender: String::new(),
            recipients: Vec::new(),
            body_8bitmime: false,
            smtputf8: false,
            received_at: unix_now(),
        }
    }

    fn reply(&mut self, reply: Reply) {
        reply.write_to(&mut self.wbuf);
    }

    fn count_error(&mut self) -> Result<(), Closed> {
        self.errors += 1;
        if self.errors >= self.shared.settings.smtp.max_errors {
            self.reply(Reply::new(
                421,
                (4, 7, 0),
                "Too many errors, closing connection",
            ));
            return Err(Closed);
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), Closed> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let timeout = self.shared.settings.smtp.command_timeout;
        let write = async {
            self.io.write_all(&self.wbuf).await?;
            self.io.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(())) => {
                self.wbuf.clear();
                Ok(())
            }
            _ => {
                self.wbuf.clear();
                Err(Closed)
            }
        }
    }

    /// The next command line (with its line end), or `None` for a line over the limit (which
    /// is skipped whole). Flushes queued replies first: the pipelining rule.
    async fn read_command_line(&mut self) -> Result<Option<Vec<u8>>, Closed> {
        let max = self.shared.settings.smtp.max_line_length;
        let mut discarding = false;
        loop {
            if let Some(pos) = memchr::memchr(b'\n', &self.rbuf) {
                let line: Vec<u8> = self.rbuf.drain(..=pos).collect();
                if discarding || line.len() > max {
                    return Ok(None);
                }
                return Ok(Some(line));
            }
            if self.rbuf.len() > max {
                discarding = true;
                self.rbuf.clear();
            }
            if *self.shutdown.borrow() && self.tx.is_none() {
                self.reply(Reply::new(
                    421,
                    (4, 3, 2),
                    "Service shutting down, try again later",
                ));
                return Err(Closed);
            }
            let timeout = self.shared.settings.smtp.command_timeout;
            self.read_more(timeout).await?;
        }
    }

    /// Flushes replies, then reads more input within `timeout`; a shutdown interrupts the
    /// wait when no transaction is open.
    async fn read_more(&mut self, timeout: Duration) -> Result<(), Closed> {
        self.flush().await?;
        self.rbuf.reserve(16 * 1024);
        let mut shutdown = self.shutdown.clone();
        let in_transaction = self.tx.is_some();
        let read = tokio::time::timeout(timeout, self.io.read_buf(&mut self.rbuf));
        tokio::select! {
            result = read => match result {
                Ok(Ok(0)) | Ok(Err(_)) => Err(Closed),
                Ok(Ok(_)) => Ok(()),
                Err(_) => {
                    self.reply(Reply::new(421, (4, 4, 2), "Idle timeout, closing connection"));
                    let _ = self.flush().await;
                    Err(Closed)
                }
            },
            _ = async { let _ = shutdown.wait_for(|stop| *stop).await; }, if !in_transaction => {
                self.reply(Reply::new(421, (4, 3, 2), "Service shutting down, try again later"));
                let _ = self.flush().await;
                Err(Closed)
            }
        }
    }
}

/// Sends the stamped header and the original body to the downstream. Whatever the downstream
/// answered, its transaction is over, so the connection goes back to the pool without RSET.
async fn relay_message(
    downstream: &relay::Downstream,
    tx: &mut Transaction,
    header: &[u8],
    spool: &Spool,
    body_offset: usize,
) -> Reply {
    let Some(conn) = tx.downstream.as_mut() else {
        return downstream_unavailable();
    };
    let body = match spool.reader(body_offset).await {
        Ok(body) => body,
        Err(error) => {
            tracing::error!(%error, "cannot read spool");
            return Reply::new(451, (4, 3, 0), "Local problem, try again later");
        }
    };
    match conn.data(header, body).await {
        Ok(reply) => {
            crate::metrics::metrics().downstream_reply(Some(reply.code));
            if let Some(conn) = tx.downstream.take() {
                downstream.release(conn);
            }
            reply
        }
        Err(error) => {
            crate::metrics::metrics().downstream_reply(None);
            tracing::warn!(%error, "downstream failed during DATA");
            tx.downstream = None;
            downstream_unavailable()
        }
    }
}

/// What DATA produced.
struct ReceivedData {
    size: usize,
    oversized: bool,
    bare_line_end: bool,
    spool_error: Option<std::io::Error>,
    spool: Spool,
}

/// The message as it would have been relayed: Kala's Received line, then what was sent.
async fn read_spool(received: &[u8], spool: &Spool) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt as _;
    let mut raw = Vec::with_capacity(received.len() + spool.len());
    raw.extend_from_slice(received);
    spool.reader(0).await?.read_to_end(&mut raw).await?;
    Ok(raw)
}

/// Whether a client at `ip` came over the internet, so its host name says something: loopback,
/// private, link-local and unique-local clients are this site's own machines.
fn is_internet_address(ip: std::net::IpAddr) -> bool {
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => {
            !(v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_unspecified())
        }
        std::net::IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

fn downstream_unavailable() -> Reply {
    Reply::new(
        451,
        (4, 4, 1),
        "Destination server not reachable, try again later",
    )
}

fn refusal_reply(refusal: &Refusal) -> Reply {
    let class = if refusal.code >= 500 { 5 } else { 4 };
    Reply::new(refusal.code, (class, 7, 1), refusal.text.clone())
}

fn syntax_error_reply(error: smtp_proto::Error) -> Reply {
    use smtp_proto::Error as E;
    match error {
        E::UnknownCommand => Reply::new(500, (5, 5, 2), "Command unrecognized"),
        E::InvalidSenderAddress => Reply::new(501, (5, 1, 7), "Bad sender address syntax"),
        E::InvalidRecipientAddress => Reply::new(501, (5, 1, 3), "Bad recipient address syntax"),
        E::SyntaxError { syntax } => Reply::new(501, (5, 5, 4), format!("Syntax: {syntax}")),
        E::InvalidParameter { param } => {
            Reply::new(501, (5, 5, 4), format!("Invalid parameter {param}"))
        }
        E::UnsupportedParameter { param } => {
            Reply::new(555, (5, 5, 4), format!("Unsupported parameter {param}"))
        }
        E::ResponseTooLong => Reply::new(500, (5, 5, 2), "Line too long"),
        _ => Reply::new(500, (5, 5, 2), "Syntax error"),
    }
}

fn owned_request(request: Request<Cow<'_, str>>) -> Request<String> {
    match request {
        Request::Ehlo { host } => Request::Ehlo {
            host: host.into_owned(),
        },
        Request::Lhlo { host } => Request::Lhlo {
            host: host.into_owned(),
        },
        Request::Helo { host } => Request::Helo {
            host: host.into_owned(),
        },
        Request::Mail { from } => Request::Mail {
            from: from.into_owned(),
        },
        Request::Rcpt { to } => Request::Rcpt {
            to: to.into_owned(),
        },
        Request::Bdat {
            chunk_size,
            is_last,
        } => Request::Bdat {
            chunk_size,
            is_last,
        },
        Request::Auth {
            mechanism,
            initial_response,
        } => Request::Auth {
            mechanism,
            initial_response: initial_response.into_owned(),
        },
        Request::Noop { value } => Request::Noop {
            value: value.into_owned(),
        },
        Request::Vrfy { value } => Request::Vrfy {
            value: value.into_owned(),
        },
        Request::Expn { value } => Request::Expn {
            value: value.into_owned(),
        },
        Request::Help { value } => Request::Help {
            value: value.into_owned(),
        },
        Request::Etrn { name } => Request::Etrn {
            name: name.into_owned(),
        },
        Request::Atrn { domains } => Request::Atrn {
            domains: domains.into_iter().map(Cow::into_owned).collect(),
        },
        Request::Burl { uri, is_last } => Request::Burl {
            uri: uri.into_owned(),
            is_last,
        },
        Request::StartTls => Request::StartTls,
        Request::Data => Request::Data,
        Request::Rset => Request::Rset,
        Request::Quit => Request::Quit,
    }
}

/// How a message ended, for its log line.
enum Outcome<'a> {
    /// Scanned and decided.
    Decided(&'a Verdict),
    /// Refused before scanning (size, bare line ends, header size, spool trouble).
    Refused(&'a str),
}

/// The one log line per message: the same fields whatever happened, so log tools can rely on
/// them (`reason` is `scanned` when a verdict decided).
fn log_message(
    envelope: &Envelope,
    size: usize,
    outcome: Outcome<'_>,
    reply: &Reply,
    started: Instant,
    details: Option<&Headline>,
) {
    let (score, symbols, action, reason) = match outcome {
        Outcome::Decided(v) => (v.score, v.symbol_list(), v.action.to_string(), "scanned"),
        Outcome::Refused(reason) => (
            0.0,
            String::new(),
            refused_action(reply).to_string(),
            reason,
        ),
    };
    tracing::info!(
        target: "kala::message",
        queue_id = %envelope.queue_id,
        client_ip = %envelope.client_ip,
        helo = envelope.helo.as_deref().unwrap_or(""),
        sender = %envelope.sender,
        recipients = %envelope.recipients.join(","),
        size,
        score,
        symbols = %symbols,
        action = %action,
        reason,
        reply = %reply,
        ms = started.elapsed().as_millis() as u64,
        subject = details.map(|h| h.subject.as_str()),
        message_id = details.map(|h| h.message_id.as_str()),
        "message"
    );
}

/// Records the message's path for tracking (`tracking.enabled`), off the reply's way: the
/// write is spawned, and a failure is logged, never turned into a refusal.
fn track(
    shared: &super::Shared,
    envelope: &Envelope,
    size: usize,
    headline: Option<&Headline>,
    verdict: Option<&crate::verdict::Verdict>,
    action: Action,
    reply: &Reply,
) {
    if !shared.settings.tracking.enabled {
        return;
    }
    let tracked = crate::store::tracking::Tracked {
        queue_id: envelope.queue_id.clone(),
        received_at: envelope.received_at as i64,
        client_ip: envelope.client_ip.to_string(),
        helo: envelope.helo.clone().unwrap_or_default(),
        sender: envelope.sender.clone(),
        recipients: envelope.recipients.clone(),
        subject: headline.map(|h| h.subject.clone()).unwrap_or_default(),
        message_id: headline.map(|h| h.message_id.clone()).unwrap_or_default(),
        size: size as i64,
        score: verdict.map(|v| v.score).unwrap_or(0.0),
        symbols: verdict.map(|v| v.symbol_list()).unwrap_or_default(),
        action: action.to_string(),
        reply: reply.to_string(),
        // A held message keeps its queue id in the quarantine.
        quarantine_id: if action == Action::Quarantine {
            envelope.queue_id.clone()
        } else {
            String::new()
        },
    };
    let store = shared.quarantine.store().clone();
    tokio::spawn(async move {
        if let Err(e) = store.track(&tracked).await {
            tracing::warn!(error = %e, queue_id = %tracked.queue_id, "message not tracked");
        }
    });
}

/// Tracks a refusal before DATA (at connect, MAIL or RCPT): no message, but the sender
/// was told something the helpdesk must be able to find. Each refusal gets its own id.
fn track_refused(
    shared: &super::Shared,
    envelope: &Envelope,
    recipient: Option<&str>,
    reply: &Reply,
) {
    let mut refused = envelope.clone();
    refused.queue_id = new_queue_id();
    refused.recipients = recipient.map(|r| vec![r.to_string()]).unwrap_or_default();
    if refused.received_at == 0 {
        refused.received_at = unix_now();
    }
    track(
        shared,
        &refused,
        0,
        None,
        None,
        refused_action(reply),
        reply,
    );
}

/// A refusal before scanning is a reject (5xx) or a tempfail (4xx).
fn refused_action(reply: &Reply) -> Action {
    if reply.is_transient() {
        Action::Tempfail
    } else {
        Action::Reject
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_internet_clients_are_looked_up() {
        let internet = |ip: &str| is_internet_address(ip.parse().unwrap());
        assert!(internet("192.0.2.44"));
        assert!(internet("2001:db8::1"));
        assert!(internet("::ffff:192.0.2.44"));
        for local in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.9",
            "192.168.1.1",
            "169.254.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!internet(local), "{local}");
        }
    }
}

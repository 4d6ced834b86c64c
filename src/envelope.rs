//! The SMTP facts about one message: who connected, how, and the envelope sender and recipients.
//!
//! Connection facts live as long as the TCP connection; transaction facts are reset on RSET,
//! EHLO and after each message. Checks read the [`Envelope`]; they never see the socket.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Facts about the connection and the transaction, as the checks see them.
#[derive(Debug, Clone, Serialize)]
pub struct Envelope {
    pub queue_id: String,
    pub client_ip: IpAddr,
    /// The client's forward-confirmed host name, when it has one and it was looked up.
    pub client_name: Option<String>,
    /// What the client said in EHLO/HELO.
    pub helo: Option<String>,
    /// True after EHLO (rather than HELO).
    pub esmtp: bool,
    /// The negotiated TLS version, e.g. `TLSv1.3`, when STARTTLS was used.
    pub tls: Option<String>,
    /// MAIL FROM address; empty for the null sender (bounces).
    pub sender: String,
    pub recipients: Vec<String>,
    /// MAIL FROM carried BODY=8BITMIME.
    pub body_8bitmime: bool,
    /// MAIL FROM carried SMTPUTF8.
    pub smtputf8: bool,
    /// Unix seconds when the transaction began.
    pub received_at: u64,
}

impl Envelope {
    /// An envelope for a message that did not arrive over SMTP (`kala scan`).
    pub fn offline(sender: &str, recipients: Vec<String>) -> Envelope {
        Envelope {
            queue_id: new_queue_id(),
            client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            client_name: None,
            helo: None,
            esmtp: false,
            tls: None,
            sender: sender.to_string(),
            recipients,
            body_8bitmime: false,
            smtputf8: false,
            received_at: unix_now(),
        }
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A short, unique, sortable id for one message: log lines, headers and quarantine files share it.
///
/// Microseconds since the epoch plus a per-process counter, so ids stay unique under load and
/// across restarts without coordination.
pub fn new_queue_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) & 0xfff;
    format!("{micros:013X}{n:03X}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_ids_are_unique() {
        let ids: std::collections::HashSet<String> = (0..2000).map(|_| new_queue_id()).collect();
        assert_eq!(ids.len(), 2000);
    }
}

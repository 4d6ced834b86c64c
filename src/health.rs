//! Conditions an admin must hear about even when no single message fails: shown on the
//! dashboard and logged when they start.

use std::sync::Mutex;
use std::time::SystemTime;

/// One standing problem: what, and since when.
#[derive(Debug, Clone)]
pub struct Warning {
    pub text: String,
    pub since: SystemTime,
}

/// The gateway's standing problems. Shared by the checks that detect them.
#[derive(Debug, Default)]
pub struct Health {
    /// A DNS blocklist refuses our resolver (answers in 127.255.255.0/24): its listings are
    /// not being seen at all.
    dnsbl_refused: Mutex<Option<Warning>>,
}

impl Health {
    /// Records that `zone` refused our resolver; logs loudly the first time.
    pub fn dnsbl_refused(&self, zone: &str, answer: std::net::Ipv4Addr) {
        let mut slot = self.dnsbl_refused.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            tracing::error!(
                zone,
                %answer,
                "the DNS blocklist refuses our resolver: its listings are ignored until dns.servers names a resolver of your own (see the README)"
            );
        }
        let since = slot
            .as_ref()
            .map(|w| w.since)
            .unwrap_or_else(SystemTime::now);
        *slot = Some(Warning {
            text: format!(
                "DNS blocklist {zone} answers {answer}: it refuses the resolver Kala uses, so its listings are ignored. Point dns.servers at a local recursive resolver."
            ),
            since,
        });
    }

    /// Every standing problem, for the dashboard and status commands.
    pub fn warnings(&self) -> Vec<Warning> {
        let slot = self.dnsbl_refused.lock().unwrap_or_else(|e| e.into_inner());
        slot.iter().cloned().collect()
    }
}

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

/// One readiness probe's answer.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Probe {
    pub name: String,
    pub ok: bool,
    /// What was found, in a few words (no addresses: `/readyz` needs no login).
    pub detail: String,
    pub millis: u64,
}

/// Whether the gateway can take mail now: every probe answered in time and well.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Readiness {
    pub ready: bool,
    pub probes: Vec<Probe>,
}

/// Bound on each probe; a load balancer asks often and must get an answer.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Asks everything mail depends on, at once: the downstream (a full SMTP greeting and EHLO),
/// clamd (when scanning is on), the store (a write), and the rule set (one is active).
pub async fn readiness(shared: &crate::smtp::Shared) -> Readiness {
    use crate::antivirus::Scanner as _;
    let downstream = probe("downstream", async {
        let conn = shared.downstream.connect().await.map_err(short_error)?;
        shared.downstream.finish(conn).await;
        Ok("greeting and EHLO answered".to_string())
    });
    let antivirus = probe("antivirus", async {
        if !shared.settings.antivirus.enabled {
            return Ok("disabled in the config (nothing is virus-scanned)".to_string());
        }
        let clamd = crate::antivirus::Clamd::from_settings(&shared.settings.antivirus);
        let version = clamd.version().await.map_err(short_error)?;
        Ok(format!("clamd {} answered", version.engine))
    });
    let store = probe("store", async {
        shared
            .quarantine
            .store()
            .check_writable()
            .await
            .map_err(|e| short_error(format!("{e:#}")))?;
        Ok("writable".to_string())
    });
    let rules = probe("rules", async {
        let status = shared.rulesets.status();
        let set = shared.rulesets.live().current();
        let active = status.active.ok_or("no rule set version is active")?;
        let mut detail = format!("version {} active, {} rules", active.id, set.reported_len());
        if status.refused.is_some() {
            detail.push_str("; the last change was refused (see the Rules page)");
        }
        Ok(detail)
    });
    let (downstream, antivirus, store, rules) = tokio::join!(downstream, antivirus, store, rules);
    let probes = vec![downstream, antivirus, store, rules];
    Readiness {
        ready: probes.iter().all(|p| p.ok),
        probes,
    }
}

async fn probe<F>(name: &str, work: F) -> Probe
where
    F: std::future::Future<Output = Result<String, String>>,
{
    let started = std::time::Instant::now();
    let (ok, detail) = match tokio::time::timeout(PROBE_TIMEOUT, work).await {
        Ok(Ok(detail)) => (true, detail),
        Ok(Err(error)) => (false, error),
        Err(_) => (false, format!("no answer within {PROBE_TIMEOUT:?}")),
    };
    Probe {
        name: name.to_string(),
        ok,
        detail,
        millis: started.elapsed().as_millis() as u64,
    }
}

/// An error's first line, without the socket addresses a public probe must not reveal.
fn short_error(error: impl std::fmt::Display) -> String {
    let text = error.to_string();
    let first = text.lines().next().unwrap_or("").to_string();
    first
        .split_whitespace()
        .filter(|word| {
            word.trim_matches(|c: char| "()[],;:".contains(c))
                .parse::<std::net::SocketAddr>()
                .is_err()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

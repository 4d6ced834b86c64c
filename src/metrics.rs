//! Every metric Kala exports, in one place, served as Prometheus/OpenMetrics text on the UI's
//! `/metrics` (the README lists them). One process-wide set: the code that measures calls
//! [`metrics()`] rather than carrying a handle through every constructor.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::verdict::{Action, Verdict};

/// Label pairs of one series.
type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Registry,
    messages: Family<Labels, Counter>,
    symbols: Family<Labels, Counter>,
    check_seconds: Family<Labels, Histogram>,
    check_failures: Family<Labels, Counter>,
    clamd_seconds: Histogram,
    clamd_errors: Counter,
    clamd_database_age: Gauge,
    dns_seconds: Histogram,
    dns_errors: Counter,
    downstream_replies: Family<Labels, Counter>,
    sessions: Gauge,
    passed_unscanned: Counter,
    quarantine_held: Gauge,
    rule_changes: Family<Labels, Counter>,
}

/// 0.1 ms to about 26 s, doubling: from a cached header rule to a slow clamd.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 19))
}

impl Metrics {
    fn new() -> Metrics {
        let mut metrics = Metrics {
            messages: Family::default(),
            symbols: Family::default(),
            check_seconds: Family::new_with_constructor(seconds_histogram),
            check_failures: Family::default(),
            clamd_seconds: seconds_histogram(),
            clamd_errors: Counter::default(),
            clamd_database_age: Gauge::default(),
            dns_seconds: seconds_histogram(),
            dns_errors: Counter::default(),
            downstream_replies: Family::default(),
            sessions: Gauge::default(),
            passed_unscanned: Counter::default(),
            quarantine_held: Gauge::default(),
            rule_changes: Family::default(),
            registry: Registry::with_prefix("kala"),
        };
        let registry = &mut metrics.registry;
        registry.register(
            "messages",
            "Messages decided, by the action the sender saw (accept, tag, quarantine, reject, tempfail)",
            metrics.messages.clone(),
        );
        registry.register(
            "symbols",
            "Symbols in the verdicts of decided messages, by symbol",
            metrics.symbols.clone(),
        );
        registry.register_with_unit(
            "check_duration",
            "Time each check took on one message or SMTP step",
            Unit::Seconds,
            metrics.check_seconds.clone(),
        );
        registry.register(
            "check_failures",
            "Checks that failed or timed out (their symbol becomes <NAME>_UNCHECKED)",
            metrics.check_failures.clone(),
        );
        registry.register_with_unit(
            "clamd_duration",
            "Time of each clamd call (scans and health checks)",
            Unit::Seconds,
            metrics.clamd_seconds.clone(),
        );
        registry.register(
            "clamd_errors",
            "clamd calls that failed or timed out",
            metrics.clamd_errors.clone(),
        );
        registry.register_with_unit(
            "clamd_database_age",
            "Age of ClamAV's signature database at the last health check",
            Unit::Seconds,
            metrics.clamd_database_age.clone(),
        );
        registry.register_with_unit(
            "dns_duration",
            "Time of each blocklist DNS lookup",
            Unit::Seconds,
            metrics.dns_seconds.clone(),
        );
        registry.register(
            "dns_errors",
            "Blocklist DNS lookups that failed or timed out",
            metrics.dns_errors.clone(),
        );
        registry.register(
            "downstream_replies",
            "The downstream's answers to relayed messages, by class (2xx, 4xx, 5xx, or error: no answer)",
            metrics.downstream_replies.clone(),
        );
        registry.register(
            "smtp_sessions",
            "SMTP sessions open now",
            metrics.sessions.clone(),
        );
        registry.register(
            "passed_unscanned",
            "Messages passed without a virus scan (antivirus.fail_open while clamd was down)",
            metrics.passed_unscanned.clone(),
        );
        registry.register(
            "quarantine_held",
            "Messages held in the quarantine now",
            metrics.quarantine_held.clone(),
        );
        registry.register(
            "rule_changes",
            "Rule set changes, by result (activated, unchanged, refused)",
            metrics.rule_changes.clone(),
        );
        metrics
    }

    /// A decided message: the action the sender saw and the verdict's symbols.
    pub fn message(&self, action: Action, verdict: Option<&Verdict>) {
        let action = format!("{action:?}").to_lowercase();
        self.messages.get_or_create(&vec![("action", action)]).inc();
        for symbol in verdict.map(|v| v.symbols.as_slice()).unwrap_or_default() {
            self.symbols
                .get_or_create(&vec![("symbol", symbol.name.clone())])
                .inc();
        }
    }

    pub fn check(&self, check: &'static str, took: Duration, failure: Option<&'static str>) {
        self.check_seconds
            .get_or_create(&vec![("check", check.to_string())])
            .observe(took.as_secs_f64());
        if let Some(reason) = failure {
            self.check_failures
                .get_or_create(&vec![
                    ("check", check.to_string()),
                    ("reason", reason.into()),
                ])
                .inc();
        }
    }

    pub fn passed_unscanned(&self) {
        self.passed_unscanned.inc();
    }

    pub fn clamd_call(&self, took: Duration, failed: bool) {
        self.clamd_seconds.observe(took.as_secs_f64());
        if failed {
            self.clamd_errors.inc();
        }
    }

    pub fn clamd_database_age(&self, age: Duration) {
        self.clamd_database_age.set(age.as_secs() as i64);
    }

    pub fn dns_lookup(&self, took: Duration, failed: bool) {
        self.dns_seconds.observe(took.as_secs_f64());
        if failed {
            self.dns_errors.inc();
        }
    }

    /// The downstream's reply code to DATA, or `None` when it gave none.
    pub fn downstream_reply(&self, code: Option<u16>) {
        let class = match code {
            Some(200..=299) => "2xx",
            Some(400..=499) => "4xx",
            Some(500..=599) => "5xx",
            _ => "error",
        };
        self.downstream_replies
            .get_or_create(&vec![("class", class.to_string())])
            .inc();
    }

    /// Counts an open session until the guard is dropped.
    pub fn session(&'static self) -> SessionGuard {
        self.sessions.inc();
        SessionGuard(self)
    }

    pub fn rule_change(&self, result: &'static str) {
        self.rule_changes
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
    }

    /// The whole set as OpenMetrics text, with the quarantine's size read now.
    pub async fn render(&self, quarantine: &crate::quarantine::Quarantine) -> String {
        if let Ok(held) = quarantine.held_by_category().await {
            self.quarantine_held
                .set(held.iter().map(|(_, count, _)| *count).sum());
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// Decrements the open-session gauge when the session ends, however it ends.
pub struct SessionGuard(&'static Metrics);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.sessions.dec();
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

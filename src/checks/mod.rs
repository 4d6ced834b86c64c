//! The [`Check`] trait, the SMTP phases checks run in, and the [`Pipeline`] that runs them.
//!
//! A check detects and emits [`Symbol`]s; it never decides the action (that is
//! [`crate::verdict::Policy`]). Checks for one phase run concurrently, each under a timeout;
//! one that fails or times out yields `<NAME>_UNCHECKED` so the policy can decide what a
//! missing answer means.

mod antivirus;
mod attachments;
mod authentication;
mod bayes;
mod dnsbl;
mod feeds;
mod greylist;
mod headers;
mod helo;
mod lists;
mod ratelimit;
mod rules;
mod uribl;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Semaphore;

use crate::config::Settings;
use crate::envelope::Envelope;
use crate::message::Message;
use crate::verdict::{Policy, Symbol, Verdict};

pub use antivirus::{Antivirus, PASSED_UNSCANNED, unscanned};
pub use attachments::Attachments;
pub use authentication::Authentication;
pub use bayes::Bayes;
pub use dnsbl::Dnsbl;
pub use feeds::FeedLists;
pub use greylist::Greylist;
pub use headers::HeaderStructure;
pub use helo::{HELO_SHAPES, HeloName};
pub use lists::SenderLists;
pub use ratelimit::RateLimit;
pub use rules::SpamRules;
pub use uribl::Uribl;
pub(crate) use uribl::host_of;

/// When in the SMTP dialogue a check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Right after TCP accept: only the client address is known.
    Connect,
    /// After EHLO/HELO.
    Helo,
    /// After MAIL FROM.
    Mail,
    /// After each RCPT TO that the downstream accepted.
    Rcpt,
    /// After the whole message arrived and was parsed.
    Data,
}

/// What a check sees: the envelope always, the parsed message in the DATA phase.
pub struct Context<'a> {
    pub phase: Phase,
    pub envelope: &'a Envelope,
    /// Shared, so a check can hand it to [`CpuSlots::run`] for CPU-heavy work.
    pub message: Option<&'a Arc<Message>>,
    pub cpu: &'a CpuSlots,
}

/// Runs CPU-heavy work (parsing, regex scanning) on blocking threads, at most `workers` at
/// once. More would only queue on the same cores, and each scan running at the same time
/// holds its own regex caches (megabytes each): this bound is also what bounds memory.
pub struct CpuSlots {
    /// `None`: work runs where it is called, which only an offline batch may do (`kala eval`
    /// scans one message at a time; the hand-off to another thread and back cost it a third
    /// of its time, measured).
    slots: Option<Semaphore>,
}

impl CpuSlots {
    /// `workers` slots; 0 runs the work on the calling thread.
    pub fn new(workers: usize) -> CpuSlots {
        CpuSlots {
            slots: (workers > 0).then(|| Semaphore::new(workers)),
        }
    }

    /// Waits for a free slot, then runs `work` off the async runtime.
    pub async fn run<R, F>(&self, work: F) -> anyhow::Result<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let Some(slots) = &self.slots else {
            return Ok(work());
        };
        let _slot = slots.acquire().await?;
        Ok(tokio::task::spawn_blocking(work).await?)
    }
}

/// A check may refuse outright before DATA (e.g. a blocklisted client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The SMTP code: 554/550 refuse for good, 450/451 ask the sender to retry later.
    pub code: u16,
    /// Shown to the sender: say why, leak no configuration.
    pub text: String,
}

/// What one check returns.
#[derive(Debug, Default)]
pub struct Outcome {
    pub symbols: Vec<Symbol>,
    pub refusal: Option<Refusal>,
    /// Header fields (each ending in CRLF) to add to the relayed message, e.g.
    /// `Authentication-Results`.
    pub headers: Vec<String>,
}

impl From<Vec<Symbol>> for Outcome {
    fn from(symbols: Vec<Symbol>) -> Outcome {
        Outcome {
            symbols,
            refusal: None,
            headers: Vec::new(),
        }
    }
}

/// One detection. Keeps no state between messages except through a store.
#[async_trait]
pub trait Check: Send + Sync {
    /// Lower-case name, used in logs and in the `<NAME>_UNCHECKED` symbol.
    fn name(&self) -> &'static str;
    /// The phases this check runs in.
    fn phases(&self) -> &'static [Phase];
    async fn check(&self, ctx: &Context<'_>) -> anyhow::Result<Outcome>;
}

/// Messages up to this size are parsed on the session's task; larger ones on a blocking
/// thread. Measured here: a 64 KiB message parses in well under a millisecond.
const INLINE_PARSE_LIMIT: usize = 64 * 1024;

/// Every check, the policy, and the bounds for parsing.
pub struct Pipeline {
    checks: Vec<Arc<dyn Check>>,
    rules: Arc<SpamRules>,
    /// Swapped whole when a reload reads new scores and thresholds from the config file.
    policy: Arc<arc_swap::ArcSwap<Policy>>,
    check_timeout: Duration,
    max_scan_size: usize,
    /// Parsing and rule scanning, bounded to the configured number of workers.
    cpu: CpuSlots,
}

impl Pipeline {
    /// The pipeline with Kala's built-in checks.
    pub fn new(settings: &Settings) -> Pipeline {
        Pipeline::with_rules(settings, Arc::new(SpamRules::load(&settings.rules)))
    }

    /// The pipeline with an already loaded rule set (shared with whoever reloads it).
    pub fn with_rules(settings: &Settings, rules: Arc<SpamRules>) -> Pipeline {
        let mut checks: Vec<Arc<dyn Check>> = vec![
            Arc::new(HeloName::new(&settings.smtp)),
            Arc::new(HeaderStructure),
            rules.clone(),
        ];
        checks.push(Arc::new(Attachments::new(
            settings.attachments.policy.clone(),
            settings.attachments.max_parts,
        )));
        if settings.antivirus.enabled {
            let clamd = crate::antivirus::Clamd::from_settings(&settings.antivirus);
            checks.push(Arc::new(Antivirus::new(Arc::new(clamd))));
        }
        Pipeline {
            checks,
            rules,
            policy: Arc::new(arc_swap::ArcSwap::from_pointee(settings.policy.clone())),
            check_timeout: settings.scan.check_timeout,
            max_scan_size: settings.scan.max_scan_size,
            cpu: CpuSlots::new(settings.scan.workers),
        }
    }

    /// Adds a check that needs what the pipeline alone does not have (the store).
    pub fn add_check(&mut self, check: Arc<dyn Check>) {
        self.checks.push(check);
    }

    /// The rule files' check (to explain hits, or to reload).
    pub fn rules(&self) -> &Arc<SpamRules> {
        &self.rules
    }

    /// The policy in force now.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// The policy's handle, for whoever reloads it.
    pub fn live_policy(&self) -> Arc<arc_swap::ArcSwap<Policy>> {
        self.policy.clone()
    }

    /// How many leading bytes of a message are parsed.
    pub fn max_scan_size(&self) -> usize {
        self.max_scan_size
    }

    /// Runs the checks of one phase concurrently; the first refusal wins.
    pub async fn run_phase(
        &self,
        phase: Phase,
        envelope: &Envelope,
        message: Option<&Arc<Message>>,
    ) -> Outcome {
        let ctx = Context {
            phase,
            envelope,
            message,
            cpu: &self.cpu,
        };
        let runs = self
            .checks
            .iter()
            .filter(|c| c.phases().contains(&phase))
            .map(|check| {
                let ctx = &ctx;
                async move {
                    let started = std::time::Instant::now();
                    let (outcome, failure) =
                        match tokio::time::timeout(self.check_timeout, check.check(ctx)).await {
                            Ok(Ok(outcome)) => (outcome, None),
                            Ok(Err(error)) => (
                                unchecked(check.name(), format!("failed: {error:#}")),
                                Some("error"),
                            ),
                            Err(_) => (
                                unchecked(
                                    check.name(),
                                    format!("timed out after {:?}", self.check_timeout),
                                ),
                                Some("timeout"),
                            ),
                        };
                    crate::metrics::metrics().check(check.name(), started.elapsed(), failure);
                    outcome
                }
            });
        let mut total = Outcome::default();
        for outcome in futures::future::join_all(runs).await {
            total.symbols.extend(outcome.symbols);
            total.headers.extend(outcome.headers);
            if total.refusal.is_none() {
                total.refusal = outcome.refusal;
            }
        }
        total
    }

    /// Parses a message off the async runtime. `raw` holds at most `max_scan_size` bytes of
    /// a message of `total_size` bytes.
    pub async fn parse(&self, raw: Vec<u8>, total_size: usize) -> Arc<Message> {
        if raw.len() <= INLINE_PARSE_LIMIT {
            // Tens of microseconds: cheaper here than the hop to a blocking thread and back.
            return Arc::new(Message::parse_owned(raw, total_size));
        }
        let parsed = self
            .cpu
            .run(move || Message::parse_owned(raw, total_size))
            .await;
        Arc::new(parsed.unwrap_or_else(|e| Message {
            parse_error: Some(format!("parse task failed: {e}")),
            size: total_size,
            ..Message::default()
        }))
    }

    /// The DATA-phase checks plus the symbols carried from earlier phases, decided by policy.
    pub async fn scan(
        &self,
        envelope: &Envelope,
        message: &Arc<Message>,
        carried: Vec<Symbol>,
    ) -> Verdict {
        let mut symbols = carried;
        if let Some(error) = &message.parse_error {
            symbols.push(
                Symbol::new(
                    "MESSAGE_UNPARSEABLE",
                    0.0,
                    "The message could not be parsed as MIME",
                )
                .with_detail(error.clone()),
            );
        }
        if message.truncated {
            symbols.push(Symbol::new(
                "SCAN_TRUNCATED",
                0.0,
                "Only the first part of this large message was scanned",
            ));
        }
        let outcome = self.run_phase(Phase::Data, envelope, Some(message)).await;
        symbols.extend(outcome.symbols);
        let mut verdict = self.policy.load().decide(symbols);
        verdict.headers = outcome.headers;
        antivirus::note_if_passed_unscanned(&verdict);
        verdict
    }
}

fn unchecked(check: &str, why: String) -> Outcome {
    tracing::warn!(check, %why, "check did not answer");
    vec![
        Symbol::new(
            format!("{}_UNCHECKED", check.to_ascii_uppercase()),
            0.0,
            format!("The {check} check did not run to completion"),
        )
        .with_detail(why),
    ]
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn without_antivirus() -> Settings {
        Settings::parse("[antivirus]\nenabled = false\n", "test").unwrap()
    }

    struct Slow;
    #[async_trait]
    impl Check for Slow {
        fn name(&self) -> &'static str {
            "slow"
        }
        fn phases(&self) -> &'static [Phase] {
            &[Phase::Data]
        }
        async fn check(&self, _: &Context<'_>) -> anyhow::Result<Outcome> {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(Outcome::default())
        }
    }

    #[tokio::test]
    async fn a_check_that_hangs_becomes_an_unchecked_symbol() {
        let mut pipeline = Pipeline::new(&without_antivirus());
        pipeline.checks = vec![Arc::new(Slow)];
        pipeline.check_timeout = Duration::from_millis(50);
        let envelope = Envelope::offline("a@example.org", vec![]);
        let message = Arc::new(Message::default());
        let verdict = pipeline.scan(&envelope, &message, vec![]).await;
        assert!(
            verdict.symbols.iter().any(|s| s.name == "SLOW_UNCHECKED"),
            "{verdict:?}"
        );
    }

    #[tokio::test]
    async fn unparseable_message_is_quarantined_by_default() {
        let pipeline = Pipeline::new(&without_antivirus());
        let envelope = Envelope::offline("a@example.org", vec![]);
        let message = Arc::new(Message {
            parse_error: Some("boom".into()),
            ..Message::default()
        });
        let verdict = pipeline.scan(&envelope, &message, vec![]).await;
        assert_eq!(verdict.action, crate::verdict::Action::Quarantine);
        assert_eq!(verdict.forced_by.as_deref(), Some("MESSAGE_UNPARSEABLE"));
    }
}

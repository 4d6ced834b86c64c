//! Rate limits per client address and per envelope sender, counted at MAIL in fixed windows;
//! over the limit the sender is told 450 4.7.1 and retries later (nothing is lost).

use std::sync::Arc;

use async_trait::async_trait;

use super::{Check, Context, Outcome, Phase, Refusal};
use crate::config::{Rate, RateLimitSettings};
use crate::store::state::RateCounters;
use crate::verdict::Symbol;

pub struct RateLimit {
    counters: Arc<dyn RateCounters>,
    settings: RateLimitSettings,
}

impl RateLimit {
    pub fn new(counters: Arc<dyn RateCounters>, settings: RateLimitSettings) -> RateLimit {
        RateLimit { counters, settings }
    }

    /// Counts one message for `key`; the symbol when over `rate`.
    async fn over(&self, what: &str, key: String, rate: Rate) -> anyhow::Result<Option<Symbol>> {
        let now = crate::store::now();
        let count = self.counters.count(&key, rate.per.as_secs(), now).await?;
        Ok((count > rate.messages).then(|| {
            Symbol::new(
                format!("KALA_RATELIMIT_{}", what.to_ascii_uppercase()),
                0.0,
                format!("Too many messages from this {what}"),
            )
            .with_detail(format!(
                "{count} > {} per {}",
                rate.messages,
                humantime::format_duration(rate.per)
            ))
        }))
    }
}

#[async_trait]
impl Check for RateLimit {
    fn name(&self) -> &'static str {
        "ratelimit"
    }

    fn phases(&self) -> &'static [Phase] {
        &[Phase::Mail]
    }

    async fn check(&self, ctx: &Context<'_>) -> anyhow::Result<Outcome> {
        let envelope = ctx.envelope;
        let ip = envelope.client_ip;
        if self.settings.skip_networks.iter().any(|n| n.contains(&ip)) {
            return Ok(Outcome::default());
        }
        let mut symbols = Vec::new();
        if let Some(rate) = self.settings.client {
            symbols.extend(self.over("client", format!("client|{ip}"), rate).await?);
        }
        if let Some(rate) = self.settings.sender
            && !envelope.sender.is_empty()
        {
            let key = format!("sender|{}", envelope.sender.to_lowercase());
            symbols.extend(self.over("sender", key, rate).await?);
        }
        let refusal = (!symbols.is_empty()).then(|| Refusal {
            code: 450,
            text: "Too many messages, slow down and try again later".into(),
        });
        if let Some(symbol) = symbols.first() {
            tracing::info!(client = %ip, sender = %envelope.sender, detail = ?symbol.detail, "rate limit reached");
        }
        Ok(Outcome {
            symbols,
            refusal,
            headers: Vec::new(),
        })
    }
}

//! The rule files as a check: every rule that fires becomes a symbol.

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;

use super::{Check, Context, Outcome, Phase};
use crate::config::RulesSettings;
use crate::rules::RuleSet;
use crate::verdict::Symbol;

/// The active rule set. Swapped whole on reload, so a message in flight finishes on the set
/// it started with.
pub struct SpamRules {
    active: ArcSwap<RuleSet>,
    /// Language of the descriptions put in symbols.
    language: String,
    /// Hits per rule since the last [`SpamRules::take_hits`] (the gateway adds them to the
    /// store every minute: one write a minute, not one per message).
    hits: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

impl SpamRules {
    /// Loads and compiles the rule files, logging what could not be used.
    pub fn load(settings: &RulesSettings) -> SpamRules {
        let dirs = &settings.sources();
        let set = RuleSet::load(dirs);
        for error in &set.errors {
            tracing::error!(%error, "rule not loaded");
        }
        if set.is_empty() {
            tracing::warn!(dirs = ?dirs, "no rules loaded (see rules.dirs)");
        } else {
            tracing::info!(rules = set.len(), files = set.files_read, "rules loaded");
        }
        SpamRules::from_set(set, &settings.language)
    }

    pub fn from_set(set: RuleSet, language: &str) -> SpamRules {
        SpamRules {
            active: ArcSwap::from_pointee(set),
            language: language.to_string(),
            hits: Default::default(),
        }
    }

    /// The hits counted since the last call, by rule.
    pub fn take_hits(&self) -> Vec<(String, u64)> {
        let mut hits = self.hits.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *hits).into_iter().collect()
    }

    pub fn language(&self) -> &str {
        &self.language
    }

    /// The set in force now.
    pub fn current(&self) -> Arc<RuleSet> {
        self.active.load_full()
    }

    /// Makes `set` the active set; messages already being scanned keep the old one.
    pub fn replace(&self, set: RuleSet) {
        self.active.store(Arc::new(set));
    }
}

#[async_trait]
impl Check for SpamRules {
    fn name(&self) -> &'static str {
        "rules"
    }

    fn phases(&self) -> &'static [Phase] {
        &[Phase::Data]
    }

    async fn check(&self, ctx: &Context<'_>) -> anyhow::Result<Outcome> {
        let Some(message) = ctx.message.cloned() else {
            return Ok(Outcome::default());
        };
        let set = self.current();
        if set.is_empty() {
            return Ok(Outcome::default());
        }
        let envelope = ctx.envelope.clone();
        let evaluated = set.clone();
        let hits = ctx
            .cpu
            .run(move || evaluated.evaluate(&message, &envelope))
            .await?;
        {
            let mut counts = self.hits.lock().unwrap_or_else(|e| e.into_inner());
            for hit in &hits {
                *counts.entry(hit.name.clone()).or_default() += 1;
            }
        }
        let symbols = hits
            .into_iter()
            .map(|hit| {
                let mut description = set
                    .description(&hit.name, &self.language)
                    .unwrap_or(&hit.description)
                    .to_string();
                if let Some(would) = hit.shadow {
                    // Listed so admins see it fire; scored 0, so the verdict is unchanged.
                    description = format!("[shadow, would score {would}] {description}");
                }
                let symbol = Symbol::new(hit.name, hit.score, description);
                match hit.matched {
                    Some(text) => symbol.with_detail(text),
                    None => symbol,
                }
            })
            .collect::<Vec<_>>();
        Ok(symbols.into())
    }
}

//! Dry run: what a candidate rule set would change on real mail, before it goes live.
//!
//! The recently held messages (and the sample of relayed ones, when `rules.sample_relayed`
//! keeps one) are scanned with the active set and with the candidate. The other checks'
//! symbols (DNS, antivirus, Bayes, ...) are taken from the verdict each message got, so
//! only the rules' part changes; the policy then decides both verdicts.

use serde::Serialize;

use crate::envelope::Envelope;
use crate::message::Message;
use crate::rules::RuleSet;
use crate::verdict::{Action, Policy, Symbol, Verdict};

/// One message the two sets judge differently (by action or by score).
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// `held ID` or `relayed #N`.
    pub message: String,
    pub subject: String,
    pub old_action: Action,
    pub new_action: Action,
    pub old_score: f64,
    pub new_score: f64,
    /// Rules that fire only with the candidate (+) or only with the active set (-).
    pub rules: Vec<String>,
}

/// The whole comparison.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DryRun {
    pub held_scanned: usize,
    pub relayed_scanned: usize,
    /// Relayed messages the candidate would hold or refuse.
    pub newly_caught: usize,
    /// Held messages the candidate would let through.
    pub newly_passed: usize,
    pub changes: Vec<Change>,
}

/// A message to compare: where it came from, its verdict then, its bytes.
pub struct Scanned {
    pub label: String,
    pub relayed: bool,
    pub verdict: Verdict,
    pub raw: Vec<u8>,
}

/// Compares the two sets on `messages` (CPU-bound: run it off the async runtime).
pub fn compare(
    active: &RuleSet,
    candidate: &RuleSet,
    policy: &Policy,
    messages: &[Scanned],
) -> DryRun {
    let mut run = DryRun::default();
    let envelope = Envelope::offline("", Vec::new());
    for scanned in messages {
        if scanned.relayed {
            run.relayed_scanned += 1;
        } else {
            run.held_scanned += 1;
        }
        let message = Message::parse(&scanned.raw, scanned.raw.len());
        let is_rule = |name: &str| {
            active.rule_info(name, "").is_some() || candidate.rule_info(name, "").is_some()
        };
        let others: Vec<Symbol> = scanned
            .verdict
            .symbols
            .iter()
            .filter(|s| !is_rule(&s.name))
            .cloned()
            .collect();
        let judge = |set: &RuleSet| {
            let hits = set.evaluate(&message, &envelope);
            let names: Vec<String> = hits.iter().map(|h| h.name.clone()).collect();
            let mut symbols = others.clone();
            symbols.extend(
                hits.into_iter()
                    .map(|h| Symbol::new(h.name, h.score, h.description)),
            );
            (policy.decide(symbols), names)
        };
        let (old, old_names) = judge(active);
        let (new, new_names) = judge(candidate);
        if old.action == new.action && (old.score - new.score).abs() < 0.001 {
            continue;
        }
        let held = |a: Action| matches!(a, Action::Quarantine | Action::Reject);
        if scanned.relayed && held(new.action) && !held(old.action) {
            run.newly_caught += 1;
        }
        if !scanned.relayed && held(old.action) && !held(new.action) {
            run.newly_passed += 1;
        }
        let mut rules: Vec<String> = new_names
            .iter()
            .filter(|n| !old_names.contains(n))
            .map(|n| format!("+{n}"))
            .collect();
        rules.extend(
            old_names
                .iter()
                .filter(|n| !new_names.contains(n))
                .map(|n| format!("-{n}")),
        );
        run.changes.push(Change {
            message: scanned.label.clone(),
            subject: message.subject.clone().unwrap_or_default(),
            old_action: old.action,
            new_action: new.action,
            old_score: old.score,
            new_score: new.score,
            rules,
        });
    }
    run
}

impl std::fmt::Display for DryRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "scanned {} held and {} relayed messages with both rule sets",
            self.held_scanned, self.relayed_scanned
        )?;
        writeln!(
            f,
            "newly caught (relayed, would now be held or refused): {}",
            self.newly_caught
        )?;
        writeln!(
            f,
            "newly passed (held, would now be relayed): {}",
            self.newly_passed
        )?;
        writeln!(
            f,
            "messages whose verdict or score changes: {}",
            self.changes.len()
        )?;
        for change in &self.changes {
            writeln!(
                f,
                "  {}  {:?} {:.1} -> {:?} {:.1}  {}  {:?}",
                change.message,
                change.old_action,
                change.old_score,
                change.new_action,
                change.new_score,
                change.rules.join(" "),
                change.subject
            )?;
        }
        Ok(())
    }
}

/// The newest `limit` held messages and `limit` relayed samples.
pub async fn gather(store: &crate::store::Store, limit: u32) -> anyhow::Result<Vec<Scanned>> {
    use crate::quarantine::{Filter, Quarantine, Retention};
    let quarantine = Quarantine::new(store.clone(), Retention::default());
    let page = quarantine
        .list(&Filter {
            limit,
            ..Filter::default()
        })
        .await?;
    let mut scanned = Vec::new();
    for summary in page.messages {
        let (Some(held), Some(raw)) = (
            quarantine.get(&summary.id).await?,
            quarantine.raw(&summary.id).await?,
        ) else {
            continue;
        };
        scanned.push(Scanned {
            label: format!("held {}", summary.id),
            relayed: false,
            verdict: held.verdict,
            raw,
        });
    }
    for (index, sample) in store.rule_samples(limit).await?.into_iter().enumerate() {
        scanned.push(Scanned {
            label: format!("relayed #{}", index + 1),
            relayed: true,
            verdict: sample.verdict,
            raw: sample.raw,
        });
    }
    Ok(scanned)
}

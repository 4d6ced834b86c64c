//! Symbols, scores and thresholds become one [`Verdict`] with an [`Action`].
//!
//! Checks only detect: each emits [`Symbol`]s. Policy (scores and thresholds from the config)
//! decides, so every action can be explained as the list of symbols that led to it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// One named finding, e.g. `KALA_MISSING_DATE (1.0): message has no Date header`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Symbol {
    /// SCREAMING_SNAKE name, stable across releases: admins write scores against it.
    pub name: String,
    pub score: f64,
    pub description: String,
    /// What exactly matched (a header value, a URL), for the explanation; never shown to senders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Symbol {
    pub fn new(name: impl Into<String>, score: f64, description: impl Into<String>) -> Symbol {
        Symbol {
            name: name.into(),
            score,
            description: description.into(),
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Symbol {
        self.detail = Some(detail.into());
        self
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({:.2})", self.name, self.score)
    }
}

/// True for names like `KALA_MISSING_DATE`: what config keys and headers may carry.
pub fn is_symbol_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// What happens to a message. The order is by severity: a forced action only ever raises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Relay with the X-Kala-* headers.
    Accept,
    /// Relay with a subject prefix and `X-Kala-Status: Yes`.
    Tag,
    /// Hold for review; the sender is told 250.
    Quarantine,
    /// 451: the sender retries later (e.g. a check that must not be skipped failed).
    Tempfail,
    /// 550: refused.
    Reject,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Accept => "accept",
            Action::Tag => "tag",
            Action::Quarantine => "quarantine",
            Action::Tempfail => "tempfail",
            Action::Reject => "reject",
        })
    }
}

/// Scores and thresholds from the config.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub tag_score: f64,
    pub quarantine_score: f64,
    pub reject_score: f64,
    pub subject_prefix: String,
    /// Per-symbol score overrides.
    pub scores: BTreeMap<String, f64>,
    /// Symbols that force at least this action whatever the score.
    pub force_actions: BTreeMap<String, Action>,
}

/// The decision on one message and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub action: Action,
    pub score: f64,
    /// Highest score first, so the top of the list explains the action.
    pub symbols: Vec<Symbol>,
    /// The symbol that forced the action, if the score alone did not decide it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forced_by: Option<String>,
    /// Header fields the checks want on the relayed message (`Authentication-Results`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
}

impl Policy {
    /// Applies score overrides, sums, and maps the total (and forced actions) to an action.
    pub fn decide(&self, mut symbols: Vec<Symbol>) -> Verdict {
        for symbol in &mut symbols {
            if let Some(score) = self.scores.get(&symbol.name) {
                symbol.score = *score;
            }
        }
        symbols.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.name.cmp(&b.name))
        });
        // A fold from +0.0: `sum()` of nothing is -0.0, which would print as `score=-0.00`.
        let score = symbols.iter().fold(0.0, |total, s| total + s.score);
        let mut action = if score >= self.reject_score {
            Action::Reject
        } else if score >= self.quarantine_score {
            Action::Quarantine
        } else if score >= self.tag_score {
            Action::Tag
        } else {
            Action::Accept
        };
        let mut forced_by = None;
        for symbol in &symbols {
            if let Some(forced) = self.force_actions.get(&symbol.name)
                && *forced > action
            {
                action = *forced;
                forced_by = Some(symbol.name.clone());
            }
        }
        Verdict {
            action,
            score: (score * 100.0).round() / 100.0,
            symbols,
            forced_by,
            headers: Vec::new(),
        }
    }
}

impl Verdict {
    /// `NAME(score), …` as in the X-Kala-Symbols header and the log line.
    pub fn symbol_list(&self) -> String {
        let names: Vec<String> = self.symbols.iter().map(|s| s.to_string()).collect();
        names.join(", ")
    }

    /// The first few symbol names, for a reject text that explains without leaking detail.
    pub fn top_symbols(&self, n: usize) -> String {
        let names: Vec<&str> = self
            .symbols
            .iter()
            .filter(|s| s.score > 0.0)
            .take(n)
            .map(|s| s.name.as_str())
            .collect();
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            tag_score: 5.0,
            quarantine_score: 10.0,
            reject_score: 20.0,
            subject_prefix: "[SPAM]".into(),
            scores: BTreeMap::from([("OVERRIDDEN".to_string(), 11.0)]),
            force_actions: BTreeMap::from([("FORCE_TEMPFAIL".to_string(), Action::Tempfail)]),
        }
    }

    #[test]
    fn thresholds_map_score_to_action() {
        let p = policy();
        let v = |score| p.decide(vec![Symbol::new("A", score, "")]).action;
        assert_eq!(v(0.0), Action::Accept);
        assert_eq!(v(5.0), Action::Tag);
        assert_eq!(v(12.0), Action::Quarantine);
        assert_eq!(v(25.0), Action::Reject);
    }

    #[test]
    fn config_scores_override_and_sum() {
        let v = policy().decide(vec![
            Symbol::new("OVERRIDDEN", 1.0, ""),
            Symbol::new("B", 0.5, ""),
        ]);
        assert_eq!(v.score, 11.5);
        assert_eq!(v.action, Action::Quarantine);
        assert_eq!(v.symbols[0].name, "OVERRIDDEN");
    }

    #[test]
    fn forced_action_raises_but_never_lowers() {
        let p = policy();
        let v = p.decide(vec![Symbol::new("FORCE_TEMPFAIL", 0.0, "")]);
        assert_eq!(
            (v.action, v.forced_by.as_deref()),
            (Action::Tempfail, Some("FORCE_TEMPFAIL"))
        );
        let v = p.decide(vec![Symbol::new("FORCE_TEMPFAIL", 30.0, "")]);
        assert_eq!((v.action, v.forced_by), (Action::Reject, None));
    }
}

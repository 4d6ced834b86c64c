//! Learning from the reviewers' decisions: a naive Bayes classifier over the message's tokens
//! ([`tokenizer`]), combined as Gary Robinson's chi-square (Fisher) method, as SpamAssassin's
//! and Rspamd's classifiers do. It says nothing until it has learned enough of both kinds.

pub mod tokenizer;

/// What the model knows about one token: how many learned spam and ham messages held it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCounts {
    pub spam: u64,
    pub ham: u64,
}

/// How many messages of each kind the model learned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub spam: u64,
    pub ham: u64,
}

/// The classifier's constants. The defaults are SpamAssassin's tuned values (Bayes.pm);
/// issue 7 asks for them to be chosen by cross-validation on the training corpus.
#[derive(Debug, Clone, Copy)]
pub struct Classifier {
    /// Robinson's s: how strongly the assumed probability pulls rare tokens.
    pub strength: f64,
    /// Robinson's x: the probability assumed for a token never seen.
    pub assumed: f64,
    /// Tokens whose probability is within this of 0.5 are ignored.
    pub min_distance: f64,
    /// At most this many of the most telling tokens are combined.
    pub max_tokens: usize,
    /// No verdict before this many spam and this many ham messages were learned.
    pub min_learned: u64,
}

impl Default for Classifier {
    fn default() -> Classifier {
        Classifier {
            strength: 0.030,
            assumed: 0.538,
            min_distance: 0.346,
            max_tokens: 150,
            min_learned: 200,
        }
    }
}

impl Classifier {
    /// Robinson's f(w): a token's spam probability, pulled towards `assumed` when rare.
    pub fn token_probability(&self, totals: Totals, counts: TokenCounts) -> f64 {
        let spam_ratio = counts.spam as f64 / totals.spam.max(1) as f64;
        let ham_ratio = counts.ham as f64 / totals.ham.max(1) as f64;
        let seen = (counts.spam + counts.ham) as f64;
        if spam_ratio + ham_ratio == 0.0 {
            return self.assumed;
        }
        let p = spam_ratio / (spam_ratio + ham_ratio);
        (self.strength * self.assumed + seen * p) / (self.strength + seen)
    }

    /// The message's spam probability from its tokens' counts, or `None` before the model
    /// learned `min_learned` of each kind or when no token says anything.
    pub fn probability(&self, totals: Totals, counts: &[TokenCounts]) -> Option<f64> {
        if totals.spam < self.min_learned || totals.ham < self.min_learned {
            return None;
        }
        let mut telling: Vec<f64> = counts
            .iter()
            .filter(|c| c.spam + c.ham > 0)
            .map(|c| self.token_probability(totals, *c))
            .filter(|p| (p - 0.5).abs() >= self.min_distance / 2.0)
            .collect();
        if telling.is_empty() {
            return None;
        }
        telling.sort_by(|a, b| (b - 0.5).abs().total_cmp(&(a - 0.5).abs()));
        telling.truncate(self.max_tokens);
        Some(fisher(&telling))
    }
}

/// A model held in memory: for `kala eval`'s training runs, and the shape the store-backed
/// models follow.
#[derive(Debug, Default, Clone)]
pub struct MemoryModel {
    pub totals: Totals,
    tokens: std::collections::HashMap<u64, TokenCounts>,
}

impl MemoryModel {
    /// Counts one message's tokens as spam or ham.
    pub fn learn(&mut self, tokens: &[u64], spam: bool) {
        if spam {
            self.totals.spam += 1;
        } else {
            self.totals.ham += 1;
        }
        for token in tokens {
            let counts = self.tokens.entry(*token).or_default();
            if spam {
                counts.spam += 1;
            } else {
                counts.ham += 1;
            }
        }
    }

    /// The counts of `tokens`, unseen ones as zero.
    pub fn counts(&self, tokens: &[u64]) -> Vec<TokenCounts> {
        tokens
            .iter()
            .map(|t| self.tokens.get(t).copied().unwrap_or_default())
            .collect()
    }

    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }
}

/// Robinson's chi-square combining of token probabilities: near 1 spam, near 0 ham.
fn fisher(probabilities: &[f64]) -> f64 {
    let n = probabilities.len();
    let clamp = |p: f64| p.clamp(1e-9, 1.0 - 1e-9);
    let ln_p: f64 = probabilities.iter().map(|p| clamp(*p).ln()).sum();
    let ln_not_p: f64 = probabilities.iter().map(|p| (1.0 - clamp(*p)).ln()).sum();
    let hamminess = chi2_q(-2.0 * ln_p, 2 * n);
    let spamminess = chi2_q(-2.0 * ln_not_p, 2 * n);
    (1.0 + hamminess - spamminess) / 2.0
}

/// The probability that a chi-square variable with `freedom` (even) degrees exceeds `x2`.
fn chi2_q(x2: f64, freedom: usize) -> f64 {
    let m = x2 / 2.0;
    let mut term = (-m).exp();
    let mut sum = term;
    for i in 1..freedom / 2 {
        term *= m / i as f64;
        sum += term;
    }
    sum.min(1.0)
}

/// The symbol for a probability: SpamAssassin's bands, so its `BAYES_*` meta rules and the
/// admins' habits carry over. Scores are SpamAssassin's until issue 7 tunes them.
pub fn symbol(probability: f64) -> crate::verdict::Symbol {
    let (name, score) = match probability {
        p if p < 0.01 => ("BAYES_00", -1.9),
        p if p < 0.05 => ("BAYES_05", -0.5),
        p if p < 0.20 => ("BAYES_20", -0.001),
        p if p < 0.40 => ("BAYES_40", -0.001),
        p if p < 0.60 => ("BAYES_50", 0.8),
        p if p < 0.80 => ("BAYES_60", 1.5),
        p if p < 0.95 => ("BAYES_80", 2.0),
        p if p < 0.99 => ("BAYES_95", 3.0),
        _ => ("BAYES_99", 3.5),
    };
    crate::verdict::Symbol::new(name, score, "The learned classifier's spam probability")
        .with_detail(format!("{:.4}", probability))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOTALS: Totals = Totals {
        spam: 1000,
        ham: 1000,
    };

    fn counts(spam: u64, ham: u64) -> TokenCounts {
        TokenCounts { spam, ham }
    }

    #[test]
    fn nothing_is_said_before_enough_was_learned() {
        let c = Classifier::default();
        let few = Totals {
            spam: 199,
            ham: 5000,
        };
        assert_eq!(c.probability(few, &[counts(150, 0)]), None);
    }

    #[test]
    fn spammy_tokens_give_a_high_probability_and_hammy_ones_a_low() {
        let c = Classifier::default();
        let spam: Vec<TokenCounts> = (0..20).map(|_| counts(300, 2)).collect();
        let ham: Vec<TokenCounts> = (0..20).map(|_| counts(1, 400)).collect();
        assert!(c.probability(TOTALS, &spam).unwrap() > 0.99);
        assert!(c.probability(TOTALS, &ham).unwrap() < 0.01);
        let mixed: Vec<TokenCounts> = spam.iter().chain(&ham).copied().collect();
        let p = c.probability(TOTALS, &mixed).unwrap();
        assert!((0.2..0.8).contains(&p), "{p}");
    }

    #[test]
    fn rare_tokens_lean_to_the_assumed_probability_and_unseen_ones_say_nothing() {
        let c = Classifier {
            strength: 1.0,
            assumed: 0.5,
            ..Classifier::default()
        };
        let once = c.token_probability(TOTALS, counts(1, 0));
        let often = c.token_probability(TOTALS, counts(100, 0));
        assert!(once < often && once > 0.5, "{once} {often}");
        assert_eq!(c.probability(TOTALS, &[counts(0, 0)]), None);
    }

    #[test]
    fn chi_square_tail() {
        // Known values: Q(2, 2) = e^-1; Q(0, k) = 1.
        assert!((chi2_q(2.0, 2) - (-1.0f64).exp()).abs() < 1e-12);
        assert_eq!(chi2_q(0.0, 10), 1.0);
    }

    #[test]
    fn a_memory_model_learns_both_kinds() {
        let mut model = MemoryModel::default();
        for _ in 0..300 {
            model.learn(&[1, 2, 3], true);
            model.learn(&[3, 4, 5], false);
        }
        let c = Classifier::default();
        let spam = c
            .probability(model.totals, &model.counts(&[1, 2, 9]))
            .unwrap();
        let ham = c
            .probability(model.totals, &model.counts(&[4, 5, 9]))
            .unwrap();
        assert!(spam > 0.99 && ham < 0.01, "{spam} {ham}");
        assert_eq!(model.token_count(), 5);
    }

    #[test]
    fn bands() {
        assert_eq!(symbol(0.001).name, "BAYES_00");
        assert_eq!(symbol(0.5).name, "BAYES_50");
        assert_eq!(symbol(0.995).name, "BAYES_99");
    }
}

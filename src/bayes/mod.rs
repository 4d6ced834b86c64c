//! Learning from the reviewers' decisions: a naive Bayes classifier over the message's tokens
//! ([`tokenizer`]), combined as Gary Robinson's chi-square (Fisher) method, as SpamAssassin's
//! and Rspamd's classifiers do. It says nothing until it has learned enough of both kinds.

pub mod tokenizer;

pub use tokenizer::TOKENIZER_VERSION;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::message::Message;
use crate::store::bayes::{Learned, Lesson, TokenStore};

/// What the model knows about one token: how many learned spam and ham messages held it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCounts {
    pub spam: u64,
    pub ham: u64,
}

/// How many messages of each kind the model learned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    pub spam: u64,
    pub ham: u64,
}

/// The classifier's constants. `assumed` and `min_distance` are SpamAssassin's (Bayes.pm);
/// `strength` and `max_tokens` were chosen by 5-fold cross-validation on the training corpus
/// (README, "Learning"): SpamAssassin's 0.030 and 150 left a sixth of spam undecided there.
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
            strength: 1.0,
            assumed: 0.538,
            min_distance: 0.346,
            max_tokens: 1000,
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

/// Tokens are xxh3 hashes already: hashing them again (SipHash) would only cost time.
#[derive(Default, Clone, Copy)]
pub struct TokenHasher(u64);

impl std::hash::Hasher for TokenHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed with this; other writes still spread their bytes.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, token: u64) {
        self.0 = token;
    }
}

impl std::hash::BuildHasher for TokenHasher {
    type Hasher = TokenHasher;

    fn build_hasher(&self) -> TokenHasher {
        TokenHasher(0)
    }
}

/// A model held in memory: for `kala eval`'s training runs and cross-validation.
#[derive(Debug, Default, Clone)]
pub struct MemoryModel {
    pub totals: Totals,
    tokens: HashMap<u64, TokenCounts, TokenHasher>,
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

    /// Takes back one message's counts (a lesson being corrected).
    pub fn unlearn(&mut self, tokens: &[u64], spam: bool) {
        if spam {
            self.totals.spam = self.totals.spam.saturating_sub(1);
        } else {
            self.totals.ham = self.totals.ham.saturating_sub(1);
        }
        for token in tokens {
            if let Some(counts) = self.tokens.get_mut(token) {
                if spam {
                    counts.spam = counts.spam.saturating_sub(1);
                } else {
                    counts.ham = counts.ham.saturating_sub(1);
                }
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

/// A [`MemoryModel`] behind the [`TokenStore`] trait, so `kala eval` runs the gateway's own
/// Bayes check on it.
#[derive(Debug, Default)]
pub struct MemoryTokens {
    inner: Mutex<(MemoryModel, HashMap<String, bool>)>,
    tokenizer: AtomicU32,
}

#[async_trait]
impl TokenStore for MemoryTokens {
    async fn totals(&self) -> anyhow::Result<Totals> {
        Ok(self.lock().0.totals)
    }

    async fn counts(&self, tokens: &[u64]) -> anyhow::Result<Vec<TokenCounts>> {
        Ok(self.lock().0.counts(tokens))
    }

    async fn learn(&self, lessons: &[Lesson], _now: u64) -> anyhow::Result<Vec<Learned>> {
        Ok(self.teach(lessons))
    }

    async fn expire(&self, _cutoff: u64) -> anyhow::Result<u64> {
        Ok(0)
    }

    async fn reset(&self) -> anyhow::Result<u64> {
        let mut inner = self.lock();
        let forgotten = inner.0.token_count() as u64;
        *inner = Default::default();
        self.tokenizer.store(0, Ordering::Relaxed);
        Ok(forgotten)
    }

    async fn tokenizer(&self) -> anyhow::Result<u32> {
        Ok(self.tokenizer.load(Ordering::Relaxed))
    }

    async fn set_tokenizer(&self, version: u32) -> anyhow::Result<()> {
        self.tokenizer.store(version, Ordering::Relaxed);
        Ok(())
    }
}

impl MemoryTokens {
    /// Learns `lessons` at once, without copying them (`kala eval` trains from borrowed
    /// lessons, fold after fold).
    pub fn teach<'a>(&self, lessons: impl IntoIterator<Item = &'a Lesson>) -> Vec<Learned> {
        let mut inner = self.lock();
        let (model, seen) = &mut *inner;
        let mut outcomes = Vec::new();
        for lesson in lessons {
            let before = seen.insert(lesson.digest.clone(), lesson.spam);
            let outcome = Learned::given(before, lesson.spam);
            if outcome == Learned::Relearned {
                model.unlearn(&lesson.tokens, !lesson.spam);
            }
            if outcome != Learned::AlreadyKnown {
                model.learn(&lesson.tokens, lesson.spam);
            }
            outcomes.push(outcome);
        }
        outcomes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (MemoryModel, HashMap<String, bool>)> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What identifies a message across copies: its Message-ID and a hash of its body with line
/// ends normalised, so the copy in the quarantine and the same file given to `kala learn` are
/// one message, while the headers added in transit (Received, ours) change nothing.
pub fn digest(message: &Message) -> String {
    let raw = &message.raw;
    let crlf = memchr::memmem::find(raw, b"\r\n\r\n").map(|i| i + 4);
    let lf = memchr::memmem::find(raw, b"\n\n").map(|i| i + 2);
    let body_start = crlf.into_iter().chain(lf).min().unwrap_or(raw.len());
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for line in raw[body_start..].split(|b| *b == b'\n') {
        hasher.update(line.strip_suffix(b"\r").unwrap_or(line));
        hasher.update(b"\n");
    }
    let message_id = message.header("Message-ID").unwrap_or("").trim();
    hasher.update(message_id.as_bytes());
    format!("{:032x}", hasher.digest128())
}

/// The lesson `message` teaches as spam or ham.
pub fn lesson(message: &Message, spam: bool) -> Lesson {
    Lesson {
        digest: digest(message),
        tokens: tokenizer::tokens(message),
        spam,
    }
}

/// A classifier over a token store: what the Bayes check asks and what every learning
/// source (`kala learn`, the quarantine, autolearn) teaches.
pub struct Model {
    pub store: Arc<dyn TokenStore>,
    pub classifier: Classifier,
}

impl Model {
    pub fn new(store: Arc<dyn TokenStore>, classifier: Classifier) -> Model {
        Model { store, classifier }
    }

    /// The spam probability of `message`, or `None` while the model knows too little.
    pub async fn probability(&self, message: &Message) -> anyhow::Result<Option<f64>> {
        let totals = self.store.totals().await?;
        if totals.spam < self.classifier.min_learned || totals.ham < self.classifier.min_learned {
            return Ok(None);
        }
        let tokens = tokenizer::tokens(message);
        let counts = self.store.counts(&tokens).await?;
        Ok(self.classifier.probability(totals, &counts))
    }

    /// Learns `lessons`, each at most once. A model learned from nothing records this build's
    /// [`TOKENIZER_VERSION`], so a later Kala can tell that its tokens differ.
    pub async fn learn(&self, lessons: &[Lesson]) -> anyhow::Result<Vec<Learned>> {
        let totals = self.store.totals().await?;
        let outcomes = self.store.learn(lessons, crate::store::now()).await?;
        if totals.spam + totals.ham == 0 {
            self.store.set_tokenizer(TOKENIZER_VERSION).await?;
        }
        Ok(outcomes)
    }

    /// Learns one raw message as spam or ham.
    pub async fn learn_raw(&self, raw: &[u8], spam: bool) -> anyhow::Result<Learned> {
        let message = Message::parse(raw, raw.len());
        let outcomes = self.learn(&[lesson(&message, spam)]).await?;
        Ok(outcomes[0])
    }

    /// The older tokenizer version this model's lessons were learned with, if they were (0: a
    /// model learned before Kala recorded it). Such a model keeps working, but the tokens this
    /// build makes that the old one did not gain weight only as new lessons arrive.
    pub async fn outdated_tokenizer(&self) -> anyhow::Result<Option<u32>> {
        let totals = self.store.totals().await?;
        if totals.spam + totals.ham == 0 {
            return Ok(None);
        }
        let version = self.store.tokenizer().await?;
        Ok((version < TOKENIZER_VERSION).then_some(version))
    }

    /// What to tell an administrator about an outdated model, if anything.
    pub async fn tokenizer_warning(&self) -> anyhow::Result<Option<String>> {
        Ok(self.outdated_tokenizer().await?.map(|version| {
            let learned = match version {
                0 => "before Kala recorded its tokenizer version".to_string(),
                v => format!("with tokenizer version {v}"),
            };
            format!(
                "the Bayes model was learned {learned}; this Kala tokenizes as version \
                 {TOKENIZER_VERSION}. It keeps working; to use the new tokens fully, run \
                 `kala learn --reset --spam SPAM...` and then `kala learn --ham HAM...`"
            )
        }))
    }
}

/// The model `settings` ask for: token counts in the store, or in Redis for several gateways.
pub async fn open_model(
    settings: &crate::config::Settings,
    store: &crate::store::Store,
) -> anyhow::Result<Arc<Model>> {
    use crate::config::BayesBackend;
    let tokens: Arc<dyn TokenStore> = match (settings.bayes.backend, &settings.state.redis) {
        (BayesBackend::Redis, Some(url)) => {
            let redis = crate::store::redis::RedisState::connect(url).await?;
            Arc::new(crate::store::redis::RedisTokens::new(
                redis,
                settings.bayes.expire_after.as_secs(),
            ))
        }
        _ => Arc::new(store.clone()),
    };
    Ok(Arc::new(Model::new(tokens, settings.bayes.classifier)))
}

/// What autolearning would teach from `verdict`: spam above `autolearn_spam`, ham below
/// `autolearn_ham`, judged on the score without the Bayes symbols (a model must not confirm
/// itself), and nothing for a message with a virus or a banned attachment (its text says
/// nothing about spam).
pub fn autolearn_class(
    verdict: &crate::verdict::Verdict,
    settings: &crate::config::BayesSettings,
) -> Option<bool> {
    if !settings.autolearn
        || verdict.symbols.iter().any(|s| {
            s.name == "VIRUS"
                || s.name.starts_with("AV_")
                || s.name.starts_with("ATTACHMENT_")
                || s.name.starts_with("ARCHIVE_")
        })
    {
        return None;
    }
    let bayes: f64 = verdict
        .symbols
        .iter()
        .filter(|s| s.name.starts_with("BAYES_"))
        .map(|s| s.score)
        .sum();
    let score = verdict.score - bayes;
    if score >= settings.autolearn_spam {
        Some(true)
    } else if score <= settings.autolearn_ham {
        Some(false)
    } else {
        None
    }
}

/// Autolearns `message` in the background, so the sender's reply never waits on it.
pub fn spawn_autolearn(model: Arc<Model>, message: Arc<Message>, spam: bool) {
    tokio::spawn(async move {
        let lesson = lesson(&message, spam);
        if let Err(error) = model.learn(&[lesson]).await {
            tracing::warn!("autolearn failed: {error:#}");
        }
    });
}

/// Forgets stale tokens once a day, in the background.
pub fn spawn_expiry(model: Arc<Model>, expire_after: std::time::Duration) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(86_400));
        loop {
            every.tick().await;
            let cutoff = crate::store::now().saturating_sub(expire_after.as_secs());
            match model.store.expire(cutoff).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(tokens = n, "stale Bayes tokens forgotten"),
                Err(error) => tracing::warn!("Bayes token expiry failed: {error:#}"),
            }
        }
    });
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

/// The probability bands: below each bound, its symbol and score. The bands are
/// SpamAssassin's, so its `BAYES_*` meta rules and the admins' habits carry over; the scores
/// were chosen by cross-validation on the training corpus (`scripts/tune-scores`, README).
pub const BANDS: &[(f64, &str, f64)] = &[
    (0.01, "BAYES_00", -5.0),
    (0.05, "BAYES_05", -0.5),
    (0.20, "BAYES_20", -0.001),
    (0.40, "BAYES_40", -0.001),
    (0.60, "BAYES_50", 0.8),
    (0.80, "BAYES_60", 1.0),
    (0.95, "BAYES_80", 2.0),
    (0.99, "BAYES_95", 5.0),
    (f64::INFINITY, "BAYES_99", 5.0),
];

/// The symbol for a probability.
pub fn symbol(probability: f64) -> crate::verdict::Symbol {
    let (_, name, score) = BANDS
        .iter()
        .find(|(below, _, _)| probability < *below)
        .unwrap_or(&BANDS[BANDS.len() - 1]);
    crate::verdict::Symbol::new(*name, *score, "The learned classifier's spam probability")
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
    fn a_copy_with_transit_headers_and_other_line_ends_is_the_same_message() {
        let original = "From: a@x.example\r\nMessage-ID: <1@x.example>\r\n\r\nHello\r\nthere\r\n";
        let relayed = "Received: from mx (mx [192.0.2.1]) by kala\nX-Kala-Score: 1.0\n\
            From: a@x.example\nMessage-ID: <1@x.example>\n\nHello\nthere\n";
        let other = "From: a@x.example\r\nMessage-ID: <2@x.example>\r\n\r\nHello\r\nthere\r\n";
        let d = |raw: &str| digest(&Message::parse(raw.as_bytes(), raw.len()));
        assert_eq!(d(original), d(relayed));
        assert_ne!(d(original), d(other));
    }

    #[test]
    fn autolearn_leaves_out_bayes_itself_and_never_learns_malware() {
        use crate::verdict::{Action, Symbol, Verdict};
        let settings = crate::config::BayesSettings {
            autolearn: true,
            ..Default::default()
        };
        let verdict = |symbols: Vec<Symbol>| Verdict {
            action: Action::Accept,
            score: symbols.iter().map(|s| s.score).sum(),
            symbols,
            forced_by: None,
            headers: Vec::new(),
        };
        let spammy = verdict(vec![Symbol::new("KALA_X", 12.5, "")]);
        assert_eq!(autolearn_class(&spammy, &settings), Some(true));
        // 8 from rules and 5 from Bayes: Bayes may not vouch for itself.
        let self_confirmed = verdict(vec![
            Symbol::new("KALA_X", 8.0, ""),
            Symbol::new("BAYES_99", 5.0, ""),
        ]);
        assert_eq!(autolearn_class(&self_confirmed, &settings), None);
        let hammy = verdict(vec![Symbol::new("KALA_NICE", -3.0, "")]);
        assert_eq!(autolearn_class(&hammy, &settings), Some(false));
        let virus = verdict(vec![
            Symbol::new("KALA_X", 20.0, ""),
            Symbol::new("VIRUS", 0.0, ""),
        ]);
        assert_eq!(autolearn_class(&virus, &settings), None);
        let off = crate::config::BayesSettings::default();
        assert_eq!(autolearn_class(&spammy, &off), None);
    }

    #[test]
    fn bands() {
        assert_eq!(symbol(0.001).name, "BAYES_00");
        assert_eq!(symbol(0.5).name, "BAYES_50");
        assert_eq!(symbol(0.995).name, "BAYES_99");
    }
}

//! `kala eval`: trains Bayes on labelled mail, scores other mail with the whole offline
//! pipeline (rules, header and attachment checks, Bayes; no DNS, no clamd), and reports how
//! much spam was caught and how much ham was flagged, at the configured threshold and along a
//! curve of thresholds. Cross-validation does the same within one training set, which is how
//! Kala's default scores were chosen without looking at held-out mail.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::bayes::{MemoryTokens, Model, Totals};
use crate::checks::{Bayes, Pipeline};
use crate::config::Settings;
use crate::envelope::Envelope;
use crate::mailbox::Mail;
use crate::message::Message;
use crate::store::bayes::{Lesson, TokenStore};

/// Labelled mail.
#[derive(Debug, Default)]
pub struct Corpus {
    pub ham: Vec<Mail>,
    pub spam: Vec<Mail>,
}

impl Corpus {
    fn labelled(&self) -> impl Iterator<Item = (&Mail, bool)> {
        self.ham
            .iter()
            .map(|m| (m, false))
            .chain(self.spam.iter().map(|m| (m, true)))
    }
}

/// One scored message.
#[derive(Debug, Clone, Serialize)]
pub struct Scored {
    pub origin: String,
    pub spam: bool,
    pub score: f64,
    /// The Bayes probability, when the model said anything.
    pub bayes: Option<f64>,
    /// The score of its `BAYES_*` symbol (0 without one): `score` minus this is what the rules
    /// and checks alone gave the message.
    pub bayes_score: f64,
    /// Every symbol, `NAME(score), …`: for the lists of mistakes, and for fitting scores.
    pub symbols: String,
}

/// What an evaluation measured.
#[derive(Debug, Serialize)]
pub struct Report {
    pub scored: Vec<Scored>,
    /// The threshold a message counts as flagged at: `policy.tag_score`.
    pub threshold: f64,
    /// What the model was trained on (per fold, for cross-validation).
    pub trained: Totals,
    /// Cross-validation folds, or 1 for a run on separate test mail.
    pub folds: usize,
    /// Scoring only (parse, checks, verdict); training is not counted.
    pub cpu_seconds: f64,
    pub wall_seconds: f64,
}

/// Caught and flagged at one threshold.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Point {
    pub threshold: f64,
    pub spam_caught: usize,
    pub ham_flagged: usize,
}

impl Report {
    pub fn ham(&self) -> usize {
        self.scored.iter().filter(|s| !s.spam).count()
    }

    pub fn spam(&self) -> usize {
        self.scored.iter().filter(|s| s.spam).count()
    }

    pub fn at(&self, threshold: f64) -> Point {
        self.point(threshold, |s| s.score)
    }

    /// The same as [`Report::at`] with the Bayes symbol taken out: what the rules and checks
    /// carry alone, as on mail the model knows nothing of (a new kind of spam, a new site).
    pub fn without_bayes_at(&self, threshold: f64) -> Point {
        self.point(threshold, |s| s.score - s.bayes_score)
    }

    fn point(&self, threshold: f64, score: impl Fn(&Scored) -> f64) -> Point {
        let count = |spam: bool| {
            self.scored
                .iter()
                .filter(|s| s.spam == spam && score(s) >= threshold)
                .count()
        };
        Point {
            threshold,
            spam_caught: count(true),
            ham_flagged: count(false),
        }
    }

    pub fn messages_per_cpu_second(&self) -> f64 {
        self.scored.len() as f64 / self.cpu_seconds.max(1e-9)
    }

    /// The report as an admin reads it.
    pub fn print(&self, curve: &[f64]) {
        let (ham, spam) = (self.ham(), self.spam());
        let pct = |n: usize, of: usize| 100.0 * n as f64 / of.max(1) as f64;
        let main = self.at(self.threshold);
        let per_fold = if self.folds > 1 {
            format!(" per fold ({} folds)", self.folds)
        } else {
            String::new()
        };
        println!(
            "trained on {} spam and {} ham{per_fold}; tested {} spam and {} ham",
            self.trained.spam, self.trained.ham, spam, ham
        );
        let rates = |p: Point| {
            format!(
                "spam caught {:.1} % ({} of {spam}), ham flagged {:.2} % ({} of {ham})",
                pct(p.spam_caught, spam),
                p.spam_caught,
                pct(p.ham_flagged, ham),
                p.ham_flagged,
            )
        };
        println!(
            "at the tag threshold {:.1}: {}",
            self.threshold,
            rates(main)
        );
        println!(
            "without the Bayes symbol (rules and checks alone): {}",
            rates(self.without_bayes_at(self.threshold))
        );
        println!(
            "speed: {:.0} messages per CPU-second ({:.2} CPU-s), {:.0} messages/s wall clock",
            self.messages_per_cpu_second(),
            self.cpu_seconds,
            self.scored.len() as f64 / self.wall_seconds.max(1e-9)
        );
        println!("threshold  spam caught        ham flagged");
        for threshold in curve {
            let p = self.at(*threshold);
            println!(
                "{:>9.1}  {:>6.2} % {:>6}  {:>6.2} % {:>6}",
                threshold,
                pct(p.spam_caught, spam),
                p.spam_caught,
                pct(p.ham_flagged, ham),
                p.ham_flagged
            );
        }
        let mut flagged: Vec<&Scored> = self
            .scored
            .iter()
            .filter(|s| !s.spam && s.score >= self.threshold)
            .collect();
        flagged.sort_by(|a, b| b.score.total_cmp(&a.score));
        if !flagged.is_empty() {
            println!("ham flagged:");
            for s in flagged {
                println!("  {} score {:.2}: {}", s.origin, s.score, s.symbols);
            }
        }
    }
}

/// The thresholds the curve is printed at.
pub const CURVE: &[f64] = &[2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 15.0];

/// Parsed once, learned and scored many times (cross-validation).
struct Parsed {
    origin: String,
    spam: bool,
    message: Arc<Message>,
    lesson: Lesson,
}

fn parse(corpus: &Corpus, max_scan_size: usize) -> Vec<Parsed> {
    corpus
        .labelled()
        .map(|(mail, spam)| {
            let mut raw = mail.raw.clone();
            let total = raw.len();
            raw.truncate(max_scan_size);
            let message = Arc::new(Message::parse_owned(raw, total));
            let lesson = crate::bayes::lesson(&message, spam);
            Parsed {
                origin: mail.origin.clone(),
                spam,
                message,
                lesson,
            }
        })
        .collect()
}

/// The offline pipeline of `settings` (clamd off) with Bayes over `tokens`.
fn pipeline(settings: &Settings, tokens: Arc<MemoryTokens>) -> Pipeline {
    let mut settings = settings.clone();
    settings.antivirus.enabled = false;
    // One message at a time on this thread, as `cargo bench --bench rules` scans: the figure
    // is the filter's cost. The gateway's hand-off to its scan threads is measured by the
    // proxy benchmark.
    settings.scan.workers = 0;
    let mut pipeline = Pipeline::new(&settings);
    if settings.bayes.enabled {
        let model = Arc::new(Model::new(tokens, settings.bayes.classifier));
        pipeline.add_check(Arc::new(Bayes::new(model)));
    }
    pipeline
}

fn train_model<'a>(lessons: impl IntoIterator<Item = &'a Lesson>) -> Arc<MemoryTokens> {
    let tokens = Arc::new(MemoryTokens::default());
    tokens.teach(lessons);
    tokens
}

async fn score(
    pipeline: &Pipeline,
    messages: &[&Parsed],
    into: &mut Vec<Scored>,
) -> anyhow::Result<()> {
    let envelope = Envelope::offline("", Vec::new());
    for parsed in messages {
        let verdict = pipeline.scan(&envelope, &parsed.message, Vec::new()).await;
        into.push(Scored::of(&parsed.origin, parsed.spam, &verdict));
    }
    Ok(())
}

impl Scored {
    fn of(origin: &str, spam: bool, verdict: &crate::verdict::Verdict) -> Scored {
        let symbol = verdict
            .symbols
            .iter()
            .find(|s| s.name.starts_with("BAYES_"));
        Scored {
            origin: origin.to_string(),
            spam,
            score: verdict.score,
            bayes: symbol.and_then(|s| s.detail.as_deref()?.parse().ok()),
            bayes_score: symbol.map_or(0.0, |s| s.score),
            symbols: verdict.symbol_list(),
        }
    }
}

/// Trains on `train`, scores `test`. Parsing the test mail is part of the measured time.
pub async fn evaluate(
    settings: &Settings,
    train: &Corpus,
    test: &Corpus,
) -> anyhow::Result<Report> {
    let max = settings.scan.max_scan_size;
    let trained = parse(train, max);
    let tokens = train_model(trained.iter().map(|p| &p.lesson));
    let totals = tokens.totals().await?;
    drop(trained);
    let pipeline = pipeline(settings, tokens);
    let envelope = Envelope::offline("", Vec::new());
    let mut scored = Vec::new();
    let (cpu_start, wall_start) = (cpu_seconds(), Instant::now());
    for (mail, spam) in test.labelled() {
        let mut raw = mail.raw.clone();
        let total = raw.len();
        raw.truncate(max);
        let message = pipeline.parse(raw, total).await;
        let verdict = pipeline.scan(&envelope, &message, Vec::new()).await;
        scored.push(Scored::of(&mail.origin, spam, &verdict));
    }
    Ok(Report {
        scored,
        threshold: settings.policy.tag_score,
        trained: totals,
        folds: 1,
        cpu_seconds: cpu_seconds() - cpu_start,
        wall_seconds: wall_start.elapsed().as_secs_f64(),
    })
}

/// K-fold cross-validation within `train`: each message is scored once, by a model trained
/// on the other folds. Fold `i` holds the messages whose position (per class) is `i` mod K.
pub async fn cross_validate(
    settings: &Settings,
    train: &Corpus,
    folds: usize,
) -> anyhow::Result<Report> {
    anyhow::ensure!(folds >= 2, "cross-validation needs at least 2 folds");
    let parsed = parse(train, settings.scan.max_scan_size);
    let (mut ham_seen, mut spam_seen) = (0usize, 0usize);
    let fold_of: Vec<usize> = parsed
        .iter()
        .map(|p| {
            let n = if p.spam {
                &mut spam_seen
            } else {
                &mut ham_seen
            };
            *n += 1;
            (*n - 1) % folds
        })
        .collect();
    let mut scored = Vec::new();
    let mut trained = Totals::default();
    let (mut cpu, mut wall) = (0.0, 0.0);
    for fold in 0..folds {
        let tokens = train_model(
            parsed
                .iter()
                .zip(&fold_of)
                .filter(|(_, f)| **f != fold)
                .map(|(p, _)| &p.lesson),
        );
        let totals = tokens.totals().await?;
        trained.spam += totals.spam;
        trained.ham += totals.ham;
        let pipeline = pipeline(settings, tokens);
        let held: Vec<&Parsed> = parsed
            .iter()
            .zip(&fold_of)
            .filter(|(_, f)| **f == fold)
            .map(|(p, _)| p)
            .collect();
        let (cpu_start, wall_start) = (cpu_seconds(), Instant::now());
        score(&pipeline, &held, &mut scored).await?;
        cpu += cpu_seconds() - cpu_start;
        wall += wall_start.elapsed().as_secs_f64();
    }
    Ok(Report {
        scored,
        threshold: settings.policy.tag_score,
        trained: Totals {
            spam: trained.spam / folds as u64,
            ham: trained.ham / folds as u64,
        },
        folds,
        cpu_seconds: cpu,
        wall_seconds: wall,
    })
}

/// CPU time of this process so far, all threads.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

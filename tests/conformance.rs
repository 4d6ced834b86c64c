//! Conformance with SpamAssassin itself: on 500 training-corpus messages, the rules Kala
//! supports that fire in Kala must be the ones `spamd` reports (restricted to those rules), for
//! at least 99 % of the messages (issue 3). It prints the agreement and the rules that disagree
//! most, which is the work list. Needs `spamassassin` and `npm` (the corpus is fetched with
//! it by `scripts/corpus`); `scripts/test` installs both.

#[path = "support_sa/mod.rs"]
mod support_sa;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use kala::envelope::Envelope;
use kala::message::Message;
use kala::rules::RuleSet;
use support_sa::{RULES_DIR, Spamd, corpus_messages};

/// Agreement the issue asks for.
const TARGET: f64 = 0.99;

#[test]
fn kala_fires_the_rules_spamassassin_fires() {
    let spamd = Spamd::start();
    let started = std::time::Instant::now();
    let rules = RuleSet::load(&[PathBuf::from(RULES_DIR)]);
    eprintln!(
        "Kala compiled {} SpamAssassin rules in {:?}",
        rules.len(),
        started.elapsed()
    );
    let supported: BTreeSet<String> = rules
        .supported_names()
        .filter(|n| !n.starts_with("__"))
        .map(str::to_string)
        .collect();

    let mut messages = corpus_messages("easy-ham-1", 200);
    messages.extend(corpus_messages("hard-ham-1", 100));
    messages.extend(corpus_messages("spam-1", 200));

    let mut agree = 0;
    let mut only_sa: BTreeMap<String, usize> = BTreeMap::new();
    let mut only_kala: BTreeMap<String, usize> = BTreeMap::new();
    let mut examples = Vec::new();
    for path in &messages {
        let raw = std::fs::read(path).unwrap();
        let sa: BTreeSet<String> = spamd
            .symbols(&raw)
            .into_iter()
            .filter(|r| supported.contains(r))
            .collect();
        let message = Message::parse(&raw, raw.len());
        let kala: BTreeSet<String> = rules
            .evaluate(&message, &Envelope::offline("", vec![]))
            .into_iter()
            .map(|h| h.name)
            .filter(|r| supported.contains(r))
            .collect();
        if sa == kala {
            agree += 1;
            continue;
        }
        let missing: Vec<&String> = sa.difference(&kala).collect();
        let extra: Vec<&String> = kala.difference(&sa).collect();
        for r in &missing {
            *only_sa.entry((*r).clone()).or_default() += 1;
        }
        for r in &extra {
            *only_kala.entry((*r).clone()).or_default() += 1;
        }
        if examples.len() < 40 {
            examples.push(format!(
                "{}: SpamAssassin only {missing:?}, Kala only {extra:?}",
                path.display()
            ));
        }
    }
    let ratio = agree as f64 / messages.len() as f64;
    println!(
        "\nagreement: {agree} of {} messages ({:.1} %), target {:.0} %",
        messages.len(),
        ratio * 100.0,
        TARGET * 100.0
    );
    let top = |label: &str, table: &BTreeMap<String, usize>| {
        let mut rows: Vec<(&String, &usize)> = table.iter().collect();
        rows.sort_by_key(|(name, n)| (std::cmp::Reverse(**n), (*name).clone()));
        println!("\nrules fired only by {label} (messages):");
        for (name, n) in rows.iter().take(40) {
            println!(
                "  {n:>4}  {name}  ({})",
                rules.location(name).unwrap_or_default()
            );
        }
    };
    top("SpamAssassin", &only_sa);
    top("Kala", &only_kala);
    println!("\nfirst disagreements:\n{}", examples.join("\n"));
    assert!(
        ratio >= TARGET,
        "agreement {:.1} % is below {:.0} %",
        ratio * 100.0,
        TARGET * 100.0
    );
}

/// Kala alone over the same messages, timing each: finds messages that are slow to scan.
#[test]
#[ignore = "a diagnostic, run by hand"]
fn kala_scan_time_per_message() {
    let rules = RuleSet::load(&[PathBuf::from(RULES_DIR)]);
    let mut messages = corpus_messages("easy-ham-1", 200);
    messages.extend(corpus_messages("hard-ham-1", 100));
    messages.extend(corpus_messages("spam-1", 200));
    let started = std::time::Instant::now();
    for path in &messages {
        let raw = std::fs::read(path).unwrap();
        let t = std::time::Instant::now();
        let message = Message::parse(&raw, raw.len());
        let hits = rules.evaluate(&message, &Envelope::offline("", vec![]));
        let took = t.elapsed();
        if took > std::time::Duration::from_millis(200) {
            println!(
                "slow: {} took {took:?} ({} bytes, {} hits)",
                path.display(),
                raw.len(),
                hits.len()
            );
        }
    }
    println!("{} messages in {:?}", messages.len(), started.elapsed());
}

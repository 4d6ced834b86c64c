//! The SpamAssassin peer works: a private offline spamd scans corpus messages and names the
//! rules that hit. The conformance test and the spamd benchmark build on this.

#[path = "support_sa/mod.rs"]
mod support_sa;

use std::time::Instant;

use support_sa::{Spamd, corpus_messages};

#[test]
fn spamd_names_the_rules_that_hit_corpus_messages() {
    let started = Instant::now();
    let spamd = Spamd::start();
    eprintln!(
        "spamd answered after {:?} (pid {})",
        started.elapsed(),
        spamd.pid()
    );

    let spam = corpus_messages("spam-1", 3);
    let ham = corpus_messages("easy-ham-1", 3);
    assert_eq!((spam.len(), ham.len()), (3, 3));

    let cpu_before = spamd.cpu_time();
    let started = Instant::now();
    let mut spam_hits = 0;
    for path in spam.iter().chain(&ham) {
        let rules = spamd.symbols(&std::fs::read(path).unwrap());
        assert!(
            rules.iter().all(|r| !r.starts_with("__")),
            "sub-rules are not expected from spamc -y: {rules:?}"
        );
        if spam.contains(path) && !rules.is_empty() {
            spam_hits += 1;
        }
        eprintln!("{}: {rules:?}", path.display());
    }
    eprintln!(
        "6 messages: {:?} wall, {:?} spamd CPU",
        started.elapsed(),
        spamd.cpu_time() - cpu_before
    );
    assert!(spam_hits > 0, "no spam message hit any rule");
}

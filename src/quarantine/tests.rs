use super::*;
use crate::verdict::Action;

fn verdict(score: f64, symbols: &[(&str, f64)], forced_by: Option<&str>) -> Verdict {
    Verdict {
        action: Action::Quarantine,
        score,
        symbols: symbols
            .iter()
            .map(|(n, s)| Symbol::new(*n, *s, format!("{n} described")))
            .collect(),
        forced_by: forced_by.map(String::from),
        headers: Vec::new(),
    }
}

#[test]
fn categories_follow_the_symbol_that_forced_the_action() {
    assert_eq!(Category::of(&verdict(20.0, &[], None)), Category::Spam);
    assert_eq!(
        Category::of(&verdict(0.0, &[], Some("VIRUS"))),
        Category::Virus
    );
    assert_eq!(
        Category::of(&verdict(0.0, &[], Some("ARCHIVE_BANNED_ENTRY"))),
        Category::Banned
    );
    assert_eq!(
        Category::of(&verdict(0.0, &[], Some("ARCHIVE_ENCRYPTED"))),
        Category::Policy
    );
}

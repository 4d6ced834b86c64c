//! Rule tests: each `test_message` case scans its fixture with the rule set and compares the
//! symbols that fired with the ones it names. A reload refuses a set whose tests fail.

use std::fmt;

use super::RuleSet;
use super::parse::TestCase;
use crate::envelope::Envelope;
use crate::message::Message;

/// One case's result: what should have fired and did not, and what fired but should not.
#[derive(Debug, Clone, PartialEq)]
pub struct TestResult {
    pub case: String,
    pub missing: Vec<String>,
    pub unexpected: Vec<String>,
    /// A named symbol no rule of the set defines (a typo would otherwise pass a `!NAME`).
    pub undefined: Vec<String>,
}

impl TestResult {
    pub fn passed(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.undefined.is_empty()
    }
}

impl fmt::Display for TestResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.case)?;
        if self.passed() {
            return write!(f, "ok");
        }
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!("missing {}", self.missing.join(", ")));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!("unexpected {}", self.unexpected.join(", ")));
        }
        if !self.undefined.is_empty() {
            parts.push(format!("no rule named {}", self.undefined.join(", ")));
        }
        write!(f, "FAILED: {}", parts.join("; "))
    }
}

/// Every case's result, in file order.
#[derive(Debug, Clone, Default)]
pub struct TestReport {
    pub results: Vec<TestResult>,
}

impl TestReport {
    pub fn failures(&self) -> impl Iterator<Item = &TestResult> {
        self.results.iter().filter(|r| !r.passed())
    }

    pub fn passed(&self) -> bool {
        self.failures().next().is_none()
    }
}

/// Runs the set's own test cases (CPU-bound: call it off the async runtime).
pub fn run(set: &RuleSet) -> TestReport {
    TestReport {
        results: set.tests.iter().map(|case| run_case(set, case)).collect(),
    }
}

fn run_case(set: &RuleSet, case: &TestCase) -> TestResult {
    let message = Message::parse(&case.message, case.message.len());
    let fired: Vec<String> = set
        .evaluate(&message, &Envelope::offline("", Vec::new()))
        .into_iter()
        .map(|hit| hit.name)
        .collect();
    let defined = |name: &String| set.by_name.contains_key(name);
    TestResult {
        case: format!(
            "{}:{} ({})",
            case.file.display(),
            case.line,
            case.fixture
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
        ),
        missing: case
            .hits
            .iter()
            .filter(|n| defined(n) && !fired.contains(n))
            .cloned()
            .collect(),
        unexpected: case
            .misses
            .iter()
            .filter(|n| fired.contains(n))
            .cloned()
            .collect(),
        undefined: case
            .hits
            .iter()
            .chain(&case.misses)
            .filter(|n| !defined(n))
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    fn set_with_fixture(rules: &str, tests: &str, message: &str) -> RuleSet {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tests")).unwrap();
        std::fs::write(dir.path().join("10_a.cf"), rules).unwrap();
        std::fs::write(dir.path().join("tests/a.cf"), tests).unwrap();
        std::fs::write(dir.path().join("tests/m.eml"), message).unwrap();
        RuleSet::load(&[dir.path().to_path_buf()])
    }

    const MESSAGE: &str = "Subject: hi\r\n\r\nWin a prize now\r\n";

    #[test]
    fn a_missing_and_an_unexpected_symbol_are_named() {
        let set = set_with_fixture(
            "body PRIZE /prize/\nbody LOTTERY /lottery/\n",
            "test_message m.eml LOTTERY !PRIZE\n",
            MESSAGE,
        );
        assert!(set.errors.is_empty(), "{:?}", set.errors);
        let report = run(&set);
        let failure = report.failures().next().expect("the case fails");
        assert_eq!(failure.missing, ["LOTTERY"]);
        assert_eq!(failure.unexpected, ["PRIZE"]);
        assert!(failure.to_string().contains("missing LOTTERY"), "{failure}");
    }

    #[test]
    fn a_passing_case_passes_and_a_typo_fails() {
        let set = set_with_fixture(
            "body PRIZE /prize/\n",
            "test_message m.eml PRIZE\ntest_message m.eml !PRIZEE\n",
            MESSAGE,
        );
        let report = run(&set);
        assert!(report.results[0].passed());
        assert_eq!(report.results[1].undefined, ["PRIZEE"]);
    }

    #[test]
    fn a_missing_fixture_is_an_error_with_its_place() {
        let set = set_with_fixture(
            "body PRIZE /prize/\n",
            "\ntest_message nope.eml PRIZE\n",
            "",
        );
        let error = set.errors.first().expect("an error").to_string();
        assert!(
            error.contains("tests/a.cf:2") && error.contains("nope.eml"),
            "{error}"
        );
    }

    #[test]
    fn a_shadow_rule_fires_for_tests_but_scores_nothing_and_no_meta_sees_it() {
        let set = set_with_fixture(
            "body PRIZE /prize/\nscore PRIZE 3\ntflags PRIZE shadow\nmeta BOTH PRIZE\n",
            "test_message m.eml PRIZE !BOTH\n",
            MESSAGE,
        );
        assert!(run(&set).passed(), "{:?}", run(&set).results);
        let message = Message::parse(MESSAGE.as_bytes(), MESSAGE.len());
        let hits = set.evaluate(&message, &Envelope::offline("", Vec::new()));
        assert_eq!(hits.len(), 1);
        assert_eq!((hits[0].score, hits[0].shadow), (0.0, Some(3.0)));
    }
}

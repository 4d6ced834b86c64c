//! Golden fixtures: every `fixtures/mail/NAME.eml` is scanned with the default settings and
//! compared with `NAME.expect.toml` (the action, symbols that must and must not appear).
//! One run reports every mismatch, naming the file, the missing and the unexpected symbols.

use std::path::Path;

use kala::checks::Pipeline;
use kala::config::Settings;
use kala::envelope::Envelope;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expectation {
    action: String,
    #[serde(default)]
    must: Vec<String>,
    #[serde(default)]
    must_not: Vec<String>,
}

#[tokio::test]
async fn fixtures_get_their_expected_verdicts() {
    // The fixtures are about rules and structure; viruses have their own test with a clamd.
    let settings = Settings::parse("[antivirus]\nenabled = false\n", "golden test").unwrap();
    let pipeline = Pipeline::new(&settings);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/mail");
    let mut checked = 0;
    let mut problems = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for eml in entries
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
    {
        let name = eml.file_stem().unwrap().to_string_lossy().to_string();
        let expect_path = dir.join(format!("{name}.expect.toml"));
        let text = std::fs::read_to_string(&expect_path)
            .unwrap_or_else(|_| panic!("{} has no {}", eml.display(), expect_path.display()));
        let expect: Expectation =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", expect_path.display()));
        let raw = std::fs::read(eml).unwrap();
        let len = raw.len();
        let message = pipeline.parse(raw, len).await;
        let verdict = pipeline
            .scan(
                &Envelope::offline("a@sender.example", vec![]),
                &message,
                vec![],
            )
            .await;
        let got: Vec<&str> = verdict.symbols.iter().map(|s| s.name.as_str()).collect();
        let missing: Vec<&String> = expect
            .must
            .iter()
            .filter(|s| !got.contains(&s.as_str()))
            .collect();
        let unexpected: Vec<&String> = expect
            .must_not
            .iter()
            .filter(|s| got.contains(&s.as_str()))
            .collect();
        if verdict.action.to_string() != expect.action
            || !missing.is_empty()
            || !unexpected.is_empty()
        {
            problems.push(format!(
                "{name}: action {} (expected {}), missing {missing:?}, unexpected {unexpected:?}, got {got:?}",
                verdict.action, expect.action
            ));
        }
        checked += 1;
    }
    assert!(
        checked >= 4,
        "only {checked} fixtures found in {}",
        dir.display()
    );
    assert!(
        problems.is_empty(),
        "{} of {checked} fixtures differ:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

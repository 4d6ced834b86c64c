//! The UI's languages: English, Albanian and Serbian (Latin script). Every text comes from
//! `i18n/LANG.toml`, compiled into the binary; templates only name keys.

use std::collections::HashMap;
use std::sync::OnceLock;

/// Each language's code and its own name for itself.
pub const LANGUAGES: [(&str, &str); 3] = [("en", "English"), ("sq", "Shqip"), ("sr", "Srpski")];

const SOURCES: [(&str, &str); 3] = [
    ("en", include_str!("../../i18n/en.toml")),
    ("sq", include_str!("../../i18n/sq.toml")),
    ("sr", include_str!("../../i18n/sr.toml")),
];

fn catalog() -> &'static HashMap<&'static str, HashMap<String, String>> {
    static CATALOG: OnceLock<HashMap<&'static str, HashMap<String, String>>> = OnceLock::new();
    CATALOG.get_or_init(|| {
        SOURCES
            .iter()
            .map(|(code, text)| {
                let table: HashMap<String, String> = toml::from_str(text)
                    .unwrap_or_else(|e| panic!("i18n/{code}.toml does not parse: {e}"));
                (*code, table)
            })
            .collect()
    })
}

/// The keys of one language's file (for the completeness test).
pub fn keys(code: &str) -> Vec<String> {
    let mut keys: Vec<String> = catalog()
        .get(code)
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    keys
}

/// The texts of one language, handed to every template as `t`.
#[derive(Clone, Copy)]
pub struct Texts {
    pub lang: &'static str,
}

impl Texts {
    pub fn new(code: &str) -> Texts {
        let lang = LANGUAGES
            .iter()
            .map(|(c, _)| *c)
            .find(|c| *c == code)
            .unwrap_or("en");
        Texts { lang }
    }

    /// The text for `key`; English when this language lacks it, the key itself when no
    /// language has it (a test keeps that from happening).
    pub fn get<'a>(&self, key: &'a str) -> &'a str
    where
        'static: 'a,
    {
        let catalog = catalog();
        catalog
            .get(self.lang)
            .and_then(|t| t.get(key))
            .or_else(|| catalog.get("en").and_then(|t| t.get(key)))
            .map(String::as_str)
            .unwrap_or(key)
    }

    /// `get(key)` with `{name}` placeholders filled in.
    pub fn fill(&self, key: &str, values: &[(&str, String)]) -> String {
        let mut text = self.get(key).to_string();
        for (name, value) in values {
            text = text.replace(&format!("{{{name}}}"), value);
        }
        text
    }
}

/// The language to show: the user's choice, else the first supported one the browser asks
/// for in `Accept-Language`, else English.
pub fn negotiate(chosen: Option<&str>, accept_language: Option<&str>) -> Texts {
    if let Some(code) = chosen.filter(|c| LANGUAGES.iter().any(|(l, _)| l == c)) {
        return Texts::new(code);
    }
    let mut offers: Vec<(f32, &str)> = accept_language
        .unwrap_or("")
        .split(',')
        .filter_map(|item| {
            let mut parts = item.trim().split(';');
            let tag = parts.next()?.trim();
            let quality = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.parse().ok())
                .unwrap_or(1.0);
            Some((quality, tag))
        })
        .collect();
    offers.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (_, tag) in offers {
        // `sr-Latn-RS`, `sq-AL`, `en-GB`: the primary subtag decides. Serbian in Cyrillic
        // (`sr-Cyrl`) gets the Latin texts: there are no Cyrillic ones yet.
        let primary = tag.split('-').next().unwrap_or("").to_ascii_lowercase();
        if LANGUAGES.iter().any(|(l, _)| *l == primary) {
            return Texts::new(&primary);
        }
    }
    Texts::new("en")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_language_has_every_key() {
        let english = keys("en");
        assert!(english.len() > 50);
        for (code, _) in LANGUAGES {
            assert_eq!(
                keys(code),
                english,
                "i18n/{code}.toml has other keys than en"
            );
        }
    }

    #[test]
    fn templates_use_only_keys_that_exist() {
        let english = keys("en");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        let mut used = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for piece in text.split("t.get(\"").skip(1) {
                let key = &piece[..piece.find('"').unwrap()];
                assert!(
                    english.iter().any(|k| k == key),
                    "{}: no text for {key}",
                    path.display()
                );
                used += 1;
            }
        }
        assert!(used > 50, "templates take their texts from the catalogue");
    }

    #[test]
    fn the_user_choice_wins_then_the_browser() {
        assert_eq!(negotiate(Some("sq"), Some("sr")).lang, "sq");
        assert_eq!(
            negotiate(None, Some("de-DE, sr-Latn-RS;q=0.9, en;q=0.5")).lang,
            "sr"
        );
        assert_eq!(negotiate(None, Some("en;q=0.3, sq-AL")).lang, "sq");
        assert_eq!(negotiate(None, Some("fr")).lang, "en");
        assert_eq!(negotiate(Some("xx"), None).lang, "en");
        assert_eq!(Texts::new("sq").get("nav.logout"), "Dil");
        assert_eq!(
            Texts::new("en").fill(
                "list.count",
                &[("shown", "2".into()), ("total", "9".into())]
            ),
            "2 shown of 9 matching"
        );
    }
}

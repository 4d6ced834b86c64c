//! The EHLO/HELO name: RFC 5321 §4.1.1.1 asks for a fully qualified domain name or an
//! address literal. Real MTAs comply; spam bots often send a bare word, a bare IP, or our own
//! name. Each shape is a symbol; the admin may refuse some at once (`smtp.helo_reject`).

use async_trait::async_trait;

use super::{Check, Context, Outcome, Phase, Refusal};
use crate::verdict::Symbol;

/// The shapes `smtp.helo_reject` may name.
pub const HELO_SHAPES: &[&str] = &["forged", "bare_ip", "not_fqdn", "localhost"];

pub struct HeloName {
    /// Names and address literals that only this gateway may use.
    ours: Vec<String>,
    reject: Vec<String>,
}

impl HeloName {
    pub fn new(settings: &crate::config::SmtpSettings) -> HeloName {
        let mut ours = vec![settings.hostname.to_ascii_lowercase()];
        for addr in &settings.listen {
            if !addr.ip().is_unspecified() && !addr.ip().is_loopback() {
                ours.push(addr.ip().to_string());
                ours.push(format!("[{}]", addr.ip()));
            }
        }
        HeloName {
            ours,
            reject: settings.helo_reject.clone(),
        }
    }

    /// The shape's name (as in `smtp.helo_reject`) and its symbol, if the name is suspect.
    fn judge(&self, helo: &str) -> Option<(&'static str, Symbol)> {
        let lower = helo.to_ascii_lowercase();
        if self.ours.contains(&lower) {
            return Some((
                "forged",
                Symbol::new("KALA_HELO_FORGED", 3.0, "HELO claims to be this gateway"),
            ));
        }
        if helo.parse::<std::net::IpAddr>().is_ok() {
            Some((
                "bare_ip",
                Symbol::new(
                    "KALA_HELO_BARE_IP",
                    1.0,
                    "HELO is an IP address without [brackets]",
                ),
            ))
        } else if helo.starts_with('[') && helo.ends_with(']') {
            None
        } else if lower == "localhost" || lower.starts_with("localhost.") {
            Some((
                "localhost",
                Symbol::new("KALA_HELO_LOCALHOST", 1.5, "HELO claims to be localhost"),
            ))
        } else if !helo.contains('.') {
            Some((
                "not_fqdn",
                Symbol::new(
                    "KALA_HELO_NOT_FQDN",
                    1.0,
                    "HELO is not a fully qualified domain name",
                ),
            ))
        } else {
            None
        }
    }
}

#[async_trait]
impl Check for HeloName {
    fn name(&self) -> &'static str {
        "helo_name"
    }

    fn phases(&self) -> &'static [Phase] {
        &[Phase::Helo]
    }

    async fn check(&self, ctx: &Context<'_>) -> anyhow::Result<Outcome> {
        let Some(helo) = ctx.envelope.helo.as_deref() else {
            return Ok(Outcome::default());
        };
        let Some((shape, symbol)) = self.judge(helo) else {
            return Ok(Outcome::default());
        };
        let refusal = self.reject.iter().any(|r| r == shape).then(|| Refusal {
            code: 554,
            text: "Invalid HELO name (RFC 5321 4.1.1.1)".into(),
        });
        Ok(Outcome {
            symbols: vec![symbol.with_detail(helo.to_string())],
            refusal,
            headers: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Envelope;

    fn check(reject: &[&str]) -> HeloName {
        let mut settings = crate::config::Settings::parse("", "test").unwrap().smtp;
        settings.hostname = "mx.prokuroria.example".into();
        settings.listen = vec!["192.0.2.25:25".parse().unwrap()];
        settings.helo_reject = reject.iter().map(|s| s.to_string()).collect();
        HeloName::new(&settings)
    }

    async fn outcome(check: &HeloName, helo: &str) -> (Vec<String>, bool) {
        let mut e = Envelope::offline("", vec![]);
        e.helo = Some(helo.into());
        let ctx = Context {
            phase: Phase::Helo,
            envelope: &e,
            message: None,
            cpu: &super::super::CpuSlots::new(1),
        };
        let outcome = check.check(&ctx).await.unwrap();
        let names = outcome.symbols.into_iter().map(|s| s.name).collect();
        (names, outcome.refusal.is_some())
    }

    #[tokio::test]
    async fn helo_shapes() {
        let c = check(&[]);
        assert!(outcome(&c, "mail.example.org").await.0.is_empty());
        assert!(outcome(&c, "[192.0.2.1]").await.0.is_empty());
        assert_eq!(outcome(&c, "192.0.2.1").await.0, ["KALA_HELO_BARE_IP"]);
        assert_eq!(outcome(&c, "desktop").await.0, ["KALA_HELO_NOT_FQDN"]);
        assert_eq!(outcome(&c, "localhost").await.0, ["KALA_HELO_LOCALHOST"]);
        assert_eq!(
            outcome(&c, "MX.Prokuroria.example").await.0,
            ["KALA_HELO_FORGED"]
        );
        assert_eq!(outcome(&c, "[192.0.2.25]").await.0, ["KALA_HELO_FORGED"]);
        assert_eq!(outcome(&c, "192.0.2.25").await.0, ["KALA_HELO_FORGED"]);
    }

    #[tokio::test]
    async fn only_the_configured_shapes_are_refused() {
        let c = check(&["forged", "bare_ip"]);
        assert!(outcome(&c, "mx.prokuroria.example").await.1);
        assert!(outcome(&c, "192.0.2.1").await.1);
        assert_eq!(
            outcome(&c, "desktop").await,
            (vec!["KALA_HELO_NOT_FQDN".to_string()], false)
        );
    }
}

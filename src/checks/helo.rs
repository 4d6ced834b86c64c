//! The EHLO/HELO name: RFC 5321 §4.1.1.1 asks for a fully qualified domain name or an
//! address literal. Real MTAs comply; spam bots often send a bare word or a bare IP.

use async_trait::async_trait;

use super::{Check, Context, Outcome, Phase};
use crate::verdict::Symbol;

pub struct HeloName;

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
        let symbol = if helo.parse::<std::net::IpAddr>().is_ok() {
            Some(Symbol::new(
                "KALA_HELO_BARE_IP",
                1.0,
                "HELO is an IP address without [brackets]",
            ))
        } else if helo.starts_with('[') && helo.ends_with(']') {
            None
        } else if helo.eq_ignore_ascii_case("localhost")
            || helo.to_ascii_lowercase().starts_with("localhost.")
        {
            Some(Symbol::new(
                "KALA_HELO_LOCALHOST",
                1.5,
                "HELO claims to be localhost",
            ))
        } else if !helo.contains('.') {
            Some(Symbol::new(
                "KALA_HELO_NOT_FQDN",
                1.0,
                "HELO is not a fully qualified domain name",
            ))
        } else {
            None
        };
        Ok(symbol
            .map(|s| s.with_detail(helo.to_string()))
            .into_iter()
            .collect::<Vec<_>>()
            .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Envelope;

    async fn names(helo: &str) -> Vec<String> {
        let mut e = Envelope::offline("", vec![]);
        e.helo = Some(helo.into());
        let ctx = Context {
            phase: Phase::Helo,
            envelope: &e,
            message: None,
            cpu: &super::super::CpuSlots::new(1),
        };
        HeloName
            .check(&ctx)
            .await
            .unwrap()
            .symbols
            .into_iter()
            .map(|s| s.name)
            .collect()
    }

    #[tokio::test]
    async fn helo_shapes() {
        assert!(names("mail.example.org").await.is_empty());
        assert!(names("[192.0.2.1]").await.is_empty());
        assert_eq!(names("192.0.2.1").await, ["KALA_HELO_BARE_IP"]);
        assert_eq!(names("desktop").await, ["KALA_HELO_NOT_FQDN"]);
        assert_eq!(names("localhost").await, ["KALA_HELO_LOCALHOST"]);
    }
}

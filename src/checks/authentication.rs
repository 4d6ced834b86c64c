//! SPF, DKIM, ARC and DMARC (RFC 7208, 6376, 8617, 7489) through `mail-auth`, on the shared
//! resolver. Each result is a symbol; the whole is written for Exchange as one
//! `Authentication-Results` header (RFC 8601) on the relayed message.

use async_trait::async_trait;
use mail_auth::dmarc::Policy as DmarcPolicy;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimResult, DmarcResult, SpfResult,
    dmarc::verify::DmarcParameters,
};

use super::{Check, Context, Outcome, Phase};
use crate::dns::Dns;
use crate::verdict::Symbol;

pub struct Authentication {
    dns: Dns,
    /// Our name in the header (the authserv-id), so a forged header claiming it can be told.
    hostname: String,
}

impl Authentication {
    pub fn new(dns: Dns, hostname: String) -> Authentication {
        Authentication { dns, hostname }
    }
}

#[async_trait]
impl Check for Authentication {
    fn name(&self) -> &'static str {
        "authentication"
    }

    fn phases(&self) -> &'static [Phase] {
        &[Phase::Data]
    }

    async fn check(&self, ctx: &Context<'_>) -> anyhow::Result<Outcome> {
        let Some(message) = ctx.message else {
            return Ok(Outcome::default());
        };
        let Some(parsed) = AuthenticatedMessage::parse(&message.raw) else {
            return Ok(Outcome::default());
        };
        let envelope = ctx.envelope;
        let ip = envelope.client_ip;
        let helo = envelope.helo.as_deref().unwrap_or("");
        let resolver = self.dns.authenticator();

        let spf = if envelope.sender.is_empty() {
            resolver
                .verify_spf(SpfParameters::verify_ehlo(ip, helo, &self.hostname))
                .await
        } else {
            resolver
                .verify_spf(SpfParameters::verify_mail_from(
                    ip,
                    helo,
                    &self.hostname,
                    &envelope.sender,
                ))
                .await
        };
        // A message cut at scan.max_scan_size has lost the body its signatures cover.
        let dkim = if message.truncated {
            Vec::new()
        } else {
            resolver.verify_dkim(&parsed).await
        };
        let arc = resolver.verify_arc(&parsed).await;
        let mail_from_domain = match envelope.sender.rsplit_once('@') {
            Some((_, domain)) => domain,
            None => helo,
        };
        let dmarc = resolver
            .verify_dmarc(DmarcParameters::new(&parsed, &dkim, mail_from_domain, &spf))
            .await;

        let mut symbols = Vec::new();
        symbols.push(spf_symbol(spf.result(), spf.domain()));
        if message.truncated {
            symbols.push(Symbol::new(
                "DKIM_UNCHECKED",
                0.0,
                "The message was too large to verify its DKIM signatures",
            ));
        } else {
            symbols.extend(dkim_symbol(&dkim));
        }
        symbols.extend(arc_symbol(arc.result()));
        symbols.extend(dmarc_symbol(
            &dmarc.result(),
            dmarc.policy(),
            dmarc.domain(),
        ));

        let header_from = parsed.from();
        let mut results = AuthenticationResults::new(&self.hostname).with_spf_mailfrom_result(
            &spf,
            ip,
            &envelope.sender,
            helo,
        );
        if !dkim.is_empty() {
            results = results.with_dkim_results(&dkim, header_from);
        }
        if *arc.result() != DkimResult::None {
            results = results.with_arc_result(&arc, ip);
        }
        if !dmarc.domain().is_empty() {
            results = results.with_dmarc_result(&dmarc);
        }
        Ok(Outcome {
            symbols,
            refusal: None,
            headers: vec![format!("Authentication-Results: {results}\r\n")],
        })
    }
}

fn spf_symbol(result: SpfResult, domain: &str) -> Symbol {
    let (name, score, text) = match result {
        SpfResult::Pass => (
            "SPF_PASS",
            -0.1,
            "SPF allows the client to send for the sender's domain",
        ),
        SpfResult::Fail => (
            "SPF_FAIL",
            2.0,
            "SPF says the client may not send for the sender's domain",
        ),
        SpfResult::SoftFail => (
            "SPF_SOFTFAIL",
            0.8,
            "SPF says the client is probably not allowed to send for the sender's domain",
        ),
        SpfResult::Neutral => ("SPF_NEUTRAL", 0.0, "SPF makes no claim about the client"),
        SpfResult::None => (
            "SPF_NONE",
            0.0,
            "The sender's domain publishes no SPF record",
        ),
        SpfResult::TempError => ("SPF_TEMPERROR", 0.0, "SPF could not be checked (DNS error)"),
        SpfResult::PermError => (
            "SPF_PERMERROR",
            0.3,
            "The sender's domain publishes a broken SPF record",
        ),
    };
    Symbol::new(name, score, text).with_detail(domain.to_string())
}

/// One symbol for all signatures: valid when any verifies (a forwarder's added signature
/// may fail while the author's holds).
fn dkim_symbol(outputs: &[mail_auth::DkimOutput<'_>]) -> Option<Symbol> {
    let domain =
        |o: &mail_auth::DkimOutput<'_>| o.signature().map(|s| s.d.clone()).unwrap_or_default();
    if outputs.is_empty() {
        return Some(Symbol::new(
            "DKIM_NONE",
            0.0,
            "The message carries no DKIM signature",
        ));
    }
    if let Some(pass) = outputs.iter().find(|o| *o.result() == DkimResult::Pass) {
        return Some(
            Symbol::new("DKIM_VALID", -0.1, "A DKIM signature verifies").with_detail(domain(pass)),
        );
    }
    let first = &outputs[0];
    let (name, score, text, why) = match first.result() {
        DkimResult::Fail(e) => (
            "DKIM_INVALID",
            1.0,
            "The DKIM signature does not verify: the message changed or the signature is forged",
            e.to_string(),
        ),
        DkimResult::PermError(e) => (
            "DKIM_PERMERROR",
            0.5,
            "The DKIM signature or its key is broken",
            e.to_string(),
        ),
        DkimResult::TempError(e) => (
            "DKIM_TEMPERROR",
            0.0,
            "The DKIM key could not be fetched (DNS error)",
            e.to_string(),
        ),
        // mail-auth calls a body hash mismatch "neutral"; it means the signed body changed.
        DkimResult::Neutral(
            e @ mail_auth::Error::Dkim(mail_auth::dkim::DkimError::FailedBodyHashMatch),
        ) => (
            "DKIM_INVALID",
            1.0,
            "The DKIM signature does not verify: the message changed or the signature is forged",
            e.to_string(),
        ),
        DkimResult::Neutral(e) => (
            "DKIM_NEUTRAL",
            0.0,
            "The DKIM signature could not be evaluated",
            e.to_string(),
        ),
        DkimResult::None | DkimResult::Pass => return None,
    };
    Some(Symbol::new(name, score, text).with_detail(format!("{}: {why}", domain(first))))
}

/// Nothing when the message carries no ARC set.
fn arc_symbol(result: &DkimResult) -> Option<Symbol> {
    Some(match result {
        DkimResult::Pass => {
            Symbol::new("ARC_VALID", 0.0, "The ARC chain of the forwarders verifies")
        }
        // As for DKIM, mail-auth calls a body hash mismatch "neutral".
        DkimResult::Fail(e)
        | DkimResult::PermError(e)
        | DkimResult::Neutral(
            e @ mail_auth::Error::Arc(mail_auth::arc::ArcError::FailedBodyHashMatch),
        ) => Symbol::new("ARC_INVALID", 0.5, "The ARC chain does not verify")
            .with_detail(e.to_string()),
        DkimResult::TempError(e) | DkimResult::Neutral(e) => {
            Symbol::new("ARC_TEMPERROR", 0.0, "The ARC chain could not be checked")
                .with_detail(e.to_string())
        }
        DkimResult::None => return None,
    })
}

/// A failure under the domain's published policy gets its own symbol, so the policy can
/// force an action on it (`auth.dmarc_reject_action`).
fn dmarc_symbol(result: &DmarcResult, policy: DmarcPolicy, domain: &str) -> Option<Symbol> {
    let symbol = match result {
        DmarcResult::Pass => Symbol::new(
            "DMARC_PASS",
            -0.1,
            "DMARC passes: the From domain is authenticated",
        ),
        DmarcResult::Fail(_) => match policy {
            DmarcPolicy::Reject => Symbol::new(
                "DMARC_REJECT_POLICY",
                3.0,
                "DMARC fails and the From domain asks receivers to reject",
            ),
            DmarcPolicy::Quarantine => Symbol::new(
                "DMARC_QUARANTINE_POLICY",
                2.0,
                "DMARC fails and the From domain asks receivers to quarantine",
            ),
            DmarcPolicy::None | DmarcPolicy::Unspecified => Symbol::new(
                "DMARC_NONE_POLICY",
                0.5,
                "DMARC fails; the From domain asks for no action",
            ),
        },
        DmarcResult::TempError(e) => Symbol::new(
            "DMARC_TEMPERROR",
            0.0,
            "DMARC could not be checked (DNS error)",
        )
        .with_detail(e.to_string()),
        DmarcResult::PermError(e) => Symbol::new(
            "DMARC_PERMERROR",
            0.0,
            "The From domain publishes a broken DMARC record",
        )
        .with_detail(e.to_string()),
        DmarcResult::None => Symbol::new(
            "DMARC_NONE",
            0.0,
            "The From domain publishes no DMARC record",
        ),
    };
    Some(match symbol.detail {
        Some(_) => symbol,
        None => symbol.with_detail(domain.to_string()),
    })
}

//! Greylisting (RFC 6647): the first attempt of an unknown (client network, sender,
//! recipient) triplet gets 451; a real MTA retries after a while and is let through, a
//! fire-and-forget spam bot never comes back. A client network that retried once is trusted
//! for everything for a while (auto-allow), so each MTA is delayed once, not per message.

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;

use super::SenderLists;
use super::{Check, Context, Outcome, Phase, Refusal};
use crate::config::GreylistSettings;
use crate::dns::Dns;
use crate::store::lists::ListKind;
use crate::store::state::{GreyEntry, GreylistState};
use crate::verdict::Symbol;

pub struct Greylist {
    state: Arc<dyn GreylistState>,
    settings: GreylistSettings,
    /// Allow-listed senders and clients are not greylisted.
    lists: Arc<SenderLists>,
    /// For SPF, when a passing sender skips greylisting.
    dns: Option<Dns>,
}

impl Greylist {
    pub fn new(
        state: Arc<dyn GreylistState>,
        settings: GreylistSettings,
        lists: Arc<SenderLists>,
        dns: Option<Dns>,
    ) -> Greylist {
        Greylist {
            state,
            settings,
            lists,
            dns,
        }
    }

    /// Why this attempt skips greylisting, if it does.
    async fn exempt(&self, ip: IpAddr, sender: &str, recipient: &str) -> anyhow::Result<bool> {
        if self.settings.skip_networks.iter().any(|n| n.contains(&ip)) {
            return Ok(true);
        }
        let listed = self
            .lists
            .decide(sender, ip, &[recipient.to_string()])
            .await?;
        if listed.is_some_and(|l| l.kind == ListKind::Allow) {
            return Ok(true);
        }
        if self.settings.skip_spf_pass
            && !sender.is_empty()
            && let Some(dns) = &self.dns
        {
            let spf = dns
                .authenticator()
                .verify_spf(mail_auth::spf::verify::SpfParameters::verify_mail_from(
                    ip, "", "", sender,
                ))
                .await;
            if spf.result() == mail_auth::SpfResult::Pass {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[async_trait]
impl Check for Greylist {
    fn name(&self) -> &'static str {
        "greylist"
    }

    fn phases(&self) -> &'static [Phase] {
        &[Phase::Rcpt]
    }

    async fn check(&self, ctx: &Context<'_>) -> anyhow::Result<Outcome> {
        let envelope = ctx.envelope;
        let Some(recipient) = envelope.recipients.last() else {
            return Ok(Outcome::default());
        };
        let ip = envelope.client_ip;
        if self.exempt(ip, &envelope.sender, recipient).await? {
            return Ok(Outcome::default());
        }
        let now = crate::store::now();
        let network = client_network(ip);
        let client_key = format!("client|{network}");
        if self
            .state
            .grey_get(&client_key, now)
            .await?
            .is_some_and(|e| e.passed)
        {
            return Ok(Outcome::default());
        }
        let key = format!(
            "{network}|{}|{}",
            envelope.sender.to_lowercase(),
            recipient.to_lowercase()
        );
        let delay = self.settings.delay.as_secs();
        let pass_until = now + self.settings.pass_ttl.as_secs();
        match self.state.grey_get(&key, now).await? {
            Some(entry) if entry.passed => Ok(Outcome::default()),
            Some(entry) if now >= entry.first_seen + delay => {
                let passed = GreyEntry {
                    first_seen: entry.first_seen,
                    passed: true,
                };
                self.state.grey_put(&key, passed, pass_until).await?;
                if self.settings.auto_allow {
                    self.state.grey_put(&client_key, passed, pass_until).await?;
                }
                Ok(vec![
                    Symbol::new(
                        "KALA_GREYLIST_PASSED",
                        0.0,
                        "The sender retried after greylisting, as a real mail server does",
                    )
                    .with_detail(format!("retried after {}s", now - entry.first_seen)),
                ]
                .into())
            }
            Some(_) => Ok(greylisted()),
            None => {
                let first = GreyEntry {
                    first_seen: now,
                    passed: false,
                };
                let forget_at = now + self.settings.retry_window.as_secs();
                self.state.grey_put(&key, first, forget_at).await?;
                Ok(greylisted())
            }
        }
    }
}

fn greylisted() -> Outcome {
    Outcome {
        symbols: Vec::new(),
        refusal: Some(Refusal {
            code: 451,
            text: "Greylisted, please try again later".into(),
        }),
        headers: Vec::new(),
    }
}

/// The client's /24 (IPv4) or /64 (IPv6): big senders retry from another address of the
/// same pool.
fn client_network(ip: IpAddr) -> ipnet::IpNet {
    let prefix = if ip.is_ipv4() { 24 } else { 64 };
    ipnet::IpNet::new(ip, prefix)
        .map(|n| n.trunc())
        .unwrap_or_else(|_| ipnet::IpNet::from(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_are_slash_24_and_slash_64() {
        assert_eq!(
            client_network("192.0.2.77".parse().unwrap()).to_string(),
            "192.0.2.0/24"
        );
        assert_eq!(
            client_network("2001:db8:1:2:3::9".parse().unwrap()).to_string(),
            "2001:db8:1:2::/64"
        );
    }
}

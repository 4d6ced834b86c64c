//! Domain blocklists (URIBL, SURBL, Spamhaus DBL) asked with the registrable domain (public
//! suffix list) of every link in the message and of the sender, at most
//! `uribl.max_domains` per message, all at once.

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;

use super::dnsbl::{Weighed, refused_symbol, weigh};
use super::{Check, Context, Outcome, Phase};
use crate::config::UriblSettings;
use crate::dns::{Dns, reversed_name};
use crate::health::Health;
use crate::verdict::Symbol;

pub struct Uribl {
    dns: Dns,
    settings: UriblSettings,
    health: Arc<Health>,
}

impl Uribl {
    pub fn new(dns: Dns, settings: UriblSettings, health: Arc<Health>) -> Uribl {
        Uribl {
            dns,
            settings,
            health,
        }
    }
}

/// What is looked up for one link or address.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A registrable domain, e.g. `example.co.uk`.
    Domain(String),
    /// A link to a bare IP address (looked up reversed, as SURBL wants).
    Address(IpAddr),
}

impl Target {
    fn query(&self, zone: &str) -> String {
        match self {
            Target::Domain(d) => format!("{d}.{zone}."),
            Target::Address(ip) => reversed_name(*ip, zone),
        }
    }

    fn label(&self) -> String {
        match self {
            Target::Domain(d) => d.clone(),
            Target::Address(ip) => ip.to_string(),
        }
    }
}

/// The host of a link as the message writes it (`http://x/`, `www.x.org/p`, `mailto:a@x`).
pub(crate) fn host_of(link: &str) -> Option<String> {
    if let Some(address) = link.strip_prefix("mailto:") {
        let address = address.split(['?', '>']).next()?;
        return address.rsplit_once('@').map(|(_, d)| d.to_string());
    }
    let with_scheme = if link.contains("://") {
        link.to_string()
    } else {
        format!("http://{link}")
    };
    let url = url::Url::parse(&with_scheme).ok()?;
    match url.host()? {
        url::Host::Domain(d) => Some(d.to_string()),
        url::Host::Ipv4(ip) => Some(ip.to_string()),
        url::Host::Ipv6(ip) => Some(ip.to_string()),
    }
}

/// What a host is looked up as: its registrable domain, or itself when an IP address.
fn target_of(host: &str) -> Option<Target> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Some(Target::Address(ip));
    }
    let registrable = psl::domain_str(&host)?;
    Some(Target::Domain(registrable.to_string()))
}

/// The distinct targets of a message, the sender's first; and how many were left out.
fn targets(
    sender: &str,
    from_header: Option<&str>,
    links: &[String],
    max: usize,
) -> (Vec<Target>, usize) {
    let mut all: Vec<Target> = Vec::new();
    let senders = [sender, from_header.unwrap_or("")];
    let hosts = senders
        .iter()
        .filter_map(|a| {
            a.rsplit_once('@')
                .map(|(_, d)| d.trim_end_matches('>').to_string())
        })
        .chain(links.iter().filter_map(|l| host_of(l)));
    for host in hosts {
        if let Some(target) = target_of(&host)
            && !all.contains(&target)
        {
            all.push(target);
        }
    }
    let skipped = all.len().saturating_sub(max);
    all.truncate(max);
    (all, skipped)
}

#[async_trait]
impl Check for Uribl {
    fn name(&self) -> &'static str {
        "uribl"
    }

    fn phases(&self) -> &'static [Phase] {
        &[Phase::Data]
    }

    async fn check(&self, ctx: &Context<'_>) -> anyhow::Result<Outcome> {
        let Some(message) = ctx.message else {
            return Ok(Outcome::default());
        };
        let links: Vec<String> = message.urls.iter().map(|u| u.url.clone()).collect();
        let from = message
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("From"))
            .map(|h| h.decoded.as_str());
        let (targets, skipped) = targets(
            &ctx.envelope.sender,
            from,
            &links,
            self.settings.max_domains,
        );
        let lookups = self.settings.lists.iter().flat_map(|list| {
            targets.iter().map(move |target| {
                let name = target.query(&list.zone);
                async move { (list, target, self.dns.lookup_a(&name).await) }
            })
        });
        let mut outcome = Outcome::default();
        // Per list: the heaviest listed domain scores (ten links to one listed domain are
        // one finding), the others are named in the detail.
        let mut found: Vec<(usize, f64, Vec<String>)> = Vec::new();
        let mut failed: Vec<(usize, String)> = Vec::new();
        let mut refused_lists = Vec::new();
        for (list, target, result) in futures::future::join_all(lookups).await {
            let index = self
                .settings
                .lists
                .iter()
                .position(|l| std::ptr::eq(l, list))
                .unwrap_or(0);
            match result {
                Ok(answer) => match weigh(list, &answer) {
                    Weighed::NotListed => {}
                    Weighed::Refused(refused) => {
                        if !refused_lists.contains(&index) {
                            refused_lists.push(index);
                            outcome
                                .symbols
                                .push(refused_symbol(list, refused, &self.health));
                        }
                    }
                    Weighed::Listed { weight, codes } => {
                        let what = format!("{} ({})", target.label(), codes.join(", "));
                        match found.iter_mut().find(|(i, _, _)| *i == index) {
                            Some((_, w, names)) => {
                                *w = w.max(weight);
                                names.push(what);
                            }
                            None => found.push((index, weight, vec![what])),
                        }
                    }
                },
                Err(e) => {
                    if !failed.iter().any(|(i, _)| *i == index) {
                        failed.push((index, e.to_string()));
                    }
                }
            }
        }
        for (index, weight, names) in found {
            let list = &self.settings.lists[index];
            outcome.symbols.push(
                Symbol::new(
                    list.symbol.clone(),
                    weight,
                    format!("The message names a domain listed by {}", list.zone),
                )
                .with_detail(names.join(", ")),
            );
        }
        for (index, error) in failed {
            let list = &self.settings.lists[index];
            outcome.symbols.push(
                Symbol::new(
                    format!("{}_UNCHECKED", list.symbol),
                    0.0,
                    "The domain blocklist did not answer",
                )
                .with_detail(format!("{}: {error}", list.zone)),
            );
        }
        if skipped > 0 {
            outcome.symbols.push(
                Symbol::new(
                    "URIBL_CAPPED",
                    0.0,
                    "Only the first domains of this message were looked up",
                )
                .with_detail(format!(
                    "{skipped} more domains past uribl.max_domains = {}",
                    self.settings.max_domains
                )),
            );
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_become_registrable_domains_in_order_without_repeats() {
        let links = [
            "http://www.shop.example.co.uk/buy",
            "www.shop.example.co.uk/other",
            "mailto:sales@Mail.Spam.test?subject=x",
            "https://192.0.2.9/login",
            "ftp://files.spam.test/",
        ]
        .map(String::from);
        let (found, skipped) = targets(
            "ana@sender.example",
            Some("Ana <ana@sender.example>"),
            &links,
            10,
        );
        assert_eq!(
            found,
            [
                Target::Domain("sender.example".into()),
                Target::Domain("example.co.uk".into()),
                Target::Domain("spam.test".into()),
                Target::Address("192.0.2.9".parse().unwrap()),
            ]
        );
        assert_eq!(skipped, 0);
        let (capped, skipped) = targets("", None, &links, 2);
        assert_eq!(capped.len(), 2);
        assert_eq!(skipped, 1);
    }
}

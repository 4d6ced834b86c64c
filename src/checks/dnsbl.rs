//! DNS blocklists on the client's address, at connect: every list is asked at once, each
//! answer weighs what the admin said it weighs, and a total over `dnsbl.reject_at` refuses
//! the connection before the greeting (as Postfix's postscreen does).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use async_trait::async_trait;

use super::{Check, Context, Outcome, Phase, Refusal};
use crate::config::{DnsblList, DnsblSettings};
use crate::dns::{Answer, Dns, reversed_name};
use crate::health::Health;
use crate::verdict::Symbol;

pub struct Dnsbl {
    dns: Dns,
    settings: DnsblSettings,
    health: Arc<Health>,
}

impl Dnsbl {
    pub fn new(dns: Dns, settings: DnsblSettings, health: Arc<Health>) -> Dnsbl {
        Dnsbl {
            dns,
            settings,
            health,
        }
    }
}

#[async_trait]
impl Check for Dnsbl {
    fn name(&self) -> &'static str {
        "dnsbl"
    }

    fn phases(&self) -> &'static [Phase] {
        &[Phase::Connect]
    }

    async fn check(&self, ctx: &Context<'_>) -> anyhow::Result<Outcome> {
        let ip = canonical(ctx.envelope.client_ip);
        if self.settings.lists.is_empty()
            || self.settings.skip_networks.iter().any(|n| n.contains(&ip))
        {
            return Ok(Outcome::default());
        }
        let lookups = self.settings.lists.iter().map(|list| {
            let name = reversed_name(ip, &list.zone);
            async move { (list, self.dns.lookup_a(&name).await) }
        });
        let mut outcome = Outcome::default();
        let mut total = 0.0;
        for (list, result) in futures::future::join_all(lookups).await {
            match result {
                Ok(answer) => match weigh(list, &answer) {
                    Weighed::NotListed => {}
                    Weighed::Refused(refused) => {
                        outcome
                            .symbols
                            .push(refused_symbol(list, refused, &self.health));
                    }
                    Weighed::Listed { weight, codes } => {
                        total += weight;
                        outcome.symbols.push(
                            Symbol::new(
                                list.symbol.clone(),
                                weight,
                                format!("The client's address is listed by {}", list.zone),
                            )
                            .with_detail(format!(
                                "{ip} in {} ({})",
                                list.zone,
                                codes.join(", ")
                            )),
                        );
                    }
                },
                Err(error) => outcome.symbols.push(
                    Symbol::new(
                        format!("{}_UNCHECKED", list.symbol),
                        0.0,
                        "The blocklist did not answer",
                    )
                    .with_detail(format!("{}: {error}", list.zone)),
                ),
            }
        }
        if let Some(limit) = self.settings.reject_at
            && total >= limit
        {
            tracing::info!(client = %ip, weight = total, "connection refused by DNS blocklists");
            outcome.refusal = Some(Refusal {
                code: 554,
                text: "Service refused: the sending address has a poor reputation".into(),
            });
        }
        Ok(outcome)
    }
}

/// What one list's answer means.
pub(super) enum Weighed {
    NotListed,
    /// The list refused our resolver (this answer); nothing can be said.
    Refused(Ipv4Addr),
    /// Listed: the summed weight of the answers and the answers that had one.
    Listed {
        weight: f64,
        codes: Vec<String>,
    },
}

/// Weighs a list's answer by the admin's table. 127.255.255.0/24 is how blocklists say
/// "your resolver may not ask" (Spamhaus uses .252, .254 and .255): no listing, and every
/// later listing is lost too, so it is raised as a health warning.
pub(super) fn weigh(list: &DnsblList, answer: &Answer) -> Weighed {
    let Answer::Listed(addresses) = answer else {
        return Weighed::NotListed;
    };
    if let Some(refused) = addresses.iter().find(|a| is_refusal(**a)) {
        return Weighed::Refused(*refused);
    }
    let mut weight = 0.0;
    let mut codes = Vec::new();
    for address in addresses {
        let w = match list.weights.get(address) {
            Some(w) => Some(*w),
            // Answers outside 127/8 come from broken or hijacking resolvers.
            None if address.octets()[0] == 127 => list.other_weight,
            None => None,
        };
        if let Some(w) = w {
            weight += w;
            codes.push(address.to_string());
        }
    }
    if codes.is_empty() {
        Weighed::NotListed
    } else {
        Weighed::Listed { weight, codes }
    }
}

/// The symbol for a list that refused us, after raising the health warning.
pub(super) fn refused_symbol(list: &DnsblList, refused: Ipv4Addr, health: &Health) -> Symbol {
    health.dnsbl_refused(&list.zone, refused);
    Symbol::new(
        format!("{}_REFUSED", list.symbol),
        0.0,
        "The blocklist refused to answer Kala's resolver",
    )
    .with_detail(format!("{} answered {refused}", list.zone))
}

fn is_refusal(address: Ipv4Addr) -> bool {
    let [a, b, c, _] = address.octets();
    (a, b, c) == (127, 255, 255)
}

/// An IPv4 client seen through an IPv6 socket (`::ffff:192.0.2.1`) is looked up as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

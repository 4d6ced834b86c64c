//! DNS for the reputation checks: one resolver (with its TTL-honouring cache) shared by the
//! blocklist lookups and SPF/DKIM/DMARC, pointed at the servers the admin configured.
//!
//! Blocklists answer public resolvers with "refused" codes, so a local recursive resolver is
//! what `dns.servers` should name (see the README).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::proto::rr::{RData, RecordType};
use mail_auth::MessageAuthenticator;

use crate::config::DnsSettings;

/// What one blocklist-style lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The name exists: its A records.
    Listed(Vec<Ipv4Addr>),
    /// NXDOMAIN or no A record: not listed.
    NotListed,
}

/// Why a lookup gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Failed(String),
}

/// The shared resolver. Cheap to clone.
#[derive(Clone)]
pub struct Dns {
    authenticator: MessageAuthenticator,
    timeout: Duration,
}

impl Dns {
    /// A resolver for `settings.servers`, or the system's (`/etc/resolv.conf`) when none.
    pub fn new(settings: &DnsSettings) -> anyhow::Result<Dns> {
        let mut options = ResolverOpts::default();
        options.timeout = settings.timeout;
        // One try: the checks have their own deadline, and a retry would only blow it.
        options.attempts = 1;
        options.cache_size = settings.cache_size;
        let config = if settings.servers.is_empty() {
            let (config, _) = hickory_resolver::system_conf::read_system_conf().map_err(|e| {
                anyhow::anyhow!(
                    "cannot read the system's resolver configuration ({e}); set dns.servers"
                )
            })?;
            config
        } else {
            ResolverConfig::from_name_servers(settings.servers.iter().map(name_server).collect())
        };
        let authenticator = MessageAuthenticator::new(config, options)
            .map_err(|e| anyhow::anyhow!("dns.servers: cannot build a resolver: {e}"))?;
        Ok(Dns {
            authenticator,
            timeout: settings.timeout,
        })
    }

    /// For SPF, DKIM, DMARC and ARC (mail-auth drives the same resolver).
    pub fn authenticator(&self) -> &MessageAuthenticator {
        &self.authenticator
    }

    /// The bound on one lookup.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Looks up the A records of `name` (a blocklist query), within the configured timeout.
    pub async fn lookup_a(&self, name: &str) -> Result<Answer, LookupError> {
        let started = std::time::Instant::now();
        let result = self.lookup_a_timed(name).await;
        crate::metrics::metrics().dns_lookup(started.elapsed(), result.is_err());
        result
    }

    async fn lookup_a_timed(&self, name: &str) -> Result<Answer, LookupError> {
        let lookup = self.authenticator.resolver().lookup(name, RecordType::A);
        match tokio::time::timeout(self.timeout, lookup).await {
            Err(_) => Err(LookupError::Timeout(self.timeout)),
            Ok(Ok(found)) => {
                let addresses: Vec<Ipv4Addr> = found
                    .answers()
                    .iter()
                    .filter_map(|record| match &record.data {
                        RData::A(a) => Some(a.0),
                        _ => None,
                    })
                    .collect();
                if addresses.is_empty() {
                    Ok(Answer::NotListed)
                } else {
                    Ok(Answer::Listed(addresses))
                }
            }
            Ok(Err(e)) if e.is_no_records_found() => Ok(Answer::NotListed),
            Ok(Err(e)) if e.to_string().contains("timed out") => {
                Err(LookupError::Timeout(self.timeout))
            }
            Ok(Err(e)) => Err(LookupError::Failed(e.to_string())),
        }
    }

    /// The client's host name, forward-confirmed: the first name its address's PTR record
    /// gives, if that name's A/AAAA records hold the address again (anyone can write any
    /// name into the PTR of their own addresses). `None` when there is none, it does not
    /// confirm, or DNS does not answer within the timeout. The name has no trailing dot.
    pub async fn client_name(&self, ip: IpAddr) -> Option<String> {
        // An IPv4 client seen through an IPv6 socket (`::ffff:192.0.2.1`) has an IPv4 name.
        let ip = ip.to_canonical();
        let zone = match ip {
            IpAddr::V4(_) => "in-addr.arpa",
            IpAddr::V6(_) => "ip6.arpa",
        };
        let resolver = self.authenticator.resolver();
        let confirmed = async {
            let found = resolver
                .reverse_lookup(reversed_name(ip, zone))
                .await
                .ok()?;
            let name = found
                .answers()
                .iter()
                .find_map(|record| match &record.data {
                    RData::PTR(ptr) => Some(ptr.0.clone()),
                    _ => None,
                })?;
            let addresses = resolver.lookup_ip(name.clone()).await.ok()?;
            addresses
                .iter()
                .any(|a| a == ip)
                .then(|| name.to_string().trim_end_matches('.').to_ascii_lowercase())
        };
        tokio::time::timeout(self.timeout, confirmed)
            .await
            .ok()
            .flatten()
    }
}

/// UDP with TCP for truncated answers, on the given port.
fn name_server(address: &SocketAddr) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = address.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = address.port();
    NameServerConfig::new(address.ip(), true, vec![udp, tcp])
}

/// The name to query for `ip` in a DNSBL `zone`: reversed octets for IPv4, reversed nibbles
/// for IPv6 (RFC 5782 §2.1 and §2.4).
pub fn reversed_name(ip: IpAddr, zone: &str) -> String {
    let zone = zone.trim_end_matches('.');
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.{zone}.")
        }
        IpAddr::V6(v6) => {
            let mut name = String::with_capacity(64 + zone.len() + 1);
            for byte in v6.octets().iter().rev() {
                name.push(hex_digit(byte & 0x0f));
                name.push('.');
                name.push(hex_digit(byte >> 4));
                name.push('.');
            }
            name.push_str(zone);
            name.push('.');
            name
        }
    }
}

fn hex_digit(nibble: u8) -> char {
    char::from_digit(nibble as u32, 16).unwrap_or('0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_is_reversed_by_octet() {
        let ip: IpAddr = "192.0.2.99".parse().unwrap();
        assert_eq!(reversed_name(ip, "bl.example"), "99.2.0.192.bl.example.");
    }

    #[test]
    fn ipv6_is_reversed_by_nibble() {
        // RFC 5782 §2.4's own example.
        let ip: IpAddr = "2001:db8:1:2:3:4:567:89ab".parse().unwrap();
        assert_eq!(
            reversed_name(ip, "ugly.example.com."),
            "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ugly.example.com."
        );
    }
}

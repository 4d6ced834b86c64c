//! The SMTP front door: listener, per-connection sessions, TLS, replies and the downstream relay.
//!
//! [`listener`] accepts and enforces connection limits; [`session`] runs one connection's
//! dialogue; [`data`] decodes DATA safely; [`spool`] keeps the bytes; [`rewrite`] builds the
//! header block that is relayed; [`relay`] talks to the downstream.

pub mod data;
pub mod listener;
pub mod relay;
pub mod reply;
pub mod rewrite;
pub mod session;
pub mod spool;
pub mod tls;

use std::path::PathBuf;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::checks::Pipeline;
use crate::config::Settings;
use crate::quarantine::Quarantine;

pub use listener::{RunningServer, start};

/// A byte stream a session or relay connection runs over: TCP, TLS over TCP, or a test duplex.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What every session shares: settings, checks, the downstream pool, the quarantine.
pub struct Shared {
    pub settings: Settings,
    pub pipeline: Pipeline,
    pub downstream: relay::Downstream,
    pub quarantine: Quarantine,
    /// Per-hour counts for the dashboard.
    pub activity: crate::activity::Activity,
    /// Standing problems (a blocklist refusing our resolver), for the dashboard.
    pub health: std::sync::Arc<crate::health::Health>,
    /// The rule set's reloads, versions and rollbacks.
    pub rulesets: std::sync::Arc<crate::ruleset::RuleSets>,
    /// The learned classifier, for autolearning after a verdict.
    pub bayes: Option<std::sync::Arc<crate::bayes::Model>>,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Where spools larger than `smtp.memory_spool_size` go.
    pub tmp_dir: PathBuf,
    /// The resolver for clients' host names (`smtp.reverse_dns`).
    pub client_names: Option<crate::dns::Dns>,
}

impl Shared {
    /// Builds everything a session needs; fails with a message an admin can act on.
    pub async fn new(settings: Settings) -> anyhow::Result<Shared> {
        use anyhow::Context as _;
        let tmp_dir = settings.data_dir.join("tmp");
        std::fs::create_dir_all(&tmp_dir)
            .with_context(|| format!("cannot create {} (data_dir)", tmp_dir.display()))?;
        let store = crate::store::Store::open(&settings.store.url).await?;
        let mut pipeline = Pipeline::new(&settings);
        let rulesets = std::sync::Arc::new(crate::ruleset::RuleSets::new(
            pipeline.rules().clone(),
            settings.rules.clone(),
            store.clone(),
        ));
        rulesets.start().await?;
        let lists = std::sync::Arc::new(crate::checks::SenderLists::new(
            store.clone(),
            settings.lists.clone(),
        ));
        pipeline.add_check(lists.clone());
        let mut live_feeds = None;
        if settings.feeds.enabled {
            let feeds = std::sync::Arc::new(crate::feeds::Feeds::open(
                &settings.feeds.dir,
                &settings.data_dir.join("feeds-cache"),
            ));
            feeds.watch(settings.feeds.reload_every);
            live_feeds = Some(feeds.clone());
            pipeline.add_check(std::sync::Arc::new(crate::checks::FeedLists::new(
                feeds,
                settings.feeds.score,
            )));
        }
        if let Some(file) = &settings.file {
            rulesets.follow_config(crate::ruleset::LiveConfig {
                file: file.clone(),
                policy: pipeline.live_policy(),
                lists: lists.clone(),
                feeds: live_feeds,
            });
        }
        let health = std::sync::Arc::new(crate::health::Health::default());
        let dns = add_reputation_checks(&mut pipeline, &settings, &health, &store, lists).await?;
        let client_names = dns.filter(|_| settings.smtp.reverse_dns);
        let mut quarantine = Quarantine::new(store.clone(), settings.quarantine.retention);
        let mut bayes = None;
        if settings.bayes.enabled {
            let model = crate::bayes::open_model(&settings, &store).await?;
            if let Some(warning) = model.tokenizer_warning().await? {
                tracing::warn!("{warning}");
            }
            pipeline.add_check(std::sync::Arc::new(crate::checks::Bayes::new(
                model.clone(),
            )));
            crate::bayes::spawn_expiry(model.clone(), settings.bayes.expire_after);
            quarantine = quarantine.with_bayes(model.clone());
            bayes = Some(model);
        }
        let tls = if settings.smtp.tls.enabled {
            let config = tls::server_config(
                &settings.smtp.tls,
                &settings.data_dir,
                &settings.smtp.hostname,
            )?;
            Some(tokio_rustls::TlsAcceptor::from(config))
        } else {
            None
        };
        Ok(Shared {
            pipeline,
            downstream: relay::Downstream::new(&settings.downstream)?,
            quarantine,
            activity: Default::default(),
            health,
            rulesets,
            bayes,
            tls,
            tmp_dir,
            client_names,
            settings,
        })
    }
}

/// The checks that ask DNS: blocklists at connect, SPF/DKIM/DMARC/ARC at DATA. Not part of
/// `Pipeline::new`, so offline scans (`kala scan`, `kala eval`) never wait on the network.
/// Returns the resolver, when anything needs one (`smtp.reverse_dns` does too).
async fn add_reputation_checks(
    pipeline: &mut Pipeline,
    settings: &Settings,
    health: &std::sync::Arc<crate::health::Health>,
    store: &crate::store::Store,
    lists: std::sync::Arc<crate::checks::SenderLists>,
) -> anyhow::Result<Option<crate::dns::Dns>> {
    use crate::store::state::{GreylistState, MemoryCounters, RateCounters};
    use std::sync::Arc;
    let rates = &settings.ratelimit;
    let limits_rates = rates.client.is_some() || rates.sender.is_some();
    let (greylist_state, counters): (Arc<dyn GreylistState>, Arc<dyn RateCounters>) =
        match &settings.state.redis {
            Some(url) if settings.greylist.enabled || limits_rates => {
                let redis = Arc::new(crate::store::redis::RedisState::connect(url).await?);
                (redis.clone(), redis)
            }
            _ => (Arc::new(store.clone()), Arc::new(MemoryCounters::default())),
        };
    if limits_rates {
        pipeline.add_check(Arc::new(crate::checks::RateLimit::new(
            counters,
            rates.clone(),
        )));
    }
    let needs_dns = settings.smtp.reverse_dns
        || !settings.dnsbl.lists.is_empty()
        || !settings.uribl.lists.is_empty()
        || settings.auth.enabled
        || (settings.greylist.enabled && settings.greylist.skip_spf_pass);
    let dns = if needs_dns {
        Some(crate::dns::Dns::new(&settings.dns)?)
    } else {
        None
    };
    if settings.greylist.enabled {
        pipeline.add_check(Arc::new(crate::checks::Greylist::new(
            greylist_state.clone(),
            settings.greylist.clone(),
            lists,
            dns.clone(),
        )));
        spawn_greylist_purge(greylist_state);
    }
    let Some(dns) = dns else {
        return Ok(None);
    };
    if !settings.dnsbl.lists.is_empty() {
        pipeline.add_check(Arc::new(crate::checks::Dnsbl::new(
            dns.clone(),
            settings.dnsbl.clone(),
            health.clone(),
        )));
    }
    if !settings.uribl.lists.is_empty() {
        pipeline.add_check(Arc::new(crate::checks::Uribl::new(
            dns.clone(),
            settings.uribl.clone(),
            health.clone(),
        )));
    }
    if settings.auth.enabled {
        pipeline.add_check(Arc::new(crate::checks::Authentication::new(
            dns.clone(),
            settings.smtp.hostname.clone(),
        )));
    }
    Ok(Some(dns))
}

/// Forgets expired greylisting entries once an hour (Redis expires its own keys).
fn spawn_greylist_purge(state: std::sync::Arc<dyn crate::store::state::GreylistState>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
        loop {
            tick.tick().await;
            if let Err(e) = state.grey_purge(crate::store::now()).await {
                tracing::warn!(error = %e, "greylist purge failed");
            }
        }
    });
}

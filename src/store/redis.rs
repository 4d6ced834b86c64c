//! Greylisting entries and rate counters in Redis, for several gateways that must agree on
//! them (`state.redis`). Every key carries its own expiry, so Redis forgets on its own.

use async_trait::async_trait;
use redis::aio::ConnectionManager;

use super::state::{GreyEntry, GreylistState, RateCounters};

/// Keys are prefixed so one Redis database can serve other programs too.
const PREFIX: &str = "kala:";

#[derive(Clone)]
pub struct RedisState {
    connection: ConnectionManager,
}

impl RedisState {
    /// Connects to `url` (`redis://HOST:PORT/DB`); reconnects on its own later.
    pub async fn connect(url: &str) -> anyhow::Result<RedisState> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("state.redis `{}`: {e}", super::redact(url)))?;
        let connection = client.get_connection_manager().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach Redis at `{}` ({e}); is redis-server running?",
                super::redact(url)
            )
        })?;
        Ok(RedisState { connection })
    }
}

#[async_trait]
impl GreylistState for RedisState {
    async fn grey_get(&self, key: &str, _now: u64) -> anyhow::Result<Option<GreyEntry>> {
        let mut c = self.connection.clone();
        let value: Option<String> = redis::cmd("GET")
            .arg(format!("{PREFIX}grey:{key}"))
            .query_async(&mut c)
            .await?;
        Ok(value.and_then(|v| {
            let (first_seen, passed) = v.split_once(':')?;
            Some(GreyEntry {
                first_seen: first_seen.parse().ok()?,
                passed: passed == "1",
            })
        }))
    }

    async fn grey_put(&self, key: &str, entry: GreyEntry, expires_at: u64) -> anyhow::Result<()> {
        let mut c = self.connection.clone();
        let value = format!("{}:{}", entry.first_seen, entry.passed as u8);
        let _: () = redis::cmd("SET")
            .arg(format!("{PREFIX}grey:{key}"))
            .arg(value)
            .arg("EXAT")
            .arg(expires_at)
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    async fn grey_purge(&self, _now: u64) -> anyhow::Result<u64> {
        // Keys expire by themselves.
        Ok(0)
    }
}

#[async_trait]
impl RateCounters for RedisState {
    async fn count(&self, key: &str, window: u64, now: u64) -> anyhow::Result<u64> {
        let window = window.max(1);
        let start = now - now % window;
        let redis_key = format!("{PREFIX}rate:{key}:{start}");
        let mut c = self.connection.clone();
        let (count, _): (u64, i64) = redis::pipe()
            .atomic()
            .incr(&redis_key, 1)
            .expire(&redis_key, (window * 2) as i64)
            .query_async(&mut c)
            .await?;
        Ok(count)
    }
}

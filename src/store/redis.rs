//! Greylisting entries, rate counters and Bayes token counts in Redis, for several gateways that must agree on
//! them (`state.redis`). Every key carries its own expiry, so Redis forgets on its own.

use async_trait::async_trait;
use redis::aio::ConnectionManager;

use super::bayes::{Learned, Lesson, TokenStore, deltas};
use super::state::{GreyEntry, GreylistState, RateCounters};
use crate::bayes::{TokenCounts, Totals};

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

/// Bayes counts in Redis: a hash per token (`s`, `h`) that expires `token_ttl` after the last
/// lesson touching it, a key per learned digest, and one hash of totals.
#[derive(Clone)]
pub struct RedisTokens {
    state: RedisState,
    token_ttl: u64,
}

impl RedisTokens {
    /// Tokens no lesson touched for `token_ttl` seconds expire; digests live twice as long.
    pub fn new(state: RedisState, token_ttl: u64) -> RedisTokens {
        RedisTokens {
            state,
            token_ttl: token_ttl.max(1),
        }
    }
}

fn token_key(token: u64) -> String {
    format!("{PREFIX}bayes:t:{token:016x}")
}

/// Under [`PREFIX`], like every key.
const TOTALS_KEY: &str = "kala:bayes:totals";

#[async_trait]
impl TokenStore for RedisTokens {
    async fn totals(&self) -> anyhow::Result<Totals> {
        let mut c = self.state.connection.clone();
        let (spam, ham): (Option<i64>, Option<i64>) = redis::cmd("HMGET")
            .arg(TOTALS_KEY)
            .arg("s")
            .arg("h")
            .query_async(&mut c)
            .await?;
        Ok(Totals {
            spam: spam.unwrap_or(0).max(0) as u64,
            ham: ham.unwrap_or(0).max(0) as u64,
        })
    }

    async fn counts(&self, tokens: &[u64]) -> anyhow::Result<Vec<TokenCounts>> {
        let mut pipe = redis::pipe();
        for token in tokens {
            pipe.cmd("HMGET").arg(token_key(*token)).arg("s").arg("h");
        }
        let mut c = self.state.connection.clone();
        let rows: Vec<(Option<i64>, Option<i64>)> = pipe.query_async(&mut c).await?;
        Ok(rows
            .into_iter()
            .map(|(spam, ham)| TokenCounts {
                spam: spam.unwrap_or(0).max(0) as u64,
                ham: ham.unwrap_or(0).max(0) as u64,
            })
            .collect())
    }

    async fn learn(&self, lessons: &[Lesson], _now: u64) -> anyhow::Result<Vec<Learned>> {
        let mut outcomes = Vec::with_capacity(lessons.len());
        let mut c = self.state.connection.clone();
        for lesson in lessons {
            let class = if lesson.spam { "s" } else { "h" };
            // SET … GET swaps in one step: of several nodes learning one message at once,
            // exactly one finds no earlier class.
            let before: Option<String> = redis::cmd("SET")
                .arg(format!("{PREFIX}bayes:seen:{}", lesson.digest))
                .arg(class)
                .arg("GET")
                .arg("EX")
                .arg(self.token_ttl * 2)
                .query_async(&mut c)
                .await?;
            let outcome = Learned::given(before.map(|was| was == "s"), lesson.spam);
            outcomes.push(outcome);
            if outcome == Learned::AlreadyKnown {
                continue;
            }
            let (spam, ham) = deltas(lesson.spam, outcome == Learned::Relearned);
            let mut pipe = redis::pipe();
            pipe.atomic();
            for token in &lesson.tokens {
                let key = token_key(*token);
                if spam != 0 {
                    pipe.hincr(&key, "s", spam).ignore();
                }
                if ham != 0 {
                    pipe.hincr(&key, "h", ham).ignore();
                }
                pipe.expire(&key, self.token_ttl as i64).ignore();
            }
            if spam != 0 {
                pipe.hincr(TOTALS_KEY, "s", spam).ignore();
            }
            if ham != 0 {
                pipe.hincr(TOTALS_KEY, "h", ham).ignore();
            }
            let _: () = pipe.query_async(&mut c).await?;
        }
        Ok(outcomes)
    }

    async fn expire(&self, _cutoff: u64) -> anyhow::Result<u64> {
        // Token keys expire by themselves.
        Ok(0)
    }

    async fn tokenizer(&self) -> anyhow::Result<u32> {
        let mut c = self.state.connection.clone();
        let version: Option<u32> = redis::cmd("HGET")
            .arg(TOTALS_KEY)
            .arg("v")
            .query_async(&mut c)
            .await?;
        Ok(version.unwrap_or(0))
    }

    async fn set_tokenizer(&self, version: u32) -> anyhow::Result<()> {
        let mut c = self.state.connection.clone();
        let _: () = redis::cmd("HSET")
            .arg(TOTALS_KEY)
            .arg("v")
            .arg(version)
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    async fn reset(&self) -> anyhow::Result<u64> {
        // SCAN, not KEYS: a large model must not block the server that other gateways use.
        let mut c = self.state.connection.clone();
        let pattern = format!("{PREFIX}bayes:*");
        let token_prefix = format!("{PREFIX}bayes:t:");
        let (mut cursor, mut tokens) = (0u64, 0u64);
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut c)
                .await?;
            // SCAN may return a key twice: count what UNLINK removed, not what SCAN listed.
            let (token_keys, other_keys): (Vec<String>, Vec<String>) =
                keys.into_iter().partition(|k| k.starts_with(&token_prefix));
            if !token_keys.is_empty() {
                let removed: u64 = redis::cmd("UNLINK")
                    .arg(&token_keys)
                    .query_async(&mut c)
                    .await?;
                tokens += removed;
            }
            if !other_keys.is_empty() {
                let _: u64 = redis::cmd("UNLINK")
                    .arg(&other_keys)
                    .query_async(&mut c)
                    .await?;
            }
            if next == 0 {
                return Ok(tokens);
            }
            cursor = next;
        }
    }
}

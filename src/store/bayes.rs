//! The Bayes model's token counts, behind one trait: in the store (SQLite or PostgreSQL) by
//! default, in Redis when several gateways share one model ([`super::redis::RedisState`]),
//! and in memory for training runs ([`crate::bayes::MemoryModel`]).
//!
//! Learning is idempotent: each lesson carries a digest of its message, and a message already
//! learned as the same class changes nothing. Learned as the other class, it is moved over
//! (the reviewer corrected an earlier lesson), as SpamAssassin's `sa-learn` does.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::Row;

use super::Store;
use crate::bayes::{TokenCounts, Totals};

/// One message to learn: its digest, its tokens and its class.
#[derive(Debug, Clone)]
pub struct Lesson {
    pub digest: String,
    pub tokens: Vec<u64>,
    pub spam: bool,
}

/// What learning one message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// Counted for the first time.
    New,
    /// Had been learned as the other class; moved over.
    Relearned,
    /// Had been learned as this class already: nothing changed.
    AlreadyKnown,
}

#[async_trait]
pub trait TokenStore: Send + Sync {
    /// How many messages of each kind the model learned.
    async fn totals(&self) -> anyhow::Result<Totals>;
    /// The counts of `tokens`, in their order; unseen ones are zero.
    async fn counts(&self, tokens: &[u64]) -> anyhow::Result<Vec<TokenCounts>>;
    /// Learns `lessons` (at `now`, unix seconds), each at most once.
    async fn learn(&self, lessons: &[Lesson], now: u64) -> anyhow::Result<Vec<Learned>>;
    /// Forgets tokens no lesson touched since `cutoff`, so the model follows current mail;
    /// returns how many. Totals stay, as in SpamAssassin: they count lessons, not tokens.
    async fn expire(&self, cutoff: u64) -> anyhow::Result<u64>;
    /// Forgets everything: tokens, totals and the digests of learned messages, so the same
    /// mail can be taught again (after a tokenizer change, or to start the model over).
    /// Returns how many tokens were forgotten. The tokenizer version goes back to 0.
    async fn reset(&self) -> anyhow::Result<u64>;
    /// The tokenizer version the model's lessons were tokenized with
    /// ([`crate::bayes::TOKENIZER_VERSION`] when they were learned); 0 when unknown (a model
    /// older than this record, or an empty one).
    async fn tokenizer(&self) -> anyhow::Result<u32>;
    async fn set_tokenizer(&self, version: u32) -> anyhow::Result<()>;
}

impl Learned {
    /// What learning a message as `spam` does, given the class it was learned as before.
    pub fn given(before: Option<bool>, spam: bool) -> Learned {
        match before {
            Some(was_spam) if was_spam == spam => Learned::AlreadyKnown,
            Some(_) => Learned::Relearned,
            None => Learned::New,
        }
    }
}

/// How a class change moves one token's counts: +1 to the new class, -1 from the old one.
pub(crate) fn deltas(spam: bool, relearn: bool) -> (i64, i64) {
    let undo = if relearn { -1 } else { 0 };
    if spam { (1, undo) } else { (undo, 1) }
}

/// Rows per multi-row statement: 4 binds each stays far below SQLite's and PostgreSQL's
/// limits on bound parameters.
const ROWS_PER_STATEMENT: usize = 250;

#[async_trait]
impl TokenStore for Store {
    async fn totals(&self) -> anyhow::Result<Totals> {
        let row = sqlx::query("SELECT spam, ham FROM bayes_totals WHERE id = 1")
            .fetch_one(self.pool())
            .await?;
        Ok(Totals {
            spam: row.try_get::<i64, _>(0)?.max(0) as u64,
            ham: row.try_get::<i64, _>(1)?.max(0) as u64,
        })
    }

    async fn counts(&self, tokens: &[u64]) -> anyhow::Result<Vec<TokenCounts>> {
        let mut found = HashMap::with_capacity(tokens.len());
        for chunk in tokens.chunks(ROWS_PER_STATEMENT * 2) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT token, spam, ham FROM bayes_token WHERE token IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for token in chunk {
                query = query.bind(*token as i64);
            }
            for row in query.fetch_all(self.pool()).await? {
                let counts = TokenCounts {
                    spam: row.try_get::<i64, _>(1)?.max(0) as u64,
                    ham: row.try_get::<i64, _>(2)?.max(0) as u64,
                };
                found.insert(row.try_get::<i64, _>(0)? as u64, counts);
            }
        }
        Ok(tokens
            .iter()
            .map(|t| found.get(t).copied().unwrap_or_default())
            .collect())
    }

    async fn learn(&self, lessons: &[Lesson], now: u64) -> anyhow::Result<Vec<Learned>> {
        let mut tx = self.pool().begin().await?;
        // A write first: concurrent learners queue here (SQLite's write lock, PostgreSQL's row
        // lock), so two nodes learning one message cannot both find it new.
        sqlx::query("UPDATE bayes_totals SET spam = spam WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        let mut outcomes = Vec::with_capacity(lessons.len());
        let (mut spam_total, mut ham_total) = (0i64, 0i64);
        for lesson in lessons {
            let before: Option<i64> =
                sqlx::query_scalar("SELECT spam FROM bayes_seen WHERE digest = $1")
                    .bind(&lesson.digest)
                    .fetch_optional(&mut *tx)
                    .await?;
            let outcome = Learned::given(before.map(|was| was != 0), lesson.spam);
            outcomes.push(outcome);
            if outcome == Learned::AlreadyKnown {
                continue;
            }
            let (spam, ham) = deltas(lesson.spam, outcome == Learned::Relearned);
            spam_total += spam;
            ham_total += ham;
            for chunk in lesson.tokens.chunks(ROWS_PER_STATEMENT) {
                let rows: Vec<String> = (0..chunk.len())
                    .map(|i| {
                        format!(
                            "(${}, ${}, ${}, ${})",
                            4 * i + 1,
                            4 * i + 2,
                            4 * i + 3,
                            4 * i + 4
                        )
                    })
                    .collect();
                let sql = format!(
                    "INSERT INTO bayes_token (token, spam, ham, touched_at) VALUES {} \
                     ON CONFLICT (token) DO UPDATE SET \
                     spam = CASE WHEN bayes_token.spam + excluded.spam < 0 THEN 0 \
                            ELSE bayes_token.spam + excluded.spam END, \
                     ham = CASE WHEN bayes_token.ham + excluded.ham < 0 THEN 0 \
                           ELSE bayes_token.ham + excluded.ham END, \
                     touched_at = excluded.touched_at",
                    rows.join(", ")
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for token in chunk {
                    query = query
                        .bind(*token as i64)
                        .bind(spam)
                        .bind(ham)
                        .bind(now as i64);
                }
                query.execute(&mut *tx).await?;
            }
            sqlx::query(
                "INSERT INTO bayes_seen (digest, spam, learned_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (digest) DO UPDATE SET spam = excluded.spam, \
                 learned_at = excluded.learned_at",
            )
            .bind(&lesson.digest)
            .bind(lesson.spam as i64)
            .bind(now as i64)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE bayes_totals SET spam = spam + $1, ham = ham + $2 WHERE id = 1")
            .bind(spam_total)
            .bind(ham_total)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn expire(&self, cutoff: u64) -> anyhow::Result<u64> {
        let done = sqlx::query("DELETE FROM bayes_token WHERE touched_at < $1")
            .bind(cutoff as i64)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }

    async fn reset(&self) -> anyhow::Result<u64> {
        // One transaction: a lesson learned meanwhile is either wholly kept or wholly gone.
        let mut tx = self.pool().begin().await?;
        sqlx::query("UPDATE bayes_totals SET spam = 0, ham = 0, tokenizer = 0 WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM bayes_seen")
            .execute(&mut *tx)
            .await?;
        let tokens = sqlx::query("DELETE FROM bayes_token")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(tokens.rows_affected())
    }

    async fn tokenizer(&self) -> anyhow::Result<u32> {
        let row = sqlx::query("SELECT tokenizer FROM bayes_totals WHERE id = 1")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get::<i64, _>("tokenizer")?.max(0) as u32)
    }

    async fn set_tokenizer(&self, version: u32) -> anyhow::Result<()> {
        sqlx::query("UPDATE bayes_totals SET tokenizer = $1 WHERE id = 1")
            .bind(i64::from(version))
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lesson(digest: &str, tokens: &[u64], spam: bool) -> Lesson {
        Lesson {
            digest: digest.into(),
            tokens: tokens.to_vec(),
            spam,
        }
    }

    #[tokio::test]
    async fn learning_twice_counts_once_and_a_correction_moves_the_counts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Store::sqlite_url(dir.path())).await.unwrap();
        // Tokens above i64::MAX must survive the signed column.
        let tokens = [1, u64::MAX, 1 << 63];
        let first = store
            .learn(&[lesson("a", &tokens, true)], 10)
            .await
            .unwrap();
        assert_eq!(first, [Learned::New]);
        let again = store
            .learn(&[lesson("a", &tokens, true)], 11)
            .await
            .unwrap();
        assert_eq!(again, [Learned::AlreadyKnown]);
        assert_eq!(store.totals().await.unwrap(), Totals { spam: 1, ham: 0 });
        let counts = store.counts(&[u64::MAX, 7]).await.unwrap();
        assert_eq!(
            counts,
            [TokenCounts { spam: 1, ham: 0 }, TokenCounts::default()]
        );

        let moved = store
            .learn(&[lesson("a", &tokens, false)], 12)
            .await
            .unwrap();
        assert_eq!(moved, [Learned::Relearned]);
        assert_eq!(store.totals().await.unwrap(), Totals { spam: 0, ham: 1 });
        let counts = store.counts(&tokens).await.unwrap();
        assert!(
            counts.iter().all(|c| *c == TokenCounts { spam: 0, ham: 1 }),
            "{counts:?}"
        );
    }

    #[tokio::test]
    async fn tokens_untouched_since_the_cutoff_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Store::sqlite_url(dir.path())).await.unwrap();
        store
            .learn(&[lesson("old", &[1, 2], true)], 100)
            .await
            .unwrap();
        store
            .learn(&[lesson("new", &[2, 3], false)], 200)
            .await
            .unwrap();
        assert_eq!(store.expire(150).await.unwrap(), 1);
        let counts = store.counts(&[1, 2, 3]).await.unwrap();
        assert_eq!(counts[0], TokenCounts::default());
        assert_eq!(counts[1], TokenCounts { spam: 1, ham: 1 });
        assert_eq!(store.totals().await.unwrap(), Totals { spam: 1, ham: 1 });
    }
}

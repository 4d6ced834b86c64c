//! Rule set versions and rule hit counts.
//!
//! Every activation appends a version row (the files zipped, who, when, why); the newest
//! `keep` are kept. Hits are counted per rule per day (UTC), added in batches by the
//! gateway, so the rules pages can draw a month and list the rules that never fire.

use serde::Serialize;
use sqlx::Row;

use super::{Store, now};

/// One activation of a rule set (without its files).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RuleVersion {
    /// Grows with every activation; a rollback makes a new one with the old files.
    pub id: i64,
    pub hash: String,
    pub activated_at: i64,
    /// `startup`, `reload`, `watch`, `cli:USER`, a UI user, `update`.
    pub actor: String,
    pub note: String,
    pub rules: i64,
}

impl RuleVersion {
    /// The hash's first 12 hex digits: enough to tell versions apart on screen.
    pub fn short_hash(&self) -> &str {
        &self.hash[..self.hash.len().min(12)]
    }
}

/// Seconds in a day; hit counts are kept per UTC day.
pub const DAY: u64 = 86_400;

impl Store {
    /// Records an activation and forgets all but the newest `keep` versions.
    pub async fn add_rule_version(
        &self,
        version: &RuleVersion,
        files_zip: &[u8],
        keep: usize,
    ) -> anyhow::Result<i64> {
        let row = sqlx::query(
            "INSERT INTO rule_version (hash, activated_at, actor, note, rules, files) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(&version.hash)
        .bind(version.activated_at)
        .bind(&version.actor)
        .bind(&version.note)
        .bind(version.rules)
        .bind(files_zip)
        .fetch_one(self.pool())
        .await?;
        let id: i64 = row.try_get(0)?;
        sqlx::query(
            "DELETE FROM rule_version WHERE id NOT IN \
             (SELECT id FROM rule_version ORDER BY id DESC LIMIT $1)",
        )
        .bind(keep.max(1) as i64)
        .execute(self.pool())
        .await?;
        Ok(id)
    }

    /// The newest versions first.
    pub async fn rule_versions(&self, limit: u32) -> anyhow::Result<Vec<RuleVersion>> {
        let rows = sqlx::query(
            "SELECT id, hash, activated_at, actor, note, rules FROM rule_version \
             ORDER BY id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(version_row).collect()
    }

    /// One version with its zipped files.
    pub async fn rule_version(&self, id: i64) -> anyhow::Result<Option<(RuleVersion, Vec<u8>)>> {
        let row = sqlx::query(
            "SELECT id, hash, activated_at, actor, note, rules, files FROM rule_version \
             WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        match row {
            Some(row) => Ok(Some((version_row(&row)?, row.try_get(6)?))),
            None => Ok(None),
        }
    }

    /// Adds one batch of hit counts to `day` (a day number: unix seconds / [`DAY`]).
    pub async fn add_rule_hits(&self, day: i64, hits: &[(String, u64)]) -> anyhow::Result<()> {
        let mut tx = self.pool().begin().await?;
        for (rule, count) in hits {
            sqlx::query(
                "INSERT INTO rule_hits (rule, day, hits) VALUES ($1, $2, $3) \
                 ON CONFLICT (rule, day) DO UPDATE SET hits = rule_hits.hits + excluded.hits",
            )
            .bind(rule)
            .bind(day)
            .bind(*count as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Hits per rule since `since_day` (inclusive).
    pub async fn rule_hit_totals(&self, since_day: i64) -> anyhow::Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            // PostgreSQL sums BIGINT to NUMERIC: cast back, so both stores give an i64.
            "SELECT rule, CAST(SUM(hits) AS BIGINT) FROM rule_hits WHERE day >= $1 \
             GROUP BY rule ORDER BY rule",
        )
        .bind(since_day)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    /// One rule's hits per day since `since_day`, oldest first (days without hits left out).
    pub async fn rule_hits(&self, rule: &str, since_day: i64) -> anyhow::Result<Vec<(i64, i64)>> {
        let rows = sqlx::query(
            "SELECT day, hits FROM rule_hits WHERE rule = $1 AND day >= $2 ORDER BY day",
        )
        .bind(rule)
        .bind(since_day)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }
}

/// A relayed message kept for `kala rules try`, with the verdict it got.
#[derive(Debug, Clone)]
pub struct RuleSample {
    pub kept_at: i64,
    pub verdict: crate::verdict::Verdict,
    pub raw: Vec<u8>,
}

impl Store {
    /// Keeps one relayed message, then forgets all but the newest `keep` and those older
    /// than `max_age` seconds.
    pub async fn add_rule_sample(
        &self,
        verdict: &crate::verdict::Verdict,
        raw: &[u8],
        keep: usize,
        max_age: u64,
    ) -> anyhow::Result<()> {
        let at = now() as i64;
        sqlx::query("INSERT INTO rule_sample (kept_at, verdict, raw) VALUES ($1, $2, $3)")
            .bind(at)
            .bind(serde_json::to_string(verdict)?)
            .bind(raw)
            .execute(self.pool())
            .await?;
        sqlx::query(
            "DELETE FROM rule_sample WHERE kept_at < $1 OR id NOT IN \
             (SELECT id FROM rule_sample ORDER BY id DESC LIMIT $2)",
        )
        .bind(at - max_age as i64)
        .bind(keep as i64)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The newest samples first.
    pub async fn rule_samples(&self, limit: u32) -> anyhow::Result<Vec<RuleSample>> {
        let rows =
            sqlx::query("SELECT kept_at, verdict, raw FROM rule_sample ORDER BY id DESC LIMIT $1")
                .bind(i64::from(limit))
                .fetch_all(self.pool())
                .await?;
        rows.iter()
            .map(|row| {
                let verdict: String = row.try_get(1)?;
                Ok(RuleSample {
                    kept_at: row.try_get(0)?,
                    verdict: serde_json::from_str(&verdict)?,
                    raw: row.try_get(2)?,
                })
            })
            .collect()
    }
}

/// Today's day number.
pub fn today() -> i64 {
    (now() / DAY) as i64
}

fn version_row(row: &sqlx::any::AnyRow) -> anyhow::Result<RuleVersion> {
    Ok(RuleVersion {
        id: row.try_get(0)?,
        hash: row.try_get(1)?,
        activated_at: row.try_get(2)?,
        actor: row.try_get(3)?,
        note: row.try_get(4)?,
        rules: row.try_get(5)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Store::sqlite_url(dir.path())).await.unwrap();
        (dir, store)
    }

    fn version(hash: &str) -> RuleVersion {
        RuleVersion {
            id: 0,
            hash: hash.into(),
            activated_at: 1,
            actor: "cli:root".into(),
            note: String::new(),
            rules: 3,
        }
    }

    #[tokio::test]
    async fn versions_are_kept_newest_first_up_to_the_limit() {
        let (_dir, store) = store().await;
        for hash in ["a", "b", "c"] {
            store
                .add_rule_version(&version(hash), hash.as_bytes(), 2)
                .await
                .unwrap();
        }
        let kept = store.rule_versions(10).await.unwrap();
        let hashes: Vec<&str> = kept.iter().map(|v| v.hash.as_str()).collect();
        assert_eq!(hashes, ["c", "b"]);
        let (_, files) = store.rule_version(kept[0].id).await.unwrap().unwrap();
        assert_eq!(files, b"c");
    }

    #[tokio::test]
    async fn hits_add_up_per_day() {
        let (_dir, store) = store().await;
        store.add_rule_hits(10, &[("A".into(), 2)]).await.unwrap();
        store
            .add_rule_hits(10, &[("A".into(), 3), ("B".into(), 1)])
            .await
            .unwrap();
        store.add_rule_hits(12, &[("A".into(), 1)]).await.unwrap();
        assert_eq!(store.rule_hits("A", 0).await.unwrap(), [(10, 5), (12, 1)]);
        assert_eq!(
            store.rule_hit_totals(11).await.unwrap(),
            [("A".to_string(), 1)]
        );
    }
}

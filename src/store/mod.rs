//! Kala's state in a database: SQLite in the data directory by default, PostgreSQL when
//! several gateway nodes share one quarantine.
//!
//! Both run the same SQL through sqlx's `Any` driver (`$1` placeholders work on both), so
//! there is one implementation to test, not two. Only column types differ (a blob is `BLOB` in
//! SQLite, `BYTEA` in PostgreSQL): [`migrations`] fills them in per [`Dialect`].

pub mod audit;
pub mod bayes;
pub mod lists;
mod migrations;
pub mod redis;
pub mod rules;
pub mod state;
pub mod tracking;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A connection pool to the state database, migrated to the schema this build expects.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
}

/// Connections per pool. SQLite writes one at a time anyway; readers (the UI, the CLI) run
/// beside the writer thanks to WAL.
const MAX_CONNECTIONS: u32 = 8;

impl Store {
    /// The embedded default: `kala.db` in `data_dir`.
    pub fn sqlite_url(data_dir: &Path) -> String {
        format!("sqlite://{}?mode=rwc", data_dir.join("kala.db").display())
    }

    /// Opens (creating if needed) the database at `url` (`sqlite://PATH` or
    /// `postgres://USER:PASSWORD@HOST/DB`) and applies pending migrations.
    pub async fn open(url: &str) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Dialect::Postgres
        } else {
            anyhow::bail!(
                "store URL `{}` is neither sqlite://PATH nor postgres://USER@HOST/DATABASE",
                redact(url)
            );
        };
        if dialect == Dialect::Sqlite
            && let Some(parent) = Path::new(sqlite_path(url)).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let options = AnyConnectOptions::from_str(url)
            .with_context(|| format!("store URL `{}` does not parse", redact(url)))?;
        let pool = AnyPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        // WAL: readers never block the writer. synchronous=FULL: a commit is
                        // on disk (fsync'd) before it returns, which the 250 after a
                        // quarantine hold relies on. busy_timeout: writers queue, not fail.
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                             PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .with_context(|| format!("cannot open the store at {}", redact(url)))?;
        let store = Store { pool, dialect };
        migrations::apply(&store)
            .await
            .with_context(|| format!("cannot migrate the store at {}", redact(url)))?;
        Ok(store)
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Runs a trivial write, for health checks: the store is reachable and writable.
    pub async fn check_writable(&self) -> anyhow::Result<()> {
        sqlx::query("UPDATE kala_schema SET checked_at = $1")
            .bind(crate::store::now() as i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The database file of a `sqlite:` URL.
pub fn sqlite_file(url: &str) -> Option<&Path> {
    url.starts_with("sqlite:")
        .then(|| Path::new(sqlite_path(url)))
}

fn sqlite_path(url: &str) -> &str {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    path.split('?').next().unwrap_or(path)
}

/// `url` without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://kala:s3cret@db.example/kala"),
            "postgres://kala:***@db.example/kala"
        );
        assert_eq!(
            redact("sqlite:///var/lib/kala/kala.db"),
            "sqlite:///var/lib/kala/kala.db"
        );
    }

    #[tokio::test]
    async fn sqlite_store_opens_migrates_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let url = Store::sqlite_url(&dir.path().join("sub"));
        let store = Store::open(&url).await.unwrap();
        store.check_writable().await.unwrap();
        let mode: (String,) = sqlx::query_as("PRAGMA journal_mode")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(mode.0, "wal");
        drop(store);
        // A second open finds the schema current and changes nothing.
        let store = Store::open(&url).await.unwrap();
        store.check_writable().await.unwrap();
    }

    #[tokio::test]
    async fn an_unknown_url_scheme_says_what_is_expected() {
        let error = Store::open("mysql://x@y/z").await.err().unwrap();
        assert!(error.to_string().contains("sqlite://PATH"), "{error}");
    }
}

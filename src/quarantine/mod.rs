//! Holding messages for review, and what reviewers do with them: list, show, release, delete,
//! mark, and expiry.
//!
//! A held message is one row in the store (envelope, headers of interest, score, category,
//! state, and the whole verdict as JSON with every symbol's description) plus its raw bytes,
//! gzip-compressed, in a table of their own so listing never reads a body. Bodies live in the
//! database rather than in files so that a hold is one transaction (no orphan file, no row
//! without its message), one backup holds everything, and nodes sharing a PostgreSQL store
//! share the quarantine too.
//!
//! Kala answers 250 for a quarantined message only after [`Quarantine::hold`] returned, which
//! is after the commit: SQLite runs with `synchronous = FULL` (the WAL is fsync'd at commit),
//! PostgreSQL commits durably by default.

mod release;

use std::fmt;
use std::io::{Read, Write};
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
// Dynamic SQL here is assembled from constants and `$n` placeholders only; every value a user
// typed is bound.
use sqlx::{AssertSqlSafe, Row};

pub use self::release::Released;
use crate::envelope::Envelope;
use crate::store::{Dialect, Store, now};
use crate::verdict::{Symbol, Verdict};

/// What is kept beside each held message, as JSON.
#[derive(Debug, Serialize)]
pub struct HoldRecord<'a> {
    pub envelope: &'a Envelope,
    pub verdict: &'a Verdict,
}

/// Why a message was held; retention and filters go by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Spam,
    Virus,
    /// A banned attachment or archive content.
    Banned,
    /// Held by a policy rather than a finding: unscannable, too large, encrypted.
    Policy,
}

impl Category {
    pub const ALL: [Category; 4] = [
        Category::Spam,
        Category::Virus,
        Category::Banned,
        Category::Policy,
    ];

    /// The category of a verdict: the symbol that forced the action decides; a score alone
    /// means spam.
    pub fn of(verdict: &Verdict) -> Category {
        let Some(forced) = verdict.forced_by.as_deref() else {
            return Category::Spam;
        };
        match forced {
            "VIRUS" => Category::Virus,
            name if name.starts_with("ATTACHMENT_")
                || name == "ARCHIVE_BANNED_ENTRY"
                || name == "OFFICE_MACRO" =>
            {
                Category::Banned
            }
            _ => Category::Policy,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Spam => "spam",
            Category::Virus => "virus",
            Category::Banned => "banned",
            Category::Policy => "policy",
        }
    }
}

impl FromStr for Category {
    type Err = String;
    fn from_str(s: &str) -> Result<Category, String> {
        Category::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a category (spam, virus, banned, policy)"))
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a held message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Held,
    Released,
    /// Deleted by a reviewer: the body is gone, the row stays (for the record) until expiry.
    Deleted,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Held => "held",
            State::Released => "released",
            State::Deleted => "deleted",
        }
    }

    fn parse(s: &str) -> State {
        match s {
            "released" => State::Released,
            "deleted" => State::Deleted,
            _ => State::Held,
        }
    }
}

/// A reviewer's judgement, kept for the learning issue to feed to Bayes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mark {
    Spam,
    Ham,
}

impl Mark {
    pub fn as_str(self) -> &'static str {
        match self {
            Mark::Spam => "spam",
            Mark::Ham => "ham",
        }
    }
}

/// How long each category is kept (then purged, body and row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub spam: Duration,
    pub virus: Duration,
    pub banned: Duration,
    pub policy: Duration,
}

impl Default for Retention {
    fn default() -> Retention {
        const DAY: u64 = 24 * 60 * 60;
        Retention {
            spam: Duration::from_secs(30 * DAY),
            virus: Duration::from_secs(90 * DAY),
            banned: Duration::from_secs(30 * DAY),
            policy: Duration::from_secs(30 * DAY),
        }
    }
}

impl Retention {
    pub fn of(&self, category: Category) -> Duration {
        match category {
            Category::Spam => self.spam,
            Category::Virus => self.virus,
            Category::Banned => self.banned,
            Category::Policy => self.policy,
        }
    }
}

/// The headers a reviewer searches and sees in the list, taken from the parsed message.
#[derive(Debug, Clone, Default)]
pub struct Headline {
    pub subject: String,
    pub from: String,
    pub message_id: String,
}

impl Headline {
    pub fn of(message: &crate::message::Message) -> Headline {
        let get = |name: &str| message.header(name).unwrap_or("").trim().to_string();
        Headline {
            subject: get("subject"),
            from: get("from"),
            message_id: get("message-id"),
        }
    }
}

/// One row of the quarantine list.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub id: String,
    /// Unix seconds.
    pub received_at: i64,
    pub category: Category,
    pub state: State,
    pub sender: String,
    pub recipients: Vec<String>,
    pub subject: String,
    pub score: f64,
    pub size: i64,
    pub client_ip: String,
    /// Symbol names, highest score first.
    pub symbols: Vec<String>,
    /// `spam`, `ham`, or empty.
    pub mark: String,
}

/// Everything about one held message but its body.
#[derive(Debug, Clone, Serialize)]
pub struct Held {
    #[serde(flatten)]
    pub summary: Summary,
    pub from: String,
    pub message_id: String,
    pub expires_at: i64,
    /// Every symbol with its score, description and detail.
    pub verdict: Verdict,
    /// The downstream's last reply to a release (or the error), if one was tried.
    pub downstream_reply: String,
    pub changed_at: i64,
}

/// List order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Sort {
    #[default]
    Newest,
    Oldest,
    HighestScore,
    LowestScore,
}

impl FromStr for Sort {
    type Err = String;
    fn from_str(s: &str) -> Result<Sort, String> {
        match s {
            "newest" => Ok(Sort::Newest),
            "oldest" => Ok(Sort::Oldest),
            "score" | "highest" => Ok(Sort::HighestScore),
            "lowest" => Ok(Sort::LowestScore),
            _ => Err(format!(
                "`{s}` is not an order (newest, oldest, score, lowest)"
            )),
        }
    }
}

/// What to list. Every field narrows; the default lists held messages, newest first.
#[derive(Debug, Clone)]
pub struct Filter {
    /// `None`: every state.
    pub state: Option<State>,
    pub category: Option<Category>,
    /// Unix seconds, inclusive.
    pub since: Option<i64>,
    /// Unix seconds, exclusive.
    pub until: Option<i64>,
    /// Substring of the envelope sender (case-insensitive).
    pub sender: Option<String>,
    /// Substring of one envelope recipient (case-insensitive).
    pub recipient: Option<String>,
    /// Each word must appear in the subject (case-insensitive).
    pub subject: Option<String>,
    pub min_score: Option<f64>,
    pub max_score: Option<f64>,
    /// Exact symbol name.
    pub symbol: Option<String>,
    pub sort: Sort,
    pub limit: u32,
    pub offset: u32,
}

impl Default for Filter {
    fn default() -> Filter {
        Filter {
            state: Some(State::Held),
            category: None,
            since: None,
            until: None,
            sender: None,
            recipient: None,
            subject: None,
            min_score: None,
            max_score: None,
            symbol: None,
            sort: Sort::Newest,
            limit: 50,
            offset: 0,
        }
    }
}

/// A page of the list and how many messages match in all.
#[derive(Debug, Serialize)]
pub struct Page {
    pub total: i64,
    pub messages: Vec<Summary>,
}

/// The quarantine on its store.
#[derive(Clone)]
pub struct Quarantine {
    store: Store,
    retention: Retention,
    /// Taught by the reviewers' marks and by releases of held spam.
    bayes: Option<std::sync::Arc<crate::bayes::Model>>,
}

const SUMMARY_COLUMNS: &str = "id, received_at, category, state, sender, recipients, subject, \
     score, size, client_ip, symbols, mark";

impl Quarantine {
    pub fn new(store: Store, retention: Retention) -> Quarantine {
        Quarantine {
            store,
            retention,
            bayes: None,
        }
    }

    /// Lets reviewers' decisions teach `model`: a mark teaches its class, releasing a message
    /// held as spam teaches ham.
    pub fn with_bayes(mut self, model: std::sync::Arc<crate::bayes::Model>) -> Quarantine {
        self.bayes = Some(model);
        self
    }

    /// Teaches the Bayes model the stored message `id` as spam or ham; a message already
    /// learned as that class changes nothing. Returns `None` without a model or a body.
    pub async fn teach(
        &self,
        id: &str,
        spam: bool,
    ) -> anyhow::Result<Option<crate::store::bayes::Learned>> {
        if self.bayes.is_none() {
            return Ok(None);
        }
        let Some(raw) = self.raw(id).await? else {
            return Ok(None);
        };
        self.teach_raw(id, &raw, spam).await
    }

    /// [`Quarantine::teach`] with the stored body already in hand (a release just read it).
    async fn teach_raw(
        &self,
        id: &str,
        raw: &[u8],
        spam: bool,
    ) -> anyhow::Result<Option<crate::store::bayes::Learned>> {
        let Some(model) = &self.bayes else {
            return Ok(None);
        };
        let learned = model.learn_raw(raw, spam).await?;
        tracing::info!(id, spam, ?learned, "quarantined message learned");
        Ok(Some(learned))
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Stores the message (`raw`: exactly the bytes that would have been relayed) with its
    /// record, durably: when this returns `Ok`, the commit is on disk.
    pub async fn hold(
        &self,
        record: &HoldRecord<'_>,
        headline: &Headline,
        raw: Vec<u8>,
    ) -> anyhow::Result<()> {
        let envelope = record.envelope;
        let verdict = record.verdict;
        let category = Category::of(verdict);
        let size = raw.len() as i64;
        let compressed = tokio::task::spawn_blocking(move || compress(&raw))
            .await
            .context("compression task")??;
        let received_at = envelope.received_at as i64;
        let expires_at = received_at + self.retention.of(category).as_secs() as i64;
        let json = serde_json::to_string(record)?;
        let names: Vec<&str> = verdict.symbols.iter().map(|s| s.name.as_str()).collect();

        let mut tx = self.store.pool().begin().await?;
        sqlx::query(
            "INSERT INTO quarantine (id, received_at, expires_at, category, state, sender, \
             recipients, subject, from_header, message_id, score, size, client_ip, symbols, \
             record) VALUES ($1, $2, $3, $4, 'held', $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&envelope.queue_id)
        .bind(received_at)
        .bind(expires_at)
        .bind(category.as_str())
        .bind(&envelope.sender)
        .bind(envelope.recipients.join(", "))
        .bind(&headline.subject)
        .bind(&headline.from)
        .bind(&headline.message_id)
        .bind(verdict.score)
        .bind(size)
        .bind(envelope.client_ip.to_string())
        .bind(names.join(" "))
        .bind(json)
        .execute(&mut *tx)
        .await?;
        for recipient in &envelope.recipients {
            sqlx::query("INSERT INTO quarantine_recipient (held_id, recipient) VALUES ($1, $2)")
                .bind(&envelope.queue_id)
                .bind(recipient.to_lowercase())
                .execute(&mut *tx)
                .await?;
        }
        for symbol in &verdict.symbols {
            sqlx::query("INSERT INTO quarantine_symbol (held_id, name, score) VALUES ($1, $2, $3)")
                .bind(&envelope.queue_id)
                .bind(&symbol.name)
                .bind(symbol.score)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("INSERT INTO quarantine_raw (held_id, raw) VALUES ($1, $2)")
            .bind(&envelope.queue_id)
            .bind(compressed)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// One page of the messages matching `filter`, and how many match in all.
    pub async fn list(&self, filter: &Filter) -> anyhow::Result<Page> {
        let mut clauses: Vec<String> = Vec::new();
        let mut binds: Vec<Bind> = Vec::new();
        let next = |value: Bind, binds: &mut Vec<Bind>| {
            binds.push(value);
            format!("${}", binds.len())
        };
        if let Some(state) = filter.state {
            let p = next(Bind::Text(state.as_str().into()), &mut binds);
            clauses.push(format!("state = {p}"));
        }
        if let Some(category) = filter.category {
            let p = next(Bind::Text(category.as_str().into()), &mut binds);
            clauses.push(format!("category = {p}"));
        }
        if let Some(since) = filter.since {
            let p = next(Bind::Int(since), &mut binds);
            clauses.push(format!("received_at >= {p}"));
        }
        if let Some(until) = filter.until {
            let p = next(Bind::Int(until), &mut binds);
            clauses.push(format!("received_at < {p}"));
        }
        // Case-insensitive substring search. SQLite's LIKE already ignores (ASCII) case;
        // PostgreSQL's needs ILIKE. Neither lower-cases each row, so no index is defeated
        // that a substring search could have used anyway.
        let like = match self.store.dialect() {
            Dialect::Sqlite => "LIKE",
            Dialect::Postgres => "ILIKE",
        };
        if let Some(sender) = filter.sender.as_deref().filter(|s| !s.is_empty()) {
            let p = next(Bind::Text(like_pattern(sender)), &mut binds);
            clauses.push(format!("sender {like} {p} ESCAPE '\\'"));
        }
        if let Some(recipient) = filter.recipient.as_deref().filter(|s| !s.is_empty()) {
            let p = next(Bind::Text(like_pattern(recipient)), &mut binds);
            clauses.push(format!(
                "id IN (SELECT held_id FROM quarantine_recipient WHERE recipient {like} {p} ESCAPE '\\')"
            ));
        }
        if let Some(subject) = filter.subject.as_deref() {
            for word in subject.split_whitespace() {
                let p = next(Bind::Text(like_pattern(word)), &mut binds);
                clauses.push(format!("subject {like} {p} ESCAPE '\\'"));
            }
        }
        if let Some(min) = filter.min_score {
            let p = next(Bind::Real(min), &mut binds);
            clauses.push(format!("score >= {p}"));
        }
        if let Some(max) = filter.max_score {
            let p = next(Bind::Real(max), &mut binds);
            clauses.push(format!("score <= {p}"));
        }
        if let Some(symbol) = filter.symbol.as_deref().filter(|s| !s.is_empty()) {
            let p = next(Bind::Text(symbol.to_string()), &mut binds);
            clauses.push(format!(
                "id IN (SELECT held_id FROM quarantine_symbol WHERE name = {p})"
            ));
        }
        let filter_sql = if clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", clauses.join(" AND "))
        };
        let order = match filter.sort {
            Sort::Newest => "received_at DESC, id DESC",
            Sort::Oldest => "received_at ASC, id ASC",
            Sort::HighestScore => "score DESC, received_at DESC",
            Sort::LowestScore => "score ASC, received_at DESC",
        };
        let count_sql = format!("SELECT COUNT(*) FROM quarantine{filter_sql}");
        let mut count = sqlx::query_scalar::<_, i64>(AssertSqlSafe(count_sql));
        for bind in &binds {
            count = bind.apply_scalar(count);
        }
        let total = count.fetch_one(self.store.pool()).await?;

        let list_sql = format!(
            "SELECT {SUMMARY_COLUMNS} FROM quarantine{filter_sql} ORDER BY {order} LIMIT {} OFFSET {}",
            filter.limit.min(1000),
            filter.offset
        );
        let mut query = sqlx::query(AssertSqlSafe(list_sql));
        for bind in &binds {
            query = bind.apply(query);
        }
        let rows = query.fetch_all(self.store.pool()).await?;
        let messages = rows.iter().map(summary_of).collect::<Result<_, _>>()?;
        Ok(Page { total, messages })
    }

    /// Held messages per category: how many, and their bytes (uncompressed).
    pub async fn held_by_category(&self) -> anyhow::Result<Vec<(Category, i64, i64)>> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT category, COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM quarantine \
             WHERE state = 'held' GROUP BY category",
        )
        .fetch_all(self.store.pool())
        .await?;
        Ok(Category::ALL
            .into_iter()
            .map(|category| {
                let (n, bytes) = rows
                    .iter()
                    .find(|(c, _, _)| c == category.as_str())
                    .map(|(_, n, b)| (*n, *b))
                    .unwrap_or((0, 0));
                (category, n, bytes)
            })
            .collect())
    }

    /// The ids of every message matching `filter`, all pages (its limit and offset ignored):
    /// what a bulk action on a search result acts on.
    pub async fn matching_ids(&self, filter: &Filter) -> anyhow::Result<Vec<String>> {
        let mut filter = Filter {
            limit: 1000,
            offset: 0,
            ..filter.clone()
        };
        let mut ids = Vec::new();
        loop {
            let page = self.list(&filter).await?;
            let n = page.messages.len() as u32;
            ids.extend(page.messages.into_iter().map(|m| m.id));
            if n < filter.limit {
                return Ok(ids);
            }
            filter.offset += n;
        }
    }

    /// One message's details (not its body), or `None` if there is no such id.
    pub async fn get(&self, id: &str) -> anyhow::Result<Option<Held>> {
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS}, from_header, message_id, expires_at, record, \
             downstream_reply, changed_at FROM quarantine WHERE id = $1"
        );
        let Some(row) = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.store.pool())
            .await?
        else {
            return Ok(None);
        };
        let record: serde_json::Value = serde_json::from_str(row.try_get::<&str, _>("record")?)?;
        let verdict: Verdict = serde_json::from_value(record["verdict"].clone())
            .context("the stored verdict does not parse")?;
        Ok(Some(Held {
            summary: summary_of(&row)?,
            from: row.try_get("from_header")?,
            message_id: row.try_get("message_id")?,
            expires_at: row.try_get("expires_at")?,
            verdict,
            downstream_reply: row.try_get("downstream_reply")?,
            changed_at: row.try_get("changed_at")?,
        }))
    }

    /// The stored JSON record (envelope and verdict) of one message.
    pub async fn record(&self, id: &str) -> anyhow::Result<Option<serde_json::Value>> {
        let row: Option<(String,)> = sqlx::query_as("SELECT record FROM quarantine WHERE id = $1")
            .bind(id)
            .fetch_optional(self.store.pool())
            .await?;
        row.map(|(json,)| serde_json::from_str(&json).map_err(Into::into))
            .transpose()
    }

    /// The message exactly as it would have been relayed, or `None` when there is no such id
    /// or it was deleted.
    pub async fn raw(&self, id: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let row: Option<(Vec<u8>,)> =
            sqlx::query_as("SELECT raw FROM quarantine_raw WHERE held_id = $1")
                .bind(id)
                .fetch_optional(self.store.pool())
                .await?;
        match row {
            Some((compressed,)) => {
                let raw = tokio::task::spawn_blocking(move || decompress(&compressed))
                    .await
                    .context("decompression task")??;
                Ok(Some(raw))
            }
            None => Ok(None),
        }
    }

    /// Deletes a message's body and marks it deleted. Returns false when there was nothing
    /// held under that id.
    pub async fn delete(&self, id: &str) -> anyhow::Result<bool> {
        let mut tx = self.store.pool().begin().await?;
        let changed = sqlx::query(
            "UPDATE quarantine SET state = 'deleted', changed_at = $2 WHERE id = $1 AND state <> 'deleted'",
        )
        .bind(id)
        .bind(now() as i64)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM quarantine_raw WHERE held_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(changed > 0)
    }

    /// Records a reviewer's judgement. Returns false when there is no such id.
    pub async fn mark(&self, id: &str, mark: Mark) -> anyhow::Result<bool> {
        let changed = sqlx::query("UPDATE quarantine SET mark = $2, changed_at = $3 WHERE id = $1")
            .bind(id)
            .bind(mark.as_str())
            .bind(now() as i64)
            .execute(self.store.pool())
            .await?
            .rows_affected();
        if changed > 0 {
            self.teach(id, mark == Mark::Spam).await?;
        }
        Ok(changed > 0)
    }

    /// Removes every message (row and body) whose retention ended before `now`. Returns how
    /// many went.
    pub async fn purge_expired(&self, now: u64) -> anyhow::Result<u64> {
        let mut tx = self.store.pool().begin().await?;
        // Children first: PostgreSQL cascades, but SQLite only with foreign_keys on, and an
        // explicit order works on both.
        for table in [
            "quarantine_raw",
            "quarantine_recipient",
            "quarantine_symbol",
        ] {
            sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE held_id IN (SELECT id FROM quarantine WHERE expires_at < $1)"
            )))
            .bind(now as i64)
            .execute(&mut *tx)
            .await?;
        }
        let purged = sqlx::query("DELETE FROM quarantine WHERE expires_at < $1")
            .bind(now as i64)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(purged)
    }

    /// Purges expired messages now and then every `every`, until the process ends.
    pub fn spawn_purge(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let quarantine = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            loop {
                ticks.tick().await;
                match quarantine.purge_expired(now()).await {
                    Ok(0) => {}
                    Ok(purged) => tracing::info!(purged, "expired quarantined messages purged"),
                    Err(error) => tracing::warn!(%error, "quarantine purge failed; retrying later"),
                }
            }
        })
    }
}

/// A value bound to a list query, kept so the same binds serve the count and the page.
enum Bind {
    Text(String),
    Int(i64),
    Real(f64),
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;
type AnyScalar<'q> = sqlx::query::QueryScalar<'q, sqlx::Any, i64, sqlx::any::AnyArguments>;

impl Bind {
    fn apply<'q>(&self, query: AnyQuery<'q>) -> AnyQuery<'q> {
        match self {
            Bind::Text(v) => query.bind(v.clone()),
            Bind::Int(v) => query.bind(*v),
            Bind::Real(v) => query.bind(*v),
        }
    }

    fn apply_scalar<'q>(&self, query: AnyScalar<'q>) -> AnyScalar<'q> {
        match self {
            Bind::Text(v) => query.bind(v.clone()),
            Bind::Int(v) => query.bind(*v),
            Bind::Real(v) => query.bind(*v),
        }
    }
}

/// `%text%` for LIKE, with LIKE's own wildcards escaped.
fn like_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

fn summary_of(row: &sqlx::any::AnyRow) -> anyhow::Result<Summary> {
    let category: String = row.try_get("category")?;
    let recipients: String = row.try_get("recipients")?;
    let symbols: String = row.try_get("symbols")?;
    Ok(Summary {
        id: row.try_get("id")?,
        received_at: row.try_get("received_at")?,
        category: category.parse().unwrap_or(Category::Spam),
        state: State::parse(row.try_get("state")?),
        sender: row.try_get("sender")?,
        recipients: recipients
            .split(", ")
            .filter(|r| !r.is_empty())
            .map(String::from)
            .collect(),
        subject: row.try_get("subject")?,
        score: row.try_get("score")?,
        size: row.try_get("size")?,
        client_ip: row.try_get("client_ip")?,
        symbols: symbols.split_whitespace().map(String::from).collect(),
        mark: row.try_get("mark")?,
    })
}

fn compress(raw: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(raw.len() / 3),
        flate2::Compression::default(),
    );
    encoder.write_all(raw)?;
    encoder.finish()
}

fn decompress(compressed: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::with_capacity(compressed.len() * 3);
    flate2::read::GzDecoder::new(compressed).read_to_end(&mut raw)?;
    Ok(raw)
}

/// The symbols of a verdict as `NAME (score)`, for one-line displays.
pub fn symbol_line(symbols: &[Symbol]) -> String {
    symbols
        .iter()
        .map(|s| format!("{} ({:.2})", s.name, s.score))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;

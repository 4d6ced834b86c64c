//! Message tracking: what happened to every message (who sent it from where, to whom, the
//! verdict, what the sender was told, and the downstream's queue reference or the quarantine
//! id), kept `tracking.retention`, so the helpdesk answers "where is the mail from X sent at
//! 10:05" with one search. Never the body.

use serde::Serialize;
use sqlx::Row;

use super::Store;

/// One message's path through Kala.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Tracked {
    pub queue_id: String,
    pub received_at: i64,
    pub client_ip: String,
    pub helo: String,
    pub sender: String,
    pub recipients: Vec<String>,
    pub subject: String,
    pub message_id: String,
    pub size: i64,
    pub score: f64,
    /// Symbol names with scores, highest first.
    pub symbols: String,
    /// accept, tag, quarantine, reject, tempfail.
    pub action: String,
    /// What the sender was told: for a relayed message, Exchange's own reply (with its
    /// queue reference).
    pub reply: String,
    /// The quarantine id when the message was held.
    pub quarantine_id: String,
}

/// A search: every given field narrows.
#[derive(Debug, Clone, Default)]
pub struct TrackQuery {
    /// Substring of the envelope sender (any case).
    pub sender: Option<String>,
    /// Substring of one recipient (any case).
    pub recipient: Option<String>,
    /// Each word must be in the subject (any case).
    pub subject: Option<String>,
    /// Exact Message-ID, with or without the angle brackets.
    pub message_id: Option<String>,
    pub client_ip: Option<String>,
    /// Unix seconds, inclusive.
    pub since: Option<i64>,
    /// Unix seconds, exclusive.
    pub until: Option<i64>,
    pub limit: u32,
}

/// Escapes LIKE's wildcards so a search for `50%_off` finds exactly that.
fn like(text: &str) -> String {
    let escaped = text
        .to_lowercase()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

impl Store {
    pub async fn track(&self, t: &Tracked) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO message_track (queue_id, received_at, client_ip, helo, sender, \
             recipients, subject, message_id, size, score, symbols, action, reply, \
             quarantine_id, sender_lc, recipients_lc, subject_lc) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
             $17) \
             ON CONFLICT (queue_id) DO NOTHING",
        )
        .bind(&t.queue_id)
        .bind(t.received_at)
        .bind(&t.client_ip)
        .bind(&t.helo)
        .bind(&t.sender)
        .bind(t.recipients.join("\n"))
        .bind(&t.subject)
        .bind(&t.message_id)
        .bind(t.size)
        .bind(t.score)
        .bind(&t.symbols)
        .bind(&t.action)
        .bind(&t.reply)
        .bind(&t.quarantine_id)
        // Lower-cased copies for the searches: PostgreSQL's LIKE minds case.
        .bind(t.sender.to_lowercase())
        .bind(t.recipients.join("\n").to_lowercase())
        .bind(t.subject.to_lowercase())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The matching messages, newest first.
    pub async fn track_search(&self, q: &TrackQuery) -> anyhow::Result<Vec<Tracked>> {
        let mut sql = String::from(
            "SELECT queue_id, received_at, client_ip, helo, sender, recipients, subject, \
             message_id, size, score, symbols, action, reply, quarantine_id \
             FROM message_track WHERE 1 = 1",
        );
        let mut binds: Vec<Bind> = Vec::new();
        let mut add = |clause: &str, value: Bind, sql: &mut String| {
            binds.push(value);
            sql.push_str(&clause.replace('?', &format!("${}", binds.len())));
        };
        if let Some(sender) = q.sender.as_deref().filter(|s| !s.is_empty()) {
            let pattern = Bind::Text(like(sender.trim()));
            add(" AND sender_lc LIKE ? ESCAPE '\\'", pattern, &mut sql);
        }
        if let Some(rcpt) = q.recipient.as_deref().filter(|s| !s.is_empty()) {
            let pattern = Bind::Text(like(rcpt.trim()));
            add(" AND recipients_lc LIKE ? ESCAPE '\\'", pattern, &mut sql);
        }
        for word in q.subject.as_deref().unwrap_or("").split_whitespace() {
            let pattern = Bind::Text(like(word));
            add(" AND subject_lc LIKE ? ESCAPE '\\'", pattern, &mut sql);
        }
        if let Some(id) = q.message_id.as_deref().filter(|s| !s.is_empty()) {
            let bare = id.trim().trim_start_matches('<').trim_end_matches('>');
            add(
                " AND message_id = ?",
                Bind::Text(format!("<{bare}>")),
                &mut sql,
            );
        }
        if let Some(ip) = q.client_ip.as_deref().filter(|s| !s.is_empty()) {
            add(
                " AND client_ip = ?",
                Bind::Text(ip.trim().to_string()),
                &mut sql,
            );
        }
        if let Some(since) = q.since {
            add(" AND received_at >= ?", Bind::Int(since), &mut sql);
        }
        if let Some(until) = q.until {
            add(" AND received_at < ?", Bind::Int(until), &mut sql);
        }
        add(
            " ORDER BY received_at DESC, queue_id DESC LIMIT ?",
            Bind::Int(i64::from(q.limit.clamp(1, 10_000))),
            &mut sql,
        );
        // Only fixed clauses and $N placeholders are put together; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for bind in binds {
            query = match bind {
                Bind::Text(text) => query.bind(text),
                Bind::Int(n) => query.bind(n),
            };
        }
        let rows = query.fetch_all(self.pool()).await?;
        rows.iter()
            .map(|row| {
                let recipients: String = row.try_get(5)?;
                Ok(Tracked {
                    queue_id: row.try_get(0)?,
                    received_at: row.try_get(1)?,
                    client_ip: row.try_get(2)?,
                    helo: row.try_get(3)?,
                    sender: row.try_get(4)?,
                    recipients: recipients.lines().map(str::to_string).collect(),
                    subject: row.try_get(6)?,
                    message_id: row.try_get(7)?,
                    size: row.try_get(8)?,
                    score: row.try_get(9)?,
                    symbols: row.try_get(10)?,
                    action: row.try_get(11)?,
                    reply: row.try_get(12)?,
                    quarantine_id: row.try_get(13)?,
                })
            })
            .collect()
    }

    /// Forgets records received before `before` (unix seconds); returns how many.
    pub async fn track_purge(&self, before: i64) -> anyhow::Result<u64> {
        let done = sqlx::query("DELETE FROM message_track WHERE received_at < $1")
            .bind(before)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}

/// A time given by a person: a duration ago (`2h`, `30min`, `7d`) or a UTC time
/// (`2026-11-29 10:05`, `2026-11-29T10:05:00Z`, `2026-11-29`); unix seconds.
pub fn parse_when(text: &str, now: i64) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(ago) = humantime::parse_duration(text) {
        return Ok(now - ago.as_secs() as i64);
    }
    let full = match text.len() {
        10 => format!("{text} 00:00:00"),
        16 => format!("{text}:00"),
        _ => text.to_string(),
    };
    humantime::parse_rfc3339_weak(&full)
        .or_else(|_| humantime::parse_rfc3339(&full))
        .map(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        })
        .map_err(|_| {
            format!("`{text}` is neither a time like 2026-11-29 10:05 (UTC) nor a duration like 2h")
        })
}

enum Bind {
    Text(String),
    Int(i64),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracked(id: &str, at: i64, sender: &str, rcpt: &str, subject: &str) -> Tracked {
        Tracked {
            queue_id: id.into(),
            received_at: at,
            client_ip: "192.0.2.7".into(),
            helo: "mx.example".into(),
            sender: sender.into(),
            recipients: vec![rcpt.into(), "other@prokuroria.example".into()],
            subject: subject.into(),
            message_id: format!("<{id}@example.org>"),
            size: 100,
            score: 1.0,
            symbols: String::new(),
            action: "accept".into(),
            reply: "250 2.6.0 queued".into(),
            quarantine_id: String::new(),
        }
    }

    #[test]
    fn times_are_read_as_durations_ago_or_utc_times() {
        assert_eq!(parse_when("2h", 10_000), Ok(10_000 - 7200));
        assert_eq!(parse_when("1970-01-01 01:00", 0), Ok(3600));
        assert_eq!(parse_when("1970-01-02", 0), Ok(86_400));
        assert_eq!(parse_when("1970-01-01T00:00:10Z", 0), Ok(10));
        assert!(parse_when("yesterday-ish", 0).is_err());
    }

    #[tokio::test]
    async fn every_field_narrows_the_search() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Store::sqlite_url(dir.path())).await.unwrap();
        for t in [
            tracked(
                "A",
                100,
                "ana@sender.example",
                "it@prokuroria.example",
                "Backup 50%_done",
            ),
            tracked(
                "B",
                200,
                "bob@other.example",
                "arta@prokuroria.example",
                "Invoice",
            ),
            tracked(
                "C",
                300,
                "Ana@Sender.example",
                "arta@prokuroria.example",
                "Invoice again",
            ),
        ] {
            store.track(&t).await.unwrap();
        }
        let ids = |found: Vec<Tracked>| found.into_iter().map(|t| t.queue_id).collect::<Vec<_>>();
        let q = |f: fn(&mut TrackQuery)| {
            let mut q = TrackQuery {
                limit: 100,
                ..TrackQuery::default()
            };
            f(&mut q);
            q
        };
        let all = store.track_search(&q(|_| {})).await.unwrap();
        assert_eq!(ids(all), ["C", "B", "A"], "newest first");
        let by_sender = q(|q| q.sender = Some("ana@SENDER".into()));
        assert_eq!(
            ids(store.track_search(&by_sender).await.unwrap()),
            ["C", "A"]
        );
        let by_rcpt = q(|q| q.recipient = Some("arta@".into()));
        assert_eq!(ids(store.track_search(&by_rcpt).await.unwrap()), ["C", "B"]);
        let by_subject = q(|q| q.subject = Some("invoice AGAIN".into()));
        assert_eq!(ids(store.track_search(&by_subject).await.unwrap()), ["C"]);
        let wildcards = q(|q| q.subject = Some("50%_".into()));
        assert_eq!(ids(store.track_search(&wildcards).await.unwrap()), ["A"]);
        let by_id = q(|q| q.message_id = Some("B@example.org".into()));
        assert_eq!(ids(store.track_search(&by_id).await.unwrap()), ["B"]);
        let window = q(|q| {
            q.since = Some(150);
            q.until = Some(300);
        });
        assert_eq!(ids(store.track_search(&window).await.unwrap()), ["B"]);
        // A sender search does not match a recipient with the same text.
        let sender_only = q(|q| q.sender = Some("other@prokuroria".into()));
        assert!(store.track_search(&sender_only).await.unwrap().is_empty());
        assert_eq!(store.track_purge(250).await.unwrap(), 2);
    }
}

//! The schema, as numbered steps applied at start-up.
//!
//! The version lives in `kala_schema`; each pending step runs in its own transaction with the
//! version bump, so a crash mid-migration leaves the previous version intact. The SQL is
//! written once for both databases; `{blob}`, `{serial}` and `{int64_key}` become each one's
//! binary type, auto-numbered key and 64-bit integer key.

use super::{Dialect, Store};

/// Each step's SQL; step N (1-based) brings the schema to version N.
const STEPS: &[&str] = &[
    // 1: the quarantine. Bodies sit in their own table so listing never reads them.
    "CREATE TABLE quarantine (
        id TEXT PRIMARY KEY,
        received_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        category TEXT NOT NULL,
        state TEXT NOT NULL,
        sender TEXT NOT NULL,
        recipients TEXT NOT NULL,
        subject TEXT NOT NULL,
        from_header TEXT NOT NULL,
        message_id TEXT NOT NULL,
        score DOUBLE PRECISION NOT NULL,
        size BIGINT NOT NULL,
        client_ip TEXT NOT NULL,
        symbols TEXT NOT NULL,
        record TEXT NOT NULL,
        mark TEXT NOT NULL DEFAULT '',
        changed_at BIGINT NOT NULL DEFAULT 0,
        downstream_reply TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX quarantine_state_received ON quarantine (state, received_at);
    CREATE INDEX quarantine_state_category ON quarantine (state, category, received_at);
    CREATE INDEX quarantine_state_score ON quarantine (state, score);
    CREATE INDEX quarantine_expires ON quarantine (expires_at);
    CREATE TABLE quarantine_recipient (
        held_id TEXT NOT NULL REFERENCES quarantine (id) ON DELETE CASCADE,
        recipient TEXT NOT NULL
    );
    CREATE INDEX quarantine_recipient_held ON quarantine_recipient (held_id);
    CREATE INDEX quarantine_recipient_address ON quarantine_recipient (recipient);
    CREATE TABLE quarantine_symbol (
        held_id TEXT NOT NULL REFERENCES quarantine (id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        score DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX quarantine_symbol_held ON quarantine_symbol (held_id);
    CREATE INDEX quarantine_symbol_name ON quarantine_symbol (name);
    CREATE TABLE quarantine_raw (
        held_id TEXT PRIMARY KEY REFERENCES quarantine (id) ON DELETE CASCADE,
        raw {blob} NOT NULL
    );",
    // 2: the review UI's accounts, sessions and API tokens, and the audit log.
    "CREATE TABLE users (
        name TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        role TEXT NOT NULL,
        language TEXT NOT NULL DEFAULT '',
        created_at BIGINT NOT NULL
    );
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        user_name TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
        csrf TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        ip TEXT NOT NULL
    );
    CREATE INDEX sessions_user ON sessions (user_name);
    CREATE TABLE api_tokens (
        token_hash TEXT PRIMARY KEY,
        user_name TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
        label TEXT NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE audit_log (
        id {serial},
        at BIGINT NOT NULL,
        actor TEXT NOT NULL,
        ip TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX audit_log_at ON audit_log (at);",
    // 3: allow and block lists of senders, made from the quarantine.
    "CREATE TABLE sender_lists (
        id {serial},
        kind TEXT NOT NULL,
        sender TEXT NOT NULL,
        recipient TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE INDEX sender_lists_sender ON sender_lists (sender);",
    // 4: greylisting: one row per (client network, sender, recipient) and per auto-allowed
    // client network.
    "CREATE TABLE greylist (
        key TEXT PRIMARY KEY,
        first_seen BIGINT NOT NULL,
        passed INTEGER NOT NULL,
        expires_at BIGINT NOT NULL
    );
    CREATE INDEX greylist_expires ON greylist (expires_at);",
    // 5: the Bayes model: per-token counts (a token is a 64-bit hash, stored signed), the
    // digests of learned messages (so nothing is learned twice), and the learned totals.
    // The token is the table's key itself (SQLite's rowid): one b-tree to update per token,
    // and no index on touched_at, which every lesson would rewrite; the daily expiry scans.
    "CREATE TABLE bayes_token (
        token {int64_key},
        spam BIGINT NOT NULL,
        ham BIGINT NOT NULL,
        touched_at BIGINT NOT NULL
    );
    CREATE TABLE bayes_seen (
        digest TEXT PRIMARY KEY,
        spam INTEGER NOT NULL,
        learned_at BIGINT NOT NULL
    );
    CREATE TABLE bayes_totals (
        id INTEGER PRIMARY KEY,
        spam BIGINT NOT NULL,
        ham BIGINT NOT NULL
    );
    INSERT INTO bayes_totals (id, spam, ham) VALUES (1, 0, 0);",
    // 6: rule set versions (the zipped files of each activation, who and when) and the
    // daily hit counts of each rule, and the sample of relayed mail `kala rules try` scores
    // (empty unless rules.sample_relayed is set).
    "CREATE TABLE rule_version (
        id {serial},
        hash TEXT NOT NULL,
        activated_at BIGINT NOT NULL,
        actor TEXT NOT NULL,
        note TEXT NOT NULL,
        rules BIGINT NOT NULL,
        files {blob} NOT NULL
    );
    CREATE TABLE rule_hits (
        rule TEXT NOT NULL,
        day BIGINT NOT NULL,
        hits BIGINT NOT NULL,
        PRIMARY KEY (rule, day)
    );
    CREATE INDEX rule_hits_day ON rule_hits (day);
    CREATE TABLE rule_sample (
        id {serial},
        kept_at BIGINT NOT NULL,
        verdict TEXT NOT NULL,
        raw {blob} NOT NULL
    );",
    // 7: message tracking: one row per message (never its body), for the helpdesk's "where
    // is the mail from X sent at 10:05". Recipients and subject are kept lower-cased beside
    // the shown text, so searches need no function on the column.
    "CREATE TABLE message_track (
        queue_id TEXT PRIMARY KEY,
        received_at BIGINT NOT NULL,
        client_ip TEXT NOT NULL,
        helo TEXT NOT NULL,
        sender TEXT NOT NULL,
        recipients TEXT NOT NULL,
        subject TEXT NOT NULL,
        message_id TEXT NOT NULL,
        size BIGINT NOT NULL,
        score DOUBLE PRECISION NOT NULL,
        symbols TEXT NOT NULL,
        action TEXT NOT NULL,
        reply TEXT NOT NULL,
        quarantine_id TEXT NOT NULL,
        sender_lc TEXT NOT NULL,
        recipients_lc TEXT NOT NULL,
        subject_lc TEXT NOT NULL
    );
    CREATE INDEX message_track_received ON message_track (received_at);
    CREATE INDEX message_track_message_id ON message_track (message_id);",
    // 8: which tokenizer the Bayes model's lessons were tokenized with (0: not recorded).
    "ALTER TABLE bayes_totals ADD COLUMN tokenizer BIGINT NOT NULL DEFAULT 0;",
];

/// The schema version this build expects.
pub const CURRENT: i64 = STEPS.len() as i64;

pub(super) async fn apply(store: &Store) -> anyhow::Result<()> {
    let pool = store.pool();
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS kala_schema (
            version BIGINT NOT NULL,
            checked_at BIGINT NOT NULL DEFAULT 0
        )",
    )
    .execute(pool)
    .await?;
    let version: Option<(i64,)> = sqlx::query_as("SELECT version FROM kala_schema")
        .fetch_optional(pool)
        .await?;
    let mut version = match version {
        Some((v,)) => v,
        None => {
            sqlx::query("INSERT INTO kala_schema (version, checked_at) VALUES (0, 0)")
                .execute(pool)
                .await?;
            0
        }
    };
    if version > CURRENT {
        anyhow::bail!(
            "the store is at schema version {version}, newer than this Kala knows ({CURRENT}): \
             run the Kala release that wrote it, or restore a backup"
        );
    }
    let (blob, serial, int64_key) = match store.dialect() {
        // SQLite's INTEGER is 64 bits, and as the primary key it is the rowid.
        Dialect::Sqlite => (
            "BLOB",
            "INTEGER PRIMARY KEY AUTOINCREMENT",
            "INTEGER PRIMARY KEY",
        ),
        Dialect::Postgres => ("BYTEA", "BIGSERIAL PRIMARY KEY", "BIGINT PRIMARY KEY"),
    };
    while version < CURRENT {
        let sql = STEPS[version as usize]
            .replace("{blob}", blob)
            .replace("{serial}", serial)
            .replace("{int64_key}", int64_key);
        let mut tx = pool.begin().await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE kala_schema SET version = $1")
            .bind(version + 1)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        version += 1;
        tracing::info!(version, "store schema migrated");
    }
    Ok(())
}

//! Who may use the review UI and the API: accounts with argon2 password hashes and a role,
//! login sessions, API tokens, and a limit on failed logins.
//!
//! Session and API tokens are 256 random bits given to the client once; the store keeps only
//! their SHA-256, so a copy of the database opens no session.

use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use serde::Serialize;

use crate::store::{Store, now};

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything: quarantine actions, users, downloads of raw messages, the audit log.
    Admin,
    /// Quarantine actions (release, delete, mark).
    Reviewer,
    /// Reads everything a reviewer sees and the audit log; changes nothing.
    Auditor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Reviewer => "reviewer",
            Role::Auditor => "auditor",
        }
    }

    /// Release, delete and mark messages.
    pub fn may_act(self) -> bool {
        matches!(self, Role::Admin | Role::Reviewer)
    }

    /// Manage users, download raw messages.
    pub fn may_administer(self) -> bool {
        self == Role::Admin
    }

    pub fn may_read_audit(self) -> bool {
        matches!(self, Role::Admin | Role::Auditor)
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "reviewer" => Ok(Role::Reviewer),
            "auditor" => Ok(Role::Auditor),
            _ => Err(format!("`{s}` is not a role (admin, reviewer, auditor)")),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// The UI language the user chose (`en`, `sq`, `sr`), or empty for the browser's.
    pub language: String,
}

/// A logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    /// The token every form of this session must carry.
    pub csrf: String,
}

/// How long a login lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 10;

/// Accounts, sessions and tokens in the store.
#[derive(Clone)]
pub struct Accounts {
    store: Store,
}

impl Accounts {
    pub fn new(store: Store) -> Accounts {
        Accounts { store }
    }

    /// Creates an account. Fails if the name is taken or the password is too short.
    pub async fn add(&self, name: &str, password: &str, role: Role) -> anyhow::Result<()> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_alphanumeric() || "._-@".contains(c))
        {
            anyhow::bail!("`{name}` is not a user name (letters, digits and . _ - @)");
        }
        if password.chars().count() < MIN_PASSWORD {
            anyhow::bail!("the password must have at least {MIN_PASSWORD} characters");
        }
        let password = password.to_string();
        let hash = tokio::task::spawn_blocking(move || {
            Argon2::default()
                .hash_password(password.as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))
        })
        .await??;
        let taken: Option<(String,)> = sqlx::query_as("SELECT name FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(self.store.pool())
            .await?;
        if taken.is_some() {
            anyhow::bail!("a user named `{name}` exists already");
        }
        sqlx::query(
            "INSERT INTO users (name, password_hash, role, language, created_at) \
             VALUES ($1, $2, $3, '', $4)",
        )
        .bind(name)
        .bind(hash)
        .bind(role.as_str())
        .bind(now() as i64)
        .execute(self.store.pool())
        .await?;
        Ok(())
    }

    /// The user with this name and password, or `None`. Takes the same time whether or not
    /// the name exists, so logins do not reveal user names.
    pub async fn verify(&self, name: &str, password: &str) -> anyhow::Result<Option<User>> {
        let row: Option<(String, String, String)> =
            sqlx::query_as("SELECT password_hash, role, language FROM users WHERE name = $1")
                .bind(name)
                .fetch_optional(self.store.pool())
                .await?;
        let (hash, role, language) = match row {
            Some(row) => row,
            None => (dummy_hash().to_string(), String::new(), String::new()),
        };
        let password = password.to_string();
        let matches = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).is_ok_and(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
        })
        .await?;
        Ok(match (matches, role.parse::<Role>()) {
            (true, Ok(role)) => Some(User {
                name: name.to_string(),
                role,
                language,
            }),
            _ => None,
        })
    }

    pub async fn get(&self, name: &str) -> anyhow::Result<Option<User>> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT role, language FROM users WHERE name = $1")
                .bind(name)
                .fetch_optional(self.store.pool())
                .await?;
        Ok(row.and_then(|(role, language)| {
            Some(User {
                name: name.to_string(),
                role: role.parse().ok()?,
                language,
            })
        }))
    }

    pub async fn list(&self) -> anyhow::Result<Vec<User>> {
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT name, role, language FROM users ORDER BY name")
                .fetch_all(self.store.pool())
                .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(name, role, language)| {
                Some(User {
                    name,
                    role: role.parse().ok()?,
                    language,
                })
            })
            .collect())
    }

    pub async fn set_language(&self, name: &str, language: &str) -> anyhow::Result<()> {
        sqlx::query("UPDATE users SET language = $2 WHERE name = $1")
            .bind(name)
            .bind(language)
            .execute(self.store.pool())
            .await?;
        Ok(())
    }

    /// Opens a session; returns its token (for the cookie) and the session.
    pub async fn start_session(&self, user: User, ip: &str) -> anyhow::Result<(String, Session)> {
        let token = random_token();
        let csrf = random_token();
        let created = now() as i64;
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_name, csrf, created_at, expires_at, ip) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(digest(&token))
        .bind(&user.name)
        .bind(&csrf)
        .bind(created)
        .bind(created + SESSION_LIFETIME.as_secs() as i64)
        .bind(ip)
        .execute(self.store.pool())
        .await?;
        Ok((token, Session { user, csrf }))
    }

    /// The live session for a cookie's token.
    pub async fn session(&self, token: &str) -> anyhow::Result<Option<Session>> {
        let row: Option<(String, String, String, String)> = sqlx::query_as(
            "SELECT s.csrf, u.name, u.role, u.language FROM sessions s \
             JOIN users u ON u.name = s.user_name WHERE s.token_hash = $1 AND s.expires_at > $2",
        )
        .bind(digest(token))
        .bind(now() as i64)
        .fetch_optional(self.store.pool())
        .await?;
        Ok(row.and_then(|(csrf, name, role, language)| {
            Some(Session {
                user: User {
                    name,
                    role: role.parse().ok()?,
                    language,
                },
                csrf,
            })
        }))
    }

    pub async fn end_session(&self, token: &str) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1 OR expires_at < $2")
            .bind(digest(token))
            .bind(now() as i64)
            .execute(self.store.pool())
            .await?;
        Ok(())
    }

    /// A new API token for `user` (shown once; only its digest is kept).
    pub async fn add_token(&self, user: &str, label: &str) -> anyhow::Result<String> {
        self.get(user)
            .await?
            .with_context(|| format!("no user named `{user}`"))?;
        let token = random_token();
        sqlx::query(
            "INSERT INTO api_tokens (token_hash, user_name, label, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(digest(&token))
        .bind(user)
        .bind(label)
        .bind(now() as i64)
        .execute(self.store.pool())
        .await?;
        Ok(token)
    }

    /// The user an API token belongs to.
    pub async fn token_user(&self, token: &str) -> anyhow::Result<Option<User>> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT user_name FROM api_tokens WHERE token_hash = $1")
                .bind(digest(token))
                .fetch_optional(self.store.pool())
                .await?;
        match row {
            Some((name,)) => self.get(&name).await,
            None => Ok(None),
        }
    }
}

/// 256 random bits, hex.
pub fn random_token() -> String {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random source works");
    hex::encode(bytes)
}

fn digest(token: &str) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        token.as_bytes(),
    ))
}

/// Equal strings, compared in time that does not depend on where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A valid hash of nothing anyone knows: verifying against it costs what a real check costs.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        Argon2::default()
            .hash_password(random_token().as_bytes())
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// Failed logins allowed per client address (and per user name) within [`LOGIN_WINDOW`].
pub const MAX_FAILED_LOGINS: u32 = 5;
pub const LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Counts failed logins per address and per user name; past the limit, logins are refused
/// without checking the password until the window passes.
#[derive(Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl LoginLimiter {
    fn keys(ip: IpAddr, name: &str) -> [String; 2] {
        [format!("ip:{ip}"), format!("user:{}", name.to_lowercase())]
    }

    /// True when this address or name may try now.
    pub fn allows(&self, ip: IpAddr, name: &str) -> bool {
        let mut failures = self.failures.lock().expect("limiter lock");
        failures.retain(|_, (_, since)| since.elapsed() < LOGIN_WINDOW);
        Self::keys(ip, name).iter().all(|key| {
            failures
                .get(key)
                .is_none_or(|(n, _)| *n < MAX_FAILED_LOGINS)
        })
    }

    pub fn failed(&self, ip: IpAddr, name: &str) {
        let mut failures = self.failures.lock().expect("limiter lock");
        for key in Self::keys(ip, name) {
            let entry = failures.entry(key).or_insert((0, Instant::now()));
            entry.0 += 1;
        }
    }

    pub fn succeeded(&self, ip: IpAddr, name: &str) {
        let mut failures = self.failures.lock().expect("limiter lock");
        for key in Self::keys(ip, name) {
            failures.remove(&key);
        }
    }
}

//! Virus scanning: the [`Scanner`] trait and its ClamAV implementation, [`Clamd`].
//!
//! Kala streams bytes to `clamd` with INSTREAM (no shared files, so clamd may run on another
//! host). clamav-client opens one connection per call and has no timeouts, so every call here
//! is bounded by `timeout`; a new connection per scan is also what lets mail flow again as soon
//! as a restarted clamd answers, with no restart of Kala.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use clamav_client::tokio::{Socket, Tcp};

/// What a scanner said about some bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanAnswer {
    Clean,
    /// A detection, with the signature's name (e.g. `Win.Test.EICAR_HDB-1`).
    Found(String),
}

/// Why a scanner gave no answer. Each of these means "not scanned": policy decides.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("scanner unreachable: {0}")]
    Unavailable(std::io::Error),
    #[error("scanner did not answer within {0:?}")]
    Timeout(Duration),
    /// The bytes exceed what the scanner accepts in one stream (clamd's `StreamMaxLength`).
    #[error("{size} bytes exceed the scanner's stream limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("scanner answered with an error: {0}")]
    Refused(String),
}

/// The scanner's engine and signature database, from clamd's VERSION answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineVersion {
    /// e.g. `ClamAV 1.4.6`.
    pub engine: String,
    /// The `daily` database version; absent when clamd runs on local signatures only.
    pub database: Option<u64>,
    /// When that database was built, as clamd prints it (`Thu Nov 27 08:21:02 2026`).
    pub database_built: Option<String>,
    /// Age of the database at the time of asking, when its date could be read.
    pub database_age: Option<Duration>,
}

/// Anything that scans bytes for malware.
#[async_trait]
pub trait Scanner: Send + Sync {
    async fn scan(&self, bytes: &[u8]) -> Result<ScanAnswer, ScanError>;
    /// A cheap liveness check.
    async fn ping(&self) -> Result<(), ScanError>;
    async fn version(&self) -> Result<EngineVersion, ScanError>;
    /// Largest stream accepted; larger content is never sent (and never passed silently).
    fn max_stream_size(&self) -> usize;
}

/// Where clamd listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    /// `host:port`.
    Tcp(String),
}

impl Endpoint {
    /// `unix:/path`, a bare absolute path, or `host:port` (`tcp:host:port` also reads).
    pub fn parse(text: &str) -> Option<Endpoint> {
        if let Some(path) = text.strip_prefix("unix:") {
            return Some(Endpoint::Unix(PathBuf::from(path)));
        }
        if text.starts_with('/') {
            return Some(Endpoint::Unix(PathBuf::from(text)));
        }
        let address = text.strip_prefix("tcp:").unwrap_or(text);
        let (host, port) = address.rsplit_once(':')?;
        (!host.is_empty() && port.parse::<u16>().is_ok()).then(|| Endpoint::Tcp(address.into()))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
            Endpoint::Tcp(address) => write!(f, "tcp:{address}"),
        }
    }
}

/// ClamAV's daemon.
#[derive(Debug, Clone)]
pub struct Clamd {
    pub endpoint: Endpoint,
    /// Bound on one call: connect, stream, and wait for the answer.
    pub timeout: Duration,
    /// Must not exceed clamd's `StreamMaxLength` (25 MiB unless configured).
    pub max_stream_size: usize,
}

/// Runs one clamav-client call on whichever transport `endpoint` names: the client's calls are
/// generic over the transport type, so each arm needs its own concrete type.
macro_rules! on_transport {
    ($endpoint:expr, |$transport:ident| $call:expr) => {
        match $endpoint {
            Endpoint::Unix(path) => {
                let $transport = Socket { socket_path: path };
                $call.await
            }
            Endpoint::Tcp(address) => {
                let $transport = Tcp {
                    host_address: address,
                };
                $call.await
            }
        }
    };
}

impl Clamd {
    /// The clamd client `[antivirus]` describes.
    pub fn from_settings(settings: &crate::config::AntivirusSettings) -> Clamd {
        Clamd {
            endpoint: settings.clamd.clone(),
            timeout: settings.timeout,
            max_stream_size: settings.max_stream_size,
        }
    }
}

/// Bytes per INSTREAM chunk.
const CHUNK: usize = 64 * 1024;

impl Clamd {
    /// Runs one clamav-client call against the endpoint, bounded by the timeout.
    async fn call<F, Fut>(&self, call: F) -> Result<Vec<u8>, ScanError>
    where
        F: FnOnce(Endpoint) -> Fut,
        Fut: std::future::Future<Output = std::io::Result<Vec<u8>>>,
    {
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(self.timeout, call(self.endpoint.clone())).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(ScanError::Unavailable(e)),
            Err(_) => Err(ScanError::Timeout(self.timeout)),
        };
        crate::metrics::metrics().clamd_call(started.elapsed(), result.is_err());
        result
    }
}

#[async_trait]
impl Scanner for Clamd {
    async fn scan(&self, bytes: &[u8]) -> Result<ScanAnswer, ScanError> {
        if bytes.len() > self.max_stream_size {
            return Err(ScanError::TooLarge {
                size: bytes.len(),
                limit: self.max_stream_size,
            });
        }
        let answer = self
            .call(|endpoint| async move {
                on_transport!(endpoint, |transport| {
                    clamav_client::tokio::scan_buffer(bytes, transport, Some(CHUNK))
                })
            })
            .await?;
        parse_scan_answer(&answer).map_err(|refusal| {
            if refusal.contains("size limit") {
                ScanError::TooLarge {
                    size: bytes.len(),
                    limit: self.max_stream_size,
                }
            } else {
                ScanError::Refused(refusal)
            }
        })
    }

    async fn ping(&self) -> Result<(), ScanError> {
        let answer = self
            .call(|endpoint| async move {
                on_transport!(endpoint, |transport| clamav_client::tokio::ping(transport))
            })
            .await?;
        if answer.starts_with(b"PONG") {
            Ok(())
        } else {
            Err(ScanError::Refused(answer_text(&answer)))
        }
    }

    async fn version(&self) -> Result<EngineVersion, ScanError> {
        let answer = self
            .call(|endpoint| async move {
                on_transport!(endpoint, |transport| {
                    clamav_client::tokio::get_version(transport)
                })
            })
            .await?;
        Ok(parse_version(
            &answer_text(&answer),
            std::time::SystemTime::now(),
        ))
    }

    fn max_stream_size(&self) -> usize {
        self.max_stream_size
    }
}

/// How often the running gateway asks clamd for its health and database version.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(600);

/// Asks the scanner for its version and logs it, warning when it does not answer or its
/// database is older than `max_age`. Returns whether it answered.
pub async fn log_health(
    scanner: &dyn Scanner,
    endpoint: &str,
    max_age: Duration,
    fail_open: bool,
) -> bool {
    match scanner.version().await {
        Ok(version) => {
            let age_hours = version.database_age.map(|a| a.as_secs() / 3_600);
            tracing::info!(
                clamd = endpoint,
                engine = %version.engine,
                database = ?version.database,
                database_built = version.database_built.as_deref().unwrap_or("unknown (local signatures only)"),
                age_hours = ?age_hours,
                "antivirus ready"
            );
            if let Some(age) = version.database_age {
                crate::metrics::metrics().clamd_database_age(age);
            }
            if let Some(age) = version.database_age
                && age > max_age
            {
                tracing::warn!(
                    clamd = endpoint,
                    age_hours = age.as_secs() / 3_600,
                    max_hours = max_age.as_secs() / 3_600,
                    "ClamAV's signature database is older than antivirus.max_database_age: check freshclam"
                );
            }
            true
        }
        Err(error) => {
            let consequence = if fail_open {
                "mail is relayed UNSCANNED and marked X-Kala-Virus: unchecked (antivirus.fail_open)"
            } else {
                "mail is answered 451 until it answers (antivirus.fail_open = false)"
            };
            tracing::warn!(
                clamd = endpoint,
                %error,
                "clamd is not answering: {consequence}. Install and start clamav-daemon, \
                 or point antivirus.clamd at it, or set antivirus.enabled = false"
            );
            false
        }
    }
}

/// clamd's answers end in NUL (the `z` commands) and may end in a newline.
fn answer_text(answer: &[u8]) -> String {
    String::from_utf8_lossy(answer)
        .trim_end_matches(['\0', '\n', '\r'])
        .to_string()
}

/// `stream: OK`, `stream: NAME FOUND`, or an error (`INSTREAM size limit exceeded. ERROR`).
fn parse_scan_answer(answer: &[u8]) -> Result<ScanAnswer, String> {
    let text = answer_text(answer);
    let result = text.strip_prefix("stream:").map(str::trim);
    match result {
        Some("OK") => Ok(ScanAnswer::Clean),
        Some(found) if found.ends_with(" FOUND") => Ok(ScanAnswer::Found(
            found.trim_end_matches(" FOUND").trim().to_string(),
        )),
        _ if text.is_empty() => Err("empty answer (clamd closed the connection)".into()),
        _ => Err(text),
    }
}

/// `ClamAV 1.4.6/27832/Thu Nov 27 08:21:02 2026` (or just `ClamAV 1.4.6` on local signatures).
fn parse_version(text: &str, now: std::time::SystemTime) -> EngineVersion {
    let mut fields = text.splitn(3, '/');
    let engine = fields.next().unwrap_or_default().trim().to_string();
    let database = fields.next().and_then(|v| v.trim().parse().ok());
    let database_built = fields.next().map(|d| d.trim().to_string());
    let database_age = database_built
        .as_deref()
        .and_then(parse_ctime)
        .and_then(|built| now.duration_since(built).ok());
    EngineVersion {
        engine,
        database,
        database_built,
        database_age,
    }
}

/// Reads C's `ctime` format (`Thu Nov 27 08:21:02 2026`, UTC as clamd prints it).
fn parse_ctime(text: &str) -> Option<std::time::SystemTime> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    let [_, month, day, time, year] = fields.as_slice() else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| m == month)? as i64 + 1;
    let day: i64 = day.parse().ok()?;
    let year: i64 = year.parse().ok()?;
    let hms: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, s] = hms.as_slice() else {
        return None;
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + h * 3_600 + m * 60 + s;
    let seconds = u64::try_from(seconds).ok()?;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(seconds))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_answers() {
        assert_eq!(parse_scan_answer(b"stream: OK\0"), Ok(ScanAnswer::Clean));
        assert_eq!(
            parse_scan_answer(b"stream: Win.Test.EICAR_HDB-1 FOUND\0"),
            Ok(ScanAnswer::Found("Win.Test.EICAR_HDB-1".into()))
        );
        assert!(
            parse_scan_answer(b"INSTREAM size limit exceeded. ERROR\0")
                .unwrap_err()
                .contains("size limit")
        );
        assert!(parse_scan_answer(b"").is_err());
    }

    #[test]
    fn version_and_database_age() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_796_000_000); // 2026-11-30
        let v = parse_version("ClamAV 1.4.6/27832/Thu Nov 26 08:00:00 2026", now);
        assert_eq!(v.engine, "ClamAV 1.4.6");
        assert_eq!(v.database, Some(27832));
        let age = v.database_age.expect("the date reads");
        assert!(
            (Duration::from_secs(2 * 86_400)..Duration::from_secs(4 * 86_400)).contains(&age),
            "{age:?}"
        );
        let local = parse_version("ClamAV 1.4.6", now);
        assert_eq!((local.database, local.database_age), (None, None));
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            Endpoint::parse("/run/clamav/clamd.ctl"),
            Some(Endpoint::Unix("/run/clamav/clamd.ctl".into()))
        );
        assert_eq!(
            Endpoint::parse("unix:/tmp/c.sock"),
            Some(Endpoint::Unix("/tmp/c.sock".into()))
        );
        assert_eq!(
            Endpoint::parse("127.0.0.1:3310"),
            Some(Endpoint::Tcp("127.0.0.1:3310".into()))
        );
        assert_eq!(Endpoint::parse("clamd"), None);
    }

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }
}

//! The running gateway's control socket (`DATA_DIR/control.sock`, owner-only): how
//! `kala rules reload` and `kala rules rollback` reach the process that holds the live rule
//! set, and get its answer (the new version, or the problems that kept it out).
//!
//! One JSON request line, one JSON answer line, then the connection closes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::smtp::Shared;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum Request {
    Reload {
        actor: String,
        force: bool,
    },
    Rollback {
        actor: String,
        version: Option<i64>,
    },
    /// Saves the rule hit counts not yet in the store (before `kala rules stats` reads).
    Flush,
    /// The readiness probes (`kala status`); the answer's text is their JSON.
    Status,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Answer {
    pub ok: bool,
    /// What happened, in a sentence (or the refusal, a problem per line).
    pub text: String,
}

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

/// Listens on the control socket; the task ends when aborted.
pub fn serve(shared: Arc<Shared>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use anyhow::Context as _;
    use std::os::unix::fs::PermissionsExt as _;
    let path = socket_path(&shared.settings.data_dir);
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            anyhow::bail!(
                "another Kala is running on data_dir {} (its control socket answers)",
                shared.settings.data_dir.display()
            );
        }
        // Left by a gateway that did not stop cleanly.
        let _ = std::fs::remove_file(&path);
    }
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("cannot create the control socket {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let shared = shared.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(stream, &shared).await {
                    tracing::warn!(error = %e, "control request failed");
                }
            });
        }
    }))
}

async fn answer(stream: UnixStream, shared: &Shared) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read.take_bounded())
        .read_line(&mut line)
        .await?;
    let answer = match serde_json::from_str::<Request>(&line) {
        Err(e) => Answer {
            ok: false,
            text: format!("not a control request: {e}"),
        },
        Ok(Request::Reload { actor, force }) => {
            outcome(shared.rulesets.reload(&actor, force).await)
        }
        Ok(Request::Rollback { actor, version }) => {
            outcome(shared.rulesets.rollback(version, &actor).await)
        }
        Ok(Request::Status) => {
            let readiness = crate::health::readiness(shared).await;
            Answer {
                ok: readiness.ready,
                text: serde_json::to_string(&readiness)?,
            }
        }
        Ok(Request::Flush) => match shared.rulesets.flush_hits().await {
            Ok(()) => Answer {
                ok: true,
                text: "hit counts saved".into(),
            },
            Err(e) => Answer {
                ok: false,
                text: format!("{e:#}"),
            },
        },
    };
    let mut text = serde_json::to_string(&answer)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    Ok(())
}

fn outcome(result: Result<crate::ruleset::Activation, crate::ruleset::Refusal>) -> Answer {
    match result {
        Ok(activation) => Answer {
            ok: true,
            text: activation.to_string(),
        },
        Err(refusal) => Answer {
            ok: false,
            text: refusal.to_string(),
        },
    }
}

/// Bounds what a client may send (one short JSON line).
trait TakeBounded: tokio::io::AsyncRead + Sized {
    fn take_bounded(self) -> tokio::io::Take<Self> {
        use tokio::io::AsyncReadExt as _;
        self.take(64 * 1024)
    }
}
impl<T: tokio::io::AsyncRead> TakeBounded for T {}

/// Sends one request to the gateway using `data_dir`. `Ok(None)`: no gateway is running.
pub async fn request(data_dir: &Path, request: &Request) -> anyhow::Result<Option<Answer>> {
    let path = socket_path(data_dir);
    let stream = match UnixStream::connect(&path).await {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(anyhow::anyhow!("cannot reach {}: {e}", path.display())),
    };
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    write.write_all(line.as_bytes()).await?;
    let mut reply = String::new();
    BufReader::new(read).read_line(&mut reply).await?;
    Ok(Some(serde_json::from_str(&reply)?))
}

//! Holding messages for review: the raw message and its verdict, durably on disk.
//!
//! Kala answers 250 for a quarantined message only after [`Quarantine::hold`] returned, and
//! that returns only after the files and their directory were fsync'd: a crash after the 250
//! loses nothing. Listing, release and expiry come with the quarantine store.

use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWriteExt};

use crate::envelope::Envelope;
use crate::verdict::Verdict;

/// What is kept beside each held message.
#[derive(Debug, Serialize)]
pub struct HoldRecord<'a> {
    pub envelope: &'a Envelope,
    pub verdict: &'a Verdict,
}

/// The quarantine directory.
pub struct Quarantine {
    dir: PathBuf,
}

impl Quarantine {
    /// Uses (and creates) `data_dir/quarantine`.
    pub fn open(data_dir: &Path) -> io::Result<Quarantine> {
        let dir = data_dir.join("quarantine");
        std::fs::create_dir_all(dir.join("tmp"))?;
        Ok(Quarantine { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores `header` followed by `body` as `<queue id>.eml` and the record as
    /// `<queue id>.json`, both fsync'd, then fsyncs the directory. Returns the message path.
    pub async fn hold(
        &self,
        record: &HoldRecord<'_>,
        header: &[u8],
        body: &mut (impl AsyncRead + Unpin),
    ) -> io::Result<PathBuf> {
        let id = &record.envelope.queue_id;
        let tmp_eml = self.dir.join("tmp").join(format!("{id}.eml"));
        let tmp_json = self.dir.join("tmp").join(format!("{id}.json"));
        let eml = self.dir.join(format!("{id}.eml"));
        let json = self.dir.join(format!("{id}.json"));

        let mut file = tokio::fs::File::create(&tmp_eml).await?;
        file.write_all(header).await?;
        tokio::io::copy(body, &mut file).await?;
        file.sync_all().await?;
        drop(file);

        let mut file = tokio::fs::File::create(&tmp_json).await?;
        file.write_all(&serde_json::to_vec_pretty(record).map_err(io::Error::other)?)
            .await?;
        file.sync_all().await?;
        drop(file);

        // The message first: a record never points at a message that is not there.
        tokio::fs::rename(&tmp_eml, &eml).await?;
        tokio::fs::rename(&tmp_json, &json).await?;
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all())
            .await
            .map_err(io::Error::other)??;
        Ok(eml)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Action;

    #[tokio::test]
    async fn holds_message_and_record() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quarantine::open(dir.path()).unwrap();
        let envelope = Envelope::offline("a@example.org", vec!["b@example.net".into()]);
        let verdict = Verdict {
            action: Action::Quarantine,
            score: 12.0,
            symbols: vec![],
            forced_by: None,
        };
        let path = q
            .hold(
                &HoldRecord {
                    envelope: &envelope,
                    verdict: &verdict,
                },
                b"Received: x\r\n",
                &mut &b"Subject: s\r\n\r\nbody\r\n"[..],
            )
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"Received: x\r\nSubject: s\r\n\r\nbody\r\n"
        );
        let json = std::fs::read_to_string(path.with_extension("json")).unwrap();
        assert!(json.contains("\"action\": \"quarantine\""), "{json}");
    }
}

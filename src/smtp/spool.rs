//! Where a message's bytes wait while it is scanned: memory first, a temp file past a
//! threshold, so a 50 MB message costs a file, not 50 MB of RAM per connection.

use std::io::{self, SeekFrom};
use std::path::Path;

use tokio::fs::File;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// The message content of one transaction.
pub struct Spool {
    memory: Vec<u8>,
    file: Option<File>,
    len: usize,
    threshold: usize,
}

impl Spool {
    /// A spool that keeps up to `threshold` bytes in memory.
    pub fn new(threshold: usize) -> Spool {
        Spool {
            memory: Vec::new(),
            file: None,
            len: 0,
            threshold,
        }
    }

    /// A spool holding `bytes` (for `kala scan` and tests).
    pub fn from_bytes(bytes: Vec<u8>) -> Spool {
        Spool {
            len: bytes.len(),
            threshold: usize::MAX,
            memory: bytes,
            file: None,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True once the content moved to a temp file.
    pub fn is_on_disk(&self) -> bool {
        self.file.is_some()
    }

    /// Appends bytes, moving everything to an unnamed temp file in `tmp_dir` past the threshold.
    pub async fn write(&mut self, bytes: &[u8], tmp_dir: &Path) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.file.is_none() && self.memory.len() + bytes.len() > self.threshold {
            let dir = tmp_dir.to_path_buf();
            // Unnamed: the kernel removes it when the last handle closes, even after a crash.
            let std_file = tokio::task::spawn_blocking(move || tempfile::tempfile_in(dir))
                .await
                .map_err(io::Error::other)??;
            let mut file = File::from_std(std_file);
            file.write_all(&self.memory).await?;
            self.memory = Vec::new();
            self.file = Some(file);
        }
        match &mut self.file {
            Some(file) => file.write_all(bytes).await?,
            None => self.memory.extend_from_slice(bytes),
        }
        self.len += bytes.len();
        Ok(())
    }

    /// Up to `n` bytes starting at `offset`.
    pub async fn read_range(&self, offset: usize, n: usize) -> io::Result<Vec<u8>> {
        let end = self.len.min(offset.saturating_add(n));
        if offset >= end {
            return Ok(Vec::new());
        }
        match &self.file {
            None => Ok(self.memory[offset..end].to_vec()),
            Some(_) => {
                let mut reader = self.reader(offset).await?;
                let mut buf = vec![0; end - offset];
                reader.read_exact(&mut buf).await?;
                Ok(buf)
            }
        }
    }

    /// A reader over the content from `offset` to the end.
    pub async fn reader(&self, offset: usize) -> io::Result<SpoolReader<'_>> {
        match &self.file {
            None => Ok(SpoolReader::Memory(&self.memory[offset.min(self.len)..])),
            Some(file) => {
                let mut file = file.try_clone().await?;
                file.flush().await?;
                file.seek(SeekFrom::Start(offset as u64)).await?;
                Ok(SpoolReader::File(
                    file.take((self.len - offset.min(self.len)) as u64),
                ))
            }
        }
    }
}

/// Reads a spool's content without copying it into memory.
pub enum SpoolReader<'a> {
    Memory(&'a [u8]),
    File(tokio::io::Take<File>),
}

impl AsyncRead for SpoolReader<'_> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            SpoolReader::Memory(slice) => std::pin::Pin::new(slice).poll_read(cx, buf),
            SpoolReader::File(file) => std::pin::Pin::new(file).poll_read(cx, buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spills_past_the_threshold_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::new(8);
        spool.write(b"hello ", dir.path()).await.unwrap();
        assert!(!spool.is_on_disk());
        spool.write(b"world, bigger", dir.path()).await.unwrap();
        assert!(spool.is_on_disk());
        assert_eq!(spool.read_range(0, 5).await.unwrap(), b"hello");
        let mut rest = String::new();
        spool
            .reader(6)
            .await
            .unwrap()
            .read_to_string(&mut rest)
            .await
            .unwrap();
        assert_eq!(rest, "world, bigger");
    }
}

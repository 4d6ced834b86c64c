//! Reading messages from what admins have: single message files, directories of them,
//! Maildirs (`cur/` and `new/`) and mbox files. For `kala learn` and `kala eval`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// One message and where it came from (`FILE` or `FILE#N` for the Nth of an mbox).
#[derive(Debug, Clone)]
pub struct Mail {
    pub origin: String,
    pub raw: Vec<u8>,
}

/// Every message under `paths`, in a stable order (directory entries sorted by name).
pub fn read(paths: &[PathBuf]) -> anyhow::Result<Vec<Mail>> {
    let mut mails = Vec::new();
    for path in paths {
        read_path(path, &mut mails)?;
    }
    Ok(mails)
}

fn read_path(path: &Path, mails: &mut Vec<Mail>) -> anyhow::Result<()> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_dir() {
        return read_file(path, mails);
    }
    let is_maildir = path.join("cur").is_dir() && path.join("new").is_dir();
    let dirs = if is_maildir {
        vec![path.join("cur"), path.join("new")]
    } else {
        vec![path.to_path_buf()]
    };
    for dir in dirs {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            // Dot files are editors' and tools' (and a Maildir's tmp/ is not mail yet).
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        entries.sort();
        for entry in entries {
            if is_maildir && entry.is_dir() {
                continue;
            }
            read_path(&entry, mails)?;
        }
    }
    Ok(())
}

fn read_file(path: &Path, mails: &mut Vec<Mail>) -> anyhow::Result<()> {
    let raw = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let origin = path.display().to_string();
    if !raw.starts_with(b"From ") {
        mails.push(Mail { origin, raw });
        return Ok(());
    }
    for (n, message) in split_mbox(&raw).into_iter().enumerate() {
        mails.push(Mail {
            origin: format!("{origin}#{}", n + 1),
            raw: message,
        });
    }
    Ok(())
}

/// The messages of an mbox: each starts after a `From ` separator line (with a year, as
/// `From sender Mon Jan  1 00:00:00 2024`) that opens the file or follows an empty line;
/// `>From ` quoting (mboxrd) is undone. A single message with its `From ` line
/// (the public corpora's shape) is one message without that line.
pub fn split_mbox(raw: &[u8]) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    let mut previous_blank = true;
    for line in raw.split_inclusive(|b| *b == b'\n') {
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if previous_blank && is_separator(content) {
            if let Some(mut done) = current.take() {
                trim_separator(&mut done);
                messages.push(done);
            }
            current = Some(Vec::new());
            previous_blank = false;
            continue;
        }
        previous_blank = content.is_empty();
        let body = current.get_or_insert_with(Vec::new);
        let quoted = line.iter().take_while(|b| **b == b'>').count();
        if quoted > 0 && line[quoted..].starts_with(b"From ") {
            body.extend_from_slice(&line[1..]);
        } else {
            body.extend_from_slice(line);
        }
    }
    if let Some(mut done) = current {
        trim_separator(&mut done);
        messages.push(done);
    }
    messages.retain(|m| !m.is_empty());
    messages
}

/// `From SENDER DATE`, the date ending in a year (a timezone may follow): body text that
/// starts with "From " rarely ends so.
fn is_separator(line: &[u8]) -> bool {
    let Some(rest) = line.strip_prefix(b"From ") else {
        return false;
    };
    let text = String::from_utf8_lossy(rest);
    let words: Vec<&str> = text.split_whitespace().collect();
    words.len() >= 3
        && words.iter().rev().take(2).any(|w| {
            w.len() == 4
                && w.parse::<u16>()
                    .is_ok_and(|year| (1970..=2200).contains(&year))
        })
}

/// The empty line that separates mbox messages belongs to the format, not the message.
fn trim_separator(message: &mut Vec<u8>) {
    if message.ends_with(b"\n\n") {
        message.pop();
    } else if message.ends_with(b"\r\n\r\n") {
        message.truncate(message.len() - 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mbox_splits_at_from_lines_after_blank_lines_only() {
        let mbox = b"From a@x Mon Jan  1 00:00:00 2024\nSubject: one\n\nFrom here on, text.\n>From quoted\n\nFrom b@y Tue Jan  2 00:00:00 2024\nSubject: two\n\nbody\n";
        let messages = split_mbox(mbox);
        assert_eq!(messages.len(), 2);
        assert_eq!(
            messages[0],
            b"Subject: one\n\nFrom here on, text.\nFrom quoted\n".to_vec()
        );
        assert_eq!(messages[1], b"Subject: two\n\nbody\n".to_vec());
    }

    #[test]
    fn files_directories_and_maildirs_are_read_in_a_stable_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("b.eml"), "Subject: b\n\nb\n").unwrap();
        std::fs::write(root.join("a.eml"), "Subject: a\n\na\n").unwrap();
        std::fs::write(root.join(".hidden"), "x").unwrap();
        let maildir = root.join("z-maildir");
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(maildir.join(sub)).unwrap();
        }
        std::fs::write(maildir.join("cur/1:2,S"), "Subject: c\n\nc\n").unwrap();
        std::fs::write(maildir.join("new/2"), "Subject: d\n\nd\n").unwrap();
        std::fs::write(maildir.join("tmp/3"), "Subject: partial\n").unwrap();
        std::fs::write(
            root.join("m.mbox"),
            "From x Mon Jan  1 00:00:00 2024\nSubject: e\n\ne\n",
        )
        .unwrap();
        let mails = read(&[root.to_path_buf()]).unwrap();
        let subjects: Vec<String> = mails
            .iter()
            .map(|m| {
                String::from_utf8_lossy(&m.raw)
                    .lines()
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            subjects,
            [
                "Subject: a",
                "Subject: b",
                "Subject: e",
                "Subject: c",
                "Subject: d"
            ]
        );
        assert!(mails[2].origin.ends_with("m.mbox#1"), "{}", mails[2].origin);
        assert!(read(&[root.join("missing")]).is_err());
    }
}

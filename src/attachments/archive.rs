//! Zip archives (and OOXML, which is zip) walked in memory, nested zips included, within the
//! [`Limits`](super::Limits) of one attachment.
//!
//! Declared sizes are never trusted: every entry is decompressed through a reader capped at
//! what the limits still allow, so a bomb costs at most the limits, whatever its headers say.
//! Only containers (zips, compound files, the OOXML content-type list) are kept whole in
//! memory; of other entries only the first bytes are kept, to see what they are.

use std::io::{self, Cursor, Read};

use zip::{CompressionMethod, ExtraField, ZipArchive};

use super::names::{final_extension, printable};
use super::{
    ARCHIVE_BANNED_ENTRY, ARCHIVE_BOMB, ARCHIVE_ENCRYPTED, ARCHIVE_TOO_DEEP, ARCHIVE_UNREADABLE,
    AttachmentPolicy, OFFICE_MACRO,
};
use super::{Findings, office, sniff};

/// Bytes kept of an entry that is not a container: enough for any file signature and the PE
/// header that `e_lfanew` points at in real programs.
const HEAD_LEN: u64 = 64 * 1024;

/// Below this much output an entry is too small to be a bomb, whatever its ratio: a blank
/// spreadsheet or a log of repeated lines compresses far beyond 100:1 and harms nobody.
const RATIO_FLOOR: u64 = 1024 * 1024;

/// The AE-x (WinZip AES) extra field.
const AES_EXTRA_FIELD: u16 = 0x9901;

/// How sure we are that bytes are a zip before opening them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Certainty {
    /// The signature, name or declared type says zip: failing to open it is a finding.
    Claimed,
    /// Only an end record near the end suggests one (junk in front, self-extractors).
    Guessed,
}

/// One attachment's walk through its archives, with what its limits have left.
pub(super) struct Walk<'a> {
    policy: &'a AttachmentPolicy,
    findings: &'a mut Findings,
    entries_left: usize,
    bytes_left: u64,
    /// Set by a bomb: the attachment is settled, and reading on would only spend the budget.
    halted: bool,
}

/// What decompressing one entry gave.
enum Expansion {
    /// All its bytes when the caller asked to keep them, otherwise its first [`HEAD_LEN`].
    Read(Vec<u8>),
    /// It expanded beyond `max_ratio` times its compressed size.
    RatioExceeded,
    /// The attachment's total of `max_expanded_bytes` ran out.
    BudgetExceeded,
    Failed(io::Error),
}

impl<'a> Walk<'a> {
    pub(super) fn new(policy: &'a AttachmentPolicy, findings: &'a mut Findings) -> Walk<'a> {
        Walk {
            policy,
            findings,
            entries_left: policy.limits.max_entries,
            bytes_left: policy.limits.max_expanded_bytes,
            halted: false,
        }
    }

    /// Inspects `bytes` as a zip nested `depth` levels deep (1 for the attachment itself);
    /// `trail` names it in details ("invoice.zip → inner.zip").
    pub(super) fn zip(&mut self, bytes: &[u8], trail: &str, depth: usize, certainty: Certainty) {
        if depth > self.policy.limits.max_depth {
            let detail = format!(
                "{trail} (nested more than {} deep)",
                self.policy.limits.max_depth
            );
            self.findings.push(ARCHIVE_TOO_DEEP, detail);
            return;
        }
        let mut archive = match ZipArchive::new(Cursor::new(bytes)) {
            Ok(archive) => archive,
            Err(error) => {
                if certainty == Certainty::Claimed {
                    self.findings
                        .push(ARCHIVE_UNREADABLE, format!("{trail} ({error})"));
                }
                return;
            }
        };
        // Entries sharing a name hide all but one from any tool that looks them up by name.
        if archive.has_duplicate_names() {
            let detail = format!("{trail} (several entries share a name)");
            self.findings.push(ARCHIVE_UNREADABLE, detail);
        }
        // Entries sharing compressed bytes are the non-recursive zip bomb: each expands in
        // full, so the output grows with the square of the input. No real archive does this.
        if archive.has_overlapping_files().unwrap_or(false) {
            let detail = format!("{trail} (entries overlap)");
            self.findings.push(ARCHIVE_BOMB, detail);
            self.halted = true;
            return;
        }
        let mut macros_found = false;
        for index in 0..archive.len() {
            if self.halted {
                return;
            }
            if self.entries_left == 0 {
                let detail = format!(
                    "{trail} (more than {} entries)",
                    self.policy.limits.max_entries
                );
                self.findings.push(ARCHIVE_BOMB, detail);
                self.halted = true;
                return;
            }
            self.entries_left -= 1;
            self.entry(
                &mut archive,
                index,
                bytes.len(),
                trail,
                depth,
                &mut macros_found,
            );
        }
    }

    fn entry(
        &mut self,
        archive: &mut ZipArchive<Cursor<&[u8]>>,
        index: usize,
        archive_len: usize,
        trail: &str,
        depth: usize,
        macros_found: &mut bool,
    ) {
        // The raw view reads headers only, so it works on encrypted entries too.
        let (name, is_dir, encrypted, compressed_size) = match archive.by_index_raw(index) {
            Ok(raw) => (
                // UTF-8 when flagged or valid, CP437 otherwise, as unzip tools decode it.
                raw.name().map_or_else(
                    |_| String::from_utf8_lossy(raw.name_raw()).into_owned(),
                    |name| name.into_owned(),
                ),
                raw.is_dir(),
                raw.encrypted()
                    || raw.compression() == CompressionMethod::AES
                    || raw.extra_data_fields().any(|field| {
                        matches!(field, ExtraField::Custom(custom) if custom.header_id == AES_EXTRA_FIELD)
                    }),
                raw.compressed_size(),
            ),
            Err(error) => {
                let detail = format!("{trail} (entry {index}: {error})");
                self.findings.push(ARCHIVE_UNREADABLE, detail);
                return;
            }
        };
        if is_dir {
            return;
        }
        let entry_trail = format!("{trail} → {}", printable(&name));
        let extension = final_extension(&name);
        let banned = extension
            .as_deref()
            .is_some_and(|extension| self.policy.is_banned(extension));
        if banned {
            self.findings
                .push(ARCHIVE_BANNED_ENTRY, entry_trail.clone());
        }
        let is_vba_project = office::is_vba_project_part(&name);
        if is_vba_project && !*macros_found {
            *macros_found = true;
            self.findings.push(OFFICE_MACRO, entry_trail.clone());
        }
        if encrypted {
            self.findings.push(ARCHIVE_ENCRYPTED, entry_trail);
            return;
        }

        let is_content_types = office::is_content_types_part(&name);
        let named_zip = extension.as_deref() == Some("zip");
        let keep_all = |head: &[u8]| {
            is_content_types || named_zip || sniff::is_zip(head) || sniff::is_ole2(head)
        };
        // The data of an entry cannot be longer than what is left of the archive, whatever
        // its header claims; the ratio is taken against what can really have been read.
        let compressed_size = compressed_size.min(archive_len as u64);
        let expansion = match archive.by_index(index) {
            Ok(reader) => self.expand(reader, compressed_size, keep_all),
            Err(error) => Expansion::Failed(io::Error::other(error)),
        };
        let content = match expansion {
            Expansion::Read(content) => content,
            Expansion::RatioExceeded => {
                let detail = format!(
                    "{entry_trail} (expands over {}:1)",
                    self.policy.limits.max_ratio
                );
                self.findings.push(ARCHIVE_BOMB, detail);
                self.halted = true;
                return;
            }
            Expansion::BudgetExceeded => {
                let detail = format!(
                    "{entry_trail} (more than {} bytes expanded in all)",
                    self.policy.limits.max_expanded_bytes
                );
                self.findings.push(ARCHIVE_BOMB, detail);
                self.halted = true;
                return;
            }
            Expansion::Failed(error) => {
                let detail = format!("{entry_trail} ({error})");
                self.findings.push(ARCHIVE_UNREADABLE, detail);
                return;
            }
        };

        if !banned
            && let Some(kind) = sniff::executable(&content)
            && (kind.is_binary() || sniff::false_claim(kind, extension.as_deref(), "").is_some())
        {
            let detail = format!("{entry_trail} ({})", kind.describe());
            self.findings.push(ARCHIVE_BANNED_ENTRY, detail);
        }
        if is_content_types && !*macros_found && office::declares_macros(&content) {
            *macros_found = true;
            let detail = format!("{entry_trail} (macro-enabled document)");
            self.findings.push(OFFICE_MACRO, detail);
        }
        if named_zip || sniff::is_zip(&content) {
            self.zip(&content, &entry_trail, depth + 1, Certainty::Claimed);
        } else if sniff::is_ole2(&content) && !is_vba_project {
            match office::ole_macro_storage(&content) {
                Ok(Some(storage)) => {
                    let detail = format!("{entry_trail} → {storage}");
                    self.findings.push(OFFICE_MACRO, detail);
                }
                Ok(None) => {}
                Err(error) => {
                    let detail = format!("{entry_trail} ({error})");
                    self.findings.push(ARCHIVE_UNREADABLE, detail);
                }
            }
        }
    }

    /// Decompresses one entry through a cap: one byte past what the ratio and the remaining
    /// budget allow is enough to know a limit was crossed, and no more is ever produced.
    /// Every byte produced is charged, also when the entry turns out corrupt halfway.
    fn expand(
        &mut self,
        entry: impl Read,
        compressed_size: u64,
        keep_all: impl Fn(&[u8]) -> bool,
    ) -> Expansion {
        let ratio_limit = compressed_size
            .saturating_mul(self.policy.limits.max_ratio)
            .max(RATIO_FLOOR);
        let limit = ratio_limit.min(self.bytes_left);
        let mut metered = Metered {
            inner: entry.take(limit.saturating_add(1)),
            produced: 0,
        };

        let mut content = Vec::new();
        let head = (&mut metered).take(HEAD_LEN).read_to_end(&mut content);
        let read = head.and_then(|_| {
            if keep_all(&content) {
                metered.read_to_end(&mut content).map(drop)
            } else {
                io::copy(&mut metered, &mut io::sink()).map(drop)
            }
        });

        let ratio_was_binding = ratio_limit <= self.bytes_left;
        self.bytes_left = self.bytes_left.saturating_sub(metered.produced);
        if metered.produced > limit {
            return if ratio_was_binding {
                Expansion::RatioExceeded
            } else {
                Expansion::BudgetExceeded
            };
        }
        match read {
            Ok(()) => Expansion::Read(content),
            Err(error) => Expansion::Failed(error),
        }
    }
}

/// A reader that counts the bytes it hands out.
struct Metered<R> {
    inner: R,
    produced: u64,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.produced += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
pub(super) mod fixtures {
    use std::io::{Cursor, Write};

    use zip::write::{FileOptionExtension, FileOptions, SimpleFileOptions};
    use zip::{CompressionMethod, ZipWriter};

    /// A zip of `entries` (names ending in `/` are directories), deflated.
    pub(crate) fn deflated(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let options = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
        with_options(entries, options)
    }

    /// A zip of `entries`, stored uncompressed.
    pub(crate) fn stored(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let options = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
        with_options(entries, options)
    }

    pub(crate) fn with_options<T: FileOptionExtension + Clone>(
        entries: &[(&str, &[u8])],
        options: FileOptions<'_, '_, T>,
    ) -> Vec<u8> {
        let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data) in entries {
            if name.ends_with('/') {
                writer.add_directory(*name, options.clone()).unwrap();
            } else {
                writer.start_file(*name, options.clone()).unwrap();
                writer.write_all(data).unwrap();
            }
        }
        writer.finish().unwrap().into_inner()
    }

    /// Rewrites a little-endian field in every local (`PK\3\4`) and central (`PK\1\2`) header:
    /// what a hostile sender does to the bytes our writer produced.
    pub(crate) fn patch_headers(
        zip: &mut [u8],
        local_offset: usize,
        central_offset: usize,
        patch: impl Fn(&mut [u8]),
    ) {
        let mut at = 0;
        while at + 4 <= zip.len() {
            let field = match &zip[at..at + 4] {
                b"PK\x03\x04" => Some(at + local_offset),
                b"PK\x01\x02" => Some(at + central_offset),
                _ => None,
            };
            if let Some(field) = field {
                patch(&mut zip[field..]);
            }
            at += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use proptest::prelude::*;
    use zip::write::FullFileOptions;

    use super::fixtures::{deflated, patch_headers, stored, with_options};
    use super::*;
    use crate::attachments::office::fixtures::word_with_macros;
    use crate::attachments::{Finding, Limits, inspect};

    fn symbols(findings: &[Finding]) -> Vec<&'static str> {
        findings.iter().map(|f| f.symbol).collect()
    }

    fn check_with(limits: Limits, bytes: &[u8]) -> Vec<Finding> {
        let policy = AttachmentPolicy {
            limits,
            ..AttachmentPolicy::default()
        };
        inspect(Some("a.zip"), "application/zip", bytes, &policy)
    }

    fn check(bytes: &[u8]) -> Vec<Finding> {
        check_with(Limits::default(), bytes)
    }

    /// 42.zip in miniature: each level holds four copies of the level below, the bottom holds
    /// four entries of zeros. Fully expanded it is 4^levels × 16 MiB.
    fn nested_bomb(levels: usize) -> Vec<u8> {
        let zeros = vec![0u8; 4 * 1024 * 1024];
        let mut zip = deflated(&[
            ("0.bin", &zeros),
            ("1.bin", &zeros),
            ("2.bin", &zeros),
            ("3.bin", &zeros),
        ]);
        for _ in 1..levels {
            zip = deflated(&[
                ("0.zip", &zip),
                ("1.zip", &zip),
                ("2.zip", &zip),
                ("3.zip", &zip),
            ]);
        }
        zip
    }

    #[test]
    fn nested_zip_bomb_is_stopped_quickly() {
        // 4 levels: 4 GiB in all, the leaves at the deepest level still opened.
        let bomb = nested_bomb(4);
        assert!(
            bomb.len() < 100 * 1024,
            "the fixture itself is small: {}",
            bomb.len()
        );
        let started = Instant::now();
        let findings = check(&bomb);
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(symbols(&findings), [ARCHIVE_BOMB]);
        assert_eq!(
            findings[0].detail,
            "a.zip → 0.zip → 0.zip → 0.zip → 0.bin (expands over 100:1)"
        );
    }

    #[test]
    fn nested_zip_bomb_is_stopped_by_the_total_when_ratios_are_allowed() {
        let limits = Limits {
            max_ratio: u64::MAX,
            ..Limits::default()
        };
        let started = Instant::now();
        let findings = check_with(limits, &nested_bomb(4));
        assert!(started.elapsed() < Duration::from_secs(20));
        assert_eq!(symbols(&findings), [ARCHIVE_BOMB]);
        assert!(
            findings[0]
                .detail
                .ends_with("(more than 104857600 bytes expanded in all)")
        );
    }

    #[test]
    fn nested_zip_bomb_deeper_than_max_depth_is_too_deep() {
        let started = Instant::now();
        let findings = check(&nested_bomb(6));
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(!findings.is_empty());
        assert!(
            findings.iter().all(|f| f.symbol == ARCHIVE_TOO_DEEP),
            "{findings:?}"
        );
        assert_eq!(
            findings[0].detail,
            "a.zip → 0.zip → 0.zip → 0.zip → 0.zip (nested more than 4 deep)"
        );
    }

    #[test]
    fn total_expansion_counts_stored_entries_too() {
        let half_mib = vec![b'x'; 512 * 1024];
        let zip = stored(&[
            ("a.txt", &half_mib),
            ("b.txt", &half_mib),
            ("c.txt", &half_mib),
        ]);
        let limits = Limits {
            max_expanded_bytes: 1024 * 1024,
            ..Limits::default()
        };
        let findings = check_with(limits, &zip);
        assert_eq!(symbols(&findings), [ARCHIVE_BOMB]);
        assert_eq!(
            findings[0].detail,
            "a.zip → c.txt (more than 1048576 bytes expanded in all)"
        );
        assert_eq!(check(&zip), vec![]);
    }

    #[test]
    fn small_entries_are_no_bomb_whatever_their_ratio() {
        let zip = deflated(&[("blank.csv", &vec![b','; 512 * 1024])]);
        assert_eq!(check(&zip), vec![]);
        let zip = deflated(&[("zeros.bin", &vec![0u8; 2 * 1024 * 1024])]);
        assert_eq!(symbols(&check(&zip)), [ARCHIVE_BOMB]);
    }

    #[test]
    fn too_many_entries_is_a_bomb() {
        let names: Vec<String> = (0..10).map(|i| format!("{i}.txt")).collect();
        let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
        let limits = Limits {
            max_entries: 5,
            ..Limits::default()
        };
        let findings = check_with(limits, &stored(&entries));
        assert_eq!(symbols(&findings), [ARCHIVE_BOMB]);
        assert_eq!(findings[0].detail, "a.zip (more than 5 entries)");
    }

    #[test]
    fn overlapping_entries_are_a_bomb() {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default();
        writer.start_file("kernel.bin", options).unwrap();
        std::io::Write::write_all(&mut writer, &[0u8; 1000]).unwrap();
        writer.shallow_copy_file("kernel.bin", "copy.bin").unwrap();
        let zip = writer.finish().unwrap().into_inner();
        let findings = check(&zip);
        assert_eq!(symbols(&findings), [ARCHIVE_BOMB]);
        assert_eq!(findings[0].detail, "a.zip (entries overlap)");
    }

    #[test]
    fn declared_sizes_are_not_trusted() {
        // Headers that claim 4 GiB for a small entry do not make it a bomb...
        let mut zip = deflated(&[("note.txt", b"hello hello hello")]);
        patch_headers(&mut zip, 22, 24, |field| {
            field[..4].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        });
        assert_eq!(check(&zip), vec![]);
        // ...and headers that claim 10 bytes for 2 MiB hide nothing: the entry is unreadable.
        let mut zip = deflated(&[("zeros.bin", &vec![0u8; 2 * 1024 * 1024])]);
        patch_headers(&mut zip, 22, 24, |field| {
            field[..4].copy_from_slice(&10u32.to_le_bytes());
        });
        assert_eq!(symbols(&check(&zip)), [ARCHIVE_UNREADABLE]);
    }

    #[test]
    fn encrypted_flag_is_found() {
        let mut zip = stored(&[("readme.txt", b"hi"), ("secret.docx", b"ciphertext")]);
        // Set general-purpose bit 0 on the second entry only: local and central headers.
        let second_local = memchr::memmem::rfind(&zip, b"PK\x03\x04").unwrap();
        zip[second_local + 6] |= 1;
        let second_central = memchr::memmem::rfind(&zip, b"PK\x01\x02").unwrap();
        zip[second_central + 8] |= 1;
        let findings = check(&zip);
        assert_eq!(symbols(&findings), [ARCHIVE_ENCRYPTED]);
        assert_eq!(findings[0].detail, "a.zip → secret.docx");
    }

    #[test]
    fn aes_extra_field_is_encrypted_and_names_are_still_checked() {
        let mut options = FullFileOptions::default();
        // AE-2, vendor "AE", AES-256, then deflate: as WinZip writes it.
        options
            .add_extra_field(
                AES_EXTRA_FIELD,
                [0x02, 0x00, b'A', b'E', 0x03, 0x08, 0x00],
                false,
            )
            .unwrap();
        let zip = with_options(&[("invoice.exe", b"ciphertext")], options);
        let findings = check(&zip);
        assert_eq!(
            symbols(&findings),
            [ARCHIVE_BANNED_ENTRY, ARCHIVE_ENCRYPTED]
        );
    }

    #[test]
    fn duplicate_names_are_unreadable() {
        let mut zip = stored(&[("a.txt", b"one"), ("b.txt", b"two")]);
        patch_headers(&mut zip, 30, 46, |name| {
            if name.starts_with(b"b.txt") {
                name[0] = b'a';
            }
        });
        let findings = check(&zip);
        assert!(
            symbols(&findings).contains(&ARCHIVE_UNREADABLE),
            "{findings:?}"
        );
    }

    /// A zip with some of everything this module opens, to garble.
    fn specimen() -> Vec<u8> {
        let inner = deflated(&[("run.exe", b"x"), ("t.txt", b"text text text text")]);
        deflated(&[
            ("inner.zip", &inner),
            ("letter.doc", &word_with_macros()),
            ("[Content_Types].xml", b"<Types/>"),
            ("word/document.xml", &[b'w'; 3000]),
        ])
    }

    #[test]
    fn every_truncation_is_survived() {
        let zip = specimen();
        for len in 0..zip.len() {
            let _ = check(&zip[..len]);
            let _ = check(&zip[len..]);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn garbled_zips_never_panic(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16)
        ) {
            let mut zip = specimen();
            for (at, byte) in flips {
                let at = at.index(zip.len());
                zip[at] = byte;
            }
            let findings = check(&zip);
            prop_assert!(findings.len() <= 10 * 20);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut zip_like = b"PK\x03\x04".to_vec();
            zip_like.extend_from_slice(&bytes);
            let _ = check(&zip_like);
            let mut ole_like = vec![0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
            ole_like.extend_from_slice(&bytes);
            let _ = check(&ole_like);
            let _ = check(&bytes);
        }
    }
}

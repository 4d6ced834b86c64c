//! Attachment policy without a virus scanner: banned names and types, archives, macros.
//!
//! [`inspect`] looks at one attachment (its name, declared type and decoded bytes) and
//! returns [`Finding`]s, which a check turns into symbols. It owns the judgement of what a file
//! is (`sniff`), how its name will look and behave on Windows (`names`), what zips hold
//! (`archive`) and whether Office documents carry VBA (`office`). Zip is the one archive
//! format opened here; 7z, RAR and cab are left to ClamAV, which unpacks them. Mail in mail
//! (`message/rfc822`) is split by the MIME parser before this module sees it.
//!
//! Hostile input is expected: every bound in [`Limits`] turns into a finding when crossed, no
//! declared size is trusted, and a file that cannot be read is a finding, never an error.

mod archive;
mod names;
mod office;
mod sniff;

use std::borrow::Cow;
use std::panic::{self, AssertUnwindSafe};

use archive::{Certainty, Walk};

/// The name's final extension is on the banned list.
pub const ATTACHMENT_BANNED_EXTENSION: &str = "ATTACHMENT_BANNED_EXTENSION";
/// A trusted-looking extension in front of a banned one (`invoice.pdf.exe`).
pub const ATTACHMENT_DOUBLE_EXTENSION: &str = "ATTACHMENT_DOUBLE_EXTENSION";
/// The name holds bidi controls or invisible characters that disguise it.
pub const ATTACHMENT_RTLO_NAME: &str = "ATTACHMENT_RTLO_NAME";
/// The bytes are a program but the name or declared type claims something else.
pub const ATTACHMENT_DISGUISED_EXECUTABLE: &str = "ATTACHMENT_DISGUISED_EXECUTABLE";
/// A zip entry, at any depth, has a banned extension or is a program.
pub const ARCHIVE_BANNED_ENTRY: &str = "ARCHIVE_BANNED_ENTRY";
/// A zip entry is encrypted, so its content cannot be inspected.
pub const ARCHIVE_ENCRYPTED: &str = "ARCHIVE_ENCRYPTED";
/// Zips nested deeper than [`Limits::max_depth`].
pub const ARCHIVE_TOO_DEEP: &str = "ARCHIVE_TOO_DEEP";
/// A decompression bomb: an entry's ratio, the total expansion or the entry count crossed its
/// limit, or entries overlap.
pub const ARCHIVE_BOMB: &str = "ARCHIVE_BOMB";
/// Something that claims to be a zip (or is an OLE2 compound file) cannot be read.
pub const ARCHIVE_UNREADABLE: &str = "ARCHIVE_UNREADABLE";
/// An Office document carries a VBA project.
pub const OFFICE_MACRO: &str = "OFFICE_MACRO";

/// Symbol names with their default score and a one-line description, for the check that turns
/// findings into symbols. Scores are against the default thresholds (tag 5, quarantine 10,
/// reject 20): a program in any disguise quarantines on its own; what legitimate senders also
/// do (encrypted zips, macros, odd archives) only adds up.
pub const SYMBOLS: &[(&str, f64, &str)] = &[
    (
        ATTACHMENT_BANNED_EXTENSION,
        10.0,
        "Attachment has a banned file extension",
    ),
    (
        ATTACHMENT_DOUBLE_EXTENSION,
        5.0,
        "Attachment hides a banned extension behind a harmless-looking one",
    ),
    (
        ATTACHMENT_RTLO_NAME,
        8.0,
        "Attachment name uses invisible or direction-changing characters",
    ),
    (
        ATTACHMENT_DISGUISED_EXECUTABLE,
        12.0,
        "Attachment is a program disguised as another file type",
    ),
    (
        ARCHIVE_BANNED_ENTRY,
        10.0,
        "Archive contains a program or a file with a banned extension",
    ),
    (
        ARCHIVE_ENCRYPTED,
        3.0,
        "Archive contains encrypted files that cannot be inspected",
    ),
    (
        ARCHIVE_TOO_DEEP,
        4.0,
        "Archives are nested too deep to inspect",
    ),
    (ARCHIVE_BOMB, 15.0, "Archive is a decompression bomb"),
    (
        ARCHIVE_UNREADABLE,
        2.0,
        "Archive or Office file is corrupt and cannot be inspected",
    ),
    (OFFICE_MACRO, 5.0, "Office document contains VBA macros"),
];

/// Bounds on inspecting one attachment. Crossing one is a finding, never a crash or unbounded
/// allocation.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Archive nesting (zip in zip ...) opened; the attachment itself is level 1.
    pub max_depth: usize,
    /// Entries inspected across all nested archives of one attachment.
    pub max_entries: usize,
    /// Total bytes decompressed while inspecting one attachment.
    pub max_expanded_bytes: u64,
    /// Uncompressed/compressed size of one entry beyond which it is a bomb. Entries that
    /// expand to less than 1 MiB are never bombs, whatever their ratio.
    pub max_ratio: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_depth: 4,
            max_entries: 10_000,
            max_expanded_bytes: 100 * 1024 * 1024,
            max_ratio: 100,
        }
    }
}

/// What [`inspect`] holds attachments against.
#[derive(Debug, Clone)]
pub struct AttachmentPolicy {
    /// Extensions, lower case and without the dot, that are refused wherever they appear.
    pub banned_extensions: Vec<String>,
    pub limits: Limits,
}

impl Default for AttachmentPolicy {
    fn default() -> AttachmentPolicy {
        AttachmentPolicy {
            banned_extensions: names::DEFAULT_BANNED
                .iter()
                .flat_map(|group| group.iter())
                .map(|extension| extension.to_string())
                .collect(),
            limits: Limits::default(),
        }
    }
}

impl AttachmentPolicy {
    /// Whether a lower-case extension is banned. Tolerates list entries written `.EXE`.
    fn is_banned(&self, extension: &str) -> bool {
        self.banned_extensions.iter().any(|banned| {
            banned
                .trim_start_matches('.')
                .eq_ignore_ascii_case(extension)
        })
    }
}

/// One finding: the symbol name (constants above), and a detail naming the attachment (and the
/// archive path, e.g. "invoice.zip → docs/run.exe").
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub symbol: &'static str,
    pub detail: String,
}

/// Inspects one attachment: its file name as the sender gave it (may be None), its declared
/// Content-Type (lower case, e.g. "application/pdf"), and its decoded bytes.
pub fn inspect(
    name: Option<&str>,
    declared_type: &str,
    bytes: &[u8],
    policy: &AttachmentPolicy,
) -> Vec<Finding> {
    let mut findings = Findings::default();
    let label = name.map_or(Cow::Borrowed("unnamed attachment"), names::printable);
    let extension = name.and_then(names::final_extension);
    let banned = extension.as_deref().filter(|e| policy.is_banned(e));

    if let Some(name) = name {
        if let Some(extension) = banned {
            findings.push(
                ATTACHMENT_BANNED_EXTENSION,
                format!("{label} (.{extension})"),
            );
            if let Some(decoy) = names::decoy_extension(name) {
                let detail = format!("{label} (.{decoy} then .{extension})");
                findings.push(ATTACHMENT_DOUBLE_EXTENSION, detail);
            }
        }
        if let Some(c) = names::disguising_character(name) {
            let detail = format!("{label} (U+{:04X})", u32::from(c));
            findings.push(ATTACHMENT_RTLO_NAME, detail);
        }
    }

    let claimed_extension = extension.as_deref().filter(|_| banned.is_none());
    if let Some(kind) = sniff::executable(bytes)
        && let Some(claim) = sniff::false_claim(kind, claimed_extension, declared_type)
    {
        let detail = format!("{label} ({} {claim})", kind.describe());
        findings.push(ATTACHMENT_DISGUISED_EXECUTABLE, detail);
    }

    let zip_claimed = sniff::is_zip(bytes)
        || extension.as_deref() == Some("zip")
        || ZIP_TYPES.contains(&declared_type);
    if zip_claimed || sniff::has_zip_end_record(bytes) {
        let certainty = if zip_claimed {
            Certainty::Claimed
        } else {
            Certainty::Guessed
        };
        survive_parser(&mut findings, &label, |findings| {
            Walk::new(policy, findings).zip(bytes, &label, 1, certainty);
        });
    }
    if sniff::is_ole2(bytes) {
        survive_parser(
            &mut findings,
            &label,
            |findings| match office::ole_macro_storage(bytes) {
                Ok(Some(storage)) => findings.push(OFFICE_MACRO, format!("{label} → {storage}")),
                Ok(None) => {}
                Err(error) => findings.push(ARCHIVE_UNREADABLE, format!("{label} ({error})")),
            },
        );
    }
    findings.0
}

/// Declared types that say "zip".
const ZIP_TYPES: &[&str] = &[
    "application/zip",
    "application/x-zip",
    "application/x-zip-compressed",
];

/// Runs a third-party parser over hostile bytes. A bug in it must cost one attachment a
/// finding, not the message its verdict; what was found before it stays.
fn survive_parser(findings: &mut Findings, label: &str, parse: impl FnOnce(&mut Findings)) {
    if panic::catch_unwind(AssertUnwindSafe(|| parse(findings))).is_err() {
        findings.push(ARCHIVE_UNREADABLE, format!("{label} (parser failed)"));
    }
}

/// The findings of one attachment, at most [`Findings::PER_SYMBOL`] of each symbol.
#[derive(Debug, Default)]
struct Findings(Vec<Finding>);

impl Findings {
    /// The verdict needs one finding of a kind; a zip of ten thousand programs does not need
    /// ten thousand log details.
    const PER_SYMBOL: usize = 20;

    fn push(&mut self, symbol: &'static str, detail: impl Into<String>) {
        let seen = self.0.iter().filter(|f| f.symbol == symbol).count();
        if seen < Self::PER_SYMBOL {
            self.0.push(Finding {
                symbol,
                detail: detail.into(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::archive::fixtures::{deflated, stored};
    use super::office::fixtures::{compound_file, word_with_macros};
    use super::sniff::fixtures::{pdf, pe};
    use super::*;

    fn symbols(findings: &[Finding]) -> Vec<&'static str> {
        findings.iter().map(|f| f.symbol).collect()
    }

    fn check(name: &str, declared_type: &str, bytes: &[u8]) -> Vec<Finding> {
        inspect(
            Some(name),
            declared_type,
            bytes,
            &AttachmentPolicy::default(),
        )
    }

    #[test]
    fn real_pdf_named_pdf_is_clean() {
        assert_eq!(check("report.pdf", "application/pdf", &pdf()), vec![]);
    }

    #[test]
    fn banned_extension_is_found_whatever_the_case_and_trailing_dots() {
        let findings = check("Setup.EXE. .", "application/octet-stream", &pe());
        assert_eq!(symbols(&findings), [ATTACHMENT_BANNED_EXTENSION]);
        assert_eq!(findings[0].detail, "Setup.EXE. . (.exe)");
        assert_eq!(
            symbols(&check("notes.js", "text/plain", b"alert(1)")),
            [ATTACHMENT_BANNED_EXTENSION]
        );
        assert_eq!(check("archive.zip.txt", "text/plain", b"hello"), vec![]);
    }

    #[test]
    fn custom_banned_list_is_used() {
        let policy = AttachmentPolicy {
            banned_extensions: vec![".PDF".to_string()],
            ..AttachmentPolicy::default()
        };
        let findings = inspect(Some("a.pdf"), "application/pdf", &pdf(), &policy);
        assert_eq!(symbols(&findings), [ATTACHMENT_BANNED_EXTENSION]);
        assert_eq!(inspect(Some("a.exe"), "", b"text", &policy), vec![]);
    }

    #[test]
    fn double_extension_with_padding_is_found() {
        let findings = check("scan.jpg   .scr", "image/jpeg", b"not really");
        assert_eq!(
            symbols(&findings),
            [ATTACHMENT_BANNED_EXTENSION, ATTACHMENT_DOUBLE_EXTENSION]
        );
        assert_eq!(findings[1].detail, "scan.jpg   .scr (.jpg then .scr)");
        assert_eq!(
            symbols(&check("invoice.pdf.exe", "application/pdf", b"x")),
            [ATTACHMENT_BANNED_EXTENSION, ATTACHMENT_DOUBLE_EXTENSION]
        );
        // Dots that are part of a version or a minified name are no decoy.
        assert_eq!(
            symbols(&check("tool-1.2.exe", "", b"x")),
            [ATTACHMENT_BANNED_EXTENSION]
        );
    }

    #[test]
    fn rtlo_name_is_found_and_escaped_in_the_detail() {
        let findings = check("photo\u{202E}gpj.exe", "image/jpeg", b"x");
        assert_eq!(
            symbols(&findings),
            [ATTACHMENT_BANNED_EXTENSION, ATTACHMENT_RTLO_NAME]
        );
        assert_eq!(findings[1].detail, "photo\\u{202e}gpj.exe (U+202E)");
        let isolate = check("report\u{2066}.pdf", "application/pdf", &pdf());
        assert_eq!(symbols(&isolate), [ATTACHMENT_RTLO_NAME]);
    }

    #[test]
    fn executable_named_or_declared_as_a_document_is_disguised() {
        let findings = check("invoice.pdf", "application/pdf", &pe());
        assert_eq!(symbols(&findings), [ATTACHMENT_DISGUISED_EXECUTABLE]);
        assert_eq!(
            findings[0].detail,
            "invoice.pdf (Windows PE executable named .pdf)"
        );
        let unnamed = inspect(None, "image/png", &pe(), &AttachmentPolicy::default());
        assert_eq!(symbols(&unnamed), [ATTACHMENT_DISGUISED_EXECUTABLE]);
        let script = check("photo.jpg", "image/jpeg", b"#!/bin/sh\nrm -rf ~\n");
        assert_eq!(symbols(&script), [ATTACHMENT_DISGUISED_EXECUTABLE]);
    }

    #[test]
    fn honest_executables_are_not_disguised() {
        assert_eq!(
            symbols(&check("setup.exe", "application/x-msdownload", &pe())),
            [ATTACHMENT_BANNED_EXTENSION]
        );
        assert_eq!(check("deploy.sh", "text/plain", b"#!/bin/sh\n"), vec![]);
        assert_eq!(
            inspect(
                None,
                "application/octet-stream",
                &pe(),
                &AttachmentPolicy::default()
            ),
            vec![]
        );
        // "MZ" without a PE header is just two letters.
        assert_eq!(check("notes.txt", "text/plain", b"MZ notes"), vec![]);
    }

    #[test]
    fn plain_zip_of_text_files_is_clean() {
        let zip = deflated(&[
            ("a.txt", b"hello"),
            ("docs/b.txt", b"world"),
            ("docs/", b""),
        ]);
        assert_eq!(check("files.zip", "application/zip", &zip), vec![]);
    }

    #[test]
    fn banned_entry_is_named_with_its_path() {
        let zip = deflated(&[("readme.txt", b"hi"), ("docs/run.exe", b"anything")]);
        let findings = check("invoice.zip", "application/zip", &zip);
        assert_eq!(symbols(&findings), [ARCHIVE_BANNED_ENTRY]);
        assert_eq!(findings[0].detail, "invoice.zip → docs/run.exe");
    }

    #[test]
    fn program_inside_a_zip_is_found_by_its_bytes() {
        let zip = deflated(&[("report.pdf", &pe())]);
        let findings = check("invoice.zip", "application/zip", &zip);
        assert_eq!(symbols(&findings), [ARCHIVE_BANNED_ENTRY]);
        assert_eq!(
            findings[0].detail,
            "invoice.zip → report.pdf (Windows PE executable)"
        );
    }

    #[test]
    fn banned_entry_in_a_nested_zip_is_found() {
        let inner = deflated(&[("payload.scr", b"x")]);
        let outer = deflated(&[("inner.zip", &inner)]);
        let findings = check("outer.zip", "application/zip", &outer);
        assert_eq!(symbols(&findings), [ARCHIVE_BANNED_ENTRY]);
        assert_eq!(findings[0].detail, "outer.zip → inner.zip → payload.scr");
    }

    #[test]
    fn zip_behind_leading_junk_is_still_opened() {
        let mut bytes = b"GIF89a junk".to_vec();
        bytes.extend(stored(&[("run.exe", b"x")]));
        let findings = check("picture.gif", "image/gif", &bytes);
        assert_eq!(symbols(&findings), [ARCHIVE_BANNED_ENTRY]);
    }

    #[test]
    fn nesting_beyond_max_depth_is_too_deep() {
        let mut zip = deflated(&[("leaf.txt", b"x")]);
        for level in 0..5 {
            zip = deflated(&[(&format!("level{level}.zip"), &zip)]);
        }
        let findings = check("deep.zip", "application/zip", &zip);
        assert_eq!(symbols(&findings), [ARCHIVE_TOO_DEEP]);
        assert!(findings[0].detail.ends_with("(nested more than 4 deep)"));
        // Within the limit it is fine.
        let shallow = deflated(&[("a.zip", &deflated(&[("b.txt", b"x")]))]);
        assert_eq!(check("ok.zip", "application/zip", &shallow), vec![]);
    }

    #[test]
    fn corrupt_zip_is_unreadable_but_random_bytes_are_not() {
        let mut zip = deflated(&[("a.txt", b"hello")]);
        zip.truncate(zip.len() / 2);
        assert_eq!(
            symbols(&check("a.zip", "application/zip", &zip)),
            [ARCHIVE_UNREADABLE]
        );
        assert_eq!(
            symbols(&check("notes.bin", "application/zip", b"no zip here")),
            [ARCHIVE_UNREADABLE]
        );
        assert_eq!(
            check("notes.bin", "application/octet-stream", b"no zip here"),
            vec![]
        );
    }

    #[test]
    fn docx_without_macros_is_clean() {
        let docx = deflated(&[
            ("[Content_Types].xml", br#"<Types><Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>"#),
            ("_rels/.rels", b"<Relationships/>"),
            ("word/document.xml", b"<w:document/>"),
        ]);
        assert_eq!(
            check(
                "letter.docx",
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                &docx
            ),
            vec![]
        );
    }

    #[test]
    fn ooxml_with_a_vba_project_has_macros() {
        let project = compound_file(&[("/VBA", true), ("/VBA/_VBA_PROJECT", false)]);
        let docm = deflated(&[
            ("[Content_Types].xml", b"<Types/>"),
            ("word/document.xml", b"<w:document/>"),
            ("word/vbaProject.bin", &project),
        ]);
        let findings = check("letter.docx", "application/msword", &docm);
        assert_eq!(symbols(&findings), [OFFICE_MACRO]);
        assert_eq!(findings[0].detail, "letter.docx → word/vbaProject.bin");
    }

    #[test]
    fn macro_enabled_content_type_has_macros() {
        let xlsm = deflated(&[(
            "[Content_Types].xml",
            br#"<Override ContentType="application/vnd.ms-excel.sheet.macroEnabled.main+xml"/>"#,
        )]);
        assert_eq!(
            symbols(&check("book.xlsm", "application/octet-stream", &xlsm)),
            [OFFICE_MACRO]
        );
    }

    #[test]
    fn ole2_with_a_macros_storage_has_macros() {
        let findings = check("letter.doc", "application/msword", &word_with_macros());
        assert_eq!(symbols(&findings), [OFFICE_MACRO]);
        assert_eq!(findings[0].detail, "letter.doc → Macros");
        let plain = compound_file(&[("/WordDocument", false)]);
        assert_eq!(check("plain.doc", "application/msword", &plain), vec![]);
    }

    #[test]
    fn macro_document_inside_a_zip_is_found() {
        let zip = deflated(&[("letter.doc", &word_with_macros())]);
        let findings = check("mail.zip", "application/zip", &zip);
        assert_eq!(symbols(&findings), [OFFICE_MACRO]);
        assert_eq!(findings[0].detail, "mail.zip → letter.doc → Macros");
    }

    #[test]
    fn corrupt_ole2_is_unreadable() {
        let mut doc = word_with_macros();
        doc.truncate(600);
        assert_eq!(
            symbols(&check("letter.doc", "application/msword", &doc)),
            [ARCHIVE_UNREADABLE]
        );
    }

    #[test]
    fn every_symbol_is_listed_once_with_a_score() {
        let all = [
            ATTACHMENT_BANNED_EXTENSION,
            ATTACHMENT_DOUBLE_EXTENSION,
            ATTACHMENT_RTLO_NAME,
            ATTACHMENT_DISGUISED_EXECUTABLE,
            ARCHIVE_BANNED_ENTRY,
            ARCHIVE_ENCRYPTED,
            ARCHIVE_TOO_DEEP,
            ARCHIVE_BOMB,
            ARCHIVE_UNREADABLE,
            OFFICE_MACRO,
        ];
        assert_eq!(SYMBOLS.len(), all.len());
        for symbol in all {
            let listed: Vec<_> = SYMBOLS.iter().filter(|(s, _, _)| *s == symbol).collect();
            assert_eq!(listed.len(), 1, "{symbol}");
            assert!(listed[0].1 > 0.0 && !listed[0].2.is_empty(), "{symbol}");
            assert!(crate::verdict::is_symbol_name(symbol), "{symbol}");
        }
    }

    #[test]
    fn default_list_bans_what_it_should_and_not_zip() {
        let policy = AttachmentPolicy::default();
        for extension in [
            "exe",
            "scr",
            "js",
            "hta",
            "lnk",
            "iso",
            "ps1",
            "appref-ms",
            "msix",
        ] {
            assert!(policy.is_banned(extension), "{extension}");
        }
        for extension in ["zip", "pdf", "docx", "txt"] {
            assert!(!policy.is_banned(extension), "{extension}");
        }
    }

    #[test]
    fn findings_per_symbol_are_capped() {
        let names: Vec<String> = (0..100).map(|i| format!("run{i}.exe")).collect();
        let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
        let findings = check("many.zip", "application/zip", &stored(&entries));
        assert_eq!(findings.len(), Findings::PER_SYMBOL);
    }
}

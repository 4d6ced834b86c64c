//! What bytes really are, whatever the name says: executables, zip archives and OLE2
//! compound files; and whether a name or declared type claims something else.

use memchr::memmem;

/// A kind of program an operating system will run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Executable {
    /// Windows Portable Executable (programs, DLLs, drivers, .NET assemblies).
    Pe,
    Elf,
    MachO,
    /// Text that starts with `#!`.
    Script,
}

impl Executable {
    pub(super) fn describe(self) -> &'static str {
        match self {
            Executable::Pe => "Windows PE executable",
            Executable::Elf => "ELF executable",
            Executable::MachO => "Mach-O executable",
            Executable::Script => "#! script",
        }
    }

    /// Compiled code, as opposed to a script that is also readable text.
    pub(super) fn is_binary(self) -> bool {
        self != Executable::Script
    }

    /// Extensions that honestly name this kind of file.
    fn honest_extensions(self) -> &'static [&'static str] {
        match self {
            Executable::Pe => &[
                "exe", "dll", "sys", "drv", "scr", "com", "cpl", "ocx", "efi", "mui", "ax", "bin",
                "pyd", "node",
            ],
            Executable::Elf => &[
                "so", "o", "ko", "elf", "out", "run", "bin", "axf", "prx", "node",
            ],
            Executable::MachO => &["dylib", "bundle", "o", "out", "bin", "node"],
            Executable::Script => &[
                "sh", "bash", "zsh", "ksh", "csh", "fish", "py", "pl", "rb", "php", "lua", "tcl",
                "awk", "sed", "js", "cgi", "command", "run", "txt", "text", "in",
            ],
        }
    }

    /// Whether a declared Content-Type honestly describes this kind of file.
    fn honest_declared_type(self, declared: &str) -> bool {
        let declared = declared.split(';').next().unwrap_or_default().trim();
        let opaque = matches!(
            declared,
            "" | "application/octet-stream" | "application/binary" | "binary/octet-stream"
        );
        if opaque {
            return true;
        }
        let mentions = |words: &[&str]| words.iter().any(|word| declared.contains(word));
        match self {
            Executable::Script => declared.starts_with("text/") || mentions(SCRIPT_TYPE_WORDS),
            _ => mentions(PROGRAM_TYPE_WORDS),
        }
    }
}

/// Words in declared types that honestly name a program: "exe" covers x-dosexec,
/// x-executable and vnd.microsoft.portable-executable.
const PROGRAM_TYPE_WORDS: &[&str] = &[
    "exe",
    "msdownload",
    "msdos",
    "sharedlib",
    "elf",
    "mach",
    "binary",
];

/// Words in declared types that honestly name a script: application/x-sh, x-shellscript,
/// x-python, javascript.
const SCRIPT_TYPE_WORDS: &[&str] = &[
    "x-sh",
    "script",
    "shell",
    "python",
    "perl",
    "ruby",
    "php",
    "javascript",
];

/// What kind of executable `bytes` are, if any.
pub(super) fn executable(bytes: &[u8]) -> Option<Executable> {
    if is_pe(bytes) {
        Some(Executable::Pe)
    } else if infer::app::is_elf(bytes) {
        Some(Executable::Elf)
    } else if infer::app::is_mach(bytes) {
        Some(Executable::MachO)
    } else if is_script(bytes) {
        Some(Executable::Script)
    } else {
        None
    }
}

/// A Windows PE image: the DOS header's `e_lfanew` (at 0x3C) points at `PE\0\0`.
///
/// "MZ" alone is two printable letters that plenty of text starts with; the loader follows
/// e_lfanew, so we do too.
fn is_pe(bytes: &[u8]) -> bool {
    if !bytes.starts_with(b"MZ") {
        return false;
    }
    let Some(e_lfanew) = bytes.get(0x3C..0x40) else {
        return false;
    };
    let at = u32::from_le_bytes([e_lfanew[0], e_lfanew[1], e_lfanew[2], e_lfanew[3]]);
    usize::try_from(at)
        .ok()
        .and_then(|at| bytes.get(at..at.checked_add(4)?))
        == Some(b"PE\0\0")
}

/// `#!` followed by an interpreter path, as the kernel reads it (`#!/bin/sh`, `#! /usr/bin/env`).
fn is_script(bytes: &[u8]) -> bool {
    let Some(rest) = bytes.strip_prefix(b"#!") else {
        return false;
    };
    let rest = &rest[rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count()..];
    rest.starts_with(b"/")
}

/// What an extension or declared type claim the file is, when that is not this kind of
/// executable. `None` when the claim is honest (`tool.exe`) or there is none (no extension,
/// sent as `application/octet-stream`). Callers pass no extension when it is banned: that
/// name is honest about being dangerous, and reported as such already.
pub(super) fn false_claim(
    kind: Executable,
    extension: Option<&str>,
    declared_type: &str,
) -> Option<String> {
    if let Some(extension) = extension
        && !kind.honest_extensions().contains(&extension)
    {
        return Some(format!("named .{extension}"));
    }
    if !kind.honest_declared_type(declared_type) {
        return Some(format!("declared as {declared_type}"));
    }
    None
}

/// Starts with a zip signature (a local file header, or the end record of an empty archive).
pub(super) fn is_zip(bytes: &[u8]) -> bool {
    infer::archive::is_zip(bytes)
}

/// Has a zip end-of-central-directory record where one belongs: within the last 64 KiB
/// (the longest comment) plus the record. Zip readers look only there, so junk put in front
/// of a zip hides it from a check of the first bytes, but not from an unzip tool.
pub(super) fn has_zip_end_record(bytes: &[u8]) -> bool {
    const END_RECORD_LEN: usize = 22;
    let tail = &bytes[bytes
        .len()
        .saturating_sub(END_RECORD_LEN + usize::from(u16::MAX))..];
    memmem::rfind(tail, b"PK\x05\x06").is_some()
}

/// An OLE2 compound file: legacy Office documents (.doc, .xls, .ppt), MSI installers, and the
/// VBA project inside macro-enabled OOXML.
pub(super) fn is_ole2(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1])
}

#[cfg(test)]
pub(super) mod fixtures {
    /// A minimal PE: a DOS header whose e_lfanew points at a `PE\0\0` signature.
    pub(crate) fn pe() -> Vec<u8> {
        let mut bytes = vec![0u8; 0x100];
        bytes[..2].copy_from_slice(b"MZ");
        bytes[0x3C..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        bytes[0x80..0x84].copy_from_slice(b"PE\0\0");
        bytes
    }

    /// The start of a real PDF.
    pub(crate) fn pdf() -> Vec<u8> {
        b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
            .to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pe_needs_the_signature_e_lfanew_points_at() {
        assert_eq!(executable(&fixtures::pe()), Some(Executable::Pe));
        let mut only_mz = fixtures::pe();
        only_mz[0x80..0x84].copy_from_slice(b"XXXX");
        assert_eq!(executable(&only_mz), None);
        let mut out_of_bounds = fixtures::pe();
        out_of_bounds[0x3C..0x40].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(executable(&out_of_bounds), None);
        assert_eq!(executable(b"MZ"), None);
        assert_eq!(executable(b"MZ is how this text file starts"), None);
    }

    #[test]
    fn elf_mach_o_and_scripts_are_executables() {
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7FELF");
        assert_eq!(executable(&elf), Some(Executable::Elf));
        assert_eq!(
            executable(b"\xCF\xFA\xED\xFE\x07\x00\x00\x01"),
            Some(Executable::MachO)
        );
        assert_eq!(
            executable(b"#!/bin/sh\necho hi\n"),
            Some(Executable::Script)
        );
        assert_eq!(
            executable(b"#! /usr/bin/env python3\n"),
            Some(Executable::Script)
        );
        assert_eq!(executable(b"#!important note"), None);
        assert_eq!(executable(&fixtures::pdf()), None);
    }

    #[test]
    fn claims_are_judged_per_kind() {
        let pe = Executable::Pe;
        assert_eq!(
            false_claim(pe, Some("exe"), "application/octet-stream"),
            None
        );
        assert_eq!(
            false_claim(pe, Some("dll"), "application/x-msdownload"),
            None
        );
        assert_eq!(false_claim(pe, None, "application/octet-stream"), None);
        assert_eq!(
            false_claim(pe, Some("pdf"), "application/octet-stream").as_deref(),
            Some("named .pdf")
        );
        assert_eq!(
            false_claim(pe, None, "image/png").as_deref(),
            Some("declared as image/png")
        );
        assert_eq!(
            false_claim(pe, Some("exe"), "application/pdf").as_deref(),
            Some("declared as application/pdf")
        );
        let script = Executable::Script;
        assert_eq!(false_claim(script, Some("sh"), "text/plain"), None);
        assert_eq!(
            false_claim(script, Some("jpg"), "image/jpeg").as_deref(),
            Some("named .jpg")
        );
    }

    #[test]
    fn zip_end_record_is_found_behind_leading_junk() {
        let mut bytes = b"junk in front".to_vec();
        bytes.extend_from_slice(b"PK\x05\x06");
        bytes.extend_from_slice(&[0; 18]);
        assert!(!is_zip(&bytes));
        assert!(has_zip_end_record(&bytes));
        assert!(!has_zip_end_record(&fixtures::pdf()));
    }
}

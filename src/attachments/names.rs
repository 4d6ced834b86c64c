//! File names as the recipient's desktop will read them: the final extension (after the
//! trimming Windows does), decoy extensions in front of it, and invisible characters that make
//! a name display differently from what it is.

use std::borrow::Cow;

/// Extensions blocked by default, by what Windows does with them when double-clicked. The
/// list merges what Proxmox Mail Gateway and Rspamd block out of the box (Rspamd's "bad"
/// attachment and archive-entry extensions) with Windows' own list of executable types.
pub(super) const DEFAULT_BANNED: &[&[&str]] = &[
    PROGRAMS,
    SCRIPTS,
    INSTALLERS,
    POINTERS,
    HELP_FILES,
    DISK_IMAGES,
];

/// Programs, libraries, drivers, screen savers and control-panel items.
const PROGRAMS: &[&str] = &[
    "exe", "com", "scr", "pif", "dll", "sys", "drv", "vxd", "ocx", "cpl",
];

/// Run by Windows Script Host, cmd.exe, PowerShell or mshta.
const SCRIPTS: &[&str] = &[
    "bat", "cmd", "vbs", "vbe", "js", "jse", "wsf", "wsh", "ws", "wsc", "sct", "hta", "ps1",
    "ps1xml", "psc1", "psm1", "shs", "shb",
];

/// Installed or launched as packages.
const INSTALLERS: &[&str] = &[
    "msi",
    "msp",
    "msc",
    "jar",
    "apk",
    "appx",
    "appxbundle",
    "msix",
    "msixbundle",
    "gadget",
    "application",
    "appref-ms",
];

/// Shortcuts, registry and setup files that point Windows at something else to run.
const POINTERS: &[&str] = &["lnk", "url", "scf", "reg", "inf"];

/// Compiled help runs embedded script.
const HELP_FILES: &[&str] = &["chm", "hlp"];

/// Disk images open as a drive; what is inside them long escaped Mark-of-the-Web.
const DISK_IMAGES: &[&str] = &["iso", "img", "vhd", "vhdx"];

/// Extensions a reader trusts at a glance: placed before a banned one, they are a decoy.
const DECOYS: &[&str] = &[
    "pdf", "doc", "docx", "docm", "xls", "xlsx", "xlsm", "ppt", "pptx", "rtf", "odt", "ods", "odp",
    "txt", "csv", "htm", "html", "xml", "eml", "msg", "jpg", "jpeg", "png", "gif", "bmp", "tif",
    "tiff", "webp", "heic", "svg", "ico", "mp3", "mp4", "m4a", "wav", "wma", "avi", "mov", "mkv",
    "wmv", "mpg", "mpeg", "zip", "rar", "7z", "gz", "tar",
];

/// Names longer than this are cut in details: they end up in logs and the quarantine UI.
const MAX_PRINTED_CHARS: usize = 200;

/// The last path component of `name`, for names that carry a directory (zip entries, or
/// clients that send `C:\Users\...\file.exe`).
pub(super) fn base_name(name: &str) -> &str {
    name.rsplit(['/', '\\']).next().unwrap_or(name)
}

/// The name as Windows stores it: Win32 drops trailing dots and spaces, so `run.exe. .`
/// is saved (and run) as `run.exe`.
fn windows_trimmed(name: &str) -> &str {
    name.trim_end_matches(['.', ' '])
}

/// The final extension, lower case, without the dot; `None` when there is none.
pub(super) fn final_extension(name: &str) -> Option<String> {
    let name = windows_trimmed(base_name(name));
    let (_, extension) = name.rsplit_once('.')?;
    (!extension.is_empty()).then(|| extension.to_lowercase())
}

/// The decoy extension in front of the final one (`pdf` in `invoice.pdf.exe` or in
/// `scan.pdf    .exe`), when it is one a reader would trust.
pub(super) fn decoy_extension(name: &str) -> Option<String> {
    let name = windows_trimmed(base_name(name));
    let (stem, _) = name.rsplit_once('.')?;
    // Padding between the two extensions pushes the real one out of view in mail clients.
    let stem = stem.trim_end_matches(|c: char| c.is_whitespace() || is_invisible(c));
    let (_, decoy) = stem.rsplit_once('.')?;
    let decoy = decoy.to_lowercase();
    DECOYS.contains(&decoy.as_str()).then_some(decoy)
}

/// The first character that makes `name` display differently from what it is, if any.
///
/// Direction overrides, embeddings and isolates have no business in a file name: they reverse
/// `photo\u{202E}gpj.exe` into "photoexe.jpg" on screen. Zero-width and blank characters hide
/// or pad text anywhere. Joiners and direction marks are ordinary in Persian, Arabic, Hebrew
/// and Indic names, so they count only where they could disguise the extension: beside a dot
/// or inside the final extension.
pub(super) fn disguising_character(name: &str) -> Option<char> {
    if let Some(c) = name
        .chars()
        .find(|&c| is_direction_control(c) || is_invisible(c))
    {
        return Some(c);
    }
    let extension_start = name.rfind('.').map_or(name.len(), |dot| dot + 1);
    let mut previous = None;
    for (at, c) in name.char_indices() {
        if is_joiner_or_mark(c) {
            let beside_dot = previous == Some('.') || name[at + c.len_utf8()..].starts_with('.');
            if beside_dot || at >= extension_start {
                return Some(c);
            }
        }
        previous = Some(c);
    }
    None
}

/// Bidi embeddings and overrides (U+202A–U+202E) and isolates (U+2066–U+2069).
fn is_direction_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Characters that render as nothing (or as blank) without being ordinary spaces.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'                     // soft hyphen
            | '\u{034F}'               // combining grapheme joiner
            | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' // Hangul fillers
            | '\u{17B4}' | '\u{17B5}'  // Khmer inherent vowels
            | '\u{180B}'..='\u{180E}'  // Mongolian selectors and vowel separator
            | '\u{200B}'               // zero width space
            | '\u{2060}'..='\u{2064}'  // word joiner, invisible operators
            | '\u{206A}'..='\u{206F}'  // deprecated format controls
            | '\u{2800}'               // braille blank
            | '\u{FEFF}'               // zero width no-break space
            | '\u{FFF9}'..='\u{FFFB}'  // interlinear annotation
            | '\u{E0000}'..='\u{E007F}' // tags
    )
}

/// Zero-width joiners and direction marks: legitimate inside words of some scripts.
fn is_joiner_or_mark(c: char) -> bool {
    matches!(c, '\u{200C}'..='\u{200F}' | '\u{061C}')
}

/// `name` made safe for a log line or the UI: controls and invisible characters shown as
/// `\u{..}` escapes, and cut when very long.
pub(super) fn printable(name: &str) -> Cow<'_, str> {
    let needs_escape = |c: char| {
        c.is_control() || is_direction_control(c) || is_invisible(c) || is_joiner_or_mark(c)
    };
    if !name.chars().any(needs_escape) && name.chars().count() <= MAX_PRINTED_CHARS {
        return Cow::Borrowed(name);
    }
    let mut out = String::new();
    for (count, c) in name.chars().enumerate() {
        if count == MAX_PRINTED_CHARS {
            out.push('…');
            break;
        }
        if needs_escape(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_extension_is_lower_case_and_windows_trimmed() {
        assert_eq!(final_extension("Invoice.EXE").as_deref(), Some("exe"));
        assert_eq!(final_extension("run.exe. . ").as_deref(), Some("exe"));
        assert_eq!(
            final_extension("C:\\Users\\x\\run.scr").as_deref(),
            Some("scr")
        );
        assert_eq!(final_extension("docs/readme").as_deref(), None);
        assert_eq!(final_extension("dir.v2/readme").as_deref(), None);
        assert_eq!(final_extension("trailing.").as_deref(), None);
    }

    #[test]
    fn decoys_are_trusted_extensions_only() {
        assert_eq!(decoy_extension("invoice.pdf.exe").as_deref(), Some("pdf"));
        assert_eq!(decoy_extension("scan.JPG   .scr").as_deref(), Some("jpg"));
        assert_eq!(
            decoy_extension("scan.jpg\u{200B}.scr").as_deref(),
            Some("jpg")
        );
        assert_eq!(decoy_extension("jquery.min.js"), None);
        assert_eq!(decoy_extension("setup.v2.exe"), None);
        assert_eq!(decoy_extension("invoice.exe"), None);
    }

    #[test]
    fn direction_controls_and_invisible_characters_disguise() {
        assert_eq!(
            disguising_character("photo\u{202E}gpj.exe"),
            Some('\u{202E}')
        );
        assert_eq!(disguising_character("a\u{2067}b.pdf"), Some('\u{2067}'));
        assert_eq!(
            disguising_character("invoice\u{200B}.pdf"),
            Some('\u{200B}')
        );
        assert_eq!(disguising_character("report.pdf"), None);
    }

    #[test]
    fn joiners_inside_words_are_ordinary_text() {
        // Persian writes ZWNJ inside words: a name like this is ordinary.
        assert_eq!(disguising_character("می\u{200C}خواهم.pdf"), None);
        assert_eq!(disguising_character("report\u{200F}.pdf"), Some('\u{200F}'));
        assert_eq!(disguising_character("report.p\u{200D}df"), Some('\u{200D}'));
    }

    #[test]
    fn printable_escapes_controls_and_cuts_long_names() {
        assert_eq!(printable("a\u{202E}b\n.exe"), "a\\u{202e}b\\u{a}.exe");
        assert_eq!(printable("plain.pdf"), "plain.pdf");
        let long = "x".repeat(500);
        assert_eq!(printable(&long).chars().count(), MAX_PRINTED_CHARS + 1);
    }
}

//! VBA macros in Office documents, found by where Office keeps them; no macro is parsed.
//!
//! OOXML (docm, xlsm, pptm, ...) is a zip: the project is the `vbaProject.bin` part and
//! `[Content_Types].xml` declares a `macroEnabled` main part. Legacy binary documents are OLE2
//! compound files: Word keeps the project in a `Macros` storage, Excel in `_VBA_PROJECT_CUR`,
//! and every project has a `VBA` storage holding a `_VBA_PROJECT` stream. PowerPoint 97–2003
//! stores its project compressed inside the "PowerPoint Document" stream, so `.ppt` macros are
//! not seen here (ClamAV unpacks those).

use std::io::{self, Cursor};

/// Whether a zip entry name is an OOXML VBA project part (`word/vbaProject.bin`).
pub(super) fn is_vba_project_part(entry_name: &str) -> bool {
    super::names::base_name(entry_name).eq_ignore_ascii_case("vbaProject.bin")
}

/// Whether a zip entry name is the OOXML content-type list.
pub(super) fn is_content_types_part(entry_name: &str) -> bool {
    entry_name.eq_ignore_ascii_case("[Content_Types].xml")
}

/// Whether `[Content_Types].xml` declares a macro-enabled part, e.g.
/// `application/vnd.ms-word.document.macroEnabled.main+xml`.
pub(super) fn declares_macros(content_types: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"macroenabled";
    content_types
        .windows(NEEDLE.len())
        .any(|window| window.eq_ignore_ascii_case(NEEDLE))
}

/// The path of the storage or stream that shows an OLE2 file carries VBA (`Macros`,
/// `_VBA_PROJECT_CUR`, `ObjectPool/_1234/VBA/_VBA_PROJECT`), or `None` when it carries none.
/// An error means the bytes are not a readable compound file.
pub(super) fn ole_macro_storage(bytes: &[u8]) -> io::Result<Option<String>> {
    let file = cfb::CompoundFile::open(Cursor::new(bytes))?;
    // The directory was validated (no loops) when opened, and walking it reads no streams.
    let found = file.walk().find(|entry| {
        let name = entry.name();
        if entry.is_storage() {
            name.eq_ignore_ascii_case("Macros") || name.eq_ignore_ascii_case("_VBA_PROJECT_CUR")
        } else {
            name.eq_ignore_ascii_case("_VBA_PROJECT")
                && entry
                    .path()
                    .parent()
                    .and_then(|parent| parent.file_name())
                    .is_some_and(|parent| parent.eq_ignore_ascii_case("VBA"))
        }
    });
    Ok(found.map(|entry| {
        let path = entry.path().to_string_lossy();
        path.trim_start_matches('/').to_string()
    }))
}

#[cfg(test)]
pub(super) mod fixtures {
    use std::io::{Cursor, Write};

    /// An OLE2 compound file with the given storages and streams (`(path, is_storage)`).
    pub(crate) fn compound_file(entries: &[(&str, bool)]) -> Vec<u8> {
        let mut file = cfb::CompoundFile::create(Cursor::new(Vec::new())).unwrap();
        for (path, is_storage) in entries {
            if *is_storage {
                file.create_storage(path).unwrap();
            } else {
                file.create_stream(path)
                    .unwrap()
                    .write_all(b"Attribute VB_Name = \"ThisDocument\"")
                    .unwrap();
            }
        }
        file.flush().unwrap();
        file.into_inner().into_inner()
    }

    /// A Word 97–2003 document with a VBA project, as Word lays it out.
    pub(crate) fn word_with_macros() -> Vec<u8> {
        compound_file(&[
            ("/WordDocument", false),
            ("/Macros", true),
            ("/Macros/VBA", true),
            ("/Macros/VBA/_VBA_PROJECT", false),
            ("/Macros/VBA/dir", false),
            ("/Macros/PROJECT", false),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::compound_file;
    use super::*;

    #[test]
    fn word_macros_storage_is_found() {
        assert_eq!(
            ole_macro_storage(&fixtures::word_with_macros())
                .unwrap()
                .as_deref(),
            Some("Macros")
        );
    }

    #[test]
    fn excel_and_bare_vba_projects_are_found() {
        let excel = compound_file(&[("/Workbook", false), ("/_VBA_PROJECT_CUR", true)]);
        assert_eq!(
            ole_macro_storage(&excel).unwrap().as_deref(),
            Some("_VBA_PROJECT_CUR")
        );
        // What vbaProject.bin inside OOXML looks like.
        let project = compound_file(&[("/VBA", true), ("/VBA/_VBA_PROJECT", false)]);
        assert_eq!(
            ole_macro_storage(&project).unwrap().as_deref(),
            Some("VBA/_VBA_PROJECT")
        );
    }

    #[test]
    fn documents_without_vba_are_clean() {
        let plain = compound_file(&[("/WordDocument", false), ("/1Table", false)]);
        assert_eq!(ole_macro_storage(&plain).unwrap(), None);
        // A `_VBA_PROJECT` stream outside a VBA storage is not a project.
        let stray = compound_file(&[("/_VBA_PROJECT", false)]);
        assert_eq!(ole_macro_storage(&stray).unwrap(), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(ole_macro_storage(b"not a compound file").is_err());
        let mut truncated = fixtures::word_with_macros();
        truncated.truncate(600);
        assert!(ole_macro_storage(&truncated).is_err());
    }

    #[test]
    fn content_types_declare_macros() {
        assert!(declares_macros(
            br#"<Override ContentType="application/vnd.ms-word.document.macroEnabled.main+xml"/>"#
        ));
        assert!(!declares_macros(
            br#"<Override ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>"#
        ));
        assert!(is_vba_project_part("word/vbaProject.bin"));
        assert!(is_vba_project_part("xl/VBAPROJECT.BIN"));
        assert!(!is_vba_project_part("word/document.xml"));
    }
}

//! The `kala` binary's larger command groups (the library does the work; these parse the
//! arguments and print). Not part of the library.

pub mod rules;
pub mod track;

//! Document readers and writers: WARC/WET, JSONL and Parquet in; Parquet (zstd) out.
//!
//! ```no_run
//! use pipeline::io::{self, DocumentWriter, SkipCounts};
//! # fn main() -> anyhow::Result<()> {
//! let mut skips = SkipCounts::default();
//! let mut out = DocumentWriter::create("out/part-000000.parquet".as_ref())?;
//! for path in io::list_inputs("dumps/".as_ref())? {
//!     for item in io::read_documents(&path) {
//!         match item {
//!             Ok(doc) => out.write(&doc)?,
//!             Err(skip) => skips.record(&skip), // counted by kind, logged with file and offset
//!         }
//!     }
//! }
//! out.finish()?;
//! # Ok(()) }
//! ```
//!
//! Readers stream (memory bounded by one record or one Parquet row group), never panic on bad
//! input, and report each malformed record as a [`Skip`] item instead of stopping; a file that
//! cannot be read to its end yields a final `truncated_file`/`corrupt_compression` skip naming it.

mod html;
mod inputs;
mod jsonl;
mod parquet;
mod skip;
mod stream;
mod warc;

use std::path::Path;

pub use inputs::{list_inputs, list_inputs_all, open_decompressed, Compression, Format};
pub use parquet::{tmp_path, DocumentWriter, ParquetDocuments, COLUMNS, DEFAULT_BATCH_ROWS};
pub use skip::{Skip, SkipCounts, SkipKind};

use crate::doc::Document;
use crate::extract::TextMode;

/// How readers turn records into text where there is a choice (HTML pages of WARC responses).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Main content (default) or the whole page's text.
    pub html: TextMode,
}

/// Documents of one input file, or skips for what could not be read; boxed so every format has
/// one type and readers can move between threads.
pub type Documents = Box<dyn Iterator<Item = Result<Document, Skip>> + Send>;

/// Stream the documents of `path`, whose format and compression are told by its extension
/// (see [`Format`]). `source` defaults to the parent directory name (WARC: `isPartOf`). HTML
/// pages become their main content; see [`read_documents_with`] for the other choices.
pub fn read_documents(path: &Path) -> Documents {
    read_documents_with(path, ReadOptions::default())
}

/// [`read_documents`] with the choices of `options`.
pub fn read_documents_with(path: &Path, options: ReadOptions) -> Documents {
    let source = source_of(path);
    let Some(format) = Format::of(path) else {
        let skip = Skip::new(
            SkipKind::Unreadable,
            path,
            0,
            "unknown format (by extension)",
        );
        return Box::new(std::iter::once(Err(skip)));
    };
    let documents: Documents = match format {
        Format::Parquet => Box::new(ParquetDocuments::open(path, source)),
        Format::Warc | Format::Jsonl => match open_decompressed(path) {
            Err(e) => {
                let skip = Skip::new(SkipKind::Unreadable, path, 0, e.to_string());
                Box::new(std::iter::once(Err(skip)))
            }
            Ok(reader) if format == Format::Warc => Box::new(warc::WarcReader::new(
                path,
                stream::ByteStream::new(reader),
                source,
                options.html,
            )),
            Ok(reader) => Box::new(jsonl::JsonlReader::new(
                path,
                stream::ByteStream::new(reader),
                source,
            )),
        },
    };
    documents
}

/// Default dump name of a file: its parent directory's name.
pub fn source_of(path: &Path) -> String {
    path.parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Id of a record that carries none: `file-name:offset` (stable across machines and runs).
fn record_id(path: &Path, offset: u64) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    format!("{name}:{offset}")
}

/// ISO 639-1 code for the ISO 639-3 codes Common Crawl writes (`eng` → `en`); other values are
/// kept as they are.
fn lang_code(code: &str) -> String {
    const TABLE: [(&str, &str); 32] = [
        ("eng", "en"),
        ("zho", "zh"),
        ("spa", "es"),
        ("fra", "fr"),
        ("deu", "de"),
        ("rus", "ru"),
        ("jpn", "ja"),
        ("por", "pt"),
        ("ita", "it"),
        ("nld", "nl"),
        ("pol", "pl"),
        ("tur", "tr"),
        ("ara", "ar"),
        ("kor", "ko"),
        ("vie", "vi"),
        ("ind", "id"),
        ("ces", "cs"),
        ("swe", "sv"),
        ("fas", "fa"),
        ("ukr", "uk"),
        ("hun", "hu"),
        ("ell", "el"),
        ("ron", "ro"),
        ("dan", "da"),
        ("fin", "fi"),
        ("tha", "th"),
        ("heb", "he"),
        ("nor", "no"),
        ("hin", "hi"),
        ("cat", "ca"),
        ("bul", "bg"),
        ("slk", "sk"),
    ];
    let code = code.trim();
    TABLE
        .iter()
        .find(|(long, _)| *long == code)
        .map_or(code, |(_, short)| short)
        .to_string()
}

#[cfg(test)]
mod tests;

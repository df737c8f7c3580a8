//! What a reader says about a record it could not turn into a document: the kind (counted in the
//! manifest), the file and byte offset (logged), and a human-readable detail.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Why a record was skipped. Stages count skips by kind so the manifest says what was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SkipKind {
    /// The file ends in the middle of a gzip member, a zstd frame or a WARC record.
    TruncatedFile,
    /// The compressed stream is corrupt (bad header, checksum or block) before its end.
    CorruptCompression,
    /// A WARC record's `Content-Length` does not match where the next record starts.
    BadContentLength,
    /// A WARC record lacks `WARC/x.y`, `WARC-Type` or `Content-Length`, or its HTTP header is bad.
    MissingHeader,
    /// The text is not valid UTF-8.
    InvalidUtf8,
    /// The record has no text after extraction (or only whitespace).
    Empty,
    /// The payload is binary (NUL bytes in a text body).
    Binary,
    /// A WARC response that is not a page (image, PDF, JSON, feed, script …, by content type).
    NotHtml,
    /// A JSONL line is not a JSON object, or its `text` is missing or not a string.
    BadJson,
    /// A Parquet file has no string `text` column, or cannot be decoded.
    BadParquet,
    /// The file cannot be opened or read at all.
    Unreadable,
}

impl SkipKind {
    /// Every kind, in the order of the manifest.
    pub const ALL: [SkipKind; 11] = [
        SkipKind::TruncatedFile,
        SkipKind::CorruptCompression,
        SkipKind::BadContentLength,
        SkipKind::MissingHeader,
        SkipKind::InvalidUtf8,
        SkipKind::Empty,
        SkipKind::Binary,
        SkipKind::NotHtml,
        SkipKind::BadJson,
        SkipKind::BadParquet,
        SkipKind::Unreadable,
    ];

    /// Stable snake_case name used in manifests and logs.
    pub fn name(self) -> &'static str {
        match self {
            SkipKind::TruncatedFile => "truncated_file",
            SkipKind::CorruptCompression => "corrupt_compression",
            SkipKind::BadContentLength => "bad_content_length",
            SkipKind::MissingHeader => "missing_header",
            SkipKind::InvalidUtf8 => "invalid_utf8",
            SkipKind::Empty => "empty",
            SkipKind::Binary => "binary",
            SkipKind::NotHtml => "not_html",
            SkipKind::BadJson => "bad_json",
            SkipKind::BadParquet => "bad_parquet",
            SkipKind::Unreadable => "unreadable",
        }
    }

    /// Inverse of [`SkipKind::name`].
    pub fn from_name(name: &str) -> Option<SkipKind> {
        SkipKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for SkipKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One skipped record (or the rest of a file). Offsets are in the decompressed stream for
/// compressed files, and row numbers for Parquet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    pub kind: SkipKind,
    pub file: PathBuf,
    pub offset: u64,
    pub detail: String,
}

impl Skip {
    pub fn new(kind: SkipKind, file: &Path, offset: u64, detail: impl Into<String>) -> Skip {
        Skip {
            kind,
            file: file.to_path_buf(),
            offset,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file.display(),
            self.offset,
            self.kind,
            self.detail
        )
    }
}

impl std::error::Error for Skip {}

/// Skips counted by kind. Logging every skip of a badly broken dump would flood stderr, so
/// [`SkipCounts::record`] logs the first few per kind and the counts carry the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SkipCounts {
    pub by_kind: BTreeMap<SkipKind, u64>,
}

/// How many skips of one kind are logged before only counting.
const LOGGED_PER_KIND: u64 = 20;

impl SkipCounts {
    /// Count `skip` and log it to stderr (file, offset, kind, detail) while few of its kind were seen.
    pub fn record(&mut self, skip: &Skip) {
        let n = self.by_kind.entry(skip.kind).or_insert(0);
        *n += 1;
        if *n <= LOGGED_PER_KIND {
            eprintln!("warning: skipped {skip}");
        } else if *n == LOGGED_PER_KIND + 1 {
            eprintln!(
                "warning: more `{}` skips are counted, not logged",
                skip.kind
            );
        }
    }

    /// Add another set of counts (e.g. from another task) to these.
    pub fn merge(&mut self, other: &SkipCounts) {
        for (kind, n) in &other.by_kind {
            *self.by_kind.entry(*kind).or_insert(0) += n;
        }
    }

    pub fn total(&self) -> u64 {
        self.by_kind.values().sum()
    }

    /// Counts keyed by [`SkipKind::name`], for manifests.
    pub fn to_named(&self) -> BTreeMap<String, u64> {
        self.by_kind
            .iter()
            .map(|(k, n)| (k.name().to_string(), *n))
            .collect()
    }

    /// Inverse of [`SkipCounts::to_named`]; unknown names are an error so counts are never lost.
    pub fn from_named(named: &BTreeMap<String, u64>) -> anyhow::Result<SkipCounts> {
        let mut counts = SkipCounts::default();
        for (name, n) in named {
            let kind = SkipKind::from_name(name)
                .ok_or_else(|| anyhow::anyhow!("unknown skip kind `{name}`"))?;
            counts.by_kind.insert(kind, *n);
        }
        Ok(counts)
    }
}

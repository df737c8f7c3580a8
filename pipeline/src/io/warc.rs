//! Streaming WARC/WET reader: `response` records (HTML → text) and `conversion` records (WET
//! text) become documents; `warcinfo` names the dump (`isPartOf`). A record whose
//! `Content-Length` lies, or garbage between records, is skipped by resynchronising on the next
//! `WARC/` version line, so one broken record never costs the rest of the file.

use std::path::{Path, PathBuf};

use super::html::{find, response_text};
use super::skip::{Skip, SkipKind};
use super::stream::{skip_kind_of, ByteStream};
use super::{lang_code, record_id};
use crate::doc::{host_of, Document};
use crate::extract::TextMode;

/// Largest record block held in memory; Common Crawl truncates payloads at 1 MiB, so a larger
/// one is almost surely a lying `Content-Length` and is skipped without being buffered.
const MAX_BLOCK: u64 = 64 << 20;

/// Iterator over the documents of one WARC or WET file.
pub struct WarcReader {
    path: PathBuf,
    stream: ByteStream,
    /// Dump name: `isPartOf` of the last `warcinfo` record, else the parent directory name.
    source: String,
    done: bool,
    /// Set after a skipped record: the bytes up to the next version line belong to it and are
    /// not reported a second time.
    resyncing: bool,
    /// Which text of an HTML response becomes the document.
    html: TextMode,
}

struct Record {
    start: u64,
    headers: Vec<(String, String)>,
    block: Vec<u8>,
}

impl Record {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl WarcReader {
    pub fn new(path: &Path, stream: ByteStream, source: String, html: TextMode) -> WarcReader {
        WarcReader {
            path: path.to_path_buf(),
            stream,
            source,
            done: false,
            resyncing: false,
            html,
        }
    }

    fn skipped(&self, kind: SkipKind, offset: u64, detail: impl Into<String>) -> Skip {
        Skip::new(kind, &self.path, offset, detail)
    }

    /// A read error ends the file: report it as truncated or corrupt at the current offset.
    fn fail(&mut self, err: std::io::Error) -> Skip {
        self.done = true;
        let offset = self.stream.offset();
        self.skipped(
            skip_kind_of(&err),
            offset,
            format!("file ends unreadable: {err}"),
        )
    }

    /// Read the next record, or `Ok(None)` at a clean end of file.
    fn next_record(&mut self) -> Result<Option<Record>, Skip> {
        let mut line = Vec::new();
        // Version line, after blank lines; anything else is garbage to skip up to the next one.
        let mut garbage_at = None;
        loop {
            line.clear();
            let at = self.stream.offset();
            if self.stream.read_line(&mut line).map_err(|e| self.fail(e))? == 0 {
                self.done = true;
                return match garbage_at {
                    Some(at) if !self.resyncing => {
                        Err(self.skipped(SkipKind::TruncatedFile, at, "file ends inside a record"))
                    }
                    _ => Ok(None),
                };
            }
            if line.starts_with(b"WARC/") {
                if let Some(g) = garbage_at {
                    if !std::mem::take(&mut self.resyncing) {
                        self.stream.unread(&line);
                        return Err(self.skipped(
                            SkipKind::MissingHeader,
                            g,
                            "bytes without a WARC header",
                        ));
                    }
                }
                self.resyncing = false;
                break;
            }
            if !is_blank(&line) && garbage_at.is_none() {
                garbage_at = Some(at);
            }
        }
        let start = self.stream.offset() - line.len() as u64;
        let mut headers = Vec::new();
        loop {
            line.clear();
            if self.stream.read_line(&mut line).map_err(|e| self.fail(e))? == 0 {
                self.done = true;
                return Err(self.skipped(
                    SkipKind::TruncatedFile,
                    start,
                    "file ends in a WARC header",
                ));
            }
            if is_blank(&line) {
                break;
            }
            let text = String::from_utf8_lossy(&line);
            if let Some((k, v)) = text.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let length = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<u64>().ok());
        let Some(length) = length else {
            self.resyncing = true;
            return Err(self.skipped(SkipKind::MissingHeader, start, "no valid Content-Length"));
        };
        if length > MAX_BLOCK {
            let skipped = self.stream.discard(length).map_err(|e| self.fail(e))?;
            self.resyncing = true;
            let detail = format!("Content-Length {length} over the {MAX_BLOCK} byte limit");
            if skipped < length {
                self.done = true;
                return Err(self.skipped(SkipKind::TruncatedFile, start, detail));
            }
            return Err(self.skipped(SkipKind::BadContentLength, start, detail));
        }
        let mut block = Vec::with_capacity(length as usize);
        let got = self
            .stream
            .read_block(length as usize, &mut block)
            .map_err(|e| self.fail(e))?;
        // A correct length is followed by blank lines and then the next version line or the end.
        let mut trailer = Vec::new();
        let mut blank_lines = 0;
        let mut next_line_at;
        let next_ok = loop {
            next_line_at = trailer.len();
            if self
                .stream
                .read_line(&mut trailer)
                .map_err(|e| self.fail(e))?
                == 0
            {
                break true;
            }
            if is_blank(&trailer[next_line_at..]) {
                blank_lines += 1;
            } else {
                break trailer[next_line_at..].starts_with(b"WARC/") && blank_lines > 0;
            }
        };
        if got as u64 == length && next_ok {
            self.stream.unread(&trailer[next_line_at..]);
            return Ok(Some(Record {
                start,
                headers,
                block,
            }));
        }
        // The length lies. Too long: the next record starts inside the block; give it back.
        if let Some(i) = find(&block, b"\nWARC/") {
            let mut back = block[i + 1..].to_vec();
            back.extend_from_slice(&trailer);
            self.stream.unread(&back);
            let detail = format!("Content-Length {length} runs past the next record");
            return Err(self.skipped(SkipKind::BadContentLength, start, detail));
        }
        if (got as u64) < length {
            self.done = true;
            return Err(self.skipped(
                SkipKind::TruncatedFile,
                start,
                "file ends inside a record block",
            ));
        }
        // Too short: the rest of the block follows; skip it up to the next version line.
        self.stream.unread(&trailer);
        self.resyncing = true;
        let detail = format!("Content-Length {length} ends before the record does");
        Err(self.skipped(SkipKind::BadContentLength, start, detail))
    }

    /// Turn a record into a document; `Ok(None)` for records that carry none (request, metadata).
    fn document(&mut self, mut record: Record) -> Result<Option<Document>, Skip> {
        let kind = record
            .header("WARC-Type")
            .unwrap_or("")
            .to_ascii_lowercase();
        let text = match kind.as_str() {
            "warcinfo" => {
                let fields = String::from_utf8_lossy(&record.block);
                if let Some(name) = fields.lines().find_map(|l| l.strip_prefix("isPartOf:")) {
                    self.source = name.trim().to_string();
                }
                return Ok(None);
            }
            "conversion" => {
                if record.block.contains(&0) {
                    return Err(self.skipped(SkipKind::Binary, record.start, "NUL bytes in text"));
                }
                String::from_utf8(std::mem::take(&mut record.block))
                    .map_err(|e| self.skipped(SkipKind::InvalidUtf8, record.start, e.to_string()))?
            }
            "response" => response_text(&record.block, target_uri(&record), self.html)
                .map_err(|(kind, detail)| self.skipped(kind, record.start, detail))?,
            "" => {
                return Err(self.skipped(SkipKind::MissingHeader, record.start, "no WARC-Type"));
            }
            _ => return Ok(None),
        };
        let text = text.trim();
        if text.is_empty() {
            return Err(self.skipped(SkipKind::Empty, record.start, "no text"));
        }
        let url = target_uri(&record).to_string();
        let id = match record.header("WARC-Record-ID") {
            Some(id) if !id.is_empty() => id.to_string(),
            _ => record_id(&self.path, record.start),
        };
        let lang = record
            .header("WARC-Identified-Content-Language")
            .and_then(|l| l.split(',').next())
            .map(lang_code)
            .unwrap_or_default();
        let mut meta = std::collections::BTreeMap::new();
        if let Some(date) = record.header("WARC-Date") {
            meta.insert("date".to_string(), date.to_string());
        }
        Ok(Some(Document {
            id,
            text: text.to_string(),
            domain: host_of(&url),
            url,
            lang,
            source: self.source.clone(),
            meta,
        }))
    }
}

impl Iterator for WarcReader {
    type Item = Result<Document, Skip>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            match self.next_record() {
                Ok(Some(record)) => match self.document(record) {
                    Ok(Some(doc)) => return Some(Ok(doc)),
                    Ok(None) => {}
                    Err(skip) => return Some(Err(skip)),
                },
                Ok(None) => return None,
                Err(skip) => return Some(Err(skip)),
            }
        }
        None
    }
}

/// The record's `WARC-Target-URI`, without the angle brackets some writers put around it.
fn target_uri(record: &Record) -> &str {
    record
        .header("WARC-Target-URI")
        .unwrap_or("")
        .trim_matches(['<', '>'])
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| matches!(b, b'\r' | b'\n'))
}

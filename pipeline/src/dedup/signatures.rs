//! Step 1 (per input file): read documents, normalize, hash the text (and URL), compute MinHash
//! band keys, and write the bucket entries sorted by key partition, the per-document facts the
//! clustering needs, (with `--verify`) the shingle sets, and (scheme `datatrove`) every document's
//! signature, which orders its keep rule. Text is held one batch at a time.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::{xxh3_128, xxh3_128_with_seed};

use super::config::Scheme;
use super::layout::{doc_key, AtomicFile, DocMeta, Entry, Reason};
use super::Run;
use crate::doc::Document;
use crate::io::{read_documents_with, SkipCounts};
use crate::normalize::normalize;

/// Documents hashed in parallel at once: bounds the text held in memory by one file's worker.
const BATCH_DOCS: usize = 256;

/// Seed of URL hashes, so a URL and a text that happen to be equal never share a key.
const URL_SEED: u64 = 0x75726c;

/// What the signature step learned about one input file; its presence marks the file done.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FileStats {
    pub path: String,
    pub docs: u64,
    pub text_bytes: u64,
    pub per_source: BTreeMap<String, u64>,
    pub skipped: BTreeMap<String, u64>,
    /// Entries in each key partition of the `.entries` file, in partition order.
    pub partition_entries: Vec<u64>,
}

struct Hashed {
    meta: DocMeta,
    shingles: Vec<u64>,
    /// Empty for a document without shingles.
    signature: Vec<u64>,
    /// Its LSH band keys, computed here on the worker threads.
    bands: Vec<u128>,
}

fn hash_document(run: &Run, record: u64, doc: &Document) -> Hashed {
    // Scheme `datatrove` shingles the raw text; without exact dedup it needs no normalized text
    // (nor a text hash, which then labels no removal `exact`).
    let normalized = match (run.config.scheme, run.config.exact) {
        (Scheme::Datatrove, false) => String::new(),
        _ => normalize(&doc.text),
    };
    let text_hash = if normalized.is_empty() {
        0
    } else {
        xxh3_128(normalized.as_bytes())
    };
    let url_hash = if doc.url.is_empty() {
        0
    } else {
        xxh3_128_with_seed(doc.url.as_bytes(), URL_SEED)
    };
    let shingles = if run.config.near {
        run.hasher.shingles(&doc.text, &normalized)
    } else {
        Vec::new()
    };
    let signature = if shingles.is_empty() {
        Vec::new()
    } else {
        run.hasher.signature(&shingles)
    };
    Hashed {
        meta: DocMeta {
            record,
            text_hash,
            url_hash,
            shingles_at: 0,
            shingles_len: 0,
            source: doc.source.clone(),
            id: doc.id.clone(),
        },
        shingles,
        bands: if signature.is_empty() {
            Vec::new()
        } else {
            run.hasher.band_keys(&signature)
        },
        signature,
    }
}

/// Run the signature step for input file `file`.
pub fn run_file(run: &Run, file: usize) -> Result<FileStats> {
    let path = &run.inputs[file];
    let layout = &run.layout;
    let mut docs_out = AtomicFile::create(&layout.signatures(file, "docs"))?;
    let mut shingles_out = match run.config.verify {
        true => Some(AtomicFile::create(&layout.signatures(file, "shingles"))?),
        false => None,
    };
    // Fixed stride (zeros for a document without a signature), so a record's is found by offset.
    let mut sigs_out = match run.config.scheme == Scheme::Datatrove && run.config.near {
        true => Some(AtomicFile::create(&layout.signatures(file, "sigs"))?),
        false => None,
    };
    let stride = run.config.bands * run.config.rows;
    let mut stats = FileStats {
        path: path.display().to_string(),
        ..FileStats::default()
    };
    let mut skips = SkipCounts::default();
    let mut entries = Vec::new();
    let mut shingles_at = 0u64;
    let mut batch: Vec<Document> = Vec::with_capacity(BATCH_DOCS);
    let mut reader = read_documents_with(path, run.config.read_options()).peekable();
    while reader.peek().is_some() {
        batch.clear();
        for item in reader.by_ref() {
            match item {
                Ok(doc) => batch.push(doc),
                Err(skip) => skips.record(&skip),
            }
            if batch.len() == BATCH_DOCS {
                break;
            }
        }
        let first = stats.docs;
        let hashed: Vec<Hashed> = batch
            .par_iter()
            .enumerate()
            .map(|(i, doc)| hash_document(run, first + i as u64, doc))
            .collect();
        for (mut h, doc) in hashed.into_iter().zip(&batch) {
            let key = doc_key(file, h.meta.record);
            if run.config.exact && h.meta.text_hash != 0 {
                entries.push(Entry {
                    key: h.meta.text_hash,
                    doc: key,
                    reason: Reason::Exact,
                });
            }
            if run.config.url && h.meta.url_hash != 0 {
                entries.push(Entry {
                    key: h.meta.url_hash,
                    doc: key,
                    reason: Reason::Url,
                });
            }
            entries.extend(h.bands.iter().map(|&k| Entry {
                key: k,
                doc: key,
                reason: Reason::Near,
            }));
            if let Some(out) = sigs_out.as_mut() {
                h.signature.resize(stride, 0);
                for v in &h.signature {
                    out.writer.write_all(&v.to_le_bytes())?;
                }
            }
            if let Some(out) = shingles_out.as_mut() {
                h.meta.shingles_at = shingles_at;
                h.meta.shingles_len = h.shingles.len() as u32;
                for s in &h.shingles {
                    out.writer.write_all(&s.to_le_bytes())?;
                }
                shingles_at += h.shingles.len() as u64;
            }
            h.meta.write(&mut docs_out.writer)?;
            *stats.per_source.entry(doc.source.clone()).or_insert(0) += 1;
            stats.text_bytes += doc.text.len() as u64;
            stats.docs += 1;
        }
    }
    anyhow::ensure!(
        stats.docs < u32::MAX as u64,
        "{}: too many documents for one file",
        path.display()
    );
    let partitions = run.config.partitions;
    entries.par_sort_unstable_by_key(|e| (e.partition(partitions), e.key, e.doc, e.reason));
    stats.partition_entries = vec![0; partitions];
    let mut entries_out = AtomicFile::create(&layout.signatures(file, "entries"))?;
    for e in &entries {
        stats.partition_entries[e.partition(partitions)] += 1;
        e.write(&mut entries_out.writer)?;
    }
    stats.skipped = skips.to_named();
    entries_out.commit()?;
    docs_out.commit()?;
    for out in [shingles_out, sigs_out].into_iter().flatten() {
        out.commit()?;
    }
    let json = serde_json::to_vec_pretty(&stats)?;
    super::layout::write_atomic(&layout.signatures(file, "json"), &json)
        .with_context(|| format!("finishing signatures of {}", path.display()))?;
    Ok(stats)
}

//! Done-markers (one per finished input) and `manifest.json` (their sum), both JSON so any tool
//! can read what a shard directory holds without opening a shard.

use crate::format::Header;
use crate::stage::{DocIn, StageConfig};
use crate::writer::ShardStats;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Documents and tokens of one source or domain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Count {
    pub docs: u64,
    pub tokens: u64,
}

/// One shard file as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardEntry {
    pub file: String,
    pub docs: u64,
    pub tokens: u64,
    pub chunks: u64,
    pub bytes: u64,
}

impl ShardEntry {
    pub fn new(file: String, s: &ShardStats) -> ShardEntry {
        ShardEntry {
            file,
            docs: s.docs,
            tokens: s.tokens,
            chunks: s.chunks,
            bytes: s.file_bytes,
        }
    }
}

/// What one finished input produced; its presence (with matching settings) means "done".
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Marker {
    pub input: String,
    pub config: StageConfig,
    /// Hex, since JSON numbers lose precision above 2^53.
    pub tokenizer_hash: String,
    pub vocab_size: u32,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    /// Records the reader could not turn into documents.
    pub skipped: u64,
    pub shards: Vec<ShardEntry>,
    pub per_source: BTreeMap<String, Count>,
    pub per_domain: BTreeMap<String, Count>,
}

impl Marker {
    pub fn new(input: &Path, cfg: &StageConfig, h: &Header, skipped: u64) -> Marker {
        Marker {
            input: input.display().to_string(),
            config: cfg.clone(),
            tokenizer_hash: format!("{:016x}", h.tokenizer_hash),
            vocab_size: h.vocab_size,
            bos_id: h.bos_id,
            eos_id: h.eos_id,
            skipped,
            shards: Vec::new(),
            per_source: BTreeMap::new(),
            per_domain: BTreeMap::new(),
        }
    }

    /// Counts one written document.
    pub fn count(&mut self, doc: &DocIn, tokens: u64) {
        for (map, key) in [
            (&mut self.per_source, &doc.source),
            (&mut self.per_domain, &doc.domain),
        ] {
            let c = map.entry(key.clone()).or_default();
            c.docs += 1;
            c.tokens += tokens;
        }
    }

    /// Reads a marker; a missing or unreadable one means "not done".
    pub fn load(path: &Path) -> Option<Marker> {
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
    }

    /// Writes the marker (temp name, then rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        write_json(path, self)
    }

    /// True when this marker was made from `input` with the same settings and tokenizer, and
    /// its shards are still there at their recorded sizes.
    pub fn matches(&self, input: &Path, cfg: &StageConfig, h: &Header) -> bool {
        let c = &self.config;
        let dir = &cfg.output;
        self.input == input.display().to_string()
            && (c.shard_bytes, c.chunk_tokens, c.zstd_level, c.seed)
                == (cfg.shard_bytes, cfg.chunk_tokens, cfg.zstd_level, cfg.seed)
            && c.val_fraction == cfg.val_fraction
            && self.tokenizer_hash == format!("{:016x}", h.tokenizer_hash)
            && (self.vocab_size, self.bos_id, self.eos_id) == (h.vocab_size, h.bos_id, h.eos_id)
            && self
                .shards
                .iter()
                .all(|s| std::fs::metadata(dir.join(&s.file)).is_ok_and(|m| m.len() == s.bytes))
    }
}

/// `manifest.json` of a shard directory.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    pub stage: String,
    pub tool_version: String,
    /// False while some inputs have no done-marker yet (other tasks still running).
    pub complete: bool,
    pub inputs: Vec<String>,
    pub pending_inputs: Vec<String>,
    pub config: StageConfig,
    pub tokenizer_hash: String,
    pub vocab_size: u32,
    pub dtype: String,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub skipped: u64,
    pub docs: u64,
    pub tokens: u64,
    /// Total size of the shard files.
    pub bytes: u64,
    /// The same ids stored raw at the shard's width (uint16 or uint32).
    pub raw_bytes: u64,
    /// Megatron-LM `.bin` + `.idx` size for the same tokens and documents (uncompressed).
    pub megatron_bytes: u64,
    /// `raw_bytes / bytes`.
    pub compression_ratio: f64,
    pub shards: Vec<ShardEntry>,
    pub per_source: BTreeMap<String, Count>,
    pub per_domain: BTreeMap<String, Count>,
}

impl Manifest {
    /// Sums the done-markers of `inputs` found in the output directory.
    pub fn collect(inputs: &[PathBuf], cfg: &StageConfig, h: &Header) -> Result<Manifest> {
        let mut m = Manifest {
            stage: "shard".into(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            complete: true,
            inputs: inputs.iter().map(|p| p.display().to_string()).collect(),
            pending_inputs: Vec::new(),
            config: cfg.clone(),
            tokenizer_hash: format!("{:016x}", h.tokenizer_hash),
            vocab_size: h.vocab_size,
            dtype: format!("uint{}", h.dtype.width() * 8),
            bos_id: h.bos_id,
            eos_id: h.eos_id,
            skipped: 0,
            docs: 0,
            tokens: 0,
            bytes: 0,
            raw_bytes: 0,
            megatron_bytes: 0,
            compression_ratio: 0.0,
            shards: Vec::new(),
            per_source: BTreeMap::new(),
            per_domain: BTreeMap::new(),
        };
        for (i, input) in inputs.iter().enumerate() {
            let path = cfg.output.join(".done").join(format!("{i:05}.json"));
            let Some(marker) = Marker::load(&path).filter(|mk| mk.matches(input, cfg, h)) else {
                m.complete = false;
                m.pending_inputs.push(input.display().to_string());
                continue;
            };
            m.skipped += marker.skipped;
            for s in &marker.shards {
                m.docs += s.docs;
                m.tokens += s.tokens;
                m.bytes += s.bytes;
            }
            m.shards.extend(marker.shards);
            for (total, part) in [
                (&mut m.per_source, marker.per_source),
                (&mut m.per_domain, marker.per_domain),
            ] {
                for (k, c) in part {
                    let t = total.entry(k).or_default();
                    t.docs += c.docs;
                    t.tokens += c.tokens;
                }
            }
        }
        m.raw_bytes = m.tokens * h.dtype.width() as u64;
        m.megatron_bytes = megatron_bytes(m.tokens, m.docs, h.vocab_size);
        m.compression_ratio = if m.bytes > 0 {
            m.raw_bytes as f64 / m.bytes as f64
        } else {
            0.0
        };
        Ok(m)
    }

    /// Writes the manifest (temp name, then rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        write_json(path, self)
    }
}

/// Size of Megatron-LM's `.bin` + `.idx` (MMapIndexedDataset) for `docs` documents of `tokens`
/// tokens in total, one sequence per document: ids as uint16 below a 65,500 vocabulary else
/// int32; the index holds a 34-byte header, an int32 length and int64 pointer per sequence, and
/// `docs + 1` int64 document offsets.
pub fn megatron_bytes(tokens: u64, docs: u64, vocab_size: u32) -> u64 {
    let width = if vocab_size < 65_500 { 2 } else { 4 };
    tokens * width + 34 + docs * 12 + (docs + 1) * 8
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))?;
    Ok(())
}

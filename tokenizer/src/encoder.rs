//! [`Tokenizer`]: a loaded byte-level BPE tokenizer.json that encodes to exactly HF's ids and
//! decodes byte-exactly (when it has no normalizer).

use crate::added::{AddedVocab, Segment};
use crate::json;
use crate::model::Bpe;
use crate::normalizer::Normalizer;
use crate::post_processor::PostProcessor;
use crate::pre_tokenizer::PreTokenizer;
use anyhow::{Context, Result};
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use serde_json::Value;
use std::cell::RefCell;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// BOS candidates, in order of preference, among the special added tokens.
const BOS_NAMES: &[&str] = &[
    "<｜begin▁of▁sentence｜>",
    "<|begin_of_text|>",
    "<s>",
    "<|startoftext|>",
    "<bos>",
];
/// EOS candidates, in order of preference, among the special added tokens.
const EOS_NAMES: &[&str] = &[
    "<｜end▁of▁sentence｜>",
    "<|end_of_text|>",
    "</s>",
    "<|endoftext|>",
    "<eos>",
];

/// Pieces at most this long are cached per thread under a packed `u128` key; longer ones (few,
/// but costly to merge) under their bytes.
const CACHE_PACKED_MAX: usize = 15;
/// Pieces longer than this (long whitespace or CJK runs) are not cached at all.
const CACHE_LONG_MAX: usize = 256;
/// A thread's piece cache is cleared when it holds this many entries.
const CACHE_ENTRIES_MAX: usize = 1 << 18;

static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(0);

/// A byte-level BPE tokenizer loaded from a HF tokenizer.json.
pub struct Tokenizer {
    model: Bpe,
    added: AddedVocab,
    normalizer: Normalizer,
    pre_tokenizer: PreTokenizer,
    post_processor: PostProcessor,
    /// Bytes of every id, for decoding; empty for ids the file does not define.
    id_bytes: Vec<Vec<u8>>,
    hash: u64,
    bos: Option<u32>,
    eos: Option<u32>,
    /// Tells thread-local caches which tokenizer filled them.
    instance: u64,
}

/// Per-thread memo of piece → ids, values being ranges of `ids`. Short pieces (almost all) are
/// keyed by their bytes packed with their length: one integer compare instead of a memcmp.
struct Cache {
    instance: u64,
    map: FxHashMap<u128, (u32, u32)>,
    long: FxHashMap<Box<[u8]>, (u32, u32)>,
    ids: Vec<u32>,
}

impl Cache {
    fn clear(&mut self) {
        self.map.clear();
        self.long.clear();
        self.ids.clear();
    }
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache {
        instance: u64::MAX,
        map: FxHashMap::default(),
        long: FxHashMap::default(),
        ids: Vec::new(),
    });
}

/// `piece` (at most 15 bytes) and its length as one integer.
#[inline]
fn pack(piece: &[u8]) -> u128 {
    let mut bytes = [0u8; 16];
    bytes[..piece.len()].copy_from_slice(piece);
    bytes[15] = piece.len() as u8;
    u128::from_le_bytes(bytes)
}

impl Tokenizer {
    /// Loads any byte-level BPE tokenizer.json (ours or a published one).
    pub fn from_file(path: &Path) -> Result<Tokenizer> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read tokenizer {}", path.display()))?;
        Tokenizer::from_json_str(&text)
            .with_context(|| format!("cannot load tokenizer {}", path.display()))
    }

    /// Loads a tokenizer.json document held in memory.
    pub fn from_json_str(text: &str) -> Result<Tokenizer> {
        let doc: Value = serde_json::from_str(text).context("not valid JSON")?;
        let parts = json::import(&doc)?;
        let mut canonical = Vec::with_capacity(text.len());
        json::canonical(&doc, &mut canonical);
        let hash = xxhash_rust::xxh3::xxh3_64(&canonical);

        let max_id = parts
            .model
            .vocab
            .values()
            .chain(parts.added.iter().map(|t| &t.id))
            .max()
            .map_or(0, |&m| m as usize + 1);
        let mut id_bytes = vec![Vec::new(); max_id];
        for (token, &id) in &parts.model.vocab {
            id_bytes[id as usize] = crate::byte_level::decode_token(token);
        }
        for token in &parts.added {
            id_bytes[token.id as usize] = token.content.as_bytes().to_vec();
        }
        let find = |names: &[&str]| {
            names.iter().find_map(|name| {
                parts
                    .added
                    .iter()
                    .find(|t| t.special && t.content == *name)
                    .map(|t| t.id)
            })
        };
        Ok(Tokenizer {
            bos: find(BOS_NAMES),
            eos: find(EOS_NAMES),
            added: AddedVocab::new(parts.added, &parts.normalizer)?,
            model: parts.model,
            normalizer: parts.normalizer,
            pre_tokenizer: parts.pre_tokenizer,
            post_processor: parts.post_processor,
            id_bytes,
            hash,
            instance: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The ids of `text`, without the post-processor's special tokens: exactly what HF
    /// `encode(text, false)` gives. Added/special tokens written in the text are recognised.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        self.encode_into(text, &mut out);
        out
    }

    /// The ids of `text` with the special tokens the file's post-processor puts around one
    /// sequence (e.g. Llama-3's `<|begin_of_text|>`): exactly what HF `encode(text, true)` gives.
    pub fn encode_with_specials(&self, text: &str) -> Vec<u32> {
        let PostProcessor { before, after } = &self.post_processor;
        let mut out = Vec::with_capacity(before.len() + text.len() / 3 + 1 + after.len());
        out.extend_from_slice(before);
        self.encode_into(text, &mut out);
        out.extend_from_slice(after);
        out
    }

    /// The ids the file's post-processor puts before and after one sequence (empty when it adds
    /// none): the file's own BOS/EOS policy, for callers that assemble ids themselves.
    pub fn template_specials(&self) -> (&[u32], &[u32]) {
        (&self.post_processor.before, &self.post_processor.after)
    }

    /// Appends the ids of `text` (as [`Tokenizer::encode`]) to `out`.
    fn encode_into(&self, text: &str, out: &mut Vec<u32>) {
        CACHE.with(|cache| {
            let mut cache = cache.borrow_mut();
            if cache.instance != self.instance {
                cache.clear();
                cache.instance = self.instance;
            }
            self.added
                .split(text, &self.normalizer, &mut |segment| match segment {
                    Segment::Token(id) => out.push(id),
                    Segment::Text(t) => self
                        .pre_tokenizer
                        .split(t, |piece: &[u8]| self.encode_cached(piece, &mut cache, out)),
                });
        });
    }

    fn encode_cached(&self, piece: &[u8], cache: &mut Cache, out: &mut Vec<u32>) {
        if piece.len() == 1 || piece.len() > CACHE_LONG_MAX {
            return self.model.encode_piece(piece, out);
        }
        let packed = (piece.len() <= CACHE_PACKED_MAX).then(|| pack(piece));
        let hit = match packed {
            Some(key) => cache.map.get(&key),
            None => cache.long.get(piece),
        };
        if let Some(&(start, len)) = hit {
            let ids = &cache.ids[start as usize..(start + len) as usize];
            if let [id] = ids {
                out.push(*id);
            } else {
                out.extend_from_slice(ids);
            }
            return;
        }
        let start = out.len();
        self.model.encode_piece(piece, out);
        if cache.map.len() + cache.long.len() >= CACHE_ENTRIES_MAX {
            cache.clear();
        }
        let value = (cache.ids.len() as u32, (out.len() - start) as u32);
        cache.ids.extend_from_slice(&out[start..]);
        match packed {
            Some(key) => cache.map.insert(key, value),
            None => cache.long.insert(piece.into(), value),
        };
    }

    /// [`Tokenizer::encode`] over many texts in parallel (rayon).
    pub fn encode_batch(&self, texts: &[&str]) -> Vec<Vec<u32>> {
        texts.par_iter().map(|t| self.encode(t)).collect()
    }

    /// The bytes of `ids`, concatenated: `decode(encode(x)) == x` for any text when the
    /// tokenizer has no normalizer (one that changes text, such as NFKC, is not undone). Special
    /// tokens decode to their content; ids outside the vocabulary decode to nothing.
    pub fn decode(&self, ids: &[u32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            if let Some(bytes) = self.id_bytes.get(id as usize) {
                out.extend_from_slice(bytes);
            }
        }
        out
    }

    /// One past the largest id (model vocabulary and added tokens): the embedding table size.
    pub fn vocab_size(&self) -> usize {
        self.id_bytes.len()
    }

    /// The id of a token string (added tokens first, then the model vocabulary, as HF).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.added
            .tokens
            .iter()
            .find(|t| t.content == token)
            .map(|t| t.id)
            .or_else(|| self.model.vocab.get(token).copied())
    }

    /// The BOS id: the first special added token named like a BOS in common tokenizers
    /// (`<｜begin▁of▁sentence｜>`, `<|begin_of_text|>`, `<s>`, `<|startoftext|>`, `<bos>`).
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// The EOS id: the first special added token named like an EOS in common tokenizers
    /// (`<｜end▁of▁sentence｜>`, `<|end_of_text|>`, `</s>`, `<|endoftext|>`, `<eos>`).
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// xxh3-64 of the canonical tokenizer.json (compact, keys sorted): shards record it so a
    /// reader can tell which tokenizer made them, whatever the file's formatting.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// The added tokens (specials included) in file order, with the ids HF gives them.
    pub fn added_tokens(&self) -> &[crate::AddedToken] {
        &self.added.tokens
    }

    /// True when the tokenizer changes text before encoding it (a normalizer that is not empty),
    /// so that decoding gives the normalized text rather than the original.
    pub fn normalizes(&self) -> bool {
        !self.normalizer.is_identity()
    }

    /// The pre-tokenizer this tokenizer runs.
    pub fn pre_tokenizer(&self) -> &PreTokenizer {
        &self.pre_tokenizer
    }

    /// The number of entries in the model vocabulary (without added tokens).
    pub fn model_vocab_len(&self) -> usize {
        self.model.vocab.len()
    }
}

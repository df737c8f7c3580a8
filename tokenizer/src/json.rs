//! tokenizer.json import and export. Import reads any byte-level BPE file HF writes (merges as
//! `"a b"` strings or `["a", "b"]` pairs); export writes the layout HF 0.22 writes, so HF
//! tokenizers (Rust, Python) and transformers load our files.

use crate::added::AddedToken;
use crate::model::{Bpe, BpeOptions};
use crate::normalizer::Normalizer;
use crate::post_processor::PostProcessor;
use crate::pre_tokenizer::PreTokenizer;
use anyhow::{anyhow, bail, Context, Result};
use rustc_hash::FxHashMap;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::Value;

/// The parts of a tokenizer.json the encoder needs.
pub struct Parts {
    pub model: Bpe,
    pub added: Vec<AddedToken>,
    pub normalizer: Normalizer,
    pub pre_tokenizer: PreTokenizer,
    pub post_processor: PostProcessor,
}

/// Parses a tokenizer.json document. Errors name what is unsupported rather than guessing.
/// `truncation` and `padding` are ignored: whale encodes whole documents.
pub fn import(doc: &Value) -> Result<Parts> {
    let model = &doc["model"];
    check_byte_level_bpe(model)?;
    let vocab_obj = model["vocab"]
        .as_object()
        .ok_or_else(|| anyhow!("model.vocab is not an object"))?;
    let mut vocab = FxHashMap::with_capacity_and_hasher(vocab_obj.len(), Default::default());
    for (token, id) in vocab_obj {
        let id = id
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| anyhow!("vocab entry {token:?} has a bad id {id}"))?;
        vocab.insert(token.clone(), id);
    }
    let merges = parse_merges(&model["merges"], &vocab)?;
    let id_of = |name: &str| -> Result<Option<u32>> {
        match model[name].as_str() {
            None => Ok(None),
            Some(t) => vocab
                .get(t)
                .copied()
                .map(Some)
                .ok_or_else(|| anyhow!("{name} {t:?} is not in the vocabulary")),
        }
    };
    let options = BpeOptions {
        unk: id_of("unk_token")?,
        fuse_unk: model["fuse_unk"].as_bool().unwrap_or(false),
        ignore_merges: model["ignore_merges"].as_bool().unwrap_or(false),
    };
    let listed: Vec<AddedToken> = match &doc["added_tokens"] {
        Value::Null => Vec::new(),
        v => serde_json::from_value(v.clone()).context("added_tokens is malformed")?,
    };
    let added = assign_ids(listed, &vocab);
    Ok(Parts {
        model: Bpe::new(vocab, &merges, options),
        added,
        normalizer: Normalizer::from_json(&doc["normalizer"])?,
        pre_tokenizer: PreTokenizer::from_json(&doc["pre_tokenizer"])?,
        post_processor: PostProcessor::from_json(&doc["post_processor"])?,
    })
}

/// The added tokens with the ids HF gives them, which are not always the ids the file lists:
/// HF adds them in order, skipping empty contents; a content in the model vocabulary takes that
/// id, any other the next id from the model vocabulary's size on. Files HF wrote list exactly
/// these ids. A content listed twice keeps its first id and takes its last entry's flags.
fn assign_ids(listed: Vec<AddedToken>, vocab: &FxHashMap<String, u32>) -> Vec<AddedToken> {
    let mut added: Vec<AddedToken> = Vec::with_capacity(listed.len());
    let mut index: FxHashMap<String, usize> = FxHashMap::default();
    let mut next_id = vocab.len() as u32;
    for mut token in listed.into_iter().filter(|t| !t.content.is_empty()) {
        if let Some(&i) = index.get(&token.content) {
            token.id = added[i].id;
            added[i] = token;
            continue;
        }
        token.id = match vocab.get(&token.content) {
            Some(&id) => id,
            None => {
                next_id += 1;
                next_id - 1
            }
        };
        index.insert(token.content.clone(), added.len());
        added.push(token);
    }
    added
}

/// Fails, saying what the file looks like instead, unless `model` is a byte-level BPE.
fn check_byte_level_bpe(model: &Value) -> Result<()> {
    const WHALE: &str = "whale handles byte-level BPE tokenizers (GPT-2, Llama-3, Qwen, \
                         DeepSeek-V3 style)";
    let kind = model["type"].as_str().unwrap_or("BPE");
    let looks_like = match kind {
        "BPE" => None,
        "Unigram" => Some("a SentencePiece Unigram tokenizer"),
        "WordPiece" => Some("a WordPiece (BERT-style) tokenizer"),
        "WordLevel" => Some("a word-level tokenizer"),
        _ => Some("not a BPE tokenizer"),
    };
    if let Some(looks_like) = looks_like {
        bail!(
            "unsupported model type {kind:?} (model.type): {WHALE}; this looks like {looks_like}"
        );
    }
    for field in ["continuing_subword_prefix", "end_of_word_suffix"] {
        if let Some(v) = model[field].as_str().filter(|s| !s.is_empty()) {
            bail!(
                "unsupported model.{field} = {v:?}: {WHALE}; this looks like a character-level \
                 BPE with word markers"
            );
        }
    }
    if model["byte_fallback"].as_bool() == Some(true) {
        bail!(
            "unsupported model.byte_fallback = true: {WHALE}; this looks like a SentencePiece-style \
             BPE (Llama-2, Mistral) that falls back to <0xNN> byte tokens"
        );
    }
    if model["dropout"].as_f64().is_some_and(|p| p > 0.0) {
        bail!(
            "unsupported model.dropout = {}: BPE dropout makes encoding random; set it to null",
            model["dropout"]
        );
    }
    Ok(())
}

/// Merges as `(left, right, merged)` ids in rank order.
fn parse_merges(value: &Value, vocab: &FxHashMap<String, u32>) -> Result<Vec<(u32, u32, u32)>> {
    let list = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Array(list) => list,
        _ => bail!("model.merges is not a list"),
    };
    let id = |t: &str| {
        vocab
            .get(t)
            .copied()
            .ok_or_else(|| anyhow!("merge part {t:?} is not in the vocabulary"))
    };
    list.iter()
        .enumerate()
        .map(|(rank, m)| {
            let (a, b) = match m {
                Value::String(s) => s
                    .split_once(' ')
                    .ok_or_else(|| anyhow!("merge {rank} {s:?} is not \"a b\""))?,
                Value::Array(p) if p.len() == 2 && p[0].is_string() && p[1].is_string() => {
                    (p[0].as_str().unwrap_or(""), p[1].as_str().unwrap_or(""))
                }
                other => bail!("merge {rank} is malformed: {other}"),
            };
            Ok((id(a)?, id(b)?, id(&format!("{a}{b}"))?))
        })
        .collect()
}

/// A vocabulary serialized as a JSON object in id order, as HF writes it.
struct OrderedVocab<'a>(&'a [String]);

impl Serialize for OrderedVocab<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (id, token) in self.0.iter().enumerate() {
            map.serialize_entry(token, &id)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct ModelJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    dropout: Option<f32>,
    unk_token: Option<String>,
    continuing_subword_prefix: Option<String>,
    end_of_word_suffix: Option<String>,
    fuse_unk: bool,
    byte_fallback: bool,
    ignore_merges: bool,
    vocab: OrderedVocab<'a>,
    merges: Vec<[&'a str; 2]>,
}

#[derive(Serialize)]
struct TokenizerJson<'a> {
    version: &'static str,
    truncation: Option<Value>,
    padding: Option<Value>,
    added_tokens: Vec<AddedToken>,
    normalizer: Option<Value>,
    pre_tokenizer: Value,
    post_processor: Option<Value>,
    decoder: Value,
    model: ModelJson<'a>,
}

/// Writes a trained tokenizer: `vocab` in id order (specials first), `merges` in rank order as
/// id pairs, `specials` the ids of the special tokens.
pub fn export(
    vocab: &[String],
    merges: &[(u32, u32)],
    specials: &[u32],
    pre_tokenizer: Value,
) -> Result<String> {
    let doc = TokenizerJson {
        version: "1.0",
        truncation: None,
        padding: None,
        added_tokens: specials
            .iter()
            .map(|&id| AddedToken::special(id, &vocab[id as usize]))
            .collect(),
        normalizer: None,
        pre_tokenizer,
        post_processor: None,
        decoder: serde_json::json!({
            "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true
        }),
        model: ModelJson {
            kind: "BPE",
            dropout: None,
            unk_token: None,
            continuing_subword_prefix: None,
            end_of_word_suffix: None,
            fuse_unk: false,
            byte_fallback: false,
            ignore_merges: false,
            vocab: OrderedVocab(vocab),
            merges: merges
                .iter()
                .map(|&(a, b)| [vocab[a as usize].as_str(), vocab[b as usize].as_str()])
                .collect(),
        },
    };
    Ok(serde_json::to_string_pretty(&doc)?)
}

/// The canonical bytes of a JSON document: compact, object keys sorted, so the same tokenizer
/// hashes the same however its file was formatted.
pub fn canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend(serde_json::to_vec(k).expect("strings serialize"));
                out.push(b':');
                canonical(&map[k], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(item, out);
            }
            out.push(b']');
        }
        scalar => out.extend(serde_json::to_vec(scalar).expect("scalars serialize")),
    }
}

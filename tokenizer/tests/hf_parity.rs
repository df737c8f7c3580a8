//! Parity with HF tokenizers (the `tokenizers` crate): same merges from the same corpus, same
//! ids from the same tokenizer.json, and files each side can load from the other.

mod common;
mod compare;

use serde_json::{json, Value};
use std::str::FromStr;
use tokenizer::trainer::{train, Trained, TrainerConfig, WordCounts};
use tokenizer::{PreTokenizer, Tokenizer};
use tokenizers::models::bpe::BpeTrainerBuilder;
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;

const SPECIALS: [&str; 3] = [
    "<｜begin▁of▁sentence｜>",
    "<｜end▁of▁sentence｜>",
    "<｜▁pad▁｜>",
];

/// An untrained HF tokenizer with the preset's pre-tokenizer.
fn hf_empty(pre: &PreTokenizer) -> tokenizers::Tokenizer {
    let doc = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": pre.preset_json().unwrap(), "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": {}, "merges": []}
    });
    tokenizers::Tokenizer::from_str(&doc.to_string()).unwrap()
}

fn hf_train(pre: &PreTokenizer, docs: &[String], vocab: usize, min_freq: u64) -> String {
    let mut hf = hf_empty(pre);
    let trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab)
        .min_frequency(min_freq)
        .show_progress(false)
        .special_tokens(
            SPECIALS
                .iter()
                .map(|s| tokenizers::AddedToken::from(*s, true))
                .collect(),
        )
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut trainer = TrainerWrapper::from(trainer);
    hf.train(&mut trainer, docs.iter()).unwrap();
    hf.to_string(false).unwrap()
}

fn ours_train(pre: &PreTokenizer, docs: &[String], vocab: usize, min_freq: u64) -> Trained {
    let mut counts = WordCounts::default();
    for batch in docs.chunks(97) {
        counts.add_batch(pre, batch);
    }
    let config = TrainerConfig {
        vocab_size: vocab,
        min_frequency: min_freq,
        special_tokens: SPECIALS.iter().map(|s| s.to_string()).collect(),
    };
    train(&counts, &config, &|_| {}).unwrap()
}

fn merges_of(doc: &Value) -> Vec<String> {
    doc["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m {
            Value::String(s) => s.clone(),
            Value::Array(p) => format!("{} {}", p[0].as_str().unwrap(), p[1].as_str().unwrap()),
            other => panic!("bad merge {other}"),
        })
        .collect()
}

fn assert_same_training(pre: &PreTokenizer, docs: &[String], vocab: usize, min_freq: u64) {
    let hf_json = hf_train(pre, docs, vocab, min_freq);
    let ours = ours_train(pre, docs, vocab, min_freq);
    let our_json = ours.to_json(pre).unwrap();
    let hf_doc: Value = serde_json::from_str(&hf_json).unwrap();
    let our_doc: Value = serde_json::from_str(&our_json).unwrap();
    let (hf_merges, our_merges) = (merges_of(&hf_doc), merges_of(&our_doc));
    assert!(hf_merges.len() > vocab / 2, "corpus too small for the test");
    if let Some(i) =
        (0..hf_merges.len().min(our_merges.len())).find(|&i| hf_merges[i] != our_merges[i])
    {
        panic!(
            "merge {i} differs: HF {:?}, ours {:?}",
            hf_merges[i], our_merges[i]
        );
    }
    assert_eq!(hf_merges.len(), our_merges.len());
    assert_eq!(hf_doc["model"]["vocab"], our_doc["model"]["vocab"]);
    assert_eq!(hf_doc["added_tokens"], our_doc["added_tokens"]);
    check_encoding(&our_json, docs);
    check_encoding(&hf_json, docs);
}

/// Both libraries load `json` and give the same ids on the corpus and the edge cases, with
/// special tokens written into the text; and our decode inverts our encode.
fn check_encoding(json: &str, docs: &[String]) {
    let mut texts: Vec<String> = docs.iter().take(300).cloned().collect();
    texts.extend(common::edge_cases());
    texts.push(format!(
        "{}Hello{} world{}",
        SPECIALS[0], SPECIALS[1], SPECIALS[2]
    ));
    texts.push(format!("a{}{}b {} ", SPECIALS[1], SPECIALS[1], SPECIALS[0]));
    compare::assert_same_ids(json, &texts);
    let ours = Tokenizer::from_json_str(json).unwrap();
    for text in &texts {
        let ids = ours.encode(text);
        assert_eq!(
            ours.decode(&ids),
            text.as_bytes(),
            "round trip fails on {text:?}"
        );
    }
    let hf = tokenizers::Tokenizer::from_str(json).unwrap();
    assert_eq!(ours.vocab_size(), hf.get_vocab_size(true));
}

#[test]
fn deepseek_v3_training_matches_hf() {
    let docs = common::corpus(1, 3_000_000);
    assert_same_training(&PreTokenizer::DeepSeekV3, &docs, 4000, 2);
}

#[test]
fn gpt2_training_matches_hf() {
    let docs = common::corpus(2, 600_000);
    assert_same_training(&PreTokenizer::Gpt2, &docs, 1500, 0);
}

#[test]
fn special_tokens_and_ids_are_policy() {
    let docs = common::corpus(3, 100_000);
    let pre = PreTokenizer::DeepSeekV3;
    let json = ours_train(&pre, &docs, 600, 0).to_json(&pre).unwrap();
    let tok = Tokenizer::from_json_str(&json).unwrap();
    assert_eq!(tok.bos_id(), Some(0));
    assert_eq!(tok.eos_id(), Some(1));
    assert_eq!(tok.token_to_id(SPECIALS[2]), Some(2));
    assert_eq!(tok.token_to_id("Ġ"), Some(3 + 'Ġ' as u32 - 256 + 188));
    assert_eq!(tok.vocab_size(), 600);
    let reformatted =
        serde_json::to_string(&serde_json::from_str::<Value>(&json).unwrap()).unwrap();
    let same = Tokenizer::from_json_str(&reformatted).unwrap();
    assert_eq!(
        tok.hash(),
        same.hash(),
        "hash must not depend on formatting"
    );
    let other = ours_train(&pre, &docs, 601, 0).to_json(&pre).unwrap();
    assert_ne!(tok.hash(), Tokenizer::from_json_str(&other).unwrap().hash());
}

#[test]
fn general_pre_tokenizers_and_added_tokens_match_hf() {
    let docs = common::corpus(4, 200_000);
    let pre = PreTokenizer::DeepSeekV3;
    let base: Value =
        serde_json::from_str(&ours_train(&pre, &docs, 1200, 0).to_json(&pre).unwrap()).unwrap();
    let bl = |prefix: bool, regex: bool| json!({"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": true, "use_regex": regex});
    let split = |pattern: Value, behavior: &str, invert: bool| json!({"type": "Split", "pattern": pattern, "behavior": behavior, "invert": invert});
    let variants = [
        bl(true, true),
        bl(false, false),
        json!({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, bl(false, true)]}),
        json!({"type": "Sequence", "pretokenizers": [split(json!({"String": " "}), "MergedWithNext", false), {"type": "Digits", "individual_digits": false}, bl(false, false)]}),
        json!({"type": "Sequence", "pretokenizers": [split(json!({"Regex": r"\s+"}), "Removed", false), bl(true, false)]}),
        json!({"type": "Sequence", "pretokenizers": [split(json!({"Regex": "[0-9]+"}), "MergedWithPrevious", true), bl(false, false)]}),
        json!({"type": "Sequence", "pretokenizers": [split(json!({"Regex": r"\p{P}"}), "Contiguous", false), bl(false, false)]}),
    ];
    let mut texts: Vec<String> = docs.iter().take(40).cloned().collect();
    texts.extend(common::edge_cases());
    texts.push("the whale  whales whale, <x> a lstrip   b rstrip   c".to_string());
    let vocab_len = base["model"]["vocab"].as_object().unwrap().len() as u64;
    for variant in variants {
        let mut doc = base.clone();
        doc["pre_tokenizer"] = variant;
        let added = doc["added_tokens"].as_array_mut().unwrap();
        for (i, (content, single_word, lstrip, rstrip, normalized)) in [
            ("whale", true, false, false, true),
            ("<x>", false, false, false, false),
            ("lstrip", false, true, false, false),
            ("rstrip", false, false, true, true),
        ]
        .into_iter()
        .enumerate()
        {
            added.push(
                json!({"id": vocab_len + i as u64, "content": content, "single_word": single_word,
                "lstrip": lstrip, "rstrip": rstrip, "normalized": normalized, "special": false}),
            );
        }
        compare::assert_same_ids(&doc.to_string(), &texts);
    }
}

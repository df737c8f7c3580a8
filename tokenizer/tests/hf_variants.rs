//! A trained tokenizer with each normalizer, each post-processor and added tokens with every flag
//! combination swapped in: whale's ids equal HF's for `encode(text, false)` and
//! `encode(text, true)`.

mod common;
mod compare;

use compare::{assert_same_ids, Compared};
use serde_json::{json, Value};
use std::sync::LazyLock;
use tokenizer::fit::{fit, TrainSettings};
use tokenizer::Tokenizer;

/// A small DeepSeek-V3-style tokenizer (BOS 0, EOS 1, pad 2), trained once per test binary.
static BASE: LazyLock<Value> = LazyLock::new(|| {
    let settings = TrainSettings {
        vocab_size: 1500,
        min_frequency: 0,
        ..TrainSettings::default()
    };
    let (json, _) = fit(common::corpus(11, 300_000).into_iter(), &settings, false).unwrap();
    serde_json::from_str(&json).unwrap()
});

fn first_free_id() -> u64 {
    BASE["model"]["vocab"].as_object().unwrap().len() as u64
}

/// Added-token contents: letters (for `single_word`), markup, compatibility characters that NFKC
/// rewrites, surrounding spaces (for Strip), a word already in the vocabulary, Greek capitals
/// (for Lowercase).
const CONTENTS: [&str; 8] = ["Whale", "<x>", "ﬁsh", " pad ", "ＡＢ", "the", "ΣΑΣ", "①"];

/// 32 added tokens, one per combination of `single_word`, `lstrip`, `rstrip`, `normalized` and
/// `special`, with distinct contents.
fn added_tokens() -> Vec<Value> {
    (0..32usize)
        .map(|i| {
            let flag = |bit: usize| i >> bit & 1 == 1;
            let group = i / 8;
            let content = format!(
                "{}{}",
                CONTENTS[(i % 8 + group) % 8],
                ["", "2", "_", "!"][group]
            );
            json!({"id": first_free_id() + i as u64, "content": content, "single_word": flag(0),
                   "lstrip": flag(1), "rstrip": flag(2), "normalized": flag(3), "special": flag(4)})
        })
        .collect()
}

/// Texts that put the added tokens (as written, upper- and lower-cased) in every context, the
/// corpus and the edge cases, and characters each normalizer rewrites.
fn texts() -> Vec<String> {
    let mut texts: Vec<String> = common::corpus(12, 40_000);
    texts.extend(common::edge_cases());
    for token in added_tokens() {
        let c = token["content"].as_str().unwrap();
        for c in [c.to_string(), c.to_uppercase(), c.to_lowercase()] {
            texts.extend([
                c.clone(),
                format!("a{c}b"),
                format!(" {c} "),
                format!("{c}{c}"),
                format!("x  {c}\ny"),
                format!("the{c} {c}the ({c})"),
            ]);
        }
    }
    texts.extend(
        [
            "ﬁne ﬂour ① ② ⑳ ＡＢＣ ｗｈａｌｅ ㍿ ℌ ½ x² Ⅻ",
            "Å Å e\u{301} ḳ\u{301}\u{323} ẛ\u{323} 한국어 \u{1100}\u{1161}\u{11a8}",
            "ΣΑΣ ΟΔΟΣ İstanbul ǅ ß ẞ Ω K",
            // Decomposable only since Unicode 13/14: HF's Unicode 9 tables leave them alone.
            "\u{1FBF0}\u{1FBF9} \u{A7F2}\u{A7F3} \u{10781} \u{1E030} \u{32FF}",
            "  lead and trail  \t\n",
            "tab\there\u{3000}ideographic\u{a0}nbsp",
        ]
        .map(String::from),
    );
    texts
}

/// `BASE` with `normalizer`, `post_processor`, `ignore_merges` and the 32 added tokens.
fn variant(normalizer: Value, post_processor: Value, ignore_merges: bool) -> String {
    let mut doc = BASE.clone();
    doc["normalizer"] = normalizer;
    doc["post_processor"] = post_processor;
    doc["model"]["ignore_merges"] = json!(ignore_merges);
    doc["added_tokens"]
        .as_array_mut()
        .unwrap()
        .extend(added_tokens());
    doc.to_string()
}

fn normalizers() -> Vec<Value> {
    let strip = |left, right| json!({"type": "Strip", "strip_left": left, "strip_right": right});
    let replace = |kind: &str, pattern: &str, content: &str| json!({"type": "Replace", "pattern": {kind: pattern}, "content": content});
    vec![
        Value::Null,
        json!({"type": "Sequence", "normalizers": []}),
        json!({"type": "NFC"}),
        json!({"type": "NFD"}),
        json!({"type": "NFKC"}),
        json!({"type": "NFKD"}),
        json!({"type": "Lowercase"}),
        strip(true, false),
        strip(false, true),
        strip(true, true),
        json!({"type": "Prepend", "prepend": "▁"}),
        replace("String", " ", "▁"),
        replace("Regex", r"\s+", " "),
        replace("Regex", "[0-9]+", ""),
        json!({"type": "Sequence", "normalizers": [
            {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}]},
            strip(true, true),
            {"type": "Sequence", "normalizers": []},
            {"type": "Prepend", "prepend": "▁"},
            replace("String", " ", "▁"),
        ]}),
    ]
}

fn template(single: &[&str]) -> Value {
    let pieces: Vec<Value> = single
        .iter()
        .map(|&p| match p {
            "$A" => json!({"Sequence": {"id": "A", "type_id": 0}}),
            name => json!({"SpecialToken": {"id": name, "type_id": 0}}),
        })
        .collect();
    json!({"type": "TemplateProcessing", "single": pieces,
           "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
           "special_tokens": {
               "<bos>": {"id": "<bos>", "ids": [0], "tokens": ["<｜begin▁of▁sentence｜>"]},
               "<eos>": {"id": "<eos>", "ids": [1], "tokens": ["<｜end▁of▁sentence｜>"]},
               "<both>": {"id": "<both>", "ids": [1, 2], "tokens": ["<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"]}}})
}

fn byte_level_post() -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true})
}

/// Each post-processor with the ids it puts before and after one sequence.
fn post_processors() -> Vec<(Value, Vec<u32>, Vec<u32>)> {
    let bos = "<｜begin▁of▁sentence｜>";
    let eos = "<｜end▁of▁sentence｜>";
    vec![
        (Value::Null, vec![], vec![]),
        (byte_level_post(), vec![], vec![]),
        (template(&["<bos>", "$A"]), vec![0], vec![]),
        (template(&["<bos>", "$A", "<eos>"]), vec![0], vec![1]),
        (template(&["$A", "<both>", "<eos>"]), vec![], vec![1, 2, 1]),
        // Llama-3.1.
        (
            json!({"type": "Sequence", "processors": [byte_level_post(), template(&["<bos>", "$A"])]}),
            vec![0],
            vec![],
        ),
        (
            json!({"type": "Sequence", "processors": [template(&["$A"]), {"type": "BertProcessing", "cls": [bos, 0], "sep": [eos, 1]}]}),
            vec![0],
            vec![1],
        ),
        (
            json!({"type": "RobertaProcessing", "cls": [bos, 0], "sep": [eos, 1], "trim_offsets": true, "add_prefix_space": true}),
            vec![0],
            vec![1],
        ),
        (
            json!({"type": "BertProcessing", "cls": [bos, 0], "sep": [eos, 1]}),
            vec![0],
            vec![1],
        ),
    ]
}

#[test]
fn every_normalizer_matches_hf() {
    let texts = texts();
    let post = post_processors();
    let mut total = Compared::default();
    let normalizers = normalizers();
    for (i, normalizer) in normalizers.iter().enumerate() {
        // Each normalizer also meets a post-processor, and half of them `ignore_merges`.
        let json = variant(
            normalizer.clone(),
            post[i % post.len()].0.clone(),
            i % 2 == 1,
        );
        total += assert_same_ids(&json, &texts);
    }
    println!("{} normalizers: {total}", normalizers.len());
}

#[test]
fn every_post_processor_matches_hf() {
    let texts: Vec<String> = texts().into_iter().step_by(3).collect();
    let mut total = Compared::default();
    let post = post_processors();
    for (value, before, after) in &post {
        let json = variant(Value::Null, value.clone(), false);
        let tok = Tokenizer::from_json_str(&json).unwrap();
        assert_eq!(
            tok.template_specials(),
            (&before[..], &after[..]),
            "{value}"
        );
        let ids = tok.encode("whale");
        assert_eq!(
            tok.encode_with_specials("whale"),
            [&before[..], &ids, &after[..]].concat()
        );
        total += assert_same_ids(&json, &texts);
    }
    println!("{} post-processors: {total}", post.len());
}

/// A `normalized: true` token matches its normalized form in normalized text; a
/// `normalized: false` one only its content as written in the raw text.
#[test]
fn normalized_added_tokens_match_after_normalizing() {
    let mut doc = BASE.clone();
    doc["normalizer"] =
        json!({"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}]});
    let (whale, tag) = (first_free_id() as u32, first_free_id() as u32 + 1);
    doc["added_tokens"].as_array_mut().unwrap().extend([
        json!({"id": whale, "content": "Whale", "single_word": false, "lstrip": false, "rstrip": false, "normalized": true, "special": false}),
        json!({"id": tag, "content": "<X>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}),
    ]);
    let json = doc.to_string();
    let tok = Tokenizer::from_json_str(&json).unwrap();
    for text in ["a WHALE", "a ｗｈａｌｅ", "a whale"] {
        assert!(tok.encode(text).contains(&whale), "{text}");
    }
    assert_eq!(tok.encode("<X>"), vec![tag]);
    assert!(!tok.encode("<x> ＜X＞").contains(&tag));
    assert_same_ids(&json, &["a WHALE <X> <x> ＜X＞ ｗｈａｌｅ".to_string()]);
}

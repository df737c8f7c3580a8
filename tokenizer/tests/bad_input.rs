//! Bad input gives clear errors or defined behaviour, never a panic.

use serde_json::{json, Value};
use tokenizer::trainer::{train, TrainerConfig, WordCounts};
use tokenizer::{PreTokenizer, Tokenizer};

fn config(vocab_size: usize) -> TrainerConfig {
    TrainerConfig {
        vocab_size,
        min_frequency: 0,
        special_tokens: vec!["<s>".into(), "</s>".into()],
    }
}

fn error_of(result: anyhow::Result<impl Sized>) -> String {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn empty_corpus_is_an_error() {
    let counts = WordCounts::default();
    assert!(error_of(train(&counts, &config(1000), &|_| {})).contains("empty corpus"));
    let mut counts = WordCounts::default();
    counts.add_batch(&PreTokenizer::DeepSeekV3, &["", ""]);
    assert!(error_of(train(&counts, &config(1000), &|_| {})).contains("empty corpus"));
}

#[test]
fn vocab_smaller_than_alphabet_is_an_error() {
    let mut counts = WordCounts::default();
    counts.add_batch(&PreTokenizer::DeepSeekV3, &["hello world"]);
    let msg = error_of(train(&counts, &config(200), &|_| {}));
    assert!(
        msg.contains("vocab size 200") && msg.contains("258"),
        "{msg}"
    );
    // Exactly the alphabet plus specials is fine: no merges.
    let trained = train(&counts, &config(258), &|_| {}).unwrap();
    assert!(trained.merges.is_empty());
}

/// A minimal byte-level BPE tokenizer.json with `field` (a top-level key, or `model.KEY`) set.
fn tokenizer_with(field: &str, value: Value) -> String {
    let mut doc = json!({
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false},
        "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}
    });
    match field.strip_prefix("model.") {
        Some(key) => doc["model"][key] = value,
        None => doc[field] = value,
    }
    doc.to_string()
}

#[test]
fn unsupported_tokenizer_files_are_errors_that_say_why() {
    let nfkc = json!({"type": "NFKC"});
    let template = |single: Value| {
        json!({"type": "TemplateProcessing", "single": single, "pair": [],
               "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["a"]}}})
    };
    let seq_a = json!({"Sequence": {"id": "A", "type_id": 0}});
    let seq_b = json!({"Sequence": {"id": "B", "type_id": 0}});
    let cases = [
        (
            "model.type",
            json!("WordPiece"),
            vec![
                // tests/tokenizer.rs (the CLI) looks for this phrase.
                "unsupported model type",
                "model.type",
                "\"WordPiece\"",
                "byte-level BPE",
                "WordPiece (BERT-style)",
            ],
        ),
        (
            "model.type",
            json!("Unigram"),
            vec!["model.type", "SentencePiece Unigram"],
        ),
        (
            "model.byte_fallback",
            json!(true),
            vec!["model.byte_fallback = true", "SentencePiece-style BPE"],
        ),
        (
            "model.continuing_subword_prefix",
            json!("##"),
            vec!["model.continuing_subword_prefix = \"##\""],
        ),
        (
            "model.dropout",
            json!(0.1),
            vec!["model.dropout = 0.1", "set it to null"],
        ),
        (
            "normalizer",
            json!({"type": "BertNormalizer", "lowercase": true}),
            vec![
                "normalizer.type = \"BertNormalizer\"",
                "WordPiece",
                "supported normalizers are",
            ],
        ),
        (
            "normalizer",
            json!({"type": "Sequence", "normalizers": [nfkc, {"type": "Precompiled", "precompiled_charsmap": ""}]}),
            vec![
                "normalizer.normalizers[1].type = \"Precompiled\"",
                "SentencePiece",
            ],
        ),
        (
            "normalizer",
            json!({"type": "StripAccents"}),
            vec!["normalizer.type = \"StripAccents\""],
        ),
        (
            "normalizer",
            json!({"type": "Wrapper", "normalizers": [nfkc]}),
            vec!["normalizer.type = \"Wrapper\""],
        ),
        (
            "normalizer",
            json!({"normalizers": []}),
            vec!["normalizer has no \"type\""],
        ),
        (
            "normalizer",
            json!({"type": "Strip", "strip_left": true}),
            vec!["normalizer.strip_right is missing"],
        ),
        (
            "normalizer",
            json!({"type": "Replace", "pattern": {"Regex": "("}, "content": ""}),
            vec!["normalizer.pattern", "does not compile"],
        ),
        (
            "normalizer",
            json!({"type": "Replace", "pattern": {"String": ""}, "content": "_"}),
            vec!["normalizer.pattern", "matches the empty string"],
        ),
        (
            "pre_tokenizer",
            json!({"type": "Metaspace", "replacement": "▁"}),
            vec!["pre_tokenizer type \"Metaspace\"", "SentencePiece"],
        ),
        (
            "pre_tokenizer",
            Value::Null,
            vec!["without a ByteLevel step"],
        ),
        (
            "pre_tokenizer",
            json!({"type": "Sequence", "pretokenizers": [{"type": "ByteLevel"}, {"type": "Digits"}]}),
            vec!["steps after ByteLevel"],
        ),
        (
            "post_processor",
            json!({"type": "Foo"}),
            vec!["post_processor.type = \"Foo\"", "TemplateProcessing"],
        ),
        (
            "post_processor",
            template(json!([{"SpecialToken": {"id": "<s>", "type_id": 0}}, seq_b])),
            vec!["post_processor.single", "$A exactly once"],
        ),
        (
            "post_processor",
            template(json!([seq_a, seq_a])),
            vec!["$A exactly once"],
        ),
        (
            "post_processor",
            template(json!([{"SpecialToken": {"id": "<s>", "type_id": 0}}])),
            vec!["drops the text"],
        ),
        (
            "post_processor",
            template(json!([{"SpecialToken": {"id": "</s>", "type_id": 0}}, seq_a])),
            vec!["special_tokens has no ids for \"</s>\""],
        ),
    ];
    for (field, value, expected) in cases {
        let msg = error_of(Tokenizer::from_json_str(&tokenizer_with(
            field,
            value.clone(),
        )));
        for part in expected {
            assert!(
                msg.contains(part),
                "{field} = {value}: {part:?} not in {msg:?}"
            );
        }
    }
    // Every case above differs from a valid file only in its field.
    Tokenizer::from_json_str(&tokenizer_with("normalizer", nfkc)).unwrap();
    let bad_merge = tokenizer_with("model.merges", json!(["a b"]));
    assert!(error_of(Tokenizer::from_json_str(&bad_merge)).contains("not in the vocabulary"));
    assert!(error_of(Tokenizer::from_json_str("{not json")).contains("not valid JSON"));
    let missing = std::path::Path::new("/nonexistent/tokenizer.json");
    assert!(error_of(Tokenizer::from_file(missing)).contains("/nonexistent/tokenizer.json"));
}

#[test]
fn bytes_without_a_token_are_dropped_like_hf() {
    let mut tiny: Value =
        serde_json::from_str(&tokenizer_with("model.merges", json!(["a b"]))).unwrap();
    tiny["model"]["vocab"] = json!({"a": 0, "b": 1, "ab": 2});
    let tok = Tokenizer::from_json_str(&tiny.to_string()).unwrap();
    assert_eq!(tok.encode("abcab"), vec![2, 2]);
    assert_eq!(tok.decode(&[2, 99]), b"ab");
    assert_eq!(tok.vocab_size(), 3);
    assert_eq!(tok.bos_id(), None);
}

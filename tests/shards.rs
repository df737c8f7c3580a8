//! End-to-end tests of `whale shard` and `whale shards inspect|verify|decode`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BOS: &str = "<｜begin▁of▁sentence｜>";
const EOS: &str = "<｜end▁of▁sentence｜>";

fn whale(args: &[&str], threads: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_whale"))
        .args(args)
        .env("RAYON_NUM_THREADS", threads)
        .output()
        .expect("run whale")
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "whale failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A small byte-level BPE tokenizer.json written by hand: BOS/EOS specials, the 256-byte
/// alphabet and a few merges, with the DeepSeek-V3 pre-tokenizer. `extra` adds one more merge
/// so a second file has a different hash.
fn write_tokenizer(path: &Path, extra: bool) {
    let mut vocab = serde_json::Map::new();
    for (id, t) in [BOS, EOS].iter().enumerate() {
        vocab.insert(t.to_string(), id.into());
    }
    for c in tokenizer::byte_level::alphabet_sorted() {
        vocab.insert(c.to_string(), vocab.len().into());
    }
    let mut merges = vec![
        ["t", "h"],
        ["th", "e"],
        ["Ġ", "the"],
        ["i", "n"],
        ["e", "r"],
    ];
    if extra {
        merges.push(["a", "n"]);
    }
    for [a, b] in &merges {
        vocab.insert(format!("{a}{b}"), vocab.len().into());
    }
    let special = |id: u32, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
    };
    let doc = serde_json::json!({
        "version": "1.0",
        "added_tokens": [special(0, BOS), special(1, EOS)],
        "normalizer": null,
        "pre_tokenizer": tokenizer::pre_tokenizer::deepseek_v3_json(),
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "vocab": vocab, "merges": merges},
    });
    std::fs::write(path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
}

/// Documents of dump `dump`: mixed scripts, whitespace, long and short.
fn texts(dump: &str) -> Vec<String> {
    (0..40)
        .map(|d| {
            let body = format!("The {dump} thing number {d} is in there, über 漢字 🐳 ")
                .repeat(1 + d * 7 % 23);
            format!("{body}\n\n  tail\t{d}  ")
        })
        .collect()
}

/// tokenizer.json and an input directory of two JSONL dumps.
fn setup(dir: &Path) -> (PathBuf, PathBuf) {
    let tok = dir.join("tokenizer.json");
    write_tokenizer(&tok, false);
    let input = dir.join("in");
    for dump in ["dumpA", "dumpB"] {
        std::fs::create_dir_all(input.join(dump)).unwrap();
        let lines: Vec<String> = texts(dump)
            .iter()
            .enumerate()
            .map(|(d, t)| {
                serde_json::json!({"text": t, "url": format!("https://site{}.example/{d}", d % 3)})
                    .to_string()
            })
            .collect();
        std::fs::write(input.join(dump).join("part.jsonl"), lines.join("\n") + "\n").unwrap();
    }
    (tok, input)
}

fn shard(tok: &Path, input: &Path, out: &Path, threads: &str) -> serde_json::Value {
    let out = ok(whale(
        &[
            "shard",
            "--tokenizer",
            tok.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--shard-mb",
            "0.002",
            "--chunk-tokens",
            "256",
            "--json",
        ],
        threads,
    ));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn shard_then_decode_reproduces_every_document_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (tok, input) = setup(dir.path());
    let out = dir.path().join("shards");
    let m = shard(&tok, &input, &out, "2");
    assert_eq!(m["docs"], 80);
    assert_eq!(m["dtype"], "uint16");
    assert_eq!(m["per_source"]["dumpA"]["docs"], 40);
    assert_eq!(m["per_domain"]["site0.example"]["docs"], 28);
    assert!(m["shards"].as_array().unwrap().len() > 2, "{m}");
    assert!(m["compression_ratio"].as_f64().unwrap() > 1.0);

    // Every document through the library (a process per document would take seconds), and a
    // few through the command.
    let all: Vec<String> = ["dumpA", "dumpB"].iter().flat_map(|d| texts(d)).collect();
    let data = shards::Dataset::open(&out).unwrap();
    let tokenizer = tokenizer::Tokenizer::from_file(&tok).unwrap();
    assert_eq!(data.docs(), all.len() as u64);
    for (n, text) in all.iter().enumerate() {
        let ids = data.doc_tokens(n as u64).unwrap();
        let body = tokenizer.decode(&ids[1..ids.len() - 1]);
        assert_eq!(String::from_utf8(body).unwrap(), *text, "document {n}");
    }
    for n in [0, 41, all.len() - 1] {
        let got = ok(whale(
            &[
                "shards",
                "decode",
                s(&out),
                &n.to_string(),
                "--tokenizer",
                s(&tok),
            ],
            "1",
        ));
        assert_eq!(
            String::from_utf8(got.stdout).unwrap(),
            all[n],
            "document {n}"
        );
    }
    let ids = ok(whale(&["shards", "decode", s(&out), "0", "--ids"], "1"));
    let ids: Vec<u32> = serde_json::from_slice(&ids.stdout).unwrap();
    assert_eq!(
        (ids[0], *ids.last().unwrap()),
        (0, 1),
        "BOS first, EOS last"
    );

    let inspect = ok(whale(&["shards", "inspect", s(&out), "--json"], "1"));
    let inspect: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(inspect["docs"], 80);
    assert_eq!(inspect["tokens"], m["tokens"]);
    assert_eq!(inspect["tokenizer_hash"], m["tokenizer_hash"]);
    let verify = ok(whale(&["shards", "verify", s(&out)], "1"));
    assert!(String::from_utf8_lossy(&verify.stdout).contains("shards ok"));

    let other = dir.path().join("other.json");
    write_tokenizer(&other, true);
    let err = whale(
        &["shards", "decode", s(&out), "0", "--tokenizer", s(&other)],
        "1",
    );
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("does not match"));
    assert!(!whale(&["shards", "decode", s(&out), "80", "--ids"], "1")
        .status
        .success());
}

#[test]
fn output_is_identical_for_any_thread_count_and_reruns_resume() {
    let dir = tempfile::tempdir().unwrap();
    let (tok, input) = setup(dir.path());
    let (one, four) = (dir.path().join("one"), dir.path().join("four"));
    let m1 = shard(&tok, &input, &one, "1");
    let m4 = shard(&tok, &input, &four, "4");
    assert_eq!(m1["shards"], m4["shards"]);
    for entry in m1["shards"].as_array().unwrap() {
        let name = entry["file"].as_str().unwrap();
        assert_eq!(
            std::fs::read(one.join(name)).unwrap(),
            std::fs::read(four.join(name)).unwrap()
        );
    }
    let first = std::fs::metadata(one.join("00000-0000.shard"))
        .unwrap()
        .modified()
        .unwrap();
    let again = shard(&tok, &input, &one, "2");
    assert_eq!(again["shards"], m1["shards"]);
    let after = std::fs::metadata(one.join("00000-0000.shard"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(first, after, "a finished input must not be rewritten");
}

#[test]
fn corruption_is_named_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (tok, input) = setup(dir.path());
    let out = dir.path().join("shards");
    shard(&tok, &input, &out, "2");
    let victim = out.join("00000-0001.shard");
    let chunk = shards::Shard::open(&victim).unwrap().chunks()[1];
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[chunk.offset as usize + 5] ^= 0x01;
    std::fs::write(&victim, &bytes).unwrap();

    let verify = whale(&["shards", "verify", s(&out)], "1");
    assert!(!verify.status.success());
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(report.contains("00000-0001.shard chunk 1"), "{report}");
    assert_eq!(report.matches("BAD").count(), 1, "{report}");

    let shard = shards::Shard::open(&victim).unwrap();
    let doc_in_chunk = (0..shard.docs())
        .find(|&d| {
            let r = shard.doc_range(d).unwrap();
            shard.chunk_of(r.start) <= 1 && shard.chunk_of(r.end - 1) >= 1
        })
        .unwrap();
    let err = whale(
        &[
            "shards",
            "decode",
            s(&victim),
            &doc_in_chunk.to_string(),
            "--ids",
        ],
        "1",
    );
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("checksum"));

    std::fs::write(&victim, &bytes[..bytes.len() - 10]).unwrap();
    let err = whale(&["shards", "inspect", s(&out)], "1");
    assert!(!err.status.success());
    let msg = String::from_utf8_lossy(&err.stderr);
    assert!(
        msg.contains("00000-0001.shard") && msg.contains("truncated"),
        "{msg}"
    );
}

/// `whale shard --doc-specials POLICY` on `tok`: the ids of the first document, or the error.
fn first_doc_ids(tok: &Path, input: &Path, out: &Path, policy: &str) -> Result<Vec<u32>, String> {
    let args = [
        "shard",
        "--tokenizer",
        s(tok),
        "--input",
        s(input),
        "--output",
        s(out),
        "--doc-specials",
        policy,
    ];
    let run = whale(&args, "2");
    if !run.status.success() {
        return Err(String::from_utf8_lossy(&run.stderr).into_owned());
    }
    let ids = ok(whale(&["shards", "decode", s(out), "0", "--ids"], "1"));
    Ok(serde_json::from_slice(&ids.stdout).unwrap())
}

#[test]
fn documents_get_the_special_tokens_the_policy_names() {
    let dir = tempfile::tempdir().unwrap();
    let (tok, input) = setup(dir.path());
    let body = |ids: &[u32]| ids.iter().copied().filter(|&i| i > 1).collect::<Vec<u32>>();
    let named = first_doc_ids(&tok, &input, &dir.path().join("names"), "names").unwrap();
    assert_eq!((named[0], *named.last().unwrap()), (0, 1));
    let none = first_doc_ids(&tok, &input, &dir.path().join("none"), "none").unwrap();
    assert_eq!(none, body(&named), "no specials, same text ids");

    // The file's own template: BOS only, as Llama-3 and DeepSeek LLM ship it.
    let mut doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&tok).unwrap()).unwrap();
    doc["post_processor"] = serde_json::json!({
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": BOS, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {BOS: {"id": BOS, "ids": [0], "tokens": [BOS]}},
    });
    let bos_only = dir.path().join("bos-only.json");
    std::fs::write(&bos_only, doc.to_string()).unwrap();
    let template = first_doc_ids(&bos_only, &input, &dir.path().join("template"), "template");
    let template = template.unwrap();
    assert_eq!(template[0], 0);
    assert_eq!(
        &template[1..],
        body(&named).as_slice(),
        "BOS, then the text, no EOS"
    );

    // Two tokens before the text cannot be one BOS: refused, saying what to do.
    doc["post_processor"]["single"] = serde_json::json!([
        {"SpecialToken": {"id": BOS, "type_id": 0}}, {"SpecialToken": {"id": EOS, "type_id": 0}},
        {"Sequence": {"id": "A", "type_id": 0}}]);
    doc["post_processor"]["special_tokens"][EOS] =
        serde_json::json!({"id": EOS, "ids": [1], "tokens": [EOS]});
    std::fs::write(&bos_only, doc.to_string()).unwrap();
    let err = first_doc_ids(&bos_only, &input, &dir.path().join("two"), "template").unwrap_err();
    assert!(err.contains("--doc-specials names or none"), "{err}");
}

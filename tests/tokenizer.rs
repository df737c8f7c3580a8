//! End-to-end: `whale tokenizer train|encode|decode|inspect` on a small multilingual corpus,
//! with a bad record in the input, and the errors users see on bad settings.

use std::path::Path;
use std::process::{Command, Output};

fn whale(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_whale"))
        .args(args)
        .output()
        .expect("whale runs")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "whale failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("stdout is UTF-8")
}

fn write_corpus(dir: &Path) {
    let lines = [
        "The whale swims in the deep ocean; whales sing at 3 a.m. 12345 times.",
        "深度求索训练了一个很大的语言模型。鲸鱼在大海里游泳！",
        "fn main() {\n    println!(\"hello, world\");\n}",
        "Emoji 🐳🚀 and café, naïve résumé — 100% done.",
        "東京のラーメンはおいしいです。カタカナ・ひらがな",
    ];
    let mut jsonl = String::new();
    for i in 0..400 {
        let text = format!(
            "{} #{i}\n{}",
            lines[i % lines.len()],
            lines[(i * 7 + 3) % lines.len()]
        );
        jsonl.push_str(&serde_json::json!({ "text": text }).to_string());
        jsonl.push('\n');
    }
    std::fs::write(dir.join("docs.jsonl"), jsonl).unwrap();
    let mut txt = b"plain text line one\n".to_vec();
    txt.extend_from_slice(b"a bad line \xff\xfe here\n");
    txt.extend_from_slice(b"plain text line three\n");
    std::fs::write(dir.join("extra.txt"), txt).unwrap();
}

#[test]
fn train_encode_decode_inspect() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir(&input).unwrap();
    write_corpus(&input);
    let out = tmp.path().join("tok/tokenizer.json");
    let out_s = out.to_str().unwrap();
    let (input_s, extra_s) = (
        input.to_str().unwrap(),
        input.join("extra.txt").to_str().unwrap().to_string(),
    );
    let train = |out: &str, flags: &[&str]| {
        let mut args = vec![
            "tokenizer",
            "train",
            "--input",
            input_s,
            &extra_s,
            "--vocab-size",
            "400",
            "--min-frequency",
            "2",
            "--out",
            out,
        ];
        args.extend_from_slice(flags);
        ok(whale(&args))
    };
    let summary = train(out_s, &[]);
    assert!(
        summary.contains("tokenizer:") && summary.contains("1 skipped"),
        "{summary}"
    );

    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("tok/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["stage"], "tokenizer");
    assert_eq!(manifest["counts"]["docs_in"], 402);
    assert_eq!(manifest["counts"]["skipped"]["invalid_utf8"], 1);
    assert_eq!(manifest["counts"]["vocab_size"], 400);
    assert_eq!(manifest["tokenizer"]["bos_id"], 0);

    let text = "The whale 🐳 深度求索 12345\n";
    let ids = ok(whale(&[
        "tokenizer",
        "encode",
        "--tokenizer",
        out_s,
        "--text",
        text,
    ]));
    let ids: Vec<&str> = ids.split_whitespace().collect();
    assert!(!ids.is_empty() && ids.len() < text.len());
    let mut args = vec!["tokenizer", "decode", "--tokenizer", out_s];
    args.extend(ids.iter().copied());
    let decoded = whale(&args);
    assert!(decoded.status.success());
    assert_eq!(decoded.stdout, text.as_bytes());

    let info: serde_json::Value = serde_json::from_str(&ok(whale(&[
        "tokenizer",
        "inspect",
        "--tokenizer",
        out_s,
        "--json",
    ])))
    .unwrap();
    assert_eq!(info["vocab_size"], 400);
    assert_eq!(info["eos_id"], 1);
    assert_eq!(info["pre_tokenizer"], "deepseek-v3");
    assert_eq!(info["hash"], manifest["tokenizer"]["hash"]);

    // A rerun is skipped (`--out` may name the directory); --force retrains to the identical
    // file, and so does a fresh run into a new directory.
    let before = std::fs::read(&out).unwrap();
    let again = ok(whale(&[
        "tokenizer",
        "train",
        "--input",
        input.to_str().unwrap(),
        "--out",
        tmp.path().join("tok").to_str().unwrap(),
    ]));
    assert!(again.contains("already trained"), "{again}");
    let fresh = tmp.path().join("tok2");
    train(fresh.to_str().unwrap(), &[]);
    assert_eq!(std::fs::read(fresh.join("tokenizer.json")).unwrap(), before);
    assert!(fresh.join("manifest.json").exists());
    train(out_s, &["--force", "--json"]);
    assert_eq!(
        std::fs::read(&out).unwrap(),
        before,
        "training is deterministic"
    );
}

#[test]
fn bad_settings_and_inputs_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir(&input).unwrap();
    write_corpus(&input);
    let out = tmp.path().join("t.json");
    let run = |extra: &[&str], input: &Path| {
        let mut args = vec![
            "tokenizer",
            "train",
            "--input",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        whale(&args)
    };
    let small = run(&["--vocab-size", "100"], &input);
    assert!(!small.status.success());
    assert!(String::from_utf8_lossy(&small.stderr).contains("smaller than the 3 special tokens"));

    let empty = tmp.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let none = run(&[], &empty);
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("empty corpus"));

    let bad = run(&["--pre-tokenizer", "llama"], &input);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown pre-tokenizer preset"));

    let wordpiece = tmp.path().join("wp.json");
    std::fs::write(
        &wordpiece,
        r#"{"model": {"type": "WordPiece", "vocab": {}}}"#,
    )
    .unwrap();
    let inspect = whale(&[
        "tokenizer",
        "inspect",
        "--tokenizer",
        wordpiece.to_str().unwrap(),
    ]);
    assert!(!inspect.status.success());
    assert!(String::from_utf8_lossy(&inspect.stderr).contains("unsupported model type"));
}

#[test]
fn encode_a_corpus_in_order_for_any_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir(&input).unwrap();
    write_corpus(&input);
    let tok = tmp.path().join("tokenizer.json");
    let (tok_s, docs) = (tok.to_str().unwrap(), input.join("docs.jsonl"));
    let extra = input.join("extra.txt");
    ok(whale(&[
        "tokenizer",
        "train",
        "--input",
        docs.to_str().unwrap(),
        "--out",
        tok_s,
        "--vocab-size",
        "400",
    ]));
    let encode = |threads: &str, out: &Path| {
        let run = Command::new(env!("CARGO_BIN_EXE_whale"))
            .args([
                "tokenizer",
                "encode",
                "--tokenizer",
                tok_s,
                "--json",
                "--input",
            ])
            .args([&docs, &extra])
            .arg("--output")
            .arg(out)
            .env("RAYON_NUM_THREADS", threads)
            .output()
            .unwrap();
        let summary: serde_json::Value = serde_json::from_str(&ok(run)).unwrap();
        (summary, std::fs::read_to_string(out).unwrap())
    };
    let (summary, one) = encode("1", &tmp.path().join("one.jsonl"));
    let (_, two) = encode("2", &tmp.path().join("two.jsonl"));
    assert_eq!(one, two, "same bytes for any thread count");
    // 400 JSONL documents and 2 good `.txt` lines; the line that is not UTF-8 is counted.
    assert_eq!(summary["docs"], 402);
    assert_eq!(summary["skipped"]["invalid_utf8"], 1, "{summary}");
    let lines: Vec<serde_json::Value> = one
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids = |n: usize| -> Vec<u32> { serde_json::from_value(lines[n]["ids"].clone()).unwrap() };
    let single = ok(whale(&[
        "tokenizer",
        "encode",
        "--tokenizer",
        tok_s,
        "--text",
        "plain text line three\n",
    ]));
    let single: Vec<u32> = single
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(ids(401), single, "the last .txt line, in input order");
    assert!(
        lines[401]["id"].as_str().unwrap().ends_with("extra.txt:39"),
        "{}",
        lines[401]
    );
    assert!(!tmp.path().join("one.jsonl.tmp").exists());
}

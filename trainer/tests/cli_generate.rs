//! End-to-end tests of `whale generate` and `whale eval` (the `whale-train` binary) on a `tiny`
//! model trained for a few steps on shards encoded with a small BPE tokenizer.

use std::path::PathBuf;
use std::sync::OnceLock;

use shards::{Header, ShardWriter, WriterConfig};
use tokenizer::trainer::{train, TrainerConfig, WordCounts};
use tokenizer::{PreTokenizer, Tokenizer};

mod common;
use common::whale_train as whale;

/// A run directory trained for 3 steps, its tokenizer.json and its shards.
struct Fixture {
    _dir: tempfile::TempDir,
    run: PathBuf,
    tokenizer: PathBuf,
    shards: PathBuf,
}

fn corpus() -> Vec<String> {
    let words = [
        "the", "whale", "swims", "deep", "ocean", "and", "sings", "to", "its", "calf", "über",
        "mer", "océan", "海", "鲸",
    ];
    (0..300)
        .map(|i| {
            (0..12)
                .map(|j| words[(i * 7 + j * j * 3 + j) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
                + "."
        })
        .collect()
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let docs = corpus();
        let pre = PreTokenizer::DeepSeekV3;
        let mut counts = WordCounts::default();
        counts.add_batch(&pre, &docs);
        let config = TrainerConfig {
            vocab_size: 320,
            min_frequency: 0,
            special_tokens: vec![
                "<｜begin▁of▁sentence｜>".into(),
                "<｜end▁of▁sentence｜>".into(),
            ],
        };
        let json = train(&counts, &config, &|_| {})
            .unwrap()
            .to_json(&pre)
            .unwrap();
        let tokenizer = dir.path().join("tokenizer.json");
        std::fs::write(&tokenizer, &json).unwrap();
        let tok = Tokenizer::from_json_str(&json).unwrap();
        let (bos, eos) = (tok.bos_id().unwrap(), tok.eos_id().unwrap());

        let shards = dir.path().join("shards");
        std::fs::create_dir_all(&shards).unwrap();
        let header = Header {
            dtype: shards::Dtype::for_vocab(tok.vocab_size() as u32),
            vocab_size: tok.vocab_size() as u32,
            tokenizer_hash: tok.hash(),
            seed: 0,
            bos_id: Some(bos),
            eos_id: Some(eos),
        };
        let mut w =
            ShardWriter::create(&shards.join("00000-0000.shard"), WriterConfig::new(header))
                .unwrap();
        for d in &docs {
            let ids: Vec<u32> = [bos]
                .into_iter()
                .chain(tok.encode(d))
                .chain([eos])
                .collect();
            w.push_doc(&ids).unwrap();
        }
        w.finish().unwrap();

        let run = dir.path().join("run");
        whale(&[
            "train",
            "--shards",
            shards.to_str().unwrap(),
            "--tokenizer",
            tokenizer.to_str().unwrap(),
            "--steps",
            "3",
            "--threads",
            "1",
            "--json",
            "--out",
            run.to_str().unwrap(),
        ]);
        Fixture {
            _dir: dir,
            run,
            tokenizer,
            shards,
        }
    })
}

fn generate(extra: &[&str]) -> (String, String) {
    let f = fixture();
    let mut args = vec![
        "generate",
        f.run.to_str().unwrap(),
        "--tokenizer",
        f.tokenizer.to_str().unwrap(),
        "--threads",
        "1",
        "--max-tokens",
        "24",
    ];
    args.extend_from_slice(extra);
    let out = whale(&args);
    (
        String::from_utf8(out.stdout).expect("generate prints UTF-8"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn generate_greedy_speculative_and_seeded_sampling() {
    let prompt = ["--prompt", "the whale swims"];
    let (greedy, summary) = generate(&prompt);
    assert!(!greedy.trim().is_empty(), "no text generated");
    assert!(
        summary.contains("tokens/s") && summary.contains("B/token") && summary.contains("latent"),
        "{summary}"
    );
    let (json, _) = generate(&[&prompt[..], &["--json"]].concat());
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        json["text"].as_str().unwrap(),
        greedy.strip_suffix('\n').unwrap()
    );
    let ids: Vec<String> = json["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    let (by_ids, _) = generate(&["--prompt-ids", &ids.join(","), "--json"]);
    let by_ids: serde_json::Value = serde_json::from_str(&by_ids).unwrap();
    assert_eq!(by_ids["generation"]["tokens"], json["generation"]["tokens"]);

    let (speculative, summary) = generate(&[&prompt[..], &["--speculative", "mtp"]].concat());
    assert_eq!(
        speculative, greedy,
        "MTP speculative decoding changed the greedy text"
    );
    assert!(summary.contains("MTP drafts accepted"), "{summary}");

    let sampled = |seed: &str| {
        generate(
            &[
                &prompt[..],
                &["--temperature", "1.0", "--top-k", "50", "--seed", seed],
            ]
            .concat(),
        )
        .0
    };
    let (a, b, c) = (sampled("7"), sampled("7"), sampled("8"));
    assert_eq!(a, b, "the same seed must give the same text");
    assert_ne!(a, c, "another seed should give other text");

    // Prompts from a file (blank lines skipped), each continued after the one before.
    let file = fixture().run.parent().unwrap().join("prompts.txt");
    std::fs::write(&file, "the whale swims\n\nocean and\n").unwrap();
    let (both, summary) = generate(&["--prompts", file.to_str().unwrap()]);
    assert!(
        both.starts_with(&greedy) && both.len() > greedy.len(),
        "{both:?} vs {greedy:?}"
    );
    assert!(summary.contains("2 prompt(s)"), "{summary}");
}

fn eval(extra: &[&str]) -> serde_json::Value {
    let f = fixture();
    let mut args = vec![
        "eval",
        f.run.to_str().unwrap(),
        "--shards",
        f.shards.to_str().unwrap(),
        "--threads",
        "1",
        "--json",
    ];
    args.extend_from_slice(extra);
    serde_json::from_slice(&whale(&args).stdout).unwrap()
}

#[test]
fn eval_reports_loss_perplexity_and_bits_per_byte() {
    let f = fixture();
    let tok = ["--tokenizer", f.tokenizer.to_str().unwrap()];
    let r = eval(&[&tok[..], &["--windows", "6", "--seq-len", "32"]].concat());
    assert_eq!(r["windows"], 6);
    let loss = r["loss"].as_f64().unwrap();
    assert!(loss > 0.0 && loss < (8192f64).ln() + 0.5, "{r}");
    assert!((r["perplexity"].as_f64().unwrap() - loss.exp()).abs() < 1e-6 * loss.exp());
    assert_eq!(r["mtp_losses"].as_array().unwrap().len(), 1);
    let (tokens, bytes) = (r["tokens"].as_f64().unwrap(), r["bytes"].as_f64().unwrap());
    let bpb = r["bits_per_byte"].as_f64().unwrap();
    assert!(
        (bpb - loss * tokens / std::f64::consts::LN_2 / bytes).abs() < 1e-9,
        "{r}"
    );
    assert_eq!(
        r,
        eval(&[&tok[..], &["--windows", "6", "--seq-len", "32"]].concat()),
        "not deterministic"
    );
    // Without a tokenizer: the same loss, no bits per byte.
    let plain = eval(&["--windows", "6", "--seq-len", "32", "--batch", "4"]);
    assert!(
        (plain["loss"].as_f64().unwrap() - loss).abs() < 1e-5,
        "{plain} vs {r}"
    );
    assert!(plain["bits_per_byte"].is_null());
}

//! What a user sees after training, through the `whale` front end only: `whale shard
//! --val-fraction` holds out documents, `whale train` scores them by itself, `whale eval` gives
//! the same number for the final checkpoint, and `whale generate` writes text with it.

use std::path::Path;
use std::process::{Command, Output};

fn whale(dir: &Path, args: &[&str]) -> String {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_whale"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run whale");
    assert!(
        out.status.success(),
        "whale {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// 600 short documents in English, German, French and Chinese, as JSONL.
fn write_corpus(path: &Path) {
    let sentences = [
        "The whale surfaced near the harbour and the children waved from the pier.",
        "Der Wal tauchte am Hafen auf, und die Kinder winkten vom Steg.",
        "La baleine est remontée près du port et les enfants ont salué depuis la jetée.",
        "鲸鱼在港口附近浮出水面，孩子们在码头上挥手。",
        "Fishermen say the water was colder this spring than in any year they remember.",
        "Die Fischer sagen, das Wasser sei in diesem Frühling kälter gewesen als je zuvor.",
        "Les pêcheurs disent que l'eau était plus froide ce printemps que jamais.",
        "渔民们说，今年春天的海水比他们记忆中任何一年都冷。",
    ];
    let lines: Vec<String> = (0..600)
        .map(|i| {
            let text: Vec<&str> = (0..3 + i % 4)
                .map(|j| sentences[(i * 5 + j * 3) % sentences.len()])
                .collect();
            serde_json::json!({ "id": format!("doc-{i}"), "text": format!("{} ({i})", text.join(" ")) })
                .to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn held_out_loss_while_training_equals_whale_eval_and_the_checkpoint_generates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_corpus(&d.join("docs.jsonl"));
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let train_toml = std::fs::read_to_string(config.join("train.toml"))
        .unwrap()
        .replace("seq_len = 64 ", "seq_len = 32 ")
        .replace("eval_every = 50 ", "eval_every = 3 ")
        .replace("eval_windows = 64 ", "eval_windows = 16 ");
    assert!(
        train_toml.contains("eval_every = 3 "),
        "configs/train.toml changed its layout"
    );
    std::fs::write(d.join("train.toml"), train_toml).unwrap();

    whale(
        d,
        &[
            "tokenizer",
            "train",
            "--input",
            "docs.jsonl",
            "--out",
            "tokenizer.json",
            "--vocab-size",
            "400",
        ],
    );
    let sharded = whale(
        d,
        &[
            "shard",
            "--tokenizer",
            "tokenizer.json",
            "--input",
            "docs.jsonl",
            "--output",
            "shards",
            "--val-fraction",
            "0.1",
        ],
    );
    assert!(sharded.contains("held out"), "{sharded}");
    let val: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("shards/val/manifest.json")).unwrap())
            .unwrap();
    let held = val["docs"].as_u64().unwrap();
    assert!(
        (30..=90).contains(&held),
        "{held} of 600 documents held out"
    );

    let model = config.join("model/tiny.toml");
    let summary = whale(
        d,
        &[
            "train",
            "--shards",
            "shards",
            "--tokenizer",
            "tokenizer.json",
            "--model",
            model.to_str().unwrap(),
            "--config",
            "train.toml",
            "--out",
            "run",
            "--steps",
            "6",
            "--device",
            "cpu",
            "--json",
        ],
    );
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    let trained = summary["val_loss"]
        .as_f64()
        .expect("a held-out loss in the summary");
    let metrics = std::fs::read_to_string(d.join("run/metrics.jsonl")).unwrap();
    let scored: Vec<(u64, f64)> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|m| m["val_loss"].is_f64())
        .map(|m| (m["step"].as_u64().unwrap(), m["val_loss"].as_f64().unwrap()))
        .collect();
    assert_eq!(scored.iter().map(|s| s.0).collect::<Vec<_>>(), [3, 6]);
    assert!(
        scored[1].1 < scored[0].1,
        "held-out loss did not fall: {scored:?}"
    );

    let report = whale(
        d,
        &[
            "eval",
            "run",
            "--shards",
            "shards/val",
            "--tokenizer",
            "tokenizer.json",
            "--windows",
            "16",
            "--device",
            "cpu",
            "--json",
        ],
    );
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let evaluated = report["loss"].as_f64().unwrap();
    assert!(
        (evaluated - trained).abs() < 1e-3,
        "whale eval {evaluated} vs training's {trained}"
    );
    let bpb = report["bits_per_byte"].as_f64().unwrap();
    assert!(bpb > 0.0 && bpb < 8.0 * 2.0, "{bpb} bits per byte");

    let generated = whale(
        d,
        &[
            "generate",
            "run",
            "--tokenizer",
            "tokenizer.json",
            "--prompt",
            "The whale",
            "--max-tokens",
            "12",
            "--device",
            "cpu",
            "--json",
        ],
    );
    let generated: serde_json::Value = serde_json::from_str(generated.trim()).unwrap();
    assert!(
        !generated["text"].as_str().unwrap().is_empty(),
        "{generated}"
    );
}

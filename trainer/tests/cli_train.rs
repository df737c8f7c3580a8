//! End-to-end tests of `whale train` and `whale model info` (the `whale-train` binary that `whale`
//! hands those commands to) on the `tiny` config (CPU).

use std::path::Path;

mod common;
use common::whale_train as whale;

fn losses(run: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

fn train(out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "train",
        "--synthetic",
        "--out",
        out.to_str().unwrap(),
        "--threads",
        "1",
        "--json",
    ];
    args.extend_from_slice(extra);
    serde_json::from_slice(&whale(&args).stdout).unwrap()
}

#[test]
fn train_resume_matches_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let (straight, split) = (dir.path().join("straight"), dir.path().join("split"));
    let s = train(&straight, &["--steps", "6"]);
    assert_eq!(s["steps"], 6);
    train(&split, &["--steps", "3"]);
    let resumed = train(&split, &["--steps", "6", "--resume"]);
    assert_eq!(resumed["resumed_from_step"], 3);
    assert_eq!(losses(&straight), losses(&split), "resumed run diverged");

    let ckpt = split.join("checkpoints/step-00000006");
    for file in [
        "model.safetensors",
        "optimizer.safetensors",
        "config.json",
        "state.json",
    ] {
        assert!(ckpt.join(file).exists(), "missing {file}");
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(split.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["stage"], "train");
    assert_eq!(manifest["status"], "done");

    // Without --resume an existing run is not overwritten.
    let out = common::run(&[
        "train",
        "--synthetic",
        "--out",
        split.to_str().unwrap(),
        "--steps",
        "1",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume"));
}

#[test]
fn model_info_reports_deepseek_v3_sizes() {
    let out = whale(&["model", "info", "configs/model/deepseek-v3.toml", "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let total = info["total_params"].as_f64().unwrap() / 1e9;
    let active = info["activated_params"].as_f64().unwrap() / 1e9;
    assert!((670.0..672.5).contains(&total), "{total}");
    assert!((36.5..37.9).contains(&active), "{active}");
    let text =
        String::from_utf8(whale(&["model", "info", "configs/model/deepseek-v2-lite.toml"]).stdout)
            .unwrap();
    assert!(text.contains("KV cache/token"), "{text}");
}

/// `--device cuda` where libtorch sees no GPU stops before any work and says what to do instead;
/// on a machine with a GPU the same command trains its one step.
#[test]
fn device_cuda_without_a_gpu_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let out = common::run(&[
        "train",
        "--synthetic",
        "--out",
        run_dir.to_str().unwrap(),
        "--steps",
        "1",
        "--device",
        "cuda",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    if tch::Cuda::is_available() {
        assert!(out.status.success(), "{err}");
        return;
    }
    assert!(!out.status.success());
    assert!(
        err.contains("libtorch sees no CUDA device") && err.contains("--device cpu"),
        "{err}"
    );
    assert!(!run_dir.exists(), "nothing was started");
}

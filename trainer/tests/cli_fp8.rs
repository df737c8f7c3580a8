//! `whale train --precision fp8` end to end: it trains, says which FP8 backend ran and why, reports
//! the activation memory FP8 storage saved, and records the recipe in the run manifest.

mod common;

fn whale_train(out: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let out = out.to_str().unwrap();
    let mut args = vec![
        "train",
        "--synthetic",
        "--out",
        out,
        "--steps",
        "2",
        "--threads",
        "1",
        "--json",
    ];
    args.extend(extra);
    common::run(&args)
}

#[test]
fn fp8_training_reports_backend_and_memory() {
    let dir = tempfile::tempdir().unwrap();
    let run = whale_train(
        &dir.path().join("run"),
        &["--precision", "fp8", "--device", "cpu"],
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("fp8 backend: emulated (native unavailable: Cpu is not a CUDA device)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("fp8: linear inputs held for backward"),
        "{stderr}"
    );
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(summary["steps"], 2);
    let manifest = std::fs::read_to_string(dir.path().join("run/manifest.json")).unwrap();
    assert!(
        manifest.contains("Fp8(Recipe { backend: Emulated"),
        "{manifest}"
    );
}

#[test]
fn native_fp8_backend_is_refused_where_it_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--precision",
        "fp8",
        "--fp8-backend",
        "native",
        "--device",
        "cpu",
    ];
    let run = whale_train(&dir.path().join("run"), &args);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        stderr.contains("fp8 backend native requested but unavailable"),
        "{stderr}"
    );
    let run = whale_train(
        &dir.path().join("run2"),
        &["--precision", "fp8", "--fp8-backend", "fast"],
    );
    assert!(String::from_utf8_lossy(&run.stderr).contains("unknown FP8 backend"));
}

#[test]
fn fp8_scale_mode_and_activation_storage_are_selectable() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--precision",
        "fp8",
        "--fp8-scales",
        "pow2",
        "--fp8-full-activations",
    ];
    let run = whale_train(&dir.path().join("run"), &args);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let manifest = std::fs::read_to_string(dir.path().join("run/manifest.json")).unwrap();
    assert!(
        manifest.contains("scale_mode: PowerOfTwo, fp8_activations: false"),
        "{manifest}"
    );
    let run = whale_train(
        &dir.path().join("run2"),
        &["--precision", "fp8", "--fp8-scales", "ue8m0"],
    );
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("unknown FP8 scale mode"));
}

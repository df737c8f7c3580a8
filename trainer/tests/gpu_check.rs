//! `scripts/gpu-check`, the one script a GPU machine runs (and gets one or two tries at), in its
//! CPU mode: every step runs this build's `whale-train` at toy sizes, so a renamed flag or a
//! broken report fails here rather than on the device.

use std::path::Path;
use std::process::Command;

#[test]
fn gpu_check_runs_every_step_on_cpu() {
    let out = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let run = Command::new(root.join("scripts/gpu-check"))
        .env("GPU_CHECK_DEVICE", "cpu")
        .env("WHALE_TRAIN", env!("CARGO_BIN_EXE_whale-train"))
        .env("OUT", out.path())
        .env("STEPS", "3")
        .output()
        .expect("running scripts/gpu-check (needs bash and python3)");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report = std::fs::read_to_string(out.path().join("gpu-check.md")).unwrap();
    let log = std::fs::read_to_string(out.path().join("steps.log")).unwrap();
    for ok in [
        "info",
        "bf16",
        "bf16-loop",
        "fp8-emulated",
        "fp8-gemm",
        "experts",
        "attention",
        "nccl",
        "generate",
    ] {
        assert!(
            report.contains(&format!("| {ok} | 0 |")),
            "{ok}:\n{report}\n{log}"
        );
    }
    // Native FP8 needs Hopper: on CPU the step fails and the report says why.
    assert!(report.contains("| fp8-native | 1 |"), "{report}");
    assert!(report.contains("not a CUDA device"), "{report}");
    for target in [
        "| grouped experts = loop",
        "| MLA attention, values padded = as they are",
        "| one-rank Gloo group",
    ] {
        let row = report.lines().find(|l| l.starts_with(target));
        assert!(
            row.is_some_and(|r| r.ends_with("| met |")),
            "{target}:\n{report}"
        );
    }
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("results.json")).unwrap()).unwrap();
    assert_eq!(results["runs"]["bf16"]["steps"], 3);
    assert_eq!(results["checks"]["nccl"]["backend"], "Gloo");
    let curve = std::fs::read_to_string(out.path().join("metrics-bf16.jsonl")).unwrap();
    assert_eq!(curve.lines().count(), 3);
    // The bf16 run's profile comes back: its summary in the report and whole, and its trace.
    assert!(report.contains("## Profile of bf16, steps 2-3"), "{report}");
    let profile = std::fs::read_to_string(out.path().join("profile-bf16.md")).unwrap();
    assert!(
        profile.contains("## CPU operators (self time)"),
        "{profile}"
    );
    assert!(out.path().join("profile-bf16.json.gz").is_file());
    let files = std::fs::read_dir(out.path()).unwrap().count();
    assert!(
        files <= 8,
        "{files} files: a device run brings back 8 at most"
    );
}

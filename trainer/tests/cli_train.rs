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
fn profile_steps_write_a_trace_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // Three micro-batches of 8 sequences per step: reads per micro-batch would show.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let recipe = std::fs::read_to_string(repo.join("configs/train.toml")).unwrap();
    let recipe = recipe
        .replace("start = 8\n", "start = 24\n")
        .replace("end = 16\n", "end = 24\n");
    assert!(recipe.contains("start = 24\n") && recipe.contains("end = 24\n"));
    let config = dir.path().join("train.toml");
    std::fs::write(&config, recipe).unwrap();
    let s = train(
        &run,
        &[
            "--steps",
            "4",
            "--profile-steps",
            "2-3",
            "--config",
            config.to_str().unwrap(),
        ],
    );
    assert_eq!(s["tokens"], 4 * 24 * 64, "{s}");
    let p = &s["profile"];
    assert_eq!(p["steps"], serde_json::json!({"first": 2, "last": 3}));
    assert_eq!(p["summary"]["steps"], 2);
    assert!(
        p["summary"]["gpu_busy"].is_null(),
        "a CPU run has no GPU time"
    );
    // A step reads the device once whatever its layers, MTP depth and micro-batches: its
    // statistics and the gradient norm that clipping needs, in one copy (which the CPU profiler
    // does not count as an `.item()`). Reads per micro-batch or per layer would stall a GPU.
    assert_eq!(p["summary"]["host_reads_per_step"], 0.0, "{p}");
    // The CPU kernel of fused AdamW reads each parameter's step count: told apart.
    let inside = &p["summary"]["operator_reads"];
    assert_eq!(inside[0]["name"], "aten::_fused_adamw_", "{p}");
    assert!(p["summary"]["syncs_per_step"].is_null(), "{p}");
    let ops: Vec<&str> = p["summary"]["cpu_ops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert!(ops.iter().any(|o| o.starts_with("aten::")), "{ops:?}");
    let trace = run.join("profile/rank0-steps-2-3.json");
    assert_eq!(p["trace"].as_str().unwrap(), trace.to_str().unwrap());
    let trace: serde_json::Value = serde_json::from_slice(&std::fs::read(trace).unwrap()).unwrap();
    let steps: Vec<&str> = trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .filter(|n| n.starts_with("ProfilerStep#"))
        .collect();
    assert_eq!(steps, ["ProfilerStep#2", "ProfilerStep#3"]);
    let table = std::fs::read_to_string(run.join("profile/rank0-steps-2-3.md")).unwrap();
    assert!(table.contains("Profile of steps 2–3 on rank 0"), "{table}");
    // The run itself is unchanged: four steps, four metrics rows.
    assert_eq!(losses(&run).len(), 4);

    let late = common::run(&[
        "train",
        "--synthetic",
        "--out",
        dir.path().join("late").to_str().unwrap(),
        "--steps",
        "2",
        "--profile-steps",
        "5-6",
    ]);
    assert!(!late.status.success());
    let err = String::from_utf8_lossy(&late.stderr);
    assert!(err.contains("starts after the last step"), "{err}");
    let bad = dir.path().join("bad");
    let bad = common::run(&[
        "train",
        "--synthetic",
        "--out",
        bad.to_str().unwrap(),
        "--profile-steps",
        "3-1",
    ]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("FIRST may not exceed LAST"));
}

#[test]
fn model_info_reports_deepseek_v3_sizes() {
    let out = whale(&["model", "info", "configs/model/deepseek-v3.toml", "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let total = info["total_params"].as_f64().unwrap() / 1e9;
    let active = info["activated_params"].as_f64().unwrap() / 1e9;
    assert!((670.0..672.5).contains(&total), "{total}");
    assert!((36.5..37.9).contains(&active), "{active}");
    // 16 bytes per parameter on one rank (MTP included); ZeRO-1 over 8 leaves weights and
    // gradients whole (8 bytes) and an eighth of the moments; expert parallelism over 8 divides
    // the routed experts (most of the 671B) too.
    let state = &info["training_state_per_rank"];
    let tib = |key: &str| state[key].as_f64().unwrap() / (1u64 << 40) as f64;
    assert_eq!(state["ranks"], 8);
    assert!((9.8..10.0).contains(&tib("one_rank")), "{state}");
    assert!(
        (tib("one_rank") * 9.0 / 16.0 - tib("zero1")).abs() < 0.01,
        "{state}"
    );
    assert!(tib("zero1_expert_parallel") < tib("zero1") / 4.0, "{state}");
    let text =
        String::from_utf8(whale(&["model", "info", "configs/model/deepseek-v2-lite.toml"]).stdout)
            .unwrap();
    assert!(text.contains("KV cache/token"), "{text}");
    assert!(
        text.contains("training/rank") && text.contains("expert_parallel 8"),
        "{text}"
    );
}

#[test]
fn model_info_reports_deepseek_llm_sizes() {
    let info = |name: &str| -> serde_json::Value {
        let config = format!("configs/model/{name}.toml");
        serde_json::from_slice(&whale(&["model", "info", &config, "--json"]).stdout).unwrap()
    };
    let (i7, i67) = (info("deepseek-llm-7b"), info("deepseek-llm-67b"));
    let billions = |i: &serde_json::Value| i["total_params"].as_f64().unwrap() / 1e9;
    assert!((6.85..6.95).contains(&billions(&i7)), "{i7}");
    assert!((67.35..67.45).contains(&billions(&i67)), "{i67}");
    assert_eq!(i67["attention"], "GQA-8");
    let text =
        String::from_utf8(whale(&["model", "info", "configs/model/deepseek-llm-67b.toml"]).stdout)
            .unwrap();
    assert!(text.contains("KV cache/token GQA-8 "), "{text}");
}

/// Every tensor of a safetensors file, by name.
fn tensors(path: &Path) -> std::collections::BTreeMap<String, tch::Tensor> {
    tch::Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .collect()
}

/// Phase 1 at 64 tokens, then `--init-from` its checkpoint with the YaRN config at 256 tokens:
/// phase 2 starts from exactly phase 1's weights (and moments only with --keep-optimizer),
/// trains at the long context, records its origin, and exports YaRN to transformers' config.
#[test]
fn init_from_starts_a_yarn_phase_from_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = |p: &str| dir.path().join(p).to_str().unwrap().to_string();
    let dense = ["--model", "configs/model/tiny-dense.toml"];
    train(
        Path::new(&path("phase1")),
        &[&dense[..], &["--steps", "3"]].concat(),
    );
    let ckpt = path("phase1/checkpoints/step-00000003");
    let phase2 = |out: &str, extra: &[&str]| {
        let mut args = vec![
            "--init-from",
            &ckpt,
            "--model",
            "configs/model/tiny-dense-yarn.toml",
            "--config",
            "configs/train-extend.toml",
        ];
        args.extend_from_slice(extra);
        train(Path::new(&path(out)), &args)
    };

    let start = |run: &str| format!("{}/checkpoints/step-00000000", path(run));
    for (run, keep) in [("fresh", false), ("kept", true)] {
        let flags: &[&str] = if keep {
            &["--steps", "0", "--keep-optimizer"]
        } else {
            &["--steps", "0"]
        };
        let s = phase2(run, flags);
        assert_eq!(s["init_from"]["optimizer"], run, "{s}");
        let (before, after) = (
            tensors(&Path::new(&ckpt).join("model.safetensors")),
            tensors(&Path::new(&start(run)).join("model.safetensors")),
        );
        assert_eq!(
            before.keys().collect::<Vec<_>>(),
            after.keys().collect::<Vec<_>>()
        );
        for (name, t) in &before {
            assert!(t.equal(&after[name]), "{run}: {name} differs from phase 1");
        }
        let moments = tensors(&Path::new(&start(run)).join("optimizer.safetensors"));
        let phase1_moments = tensors(&Path::new(&ckpt).join("optimizer.safetensors"));
        for (name, m) in &moments {
            let same = m.equal(&phase1_moments[name]);
            let zero = m.abs().max().double_value(&[]) == 0.0;
            assert!(if keep { same } else { zero }, "{run}: moment {name}");
        }
    }

    let s = phase2("trained", &["--steps", "2"]);
    assert_eq!(s["steps"], 2);
    assert_eq!(
        s["tokens"],
        2 * 16 * 256,
        "16 sequences of 256 tokens per step"
    );
    let last = Path::new(&path("trained")).join("checkpoints/step-00000002");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(last.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["init_from"]["step"], 3);
    assert_eq!(state["init_from"]["model"], "tiny-dense");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(last.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "LlamaForCausalLM");
    assert_eq!(config["rope_scaling"]["rope_type"], "yarn");
    assert_eq!(config["max_position_embeddings"], 256);

    // A model whose tensors differ in shape is refused, naming the tensor and both shapes.
    let narrower = dir.path().join("narrower.toml");
    let yarn = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/model/tiny-dense-yarn.toml");
    let text = std::fs::read_to_string(yarn)
        .unwrap()
        .replace("inter_dim = 192", "inter_dim = 128");
    std::fs::write(&narrower, text).unwrap();
    let out = common::run(&[
        "train",
        "--synthetic",
        "--out",
        &path("refused"),
        "--init-from",
        &ckpt,
        "--model",
        narrower.to_str().unwrap(),
        "--config",
        "configs/train-extend.toml",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("model.layers.0.mlp.down_proj.weight"), "{err}");
    assert!(
        err.contains("[64, 192]") && err.contains("[64, 128]"),
        "{err}"
    );
}

/// DeepSeek-V2's options in a real run: every step reports the assignments its MoE layer dropped
/// for capacity, and the objective includes the device-level and communication losses.
#[test]
fn v2_moe_options_train_and_report_dropped_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("v2");
    let s = train(
        &run,
        &["--model", "configs/model/tiny-v2.toml", "--steps", "3"],
    );
    assert_eq!(s["steps"], 3);
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let mut dropped = 0;
    for line in text.lines() {
        let m: serde_json::Value = serde_json::from_str(line).unwrap();
        let per_layer = m["dropped_tokens"].as_array().unwrap();
        assert_eq!(per_layer.len(), 1, "one MoE layer: {m}");
        let assignments = m["batch_sequences"].as_u64().unwrap() * 64 * 2;
        dropped += per_layer[0].as_u64().unwrap();
        assert!(per_layer[0].as_u64().unwrap() < assignments / 2, "{m}");
        let device_comm = m["device_comm_balance_loss"].as_f64().unwrap();
        // V2's losses are near 1 each: α2·L_dev + α3·L_comm ≈ 0.05 + 0.02.
        assert!((0.05..0.1).contains(&device_comm), "{m}");
        let parts = m["main_loss"].as_f64().unwrap()
            + 1e-4 * m["balance_loss"].as_f64().unwrap()
            + device_comm;
        assert!((m["loss"].as_f64().unwrap() - parts).abs() < 1e-5, "{m}");
    }
    assert!(
        dropped > 0,
        "capacity factor 1 dropped nothing in 3 steps:\n{text}"
    );
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

/// A model whose weights, gradients and moments alone exceed the machine (DeepSeek-V3's 671B
/// parameters on one process) is refused before anything is allocated, with the numbers and what
/// to change, instead of being killed by the OOM killer a minute later.
#[test]
fn a_model_that_cannot_fit_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let started = std::time::Instant::now();
    let out = common::run(&[
        "train",
        "--synthetic",
        "--model",
        "configs/model/deepseek-v3.toml",
        "--out",
        run_dir.to_str().unwrap(),
        "--steps",
        "1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("deepseek-v3 cannot fit") && err.contains("TiB") && err.contains("zero = 1"),
        "{err}"
    );
    assert!(
        started.elapsed().as_secs() < 30,
        "refused before allocating"
    );
    assert!(!run_dir.join("checkpoints").exists());
}

/// A step whose activations do not fit (a million tokens per forward under an 8 GiB address-space
/// limit, where `tiny` normally trains in 4) ends with libtorch's one-line reason and what to
/// lower: no panic, no C++ frames.
#[test]
fn a_step_out_of_memory_says_what_to_lower() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("train.toml");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/train.toml");
    let text = std::fs::read_to_string(repo).unwrap();
    let text: String = text
        .lines()
        .map(|l| match l.split(' ').next() {
            Some("micro_batch") => "micro_batch = 16384".to_string(),
            Some("start" | "end") => format!("{} = 16384", &l[..l.find(' ').unwrap()]),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&config, text).unwrap();
    let run_dir = dir.path().join("run");
    let exe = env!("CARGO_BIN_EXE_whale-train");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -v 8000000 && exec {exe} train --synthetic --config {} --out {} --steps 1 \
             --threads 1",
            config.display(),
            run_dir.display()
        ))
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.starts_with("error: out of memory in step 1: DefaultCPUAllocator: can't allocate"),
        "{err}"
    );
    assert!(
        err.contains("16384 × 64 tokens") && err.contains("lower micro_batch"),
        "{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("frame #"),
        "{err}"
    );
}

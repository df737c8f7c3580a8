//! Multi-process data-parallel training end to end: `whale-train train --nproc 2` on CPU (Gloo over
//! 127.0.0.1) against one process, on the `tiny` model and a shard holding one long document (so
//! every micro-batch has the same number of targets and a mean over 2B sequences equals the mean
//! of two means over B).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shards::{Dtype, Header, ShardWriter, WriterConfig};
use tch::Tensor;
use trainer::schedule::{BatchRamp, LrSchedule};
use trainer::train::{Recompute, TrainConfig};

mod common;

const VOCAB: u32 = 64;

/// One document of 20k tokens following `t' = (5t + 3) mod 64`, tokenizer hash 7.
fn write_shards(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let header = Header {
        dtype: Dtype::for_vocab(VOCAB),
        vocab_size: VOCAB,
        tokenizer_hash: 7,
        seed: 0,
        bos_id: None,
        eos_id: None,
    };
    let mut w = ShardWriter::create(&dir.join("part-0.shard"), WriterConfig::new(header)).unwrap();
    let mut t = 1;
    let doc: Vec<u32> = (0..20_000)
        .map(|_| {
            let cur = t;
            t = (5 * t + 3) % VOCAB;
            cur
        })
        .collect();
    w.push_doc(&doc).unwrap();
    w.finish().unwrap();
}

/// A recipe with a global batch of 8 sequences of 32 tokens, as `micro_batch` per rank, ZeRO
/// stage `zero` (with `Some(true)`, gradients reduce-scattered, as NCCL does by default),
/// expert-parallel groups of `ep` ranks and activation recomputation `recompute`.
fn write_config(
    path: &Path,
    micro_batch: u64,
    (zero, reduce_scatter): (u8, Option<bool>),
    ep: usize,
    recompute: Recompute,
) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/train.toml");
    let mut cfg = TrainConfig::from_file(&repo).unwrap();
    cfg.seq_len = 32;
    cfg.micro_batch = micro_batch;
    cfg.batch = BatchRamp {
        start: 8,
        end: 8,
        ramp: 0.0,
    };
    cfg.lr = LrSchedule::Constant {
        max_lr: 3e-3,
        warmup_steps: 2,
    };
    cfg.checkpoint_every = 2;
    cfg.distributed.zero = zero;
    cfg.distributed.reduce_scatter = reduce_scatter;
    cfg.distributed.expert_parallel = ep;
    cfg.recompute = recompute;
    // Buckets of 256 KiB: tiny's 5 MB of gradients in several all-reduces, some started during the
    // backward.
    cfg.distributed.bucket_mb = 0.25;
    std::fs::write(path, toml::to_string(&cfg).unwrap()).unwrap();
}

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        write_shards(&root.join("shards"));
        for b in [4, 8] {
            write_config(
                &root.join(format!("b{b}.toml")),
                b,
                (0, None),
                1,
                Recompute::None,
            );
        }
        // The attention recomputed in the backward: its gradients reach the buckets from inside
        // the outer backward.
        let attention = Recompute::Attention;
        write_config(&root.join("b2-recompute.toml"), 2, (0, None), 1, attention);
        write_config(
            &root.join("b4-zero1.toml"),
            4,
            (1, None),
            1,
            Recompute::None,
        );
        // Whole blocks recomputed: the MoE exchanges its tokens again in the backward.
        write_config(
            &root.join("b4-ep2-recompute.toml"),
            4,
            (0, None),
            2,
            Recompute::Block,
        );
        write_config(&root.join("b2-ep2.toml"), 2, (0, None), 2, Recompute::None);
        let rs = (1, Some(true));
        write_config(
            &root.join("b2-ep2-zero1-rs.toml"),
            2,
            rs,
            2,
            Recompute::None,
        );
        Self { _dir: dir, root }
    }

    /// `whale-train train` flags for run directory `run` with config `config` (`b4`, `b8`,
    /// `b2-recompute`, `b4-zero1`, `b4-ep2-recompute`, `b2-ep2`, `b2-ep2-zero1-rs`), then
    /// `extra`.
    fn args(&self, run: &str, config: &str, extra: &[&str]) -> Vec<String> {
        let path = |p: &str| self.root.join(p).to_str().unwrap().to_string();
        let mut args: Vec<String> = [
            "train",
            "--shards",
            &path("shards"),
            "--config",
            &path(&format!("{config}.toml")),
            "--out",
            &path(run),
            "--threads",
            "1",
            "--dist-timeout",
            "30",
            "--json",
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    fn train(&self, run: &str, config: &str, extra: &[&str]) -> serde_json::Value {
        let args = self.args(run, config, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        serde_json::from_slice(&common::whale_train(&args).stdout).unwrap()
    }

    fn metrics(&self, run: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.root.join(run).join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The tensors of `file` (model or optimizer .safetensors) of the checkpoint of `step`.
    fn tensors(&self, run: &str, step: u64, file: &str) -> Vec<(String, Tensor)> {
        let file = self
            .root
            .join(run)
            .join(format!("checkpoints/step-{step:08}/{file}"));
        let mut named = Tensor::read_safetensors(file).unwrap();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named
    }
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * a.abs().max(b.abs()).max(1e-3)
}

/// `nproc` ranks with the train config `config` (a global batch of 8 sequences; run in two parts,
/// resumed at step 2) against 1 rank × 8, then the multi-rank checkpoint of step 2 resumed on 1
/// rank: same losses, gradient norms, expert loads and weights, within fp32 reduction order.
/// Returns the multi-rank run's metrics.
fn ranks_match_one_rank(config: &str, nproc: &str) -> Vec<serde_json::Value> {
    let s = Setup::new();
    let one = s.train("one", "b8", &["--steps", "4"]);
    assert_eq!(one["steps"], 4);
    s.train("two", config, &["--steps", "2", "--nproc", nproc]);
    let two = s.train(
        "two",
        config,
        &["--steps", "4", "--resume", "--nproc", nproc],
    );
    assert_eq!(two["resumed_from_step"], 2);
    assert_eq!(two["tokens"], one["tokens"], "the global batch is the same");

    let (m1, m2) = (s.metrics("one"), s.metrics("two"));
    assert_eq!(m2.len(), 4, "rank 0 alone writes metrics");
    for (a, b) in m1.iter().zip(&m2) {
        for key in ["loss", "main_loss", "mtp_loss", "grad_norm"] {
            let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
            assert!(close(x, y, 1e-4), "step {} {key}: {x} vs {y}", a["step"]);
        }
        assert_eq!(a["expert_load"], b["expert_load"], "step {}", a["step"]);
        assert_eq!(b["batch_sequences"], 8);
        assert!(
            a.get("comm_bytes").is_none(),
            "one process communicates nothing"
        );
        assert!(b["comm_bytes"].as_u64().unwrap() > 0);
    }
    // Weights, and the moments (gathered from the shards with ZeRO-1), relative to each tensor's
    // largest element.
    for file in ["model.safetensors", "optimizer.safetensors"] {
        let (a, b) = (s.tensors("one", 4, file), s.tensors("two", 4, file));
        assert_eq!(a.len(), b.len(), "{file}");
        for ((n1, x), (n2, y)) in a.iter().zip(&b) {
            assert_eq!(n1, n2);
            let diff = (x - y).abs().max().double_value(&[]);
            let scale = x.abs().max().double_value(&[]).max(1e-12);
            assert!(
                diff <= 1e-3 * scale,
                "{file} {n1}: differs by {diff} of {scale}"
            );
        }
    }

    // The step-2 checkpoint of two ranks, resumed on one (micro-batch 4 × 2 accumulations).
    let copy = s.root.join("two-then-one");
    let ckpt = copy.join("checkpoints");
    std::fs::create_dir_all(&ckpt).unwrap();
    let step2 = s.root.join("two/checkpoints/step-00000002");
    let dest = ckpt.join("step-00000002");
    std::fs::create_dir_all(&dest).unwrap();
    for f in std::fs::read_dir(&step2).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), dest.join(f.file_name())).unwrap();
    }
    s.train("two-then-one", "b4", &["--steps", "4", "--resume"]);
    let m3 = s.metrics("two-then-one");
    assert_eq!(m3.len(), 2, "steps 3 and 4");
    for (a, b) in m1[2..].iter().zip(&m3) {
        let (x, y) = (a["loss"].as_f64().unwrap(), b["loss"].as_f64().unwrap());
        assert!(close(x, y, 1e-4), "step {}: {x} vs {y}", a["step"]);
    }
    m2
}

#[test]
fn two_ranks_match_one_rank() {
    let metrics = ranks_match_one_rank("b4", "2");
    assert!(metrics.iter().all(|m| m.get("ep_bytes").is_none()));
    assert_overlapped(&metrics);
}

/// Gradient buckets whose sums started during the backward in every step.
fn assert_overlapped(metrics: &[serde_json::Value]) {
    for m in metrics {
        let overlapped = m["overlapped_buckets"].as_u64().unwrap();
        assert!(overlapped >= 2, "buckets summed during the backward: {m}");
    }
}

/// Two micro-batches per step: only the last backward's buckets start early, after the first
/// one's gradients were accumulated. The two ranks also recompute the attention in the backward.
#[test]
fn two_ranks_accumulating_micro_batches_match_one_rank() {
    ranks_match_one_rank("b2-recompute", "2");
}

/// The experts' all-to-all shows in every step's metrics.
fn assert_expert_exchange(metrics: &[serde_json::Value]) {
    for m in metrics {
        assert!(m["ep_bytes"].as_u64().unwrap() > 0, "{m}");
        let imbalance = m["ep_imbalance"].as_f64().unwrap();
        assert!((1.0..=2.0).contains(&imbalance), "{m}");
    }
}

/// With whole blocks recomputed: each rank's MoE layers exchange their tokens again in the
/// backward, in the same order on both ranks.
#[test]
fn experts_split_over_two_ranks_match_one_rank() {
    assert_expert_exchange(&ranks_match_one_rank("b4-ep2-recompute", "2"));
}

#[test]
fn two_expert_parallel_groups_of_two_match_one_rank() {
    assert_expert_exchange(&ranks_match_one_rank("b2-ep2", "4"));
}

/// With the gradients reduce-scattered (NCCL's default for ZeRO-1, chosen here on Gloo), bucket
/// by bucket during the backward.
#[test]
fn expert_parallel_groups_with_zero1_match_one_rank() {
    let metrics = ranks_match_one_rank("b2-ep2-zero1-rs", "4");
    assert_expert_exchange(&metrics);
    assert_overlapped(&metrics);
}

/// ZeRO-1: the same numbers with the moments sharded, and its checkpoint (moments gathered)
/// resumes on one rank. On Gloo the gradients are summed by the overlapped all-reduce.
#[test]
fn two_ranks_with_zero1_match_one_rank() {
    assert_overlapped(&ranks_match_one_rank("b4-zero1", "2"));
}

/// Pids of the direct children of `parent` (Linux /proc), with their RANK variable.
fn ranks_of(parent: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The fields after the parenthesized command name: state, ppid, …
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let ppid: u32 = after.split(' ').nth(1).unwrap().parse().unwrap();
        if ppid != parent {
            continue;
        }
        let env = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let rank = env
            .split(|&b| b == 0)
            .filter_map(|kv| kv.strip_prefix(b"RANK="))
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .next();
        if let Some(rank) = rank {
            out.push((pid, rank));
        }
    }
    out
}

/// Starts a 2-rank job that waits `timeout` seconds for a peer, sends `signal` to rank 1 once
/// training runs, and returns the job's stderr, how long the job took to end after the signal,
/// and whether rank 0 is gone.
fn signal_rank_1(signal: i32, timeout: &str) -> (String, Duration, bool) {
    let s = Setup::new();
    let mut args = s.args("job", "b4", &["--steps", "100000", "--nproc", "2"]);
    let at = args.iter().position(|a| a == "--dist-timeout").unwrap();
    args[at + 1] = timeout.into();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut job = common::command(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let metrics = s.root.join("job/metrics.jsonl");
    let started = Instant::now();
    while std::fs::metadata(&metrics).map_or(true, |m| m.len() == 0) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "training never started"
        );
        assert!(job.try_wait().unwrap().is_none(), "the job ended early");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ranks = ranks_of(job.id());
    let pid = |r: &str| {
        ranks
            .iter()
            .find(|(_, rank)| rank == r)
            .unwrap_or_else(|| panic!("rank {r} is a child of the launcher: {ranks:?}"))
            .0
    };
    let (target, survivor) = (pid("1"), pid("0"));
    // SAFETY: plain kill(2) of a process this test started (through the launcher).
    unsafe { libc::kill(target as i32, signal) };
    let signalled = Instant::now();
    let out = job.wait_with_output().unwrap();
    let took = signalled.elapsed();
    assert!(!out.status.success());
    let gone = !Path::new(&format!("/proc/{survivor}")).exists();
    (
        String::from_utf8_lossy(&out.stderr).into_owned(),
        took,
        gone,
    )
}

/// Killing rank 1 in the middle of training ends the whole job quickly, with an error naming it.
#[test]
fn a_killed_rank_ends_the_job_naming_it() {
    let (stderr, took, gone) = signal_rank_1(libc::SIGKILL, "30");
    assert!(
        took < Duration::from_secs(20),
        "ended {took:?} after the kill"
    );
    assert!(stderr.contains("rank 1 of 2 failed"), "{stderr}");
    assert!(gone, "rank 0 was stopped and reaped");
}

/// A rank that stops answering (SIGSTOP) ends the job once the others' wait runs out, and the
/// launcher names it as the one still running.
#[test]
fn a_hung_rank_ends_the_job_within_the_timeout() {
    let (stderr, took, gone) = signal_rank_1(libc::SIGSTOP, "3");
    assert!(
        took < Duration::from_secs(20),
        "ended {took:?} after the stop"
    );
    assert!(stderr.contains("stopped answering within 3s"), "{stderr}");
    assert!(stderr.contains("still running then: rank 1"), "{stderr}");
    assert!(gone, "rank 0 exited and was reaped");
}

/// torchrun from the project's `.venv` (its agent hosts the store) launches `whale-train` as two
/// ranks; they train exactly as the two ranks of `--nproc 2` do.
#[test]
fn torchrun_launches_whale_train() {
    let torchrun = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/torchrun");
    assert!(
        torchrun.exists(),
        "{} is missing: run scripts/setup",
        torchrun.display()
    );
    let s = Setup::new();
    let port = trainer::dist::placement::free_port().unwrap().to_string();
    let args = s.args("torchrun", "b4", &["--steps", "2"]);
    let out = std::process::Command::new(&torchrun)
        .args(["--nproc-per-node", "2", "--master-addr", "127.0.0.1"])
        .args(["--master-port", &port, "--no-python"])
        .arg(env!("CARGO_BIN_EXE_whale-train"))
        .args(&args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.train("nproc", "b4", &["--steps", "2", "--nproc", "2"]);
    let loss = |run| -> Vec<serde_json::Value> {
        s.metrics(run).iter().map(|m| m["loss"].clone()).collect()
    };
    assert_eq!(loss("torchrun"), loss("nproc"));
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(s.root.join("torchrun/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["world_size"], 2);
}

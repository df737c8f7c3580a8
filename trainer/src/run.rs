//! A whole `whale train` run in a run directory: choose the data source, start fresh or resume
//! from the newest checkpoint, step until the token budget (or `--steps`), log every step to
//! `metrics.jsonl` and a progress bar, checkpoint periodically and at the end, and describe the
//! run in `manifest.json`. As one rank of a data-parallel job, it reads its slice of the data and
//! leaves the writing (metrics, manifest, checkpoints, progress) to rank 0.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde_json::json;
use shards::stage::VAL_DIR;
use tch::Device;

use crate::checkpoint::{self, TrainerState};
use crate::config::ModelConfig;
use crate::cuda_info::{memory_peak, MemoryPeak};
use crate::data::{BatchSource, Synthetic};
use crate::dist::{Backend, Placement, ProcessGroup};
use crate::eval::{EvalConfig, ValidationSet};
use crate::expert_parallel::ExpertLayout;
use crate::experts::ExpertsPath;
use crate::info::model_info;
use crate::init_from::{self, InitFrom, OptimizerStart, Origin};
use crate::linear::Precision;
use crate::memory_fit::{self, MemoryFloor};
use crate::profile::{self, ProfileReport, ProfileSteps, Recording};
use crate::train::{resume_point, MetricsLog, NonFiniteLoss, StepMetrics, TrainConfig, Trainer};

/// Where the tokens come from.
#[derive(Clone, Debug)]
pub enum DataSpec {
    /// A directory written by `whale shard`.
    Shards(PathBuf),
    /// The deterministic synthetic stream of `data::Synthetic`.
    Synthetic,
}

/// Everything `whale train` decided from its flags.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub run_dir: PathBuf,
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub data: DataSpec,
    pub device: Device,
    pub precision: Precision,
    /// Run forward passes under BF16 autocast.
    pub autocast: bool,
    /// How the routed experts run (grouped GEMMs or a loop; `Auto` picks by device).
    pub experts: ExpertsPath,
    /// Stop after this many optimizer steps in total (counting those before a resume).
    pub max_steps: Option<u64>,
    /// Continue from the newest checkpoint of `run_dir`, with its saved configs.
    pub resume: bool,
    /// Accelerator peak FLOP/s, to report model FLOPs utilization.
    pub peak_flops: Option<f64>,
    /// Draw the progress bar (only when stderr is a terminal).
    pub progress: bool,
    /// CPU threads for libtorch (None: libtorch's default).
    pub threads: Option<i32>,
    /// Hash of the tokenizer the shards must have been encoded with, when known.
    pub tokenizer_hash: Option<u64>,
    /// This process's rank in a multi-process job (None: train alone).
    pub placement: Option<Placement>,
    /// How long a rank waits for the others (rendezvous, each collective) before failing.
    pub dist_timeout: Duration,
    /// Held-out shards scored every `eval_every` steps and at the end (None: the `val/`
    /// directory `whale shard --val-fraction` writes inside the training shards, if there).
    pub val_shards: Option<PathBuf>,
    /// Start a new phase from another run's checkpoint (ignored when resuming this run).
    pub init_from: Option<InitFrom>,
    /// Record these steps with the PyTorch profiler into `run_dir/profile/`.
    pub profile: Option<ProfileSteps>,
}

/// The one-line result of a run.
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    pub steps: u64,
    pub tokens: u64,
    pub resumed_from_step: Option<u64>,
    /// The earlier phase's checkpoint the run started from (`--init-from`).
    pub init_from: Option<Origin>,
    pub first_loss: Option<f64>,
    pub final_loss: Option<f64>,
    pub final_main_loss: Option<f64>,
    /// Held-out loss after the last step, when there are held-out shards.
    pub val_loss: Option<f64>,
    pub tokens_per_second: f64,
    /// The median over steps of their tokens/s: the steady speed, without the first steps'
    /// warm-up (kernel selection, allocator growth) or checkpoint writes.
    pub median_step_tokens_per_second: f64,
    /// Model FLOPs utilization at the median step speed, when the peak is known.
    pub mfu: Option<f64>,
    /// The most GPU memory the run held (CUDA only).
    pub gpu_memory: Option<MemoryPeak>,
    /// This rank's profile of the `--profile-steps`, when they ran.
    pub profile: Option<ProfileReport>,
    pub seconds: f64,
    pub checkpoint: PathBuf,
    pub run_dir: PathBuf,
}

fn open_data(
    opts: &RunOptions,
    model: &ModelConfig,
    train: &TrainConfig,
    saved: Option<&TrainerState>,
) -> Result<(Box<dyn BatchSource>, Option<u64>)> {
    let window = (train.seq_len + 1 + model.mtp_depth) as usize;
    let (rank, world_size) = opts
        .placement
        .as_ref()
        .map_or((0, 1), |p| (p.rank, p.world_size));
    match &opts.data {
        DataSpec::Synthetic => {
            let mut source = match saved {
                Some(state) => Synthetic::resume(&state.data)?,
                None => Synthetic {
                    vocab_size: model.vocab_size as u32,
                    window,
                    batch_size: train.micro_batch as usize,
                    seed: train.seed,
                    batches: 0,
                    slice: (0, 1),
                },
            };
            source.slice = (rank, world_size);
            Ok((Box::new(source), None))
        }
        DataSpec::Shards(dir) => {
            let cfg = shards::LoaderConfig {
                seq_len: train.seq_len as usize,
                extra: model.mtp_depth as usize,
                batch_size: train.micro_batch as usize,
                seed: train.seed,
                rank,
                world_size,
                prefetch: 2,
            };
            let loader = match saved {
                Some(state) => {
                    let loader_state: shards::LoaderState =
                        serde_json::from_value(state.data.clone())
                            .context("the checkpoint's data cursor is not a shard loader state")?;
                    let loader = shards::Loader::resume(dir, cfg, &loader_state)?;
                    if let Some(hash) = state.tokenizer_hash {
                        loader.check_tokenizer(hash)?;
                    }
                    loader
                }
                None => shards::Loader::open(dir, cfg)?,
            };
            if let Some(hash) = opts.tokenizer_hash {
                loader.check_tokenizer(hash)?;
            }
            if loader.vocab_size() as i64 > model.vocab_size {
                bail!(
                    "the shards use a vocabulary of {} ids but model {} has vocab_size {}: pick a larger model vocab",
                    loader.vocab_size(),
                    model.name,
                    model.vocab_size
                );
            }
            let hash = loader.tokenizer_hash();
            Ok((Box::new(loader), Some(hash)))
        }
    }
}

/// The held-out windows of the run: from `--val-shards`, else from the `val/` directory inside
/// the training shards. Their tokenizer must be the training shards'.
fn open_validation(
    opts: &RunOptions,
    model: &ModelConfig,
    train: &TrainConfig,
    tokenizer_hash: Option<u64>,
) -> Result<Option<(PathBuf, ValidationSet)>> {
    let dir = match (&opts.val_shards, &opts.data) {
        (Some(dir), _) => dir.clone(),
        (None, DataSpec::Shards(data)) if data.join(VAL_DIR).join("manifest.json").is_file() => {
            data.join(VAL_DIR)
        }
        _ => return Ok(None),
    };
    let cfg = EvalConfig {
        seq_len: train.seq_len,
        windows: train.eval_windows,
        seed: 0,
        batch: train.micro_batch as usize,
    };
    let set = ValidationSet::load(&dir, &cfg, model.mtp_depth, None)
        .with_context(|| format!("loading the held-out shards {}", dir.display()))?;
    if let Some(hash) = tokenizer_hash {
        if set.tokenizer_hash() != hash {
            bail!(
                "the held-out shards {} were encoded with another tokenizer ({:016x}) than the \
                 training shards ({hash:016x}): shard both with the same tokenizer.json",
                dir.display(),
                set.tokenizer_hash()
            );
        }
    }
    Ok(Some((dir, set)))
}

fn write_manifest(
    opts: &RunOptions,
    trainer: &Trainer,
    tokenizer_hash: Option<u64>,
    summary: Option<&RunSummary>,
) -> Result<()> {
    let data = match &opts.data {
        DataSpec::Shards(dir) => json!({ "shards": dir }),
        DataSpec::Synthetic => json!("synthetic"),
    };
    let manifest = json!({
        "stage": "train",
        "tool_version": env!("CARGO_PKG_VERSION"),
        "model": trainer.model_cfg,
        "train": trainer.cfg,
        "size": model_info(&trainer.model_cfg, trainer.cfg.seq_len),
        "data": data,
        "val_shards": opts.val_shards,
        "tokenizer_hash": tokenizer_hash,
        "device": format!("{:?}", opts.device),
        "world_size": trainer.world_size(),
        "precision": format!("{:?}", opts.precision),
        "init_from": trainer.origin,
        "status": if summary.is_some() { "done" } else { "running" },
        "summary": summary,
    });
    let path = opts.run_dir.join("manifest.json");
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&manifest)?)?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
}

fn progress_bar(opts: &RunOptions, leader: bool, total_steps: u64, start: u64) -> ProgressBar {
    let bar = ProgressBar::new(total_steps);
    if !leader || !opts.progress || !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("train {bar:30} {pos}/{len} {elapsed_precise}<{eta} {msg}")
            .expect("template"),
    );
    bar.set_position(start);
    bar
}

fn describe(m: &StepMetrics) -> String {
    let load = m.expert_load.iter().cloned().fold(0.0, f64::max);
    let mfu = m
        .mfu
        .map(|u| format!(" mfu {:.1}%", u * 100.0))
        .unwrap_or_default();
    let val = m
        .val_loss
        .map(|v| format!(" val {v:.4}"))
        .unwrap_or_default();
    let dropped: u64 = m.dropped_tokens.iter().sum();
    let dropped = if dropped > 0 {
        format!(" dropped {dropped}")
    } else {
        String::new()
    };
    format!(
        "loss {:.4} mtp {:.4}{val} lr {:.2e} |g| {:.3} {:.0} tok/s load max/mean {:.2}{dropped}{mfu}",
        m.main_loss, m.mtp_loss, m.lr, m.grad_norm, m.tokens_per_second, load
    )
}

/// The line a profile ends with: where its files are and what it found first.
fn describe_profile(r: &ProfileReport) -> String {
    let s = &r.summary;
    let busy = s
        .gpu_busy
        .map(|b| format!(", GPU busy {:.0}% of the step", b * 100.0))
        .unwrap_or_default();
    let top = s
        .gpu_kinds
        .first()
        .or(s.cpu_ops.first())
        .map(|t| format!(", most time in {} ({:.0}%)", t.name, t.share * 100.0))
        .unwrap_or_default();
    let waits = match s.syncs_per_step {
        Some(syncs) => format!("{syncs:.0} CUDA syncs"),
        None => format!("{:.0} device reads", s.host_reads_per_step),
    };
    format!(
        "profile: steps {}-{}, {:.1} ms per step{busy}{top}, {waits} per step → {} (trace: {})",
        r.steps.first,
        r.steps.last,
        s.step_ms,
        r.table.display(),
        r.trace.display()
    )
}

/// Runs (or resumes) training as described by `opts`.
pub fn run(opts: &RunOptions) -> Result<RunSummary> {
    if let (Some(p), Some(max)) = (opts.profile, opts.max_steps) {
        if p.first > max {
            bail!(
                "--profile-steps {}-{} starts after the last step (--steps {max}): profile steps the run reaches",
                p.first,
                p.last
            );
        }
    }
    crate::host_memory::keep_freed_memory();
    memory_fit::quiet_out_of_memory_panics();
    if let Some(n) = opts.threads {
        tch::set_num_threads(n);
    }
    std::fs::create_dir_all(&opts.run_dir)
        .with_context(|| format!("creating {}", opts.run_dir.display()))?;
    let saved = resume_point(&opts.run_dir)?;
    if saved.is_some() && !opts.resume {
        bail!("{} already holds checkpoints: pass --resume to continue that run, or pick another --out", opts.run_dir.display());
    }
    let (model_cfg, train_cfg) = match &saved {
        Some((_, state)) => (state.model.clone(), state.train.clone()),
        None => (opts.model.clone(), opts.train.clone()),
    };
    let layout = match &opts.placement {
        Some(p) => ExpertLayout::new(
            train_cfg.distributed.expert_parallel,
            p.rank,
            p.world_size,
            &model_cfg,
        )?,
        None => ExpertLayout::single(),
    };
    // The ranks sharing this machine's memory: torchrun and `--nproc` say how many.
    let local_ranks = match &opts.placement {
        Some(_) => std::env::var("LOCAL_WORLD_SIZE")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1),
        None => 1,
    };
    let floor = MemoryFloor::of(
        &model_cfg,
        &train_cfg.optim,
        train_cfg.distributed.zero,
        &layout,
    );
    memory_fit::ensure_fits(&floor, &model_cfg.name, opts.device, local_ranks)?;
    let mut trainer = Trainer::new(
        &model_cfg,
        train_cfg.clone(),
        opts.device,
        &opts.precision,
        opts.autocast,
        layout,
    )?;
    trainer.model.set_experts_path(opts.experts);
    let (mut source, tokenizer_hash) =
        open_data(opts, &model_cfg, &train_cfg, saved.as_ref().map(|(_, s)| s))?;
    let validation = open_validation(opts, &model_cfg, &train_cfg, tokenizer_hash)?;
    match (&saved, &opts.init_from) {
        (Some((dir, state)), _) => trainer.restore(dir, state)?,
        (None, Some(init)) => {
            let source = checkpoint::read_state(&init.checkpoint).with_context(|| {
                format!(
                    "--init-from {} is not a checkpoint: pass RUN/checkpoints/step-N of the earlier run",
                    init.checkpoint.display()
                )
            })?;
            trainer.start_from(Origin {
                checkpoint: init.checkpoint.clone(),
                step: source.step,
                model: source.model.name.clone(),
                optimizer: if init.keep_optimizer {
                    OptimizerStart::Kept
                } else {
                    OptimizerStart::Fresh
                },
            })?;
            init_from::check(&init.checkpoint, &source, &model_cfg)?;
        }
        (None, None) => {}
    }
    if let Some(place) = &opts.placement {
        let backend = match opts.device {
            Device::Cpu => Backend::Gloo,
            _ => Backend::Nccl,
        };
        trainer.distribute(ProcessGroup::join(place, backend, opts.dist_timeout)?)?;
    }
    let leader = trainer.is_leader();
    let rank = opts.placement.as_ref().map_or(0, |p| p.rank);
    let resumed_from_step = saved.as_ref().map(|(_, s)| s.step);
    if let Some(p) = opts.profile.filter(|p| leader && p.last <= trainer.step) {
        eprintln!(
            "profile: steps {}-{} ran before this resume (at step {}): nothing to profile",
            p.first, p.last, trainer.step
        );
    }
    let metrics = opts.run_dir.join("metrics.jsonl");
    let mut log = leader
        .then(|| MetricsLog::open(&metrics, trainer.step))
        .transpose()?;
    if leader {
        write_manifest(opts, &trainer, tokenizer_hash, None)?;
    }

    let rows = train_cfg.micro_batch * trainer.world_size();
    let budget_steps = train_cfg
        .total_tokens
        .div_ceil(rows * train_cfg.seq_len as u64 * train_cfg.batch.end.div_ceil(rows).max(1));
    let last_step = opts.max_steps.unwrap_or(u64::MAX);
    let bar = progress_bar(
        opts,
        leader,
        opts.max_steps.unwrap_or(budget_steps.max(trainer.step)),
        trainer.step,
    );
    let flops_per_token = model_info(&model_cfg, train_cfg.seq_len).train_flops_per_token;
    let started = Instant::now();
    let start_tokens = trainer.tokens;
    let (mut first, mut last): (Option<StepMetrics>, Option<StepMetrics>) = (None, None);
    let mut step_speeds = Vec::new();
    // Every rank takes part (ZeRO-1 gathers the moments); rank 0 writes. Ranks decide when from
    // the step alone, so they always agree.
    let mut saved_step = resumed_from_step;
    // The profiler while it records `--profile-steps`, and the first step it records.
    let mut recording: Option<(Recording, u64)> = None;
    let mut profiled: Option<ProfileReport> = None;
    let checkpoint_now = |trainer: &Trainer, source: &dyn BatchSource| -> Result<PathBuf> {
        let dir = checkpoint::checkpoint_dir(&opts.run_dir, trainer.step);
        trainer.save(&dir, &trainer.state(source.state()?, tokenizer_hash))?;
        if leader {
            checkpoint::prune(&opts.run_dir, train_cfg.keep_checkpoints)?;
        }
        Ok(dir)
    };
    while trainer.tokens < train_cfg.total_tokens && trainer.step < last_step {
        let next = trainer.step + 1;
        // Steps past the range never start it again: it is finished at its last step.
        let profile_now = opts
            .profile
            .is_some_and(|p| (p.first..=p.last).contains(&next));
        if recording.is_none() && profile_now {
            recording = Some((Recording::start(opts.device)?, next));
        }
        let mark = recording.as_ref().map(|(r, _)| r.mark_step(next));
        // A failed allocation panics inside tch (or comes back as an error): either way it ends
        // the run with its reason and what to lower.
        let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            trainer.train_step(source.as_mut())
        }));
        drop(mark);
        let oom = |reason: &str| {
            memory_fit::step_out_of_memory(
                reason,
                trainer.step + 1,
                train_cfg.micro_batch,
                train_cfg.seq_len,
                &floor,
            )
        };
        let step = match step {
            Ok(step) => step,
            Err(panic) => match memory_fit::panic_text(&*panic).and_then(memory_fit::out_of_memory)
            {
                Some(reason) => return Err(oom(reason)),
                None => std::panic::resume_unwind(panic),
            },
        };
        let mut m = match step {
            Ok(m) => m,
            Err(err) => {
                if let Some(reason) = memory_fit::out_of_memory(&format!("{err:#}")) {
                    return Err(oom(reason));
                }
                if let Some(nan) = err.downcast_ref::<NonFiniteLoss>() {
                    let dir = checkpoint_now(&trainer, source.as_ref())?;
                    bail!(
                        "{nan}; stopped and saved the last good weights to {}",
                        dir.display()
                    );
                }
                return Err(err);
            }
        };
        m.mfu = opts
            .peak_flops
            .map(|peak| flops_per_token * m.tokens_per_second / peak);
        let ending = trainer.tokens >= train_cfg.total_tokens || trainer.step >= last_step;
        if opts.profile.is_some_and(|p| p.last == m.step) || ending {
            if let Some((r, first)) = recording.take() {
                let steps = ProfileSteps {
                    first,
                    last: m.step,
                };
                let dir = opts.run_dir.join("profile");
                let report = profile::finish(r, opts.device, steps, rank, &dir)?;
                if leader {
                    bar.suspend(|| eprintln!("{}", describe_profile(&report)));
                }
                profiled = Some(report);
            }
        }
        let every = train_cfg.eval_every;
        if let Some((_, set)) = &validation {
            if ending || (every > 0 && m.step % every == 0) {
                let r = trainer.evaluate(set)?;
                (m.val_loss, m.val_mtp_loss) = (Some(r.loss), r.mtp_losses);
            }
        }
        if let Some(log) = log.as_mut() {
            log.write(&m)?;
        }
        bar.set_position(m.step);
        bar.set_message(describe(&m));
        if train_cfg.checkpoint_every > 0 && m.step % train_cfg.checkpoint_every == 0 {
            checkpoint_now(&trainer, source.as_ref())?;
            saved_step = Some(m.step);
        }
        step_speeds.push(m.tokens_per_second);
        first.get_or_insert_with(|| m.clone());
        last = Some(m);
    }
    bar.finish_and_clear();
    let checkpoint = if saved_step == Some(trainer.step) {
        checkpoint::checkpoint_dir(&opts.run_dir, trainer.step)
    } else {
        checkpoint_now(&trainer, source.as_ref())?
    };
    let seconds = started.elapsed().as_secs_f64();
    let median_speed = median(&mut step_speeds);
    let summary = RunSummary {
        steps: trainer.step,
        tokens: trainer.tokens,
        resumed_from_step,
        init_from: trainer.origin.clone(),
        first_loss: first.as_ref().map(|m| m.loss),
        final_loss: last.as_ref().map(|m| m.loss),
        final_main_loss: last.as_ref().map(|m| m.main_loss),
        val_loss: last.as_ref().and_then(|m| m.val_loss),
        tokens_per_second: (trainer.tokens - start_tokens) as f64 / seconds.max(1e-9),
        median_step_tokens_per_second: median_speed,
        mfu: opts
            .peak_flops
            .map(|peak| flops_per_token * median_speed / peak),
        gpu_memory: opts
            .device
            .is_cuda()
            .then(|| memory_peak(opts.device))
            .transpose()?,
        profile: profiled,
        seconds,
        checkpoint,
        run_dir: opts.run_dir.clone(),
    };
    if leader {
        write_manifest(opts, &trainer, tokenizer_hash, Some(&summary))?;
    }
    Ok(summary)
}

/// The middle value of `values` (the mean of the two middle ones for an even count; 0 for none).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The device of one rank: its local rank's GPU on CUDA (one process per GPU), else `device`.
pub fn rank_device(device: Device, placement: Option<&Placement>) -> Device {
    match (device, placement) {
        (Device::Cuda(_), Some(p)) => Device::Cuda(p.local_rank),
        _ => device,
    }
}

/// Device for `--device auto|cpu|cuda`.
pub fn pick_device(name: &str) -> Result<Device> {
    match name {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" => {
            if !tch::Cuda::is_available() {
                bail!(
                    "--device cuda: libtorch sees no CUDA device (no NVIDIA GPU or driver here, or \
                     CUDA_VISIBLE_DEVICES hides it; `nvidia-smi` should list one): pass \
                     --device cpu, or --device auto to use a GPU only when there is one"
                );
            }
            Ok(Device::Cuda(0))
        }
        other => bail!("unknown device {other:?} (expected auto, cpu or cuda)"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use shards::{Dtype, Header, ShardWriter, WriterConfig};

    use super::*;
    use crate::schedule::{BatchRamp, LrSchedule};
    use crate::testing::tiny_config;

    /// 400 documents following the synthetic stream's rule `t' = (5t + 3) mod 64`.
    fn write_shards(dir: &Path, vocab: u32) {
        let header = Header {
            dtype: Dtype::for_vocab(vocab),
            vocab_size: vocab,
            tokenizer_hash: 7,
            seed: 0,
            bos_id: None,
            eos_id: None,
        };
        let mut w =
            ShardWriter::create(&dir.join("part-0.shard"), WriterConfig::new(header)).unwrap();
        for d in 0..400u32 {
            let mut t = d % vocab;
            let doc: Vec<u32> = (0..20 + d % 30)
                .map(|_| {
                    let cur = t;
                    t = (5 * t + 3) % vocab;
                    cur
                })
                .collect();
            w.push_doc(&doc).unwrap();
        }
        w.finish().unwrap();
    }

    fn options(run_dir: &Path, shards: &Path, steps: u64) -> RunOptions {
        let mut model = tiny_config();
        model.vocab_size = 64;
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/train.toml");
        let mut train = TrainConfig::from_file(&path).unwrap();
        train.seq_len = 32;
        train.micro_batch = 4;
        train.batch = BatchRamp {
            start: 8,
            end: 8,
            ramp: 0.0,
        };
        train.lr = LrSchedule::Constant {
            max_lr: 3e-3,
            warmup_steps: 2,
        };
        train.checkpoint_every = 10;
        RunOptions {
            run_dir: run_dir.to_path_buf(),
            model,
            train,
            data: DataSpec::Shards(shards.to_path_buf()),
            device: Device::Cpu,
            precision: Precision::Fp32,
            autocast: false,
            experts: ExpertsPath::Auto,
            max_steps: Some(steps),
            resume: true,
            peak_flops: None,
            progress: false,
            threads: None,
            tokenizer_hash: None,
            placement: None,
            dist_timeout: Duration::from_secs(60),
            val_shards: None,
            init_from: None,
            profile: None,
        }
    }

    #[test]
    fn trains_on_shards_and_resumes_the_loader() {
        let dir = tempfile::tempdir().unwrap();
        let shard_dir = dir.path().join("shards");
        std::fs::create_dir_all(&shard_dir).unwrap();
        write_shards(&shard_dir, 64);
        let run_dir = dir.path().join("run");
        let first = run(&options(&run_dir, &shard_dir, 12)).unwrap();
        let second = run(&options(&run_dir, &shard_dir, 30)).unwrap();
        assert_eq!(second.resumed_from_step, Some(12));
        assert_eq!(second.steps, 30);
        let lines: Vec<StepMetrics> = std::fs::read_to_string(run_dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines.iter().map(|m| m.step).collect::<Vec<_>>(),
            (1..=30).collect::<Vec<_>>()
        );
        let start = first.first_loss.unwrap();
        assert!(
            second.final_main_loss.unwrap() < 0.6 * lines[0].main_loss,
            "loss {start} -> {:?}",
            second.final_main_loss
        );
        let state = checkpoint::read_state(&second.checkpoint).unwrap();
        assert_eq!(state.tokenizer_hash, Some(7));
        let kept = std::fs::read_dir(run_dir.join("checkpoints"))
            .unwrap()
            .count();
        assert_eq!(
            kept, 3,
            "of 10, 12 (end of the first run), 20 and 30, keep 3 keeps the newest"
        );
    }

    #[test]
    fn scores_held_out_shards_every_eval_every_steps_and_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let (shard_dir, val_dir) = (dir.path().join("shards"), dir.path().join("val"));
        for d in [&shard_dir, &val_dir] {
            std::fs::create_dir_all(d).unwrap();
            write_shards(d, 64);
        }
        let mut opts = options(&dir.path().join("run"), &shard_dir, 12);
        opts.val_shards = Some(val_dir);
        opts.train.eval_every = 5;
        opts.train.eval_windows = 6;
        let summary = run(&opts).unwrap();
        let lines: Vec<StepMetrics> = std::fs::read_to_string(opts.run_dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let scored: Vec<u64> = lines
            .iter()
            .filter(|m| m.val_loss.is_some())
            .map(|m| m.step)
            .collect();
        assert_eq!(scored, [5, 10, 12]);
        let val = |step: usize| lines[step - 1].val_loss.unwrap();
        assert!(val(12) < val(5), "held-out loss {} -> {}", val(5), val(12));
        assert_eq!(summary.val_loss, Some(val(12)));
        assert_eq!(lines[11].val_mtp_loss.len(), opts.model.mtp_depth as usize);

        // The same windows as `whale eval` scores with --windows 6 on the final checkpoint.
        let (_vs, model) = checkpoint::load_model(&summary.checkpoint, Device::Cpu).unwrap();
        let cfg = EvalConfig {
            seq_len: 32,
            windows: 6,
            seed: 0,
            batch: 2,
        };
        let report = crate::eval::evaluate(&model, opts.val_shards.as_ref().unwrap(), &cfg, None);
        let report = report.unwrap();
        assert!(
            (report.loss - val(12)).abs() < 1e-4,
            "{} vs {}",
            report.loss,
            val(12)
        );
    }

    #[test]
    fn the_steady_speed_is_the_median_step() {
        assert_eq!(
            median(&mut [300.0, 1.0, 290.0]),
            290.0,
            "a slow warm-up step is ignored"
        );
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn refuses_a_small_vocab_and_another_tokenizer() {
        let dir = tempfile::tempdir().unwrap();
        write_shards(dir.path(), 100);
        let mut opts = options(&dir.path().join("run"), dir.path(), 1);
        opts.model.vocab_size = 64;
        let err = run(&opts).unwrap_err().to_string();
        assert!(err.contains("vocabulary of 100"), "{err}");
        opts.model.vocab_size = 128;
        opts.tokenizer_hash = Some(8);
        let err = format!("{:#}", run(&opts).unwrap_err());
        assert!(err.contains("different tokenizer"), "{err}");
    }

    #[test]
    fn stops_on_a_non_finite_loss_and_saves() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = options(&dir.path().join("run"), dir.path(), 3);
        opts.data = DataSpec::Synthetic;
        opts.model.init_std = 1e30; // activations overflow within the first steps
        let err = run(&opts).unwrap_err().to_string();
        let saved = checkpoint::latest(&opts.run_dir).unwrap().unwrap();
        let good = checkpoint::read_state(&saved).unwrap().step;
        assert!(err.contains(&format!("at step {}", good + 1)), "{err}");
        assert!(err.contains(&saved.display().to_string()), "{err}");
    }
}

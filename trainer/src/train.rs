//! The pretraining loop: gradient accumulation over micro-batches, global-norm clipping, AdamW with
//! scheduled LR, the auxiliary-loss-free bias update after each optimizer step, metrics, and
//! checkpoints that resume the exact same run. With several ranks the loop follows the plan of
//! `data_parallel` (one exchange per optimizer step); alone it communicates nothing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use crate::checkpoint::{self, TrainerState};
use crate::config::ModelConfig;
use crate::data::BatchSource;
use crate::data_parallel::{DataParallel, DistributedConfig, StepStats};
use crate::dist::ProcessGroup;
use crate::eval::{EvalReport, ValidationSet};
use crate::expert_parallel::ExpertLayout;
use crate::host_memory::upload;
use crate::init_from::{OptimizerStart, Origin};
use crate::linear::Precision;
use crate::model::{LossWeights, Losses, Model};
use crate::moe::update_bias;
use crate::optim::{release_grads, AdamW, MomentStore, Moments, OptimConfig};
use crate::schedule::{BatchRamp, LrSchedule, Switch};

/// One micro-batch's statistics, its loss terms divided by the micro-batches in the step:
/// total, main, mean MTP, balance and device/communication balance, in that order.
fn micro_stats(losses: Losses, accumulation: u64) -> StepStats {
    let device = losses.main.device();
    let double = |t: &Tensor| t.detach().to_kind(Kind::Double);
    let mtp = if losses.mtp.is_empty() {
        Tensor::zeros([], (Kind::Double, device))
    } else {
        Tensor::stack(&losses.mtp.iter().map(double).collect::<Vec<_>>(), 0).mean(Kind::Double)
    };
    let terms = [
        &losses.total,
        &losses.main,
        &mtp,
        &losses.balance,
        &losses.device_comm,
    ];
    let means = Tensor::stack(&terms.map(double), 0) / accumulation as f64;
    let dropped = if losses.dropped.is_empty() {
        Tensor::zeros([0], (Kind::Int64, device))
    } else {
        Tensor::stack(&losses.dropped, 0)
    };
    StepStats {
        means,
        loads: losses.loads,
        dropped,
    }
}

/// max / mean of a count vector: 1 when perfectly even.
fn max_over_mean(counts: &Tensor) -> Tensor {
    counts.max() / counts.mean(Kind::Double).clamp_min(1e-9)
}

/// A step's statistics read from the device.
struct StepRead {
    /// total, main, MTP, balance, device/communication balance (`micro_stats`' order).
    means: [f64; StepRead::MEANS],
    /// The global gradient norm, when it was read with the rest.
    grad_norm: Option<f64>,
    expert_load: Vec<f64>,
    dropped: Vec<u64>,
    ep_imbalance: Option<f64>,
}

impl StepRead {
    const MEANS: usize = 5;
}

/// A training run's recipe, read from `configs/train.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Tokens per training sequence (must not exceed the model's `max_seq_len`).
    pub seq_len: i64,
    /// Sequences per forward/backward pass; the global batch is reached by accumulation.
    pub micro_batch: u64,
    /// Token budget: schedules are expressed as fractions of it and training stops there.
    pub total_tokens: u64,
    /// Seed of the weight init and of the data order.
    #[serde(default)]
    pub seed: u64,
    /// Write a checkpoint every this many steps (0: only at the end).
    #[serde(default)]
    pub checkpoint_every: u64,
    /// Keep only the newest this many checkpoints (0: keep all).
    #[serde(default = "default_keep_checkpoints")]
    pub keep_checkpoints: usize,
    /// Score the held-out shards every this many steps (0: only after the last step). Training
    /// has held-out shards with `whale shard --val-fraction` or `whale train --val-shards`.
    #[serde(default)]
    pub eval_every: u64,
    /// Held-out windows scored each time: the first N of the seed-0 order, as `whale eval
    /// --windows N` scores them, so its numbers and the training log agree.
    #[serde(default = "default_eval_windows")]
    pub eval_windows: usize,
    /// Global batch size (sequences) and its ramp.
    pub batch: BatchRamp,
    #[serde(default)]
    pub optim: OptimConfig,
    pub lr: LrSchedule,
    /// MTP loss weight λ (DeepSeek-V3: 0.3 for the first 10T tokens, then 0.1).
    pub mtp_lambda: Switch,
    /// Bias update speed γ (DeepSeek-V3: 0.001, then 0 for the last 500B tokens).
    pub bias_gamma: Switch,
    /// Weight α of the sequence-wise balance loss (DeepSeek-V3: 0.0001).
    pub balance_alpha: f64,
    /// How the ranks of a multi-process job share the work (ZeRO stage).
    #[serde(default)]
    pub distributed: DistributedConfig,
    /// Activations computed again in the backward instead of kept (`recompute`).
    #[serde(default, skip_serializing_if = "Recompute::is_none")]
    pub recompute: Recompute,
}

/// What the backward computes again instead of keeping from the forward.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Recompute {
    /// Keep every activation.
    #[default]
    None,
    /// Each block's attention sub-layer keeps only its input.
    Attention,
    /// Each block (attention and FFN, MoE included) keeps only its input.
    Block,
}

impl Recompute {
    fn is_none(&self) -> bool {
        *self == Recompute::None
    }
}

fn default_keep_checkpoints() -> usize {
    3
}

fn default_eval_windows() -> usize {
    64
}

impl TrainConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading train config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing train config {}", path.display()))
    }
}

/// What one optimizer step did, as written to `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: u64,
    pub tokens: u64,
    /// The optimized objective (main + λ·MTP + α·balance), mean over micro-batches.
    pub loss: f64,
    pub main_loss: f64,
    /// Mean over MTP depths (0 without MTP).
    pub mtp_loss: f64,
    pub balance_loss: f64,
    /// DeepSeek-V2's device-level and communication balance losses, weighted by their α.
    #[serde(default)]
    pub device_comm_balance_loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub mtp_lambda: f64,
    pub bias_gamma: f64,
    /// Sequences in this step's global batch.
    pub batch_sequences: u64,
    /// max/mean tokens per expert for each MoE layer (1.0 = perfectly balanced).
    pub expert_load: Vec<f64>,
    /// Token-to-expert assignments each MoE layer dropped for capacity during the step (all
    /// micro-batches and ranks); empty without MoE.
    #[serde(default)]
    pub dropped_tokens: Vec<u64>,
    pub step_seconds: f64,
    pub tokens_per_second: f64,
    /// Model FLOPs utilization, when the accelerator's peak is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfu: Option<f64>,
    /// With several ranks: bytes this rank sent during the step (ring algorithms' count, see
    /// `ProcessGroup::sent_bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm_bytes: Option<u64>,
    /// In a process group: gradient buckets whose sum (all-reduce or ZeRO-1's reduce-scatter)
    /// started while the backward was still running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlapped_buckets: Option<u64>,
    /// With expert parallelism: bytes this rank sent in its EP group (the all-to-alls of token
    /// copies, forward and backward) during the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ep_bytes: Option<u64>,
    /// With expert parallelism: max/mean of the token copies the ranks of an EP group received,
    /// for the most imbalanced MoE layer of the step (1.0 = even).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ep_imbalance: Option<f64>,
    /// Held-out loss of the main model, on the steps where it was scored (`eval_every`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    /// Held-out loss of each MTP depth, on those steps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub val_mtp_loss: Vec<f64>,
}

/// Model, optimizer and position in the run.
pub struct Trainer {
    pub model: Model,
    vs: nn::VarStore,
    optimizer: AdamW,
    pub model_cfg: ModelConfig,
    pub cfg: TrainConfig,
    pub step: u64,
    pub tokens: u64,
    autocast: bool,
    /// This rank's place among the holders of the routed experts.
    layout: ExpertLayout,
    /// The data-parallel group this rank trains in (None: a single process).
    parallel: Option<DataParallel>,
    /// The earlier phase this run started from (`--init-from`).
    pub origin: Option<Origin>,
}

/// The loss of a step was NaN or infinite.
#[derive(Debug)]
pub struct NonFiniteLoss {
    /// The failed step, numbered like `metrics.jsonl` (the first step is 1).
    pub step: u64,
    pub loss: f64,
}

impl std::fmt::Display for NonFiniteLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "loss became {} at step {}", self.loss, self.step)
    }
}

impl std::error::Error for NonFiniteLoss {}

impl Trainer {
    /// Initializes the model from `cfg.seed`, holding the routed experts of this rank's place in
    /// `layout` (`ExpertLayout::single()` alone). `autocast` runs forward passes under BF16
    /// autocast on the model's device (CPU or GPU).
    pub fn new(
        model_cfg: &ModelConfig,
        cfg: TrainConfig,
        device: Device,
        precision: &Precision,
        autocast: bool,
        layout: ExpertLayout,
    ) -> Result<Self> {
        model_cfg.validate()?;
        if cfg.seq_len > model_cfg.max_seq_len {
            bail!(
                "seq_len {} exceeds the model's RoPE range max_seq_len {}",
                cfg.seq_len,
                model_cfg.max_seq_len
            );
        }
        tch::manual_seed(cfg.seed as i64);
        let vs = nn::VarStore::new(device);
        let experts = layout.shard(model_cfg.n_routed_experts);
        let mut model = Model::with_experts(&vs.root(), model_cfg, precision, experts);
        model.set_recompute(cfg.recompute);
        let mut named: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        // With ZeRO-1 over several ranks this optimizer only carries restored moments until
        // `distribute` shards them.
        let store = match cfg.distributed.zero == 1 && layout.world > 1 {
            true => MomentStore::Deferred,
            false => MomentStore::Beside,
        };
        let optimizer = AdamW::new(named, cfg.optim.clone(), store);
        Ok(Self {
            model,
            vs,
            optimizer,
            model_cfg: model_cfg.clone(),
            cfg,
            step: 0,
            tokens: 0,
            autocast,
            layout,
            parallel: None,
            origin: None,
        })
    }

    /// Trains as one rank of `group` from now on, starting from rank 0's weights (call after
    /// `restore`, which every rank does from the same checkpoint). `group` must be the world the
    /// trainer's layout was made for.
    pub fn distribute(&mut self, group: ProcessGroup) -> Result<()> {
        ensure!(
            (group.rank, group.world_size) == (self.layout.rank, self.layout.world),
            "the trainer was built for rank {} of {}",
            self.layout.rank,
            self.layout.world
        );
        let dp = DataParallel::new(
            group,
            &self.vs,
            &self.cfg.distributed,
            self.layout,
            self.model_cfg.n_routed_experts,
        )?;
        if let Some(ep) = dp.expert_group() {
            self.model.set_expert_group(ep);
        }
        if let Some(sharded) = dp.shard_optimizer(&self.optimizer, &self.cfg.optim)? {
            self.optimizer = sharded;
        }
        self.parallel = Some(dp);
        Ok(())
    }

    /// Makes this trainer's weights (and balancing biases) `other`'s: two trainers then start
    /// from the same model whatever else drew from the global random generator in between.
    pub fn copy_weights_from(&mut self, other: &Trainer) -> Result<()> {
        Ok(self.vs.copy(&other.vs)?)
    }

    /// Ranks training together (1 without a group).
    pub fn world_size(&self) -> u64 {
        self.parallel.as_ref().map_or(1, DataParallel::world_size)
    }

    /// Whether this process writes metrics, logs and checkpoints (rank 0, or the only process).
    pub fn is_leader(&self) -> bool {
        self.parallel.as_ref().is_none_or(DataParallel::is_leader)
    }

    /// Fraction of the token budget consumed.
    pub fn progress(&self) -> f64 {
        self.tokens as f64 / self.cfg.total_tokens.max(1) as f64
    }

    fn to_tensors(&self, tokens: &[u32], doc_start: &[bool]) -> Result<(Tensor, Tensor)> {
        let width = self.cfg.seq_len + 1 + self.model_cfg.mtp_depth;
        let rows = self.cfg.micro_batch as i64;
        if tokens.len() as i64 != rows * width || doc_start.len() != tokens.len() {
            bail!(
                "batch has {} tokens, expected {rows} × {width}",
                tokens.len()
            );
        }
        if let Some(&t) = tokens
            .iter()
            .find(|&&t| t as i64 >= self.model_cfg.vocab_size)
        {
            bail!(
                "token id {t} is outside the model vocabulary ({})",
                self.model_cfg.vocab_size
            );
        }
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let device = self.model.device();
        Ok((
            upload(&Tensor::from_slice(&ids).view([rows, width]), device)?,
            upload(&Tensor::from_slice(doc_start).view([rows, width]), device)?,
        ))
    }

    /// One optimizer step over as many micro-batches as the batch ramp asks for.
    pub fn train_step(&mut self, source: &mut dyn BatchSource) -> Result<StepMetrics> {
        let started = Instant::now();
        let sent_before = self.parallel.as_ref().map(DataParallel::sent_bytes);
        let ep_before = self.ep_sent_bytes();
        let progress = self.progress();
        let world = self.world_size();
        // Micro-batches per rank: the global batch is spread over every rank's micro-batches.
        let accumulation = self
            .cfg
            .batch
            .accumulation(progress, self.cfg.micro_batch * world);
        let weights = LossWeights {
            mtp_lambda: self.cfg.mtp_lambda.value(progress),
            balance_alpha: self.cfg.balance_alpha,
            drop_tokens: true,
        };
        // Summed on the device over the micro-batches, read once after the last backward.
        let mut stats: Option<StepStats> = None;
        for micro in 0..accumulation {
            if let (Some(dp), true) = (&self.parallel, micro + 1 == accumulation) {
                dp.before_last_backward()?;
            }
            let batch = source.next_batch()?;
            let (tokens, doc_start) = self.to_tensors(&batch.tokens, &batch.doc_start)?;
            let losses = crate::autocast::bf16(tokens.device(), self.autocast, || {
                self.model.losses(&tokens, &doc_start, weights)
            });
            (&losses.total / (accumulation * world) as f64).backward();
            let micro = micro_stats(losses, accumulation);
            stats = Some(match stats {
                None => micro,
                Some(sum) => sum.plus(micro),
            });
        }
        let mut stats = stats.context("a step has at least one micro-batch")?;
        let anywhere = match &self.parallel {
            Some(dp) => {
                let local = dp.after_last_backward()?;
                Some(dp.reduce_stats(&mut stats, &local)?)
            }
            None => None,
        };
        // Alone, the gradient norm that clipping needs is read with the statistics: one read.
        let squares = self
            .parallel
            .is_none()
            .then(|| self.optimizer.slot_grad_squares());
        let read = self.read_stats(&stats, squares.as_ref())?;
        let [loss, main, mtp, balance, device_comm] = read.means;
        if !loss.is_finite() {
            release_grads(&self.vs.trainable_variables());
            return Err(NonFiniteLoss {
                step: self.step + 1,
                loss,
            }
            .into());
        }
        let lr = self.cfg.lr.lr(self.step, progress);
        let grad_norm = match (&self.parallel, &anywhere, read.grad_norm) {
            (Some(dp), Some(anywhere), _) => dp.step(&mut self.optimizer, lr, anywhere)?,
            (None, _, Some(norm)) => {
                self.optimizer.step(lr, norm);
                norm
            }
            _ => bail!("a data-parallel step without its ranks' flags, or alone without its norm"),
        };
        let gamma = self.cfg.bias_gamma.value(progress);
        if gamma > 0.0 {
            for (bias, load) in self.model.gate_biases().into_iter().zip(&stats.loads) {
                update_bias(bias, load, gamma);
            }
        }
        self.step += 1;
        let step_sequences = accumulation * self.cfg.micro_batch * world;
        let step_tokens = step_sequences * self.cfg.seq_len as u64;
        self.tokens += step_tokens;
        let step_seconds = started.elapsed().as_secs_f64();
        Ok(StepMetrics {
            step: self.step,
            tokens: self.tokens,
            loss,
            main_loss: main,
            mtp_loss: mtp,
            balance_loss: balance,
            device_comm_balance_loss: device_comm,
            lr,
            grad_norm,
            mtp_lambda: weights.mtp_lambda,
            bias_gamma: gamma,
            batch_sequences: step_sequences,
            expert_load: read.expert_load,
            dropped_tokens: read.dropped,
            step_seconds,
            tokens_per_second: step_tokens as f64 / step_seconds.max(1e-9),
            mfu: None,
            comm_bytes: sent_before
                .zip(self.parallel.as_ref())
                .map(|(before, dp)| dp.sent_bytes() - before),
            ep_bytes: ep_before.zip(self.ep_sent_bytes()).map(|(a, b)| b - a),
            overlapped_buckets: self.parallel.as_ref().map(DataParallel::overlapped_buckets),
            ep_imbalance: read.ep_imbalance,
            val_loss: None,
            val_mtp_loss: Vec::new(),
        })
    }

    /// Bytes sent in this rank's EP group so far (the all-to-alls), with expert parallelism.
    fn ep_sent_bytes(&self) -> Option<u64> {
        let dp = self.parallel.as_ref()?;
        Some(dp.expert_group()?.group().sent_bytes())
    }

    /// The step's statistics on the host, in one read from the device: on a GPU every read
    /// waits for the device to finish what was queued, so a step makes as few as it can.
    /// With `grad_squares` (Σ‖g‖² on the device), the gradient norm comes with them.
    fn read_stats(&self, stats: &StepStats, grad_squares: Option<&Tensor>) -> Result<StepRead> {
        let layers = stats.loads.len();
        let mut parts = vec![stats.means.to_kind(Kind::Double)];
        parts.extend(grad_squares.map(Tensor::shallow_clone));
        parts.extend(
            stats
                .loads
                .iter()
                .map(|l| max_over_mean(&l.to_kind(Kind::Double))),
        );
        parts.push(stats.dropped.to_kind(Kind::Double));
        let ep = self.layout.ep as i64;
        if ep > 1 {
            // max/mean over the ranks of an EP group of the token copies each received.
            parts.extend(stats.loads.iter().map(|load| {
                let per_rank = load.to_kind(Kind::Double).view([ep, -1]);
                max_over_mean(&per_rank.sum_dim_intlist(1, false, Kind::Double))
            }));
        }
        let parts: Vec<Tensor> = parts.iter().map(|p| p.view([-1])).collect();
        let all = Vec::<f64>::try_from(&Tensor::cat(&parts, 0))?;
        let (means, rest) = all.split_at(StepRead::MEANS);
        let (squares, rest) = rest.split_at(grad_squares.map_or(0, |_| 1));
        let (expert_load, rest) = rest.split_at(layers);
        let (dropped, imbalance) = rest.split_at(stats.dropped.numel());
        Ok(StepRead {
            means: means.try_into().context("the step's loss terms")?,
            grad_norm: squares.first().map(|s| s.sqrt()),
            expert_load: expert_load.to_vec(),
            dropped: dropped.iter().map(|&n| n as u64).collect(),
            ep_imbalance: (ep > 1).then(|| imbalance.iter().copied().fold(1.0, f64::max)),
        })
    }

    /// Scores the model on held-out windows, under the same autocast as training. Every rank
    /// scores (the same windows, so the same result): a rank that sat out would stall the next
    /// exchange, and layers that communicate in their forward need every rank.
    pub fn evaluate(&self, set: &ValidationSet) -> Result<EvalReport> {
        tch::autocast(self.autocast, || set.evaluate(&self.model))
    }

    /// The state that goes into a checkpoint next to the tensors.
    pub fn state(&self, data: serde_json::Value, tokenizer_hash: Option<u64>) -> TrainerState {
        TrainerState {
            step: self.step,
            tokens: self.tokens,
            model: self.model_cfg.clone(),
            train: self.cfg.clone(),
            data,
            tokenizer_hash,
            init_from: self.origin.clone(),
        }
    }

    /// Writes a checkpoint of the whole model (rank 0 does; every rank must call this: with
    /// ZeRO-1 the moments, with expert parallelism the experts are gathered from all).
    pub fn save(&self, dir: &Path, state: &TrainerState) -> Result<()> {
        let weights = checkpoint::named_weights(&self.vs, &self.model_cfg);
        let (weights, moments) = match &self.parallel {
            Some(dp) => {
                let kind = match self.cfg.optim.moments {
                    Moments::Fp32 => Kind::Float,
                    Moments::Bf16 => Kind::BFloat16,
                };
                let moments = dp.moments(&self.optimizer, kind)?;
                (dp.whole_experts(weights)?, dp.whole_experts(moments)?)
            }
            None => (weights, self.optimizer.state_tensors()),
        };
        if self.is_leader() {
            checkpoint::save(dir, &weights, &moments, state)?;
        }
        Ok(())
    }

    /// Restores weights, moments, step and token count from a checkpoint.
    pub fn restore(&mut self, dir: &Path, state: &TrainerState) -> Result<()> {
        checkpoint::restore(dir, &self.vs, &mut self.optimizer, state)?;
        self.step = state.step;
        self.tokens = state.tokens;
        self.origin = state.init_from.clone();
        Ok(())
    }

    /// Starts a new phase from the weights of the checkpoint `origin` names (and its moments when
    /// kept); step, tokens and schedules start from zero. Every tensor must keep its shape.
    pub fn start_from(&mut self, origin: Origin) -> Result<()> {
        let weights = origin.checkpoint.join("model.safetensors");
        checkpoint::load_weights(&self.vs, &weights).with_context(|| {
            format!(
                "--init-from {}: a new phase keeps every tensor's shape (only max_seq_len and the YaRN fields may change)",
                origin.checkpoint.display()
            )
        })?;
        if origin.optimizer == OptimizerStart::Kept {
            checkpoint::load_moments(&origin.checkpoint, &mut self.optimizer, origin.step)?;
        }
        self.origin = Some(origin);
        Ok(())
    }
}

/// Appends one JSON line per step to `metrics.jsonl`.
pub struct MetricsLog {
    file: std::fs::File,
}

impl MetricsLog {
    /// Opens `path` for appending, first dropping lines after `keep_through_step` (a resumed run
    /// rewrites the steps after its checkpoint).
    pub fn open(path: &Path, keep_through_step: u64) -> Result<Self> {
        let kept: Vec<String> = match std::fs::read_to_string(path) {
            Ok(text) => text
                .lines()
                .filter(|line| {
                    serde_json::from_str::<StepMetrics>(line)
                        .is_ok_and(|m| m.step <= keep_through_step)
                })
                .map(str::to_owned)
                .collect(),
            Err(_) => Vec::new(),
        };
        let mut file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        for line in kept {
            writeln!(file, "{line}")?;
        }
        Ok(Self { file })
    }

    pub fn write(&mut self, m: &StepMetrics) -> Result<()> {
        writeln!(self.file, "{}", serde_json::to_string(m)?)?;
        Ok(())
    }
}

/// Path of the checkpoint a run directory would resume from.
pub fn resume_point(run_dir: &Path) -> Result<Option<(PathBuf, TrainerState)>> {
    match checkpoint::latest(run_dir)? {
        Some(dir) => {
            let state = checkpoint::read_state(&dir)?;
            Ok(Some((dir, state)))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Synthetic;
    use crate::testing::tiny_config;

    fn train_config() -> TrainConfig {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/train.toml");
        let mut cfg = TrainConfig::from_file(&path).unwrap();
        cfg.seq_len = 32;
        cfg.micro_batch = 4;
        cfg.batch = BatchRamp {
            start: 4,
            end: 8,
            ramp: 0.5,
        };
        cfg.total_tokens = 40 * 8 * 32;
        cfg.lr = LrSchedule::Cosine {
            max_lr: 3e-3,
            warmup_steps: 3,
            min_lr_ratio: 0.1,
        };
        cfg
    }

    fn small_vocab() -> ModelConfig {
        let mut m = tiny_config();
        m.vocab_size = 64;
        m
    }

    fn source(model: &ModelConfig, cfg: &TrainConfig) -> Synthetic {
        let window = (cfg.seq_len + 1 + model.mtp_depth) as usize;
        Synthetic {
            vocab_size: model.vocab_size as u32,
            window,
            batch_size: cfg.micro_batch as usize,
            seed: 9,
            batches: 0,
            slice: (0, 1),
        }
    }

    fn trainer(model: &ModelConfig, cfg: &TrainConfig) -> Trainer {
        Trainer::new(
            model,
            cfg.clone(),
            Device::Cpu,
            &Precision::Fp32,
            false,
            ExpertLayout::single(),
        )
        .unwrap()
    }

    #[test]
    fn loss_falls_on_a_learnable_stream() {
        let (model, cfg) = (small_vocab(), train_config());
        let mut t = trainer(&model, &cfg);
        let mut data = source(&model, &cfg);
        let losses: Vec<StepMetrics> = (0..40).map(|_| t.train_step(&mut data).unwrap()).collect();
        let first = losses[0].main_loss;
        let last = losses[35..].iter().map(|m| m.main_loss).sum::<f64>() / 5.0;
        assert!((first - 64f64.ln()).abs() < 0.1, "initial loss {first}");
        assert!(last < 0.6 * first, "main loss {first} -> {last}");
        assert!(
            losses[39].mtp_loss < 0.8 * losses[0].mtp_loss,
            "MTP learns too"
        );
        assert_eq!(losses[0].batch_sequences, 4);
        assert_eq!(losses[39].batch_sequences, 8, "batch ramp reached its end");
        assert_eq!(losses[39].expert_load.len(), 2);
    }

    /// For both moment dtypes: 3 steps, checkpoint, a fresh trainer restores it and takes 3 more,
    /// and the losses equal those of 6 uninterrupted steps.
    #[test]
    fn resume_reproduces_the_uninterrupted_run() {
        for moments in [Moments::Fp32, Moments::Bf16] {
            let model = small_vocab();
            let mut cfg = train_config();
            cfg.optim.moments = moments;
            let mut straight = trainer(&model, &cfg);
            let mut data = source(&model, &cfg);
            let expected: Vec<f64> = (0..6)
                .map(|_| straight.train_step(&mut data).unwrap().loss)
                .collect();

            let dir = tempfile::tempdir().unwrap();
            let ckpt = checkpoint::checkpoint_dir(dir.path(), 3);
            let mut first = trainer(&model, &cfg);
            let mut data = source(&model, &cfg);
            let mut got: Vec<f64> = (0..3)
                .map(|_| first.train_step(&mut data).unwrap().loss)
                .collect();
            first
                .save(&ckpt, &first.state(data.state().unwrap(), None))
                .unwrap();
            drop(first);

            let (found, state) = resume_point(dir.path()).unwrap().unwrap();
            assert_eq!(found, ckpt);
            let saved = Tensor::read_safetensors(ckpt.join("optimizer.safetensors")).unwrap();
            let kind = if moments == Moments::Bf16 {
                Kind::BFloat16
            } else {
                Kind::Float
            };
            assert!(
                saved.iter().all(|(_, t)| t.kind() == kind),
                "moments saved as {kind:?}"
            );
            let mut cfg2 = cfg.clone();
            cfg2.seed = 1234; // a different init, overwritten by the checkpoint
            let mut second = trainer(&model, &cfg2);
            second.restore(&found, &state).unwrap();
            let mut data = Synthetic::resume(&state.data).unwrap();
            got.extend((0..3).map(|_| second.train_step(&mut data).unwrap().loss));
            assert_eq!(got, expected, "{moments:?}");
        }
    }

    /// DeepSeek-V3 keeps the AdamW moments in BF16: on tiny the loss curve stays on FP32's.
    #[test]
    fn bf16_moments_track_fp32_moments() {
        let model = small_vocab();
        let curve = |moments: Moments| {
            let mut cfg = train_config();
            cfg.optim.moments = moments;
            let mut t = trainer(&model, &cfg);
            let mut data = source(&model, &cfg);
            (0..25)
                .map(|_| t.train_step(&mut data).unwrap().main_loss)
                .collect::<Vec<f64>>()
        };
        let (fp32, bf16) = (curve(Moments::Fp32), curve(Moments::Bf16));
        assert!(fp32[24] < 0.7 * fp32[0], "fp32 learns: {fp32:?}");
        let worst = fp32
            .iter()
            .zip(&bf16)
            .map(|(a, b)| (a - b).abs() / a)
            .fold(0.0, f64::max);
        assert!(
            worst < 0.02,
            "bf16 moments drift {worst:.4} from fp32:\n{fp32:?}\n{bf16:?}"
        );
    }

    /// BF16 autocast, the GPU's training mode, on CPU: the same code path (autocast scope, BF16
    /// linears, the loss head) learns and stays within a few percent of the FP32 curve.
    #[test]
    fn bf16_autocast_tracks_fp32() {
        let (model, cfg) = (small_vocab(), train_config());
        let curve = |precision: Precision, autocast: bool| {
            let mut t = Trainer::new(
                &model,
                cfg.clone(),
                Device::Cpu,
                &precision,
                autocast,
                ExpertLayout::single(),
            )
            .unwrap();
            let mut data = source(&model, &cfg);
            (0..20)
                .map(|_| t.train_step(&mut data).unwrap().main_loss)
                .collect::<Vec<f64>>()
        };
        let (fp32, bf16) = (curve(Precision::Fp32, false), curve(Precision::Bf16, true));
        assert!(bf16[19] < 0.8 * bf16[0], "bf16 learns: {bf16:?}");
        let worst = fp32
            .iter()
            .zip(&bf16)
            .map(|(a, b)| (a - b).abs() / a)
            .fold(0.0, f64::max);
        assert!(
            worst > 0.0 && worst < 0.05,
            "bf16 drifts {worst:.4} from fp32"
        );
    }
}

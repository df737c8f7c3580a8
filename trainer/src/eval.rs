//! Held-out evaluation of a checkpoint on token shards: the main model's and each MTP depth's
//! cross-entropy over a fixed, deterministic set of windows (the first `windows` of the shard
//! loader's seeded order, so every checkpoint is scored on the same tokens), perplexity, and bits
//! per byte: the summed loss in bits over the UTF-8 bytes the scored target tokens decode to,
//! which compares models with different tokenizers.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use serde::Serialize;
use tch::{Kind, Tensor};

use crate::cross_entropy::IGNORE;
use crate::host_memory::upload;
use crate::model::{LossWeights, Model};

/// Which windows to score.
#[derive(Clone, Debug)]
pub struct EvalConfig {
    pub seq_len: i64,
    /// Windows to score at most (fewer when the shards hold fewer).
    pub windows: usize,
    /// Seed of the window order.
    pub seed: u64,
    /// Windows per forward pass.
    pub batch: usize,
}

/// Losses in nats per target token.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    pub windows: usize,
    pub seq_len: i64,
    /// Main-model targets scored (those that do not cross a document start).
    pub tokens: u64,
    pub loss: f64,
    pub perplexity: f64,
    /// Loss of each MTP depth (the token k+1 ahead), on its own unmasked targets.
    pub mtp_losses: Vec<f64>,
    /// UTF-8 bytes of the scored main targets, special tokens excluded (with a tokenizer).
    pub bytes: Option<u64>,
    pub bits_per_byte: Option<f64>,
}

/// Sum of losses and count of targets of one depth.
#[derive(Clone, Copy)]
struct Total {
    nats: f64,
    targets: u64,
}

/// The fixed windows of an evaluation, read once: `whale eval` scores one checkpoint on them, and
/// a training loop can score its model every `eval_every` steps without touching the shards again.
pub struct ValidationSet {
    /// `[windows, seq_len + 1 + depth]` token ids and document starts.
    tokens: Tensor,
    doc_start: Tensor,
    seq_len: i64,
    batch: i64,
    /// UTF-8 bytes of the scored main targets (special tokens excluded), with a tokenizer.
    bytes: Option<u64>,
    /// Hash of the tokenizer the shards were encoded with.
    tokenizer_hash: u64,
}

impl ValidationSet {
    /// Reads the first `cfg.windows` windows of the seeded order of the shards of `dir`, each
    /// with `mtp_depth` extra target tokens. With a tokenizer (which must be the shards'), also
    /// the bytes that bits per byte divide by.
    pub fn load(
        dir: &Path,
        cfg: &EvalConfig,
        mtp_depth: i64,
        tokenizer: Option<&tokenizer::Tokenizer>,
    ) -> Result<Self> {
        ensure!(
            cfg.seq_len > 0 && cfg.windows > 0,
            "evaluation needs a positive seq_len and window count"
        );
        let mut loader = shards::Loader::open(
            dir,
            shards::LoaderConfig {
                seq_len: cfg.seq_len as usize,
                extra: mtp_depth as usize,
                batch_size: 1,
                seed: cfg.seed,
                rank: 0,
                world_size: 1,
                prefetch: 0,
            },
        )
        .with_context(|| {
            format!(
                "opening the evaluation shards {} (a directory written by `whale shard`)",
                dir.display()
            )
        })?;
        if let Some(tok) = tokenizer {
            loader.check_tokenizer(tok.hash())?;
        }
        let windows = cfg.windows.min(loader.windows_per_epoch() as usize) as i64;
        let (mut tokens, mut doc_start) = (Vec::new(), Vec::new());
        for _ in 0..windows {
            let b = loader.next_batch()?;
            tokens.extend(b.tokens.iter().map(|&t| t as i64));
            doc_start.extend(b.doc_start);
        }
        let shape = [windows, cfg.seq_len + 1 + mtp_depth];
        let tokens = Tensor::from_slice(&tokens).view(shape);
        let doc_start = Tensor::from_slice(&doc_start).view(shape);
        let bytes = tokenizer.map(|tok| {
            let specials: Vec<u32> = tok
                .added_tokens()
                .iter()
                .filter(|a| a.special)
                .map(|a| a.id)
                .collect();
            let targets = Model::targets(&tokens, &doc_start, cfg.seq_len, 0);
            let ids: Vec<u32> = Vec::<i64>::try_from(targets.view([-1]))
                .expect("targets to host")
                .into_iter()
                .filter(|&t| t != IGNORE && !specials.contains(&(t as u32)))
                .map(|t| t as u32)
                .collect();
            tok.decode(&ids).len() as u64
        });
        Ok(Self {
            tokens,
            doc_start,
            seq_len: cfg.seq_len,
            batch: cfg.batch.max(1) as i64,
            bytes,
            tokenizer_hash: loader.tokenizer_hash(),
        })
    }

    /// Hash of the tokenizer the held-out shards were encoded with: training checks that it is
    /// its own shards' tokenizer.
    pub fn tokenizer_hash(&self) -> u64 {
        self.tokenizer_hash
    }

    /// Scores `model` (whose MTP depth must be the one the set was loaded for).
    pub fn evaluate(&self, model: &Model) -> Result<EvalReport> {
        let (windows, width) = self.tokens.size2()?;
        let depth = width - 1 - self.seq_len;
        ensure!(
            model.mtp.len() as i64 == depth,
            "the validation windows carry {depth} MTP targets, the model has {} MTP modules",
            model.mtp.len()
        );
        ensure!(
            self.seq_len <= model.cfg.max_seq_len,
            "seq_len {} exceeds the model's max_seq_len {}",
            self.seq_len,
            model.cfg.max_seq_len
        );
        let max_id = self.tokens.max().int64_value(&[]);
        ensure!(
            max_id < model.cfg.vocab_size,
            "the validation shards hold id {max_id} but the model's vocab_size is {}: evaluate \
             with shards of the model's tokenizer",
            model.cfg.vocab_size
        );
        let weights = LossWeights {
            mtp_lambda: 0.0,
            balance_alpha: 0.0,
            drop_tokens: false,
        };
        let device = model.device();
        // Nats and targets of each depth, summed on the device and read once at the end.
        let mut sums = Tensor::zeros([depth + 1, 2], (Kind::Double, device));
        for start in (0..windows).step_by(self.batch as usize) {
            let rows = self.batch.min(windows - start);
            let tokens = upload(&self.tokens.narrow(0, start, rows), device)?;
            let doc_start = upload(&self.doc_start.narrow(0, start, rows), device)?;
            let losses = tch::no_grad(|| model.losses(&tokens, &doc_start, weights));
            let batch: Vec<Tensor> = std::iter::once(&losses.main)
                .chain(&losses.mtp)
                .enumerate()
                .map(|(k, mean)| {
                    let targets = Model::targets(&tokens, &doc_start, self.seq_len, k as i64);
                    let count = targets.ne(IGNORE).sum(Kind::Double);
                    Tensor::stack(&[mean.to_kind(Kind::Double) * &count, count], 0)
                })
                .collect();
            sums += Tensor::stack(&batch, 0);
        }
        let totals: Vec<Total> = Vec::<Vec<f64>>::try_from(&sums)?
            .into_iter()
            .map(|row| Total {
                nats: row[0],
                targets: row[1] as u64,
            })
            .collect();
        let mean = |t: &Total| t.nats / t.targets.max(1) as f64;
        let loss = mean(&totals[0]);
        Ok(EvalReport {
            windows: windows as usize,
            seq_len: self.seq_len,
            tokens: totals[0].targets,
            loss,
            perplexity: loss.exp(),
            mtp_losses: totals[1..].iter().map(mean).collect(),
            bytes: self.bytes,
            bits_per_byte: self
                .bytes
                .map(|b| totals[0].nats / std::f64::consts::LN_2 / b.max(1) as f64),
        })
    }
}

/// Scores `model` on the shards of `dir` (`ValidationSet::load` then `evaluate`).
pub fn evaluate(
    model: &Model,
    dir: &Path,
    cfg: &EvalConfig,
    tokenizer: Option<&tokenizer::Tokenizer>,
) -> Result<EvalReport> {
    ValidationSet::load(dir, cfg, model.mtp.len() as i64, tokenizer)?.evaluate(model)
}

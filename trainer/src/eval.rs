//! Held-out evaluation of a checkpoint on token shards: the main model's and each MTP depth's
//! cross-entropy over a fixed, deterministic set of windows (the first `windows` of the shard
//! loader's seeded order, so every checkpoint is scored on the same tokens), perplexity, and bits
//! per byte: the summed loss in bits over the UTF-8 bytes the scored target tokens decode to,
//! which compares models with different tokenizers.

use std::path::Path;

use anyhow::{ensure, Result};
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::cross_entropy::IGNORE;
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
#[derive(Clone, Copy, Default)]
struct Total {
    nats: f64,
    targets: u64,
}

/// Scores `model` on the shards of `dir`. With a tokenizer, also bits per byte.
pub fn evaluate(
    model: &Model,
    dir: &Path,
    cfg: &EvalConfig,
    tokenizer: Option<&tokenizer::Tokenizer>,
) -> Result<EvalReport> {
    ensure!(
        cfg.seq_len > 0 && cfg.seq_len <= model.cfg.max_seq_len,
        "--seq-len {} outside 1..={} (the model's max_seq_len)",
        cfg.seq_len,
        model.cfg.max_seq_len
    );
    let depth = model.mtp.len() as i64;
    let mut loader = shards::Loader::open(
        dir,
        shards::LoaderConfig {
            seq_len: cfg.seq_len as usize,
            extra: depth as usize,
            batch_size: 1,
            seed: cfg.seed,
            rank: 0,
            world_size: 1,
            prefetch: 0,
        },
    )?;
    ensure!(
        loader.vocab_size() as i64 <= model.cfg.vocab_size,
        "the shards of {} use {} ids but the model's vocab_size is {}: evaluate with the shards of \
         the model's tokenizer",
        dir.display(),
        loader.vocab_size(),
        model.cfg.vocab_size
    );
    if let Some(tok) = tokenizer {
        loader.check_tokenizer(tok.hash())?;
    }
    let windows = cfg.windows.min(loader.windows_per_epoch() as usize);
    let width = cfg.seq_len + 1 + depth;
    let specials: Vec<u32> = tokenizer.map_or(Vec::new(), |t| {
        t.added_tokens()
            .iter()
            .filter(|a| a.special)
            .map(|a| a.id)
            .collect()
    });
    let mut totals = vec![Total::default(); depth as usize + 1];
    let mut bytes = 0u64;
    let weights = LossWeights {
        mtp_lambda: 0.0,
        balance_alpha: 0.0,
    };
    let mut done = 0;
    while done < windows {
        let rows = cfg.batch.min(windows - done);
        let (mut tokens, mut doc_start) = (Vec::new(), Vec::new());
        for _ in 0..rows {
            let b = loader.next_batch()?;
            tokens.extend(b.tokens.iter().map(|&t| t as i64));
            doc_start.extend(b.doc_start);
        }
        let shape = [rows as i64, width];
        let device = model.device();
        let tokens = Tensor::from_slice(&tokens).view(shape).to_device(device);
        let doc_start = Tensor::from_slice(&doc_start).view(shape).to_device(device);
        let losses = tch::no_grad(|| model.losses(&tokens, &doc_start, weights));
        for (k, mean) in std::iter::once(&losses.main).chain(&losses.mtp).enumerate() {
            let targets = Model::targets(&tokens, &doc_start, cfg.seq_len, k as i64);
            let count = targets.ne(IGNORE).sum(Kind::Int64).int64_value(&[]) as u64;
            totals[k].nats += mean.double_value(&[]) * count as f64;
            totals[k].targets += count;
            if k == 0 && tokenizer.is_some() {
                let scored: Vec<i64> = Vec::try_from(targets.to_device(Device::Cpu).view([-1]))?;
                let ids: Vec<u32> = scored
                    .into_iter()
                    .filter(|&t| t != IGNORE && !specials.contains(&(t as u32)))
                    .map(|t| t as u32)
                    .collect();
                bytes += tokenizer.map_or(0, |t| t.decode(&ids).len() as u64);
            }
        }
        done += rows;
    }
    let mean = |t: &Total| t.nats / t.targets.max(1) as f64;
    let loss = mean(&totals[0]);
    Ok(EvalReport {
        windows,
        seq_len: cfg.seq_len,
        tokens: totals[0].targets,
        loss,
        perplexity: loss.exp(),
        mtp_losses: totals[1..].iter().map(mean).collect(),
        bytes: tokenizer.map(|_| bytes),
        bits_per_byte: tokenizer
            .map(|_| totals[0].nats / std::f64::consts::LN_2 / bytes.max(1) as f64),
    })
}

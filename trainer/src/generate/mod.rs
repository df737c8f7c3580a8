//! Text generation from a trained model, one prompt at a time: prefill the prompt through the
//! model into an attention cache (`kv_cache`: MLA's latents by default), then decode token by
//! token (with the absorbed MLA form over latents).
//! With `speculative`, the first MTP module drafts the token after next and the main model
//! verifies current token and draft in one two-token pass: when the draft is what greedy decoding
//! would have chosen, two tokens come out of one forward pass (DeepSeek-V3 §5.4.3), and the output
//! is exactly greedy decoding's.

pub mod sampling;
pub mod text_stream;

use std::time::Instant;

use anyhow::{ensure, Result};
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::kv_cache::{Layout, ModelCache};
use crate::model::Model;
use sampling::{argmax, Sampler, SamplingConfig};

/// What to generate and when to stop.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// New tokens at most (fewer when EOS comes first or the context reaches `max_seq_len`).
    pub max_tokens: usize,
    pub sampling: SamplingConfig,
    /// Stop after this token.
    pub eos: Option<u32>,
    /// Only ids below this can be chosen: the tokenizer's vocabulary when the model's embedding
    /// table is larger (ids without text would print nothing).
    pub vocab_limit: Option<usize>,
    /// Draft with the first MTP module and verify with the main model (greedy only).
    pub speculative: bool,
    /// What the attention cache keeps: MLA's latents (absorbed attention) or per-head K/V.
    pub layout: Layout,
}

/// The tokens of one prompt's continuation and what producing them cost.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Generation {
    pub prompt_tokens: usize,
    pub tokens: Vec<u32>,
    pub stopped_at_eos: bool,
    /// Wall time of prefill and decoding.
    pub seconds: f64,
    /// Wall time until the first new token (the prompt's forward pass).
    pub prefill_seconds: f64,
    /// Main-model forward passes after the prefill.
    pub decode_passes: u64,
    /// Positions the caches were allocated for (prompt + max tokens, at most `max_seq_len`).
    pub cache_positions: i64,
    /// Bytes held by the attention caches of every layer.
    pub cache_bytes: i64,
    /// Bytes the same positions would take as up-projected per-head keys and values.
    pub full_kv_bytes: i64,
    /// Drafts the main model verified, and how many it accepted.
    pub drafts: u64,
    pub accepted: u64,
}

impl Generation {
    /// Tokens per second after the first one (which the prefill produces).
    pub fn decode_tokens_per_second(&self) -> f64 {
        let decoded = self.tokens.len().saturating_sub(1) as f64;
        decoded / (self.seconds - self.prefill_seconds).max(1e-9)
    }
}

/// Collects emitted tokens and decides when to stop.
struct Output<'a> {
    generation: Generation,
    started: Instant,
    max_tokens: usize,
    eos: Option<u32>,
    emit: &'a mut dyn FnMut(u32),
}

impl Output<'_> {
    /// Emits `token`; false once generation must stop.
    fn push(&mut self, token: u32) -> bool {
        if self.generation.tokens.is_empty() {
            self.generation.prefill_seconds = self.started.elapsed().as_secs_f64();
        }
        self.generation.tokens.push(token);
        (self.emit)(token);
        self.generation.stopped_at_eos = Some(token) == self.eos;
        !self.generation.stopped_at_eos && self.generation.tokens.len() < self.max_tokens
    }
}

/// One row of logits per position of `logits [1, s, vocab]`, limited to `vocab_limit` ids.
fn rows(logits: &Tensor, vocab_limit: Option<usize>) -> Vec<Vec<f32>> {
    let vocab = logits.size()[2];
    let keep = vocab_limit.map_or(vocab, |v| (v as i64).min(vocab));
    let host = logits
        .narrow(2, 0, keep)
        .to_kind(Kind::Float)
        .to_device(Device::Cpu)
        .view([-1, keep]);
    Vec::<Vec<f32>>::try_from(&host).expect("logits to host")
}

fn ids(tokens: &[u32], device: Device) -> Tensor {
    let v: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
    Tensor::from_slice(&v).view([1, -1]).to_device(device)
}

/// Continues `prompt` (token ids, BOS included if wanted), calling `emit` with each new token as
/// soon as it is chosen. `stream` selects the sampler's random stream (e.g. the prompt's index).
pub fn generate(
    model: &Model,
    prompt: &[u32],
    opts: &GenerateOptions,
    stream: u64,
    emit: &mut dyn FnMut(u32),
) -> Result<Generation> {
    let n = prompt.len() as i64;
    let max_len = model.cfg.max_seq_len;
    ensure!(
        n > 0,
        "empty prompt: give some text (or use a tokenizer with a BOS token)"
    );
    ensure!(
        n < max_len,
        "the prompt has {n} tokens but model {} reads at most max_seq_len = {max_len}: shorten it",
        model.cfg.name
    );
    ensure!(
        !opts.speculative || (opts.sampling.is_greedy() && !model.mtp.is_empty()),
        "speculative decoding needs greedy sampling (temperature 0) and a model with an MTP module"
    );
    let started = Instant::now();
    let device = model.device();
    let capacity = (n + opts.max_tokens as i64).min(max_len);
    let mut cache = ModelCache::new(
        &model.cfg,
        opts.layout,
        1,
        capacity,
        device,
        opts.speculative,
    );
    let mut out = Output {
        generation: Generation {
            prompt_tokens: prompt.len(),
            cache_positions: capacity,
            cache_bytes: cache.bytes(),
            full_kv_bytes: cache.full_kv_bytes(),
            ..Generation::default()
        },
        started,
        max_tokens: opts.max_tokens,
        eos: opts.eos,
        emit,
    };
    if opts.max_tokens > 0 {
        tch::no_grad(|| {
            if opts.speculative {
                speculate(model, prompt, opts.vocab_limit, &mut cache, &mut out)
            } else {
                let sampler = Sampler::new(opts.sampling.clone(), stream);
                sample(
                    model,
                    prompt,
                    opts.vocab_limit,
                    sampler,
                    &mut cache,
                    &mut out,
                )
            }
        });
    }
    out.generation.seconds = out.started.elapsed().as_secs_f64();
    Ok(out.generation)
}

/// Plain decoding: one forward pass per token.
fn sample(
    model: &Model,
    prompt: &[u32],
    vocab_limit: Option<usize>,
    mut sampler: Sampler,
    cache: &mut ModelCache,
    out: &mut Output,
) {
    let device = model.device();
    let last = |h: &Tensor| model.output_logits(&h.narrow(1, h.size()[1] - 1, 1));
    let mut logits = last(&model.decode(&ids(prompt, device), cache));
    loop {
        let token = sampler.pick(&rows(&logits, vocab_limit)[0]) as u32;
        if !out.push(token) || cache.len() == cache.capacity() {
            return;
        }
        logits = last(&model.decode(&ids(&[token], device), cache));
        out.generation.decode_passes += 1;
    }
}

/// Greedy decoding with MTP drafts. Invariant at the top of the loop: `token` is chosen but not
/// yet fed, it sits at position `cache.len()`, and `draft` is the MTP guess for the one after it.
/// The MTP module's position i joins the main hidden state h_i with the token at i + 1, so its
/// cache always covers the same positions as the main model's.
fn speculate(
    model: &Model,
    prompt: &[u32],
    vocab_limit: Option<usize>,
    cache: &mut ModelCache,
    out: &mut Output,
) {
    let device = model.device();
    let greedy = |logits: &Tensor| -> Vec<u32> {
        rows(logits, vocab_limit)
            .iter()
            .map(|r| argmax(r) as u32)
            .collect()
    };
    let h = model.decode(&ids(prompt, device), cache);
    let n = prompt.len() as i64;
    let mut token = greedy(&model.output_logits(&h.narrow(1, n - 1, 1)))[0];
    let shifted: Vec<u32> = prompt[1..].iter().copied().chain([token]).collect();
    let drafts = model.draft_logits(&h, &ids(&shifted, device), cache);
    let mut draft = greedy(&drafts.narrow(1, n - 1, 1))[0];
    if !out.push(token) {
        return;
    }
    while cache.len() + 2 <= cache.capacity() {
        let h = model.decode(&ids(&[token, draft], device), cache);
        out.generation.decode_passes += 1;
        out.generation.drafts += 1;
        let [after_token, after_draft] = greedy(&model.output_logits(&h))[..] else {
            unreachable!("two positions verified")
        };
        let (kept, fed) = if after_token == draft {
            out.generation.accepted += 1;
            if !out.push(draft) || !out.push(after_draft) {
                return;
            }
            (h, vec![draft, after_draft])
        } else {
            cache.rewind(cache.len() - 1);
            if !out.push(after_token) {
                return;
            }
            (h.narrow(1, 0, 1), vec![after_token])
        };
        token = *fed.last().expect("a token");
        let drafts = model.draft_logits(&kept, &ids(&fed, device), cache);
        draft = greedy(&drafts.narrow(1, drafts.size()[1] - 1, 1))[0];
    }
    // No room left to verify a draft: the last token, if one still fits, the plain way.
    if cache.len() < cache.capacity() {
        let h = model.decode(&ids(&[token], device), cache);
        out.generation.decode_passes += 1;
        out.push(greedy(&model.output_logits(&h))[0]);
    }
}

#[cfg(test)]
mod tests {
    use tch::nn;

    use super::*;
    use crate::linear::Precision;
    use crate::testing::tiny_config;

    fn options(max_tokens: usize, speculative: bool, layout: Layout) -> GenerateOptions {
        GenerateOptions {
            max_tokens,
            sampling: SamplingConfig::default(),
            eos: None,
            vocab_limit: Some(300),
            speculative,
            layout,
        }
    }

    /// Greedy decoding through either cache layout, with and without MTP drafts, chooses the
    /// tokens that re-running the full forward pass on the whole sequence chooses.
    #[test]
    fn cached_and_speculative_greedy_equal_full_recomputation() {
        let mut cfg = tiny_config();
        cfg.init_std = 0.1;
        cfg.max_seq_len = 32;
        tch::manual_seed(11);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Model::new(&vs.root(), &cfg, &Precision::Fp32);
        let prompt = [5u32, 17, 42, 7, 99];
        let mut sequence = prompt.to_vec();
        for _ in prompt.len()..cfg.max_seq_len as usize + 1 {
            let logits = tch::no_grad(|| model.logits(&ids(&sequence, Device::Cpu)));
            let all = rows(&logits, Some(300));
            sequence.push(argmax(all.last().unwrap()) as u32);
        }
        let expected = &sequence[prompt.len()..];
        let runs = [
            (false, Layout::Latent),
            (true, Layout::Latent),
            (false, Layout::UpProjected),
        ];
        for (speculative, layout) in runs {
            let mut streamed = Vec::new();
            let g = generate(
                &model,
                &prompt,
                &options(100, speculative, layout),
                0,
                &mut |t| streamed.push(t),
            )
            .unwrap();
            assert_eq!(g.tokens, expected, "speculative {speculative}, {layout:?}");
            assert_eq!(streamed, g.tokens);
            if speculative {
                assert!(g.drafts > 0 && g.accepted <= g.drafts);
            }
            let eos = expected[3];
            let first = expected.iter().position(|&t| t == eos).unwrap();
            let stop = GenerateOptions {
                eos: Some(eos),
                ..options(100, speculative, layout)
            };
            let g = generate(&model, &prompt, &stop, 0, &mut |_| {}).unwrap();
            assert!(g.stopped_at_eos);
            assert_eq!(g.tokens, expected[..=first]);
            let short = generate(
                &model,
                &prompt,
                &options(3, speculative, layout),
                0,
                &mut |_| {},
            )
            .unwrap();
            assert_eq!(short.tokens, expected[..3]);
        }
    }
}

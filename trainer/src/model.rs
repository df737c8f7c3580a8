//! The whole DeepSeek-V3 model: token embedding, `n_layers` blocks, final norm and output head,
//! plus the MTP modules that share the embedding and the head. `losses` computes the pretraining
//! objective: next-token CE + λ/D·Σ MTP CE + α·Σ sequence-wise balance losses; `decode` and
//! `draft_logits` run new tokens against a `ModelCache` for generation.

use std::sync::Arc;

use tch::{nn, Device, Kind, Reduction, Tensor};

use crate::block::{Block, Ffn};
use crate::capacity::exempt_sequences;
use crate::config::ModelConfig;
use crate::cross_entropy::{head_cross_entropy, IGNORE};
use crate::expert_parallel::{ExpertGroup, ExpertShard};
use crate::experts::ExpertsPath;
use crate::kv_cache::ModelCache;
use crate::linear::Precision;
use crate::moe::{Moe, MoeStats};
use crate::mtp::MtpModule;
use crate::norm::RmsNorm;
use crate::rope::Rope;
use crate::train::Recompute;

#[derive(Debug)]
pub struct Model {
    pub cfg: ModelConfig,
    pub embed_tokens: Tensor,
    pub layers: Vec<Block>,
    pub norm: RmsNorm,
    /// Output head `[vocab, dim]`; the embedding itself when `tie_embeddings`.
    pub lm_head: Tensor,
    pub mtp: Vec<MtpModule>,
    /// Compute the loss head through autograd even on CPU, where the fused head + CE kernel runs
    /// otherwise: the path every other device takes, checked on CPU against the fused one.
    pub autograd_head: bool,
    rope: Rope,
}

/// Loss coefficients that follow a schedule during training.
#[derive(Clone, Copy, Debug)]
pub struct LossWeights {
    /// λ: weight of the mean MTP loss.
    pub mtp_lambda: f64,
    /// α: weight of the summed sequence-wise balance losses.
    pub balance_alpha: f64,
    /// Drop MoE tokens beyond the config's capacity factor (training only: evaluation keeps
    /// every token, as inference does).
    pub drop_tokens: bool,
}

/// The pieces of one forward pass's objective.
#[derive(Debug)]
pub struct Losses {
    /// The objective to back-propagate.
    pub total: Tensor,
    /// Next-token cross-entropy (detached).
    pub main: Tensor,
    /// Cross-entropy of each MTP depth (detached).
    pub mtp: Vec<Tensor>,
    /// Σ over MoE layers of the sequence-wise balance loss, before α (detached).
    pub balance: Tensor,
    /// Σ over MoE layers of DeepSeek-V2's device-level and communication balance losses, with
    /// their α2, α3 (detached).
    pub device_comm: Tensor,
    /// Token-to-expert assignments dropped for capacity by each MoE layer (int64 scalars).
    pub dropped: Vec<Tensor>,
    /// Tokens per expert of every MoE layer, main layers then MTP blocks.
    pub loads: Vec<Tensor>,
}

impl Model {
    /// Builds the model's variables under `root` with the public checkpoint names.
    pub fn new(root: &nn::Path, cfg: &ModelConfig, precision: &Precision) -> Self {
        Self::with_experts(root, cfg, precision, ExpertShard::all(cfg.n_routed_experts))
    }

    /// The model with only the routed experts of `experts` in its MoE layers (one rank of an
    /// expert-parallel job); every other variable as `new` makes it.
    pub fn with_experts(
        root: &nn::Path,
        cfg: &ModelConfig,
        precision: &Precision,
        experts: ExpertShard,
    ) -> Self {
        let init = nn::Init::Randn {
            mean: 0.0,
            stdev: cfg.init_std,
        };
        let model = root / "model";
        let embed_tokens =
            (&model / "embed_tokens").var("weight", &[cfg.vocab_size, cfg.dim], init);
        let layers_path = &model / "layers";
        let layers = (0..cfg.n_layers)
            .map(|i| Block::new(&layers_path / i, cfg, i, precision, experts))
            .collect();
        let norm = RmsNorm::new(&model / "norm", cfg.dim, cfg.norm_eps);
        let lm_head = if cfg.tie_embeddings {
            embed_tokens.shallow_clone()
        } else {
            (root / "lm_head").var("weight", &[cfg.vocab_size, cfg.dim], init)
        };
        let mtp = (0..cfg.mtp_depth)
            .map(|k| {
                MtpModule::new(
                    &layers_path / (cfg.n_layers + k),
                    cfg,
                    cfg.n_layers + k,
                    precision,
                    experts,
                )
            })
            .collect();
        Self {
            cfg: cfg.clone(),
            embed_tokens,
            layers,
            norm,
            lm_head,
            mtp,
            autograd_head: false,
            rope: Rope::new(cfg, root.device()),
        }
    }

    pub fn device(&self) -> Device {
        self.embed_tokens.device()
    }

    fn embed(&self, tokens: &Tensor) -> Tensor {
        Tensor::embedding(&self.embed_tokens, tokens, -1, false, false)
    }

    fn head(&self, hidden: &Tensor) -> Tensor {
        hidden.linear::<Tensor>(&self.lm_head, None)
    }

    /// Last hidden state before the final norm `[b, s, d]` and the MoE statistics of each layer.
    pub fn hidden(&self, tokens: &Tensor) -> (Tensor, Vec<MoeStats>) {
        self.through_layers(self.embed(tokens), None)
    }

    /// The blocks over embedded tokens `h`, dropping MoE tokens beyond capacity except in the
    /// `exempt` sequences when given.
    fn through_layers(&self, mut h: Tensor, exempt: Option<&Tensor>) -> (Tensor, Vec<MoeStats>) {
        let mut stats = Vec::new();
        for layer in &self.layers {
            let (next, s) = layer.forward(&h, &self.rope, exempt);
            h = next;
            stats.extend(s);
        }
        (h, stats)
    }

    /// Next-token logits `[b, s, vocab]` of the main model (what inference uses; MTP is dropped).
    pub fn logits(&self, tokens: &Tensor) -> Tensor {
        self.output_logits(&self.hidden(tokens).0)
    }

    /// Logits of the output head on hidden states before the final norm `[b, s, d]`.
    pub fn output_logits(&self, hidden: &Tensor) -> Tensor {
        self.head(&self.norm.forward(hidden))
    }

    /// `hidden` for the new tokens `[b, s]` that follow the positions held in `cache`, through
    /// the absorbed attention over cached latents; appends the new positions to the cache.
    pub fn decode(&self, tokens: &Tensor, cache: &mut ModelCache) -> Tensor {
        self.layers
            .iter()
            .zip(&mut cache.layers)
            .fold(self.embed(tokens), |h, (layer, c)| {
                layer.forward_cached(&h, &self.rope, c)
            })
    }

    /// Draft logits `[b, s, vocab]` of the first MTP module for the token after `next_tokens`:
    /// position i joins the main model's hidden state `hidden[i]` with the embedding of the token
    /// that followed it, `next_tokens[i]`, and is appended to the module's cache.
    pub fn draft_logits(
        &self,
        hidden: &Tensor,
        next_tokens: &Tensor,
        cache: &mut ModelCache,
    ) -> Tensor {
        let module = self
            .mtp
            .first()
            .expect("the model has no MTP module to draft with (mtp_depth = 0)");
        let h = module.forward_cached(
            hidden,
            &self.embed(next_tokens),
            &self.rope,
            &mut cache.mtp[0],
        );
        self.head(&module.shared_head_norm.forward(&h))
    }

    /// The training objective on a packed batch. `tokens` and `doc_start` are `[b, s + 1 + D]`:
    /// inputs are the first s tokens, depth k (0 = main) predicts the token k+1 positions ahead.
    /// A target is masked when a document starts between the input position and the target,
    /// because the model cannot know the next document from the previous one.
    pub fn losses(&self, tokens: &Tensor, doc_start: &Tensor, weights: LossWeights) -> Losses {
        let depth = self.mtp.len() as i64;
        let (_, width) = tokens
            .size2()
            .expect("tokens must be [batch, seq + 1 + mtp_depth]");
        let s = width - 1 - depth;
        assert!(
            s > 0 && s <= self.cfg.max_seq_len,
            "sequence length {s} outside 1..={}",
            self.cfg.max_seq_len
        );
        let target = |k: i64| Self::targets(tokens, doc_start, s, k);
        let inputs = tokens.narrow(1, 0, s);
        let exempt = (weights.drop_tokens && self.cfg.capacity_factor > 0.0)
            .then(|| exempt_sequences(&inputs));
        // One lookup for the inputs and every depth's next tokens (positions k..k+s): the
        // backward then makes one `[vocab, dim]` embedding gradient, not one per depth.
        let embedded = self.embed(&tokens.narrow(1, 0, s + depth));
        let (mut h, mut stats) = self.through_layers(embedded.narrow(1, 0, s), exempt.as_ref());
        let main = self.cross_entropy(&self.norm.forward(&h), &target(0));
        let mut mtp = Vec::new();
        for (k, module) in (1..).zip(&self.mtp) {
            let next_embedding = embedded.narrow(1, k, s);
            let (next, s_k) = module.forward(&h, &next_embedding, &self.rope, exempt.as_ref());
            h = next;
            stats.extend(s_k);
            let head_input = module.shared_head_norm.forward(&h);
            mtp.push(self.cross_entropy(&head_input, &target(k)));
        }
        let zero = || Tensor::zeros([], (Kind::Float, self.device()));
        let mtp_sum = mtp.iter().fold(zero(), |a, b| a + b);
        let balance = stats.iter().fold(zero(), |a, s| a + &s.balance_loss);
        let device_comm = stats.iter().fold(zero(), |a, s| a + &s.device_comm_loss);
        let total = &main
            + mtp_sum * (weights.mtp_lambda / depth.max(1) as f64)
            + &balance * weights.balance_alpha
            + &device_comm;
        Losses {
            total,
            main: main.detach(),
            mtp: mtp.iter().map(Tensor::detach).collect(),
            balance: balance.detach(),
            device_comm: device_comm.detach(),
            dropped: stats.iter().map(|s| s.dropped.shallow_clone()).collect(),
            loads: stats.into_iter().map(|s| s.load).collect(),
        }
    }

    /// The targets of depth k (0 = main) for the first `s` tokens of a packed batch `[b, width]`:
    /// the token k+1 positions ahead, or `IGNORE` where a document starts between input and target.
    pub fn targets(tokens: &Tensor, doc_start: &Tensor, s: i64, k: i64) -> Tensor {
        let starts = doc_start.to_kind(Kind::Int64).cumsum(1, Kind::Int64);
        let crosses = (starts.narrow(1, k + 1, s) - starts.narrow(1, 0, s)).gt(0);
        tokens.narrow(1, k + 1, s).masked_fill(&crosses, IGNORE)
    }

    /// Mean CE of the output head on normalized hidden states `[b, s, d]` over the targets that
    /// are not masked (0 when all are). On CPU through the fused head + CE node (see
    /// `cross_entropy`) unless `autograd_head`; elsewhere through autograd, so the head GEMM
    /// follows autocast.
    fn cross_entropy(&self, hidden: &Tensor, target: &Tensor) -> Tensor {
        let target = target.view([-1]);
        if hidden.device() == Device::Cpu && !self.autograd_head {
            let hidden = hidden.view([-1, self.cfg.dim]);
            return head_cross_entropy(&hidden, &self.lm_head, &target)
                .unwrap_or_else(|e| panic!("{e:#}"));
        }
        let logits = self
            .head(hidden)
            .to_kind(Kind::Float)
            .view([-1, self.cfg.vocab_size]);
        let count = target.ne(IGNORE).sum(Kind::Float).clamp_min(1.0);
        logits.cross_entropy_loss::<Tensor>(&target, None, Reduction::Sum, IGNORE, 0.0) / count
    }

    /// Every MoE layer: main layers, then MTP blocks.
    fn moe_layers(&mut self) -> impl Iterator<Item = &mut Moe> {
        self.layers
            .iter_mut()
            .chain(self.mtp.iter_mut().map(|m| &mut m.block))
            .filter_map(|b| match &mut b.mlp {
                Ffn::Moe(moe) => Some(moe),
                Ffn::Dense(_) => None,
            })
    }

    /// The balancing biases of every MoE layer, in the order of `Losses::loads`.
    pub fn gate_biases(&mut self) -> Vec<&mut Tensor> {
        self.moe_layers().map(|moe| &mut moe.gate.bias).collect()
    }

    /// Makes every block (MTP modules' too) recompute what `recompute` says in the backward.
    pub fn set_recompute(&mut self, recompute: Recompute) {
        let blocks = self
            .layers
            .iter_mut()
            .chain(self.mtp.iter_mut().map(|m| &mut m.block));
        for block in blocks {
            block.recompute = recompute;
        }
    }

    /// Runs the routed experts of every MoE layer along `path`.
    pub fn set_experts_path(&mut self, path: ExpertsPath) {
        for moe in self.moe_layers() {
            moe.experts_path = path;
        }
    }

    /// Makes every MoE layer exchange token copies with the rest of the EP group `group`.
    pub fn set_expert_group(&mut self, group: &Arc<ExpertGroup>) {
        for moe in self.moe_layers() {
            moe.set_expert_group(group.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv_cache::Layout;
    use crate::optim::release_grads;
    use crate::testing::tiny_config;

    fn build(cfg: &ModelConfig) -> (nn::VarStore, Model) {
        tch::manual_seed(7);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Model::new(&vs.root(), cfg, &Precision::Fp32);
        (vs, model)
    }

    #[test]
    fn shapes_and_initial_loss() {
        let cfg = tiny_config();
        let (_vs, model) = build(&cfg);
        let tokens = Tensor::randint(cfg.vocab_size, [3, 18], (Kind::Int64, Device::Cpu));
        assert_eq!(
            model.logits(&tokens.narrow(1, 0, 16)).size(),
            vec![3, 16, cfg.vocab_size]
        );
        let doc_start = Tensor::zeros([3, 18], (Kind::Bool, Device::Cpu));
        let w = LossWeights {
            mtp_lambda: 0.3,
            balance_alpha: 1e-4,
            drop_tokens: false,
        };
        let l = model.losses(&tokens, &doc_start, w);
        let uniform = (cfg.vocab_size as f64).ln();
        for ce in std::iter::once(&l.main).chain(&l.mtp) {
            let v = ce.double_value(&[]);
            assert!((v - uniform).abs() < 0.05, "init CE {v} vs ln V {uniform}");
        }
        assert_eq!(l.mtp.len(), 1);
        assert_eq!(l.loads.len(), 2, "one MoE main layer + the MTP block");
        let expected = l.main.double_value(&[])
            + 0.3 * l.mtp[0].double_value(&[])
            + 1e-4 * l.balance.double_value(&[]);
        assert!((l.total.double_value(&[]) - expected).abs() < 1e-4);
    }

    /// The loss head every device but the CPU runs (autograd, following autocast) against the
    /// CPU's fused kernel: equal losses and gradients in FP32; under CPU BF16 autocast (what CUDA
    /// runs) close to them but not equal, so the autocast really took effect.
    #[test]
    fn autograd_head_matches_the_fused_head() {
        let mut cfg = tiny_config();
        cfg.vocab_size = 512;
        let (vs, mut model) = build(&cfg);
        let tokens = Tensor::randint(cfg.vocab_size, [2, 18], (Kind::Int64, Device::Cpu));
        let doc_start = Tensor::zeros([2, 18], (Kind::Bool, Device::Cpu));
        let _ = doc_start.get(1).get(7).fill_(1); // masks the targets across that boundary
        let w = LossWeights {
            mtp_lambda: 0.3,
            balance_alpha: 1e-4,
            drop_tokens: false,
        };
        let mut run = |autograd_head: bool, autocast: bool| {
            model.autograd_head = autograd_head;
            release_grads(&vs.trainable_variables());
            let l = crate::autocast::bf16(Device::Cpu, autocast, || {
                model.losses(&tokens, &doc_start, w)
            });
            l.total.backward();
            let grads = [model.lm_head.grad(), model.embed_tokens.grad()].map(|g| g.copy());
            (l.total.double_value(&[]), grads)
        };
        let (fused, fused_grads) = run(false, false);
        let rel =
            |a: &Tensor, b: &Tensor| ((a - b).norm() / b.norm().clamp_min(1e-12)).double_value(&[]);
        let (autograd, autograd_grads) = run(true, false);
        assert!((fused - autograd).abs() < 1e-5, "{fused} vs {autograd}");
        for (a, b) in autograd_grads.iter().zip(&fused_grads) {
            assert!(rel(a, b) < 1e-4, "gradient differs by {}", rel(a, b));
        }
        let (bf16, bf16_grads) = run(true, true);
        let drift = (bf16 - fused).abs() / fused;
        assert!(drift > 0.0 && drift < 1e-2, "bf16 loss {bf16} vs {fused}");
        for (a, b) in bf16_grads.iter().zip(&fused_grads) {
            assert!(rel(a, b) < 5e-2, "bf16 gradient differs by {}", rel(a, b));
        }
    }

    /// Prefill, single-token steps and a multi-token step (as speculative verification does)
    /// through either cache layout give the full forward pass's logits at every position, for the
    /// main model (dense and MoE layers) and the MTP module.
    #[test]
    fn cached_decoding_matches_the_full_forward_pass() {
        let mut cfg = tiny_config();
        cfg.init_std = 0.1; // sharp attention and routing, so a wrong cache would show
        let (_vs, model) = build(&cfg);
        let (b, s) = (2, 20);
        let tokens = Tensor::randint(cfg.vocab_size, [b, s + 1], (Kind::Int64, Device::Cpu));
        let inputs = tokens.narrow(1, 0, s);
        let (full_logits, full_draft) = tch::no_grad(|| {
            let (h, _) = model.hidden(&inputs);
            let module = &model.mtp[0];
            let (h_mtp, _) =
                module.forward(&h, &model.embed(&tokens.narrow(1, 1, s)), &model.rope, None);
            (
                model.output_logits(&h),
                model.head(&module.shared_head_norm.forward(&h_mtp)),
            )
        });
        let layers = cfg.n_layers + 1; // and the first MTP module
        let per_token = |layout| match layout {
            Layout::Latent => cfg.kv_lora_rank + cfg.qk_rope_head_dim,
            Layout::UpProjected => cfg.n_heads * (cfg.qk_head_dim() + cfg.v_head_dim),
        };
        for layout in [Layout::Latent, Layout::UpProjected] {
            let mut cache = ModelCache::new(&cfg, layout, b, s, Device::Cpu, true);
            let (mut logits, mut drafts) = (Vec::new(), Vec::new());
            let mut pos = 0;
            for step in [7, 1, 1, 3, 1, 7] {
                tch::no_grad(|| {
                    let h = model.decode(&inputs.narrow(1, pos, step), &mut cache);
                    logits.push(model.output_logits(&h));
                    let next = tokens.narrow(1, pos + 1, step);
                    drafts.push(model.draft_logits(&h, &next, &mut cache));
                });
                pos += step;
            }
            assert_eq!(cache.len(), s);
            for (name, full, cached) in [
                ("main", &full_logits, Tensor::cat(&logits, 1)),
                ("mtp", &full_draft, Tensor::cat(&drafts, 1)),
            ] {
                let err = (full - cached).abs().max().double_value(&[]);
                let scale = full.abs().max().double_value(&[]);
                assert!(
                    err < 1e-5 * scale.max(1.0),
                    "{layout:?} {name}: max error {err} (logits up to {scale})"
                );
            }
            assert_eq!(cache.bytes(), 4 * per_token(layout) * layers * b * s);
            let full_bytes = 4 * per_token(Layout::UpProjected) * layers * b * s;
            assert_eq!(cache.full_kv_bytes(), full_bytes);
        }
    }

    /// Grouped-query attention caches its KV heads only, and decoding through that cache gives
    /// the full forward pass's logits.
    #[test]
    fn gqa_cached_decoding_matches_the_full_forward_pass() {
        let mut cfg = crate::testing::repo_config("tiny-dense");
        cfg.init_std = 0.1;
        let (_vs, model) = build(&cfg);
        let (b, s) = (2, 12);
        let tokens = Tensor::randint(cfg.vocab_size, [b, s], (Kind::Int64, Device::Cpu));
        let full = tch::no_grad(|| model.logits(&tokens));
        let mut cache = ModelCache::new(&cfg, Layout::Latent, b, s, Device::Cpu, false);
        let mut pos = 0;
        let mut pieces = Vec::new();
        for step in [5, 1, 1, 5] {
            let h = tch::no_grad(|| model.decode(&tokens.narrow(1, pos, step), &mut cache));
            pieces.push(model.output_logits(&h));
            pos += step;
        }
        let err = (full - Tensor::cat(&pieces, 1))
            .abs()
            .max()
            .double_value(&[]);
        assert!(err < 1e-4, "max error {err}");
        let kv_numbers = 2 * cfg.kv_heads() * cfg.qk_head_dim();
        assert_eq!(cache.bytes(), 4 * kv_numbers * cfg.n_layers * b * s);
    }

    #[test]
    fn targets_across_document_boundaries_are_masked() {
        let cfg = tiny_config();
        let (_vs, model) = build(&cfg);
        let w = LossWeights {
            mtp_lambda: 0.3,
            balance_alpha: 0.0,
            drop_tokens: false,
        };
        // Width 10 with D = 1: inputs 0..8, main targets 1..=8, MTP targets 2..=9.
        let tokens = Tensor::randint(cfg.vocab_size, [1, 10], (Kind::Int64, Device::Cpu));
        let changed = tokens.copy();
        let _ = changed
            .narrow(1, 8, 1)
            .fill_((tokens.int64_value(&[0, 8]) + 1) % cfg.vocab_size);
        let starts = |positions: &[usize]| {
            let mut v = vec![false; 10];
            positions.iter().for_each(|&p| v[p] = true);
            Tensor::from_slice(&v).view([1, 10])
        };
        let values = |l: &Losses| (l.main.double_value(&[]), l.mtp[0].double_value(&[]));
        // A document starting at 8 masks every target that token 8 influences: the main target at
        // 8, and the MTP targets 8 and 9 (from inputs 6 and 7); so token 8 cannot change the loss.
        let masked = |t: &Tensor| values(&model.losses(t, &starts(&[0, 8]), w));
        assert_eq!(masked(&tokens), masked(&changed));
        let open = |t: &Tensor| values(&model.losses(t, &starts(&[0]), w));
        let (a, b) = (open(&tokens), open(&changed));
        assert!(
            a.0 != b.0 && a.1 != b.1,
            "without the boundary token 8 is a target: {a:?} {b:?}"
        );
    }
}

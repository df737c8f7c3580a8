//! AdamW with decoupled weight decay, written out over named parameters so that its moments can be
//! saved next to the weights (safetensors, same names + `.exp_avg` / `.exp_avg_sq`) and a resumed
//! run continues bit for bit.
//!
//! With FP32 moments the update is libtorch's fused multi-tensor kernel (`torch.optim.AdamW(
//! fused=True)`, reached through `optim_kernels.cpp`): on CPU the step is memory bound, and one pass
//! over param, grad and moments is several times faster than the same formula in per-tensor ops.
//! Gradient clipping is folded into that pass (the kernel divides gradients by a scale), and
//! gradients are released after the step rather than zeroed, so the next backward writes them
//! fresh instead of accumulating into zeros. As in `torch.optim` with `set_to_none`, a parameter
//! that received no gradient in a step (an expert no token was routed to) is left as it is.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int};

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};
use torch_sys::C_tensor;

use crate::cpp::{check, raw};

/// AdamW hyper-parameters (DeepSeek: β 0.9/0.95, weight decay 0.1, clip 1.0).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    #[serde(default = "defaults::beta1")]
    pub beta1: f64,
    #[serde(default = "defaults::beta2")]
    pub beta2: f64,
    #[serde(default = "defaults::eps")]
    pub eps: f64,
    #[serde(default = "defaults::weight_decay")]
    pub weight_decay: f64,
    /// Max global gradient L2 norm (0 disables clipping).
    #[serde(default = "defaults::clip")]
    pub clip: f64,
    /// Storage dtype of the two AdamW moments.
    #[serde(default)]
    pub moments: Moments,
}

/// How the AdamW moments are stored. The update math is FP32 either way and master weights stay
/// FP32; BF16 halves the optimizer state, as DeepSeek-V3 does (§3.3.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Moments {
    #[default]
    Fp32,
    Bf16,
}

mod defaults {
    pub fn beta1() -> f64 {
        0.9
    }
    pub fn beta2() -> f64 {
        0.95
    }
    pub fn eps() -> f64 {
        1e-8
    }
    pub fn weight_decay() -> f64 {
        0.1
    }
    pub fn clip() -> f64 {
        1.0
    }
}

impl Default for OptimConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

extern "C" {
    fn whale_fused_adamw(
        params: *const *mut C_tensor,
        grads: *const *mut C_tensor,
        exp_avgs: *const *mut C_tensor,
        exp_avg_sqs: *const *mut C_tensor,
        n: i64,
        step: *mut C_tensor,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        grad_scale: *mut C_tensor,
        err: *mut c_char,
        err_len: i64,
    ) -> c_int;
    fn whale_clear_grads(tensors: *const *mut C_tensor, n: i64);
    fn whale_foreach_norms(
        tensors: *const *mut C_tensor,
        n: i64,
        result: *mut *mut C_tensor,
        err: *mut c_char,
        err_len: i64,
    ) -> c_int;
}

/// Releases the `.grad` of each tensor (`zero_grad(set_to_none=True)`).
pub fn release_grads<'a>(tensors: impl IntoIterator<Item = &'a Tensor>) {
    let tensors = ptrs(tensors);
    // SAFETY: the pointers refer to live tensors; only their `.grad` is reset.
    unsafe { whale_clear_grads(tensors.as_ptr(), tensors.len() as i64) };
}

/// The raw handles of `tensors`, for the C++ side; valid while the tensors live.
fn ptrs<'a>(tensors: impl IntoIterator<Item = &'a Tensor>) -> Vec<*mut C_tensor> {
    tensors.into_iter().map(raw).collect()
}

/// The dtype `cfg` keeps moments in.
fn moment_kind(cfg: &OptimConfig) -> Kind {
    match cfg.moments {
        Moments::Fp32 => Kind::Float,
        Moments::Bf16 => Kind::BFloat16,
    }
}

struct Param {
    tensor: Tensor,
    /// Matrices decay; norms, biases and other 1-D tensors do not.
    decay: bool,
    /// For a shard of a parameter (ZeRO-1): `tensor` is elements `offset..offset + len` of the
    /// flattened parameter, and so are the moments.
    offset: Option<i64>,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

/// What one optimizer slot updates: a whole named parameter, or (ZeRO-1) a flat piece of one.
pub struct Slot {
    pub name: String,
    pub tensor: Tensor,
    pub decay: bool,
    /// Where `tensor` starts in the flattened parameter `name`, for a piece.
    pub offset: Option<i64>,
}

/// Where an optimizer keeps its moments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MomentStore {
    /// Zeros beside each slot's tensor, ready to step.
    Beside,
    /// None allocated: the optimizer only carries restored moments (as read, in host memory) to
    /// the ZeRO-1 shards `DataParallel::shard_optimizer` makes from it, so no device, and no
    /// host heap, ever holds the whole state that ZeRO-1 divides. It cannot step.
    Deferred,
}

pub struct AdamW {
    cfg: OptimConfig,
    params: BTreeMap<String, Param>,
    /// Optimizer steps taken (bias correction uses it).
    pub steps: u64,
}

impl AdamW {
    /// Optimizes the given named trainable tensors, with moments as `store` says.
    pub fn new(named: Vec<(String, Tensor)>, cfg: OptimConfig, store: MomentStore) -> Self {
        let slots = named
            .into_iter()
            .map(|(name, tensor)| Slot {
                name,
                decay: tensor.dim() >= 2,
                tensor,
                offset: None,
            })
            .collect();
        Self::with_slots(slots, cfg, store)
    }

    /// Optimizes the given slots (names unique), with moments as `store` says.
    pub fn with_slots(slots: Vec<Slot>, cfg: OptimConfig, store: MomentStore) -> Self {
        let kind = moment_kind(&cfg);
        let params = slots
            .into_iter()
            .map(|slot| {
                let zeros = || match store {
                    MomentStore::Beside => {
                        Tensor::zeros(slot.tensor.size().as_slice(), (kind, slot.tensor.device()))
                    }
                    MomentStore::Deferred => Tensor::new(),
                };
                let param = Param {
                    decay: slot.decay,
                    offset: slot.offset,
                    exp_avg: zeros(),
                    exp_avg_sq: zeros(),
                    tensor: slot.tensor,
                };
                (slot.name, param)
            })
            .collect();
        Self {
            cfg,
            params,
            steps: 0,
        }
    }

    /// The slots' names, in the order `update` takes their gradients.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.params.keys().map(String::as_str)
    }

    /// Σ‖g‖² over the slots' gradients, on their device and not read (see `grad_squares`).
    pub fn slot_grad_squares(&self) -> Tensor {
        let defined: Vec<Tensor> = self.grads().into_iter().filter(Tensor::defined).collect();
        let device = self
            .params
            .values()
            .next()
            .map_or(Device::Cpu, |p| p.tensor.device());
        Self::grad_squares(&defined, device)
    }

    /// The L2 norm of the slots' gradients together (one read from their device).
    pub fn grad_norm(&self) -> f64 {
        self.slot_grad_squares().double_value(&[]).sqrt()
    }

    /// Σ‖g‖² over `grads` as a Double scalar on `device`, left there: data-parallel ranks sum
    /// theirs before the one read of the global norm (a read per gradient would stall a GPU as
    /// many times).
    pub fn grad_squares(grads: &[Tensor], device: Device) -> Tensor {
        if grads.is_empty() {
            return Tensor::zeros([], (Kind::Double, device));
        }
        let tensors = ptrs(grads);
        let mut norms: *mut C_tensor = std::ptr::null_mut();
        // SAFETY: the pointers refer to live tensors for the call; the result is a new tensor.
        let done = check("gradient norms", |err, err_len| unsafe {
            whale_foreach_norms(
                tensors.as_ptr(),
                tensors.len() as i64,
                &mut norms,
                err,
                err_len,
            )
        });
        if let Err(e) = done {
            panic!("{e:#}");
        }
        // SAFETY: `norms` was allocated by `new at::Tensor` and is owned by us from here on.
        let norms = unsafe { Tensor::from_ptr(norms) };
        norms.to_kind(Kind::Double).square().sum(Kind::Double)
    }

    /// The slots' gradients (`.grad` of each, undefined where there is none), in `names` order.
    pub fn grads(&self) -> Vec<Tensor> {
        self.params.values().map(|p| p.tensor.grad()).collect()
    }

    /// One AdamW update at learning rate `lr` from the slots' gradients, whose global L2 norm is
    /// `norm` (`grad_norm`, or read with other values from `slot_grad_squares`), after scaling
    /// them to norm at most `clip`; then releases the gradients.
    pub fn step(&mut self, lr: f64, norm: f64) {
        self.update(lr, &self.grads(), norm);
        self.zero_grad();
    }

    /// One AdamW update from `grads` (one per slot in `names` order; an undefined one leaves its
    /// slot as it is) whose global L2 norm, over all ranks' slots, is `norm`: gradients are
    /// scaled to norm at most `clip` first. `.grad`s are neither read nor released.
    pub fn update(&mut self, lr: f64, grads: &[Tensor], norm: f64) {
        assert!(
            self.params.values().all(|p| p.exp_avg.defined()),
            "an optimizer with deferred moments cannot step: shard it first"
        );
        self.steps += 1;
        let live: Vec<(&Param, Tensor)> = self
            .params
            .values()
            .zip(grads)
            .filter(|(_, g)| g.defined())
            .map(|(p, g)| (p, g.shallow_clone()))
            .collect();
        // Gradients are divided by `divisor` (≥ 1) inside the update: clip / (norm + 1e-6) when
        // clipping, as torch.nn.utils.clip_grad_norm_ scales them.
        let divisor =
            (self.cfg.clip > 0.0 && norm > self.cfg.clip).then(|| (norm + 1e-6) / self.cfg.clip);
        let (decayed, plain): (Vec<_>, Vec<_>) = live.into_iter().partition(|(p, _)| p.decay);
        for (group, weight_decay) in [(decayed, self.cfg.weight_decay), (plain, 0.0)] {
            if group.is_empty() {
                continue;
            }
            match self.cfg.moments {
                Moments::Fp32 => self.fused_update(&group, lr, weight_decay, divisor),
                Moments::Bf16 => {
                    for (p, g) in &group {
                        self.upcast_update(p, g, lr, weight_decay, divisor)
                    }
                }
            }
        }
    }

    fn fused_update(
        &self,
        group: &[(&Param, Tensor)],
        lr: f64,
        weight_decay: f64,
        divisor: Option<f64>,
    ) {
        let device = group[0].0.tensor.device();
        let params = ptrs(group.iter().map(|(p, _)| &p.tensor));
        let grads = ptrs(group.iter().map(|(_, g)| g));
        let exp_avgs = ptrs(group.iter().map(|(p, _)| &p.exp_avg));
        let exp_avg_sqs = ptrs(group.iter().map(|(p, _)| &p.exp_avg_sq));
        // Filled on the device: a copy from the host would wait for the GPU to finish its queue.
        let scalar = |v: f64| Tensor::full([], v, (Kind::Float, device));
        let step = scalar(self.steps as f64);
        let scale = divisor.map(scalar);
        // SAFETY: all pointers refer to live tensors borrowed for the duration of the call; the
        // kernel updates params and moments in place and keeps no reference.
        let done = check("fused AdamW", |err, err_len| {
            tch::no_grad(|| unsafe {
                whale_fused_adamw(
                    params.as_ptr(),
                    grads.as_ptr(),
                    exp_avgs.as_ptr(),
                    exp_avg_sqs.as_ptr(),
                    params.len() as i64,
                    raw(&step),
                    lr,
                    self.cfg.beta1,
                    self.cfg.beta2,
                    weight_decay,
                    self.cfg.eps,
                    scale.as_ref().map_or(std::ptr::null_mut(), raw),
                    err,
                    err_len,
                )
            })
        });
        if let Err(e) = done {
            panic!("{e:#}");
        }
    }

    /// The update of `torch.optim.AdamW` (single-tensor form) for moments stored in a lower
    /// precision: moments are upcast to FP32, updated, and rounded back.
    fn upcast_update(
        &self,
        p: &Param,
        grad: &Tensor,
        lr: f64,
        weight_decay: f64,
        divisor: Option<f64>,
    ) {
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let bc1 = 1.0 - b1.powi(self.steps as i32);
        let bc2 = 1.0 - b2.powi(self.steps as i32);
        tch::no_grad(|| {
            let grad = match divisor {
                Some(d) => grad / d,
                None => grad.shallow_clone(),
            };
            let mut m = p.exp_avg.to_kind(Kind::Float);
            let mut v = p.exp_avg_sq.to_kind(Kind::Float);
            let _ = m.lerp_(&grad, 1.0 - b1);
            let _ = v.g_mul_scalar_(b2).addcmul_(&grad, &(&grad * (1.0 - b2)));
            let mut tensor = p.tensor.shallow_clone();
            let _ = tensor.g_mul_scalar_(1.0 - lr * weight_decay);
            // p -= lr/bc1 · m / (√v/√bc2 + eps), as p += m / denom with the factor folded in.
            let mut denom = v.sqrt();
            let _ = denom
                .g_div_scalar_(bc2.sqrt())
                .g_add_scalar_(self.cfg.eps)
                .g_div_scalar_(-lr / bc1);
            let _ = tensor.addcdiv_(&m, &denom);
            p.exp_avg.shallow_clone().copy_(&m);
            p.exp_avg_sq.shallow_clone().copy_(&v);
        });
    }

    /// Releases the gradients (the next backward writes fresh ones).
    pub fn zero_grad(&mut self) {
        release_grads(self.params.values().map(|p| &p.tensor));
    }

    /// Moments as named tensors, for the checkpoint.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .flat_map(|(name, p)| {
                [
                    (format!("{name}.exp_avg"), p.exp_avg.shallow_clone()),
                    (format!("{name}.exp_avg_sq"), p.exp_avg_sq.shallow_clone()),
                ]
            })
            .collect()
    }

    /// Restores moments saved by `state_tensors` (whole parameters' moments: a piece takes its
    /// elements of them; deferred moments take them as they are); every parameter must be
    /// present.
    pub fn load_state_tensors(
        &mut self,
        saved: &BTreeMap<String, Tensor>,
        steps: u64,
    ) -> anyhow::Result<()> {
        let kind = moment_kind(&self.cfg);
        tch::no_grad(|| -> anyhow::Result<()> {
            for (name, p) in self.params.iter_mut() {
                for (suffix, dst) in [
                    ("exp_avg", &mut p.exp_avg),
                    ("exp_avg_sq", &mut p.exp_avg_sq),
                ] {
                    let key = format!("{name}.{suffix}");
                    let src = saved
                        .get(&key)
                        .ok_or_else(|| anyhow::anyhow!("optimizer state lacks {key}"))?;
                    match p.offset {
                        Some(offset) => {
                            dst.f_copy_(&src.view([-1]).narrow(0, offset, dst.numel() as i64))?
                        }
                        None if !dst.defined() => *dst = src.to_kind(kind),
                        None => dst.f_copy_(src)?,
                    };
                }
            }
            Ok(())
        })?;
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tch::Device;

    use super::*;

    #[test]
    fn matches_the_adamw_formula_and_skips_decay_on_vectors() {
        let w = Tensor::from_slice(&[1.0f32, -2.0, 3.0, 0.5])
            .view([2, 2])
            .set_requires_grad(true);
        let b = Tensor::from_slice(&[1.0f32, 1.0]).set_requires_grad(true);
        let mut opt = AdamW::new(
            vec![
                ("w".into(), w.shallow_clone()),
                ("b".into(), b.shallow_clone()),
            ],
            OptimConfig::default(),
            MomentStore::Beside,
        );
        (w.sum(Kind::Float) * 2.0 + b.sum(Kind::Float) * 3.0).backward();
        opt.step(0.01, opt.grad_norm());
        // First step: m̂/√v̂ = sign(g), so the update is lr·1 for every element; only w decays.
        let w_after = Vec::<f32>::try_from(&w.view([-1])).unwrap();
        let expected = [1.0f32, -2.0, 3.0, 0.5].map(|x| x * (1.0 - 0.01 * 0.1) - 0.01);
        for (a, e) in w_after.iter().zip(expected) {
            assert!((a - e).abs() < 1e-6, "{a} vs {e}");
        }
        assert!((b.double_value(&[0]) - 0.99).abs() < 1e-6);
        assert!(!w.grad().defined(), "gradients released");
    }

    #[test]
    fn clipping_scales_the_update_and_returns_the_norm_before() {
        let w = Tensor::zeros([4], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let mut opt = AdamW::new(
            vec![("w".into(), w.shallow_clone())],
            OptimConfig::default(),
            MomentStore::Beside,
        );
        (&w * 10.0).sum(Kind::Float).backward();
        let norm = opt.grad_norm();
        assert!((norm - 20.0).abs() < 1e-4);
        opt.step(0.01, norm);
        // m = (1 - β1)·g with g clipped to norm 1: 0.1 · 10/20 per element.
        let m = &opt.state_tensors()[0].1;
        let m_norm = m.norm().double_value(&[]);
        assert!((m_norm - 0.1).abs() < 1e-6, "|m| = {m_norm}");
    }

    /// Deferred moments allocate nothing, take restored moments as they are (in their dtype), and
    /// refuse to step until they hold some.
    #[test]
    fn deferred_moments_carry_restored_state_only() {
        let w = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let named = || vec![("w".to_string(), w.shallow_clone())];
        let cfg = OptimConfig {
            moments: Moments::Bf16,
            ..OptimConfig::default()
        };
        let fresh = AdamW::new(named(), cfg.clone(), MomentStore::Deferred);
        assert!(fresh.state_tensors().iter().all(|(_, m)| !m.defined()));
        let saved: BTreeMap<String, Tensor> = [
            (
                "w.exp_avg",
                Tensor::full([2, 3], 0.5, (Kind::Float, Device::Cpu)),
            ),
            (
                "w.exp_avg_sq",
                Tensor::full([2, 3], 0.25, (Kind::Float, Device::Cpu)),
            ),
        ]
        .into_iter()
        .map(|(k, t)| (k.to_string(), t))
        .collect();
        let mut restored = AdamW::new(named(), cfg, MomentStore::Deferred);
        restored.load_state_tensors(&saved, 7).unwrap();
        assert_eq!(restored.steps, 7);
        for (name, m) in restored.state_tensors() {
            assert_eq!(m.kind(), Kind::BFloat16, "{name}");
            assert_eq!(m.to_kind(Kind::Float), saved[&name], "{name}");
        }
        let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut fresh = fresh;
            fresh.update(
                0.01,
                &[Tensor::ones([2, 3], (Kind::Float, Device::Cpu))],
                1.0,
            )
        }));
        assert!(stepped.is_err(), "a deferred optimizer stepped");
    }

    /// Random parameters and gradients, several steps with and without clipping: BF16 moments
    /// follow FP32 moments (the fused kernel) to within BF16 rounding of the moments.
    #[test]
    fn bf16_moments_track_fp32_moments() {
        tch::manual_seed(0);
        let init = Tensor::randn([64, 32], (Kind::Float, Device::Cpu));
        let grads: Vec<Tensor> = (0..5)
            .map(|i| Tensor::randn([64, 32], (Kind::Float, Device::Cpu)) * (0.02 + 0.1 * i as f64))
            .collect();
        let run = |moments: Moments| {
            let w = init.copy().set_requires_grad(true);
            let cfg = OptimConfig {
                moments,
                ..OptimConfig::default()
            };
            let mut opt = AdamW::new(
                vec![("w".into(), w.shallow_clone())],
                cfg,
                MomentStore::Beside,
            );
            let norms: Vec<f64> = grads
                .iter()
                .map(|g| {
                    (&w * g).sum(Kind::Float).backward();
                    let norm = opt.grad_norm();
                    opt.step(0.01, norm);
                    norm
                })
                .collect();
            let kinds: Vec<Kind> = opt.state_tensors().iter().map(|(_, t)| t.kind()).collect();
            (w.detach(), norms, kinds)
        };
        let (w32, n32, k32) = run(Moments::Fp32);
        let (w16, n16, k16) = run(Moments::Bf16);
        assert_eq!(k32, vec![Kind::Float; 2]);
        assert_eq!(k16, vec![Kind::BFloat16; 2]);
        assert_eq!(n32, n16, "same gradients, same norms");
        assert!(n32[0] < 1.0 && n32[4] > 1.0, "both regimes: {n32:?}");
        let moved = (&w32 - &init).abs().max().double_value(&[]);
        let err = (&w32 - &w16).abs().max().double_value(&[]);
        assert!(moved > 0.04, "{moved}");
        assert!(
            err < 0.01 * moved,
            "bf16 moments moved weights by {err} vs {moved}"
        );
    }
}

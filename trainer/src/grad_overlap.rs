//! Data parallelism's gradient sums overlapped with the backward, as PyTorch DDP's Reducer and
//! Megatron's distributed optimizer do: the parameters are cut into buckets in the order the
//! backward is expected to finish them (the reverse of the order the model created them in: MTP
//! blocks, output head, last layer … first layer, embedding), a hook on each parameter's gradient
//! accumulator (`dist.cpp`) reports when its gradient is complete, and a bucket's collective starts
//! as soon as all its parameters are — while the backward computes the earlier layers. The
//! collective is an all-reduce (every rank gets the whole sums, in the gradients) or, for ZeRO-1, a
//! reduce-scatter (each rank gets the sums of its equal part of every bucket, in its shard).
//!
//! Only the last micro-batch's backward is watched (before it the gradients are not final), and
//! buckets start strictly in order, so every rank launches the same collectives in the same order
//! even when a parameter got no gradient on one rank (an expert no token reached): its bucket
//! waits for the end of the backward, where the missing gradients are filled with zeros and the
//! remaining buckets start.
//!
//! The gradients live in their buckets (DDP's `gradient_as_bucket_view`): once a parameter's first
//! gradient of a step is accumulated, the hook copies it into the parameter's place in its bucket's
//! flat buffer (allocated when the bucket's first gradient arrives) and makes `.grad` a view of that
//! place. Later micro-batches' accumulators add into the bucket in place, the collective sums it
//! where it lies, and nothing is copied back: no second copy of the gradients is alive while the
//! collectives run. For a reduce-scatter the buffer is padded to a multiple of the world size.

use std::ffi::{c_char, c_void};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{anyhow, ensure, Context, Result};
use tch::Tensor;
use torch_sys::C_tensor;

use crate::cpp::{check, raw};
use crate::dist::{ProcessGroup, ReduceOp, Work};
use crate::memory_fit::panic_text;

extern "C" {
    fn whale_dist_watch_grads(
        tensors: *const *mut C_tensor,
        n: i64,
        ready: extern "C" fn(*mut c_void, i64),
        ctx: *mut c_void,
        out: *mut *mut c_void,
        err: *mut c_char,
        err_len: i64,
    ) -> i32;
    fn whale_dist_unwatch_grads(watch: *mut c_void);
    fn whale_dist_set_grad(
        t: *mut C_tensor,
        grad: *mut C_tensor,
        err: *mut c_char,
        err_len: i64,
    ) -> i32;
    fn whale_dist_zero_missing_grads(
        tensors: *const *mut C_tensor,
        n: i64,
        err: *mut c_char,
        err_len: i64,
    ) -> i32;
}

/// Gives each of `params` that has no `.grad` a zero one.
pub fn zero_missing_grads(params: &[&Tensor]) -> Result<()> {
    let missing: Vec<*mut C_tensor> = params
        .iter()
        .filter(|p| !p.grad().defined())
        .map(|p| raw(p))
        .collect();
    check(
        "zero gradients of unreached parameters",
        |err, len| unsafe {
            // SAFETY: the pointers refer to live parameters; only their `.grad` is set.
            whale_dist_zero_missing_grads(missing.as_ptr(), missing.len() as i64, err, len)
        },
    )
}

/// Points the `.grad` of leaf tensor `t` at `grad`.
fn set_grad(t: &Tensor, grad: &Tensor) -> Result<()> {
    check("point a gradient into its bucket", |err, len| unsafe {
        // SAFETY: both tensors are live; only `t`'s `.grad` is set.
        whale_dist_set_grad(raw(t), raw(grad), err, len)
    })
}

/// How a bucket's sums reach the ranks.
pub enum Reduction {
    /// Every rank gets the whole sums, in the gradients.
    AllReduce,
    /// Each rank gets the sums of its part of each bucket (rank r: elements r × n … (r + 1) × n of
    /// the bucket padded with zeros to world × n), into that bucket's tensor of n elements here.
    ReduceScatter(Vec<Tensor>),
}

/// Cuts `params`, taken in `order` (indices of `params`, the expected order of the backward; the
/// same on every rank), into buckets of at most `cap` bytes (a larger parameter alone) whose
/// parameters share a dtype, so that one buffer holds each.
pub fn plan_buckets(params: &[Tensor], order: &[usize], cap: usize) -> Vec<Vec<usize>> {
    let mut buckets: Vec<Vec<usize>> = Vec::new();
    let mut bytes = 0;
    for &i in order {
        let size = params[i].numel() * params[i].kind().elt_size_in_bytes();
        match buckets.last_mut() {
            Some(bucket) if bytes + size <= cap && params[bucket[0]].kind() == params[i].kind() => {
                bucket.push(i)
            }
            _ => {
                buckets.push(vec![i]);
                bytes = 0;
            }
        }
        bytes += size;
    }
    buckets
}

/// Where the buckets of one step stand.
struct State {
    group: Arc<ProcessGroup>,
    params: Vec<Tensor>,
    /// Parameter indices of each bucket, in launch order.
    buckets: Vec<Vec<usize>>,
    /// Elements of each bucket's buffer (with a reduce-scatter's padding).
    numels: Vec<i64>,
    /// Elements of each bucket's buffer the gradients fill (the rest is zeros).
    used: Vec<i64>,
    reduction: Reduction,
    bucket_of: Vec<usize>,
    /// Where each parameter's gradient starts in its bucket's buffer.
    offsets: Vec<i64>,
    /// Each bucket's flat gradient buffer, which the parameters' `.grad`s are views of; dropped at
    /// `wait`, after which the `.grad`s alone keep it (until the optimizer releases them).
    flats: Vec<Option<Tensor>>,
    /// Parameters no gradient reached on this rank this step: their `.grad` is zeros put in for the
    /// collective.
    zeroed: Vec<bool>,
    /// Watching the backward (the last micro-batch's).
    armed: bool,
    ready: Vec<bool>,
    /// Parameters of each bucket still without their final gradient.
    waiting: Vec<usize>,
    /// The next bucket to launch.
    next: usize,
    /// Buckets launched while the backward ran, this step.
    overlapped: usize,
    in_flight: Vec<Work>,
    /// An error inside a hook, reported by `arm` or `finish_backward`.
    failed: Option<anyhow::Error>,
}

impl State {
    /// Parameter `i`'s place in its bucket's buffer, which is allocated (uninitialised) if there is
    /// none.
    fn bucket_view(&mut self, i: usize) -> Tensor {
        let b = self.bucket_of[i];
        let p = &self.params[i];
        let (numel, used) = (self.numels[b], self.used[b]);
        let flat = self.flats[b].get_or_insert_with(|| {
            let flat = Tensor::empty([numel], (p.kind(), p.device()));
            tch::no_grad(|| {
                let _ = flat.narrow(0, used, numel - used).zero_();
            });
            flat
        });
        flat.narrow(0, self.offsets[i], p.numel() as i64)
            .view(p.size().as_slice())
    }

    /// Makes parameter `i`'s `.grad` its place in its bucket: a gradient accumulated elsewhere (a
    /// step's first, which the accumulator allocates) is copied in, a missing one (no micro-batch
    /// reached the parameter here) becomes zeros, which join the sum of the ranks it reached.
    fn move_to_bucket(&mut self, i: usize) -> Result<()> {
        let grad = self.params[i].grad();
        let mut view = self.bucket_view(i);
        tch::no_grad(|| {
            if !grad.defined() {
                let _ = view.zero_();
                self.zeroed[i] = true;
            } else if grad.data_ptr() != view.data_ptr() {
                view.copy_(&grad);
            }
        });
        set_grad(&self.params[i], &view)
    }

    fn launch_ready(&mut self) -> Result<()> {
        while self.next < self.buckets.len() && self.waiting[self.next] == 0 {
            let b = self.next;
            for k in 0..self.buckets[b].len() {
                self.move_to_bucket(self.buckets[b][k])?;
            }
            let flat = self.flats[b].as_ref().expect("bucket_view allocated it");
            let work = match &self.reduction {
                Reduction::AllReduce => self.group.all_reduce(flat, ReduceOp::Sum)?,
                Reduction::ReduceScatter(parts) => self.group.reduce_scatter(&parts[b], flat)?,
            };
            self.in_flight.push(work);
            self.overlapped += self.armed as usize;
            self.next += 1;
        }
        Ok(())
    }

    /// After parameter `i`'s accumulator added a gradient (possibly undefined: nothing reached it).
    fn on_accumulated(&mut self, i: usize) -> Result<()> {
        if !self.armed {
            // A step that stopped early (a non-finite loss) may still be summing the buffers.
            self.in_flight.drain(..).try_for_each(Work::wait)?;
        }
        if self.params[i].grad().defined() {
            self.move_to_bucket(i)?;
        }
        if !self.armed || self.ready[i] {
            return Ok(());
        }
        self.ready[i] = true;
        self.waiting[self.bucket_of[i]] -= 1;
        self.launch_ready()
    }
}

/// Called by the accumulator hooks from the autograd engine's thread. Unless a hook failed this
/// step, an error or a panic is kept for the step to report (never unwinding into the engine).
extern "C" fn on_grad_ready(ctx: *mut c_void, index: i64) {
    // SAFETY: `ctx` is the `Mutex<State>` boxed in `OverlappedReduce`, which removes the hooks
    // before freeing it.
    let state = unsafe { &*(ctx as *const Mutex<State>) };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut s = lock(state);
        match s.failed {
            Some(_) => Ok(()),
            None => s.on_accumulated(index as usize),
        }
    }));
    let failed = match outcome {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e,
        Err(panic) => anyhow!(
            "panic in the gradient hook of parameter {index}: {}",
            panic_text(&*panic).unwrap_or("(no message)")
        ),
    };
    lock(state).failed.get_or_insert(failed);
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The overlapped gradient sums of a list of parameters over a group.
pub struct OverlappedReduce {
    state: Box<Mutex<State>>,
    watch: *mut c_void,
}

// SAFETY: the state is behind a mutex and the watch handle is only freed in `drop`.
unsafe impl Send for OverlappedReduce {}

impl Drop for OverlappedReduce {
    fn drop(&mut self) {
        // SAFETY: `watch` came from `whale_dist_watch_grads` and is freed once; the hooks are
        // removed before the state they point to is dropped.
        unsafe { whale_dist_unwatch_grads(self.watch) }
    }
}

impl OverlappedReduce {
    /// Sums the gradients of `params` in `buckets` (see `plan_buckets`; launched in that order) by
    /// `reduction`, and hooks their gradient accumulators.
    pub fn new(
        group: Arc<ProcessGroup>,
        params: &[Tensor],
        buckets: Vec<Vec<usize>>,
        reduction: Reduction,
    ) -> Result<Self> {
        let mut bucket_of = vec![0; params.len()];
        let mut offsets = vec![0; params.len()];
        let mut used = Vec::with_capacity(buckets.len());
        for (b, bucket) in buckets.iter().enumerate() {
            let mut numel = 0;
            for &i in bucket {
                bucket_of[i] = b;
                offsets[i] = numel;
                numel += params[i].numel() as i64;
            }
            used.push(numel);
        }
        let numels = match &reduction {
            Reduction::AllReduce => used.clone(),
            Reduction::ReduceScatter(parts) => {
                let world = group.world_size as i64;
                ensure!(
                    parts.len() == buckets.len()
                        && parts
                            .iter()
                            .zip(&used)
                            .all(|(p, &n)| p.numel() as i64 * world >= n),
                    "a reduce-scatter needs one part per bucket, of at least 1/{world} of it"
                );
                parts.iter().map(|p| p.numel() as i64 * world).collect()
            }
        };
        let state = Box::new(Mutex::new(State {
            group,
            params: params.iter().map(Tensor::shallow_clone).collect(),
            waiting: buckets.iter().map(Vec::len).collect(),
            flats: buckets.iter().map(|_| None).collect(),
            buckets,
            numels,
            used,
            reduction,
            bucket_of,
            offsets,
            zeroed: vec![false; params.len()],
            armed: false,
            ready: vec![false; params.len()],
            next: 0,
            overlapped: 0,
            in_flight: Vec::new(),
            failed: None,
        }));
        let ptrs: Vec<*mut C_tensor> = params.iter().map(raw).collect();
        let ctx = &*state as *const Mutex<State> as *mut c_void;
        let mut watch = std::ptr::null_mut();
        check("hook the gradient accumulators", |err, len| unsafe {
            // SAFETY: the tensors are live; `ctx` outlives the hooks (see `drop`).
            whale_dist_watch_grads(
                ptrs.as_ptr(),
                ptrs.len() as i64,
                on_grad_ready,
                ctx,
                &mut watch,
                err,
                len,
            )
        })?;
        Ok(Self { state, watch })
    }

    /// Buckets planned.
    pub fn buckets(&self) -> usize {
        lock(&self.state).buckets.len()
    }

    /// Watches the next backward (call before the last micro-batch's).
    pub fn arm(&self) -> Result<()> {
        let mut s = lock(&self.state);
        if let Some(e) = s.failed.take() {
            return Err(e).context("gradient hook during an earlier micro-batch's backward");
        }
        // A step that stopped early (a non-finite loss) may have left buckets in flight.
        s.in_flight.drain(..).try_for_each(Work::wait)?;
        s.ready.iter_mut().for_each(|r| *r = false);
        s.zeroed.iter_mut().for_each(|z| *z = false);
        s.waiting = s.buckets.iter().map(Vec::len).collect();
        (s.next, s.overlapped, s.failed) = (0, 0, None);
        s.armed = true;
        Ok(())
    }

    /// After the last backward: which parameters got a gradient on this rank; those without one
    /// get zeros, and the buckets not yet started start, in order.
    pub fn finish_backward(&self) -> Result<Vec<bool>> {
        let mut s = lock(&self.state);
        s.armed = false;
        if let Some(e) = s.failed.take() {
            return Err(e).context("gradient sums during the backward");
        }
        let local: Vec<bool> = s
            .params
            .iter()
            .zip(&s.zeroed)
            .map(|(p, &zeroed)| p.grad().defined() && !zeroed)
            .collect();
        s.waiting.iter_mut().for_each(|w| *w = 0);
        s.launch_ready()?;
        Ok(local)
    }

    /// Buckets whose collective started while the backward ran, this step.
    pub fn overlapped(&self) -> usize {
        lock(&self.state).overlapped
    }

    /// Waits for every bucket: the gradients (or the parts of a reduce-scatter) are then the sums.
    pub fn wait(&self) -> Result<()> {
        let mut s = lock(&self.state);
        s.in_flight.drain(..).try_for_each(Work::wait)?;
        s.flats.iter_mut().for_each(|f| *f = None);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind};

    use super::*;
    use crate::dist::process_group::on_ranks;
    use crate::optim::release_grads;

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(&t.view([-1])).unwrap()
    }

    /// Two ranks, steps of two micro-batches: every `.grad` ends as the sum over ranks and
    /// micro-batches and lies in its bucket's buffer, next to its bucket neighbour, from the first
    /// micro-batch on. A parameter only rank 0 reaches is zeros on rank 1 (and not counted as
    /// reached), one whose `.grad` existed before the step's first backward is copied in, and steps
    /// that stopped early (after the last backward, as a non-finite loss does, or after the first
    /// micro-batch) leave nothing behind in the next one's sums.
    #[test]
    fn gradients_are_summed_in_their_buckets() {
        let got = on_ranks(2, |pg| {
            let rank = pg.rank as f64;
            let opts = (Kind::Float, Device::Cpu);
            let w = Tensor::ones([3, 4], opts).set_requires_grad(true);
            let b = Tensor::zeros([4], opts).set_requires_grad(true);
            let expert = Tensor::ones([2], opts).set_requires_grad(true);
            let early = Tensor::ones([5], opts).set_requires_grad(true);
            let params = [w, b, expert, early];
            // 64 bytes: buckets [b, w] and [expert, early].
            let buckets = plan_buckets(&params, &[1, 0, 2, 3], 64);
            let reduce =
                OverlappedReduce::new(Arc::new(pg), &params, buckets, Reduction::AllReduce)
                    .unwrap();
            assert_eq!(reduce.buckets(), 2);
            let [w, b, expert, early] = &params;
            let backward = |micro: usize| {
                let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0]) * (rank + 1.0 + micro as f64);
                let mut loss = (x.matmul(w) + b).sum(Kind::Float) + early.sum(Kind::Float);
                if rank == 0.0 {
                    loss += expert.square().sum(Kind::Float);
                }
                loss.backward();
                let (gw, gb) = (w.grad().data_ptr(), b.grad().data_ptr());
                assert_eq!(gw as usize, gb as usize + 16, "accumulated in the bucket");
            };
            let mut checked = Vec::new();
            for step in 0..4 {
                if step == 0 {
                    zero_missing_grads(&[early]).unwrap();
                }
                backward(0);
                if step == 2 {
                    release_grads(&params); // stopped after the first micro-batch
                    continue;
                }
                reduce.arm().unwrap();
                backward(1);
                let local = reduce.finish_backward().unwrap();
                if step == 1 {
                    release_grads(&params); // stopped before the optimizer: no `wait`
                    continue;
                }
                reduce.wait().unwrap();
                let grads = params.each_ref().map(|p| p.grad());
                let ptr = |i: usize| grads[i].data_ptr() as usize;
                assert_eq!(
                    ptr(3),
                    ptr(2) + 2 * 4,
                    "early's gradient follows the expert's"
                );
                assert!(
                    reduce.overlapped() >= 1,
                    "[b, w] started during the backward"
                );
                checked.push((local, grads.each_ref().map(values)));
                release_grads(&params);
            }
            checked
        });
        for (rank, steps) in got.into_iter().enumerate() {
            assert_eq!(steps.len(), 2);
            for (local, [w, b, expert, early]) in steps {
                assert_eq!(local, [true, true, rank == 0, true], "rank {rank}");
                // x summed over ranks and micro-batches: (1 + 2 + 2 + 3) [1, 2, 3].
                let rows: Vec<f32> = [8.0, 16.0, 24.0].iter().flat_map(|&v| [v; 4]).collect();
                assert_eq!(w, rows);
                assert_eq!(b, [4.0; 4]);
                assert_eq!(
                    expert, [4.0; 2],
                    "2 per micro-batch on rank 0, zeros on rank 1"
                );
                assert_eq!(early, [4.0; 5]);
            }
        }
    }
}

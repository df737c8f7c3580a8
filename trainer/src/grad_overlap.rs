//! Data parallelism's gradient all-reduce overlapped with the backward, as PyTorch DDP's Reducer
//! does: the parameters are cut into buckets in the order the backward is expected to finish
//! them (the reverse of the order the model created them in: MTP blocks, output head, last layer
//! … first layer, embedding), a hook on each parameter's gradient
//! accumulator (`dist.cpp`) reports when its gradient is complete, and a bucket's all-reduce starts
//! as soon as all its parameters are — while the backward computes the earlier layers.
//!
//! Only the last micro-batch's backward is watched (before it the gradients are not final), and
//! buckets start strictly in order, so every rank launches the same collectives in the same order
//! even when a parameter got no gradient on one rank (an expert no token reached): its bucket
//! waits for the end of the backward, where the missing gradients are filled with zeros and the
//! remaining buckets start.

use std::ffi::{c_char, c_void};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{anyhow, Context, Result};
use tch::Tensor;
use torch_sys::C_tensor;

use crate::cpp::{check, raw};
use crate::dist::{ProcessGroup, ReduceOp, Work};

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

/// Where the buckets of one step stand.
struct State {
    group: Arc<ProcessGroup>,
    params: Vec<Tensor>,
    /// Parameter indices of each bucket, in launch order.
    buckets: Vec<Vec<usize>>,
    bucket_of: Vec<usize>,
    /// Watching the backward (the last micro-batch's).
    armed: bool,
    ready: Vec<bool>,
    /// Parameters of each bucket still without their final gradient.
    waiting: Vec<usize>,
    /// The next bucket to launch.
    next: usize,
    /// Buckets launched while the backward ran, this step.
    overlapped: usize,
    in_flight: Vec<(usize, Tensor, Work)>,
    /// A launch that failed inside the hook, reported by `finish`.
    failed: Option<anyhow::Error>,
}

impl State {
    fn launch_ready(&mut self) -> Result<()> {
        while self.next < self.buckets.len() && self.waiting[self.next] == 0 {
            let b = self.next;
            let grads: Vec<Tensor> = self.buckets[b]
                .iter()
                .map(|&i| self.params[i].grad())
                .collect();
            let flat = tch::no_grad(|| match grads.as_slice() {
                [g] if g.is_contiguous() => g.view([-1]),
                _ => Tensor::cat(&grads.iter().map(|g| g.view([-1])).collect::<Vec<_>>(), 0),
            });
            let work = self.group.all_reduce(&flat, ReduceOp::Sum)?;
            self.in_flight.push((b, flat, work));
            self.overlapped += self.armed as usize;
            self.next += 1;
        }
        Ok(())
    }

    fn on_ready(&mut self, i: usize) {
        if !self.armed || self.ready[i] || self.failed.is_some() {
            return;
        }
        self.ready[i] = true;
        self.waiting[self.bucket_of[i]] -= 1;
        if let Err(e) = self.launch_ready() {
            self.failed = Some(e);
        }
    }
}

/// Called by the accumulator hooks from the autograd engine's thread.
extern "C" fn on_grad_ready(ctx: *mut c_void, index: i64) {
    // SAFETY: `ctx` is the `Mutex<State>` boxed in `OverlappedReduce`, which removes the hooks
    // before freeing it.
    let state = unsafe { &*(ctx as *const Mutex<State>) };
    // Never unwind into the engine: a panic becomes an error reported at the step.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lock(state).on_ready(index as usize)
    }));
    if outcome.is_err() {
        lock(state).failed = Some(anyhow!("panic in the gradient hook of parameter {index}"));
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The overlapped all-reduce of a list of parameters over a group.
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
    /// Plans buckets of at most `cap` bytes over `params`, taken in `order` (indices of `params`,
    /// the expected order of the backward; the same on every rank), and hooks their gradient
    /// accumulators.
    pub fn new(
        group: Arc<ProcessGroup>,
        params: &[Tensor],
        order: &[usize],
        cap: usize,
    ) -> Result<Self> {
        let mut buckets: Vec<Vec<usize>> = Vec::new();
        let mut bytes = 0;
        for &i in order {
            let size = params[i].numel() * params[i].kind().elt_size_in_bytes();
            match buckets.last_mut() {
                Some(bucket) if bytes + size <= cap => bucket.push(i),
                _ => {
                    buckets.push(vec![i]);
                    bytes = 0;
                }
            }
            bytes += size;
        }
        let mut bucket_of = vec![0; params.len()];
        for (b, bucket) in buckets.iter().enumerate() {
            for &i in bucket {
                bucket_of[i] = b;
            }
        }
        let state = Box::new(Mutex::new(State {
            group,
            params: params.iter().map(Tensor::shallow_clone).collect(),
            waiting: buckets.iter().map(Vec::len).collect(),
            buckets,
            bucket_of,
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
        // A step that stopped early (a non-finite loss) may have left buckets in flight.
        for (_, _, work) in s.in_flight.drain(..) {
            work.wait()?;
        }
        s.ready.iter_mut().for_each(|r| *r = false);
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
            return Err(e).context("gradient all-reduce during the backward");
        }
        let local: Vec<bool> = s.params.iter().map(|p| p.grad().defined()).collect();
        zero_missing_grads(&s.params.iter().collect::<Vec<_>>())?;
        s.waiting.iter_mut().for_each(|w| *w = 0);
        s.launch_ready()?;
        Ok(local)
    }

    /// Buckets whose all-reduce started while the backward ran, this step.
    pub fn overlapped(&self) -> usize {
        lock(&self.state).overlapped
    }

    /// Waits for every bucket and writes the sums back into the gradients.
    pub fn wait(&self) -> Result<()> {
        let mut s = lock(&self.state);
        let in_flight: Vec<_> = s.in_flight.drain(..).collect();
        for (b, flat, work) in in_flight {
            work.wait()?;
            let bucket = &s.buckets[b];
            if let [i] = bucket.as_slice() {
                if s.params[*i].grad().is_contiguous() {
                    continue; // reduced in place
                }
            }
            tch::no_grad(|| {
                let mut offset = 0;
                for &i in bucket {
                    let g = s.params[i].grad();
                    let n = g.numel() as i64;
                    g.shallow_clone()
                        .copy_(&flat.narrow(0, offset, n).view(g.size().as_slice()));
                    offset += n;
                }
            });
        }
        Ok(())
    }
}

//! A torch.distributed process group (c10d, through `src/dist.cpp`): the TCPStore rendezvous, the
//! Gloo (CPU) or NCCL (CUDA) backend, sub-groups of its ranks, and the collectives data and
//! expert parallelism need. Every collective
//! returns a [`Work`] that is waited on with the group's timeout, so a peer that died or hangs ends
//! the job with an error instead of a silent hang.

use std::ffi::{c_char, c_int, c_void, CString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use tch::Tensor;
use torch_sys::C_tensor;

use crate::cpp::{check, raw};
use crate::dist::placement::Placement;

extern "C" {
    fn whale_dist_store_new(
        host: *const c_char,
        port: c_int,
        is_server: c_int,
        world_size: c_int,
        prefix: *const c_char,
        timeout_ms: i64,
        out: *mut *mut c_void,
        err: *mut c_char,
        err_len: i64,
    ) -> c_int;
    fn whale_dist_store_free(store: *mut c_void);
    fn whale_dist_prefix_store_new(
        store: *mut c_void,
        prefix: *const c_char,
        out: *mut *mut c_void,
        err: *mut c_char,
        err_len: i64,
    ) -> c_int;
    fn whale_dist_gloo_new(
        store: *mut c_void,
        rank: c_int,
        world_size: c_int,
        bind_host: *const c_char,
        timeout_ms: i64,
        out: *mut *mut c_void,
        err: *mut c_char,
        err_len: i64,
    ) -> c_int;
    fn whale_dist_nccl_new(
        store: *mut c_void,
        rank: c_int,
        world_size: c_int,
        bind_host: *const c_char,
        timeout_ms: i64,
        out: *mut *mut c_void,
        err: *mut c_char,
        err_len: i64,
    ) -> c_int;
    fn whale_dist_pg_free(pg: *mut c_void);
    fn whale_dist_broadcast(
        pg: *mut c_void,
        t: *mut C_tensor,
        root: c_int,
        work: *mut *mut c_void,
        err: *mut c_char,
        err_len: i64,
    ) -> c_int;
    fn whale_dist_all_reduce(
        pg: *mut c_void,
        t: *mut C_tensor,
        avg: c_int,
        work: *mut *mut c_void,
        err: *mut c_char,
        err_len: i64,
    ) -> c_int;
    fn whale_dist_reduce_scatter(
        pg: *mut c_void,
        output: *mut C_tensor,
        input: *mut C_tensor,
        work: *mut *mut c_void,
        err: *mut c_char,
        err_len: i64,
    ) -> c_int;
    fn whale_dist_all_gather(
        pg: *mut c_void,
        output: *mut C_tensor,
        input: *mut C_tensor,
        work: *mut *mut c_void,
        err: *mut c_char,
        err_len: i64,
    ) -> c_int;
    #[allow(clippy::too_many_arguments)]
    fn whale_dist_all_to_all(
        pg: *mut c_void,
        output: *mut C_tensor,
        input: *mut C_tensor,
        out_splits: *const i64,
        in_splits: *const i64,
        n: i64,
        work: *mut *mut c_void,
        err: *mut c_char,
        err_len: i64,
    ) -> c_int;
    fn whale_dist_barrier(
        pg: *mut c_void,
        work: *mut *mut c_void,
        err: *mut c_char,
        err_len: i64,
    ) -> c_int;
    fn whale_dist_wait(work: *mut c_void, timeout_ms: i64, err: *mut c_char, err_len: i64)
        -> c_int;
    fn whale_dist_work_free(work: *mut c_void);
}

/// Which c10d backend moves the tensors: Gloo for CPU tensors, NCCL for CUDA tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Gloo,
    Nccl,
}

/// How an all-reduce combines the ranks' tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Avg,
}

/// Owns a c10d handle (a store, group or work) and frees it with `free`.
struct Handle {
    ptr: *mut c_void,
    free: unsafe extern "C" fn(*mut c_void),
}

// SAFETY: c10d stores, backends and works are thread-safe objects (torch.distributed launches
// collectives from any thread, and the autograd engine's threads run backward collectives); the
// handle only holds a reference that it frees once.
unsafe impl Send for Handle {}
unsafe impl Sync for Handle {}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from the matching `*_new` / collective and is freed once, here.
        unsafe { (self.free)(self.ptr) }
    }
}

/// One process's membership of a group of `world_size` ranks.
pub struct ProcessGroup {
    // Field order is drop order: the group before the store it talks through.
    pg: Handle,
    store: Handle,
    backend: Backend,
    pub rank: usize,
    pub world_size: usize,
    timeout: Duration,
    /// Bytes this rank has sent so far (see `sent_bytes`).
    sent: AtomicU64,
    /// Loopback jobs bind sub-groups' sockets to loopback too.
    bind: CString,
}

/// A launched collective; [`Work::wait`] finishes it.
#[must_use = "a collective is only done once waited on"]
pub struct Work {
    handle: Handle,
    what: &'static str,
    rank: usize,
    timeout: Duration,
    /// Gloo has no AVG: the SUM is divided by the world size once it is done.
    divide: Option<(Tensor, f64)>,
}

impl Work {
    /// Blocks until the collective is done on this rank; an error names the collective and says
    /// what to look at when it is a dead or hung peer.
    pub fn wait(self) -> Result<()> {
        check(self.what, |err, len| {
            // SAFETY: the handle is a live c10d::Work.
            unsafe { whale_dist_wait(self.handle.ptr, millis(self.timeout), err, len) }
        })
        .with_context(|| {
            format!(
                "rank {}: a peer rank died or stopped answering within {:?} (see the other ranks' \
                 errors; --dist-timeout sets the wait)",
                self.rank, self.timeout
            )
        })?;
        if let Some((t, n)) = &self.divide {
            let _ = tch::no_grad(|| t.shallow_clone().g_div_scalar_(*n));
        }
        Ok(())
    }
}

fn millis(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// Calls a `*_new` entry point and owns what it returned.
fn create(
    what: &str,
    free: unsafe extern "C" fn(*mut c_void),
    call: impl FnOnce(*mut *mut c_void, *mut c_char, i64) -> c_int,
) -> Result<Handle> {
    let mut ptr = std::ptr::null_mut();
    check(what, |err, len| call(&mut ptr, err, len))?;
    Ok(Handle { ptr, free })
}

impl ProcessGroup {
    /// Joins the group `place` describes: connects to (rank 0 or torchrun's agent: hosts) the
    /// TCPStore at `master_addr:master_port`, then builds `backend` over it. Every step, and every
    /// later collective, gives up after `timeout`.
    pub fn join(place: &Placement, backend: Backend, timeout: Duration) -> Result<Self> {
        let host = CString::new(place.master_addr.as_str())?;
        let prefix = CString::new(place.store_prefix().unwrap_or_default())?;
        // A job on loopback stays on loopback; otherwise the host name's address, as torch does.
        let bind = CString::new(if place.on_loopback() { "127.0.0.1" } else { "" })?;
        let ranks = (place.rank, place.world_size);
        let store = create(
            &format!(
                "rank {}: TCPStore at {}:{}",
                place.rank, place.master_addr, place.master_port
            ),
            whale_dist_store_free,
            |out, err, len| unsafe {
                // SAFETY: the strings outlive the call; the store copies them.
                whale_dist_store_new(
                    host.as_ptr(),
                    place.master_port as c_int,
                    place.hosts_store() as c_int,
                    place.world_size as c_int,
                    prefix.as_ptr(),
                    millis(timeout),
                    out,
                    err,
                    len,
                )
            },
        )?;
        Self::over(store, backend, ranks, bind, timeout)
    }

    /// The `backend` group of `world_size` ranks meeting through `store`, as `rank`.
    fn over(
        store: Handle,
        backend: Backend,
        (rank, world_size): (usize, usize),
        bind: CString,
        timeout: Duration,
    ) -> Result<Self> {
        let new = match backend {
            Backend::Gloo => whale_dist_gloo_new,
            Backend::Nccl => whale_dist_nccl_new,
        };
        let pg = create(
            &format!("rank {rank}: {backend:?} process group"),
            whale_dist_pg_free,
            |out, err, len| unsafe {
                // SAFETY: `store` is live; the group keeps its own reference to it.
                new(
                    store.ptr,
                    rank as c_int,
                    world_size as c_int,
                    bind.as_ptr(),
                    millis(timeout),
                    out,
                    err,
                    len,
                )
            },
        )?;
        Ok(Self {
            pg,
            store,
            backend,
            rank,
            world_size,
            timeout,
            sent: AtomicU64::new(0),
            bind,
        })
    }

    /// The group of the ranks `members` (ranks of this group, in the order that numbers them in
    /// the new one), which must include this rank; `name` keeps its rendezvous apart from other
    /// sub-groups'. Only the members call this, each with the same `name` and `members`.
    pub fn subgroup(&self, name: &str, members: &[usize]) -> Result<Self> {
        let rank = members
            .iter()
            .position(|&r| r == self.rank)
            .with_context(|| {
                format!("rank {} is not in sub-group {name} {members:?}", self.rank)
            })?;
        let prefix = CString::new(format!("{name}/"))?;
        let store = create(
            &format!("rank {}: store of sub-group {name}", self.rank),
            whale_dist_store_free,
            |out, err, len| unsafe {
                // SAFETY: the store is live; the prefix store keeps its own reference to it.
                whale_dist_prefix_store_new(self.store.ptr, prefix.as_ptr(), out, err, len)
            },
        )?;
        Self::over(
            store,
            self.backend,
            (rank, members.len()),
            self.bind.clone(),
            self.timeout,
        )
    }

    /// Which c10d backend the group runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Bytes this rank has sent so far, counted as the bandwidth-optimal (ring) algorithms send
    /// them, whatever the backend chose: for a buffer of B bytes over W ranks, an all-reduce sends
    /// 2(W−1)/W·B, a reduce-scatter or an all-gather (W−1)/W·B, a broadcast B.
    pub fn sent_bytes(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Launches a collective over a buffer of `full` (the largest tensor of the collective), of
    /// which this rank sends `share` under the ring algorithms.
    fn launch(
        &self,
        what: &'static str,
        (full, share): (Option<&Tensor>, f64),
        call: impl FnOnce(*mut c_void, *mut *mut c_void, *mut c_char, i64) -> c_int,
    ) -> Result<Work> {
        if let Some(t) = full {
            let bytes = (t.numel() * t.kind().elt_size_in_bytes()) as f64 * share;
            self.sent.fetch_add(bytes.round() as u64, Ordering::Relaxed);
        }
        let handle = create(what, whale_dist_work_free, |out, err, len| {
            call(self.pg.ptr, out, err, len)
        })?;
        Ok(Work {
            handle,
            what,
            rank: self.rank,
            timeout: self.timeout,
            divide: None,
        })
    }

    /// (W−1)/W: the share of a buffer each rank sends in a ring reduce-scatter or all-gather.
    fn ring_share(&self) -> f64 {
        (self.world_size - 1) as f64 / self.world_size as f64
    }

    /// Overwrites `t` on every rank with rank `root`'s `t`.
    pub fn broadcast(&self, t: &Tensor, root: usize) -> Result<Work> {
        self.launch("broadcast", (Some(t), 1.0), |pg, work, err, len| unsafe {
            // SAFETY: `t` lives until the work is waited on (the caller holds it).
            whale_dist_broadcast(pg, raw(t), root as c_int, work, err, len)
        })
    }

    /// Combines `t` over all ranks, in place.
    pub fn all_reduce(&self, t: &Tensor, op: ReduceOp) -> Result<Work> {
        let native_avg = op == ReduceOp::Avg && self.backend == Backend::Nccl;
        let ring = 2.0 * self.ring_share();
        let mut work = self.launch("all-reduce", (Some(t), ring), |pg, work, err, len| unsafe {
            // SAFETY: as in `broadcast`.
            whale_dist_all_reduce(pg, raw(t), native_avg as c_int, work, err, len)
        })?;
        if op == ReduceOp::Avg && !native_avg {
            work.divide = Some((t.shallow_clone(), self.world_size as f64));
        }
        Ok(work)
    }

    /// Sums `input` (`world_size` equal chunks along dim 0, flattened) over ranks; this rank's
    /// chunk of the sum lands in `output`.
    pub fn reduce_scatter(&self, output: &Tensor, input: &Tensor) -> Result<Work> {
        self.launch(
            "reduce-scatter",
            (Some(input), self.ring_share()),
            |pg, work, err, len| unsafe {
                // SAFETY: as in `broadcast`.
                whale_dist_reduce_scatter(pg, raw(output), raw(input), work, err, len)
            },
        )
    }

    /// Concatenates every rank's `input`, in rank order, into `output`.
    pub fn all_gather(&self, output: &Tensor, input: &Tensor) -> Result<Work> {
        self.launch(
            "all-gather",
            (Some(output), self.ring_share()),
            |pg, work, err, len| unsafe {
                // SAFETY: as in `broadcast`.
                whale_dist_all_gather(pg, raw(output), raw(input), work, err, len)
            },
        )
    }

    /// Sends `in_splits[r]` rows of `input` (in rank order along dim 0) to rank `r` and receives
    /// `out_splits[r]` rows from rank `r` into `output`, in rank order.
    pub fn all_to_all(
        &self,
        output: &Tensor,
        input: &Tensor,
        out_splits: &[i64],
        in_splits: &[i64],
    ) -> Result<Work> {
        anyhow::ensure!(
            out_splits.len() == self.world_size && in_splits.len() == self.world_size,
            "all-to-all splits must name every rank"
        );
        let rows = input.size().first().copied().unwrap_or(0).max(1) as f64;
        // Rows kept on this rank are not sent.
        let share = (rows - in_splits[self.rank] as f64) / rows;
        self.launch(
            "all-to-all",
            (Some(input), share),
            |pg, work, err, len| unsafe {
                // SAFETY: as in `broadcast`; the split arrays outlive the call (c10d copies them).
                whale_dist_all_to_all(
                    pg,
                    raw(output),
                    raw(input),
                    out_splits.as_ptr(),
                    in_splits.as_ptr(),
                    self.world_size as i64,
                    work,
                    err,
                    len,
                )
            },
        )
    }

    /// Returns once every rank has reached it.
    pub fn barrier(&self) -> Result<()> {
        self.launch("barrier", (None, 0.0), |pg, work, err, len| unsafe {
            // SAFETY: the group is live.
            whale_dist_barrier(pg, work, err, len)
        })?
        .wait()
    }
}

/// Runs `body(group)` on `world` Gloo ranks, one thread each, over loopback (for tests).
#[cfg(test)]
pub(crate) fn on_ranks<T: Send>(world: usize, body: impl Fn(ProcessGroup) -> T + Sync) -> Vec<T> {
    let port = crate::dist::placement::free_port().unwrap();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..world)
            .map(|rank| {
                let body = &body;
                s.spawn(move || {
                    let place = Placement::local(rank, world, port);
                    let pg =
                        ProcessGroup::join(&place, Backend::Gloo, Duration::from_secs(20)).unwrap();
                    body(pg)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind};

    use super::*;
    use crate::dist::placement::free_port;

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(&t.view([-1])).unwrap()
    }

    #[test]
    fn collectives_over_gloo() {
        let got = on_ranks(2, |pg| {
            let r = pg.rank as f32;
            let opts = (Kind::Float, Device::Cpu);
            let b = Tensor::full([3], f64::from(r) + 5.0, opts);
            pg.broadcast(&b, 1).unwrap().wait().unwrap();
            let sum = Tensor::from_slice(&[r, 10.0 * r]);
            pg.all_reduce(&sum, ReduceOp::Sum).unwrap().wait().unwrap();
            let avg = Tensor::from_slice(&[r, 3.0]);
            pg.all_reduce(&avg, ReduceOp::Avg).unwrap().wait().unwrap();
            // Rank r contributes [r, r, r+10, r+10]: the sum is [1, 1, 21, 21].
            let input = Tensor::from_slice(&[r, r, r + 10.0, r + 10.0]);
            let shard = Tensor::zeros([2], opts);
            pg.reduce_scatter(&shard, &input).unwrap().wait().unwrap();
            let gathered = Tensor::zeros([4], opts);
            pg.all_gather(&gathered, &shard).unwrap().wait().unwrap();
            pg.barrier().unwrap();
            [&b, &sum, &avg, &shard, &gathered].map(values)
        });
        for (rank, [b, sum, avg, shard, gathered]) in got.into_iter().enumerate() {
            assert_eq!(b, [6.0; 3], "broadcast from rank 1");
            assert_eq!(sum, [1.0, 10.0]);
            assert_eq!(avg, [0.5, 3.0]);
            assert_eq!(shard, [[1.0, 1.0], [21.0, 21.0]][rank]);
            assert_eq!(gathered, [1.0, 1.0, 21.0, 21.0]);
        }
    }

    #[test]
    fn all_to_all_with_uneven_splits_and_sub_groups() {
        let got = on_ranks(3, |pg| {
            let r = pg.rank as i64;
            // Rank r sends r+1 rows to each rank; a row is [sender, receiver].
            let input = Tensor::from_slice(
                &(0..3)
                    .flat_map(|to| (0..=r).flat_map(move |_| [r as f32, to as f32]))
                    .collect::<Vec<_>>(),
            )
            .view([-1, 2]);
            let received = Tensor::zeros([6, 2], (Kind::Float, Device::Cpu));
            pg.all_to_all(&received, &input, &[1, 2, 3], &[r + 1; 3])
                .unwrap()
                .wait()
                .unwrap();
            // Ranks 2 and 0 form a sub-group in which rank 2 is number 0.
            let sub = (r != 1).then(|| {
                let sub = pg.subgroup("pair", &[2, 0]).unwrap();
                let t = Tensor::from_slice(&[r as f32]);
                sub.broadcast(&t, 0).unwrap().wait().unwrap();
                (sub.rank, values(&t))
            });
            (values(&received), sub)
        });
        for (rank, (received, sub)) in got.into_iter().enumerate() {
            let expected: Vec<f32> = (0..3)
                .flat_map(|from| (0..=from).flat_map(move |_| [from as f32, rank as f32]))
                .collect();
            assert_eq!(received, expected, "rank {rank}");
            match rank {
                1 => assert!(sub.is_none()),
                _ => assert_eq!(sub, Some((usize::from(rank == 0), vec![2.0]))),
            }
        }
    }

    #[test]
    fn a_missing_peer_is_a_timeout_error_not_a_hang() {
        let port = free_port().unwrap();
        let place = Placement::local(0, 2, port);
        let started = std::time::Instant::now();
        let err = ProcessGroup::join(&place, Backend::Gloo, Duration::from_secs(2))
            .err()
            .expect("rank 1 never comes");
        assert!(started.elapsed() < Duration::from_secs(15), "gave up late");
        assert!(format!("{err:#}").contains("rank 0"), "{err:#}");
    }
}

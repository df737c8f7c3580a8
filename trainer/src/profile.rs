//! `whale train --profile-steps A-B`: the PyTorch profiler (libkineto, as `torch.profiler` and
//! torchtitan's `--profiling.enable_profiling` use it) over chosen optimizer steps. Each rank
//! writes a Chrome trace (open it in Perfetto or chrome://tracing) and a summary of where the
//! steps' time went: how much of it the GPU was busy, by kernel and by kind of kernel (matmul,
//! attention, communication, copies), the CPU operators by self time, the CUDA runtime calls, and
//! how many times a step waited for a value from the device (`aten::_local_scalar_dense`, the op
//! behind `.item()`; on a GPU each one stalls the CPU until the device catches up).

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tch::Device;

use crate::cpp::check;

extern "C" {
    fn whale_profiler_start(cuda: c_int, err: *mut c_char, err_len: i64) -> c_int;
    fn whale_profiler_stop(
        trace_path: *const c_char,
        result: *mut *mut c_void,
        err: *mut c_char,
        err_len: i64,
    ) -> c_int;
    fn whale_profile_len(result: *mut c_void) -> i64;
    fn whale_profile_event(
        result: *mut c_void,
        i: i64,
        name: *mut c_char,
        name_len: i64,
        kind: *mut c_int,
        start_ns: *mut u64,
        end_ns: *mut u64,
        thread: *mut u64,
    );
    fn whale_profile_free(result: *mut c_void);
    fn whale_step_mark_begin(name: *const c_char) -> *mut c_void;
    fn whale_step_mark_end(mark: *mut c_void);
}

/// The optimizer steps to profile, `FIRST-LAST` (inclusive) or one step `N`, numbered as in
/// `metrics.jsonl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ProfileSteps {
    pub first: u64,
    pub last: u64,
}

impl FromStr for ProfileSteps {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let number = |t: &str| {
            t.trim().parse::<u64>().with_context(|| {
                format!("--profile-steps {s:?}: expected FIRST-LAST or one step number, e.g. 10-12")
            })
        };
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => (number(s)?, number(s)?),
        };
        if first == 0 || last < first {
            bail!("--profile-steps {s:?}: steps count from 1 and FIRST may not exceed LAST");
        }
        Ok(Self { first, last })
    }
}

impl ProfileSteps {
    /// How many steps the range holds.
    pub fn count(&self) -> u64 {
        self.last - self.first + 1
    }

    /// The files' stem for `rank`: `rank0-steps-10-12`.
    pub fn stem(&self, rank: usize) -> String {
        format!("rank{rank}-steps-{}-{}", self.first, self.last)
    }
}

/// What a recorded event is (the C++ side classifies libkineto's activity types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// An operator (`aten::mm`, `c10d::allreduce_`) or a named range on a CPU thread.
    Operator,
    /// A call into the CUDA runtime or driver (`cudaLaunchKernel`, `cudaStreamSynchronize`).
    Runtime,
    /// A kernel, copy or fill that ran on the GPU.
    Gpu,
    Other,
}

/// One recorded event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub name: String,
    pub kind: EventKind,
    pub start_ns: u64,
    pub end_ns: u64,
    /// The thread that ran it (operators and runtime calls are numbered apart).
    pub thread: u64,
}

impl Event {
    fn ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }
}

/// The name torch.profiler gives step N's range, which Perfetto and TensorBoard show as steps.
const STEP_PREFIX: &str = "ProfilerStep#";

/// The op whose every call on a GPU is a wait for the device (`Tensor::item` and friends).
const HOST_READ: &str = "aten::_local_scalar_dense";

/// `Tensor::item`, through which code outside operators reads a device value.
const ITEM: &str = "aten::item";

/// The CUDA runtime calls that block the CPU until the device has done its queued work.
const SYNCS: [&str; 4] = [
    "cudaStreamSynchronize",
    "cudaDeviceSynchronize",
    "cudaEventSynchronize",
    "cudaMemcpy",
];

/// The profiler while it records. libtorch's profiler is one per process: start one at a time.
pub struct Recording {
    running: bool,
}

impl Recording {
    /// Starts recording operators, and kernels when `device` is a GPU.
    pub fn start(device: Device) -> Result<Self> {
        check("starting the PyTorch profiler", |err, len| unsafe {
            // SAFETY: plain call; the error buffer is the caller's.
            whale_profiler_start(device.is_cuda() as c_int, err, len)
        })?;
        Ok(Self { running: true })
    }

    /// Marks optimizer step `step` as a range until the mark is dropped.
    pub fn mark_step(&self, step: u64) -> StepMark {
        let name = CString::new(format!("{STEP_PREFIX}{step}")).expect("no NUL in a step name");
        // SAFETY: the C++ side copies the name before returning.
        StepMark(unsafe { whale_step_mark_begin(name.as_ptr()) })
    }

    /// Stops recording, writes the Chrome trace to `trace` (when given), and returns the events.
    pub fn stop(mut self, trace: Option<&Path>) -> Result<Profile> {
        let path = CString::new(trace.map_or(String::new(), |p| p.display().to_string()))
            .context("the trace path holds a NUL byte")?;
        self.disable(&path)
    }

    /// Turns the profiler off, saving the trace to `path` unless it is empty, and takes the events.
    fn disable(&mut self, path: &CStr) -> Result<Profile> {
        self.running = false;
        let mut result: *mut c_void = std::ptr::null_mut();
        check("stopping the PyTorch profiler", |err, len| unsafe {
            // SAFETY: `path` and the out-pointer outlive the call.
            whale_profiler_stop(path.as_ptr(), &mut result, err, len)
        })?;
        let profile = read_events(result);
        // SAFETY: `result` came from whale_profiler_stop and is freed once.
        unsafe { whale_profile_free(result) };
        Ok(profile)
    }
}

impl Drop for Recording {
    /// A run that ends early (an error in a profiled step) still turns the profiler off.
    fn drop(&mut self) {
        if self.running {
            // No trace; the events are dropped (and an error here has nowhere to go).
            let _ = self.disable(c"");
        }
    }
}

/// A step's range in the trace, open until dropped (on the thread that opened it).
pub struct StepMark(*mut c_void);

impl Drop for StepMark {
    fn drop(&mut self) {
        // SAFETY: the pointer came from whale_step_mark_begin and is ended once.
        unsafe { whale_step_mark_end(self.0) }
    }
}

fn read_events(result: *mut c_void) -> Profile {
    // SAFETY: `result` is a live ProfilerResult for the whole loop.
    let n = unsafe { whale_profile_len(result) };
    let mut name = vec![0 as c_char; 1024];
    let events = (0..n)
        .map(|i| {
            let (mut kind, mut start_ns, mut end_ns, mut thread) = (0, 0, 0, 0);
            // SAFETY: `i` < len; the buffers and out-pointers outlive the call, which
            // NUL-terminates the name within `name`.
            unsafe {
                whale_profile_event(
                    result,
                    i,
                    name.as_mut_ptr(),
                    name.len() as i64,
                    &mut kind,
                    &mut start_ns,
                    &mut end_ns,
                    &mut thread,
                );
            }
            Event {
                // SAFETY: NUL-terminated by the C++ side.
                name: unsafe { CStr::from_ptr(name.as_ptr()) }
                    .to_string_lossy()
                    .into_owned(),
                kind: match kind {
                    0 => EventKind::Operator,
                    1 => EventKind::Runtime,
                    2 => EventKind::Gpu,
                    _ => EventKind::Other,
                },
                start_ns,
                end_ns,
                thread,
            }
        })
        .collect();
    Profile { events }
}

/// The events of a recording.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    pub events: Vec<Event>,
}

/// The time spent in one name (an operator, a kernel, a kind of kernel).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Timed {
    pub name: String,
    pub calls: u64,
    /// Milliseconds per profiled step.
    pub ms_per_step: f64,
    /// Share of the steps' wall time.
    pub share: f64,
}

/// Where the profiled steps' time went.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// The steps found in the trace (their `ProfilerStep#N` ranges).
    pub steps: u64,
    /// Mean wall time of a step, in ms.
    pub step_ms: f64,
    /// Share of the steps' wall time in which a kernel, copy or fill ran on the GPU (None on CPU).
    pub gpu_busy: Option<f64>,
    /// Reads of a device value per step by whale's own code (`.item()`): on a GPU each one a
    /// wait for the device.
    pub host_reads_per_step: f64,
    /// Reads of a device value per step inside operators, by outermost operator (on the CPU,
    /// fused AdamW's kernel reads each parameter's step count; its CUDA kernel reads none).
    pub operator_reads: Vec<Counted>,
    /// CUDA calls per step that block the CPU until the GPU catches up (stream and device
    /// synchronizations, synchronous copies): every device read and device-to-host copy makes
    /// one. None on a CPU.
    pub syncs_per_step: Option<f64>,
    /// Kernels, copies and fills run on the GPU per step, and their mean duration in µs: eager
    /// libtorch spends several µs of CPU launching each, so when they average not much more
    /// than that, the GPU waits for the CPU (None on a CPU).
    pub gpu_ops_per_step: Option<f64>,
    pub gpu_op_mean_us: Option<f64>,
    /// GPU time by kind of kernel (matmul, attention, communication, copies, other).
    pub gpu_kinds: Vec<Timed>,
    /// The GPU kernels that took longest.
    pub gpu_kernels: Vec<Timed>,
    /// The CPU operators with the most self time (time not spent in operators they called).
    pub cpu_ops: Vec<Timed>,
    /// CUDA runtime and driver calls (kernel launches, synchronizations).
    pub runtime_calls: Vec<Timed>,
}

/// A count per step of something named.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Counted {
    pub name: String,
    pub per_step: f64,
}

/// How many rows each table keeps.
const TOP: usize = 15;

/// The kind of a GPU kernel, from the names cuBLAS, CUTLASS, FlashAttention, cuDNN and NCCL give
/// their kernels.
pub fn kernel_kind(name: &str) -> &'static str {
    let n = name.to_ascii_lowercase();
    let has = |fragments: &[&str]| fragments.iter().any(|f| n.contains(f));
    if has(&["nccl"]) {
        "communication (NCCL)"
    } else if has(&["flash", "fmha", "attention", "sdpa", "_attn"]) {
        "attention"
    } else if has(&[
        "gemm", "nvjet", "cutlass", "xmma", "cublas", "matmul", "_mm_",
    ]) {
        "matmul"
    } else if has(&["memcpy", "memset"]) {
        "copy / fill"
    } else {
        "other (elementwise, reductions, indexing)"
    }
}

impl Profile {
    /// The summary of the recorded steps.
    pub fn summary(&self) -> Summary {
        let marks: Vec<&Event> = self
            .events
            .iter()
            .filter(|e| e.kind == EventKind::Operator && e.name.starts_with(STEP_PREFIX))
            .collect();
        let steps = marks.len().max(1) as u64;
        let wall_ns: u64 = marks.iter().map(|m| m.ns()).sum();
        let windows: Vec<(u64, u64)> = marks.iter().map(|m| (m.start_ns, m.end_ns)).collect();
        let per_step = |ns: u64| ns as f64 / 1e6 / steps as f64;
        let share = |ns: u64| ns as f64 / wall_ns.max(1) as f64;
        let table = |totals: HashMap<String, (u64, u64)>, top: usize| -> Vec<Timed> {
            let mut rows: Vec<Timed> = totals
                .into_iter()
                .map(|(name, (calls, ns))| Timed {
                    name,
                    calls,
                    ms_per_step: per_step(ns),
                    share: share(ns),
                })
                .collect();
            rows.sort_by(|a, b| {
                b.ms_per_step
                    .total_cmp(&a.ms_per_step)
                    .then(a.name.cmp(&b.name))
            });
            rows.truncate(top);
            rows
        };
        let gpu: Vec<&Event> = self
            .events
            .iter()
            .filter(|e| e.kind == EventKind::Gpu)
            .collect();
        let mut kernels = HashMap::new();
        let mut kinds = HashMap::new();
        for e in &gpu {
            add(&mut kernels, &e.name, e.ns());
            add(&mut kinds, kernel_kind(&e.name), e.ns());
        }
        let mut runtime = HashMap::new();
        for e in self.events.iter().filter(|e| e.kind == EventKind::Runtime) {
            add(&mut runtime, &e.name, e.ns());
        }
        let ops: Vec<&Event> = self
            .events
            .iter()
            .filter(|e| e.kind == EventKind::Operator && !e.name.starts_with(STEP_PREFIX))
            .collect();
        let caller = callers(&ops);
        let (own_reads, inside) = host_reads(&ops, &caller);
        let mut operator_reads: Vec<Counted> = inside
            .into_iter()
            .map(|(name, n)| Counted {
                name,
                per_step: n as f64 / steps as f64,
            })
            .collect();
        operator_reads.sort_by(|a, b| b.per_step.total_cmp(&a.per_step).then(a.name.cmp(&b.name)));
        let syncs = self
            .events
            .iter()
            .filter(|e| e.kind == EventKind::Runtime && SYNCS.contains(&e.name.as_str()))
            .count();
        Summary {
            steps,
            step_ms: per_step(wall_ns),
            gpu_busy: (!gpu.is_empty()).then(|| {
                let spans: Vec<(u64, u64)> = gpu.iter().map(|e| (e.start_ns, e.end_ns)).collect();
                share(covered_within(&spans, &windows))
            }),
            host_reads_per_step: own_reads as f64 / steps as f64,
            operator_reads,
            syncs_per_step: (!gpu.is_empty()).then_some(syncs as f64 / steps as f64),
            gpu_ops_per_step: (!gpu.is_empty()).then_some(gpu.len() as f64 / steps as f64),
            gpu_op_mean_us: (!gpu.is_empty())
                .then(|| gpu.iter().map(|e| e.ns()).sum::<u64>() as f64 / gpu.len() as f64 / 1e3),
            gpu_kinds: table(kinds, TOP),
            gpu_kernels: table(kernels, TOP),
            cpu_ops: table(self_times(&ops, &caller), TOP),
            runtime_calls: table(runtime, TOP),
        }
    }
}

fn add(totals: &mut HashMap<String, (u64, u64)>, name: &str, ns: u64) {
    let t = totals.entry(name.to_string()).or_default();
    t.0 += 1;
    t.1 += ns;
}

/// The index in `ops` of each op's caller: the op on the same thread that encloses it most
/// closely (None for a top-level op).
fn callers(ops: &[&Event]) -> Vec<Option<usize>> {
    let mut by_thread: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, e) in ops.iter().enumerate() {
        by_thread.entry(e.thread).or_default().push(i);
    }
    let mut caller = vec![None; ops.len()];
    for order in by_thread.values_mut() {
        // Callers before their callees: by start, the longer first on a tie.
        order.sort_by_key(|&i| (ops[i].start_ns, std::cmp::Reverse(ops[i].end_ns)));
        let mut open: Vec<usize> = Vec::new();
        for &i in order.iter() {
            while open
                .last()
                .is_some_and(|&top| ops[i].start_ns >= ops[top].end_ns)
            {
                open.pop();
            }
            caller[i] = open.last().copied();
            open.push(i);
        }
    }
    caller
}

/// Calls and self time (ns) by name of `ops`: each op's time less that of the ops it encloses
/// directly on its thread (its callees), so nested calls are not counted twice.
fn self_times(ops: &[&Event], caller: &[Option<usize>]) -> HashMap<String, (u64, u64)> {
    let mut callees_ns = vec![0u64; ops.len()];
    for (e, c) in ops.iter().zip(caller) {
        if let Some(c) = *c {
            callees_ns[c] += e.ns().min(ops[c].end_ns.saturating_sub(e.start_ns));
        }
    }
    let mut totals = HashMap::new();
    for (e, callees) in ops.iter().zip(callees_ns) {
        add(&mut totals, &e.name, e.ns().saturating_sub(callees));
    }
    totals
}

/// The device reads (`HOST_READ`) among `ops`: how many whale's own code made (through
/// `.item()` or directly), and how many each outermost operator made inside itself (as the CPU
/// kernel of fused AdamW reads its step counts).
fn host_reads(ops: &[&Event], caller: &[Option<usize>]) -> (usize, HashMap<String, usize>) {
    let mut own = 0;
    let mut inside = HashMap::new();
    for (i, e) in ops.iter().enumerate() {
        if e.name != HOST_READ {
            continue;
        }
        let mut outermost = i;
        while let Some(c) = caller[outermost] {
            outermost = c;
        }
        match ops[outermost].name.as_str() {
            HOST_READ | ITEM => own += 1,
            name => *inside.entry(name.to_string()).or_default() += 1,
        }
    }
    (own, inside)
}

/// Nanoseconds of `windows` covered by at least one of `spans` (both lists of [start, end)).
fn covered_within(spans: &[(u64, u64)], windows: &[(u64, u64)]) -> u64 {
    let mut spans = spans.to_vec();
    spans.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (start, end) in spans {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    windows
        .iter()
        .map(|&(ws, we)| {
            merged
                .iter()
                .map(|&(s, e)| e.min(we).saturating_sub(s.max(ws)))
                .sum::<u64>()
        })
        .sum()
}

impl Summary {
    /// The summary as Markdown, for `RUN/profile/*.md`.
    pub fn to_markdown(&self, title: &str) -> String {
        let mut md = format!("# {title}\n\n");
        let _ = writeln!(
            md,
            "- {} steps, {:.1} ms per step (profiled: the profiler itself slows them a little)",
            self.steps, self.step_ms
        );
        match self.gpu_busy {
            Some(busy) => {
                let _ = writeln!(
                    md,
                    "- GPU busy {:.1}% of the steps' time (the rest: waiting for the CPU to launch work, or for a sync)",
                    busy * 100.0
                );
            }
            None => md.push_str("- no GPU activity recorded (a CPU run)\n"),
        }
        let _ = writeln!(
            md,
            "- {:.1} reads of a device value per step by whale's code (`.item()`: on a GPU each waits for the device)",
            self.host_reads_per_step
        );
        for r in &self.operator_reads {
            let _ = writeln!(
                md,
                "- {:.1} reads of a device value per step inside `{}`",
                r.per_step, r.name
            );
        }
        if let (Some(ops), Some(us)) = (self.gpu_ops_per_step, self.gpu_op_mean_us) {
            let _ = writeln!(
                md,
                "- {ops:.0} kernels, copies and fills per step on the GPU, {us:.1} µs each on average (each costs the CPU several µs to launch: when they are this short, the GPU waits for the CPU)"
            );
        }
        if let Some(syncs) = self.syncs_per_step {
            let _ = writeln!(
                md,
                "- {syncs:.1} CUDA synchronizations per step (the CPU waits for the GPU: device reads, copies to the host)"
            );
        }
        let section = |md: &mut String, title: &str, rows: &[Timed]| {
            if rows.is_empty() {
                return;
            }
            let _ = write!(
                md,
                "\n## {title}\n\n| name | calls/step | ms/step | share of step |\n|---|---|---|---|\n"
            );
            for r in rows {
                let _ = writeln!(
                    md,
                    "| `{}` | {:.1} | {:.3} | {:.1}% |",
                    r.name.replace('|', "\\|"),
                    r.calls as f64 / self.steps as f64,
                    r.ms_per_step,
                    r.share * 100.0
                );
            }
        };
        section(&mut md, "GPU time by kind of kernel", &self.gpu_kinds);
        section(&mut md, "GPU kernels", &self.gpu_kernels);
        section(&mut md, "CPU operators (self time)", &self.cpu_ops);
        section(&mut md, "CUDA runtime calls", &self.runtime_calls);
        md
    }
}

/// Where a rank's profile went, and its summary.
#[derive(Clone, Debug, Serialize)]
pub struct ProfileReport {
    pub steps: ProfileSteps,
    /// The Chrome trace (Perfetto, chrome://tracing, TensorBoard's profiler plugin).
    pub trace: PathBuf,
    /// The summary in Markdown.
    pub table: PathBuf,
    pub summary: Summary,
}

/// Stops `recording` after `steps`, waits for the device's queued work (so its kernels are in
/// the trace), and writes `dir/{stem}.json` (the trace) and `dir/{stem}.md` (the summary).
pub fn finish(
    recording: Recording,
    device: Device,
    steps: ProfileSteps,
    rank: usize,
    dir: &Path,
) -> Result<ProfileReport> {
    if let Device::Cuda(index) = device {
        tch::Cuda::synchronize(index as i64);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let stem = steps.stem(rank);
    let trace = dir.join(format!("{stem}.json"));
    let partial = dir.join(format!("{stem}.json.tmp"));
    let profile = recording.stop(Some(&partial))?;
    std::fs::rename(&partial, &trace).with_context(|| format!("writing {}", trace.display()))?;
    let summary = profile.summary();
    let table = dir.join(format!("{stem}.md"));
    let title = format!(
        "Profile of steps {}–{} on rank {rank} ({device:?})",
        steps.first, steps.last
    );
    let partial = table.with_extension("md.tmp");
    std::fs::write(&partial, summary.to_markdown(&title))
        .and_then(|()| std::fs::rename(&partial, &table))
        .with_context(|| format!("writing {}", table.display()))?;
    Ok(ProfileReport {
        steps,
        trace,
        table,
        summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    fn op(name: &str, start: u64, end: u64, thread: u64) -> Event {
        Event {
            name: name.into(),
            kind: EventKind::Operator,
            start_ns: start,
            end_ns: end,
            thread,
        }
    }

    #[test]
    fn step_ranges_parse() {
        assert_eq!(
            "10-12".parse::<ProfileSteps>().unwrap(),
            ProfileSteps {
                first: 10,
                last: 12
            }
        );
        assert_eq!("7".parse::<ProfileSteps>().unwrap().count(), 1);
        for bad in ["0", "12-10", "a-3", "", "3-"] {
            let err = bad.parse::<ProfileSteps>().unwrap_err().to_string();
            assert!(err.contains("--profile-steps"), "{bad}: {err}");
        }
        assert_eq!(
            ProfileSteps { first: 3, last: 4 }.stem(1),
            "rank1-steps-3-4"
        );
    }

    #[test]
    fn self_time_excludes_callees_and_threads_stay_apart() {
        // linear [0,100) calls mm [10,60) which calls a copy [20,30); add [70,90) on its own.
        // Another thread's mm [0,40) overlaps in time but is no callee of linear.
        let events = [
            op("aten::linear", 0, 100, 1),
            op("aten::mm", 10, 60, 1),
            op("aten::copy_", 20, 30, 1),
            op("aten::add", 70, 90, 1),
            op("aten::mm", 0, 40, 2),
        ];
        let refs: Vec<&Event> = events.iter().collect();
        let caller = callers(&refs);
        assert_eq!(caller, [None, Some(0), Some(1), Some(0), None]);
        let t = self_times(&refs, &caller);
        assert_eq!(t["aten::linear"], (1, 100 - 50 - 20));
        assert_eq!(t["aten::mm"], (2, (50 - 10) + 40));
        assert_eq!(t["aten::copy_"], (1, 10));
        assert_eq!(t["aten::add"], (1, 20));
    }

    #[test]
    fn device_reads_are_told_apart_by_who_made_them() {
        // Two `.item()`s of whale's (one bare), and two reads inside a fused optimizer step.
        let events = [
            op(ITEM, 0, 10, 1),
            op(HOST_READ, 2, 8, 1),
            op(HOST_READ, 12, 14, 1),
            op("aten::_fused_adamw_", 20, 100, 1),
            op(ITEM, 30, 40, 1),
            op(HOST_READ, 32, 38, 1),
            op(HOST_READ, 50, 60, 1),
        ];
        let refs: Vec<&Event> = events.iter().collect();
        let (own, inside) = host_reads(&refs, &callers(&refs));
        assert_eq!(own, 2);
        assert_eq!(
            inside,
            HashMap::from([("aten::_fused_adamw_".to_string(), 2)])
        );
    }

    #[test]
    fn a_gpu_profile_counts_kernels_syncs_and_busy_time() {
        let event = |name: &str, kind, start, end| Event {
            name: name.into(),
            kind,
            start_ns: start,
            end_ns: end,
            thread: 1,
        };
        // Two steps of 1000 ns; three kernels (one a copy) busy 600 ns in all; one sync.
        let profile = Profile {
            events: vec![
                op("ProfilerStep#1", 0, 1000, 1),
                op("ProfilerStep#2", 1000, 2000, 1),
                event("nvjet_tst_gemm", EventKind::Gpu, 100, 400),
                event("Memcpy DtoH (Device -> Pageable)", EventKind::Gpu, 500, 600),
                event("flash_fwd_kernel", EventKind::Gpu, 1200, 1400),
                event("cudaLaunchKernel", EventKind::Runtime, 50, 60),
                event("cudaStreamSynchronize", EventKind::Runtime, 450, 650),
            ],
        };
        let s = profile.summary();
        assert_eq!(s.steps, 2);
        assert_eq!(s.gpu_busy, Some(0.3));
        assert_eq!(s.syncs_per_step, Some(0.5));
        assert_eq!(s.gpu_ops_per_step, Some(1.5));
        assert_eq!(s.gpu_op_mean_us, Some(0.2));
        assert_eq!(s.gpu_kinds[0].name, "matmul");
        let md = s.to_markdown("t");
        assert!(md.contains("0.5 CUDA synchronizations per step"), "{md}");
        assert!(md.contains("2 kernels, copies and fills per step"), "{md}");
    }

    #[test]
    fn gpu_busy_counts_overlaps_once_and_only_inside_steps() {
        let spans = [(0, 50), (40, 80), (120, 130), (300, 400)];
        // Steps [10, 100) and [100, 200): covered 10..80 and 120..130.
        assert_eq!(covered_within(&spans, &[(10, 100), (100, 200)]), 70 + 10);
    }

    #[test]
    fn kernels_are_sorted_into_kinds() {
        assert_eq!(
            kernel_kind("nvjet_tst_128x256_64x4_2x1_v_bz_coopA_TNT"),
            "matmul"
        );
        assert_eq!(
            kernel_kind("void cutlass::Kernel2<cutlass_80_wmma_tensorop_bf16_s161616gemm>"),
            "matmul"
        );
        assert_eq!(
            kernel_kind("flash_fwd_kernel<Flash_fwd_kernel_traits>"),
            "attention"
        );
        assert_eq!(
            kernel_kind("ncclDevKernel_AllReduce_Sum_f32_RING_LL"),
            "communication (NCCL)"
        );
        assert_eq!(kernel_kind("Memcpy DtoD (Device -> Device)"), "copy / fill");
        assert_eq!(
            kernel_kind("void at::native::vectorized_elementwise_kernel<4, silu>"),
            "other (elementwise, reductions, indexing)"
        );
    }

    #[test]
    fn the_profiler_records_real_steps_on_cpu() {
        let dir = tempfile::tempdir().unwrap();
        let recording = Recording::start(Device::Cpu).unwrap();
        let a = Tensor::randn([64, 64], (Kind::Float, Device::Cpu));
        for step in 1..=2 {
            let _mark = recording.mark_step(step);
            let b = a.matmul(&a).relu();
            let _ = b.sum(Kind::Float).double_value(&[]);
        }
        let steps = ProfileSteps { first: 1, last: 2 };
        let report = finish(recording, Device::Cpu, steps, 0, dir.path()).unwrap();
        let s = &report.summary;
        assert_eq!(s.steps, 2);
        assert!(s.step_ms > 0.0);
        assert_eq!(s.gpu_busy, None);
        assert_eq!(s.host_reads_per_step, 1.0);
        assert_eq!(s.operator_reads, []);
        assert_eq!(s.syncs_per_step, None);
        assert_eq!((s.gpu_ops_per_step, s.gpu_op_mean_us), (None, None));
        assert!(s.cpu_ops.iter().any(|r| r.name == "aten::mm"), "{s:?}");
        assert!(s.cpu_ops.iter().all(|r| r.share <= 1.0 + 1e-9));
        let trace: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report.trace).unwrap()).unwrap();
        let names: Vec<&str> = trace["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["name"].as_str())
            .collect();
        assert!(names.contains(&"ProfilerStep#2"), "{names:?}");
        let md = std::fs::read_to_string(&report.table).unwrap();
        assert!(md.contains("`aten::mm`") && md.contains("2 steps"), "{md}");
        // The profiler is off again: a new recording starts.
        drop(Recording::start(Device::Cpu).unwrap());
    }
}

//! `whale dedup`: global exact and MinHash-LSH near-duplicate removal across all inputs.
//!
//! The stage is four sub-steps, each split into independent units whose outputs are files under
//! `OUT/.work/`, so any of them can run as `--tasks N --task I` on many machines:
//!
//! | step         | unit           | reads                         | writes                              |
//! |--------------|----------------|-------------------------------|-------------------------------------|
//! | `signatures` | input file     | the input                     | bucket entries by key partition, doc facts |
//! | `buckets`    | key partition  | that partition of every file  | candidate pairs                     |
//! | `clusters`   | (one, global)  | all pairs, doc facts          | `_removed.parquet`, `manifest.json` |
//! | `filter`     | input file     | the input, removed keys       | `part-NNNNNN.parquet`               |
//!
//! Every unit writes a done-marker when its outputs are complete, and is skipped when rerun unless
//! forced. Units and their outputs depend only on the inputs and the config, never on the task
//! or thread count, so the output is the same however the work is split.

mod buckets;
mod clusters;
pub mod config;
mod datatrove;
mod filter;
mod layout;
pub mod minhash;
mod signatures;
mod union_find;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use clusters::{read_removed, ClusterStats, Removed};
pub use config::{DedupConfig, Scheme};
use layout::Layout;
use minhash::MinHasher;
pub use signatures::FileStats;

use crate::io::{list_inputs_all, SkipCounts};

/// One sub-step of the stage, in the order they must run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    Signatures,
    Buckets,
    Clusters,
    Filter,
}

impl Step {
    pub const ALL: [Step; 4] = [
        Step::Signatures,
        Step::Buckets,
        Step::Clusters,
        Step::Filter,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Signatures => "signatures",
            Step::Buckets => "buckets",
            Step::Clusters => "clusters",
            Step::Filter => "filter",
        }
    }

    pub fn from_name(name: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// Which share of a step's units this process runs: units `u` with `u % count == index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tasks {
    pub count: usize,
    pub index: usize,
}

impl Tasks {
    pub const ALL: Tasks = Tasks { count: 1, index: 0 };
}

/// What one step run did.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: Step,
    pub units_run: usize,
    pub units_skipped: usize,
}

/// The inputs and config a run's intermediate files belong to; a rerun must match it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Plan {
    inputs: Vec<String>,
    config: DedupConfig,
}

/// Stage manifest (`OUT/manifest.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub stage: String,
    pub tool_version: String,
    pub config: DedupConfig,
    pub inputs: Vec<String>,
    pub docs_in: u64,
    pub docs_kept: u64,
    pub docs_removed: u64,
    pub text_bytes_in: u64,
    /// Per dump: documents in, removed and kept.
    pub per_source: BTreeMap<String, BTreeMap<String, u64>>,
    /// Records the readers skipped, by kind (see `io::SkipKind`).
    pub skipped: BTreeMap<String, u64>,
    pub clusters: ClusterStats,
}

/// One dedup run over a set of inputs into an output directory.
pub struct Run {
    pub config: DedupConfig,
    pub inputs: Vec<PathBuf>,
    layout: Layout,
    hasher: MinHasher,
    force: bool,
    stats: OnceLock<Vec<FileStats>>,
    /// Own worker pool when a thread count was asked for, else rayon's global pool.
    pool: Option<rayon::ThreadPool>,
}

impl Run {
    /// List the inputs and check (or record) the plan in `out`. With `force`, a plan that differs
    /// from the recorded one replaces it and the old intermediate files are deleted.
    pub fn open(config: DedupConfig, inputs: &[PathBuf], out: &Path, force: bool) -> Result<Run> {
        let config = config.validate()?;
        let inputs = list_inputs_all(inputs)?;
        if inputs.is_empty() {
            bail!("no WARC/WET, JSONL or Parquet inputs found");
        }
        let layout = Layout::new(out);
        let plan = Plan {
            inputs: inputs.iter().map(|p| p.display().to_string()).collect(),
            config: config.clone(),
        };
        let recorded = match std::fs::read_to_string(layout.plan()) {
            Ok(text) => {
                Some(serde_json::from_str::<Plan>(&text).context("corrupt .work/plan.json")?)
            }
            Err(_) => None,
        };
        if let Some(old) = &recorded {
            if *old != plan {
                if !force {
                    bail!(
                        "{} holds a run with other inputs or config; use --force to redo it",
                        out.display()
                    );
                }
                std::fs::remove_dir_all(&layout.work)?;
            }
        }
        if recorded.as_ref() != Some(&plan) {
            layout::write_atomic(&layout.plan(), &serde_json::to_vec_pretty(&plan)?)?;
        }
        let hasher = MinHasher::new(
            config.scheme,
            config.ngram,
            config.bands,
            config.rows,
            config.seed(),
        );
        Ok(Run {
            config,
            inputs,
            layout,
            hasher,
            force,
            stats: OnceLock::new(),
            pool: None,
        })
    }

    /// Run every step on `threads` worker threads (the output does not depend on it).
    pub fn with_threads(mut self, threads: usize) -> Result<Run> {
        self.pool = Some(
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads.max(1))
                .build()?,
        );
        Ok(self)
    }

    /// Run the whole stage locally: every step, all units, in parallel on the rayon pool.
    pub fn run_all(&self) -> Result<Vec<StepReport>> {
        Step::ALL
            .iter()
            .map(|&step| self.run_step(step, Tasks::ALL))
            .collect()
    }

    /// Run this task's share of `step`, skipping units already done (unless forced).
    pub fn run_step(&self, step: Step, tasks: Tasks) -> Result<StepReport> {
        match &self.pool {
            Some(pool) => pool.install(|| self.run_step_here(step, tasks)),
            None => self.run_step_here(step, tasks),
        }
    }

    fn run_step_here(&self, step: Step, tasks: Tasks) -> Result<StepReport> {
        anyhow::ensure!(
            tasks.count >= 1 && tasks.index < tasks.count,
            "task {} of {} does not exist",
            tasks.index,
            tasks.count
        );
        let units = match step {
            Step::Signatures | Step::Filter => self.inputs.len(),
            Step::Buckets => self.config.partitions,
            Step::Clusters => 1,
        };
        if step != Step::Signatures {
            let (before, before_units) = match step {
                Step::Buckets => (Step::Signatures, self.inputs.len()),
                Step::Clusters => (Step::Buckets, self.config.partitions),
                _ => (Step::Clusters, 1),
            };
            let missing = (0..before_units)
                .filter(|&u| !self.layout.done(before.name(), u).exists())
                .count();
            if missing > 0 {
                bail!("step `{}` needs `{}` finished first ({missing} of {before_units} units missing)", step.name(), before.name());
            }
        }
        let mine: Vec<usize> = (0..units)
            .filter(|u| u % tasks.count == tasks.index)
            .collect();
        let todo: Vec<usize> = mine
            .iter()
            .copied()
            .filter(|&u| self.force || !self.layout.done(step.name(), u).exists())
            .collect();
        let bar = crate::progress::bar(todo.len() as u64, step.name(), "units");
        let removed = match step {
            Step::Filter if !todo.is_empty() => filter::load_removed(self)?,
            _ => Vec::new(),
        };
        todo.par_iter().try_for_each(|&unit| -> Result<()> {
            let marker = self.layout.done(step.name(), unit);
            let _ = std::fs::remove_file(&marker);
            match step {
                Step::Signatures => {
                    signatures::run_file(self, unit)?;
                }
                Step::Buckets => {
                    buckets::run_partition(self, unit)?;
                }
                Step::Clusters => {
                    let stats = clusters::run_clusters(self)?;
                    self.write_manifest(stats)?;
                }
                Step::Filter => {
                    filter::run_file(self, unit, &removed)?;
                }
            }
            layout::write_atomic(&marker, b"")?;
            bar.inc(1);
            Ok(())
        })?;
        bar.finish_and_clear();
        if !todo.is_empty() {
            // Redone units may change what later steps read: those steps must run again.
            for later in Step::ALL.iter().skip_while(|s| **s != step).skip(1) {
                match std::fs::remove_dir_all(self.layout.done_dir(later.name())) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                    _ => {}
                }
            }
        }
        Ok(StepReport {
            step,
            units_run: todo.len(),
            units_skipped: mine.len() - todo.len(),
        })
    }

    /// Signature-step facts of every input file, loaded once.
    fn file_stats(&self) -> Result<&[FileStats]> {
        if let Some(stats) = self.stats.get() {
            return Ok(stats);
        }
        let stats = (0..self.inputs.len())
            .map(|f| {
                let path = self.layout.signatures(f, "json");
                let text =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                Ok(serde_json::from_slice(&text)?)
            })
            .collect::<Result<Vec<FileStats>>>()?;
        Ok(self.stats.get_or_init(|| stats))
    }

    fn write_manifest(&self, clusters: ClusterStats) -> Result<()> {
        let stats = self.file_stats()?;
        let mut skipped = SkipCounts::default();
        let mut per_source: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for s in stats {
            skipped.merge(&SkipCounts::from_named(&s.skipped)?);
            for (source, n) in &s.per_source {
                *per_source
                    .entry(source.clone())
                    .or_default()
                    .entry("in".into())
                    .or_insert(0) += n;
            }
        }
        for (source, counts) in per_source.iter_mut() {
            let removed = clusters
                .removed_per_source
                .get(source)
                .copied()
                .unwrap_or(0);
            counts.insert("removed".into(), removed);
            counts.insert("kept".into(), counts["in"] - removed);
        }
        let docs_in: u64 = stats.iter().map(|s| s.docs).sum();
        let docs_removed: u64 = clusters.removed.values().sum();
        let manifest = Manifest {
            stage: "dedup".into(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            config: self.config.clone(),
            inputs: self
                .inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            docs_in,
            docs_kept: docs_in - docs_removed,
            docs_removed,
            text_bytes_in: stats.iter().map(|s| s.text_bytes).sum(),
            per_source,
            skipped: skipped.to_named(),
            clusters,
        };
        layout::write_atomic(
            &self.layout.out.join("manifest.json"),
            &serde_json::to_vec_pretty(&manifest)?,
        )
    }

    /// The manifest of a finished clustering step.
    pub fn manifest(&self) -> Result<Manifest> {
        let path = self.layout.out.join("manifest.json");
        let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(serde_json::from_slice(&text)?)
    }
}

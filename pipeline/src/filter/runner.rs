//! The `whale filter` stage: input files → kept documents (and optionally rejects) as Parquet,
//! with per-file stats that double as resume markers and a `manifest.json` summing them.
//!
//! Input file `i` (in sorted order) belongs to task `i % tasks` and becomes `part-{i:06}.parquet`;
//! its counts go to `_stats/part-{i:06}.json`, written last, so a file with stats is finished and
//! a rerun skips it. Documents are judged in parallel in fixed-size batches and written in input
//! order, so output is identical whatever the thread count.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Decision, Filter, FilterConfig};
use crate::doc::{host_of, Document};
use crate::io::{self, DocumentWriter, SkipCounts};

/// Documents judged together in parallel.
const BATCH: usize = 512;

/// What to run.
pub struct FilterOptions {
    pub input: PathBuf,
    pub output: PathBuf,
    pub config: FilterConfig,
    /// Where to write rejected documents (with `meta.filter_reason`), if anywhere.
    pub keep_rejected: Option<PathBuf>,
    pub tasks: usize,
    pub task: usize,
    /// Redo files that already have stats.
    pub force: bool,
    /// Show a progress bar (only drawn when stderr is a terminal).
    pub progress: bool,
}

/// Counts for one input file, or summed over many.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FilterStats {
    pub docs_in: u64,
    pub kept: u64,
    pub dropped: u64,
    /// Kept documents whose text C4 reduced to its kept lines.
    pub rewritten: u64,
    /// Documents without a parseable URL host (kept or dropped on their other merits).
    pub invalid_url: u64,
    /// Malformed records skipped while reading, by kind.
    pub skipped: BTreeMap<String, u64>,
    /// `rule_set.reason` → documents it dropped (first rule only).
    pub dropped_by: BTreeMap<String, u64>,
    /// Language → documents in and kept ("unknown" for none identified).
    pub languages: BTreeMap<String, LangCounts>,
}

/// Per-language counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LangCounts {
    pub docs_in: u64,
    pub kept: u64,
}

impl FilterStats {
    fn add(&mut self, other: &FilterStats) {
        self.docs_in += other.docs_in;
        self.kept += other.kept;
        self.dropped += other.dropped;
        self.rewritten += other.rewritten;
        self.invalid_url += other.invalid_url;
        for (k, v) in &other.skipped {
            *self.skipped.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.dropped_by {
            *self.dropped_by.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.languages {
            let e = self.languages.entry(k.clone()).or_default();
            e.docs_in += v.docs_in;
            e.kept += v.kept;
        }
    }

    fn record(&mut self, doc: &Document, d: &Decision) {
        self.docs_in += 1;
        if host_of(&doc.url).is_empty() {
            self.invalid_url += 1;
        }
        let lang = if d.lang.is_empty() {
            "unknown"
        } else {
            d.lang.as_str()
        };
        let counts = self.languages.entry(lang.to_string()).or_default();
        counts.docs_in += 1;
        match &d.dropped_by {
            Some(rule) => {
                self.dropped += 1;
                *self.dropped_by.entry(rule.clone()).or_default() += 1;
            }
            None => {
                self.kept += 1;
                counts.kept += 1;
                self.rewritten += u64::from(d.rewritten.is_some());
            }
        }
    }
}

/// What one run did, for the summary line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FilterSummary {
    /// Input files this task processed now (not skipped as done).
    pub files_done: usize,
    pub files_skipped: usize,
    /// Totals over every finished file of every task (the manifest's counts).
    pub totals: FilterStats,
    /// Whether every input file of every task is finished.
    pub complete: bool,
}

/// Run the filter stage for one task.
pub fn run(opts: &FilterOptions) -> Result<FilterSummary> {
    if opts.tasks == 0 || opts.task >= opts.tasks {
        bail!("--task {} is not below --tasks {}", opts.task, opts.tasks);
    }
    let filter = Filter::new(opts.config.clone())?;
    let inputs = io::list_inputs(&opts.input)?;
    if inputs.is_empty() {
        bail!(
            "no input files (WARC/WET, JSONL or Parquet) under {}",
            opts.input.display()
        );
    }
    let stats_dir = opts.output.join("_stats");
    std::fs::create_dir_all(&stats_dir)
        .with_context(|| format!("creating {}", stats_dir.display()))?;
    let mine: Vec<(usize, &PathBuf)> = inputs
        .iter()
        .enumerate()
        .filter(|(i, _)| i % opts.tasks == opts.task)
        .collect();
    let todo: Vec<(usize, &PathBuf)> = mine
        .iter()
        .copied()
        .filter(|(i, _)| opts.force || !stats_path(&stats_dir, *i).exists())
        .collect();
    let bar = if opts.progress {
        crate::progress::bar(todo.len() as u64, "filter", "files")
    } else {
        ProgressBar::hidden()
    };
    for (i, path) in &todo {
        bar.set_message(
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        let stats = filter_file(&filter, path, *i, opts)?;
        write_json(&stats_path(&stats_dir, *i), &stats)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let (totals, finished) = sum_stats(&stats_dir, inputs.len())?;
    let complete = finished == inputs.len();
    write_manifest(opts, &inputs, &totals, complete)?;
    Ok(FilterSummary {
        files_done: todo.len(),
        files_skipped: mine.len() - todo.len(),
        totals,
        complete,
    })
}

fn part_name(i: usize) -> String {
    format!("part-{i:06}")
}

fn stats_path(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("{}.json", part_name(i)))
}

/// Judge every document of one input file, writing kept (and rejected) documents in order.
fn filter_file(
    filter: &Filter,
    path: &Path,
    i: usize,
    opts: &FilterOptions,
) -> Result<FilterStats> {
    let name = format!("{}.parquet", part_name(i));
    let mut kept_out = DocumentWriter::create(&opts.output.join(&name))?;
    let mut rejected_out = match &opts.keep_rejected {
        Some(dir) => Some(DocumentWriter::create(&dir.join(&name))?),
        None => None,
    };
    let mut stats = FilterStats::default();
    let mut skips = SkipCounts::default();
    let mut docs = io::read_documents(path);
    loop {
        let mut batch = Vec::with_capacity(BATCH);
        for item in docs.by_ref() {
            match item {
                Ok(doc) => batch.push(doc),
                Err(skip) => skips.record(&skip),
            }
            if batch.len() == BATCH {
                break;
            }
        }
        if batch.is_empty() {
            break;
        }
        let decisions: Vec<Decision> = batch.par_iter().map(|doc| filter.decide(doc)).collect();
        for (mut doc, d) in batch.into_iter().zip(decisions) {
            stats.record(&doc, &d);
            if filter.cfg.lang.enabled {
                doc.lang = d.lang.clone();
                // datatrove's LanguageFilter metadata: `language` … here `lang`, and its score.
                doc.meta.insert("lang".into(), d.lang.clone());
                doc.meta
                    .insert("language_score".into(), format!("{:.4}", d.lang_score));
            }
            match d.dropped_by {
                Some(rule) => {
                    if let Some(out) = rejected_out.as_mut() {
                        doc.meta.insert("filter_reason".into(), rule);
                        out.write(&doc)?;
                    }
                }
                None => {
                    if let Some(text) = d.rewritten {
                        doc.meta.insert(
                            "c4_rewritten".into(),
                            format!(
                                "{} -> {} chars",
                                doc.text.chars().count(),
                                text.chars().count()
                            ),
                        );
                        doc.text = text;
                    }
                    kept_out.write(&doc)?;
                }
            }
        }
    }
    stats.skipped = skips.to_named();
    kept_out.finish()?;
    if let Some(out) = rejected_out {
        out.finish()?;
    }
    Ok(stats)
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let tmp = io::tmp_path(path);
    std::fs::write(&tmp, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", path.display()))?;
    Ok(())
}

/// Sum the stats of every finished file; returns the totals and how many files are finished.
fn sum_stats(dir: &Path, n_inputs: usize) -> Result<(FilterStats, usize)> {
    let mut totals = FilterStats::default();
    let mut finished = 0;
    for i in 0..n_inputs {
        let path = stats_path(dir, i);
        if !path.exists() {
            continue;
        }
        let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let stats: FilterStats =
            serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))?;
        totals.add(&stats);
        finished += 1;
    }
    Ok((totals, finished))
}

fn write_manifest(
    opts: &FilterOptions,
    inputs: &[PathBuf],
    totals: &FilterStats,
    complete: bool,
) -> Result<()> {
    let manifest = serde_json::json!({
        "stage": "filter",
        "tool_version": env!("CARGO_PKG_VERSION"),
        "complete": complete,
        "config": opts.config,
        "inputs": inputs,
        "outputs": (0..inputs.len()).map(|i| format!("{}.parquet", part_name(i))).collect::<Vec<_>>(),
        "keep_rejected": opts.keep_rejected,
        "tasks": opts.tasks,
        "counts": totals,
        "notes": "c4 may rewrite a kept document's text to its kept lines; such documents carry meta.c4_rewritten",
    });
    write_json(&opts.output.join("manifest.json"), &manifest)
}

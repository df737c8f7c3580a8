//! `whale dedup`: global exact + MinHash-LSH near-duplicate removal across all input dumps.

use std::path::PathBuf;

use anyhow::Context;
use pipeline::dedup::{DedupConfig, Run, Scheme, Step, Tasks};
use pipeline::extract::TextMode;

/// Remove exact and near duplicates across ALL inputs at once (global, as DeepSeek LLM did):
/// keep one document per cluster (oldest dump, then smallest id; with --scheme datatrove the one
/// datatrove keeps) in OUTPUT/part-NNNNNN.parquet,
/// list the removed ones in OUTPUT/_removed.parquet, and count everything in manifest.json.
///
/// Without --step, runs the four sub-steps (signatures → buckets → clusters → filter) locally.
/// With --step, runs one task's share of one sub-step (--tasks/--task or a Slurm job array);
/// see `whale slurm dedup`. Finished units are skipped when rerun.
#[derive(clap::Args, Clone)]
pub struct Args {
    /// Input: a directory (walked), a file or a glob of WARC/WET, JSONL or Parquet files; repeatable.
    #[arg(long, required = true)]
    pub input: Vec<PathBuf>,
    /// Output directory.
    #[arg(long)]
    pub output: PathBuf,
    /// Parameters (see configs/dedup.toml); built-in defaults (datatrove's) when absent.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Signature definition and keep rule: `whale` (CJK-aware shingles, keep the oldest copy) or
    /// `datatrove` (datatrove 0.10's MinhashDedup to the bit, keep its union-find root), to
    /// reproduce a datatrove run.
    #[arg(long, value_parser = ["whale", "datatrove"])]
    pub scheme: Option<String>,
    /// Seed of the MinHash permutations (default: whale 0, datatrove 1 as its MinhashConfig).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Words per shingle.
    #[arg(long)]
    pub ngram: Option<usize>,
    /// LSH bands.
    #[arg(long)]
    pub bands: Option<usize>,
    /// MinHash rows per band.
    #[arg(long)]
    pub rows: Option<usize>,
    /// Key partitions of the buckets step.
    #[arg(long)]
    pub partitions: Option<usize>,
    /// Also remove documents with an identical URL.
    #[arg(long)]
    pub url: bool,
    /// Keep exact duplicates unless they are also near duplicates.
    #[arg(long)]
    pub no_exact: bool,
    /// Only exact (and URL) dedup, no MinHash.
    #[arg(long)]
    pub no_near: bool,
    /// Check each near-duplicate candidate pair by exact shingle Jaccard; drop false positives.
    #[arg(long)]
    pub verify: bool,
    /// Jaccard below which --verify drops a candidate pair.
    #[arg(long)]
    pub verify_threshold: Option<f64>,
    /// Text of WARC HTML pages: `main-content` (navigation, footers, link lists, comments
    /// removed, as trafilatura does for FineWeb) or `full-text` (every visible line of the page).
    #[arg(long, value_parser = ["main-content", "full-text"])]
    pub html: Option<String>,
    /// Run only this sub-step.
    #[arg(long, value_parser = ["signatures", "buckets", "clusters", "filter"])]
    pub step: Option<String>,
    /// Split the sub-step's units into this many tasks.
    #[arg(long, env = "SLURM_ARRAY_TASK_COUNT", default_value_t = 1)]
    pub tasks: usize,
    /// Which task this process runs, 0-based.
    #[arg(long, env = "SLURM_ARRAY_TASK_ID", default_value_t = 0)]
    pub task: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Redo units that a previous run finished (and replace a run with other inputs/config).
    #[arg(long)]
    pub force: bool,
    /// Print the summary as JSON instead of one line.
    #[arg(long)]
    pub json: bool,
}

impl Args {
    /// Config file (or defaults) with the flags applied on top.
    fn dedup_config(&self) -> anyhow::Result<DedupConfig> {
        let mut c = match &self.config {
            Some(path) => DedupConfig::from_toml(
                &std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?,
            )?,
            None => DedupConfig::default(),
        };
        match self.scheme.as_deref() {
            Some("datatrove") => c.scheme = Scheme::Datatrove,
            Some(_) => c.scheme = Scheme::Whale,
            None => {}
        }
        match self.html.as_deref() {
            Some("full-text") => c.html = TextMode::FullText,
            Some(_) => c.html = TextMode::MainContent,
            None => {}
        }
        c.seed = self.seed.or(c.seed);
        c.ngram = self.ngram.unwrap_or(c.ngram);
        c.bands = self.bands.unwrap_or(c.bands);
        c.rows = self.rows.unwrap_or(c.rows);
        c.partitions = self.partitions.unwrap_or(c.partitions);
        c.verify_threshold = self.verify_threshold.unwrap_or(c.verify_threshold);
        c.url |= self.url;
        c.verify |= self.verify;
        c.exact &= !self.no_exact;
        c.near &= !self.no_near;
        Ok(c)
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let step = args.step.as_deref().and_then(Step::from_name);
    anyhow::ensure!(
        step.is_some() || args.tasks == 1,
        "--tasks/--task split one sub-step: give --step too"
    );
    let mut run =
        Run::open(args.dedup_config()?, &args.input, &args.output, args.force).context("dedup")?;
    if let Some(threads) = args.threads {
        run = run.with_threads(threads)?;
    }
    let reports = match step {
        Some(step) => vec![run.run_step(
            step,
            Tasks {
                count: args.tasks,
                index: args.task,
            },
        )?],
        None => run.run_all()?,
    };
    // A step run before clustering, or by a task that had no unit of it, has no manifest yet.
    let manifest = match step {
        None => Some(run.manifest()?),
        Some(Step::Clusters | Step::Filter) => run.manifest().ok(),
        Some(_) => None,
    };
    if args.json {
        let value = serde_json::json!({ "steps": reports, "manifest": manifest });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let units = |f: fn(&pipeline::dedup::StepReport) -> usize| reports.iter().map(f).sum::<usize>();
    let (ran, skipped) = (units(|r| r.units_run), units(|r| r.units_skipped));
    let steps: Vec<&str> = reports.iter().map(|r| r.step.name()).collect();
    match manifest {
        Some(m) => {
            let reasons: Vec<String> = m
                .clusters
                .removed
                .iter()
                .map(|(r, n)| format!("{n} {r}"))
                .collect();
            let skipped_records: u64 = m.skipped.values().sum();
            println!(
                "dedup: {} docs in, {} kept, {} removed ({}) in {} clusters; {} bad records skipped; {} units run, {} skipped as done → {}",
                m.docs_in,
                m.docs_kept,
                m.docs_removed,
                if reasons.is_empty() { "none".to_string() } else { reasons.join(", ") },
                m.clusters.clusters,
                skipped_records,
                ran,
                skipped,
                args.output.display()
            );
        }
        None => println!(
            "dedup {}: task {} of {}: {ran} units run, {skipped} skipped as done → {}",
            steps.join(","),
            args.task,
            args.tasks,
            args.output.display()
        ),
    }
    Ok(())
}

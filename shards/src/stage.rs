//! The `whale shard` stage: encode each input file's documents in parallel and write them as
//! shards of a target size. One input file is one task: its shards are named after its position
//! in the sorted input list (`00003-0001.shard`), a done-marker records them, and a rerun skips
//! inputs whose marker matches the current settings, so the stage resumes and splits across
//! `--tasks` without coordination. Output bytes depend only on inputs and settings, never on the
//! number of threads (encoding is an order-preserving parallel map; compression is sequential).
//!
//! Document policy: each document becomes `[BOS] ids(text) [EOS]`, with BOS/EOS present when the
//! tokenizer defines them (their ids are in every header). Documents are never split across
//! shards; they are packed back to back and may straddle chunks.
//!
//! Held-out data: with `val_fraction` > 0, whole documents chosen by a hash of their text go to
//! the shard directory `OUTPUT/val/` instead (same format, markers and manifest), which training
//! finds by itself for its validation loss. Choosing by content, not by position, keeps the split
//! the same for any seed, task split or input order, and sends exact duplicates to the same side,
//! so the held-out loss is not flattered by copies of training documents.

use crate::format::{Dtype, Header, EXTENSION};
use crate::manifest::{Manifest, Marker, ShardEntry};
use crate::writer::{ShardWriter, WriterConfig};
use anyhow::{ensure, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// One input document: its text and the labels the manifest counts by.
#[derive(Debug, Clone, Default)]
pub struct DocIn {
    pub text: String,
    pub source: String,
    pub domain: String,
}

/// A reader of one input file: documents, or a message for each record it had to skip.
pub type DocIter = Box<dyn Iterator<Item = std::result::Result<DocIn, String>> + Send>;

/// The tokenizer as the stage needs it (kept abstract so this crate does not depend on one).
pub struct Encoder<'a> {
    pub vocab_size: u32,
    pub hash: u64,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub encode: &'a (dyn Fn(&str) -> Vec<u32> + Sync),
}

/// Settings of the stage; all of them but `force`, `tasks` and `task` shape the output.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct StageConfig {
    pub output: PathBuf,
    /// A shard is closed once its compressed chunks reach this many bytes.
    pub shard_bytes: u64,
    pub chunk_tokens: usize,
    pub zstd_level: i32,
    /// Seed of the document-order shuffle within each input; 0 keeps input order.
    pub seed: u64,
    /// Fraction of documents held out into `OUTPUT/val/` (0: none).
    #[serde(default)]
    pub val_fraction: f64,
    #[serde(skip)]
    pub force: bool,
    #[serde(skip)]
    pub tasks: usize,
    #[serde(skip)]
    pub task: usize,
}

/// The held-out shard directory inside a `whale shard` output.
pub const VAL_DIR: &str = "val";

/// Seed of the held-out hash: fixed, so a document's side never depends on settings.
const VAL_HASH_SEED: u64 = 0x7661_6c5f_7370_6c74;

/// True when `text` belongs to the held-out fraction `fraction`.
pub fn is_held_out(text: &str, fraction: f64) -> bool {
    fraction > 0.0
        && (xxh3_64_with_seed(text.as_bytes(), VAL_HASH_SEED) as f64) < fraction * 2f64.powi(64)
}

/// The manifests a run leaves: the training shards' and, with `val_fraction` > 0, the held-out
/// ones'.
#[derive(Debug, Clone)]
pub struct Manifests {
    pub train: Manifest,
    pub val: Option<Manifest>,
}

/// Skipped records logged per input; the rest are only counted (a broken dump would flood).
const LOGGED_SKIPS: u64 = 5;
/// Documents encoded per parallel batch: large enough to keep every core busy.
const ENCODE_BATCH: usize = 2048;

/// Runs the tasks of this `task` over `inputs` (sorted), then rewrites `manifest.json` (and the
/// held-out directory's) from all done-markers present.
pub fn run(
    inputs: &[PathBuf],
    cfg: &StageConfig,
    enc: &Encoder,
    read: &(dyn Fn(&Path) -> Result<DocIter> + Sync),
) -> Result<Manifests> {
    ensure!(
        cfg.tasks > 0 && cfg.task < cfg.tasks,
        "task {} of {}",
        cfg.task,
        cfg.tasks
    );
    ensure!(
        (0.0..1.0).contains(&cfg.val_fraction),
        "the held-out fraction must be in [0, 1), not {}",
        cfg.val_fraction
    );
    ensure!(!inputs.is_empty(), "no input files");
    let header = Header {
        dtype: Dtype::for_vocab(enc.vocab_size),
        vocab_size: enc.vocab_size,
        tokenizer_hash: enc.hash,
        seed: cfg.seed,
        bos_id: enc.bos_id,
        eos_id: enc.eos_id,
    };
    let val_cfg = val_config(cfg);
    for dir in std::iter::once(cfg).chain(&val_cfg) {
        std::fs::create_dir_all(dir.output.join(".done"))
            .with_context(|| format!("creating {}", dir.output.display()))?;
        remove_orphans(&dir.output, inputs.len())?;
    }
    if val_cfg.is_none() {
        remove_stale_val(&cfg.output)?;
    }
    let mine = (cfg.task..inputs.len()).step_by(cfg.tasks).count();
    let bar = progress_bar(mine as u64);
    let mut tokens = 0u64;
    for (i, input) in inputs.iter().enumerate() {
        if i % cfg.tasks != cfg.task {
            continue;
        }
        bar.inc(1);
        let done = |c: &StageConfig| {
            Marker::load(&marker_path(&c.output, i)).is_some_and(|m| m.matches(input, c, &header))
        };
        if !cfg.force && done(cfg) && val_cfg.as_ref().is_none_or(done) {
            continue;
        }
        let (train, val) = shard_input(i, input, cfg, val_cfg.as_ref(), &header, enc, read)
            .with_context(|| format!("sharding {}", input.display()))?;
        // The training marker last: it alone says "done" when there is no held-out directory.
        for (marker, c) in val.iter().zip(&val_cfg).chain([(&train, cfg)]) {
            marker.save(&marker_path(&c.output, i))?;
            tokens += marker.shards.iter().map(|s| s.tokens).sum::<u64>();
        }
        bar.set_message(format!("{tokens} tokens"));
    }
    bar.finish_and_clear();
    let mut manifests = val_cfg.iter().chain([cfg]).map(|c| -> Result<Manifest> {
        let m = Manifest::collect(inputs, c, &header)?;
        m.save(&c.output.join("manifest.json"))?;
        Ok(m)
    });
    let val = val_cfg
        .as_ref()
        .map(|_| manifests.next().expect("val"))
        .transpose()?;
    let train = manifests.next().expect("train")?;
    Ok(Manifests { train, val })
}

/// The settings of the held-out directory, when there is one.
fn val_config(cfg: &StageConfig) -> Option<StageConfig> {
    (cfg.val_fraction > 0.0).then(|| StageConfig {
        output: cfg.output.join(VAL_DIR),
        ..cfg.clone()
    })
}

/// Deletes the held-out directory an earlier run with `val_fraction` > 0 left: training would
/// otherwise validate on documents that are now training data.
fn remove_stale_val(out: &Path) -> Result<()> {
    let dir = out.join(VAL_DIR);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing the stale held-out shards {}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// A bar over this task's inputs on stderr, hidden when stderr is not a terminal (logs, CI,
/// Slurm).
fn progress_bar(len: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(
        "     shard [{bar:40}] {pos}/{len} inputs {msg} {elapsed_precise} eta {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar
}

fn marker_path(out: &Path, i: usize) -> PathBuf {
    out.join(".done").join(format!("{i:05}.json"))
}

/// File name of shard `j` of input `i`.
pub fn shard_name(i: usize, j: usize) -> String {
    format!("{i:05}-{j:04}.{EXTENSION}")
}

/// The shards of one input going into one directory: the writer of the open shard and the
/// marker that lists the closed ones.
struct Sink<'a> {
    input: usize,
    cfg: &'a StageConfig,
    writer: WriterConfig,
    marker: Marker,
    open: Option<(String, ShardWriter)>,
}

impl<'a> Sink<'a> {
    fn new(
        i: usize,
        input: &Path,
        cfg: &'a StageConfig,
        header: &Header,
        skipped: u64,
    ) -> Result<Self> {
        remove_shards_of(&cfg.output, i)?;
        Ok(Sink {
            input: i,
            cfg,
            writer: WriterConfig {
                chunk_tokens: cfg.chunk_tokens,
                zstd_level: cfg.zstd_level,
                ..WriterConfig::new(*header)
            },
            marker: Marker::new(input, cfg, header, skipped),
            open: None,
        })
    }

    /// Appends a document, closing the open shard first once it reached the target size.
    fn push(&mut self, doc: &DocIn, ids: &[u32]) -> Result<()> {
        if self
            .open
            .as_ref()
            .is_some_and(|(_, w)| w.bytes_written() >= self.cfg.shard_bytes)
        {
            self.close()?;
        }
        if self.open.is_none() {
            let name = shard_name(self.input, self.marker.shards.len());
            let w = ShardWriter::create(&self.cfg.output.join(&name), self.writer)?;
            self.open = Some((name, w));
        }
        let (_, w) = self.open.as_mut().expect("just opened");
        w.push_doc(ids)?;
        self.marker.count(doc, ids.len() as u64);
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        if let Some((name, w)) = self.open.take() {
            let s = w.finish()?;
            self.marker.shards.push(ShardEntry::new(name, &s));
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Marker> {
        self.close()?;
        Ok(self.marker)
    }
}

/// Encodes and writes one input (its held-out documents into `val` when given); removes any
/// earlier shards of it first. Returns the training and held-out markers.
fn shard_input(
    i: usize,
    input: &Path,
    cfg: &StageConfig,
    val: Option<&StageConfig>,
    header: &Header,
    enc: &Encoder,
    read: &(dyn Fn(&Path) -> Result<DocIter> + Sync),
) -> Result<(Marker, Option<Marker>)> {
    let mut skipped = 0u64;
    let mut docs = Vec::new();
    for item in read(input)? {
        match item {
            Ok(doc) => docs.push(doc),
            Err(msg) => {
                skipped += 1;
                if skipped <= LOGGED_SKIPS {
                    eprintln!("shard: skipped a record: {msg}");
                }
            }
        }
    }
    if skipped > LOGGED_SKIPS {
        eprintln!(
            "shard: … {} more records skipped in {}",
            skipped - LOGGED_SKIPS,
            input.display()
        );
    }
    if cfg.seed != 0 {
        let name = input.file_name().unwrap_or_default().to_string_lossy();
        shuffle(&mut docs, xxh3_64_with_seed(name.as_bytes(), cfg.seed));
    }
    let mut train = Sink::new(i, input, cfg, header, skipped)?;
    let mut held_out = val.map(|v| Sink::new(i, input, v, header, 0)).transpose()?;
    for batch in docs.chunks(ENCODE_BATCH) {
        let encoded: Vec<Vec<u32>> = batch
            .par_iter()
            .map(|d| {
                let mut ids = Vec::with_capacity(d.text.len() / 3 + 2);
                ids.extend(header.bos_id);
                ids.extend((enc.encode)(&d.text));
                ids.extend(header.eos_id);
                ids
            })
            .collect();
        for (doc, ids) in batch.iter().zip(&encoded) {
            match held_out.as_mut() {
                Some(sink) if is_held_out(&doc.text, cfg.val_fraction) => sink.push(doc, ids)?,
                _ => train.push(doc, ids)?,
            }
        }
    }
    Ok((train.finish()?, held_out.map(Sink::finish).transpose()?))
}

/// Deletes shards and markers of input numbers `>= n_inputs` (left by a run over more inputs):
/// no task of this run writes them, and the loader must not read them.
fn remove_orphans(out: &Path, n_inputs: usize) -> Result<()> {
    for dir in [out.to_path_buf(), out.join(".done")] {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let number = name.get(..5).and_then(|n| n.parse::<usize>().ok());
            let ours = name.contains(&format!(".{EXTENSION}")) || dir != out;
            if ours && number.is_some_and(|i| i >= n_inputs) {
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing stale {}", path.display()))?;
            }
        }
    }
    Ok(())
}

/// Deletes `iiiii-*.shard` (and leftover temp files) of input `i`.
fn remove_shards_of(out: &Path, i: usize) -> Result<()> {
    let prefix = format!("{i:05}-");
    for entry in std::fs::read_dir(out)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with(&prefix) && name.contains(&format!(".{EXTENSION}")) {
            std::fs::remove_file(&path)
                .with_context(|| format!("removing stale {}", path.display()))?;
        }
    }
    Ok(())
}

/// Fisher–Yates with splitmix64: a fixed, portable order for a seed.
fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for k in (1..items.len()).rev() {
        let j = (next() % (k as u64 + 1)) as usize;
        items.swap(k, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Dataset;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const BOS: u32 = 256;
    const EOS: u32 = 257;

    /// A byte-level "tokenizer": one id per byte.
    fn bytes(text: &str) -> Vec<u32> {
        text.bytes().map(u32::from).collect()
    }

    fn texts(input: &Path) -> Vec<String> {
        let name = input.file_name().unwrap().to_string_lossy().to_string();
        (0..300)
            .map(|d| format!("{name} doc {d} ").repeat(1 + d % 17) + "é漢")
            .collect()
    }

    fn reader(input: &Path) -> Result<DocIter> {
        let docs: Vec<_> = texts(input)
            .into_iter()
            .enumerate()
            .map(|(d, text)| {
                Ok(DocIn {
                    text,
                    source: "dumpA".into(),
                    domain: format!("d{}.com", d % 3),
                })
            })
            .chain(std::iter::once(Err("bad record".to_string())))
            .collect();
        Ok(Box::new(docs.into_iter()))
    }

    fn config(out: &Path, seed: u64) -> StageConfig {
        StageConfig {
            output: out.to_path_buf(),
            shard_bytes: 1 << 10,
            chunk_tokens: 1000,
            zstd_level: 3,
            seed,
            val_fraction: 0.0,
            force: false,
            tasks: 1,
            task: 0,
        }
    }

    fn run_with(out: &Path, seed: u64, calls: &AtomicUsize) -> Manifest {
        let inputs = [PathBuf::from("in/a.jsonl"), PathBuf::from("in/b.jsonl")];
        run_on(&inputs, out, seed, calls)
    }

    fn run_on(inputs: &[PathBuf], out: &Path, seed: u64, calls: &AtomicUsize) -> Manifest {
        run_config(inputs, &config(out, seed), calls).train
    }

    fn run_config(inputs: &[PathBuf], cfg: &StageConfig, calls: &AtomicUsize) -> Manifests {
        let encode = |t: &str| {
            calls.fetch_add(1, Ordering::Relaxed);
            bytes(t)
        };
        let enc = Encoder {
            vocab_size: 258,
            hash: 77,
            bos_id: Some(BOS),
            eos_id: Some(EOS),
            encode: &encode,
        };
        run(inputs, cfg, &enc, &reader).unwrap()
    }

    /// Every document of `dir`, as token ids.
    fn all_docs(dir: &Path) -> Vec<Vec<u32>> {
        let data = Dataset::open(dir).unwrap();
        (0..data.docs())
            .map(|n| data.doc_tokens(n).unwrap())
            .collect()
    }

    #[test]
    fn held_out_documents_are_whole_disjoint_and_chosen_by_content() {
        let inputs = [PathBuf::from("in/a.jsonl"), PathBuf::from("in/b.jsonl")];
        let calls = AtomicUsize::new(0);
        let split = |seed: u64, tasks: usize| {
            let dir = tempfile::tempdir().unwrap();
            let mut cfg = config(dir.path(), seed);
            cfg.val_fraction = 0.1;
            cfg.tasks = tasks;
            let mut last = None;
            for task in 0..tasks {
                cfg.task = task;
                last = Some(run_config(&inputs, &cfg, &calls));
            }
            (dir, last.unwrap())
        };
        let (dir, m) = split(0, 1);
        let val = m.val.as_ref().expect("a held-out manifest");
        assert!(m.train.complete && val.complete);
        assert_eq!(m.train.docs + val.docs, 600, "every document on one side");
        assert!(
            (30..=90).contains(&val.docs),
            "{} of 600 held out",
            val.docs
        );
        assert_eq!(
            m.train.skipped, 2,
            "skips counted once, on the training side"
        );
        let (train_docs, val_docs) = (all_docs(dir.path()), all_docs(&dir.path().join(VAL_DIR)));
        assert!(val_docs.iter().all(|d| !train_docs.contains(d)));
        assert!(val_docs
            .iter()
            .all(|d| d[0] == BOS && d[d.len() - 1] == EOS));

        // Another seed and a task split pick the same held-out documents.
        let (other, _) = split(9, 2);
        let mut a = val_docs.clone();
        let mut b = all_docs(&other.path().join(VAL_DIR));
        a.sort();
        b.sort();
        assert_eq!(a, b);

        // A rerun resumes; a rerun without a held-out fraction removes the stale directory.
        let before = calls.load(Ordering::Relaxed);
        let mut cfg = config(dir.path(), 0);
        cfg.val_fraction = 0.1;
        run_config(&inputs, &cfg, &calls);
        assert_eq!(calls.load(Ordering::Relaxed), before, "nothing re-encoded");
        cfg.val_fraction = 0.0;
        let m = run_config(&inputs, &cfg, &calls);
        assert!(m.val.is_none() && !dir.path().join(VAL_DIR).exists());
        assert_eq!(m.train.docs, 600);
    }

    #[test]
    fn round_trips_every_document_in_order_with_bos_and_eos() {
        let dir = tempfile::tempdir().unwrap();
        let m = run_with(dir.path(), 0, &AtomicUsize::new(0));
        assert!(
            m.complete && m.shards.len() > 2,
            "{} shards",
            m.shards.len()
        );
        assert_eq!((m.docs, m.skipped), (600, 2));
        assert_eq!(m.per_domain["d0.com"].docs, 200);
        let data = Dataset::open(dir.path()).unwrap();
        assert_eq!((data.docs(), data.tokens()), (m.docs, m.tokens));
        let all: Vec<String> = ["a.jsonl", "b.jsonl"]
            .iter()
            .flat_map(|n| texts(Path::new(n)))
            .collect();
        for (n, text) in all.iter().enumerate() {
            let ids = data.doc_tokens(n as u64).unwrap();
            assert_eq!(ids[0], BOS);
            assert_eq!(*ids.last().unwrap(), EOS);
            let body: Vec<u8> = ids[1..ids.len() - 1].iter().map(|&i| i as u8).collect();
            assert_eq!(String::from_utf8(body).unwrap(), *text);
        }
    }

    #[test]
    fn rerun_resumes_and_thread_count_does_not_change_bytes() {
        let one = tempfile::tempdir().unwrap();
        let many = tempfile::tempdir().unwrap();
        let calls = AtomicUsize::new(0);
        let pool = |n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
        };
        pool(1).install(|| run_with(one.path(), 5, &calls));
        pool(4).install(|| run_with(many.path(), 5, &calls));
        let first_calls = calls.load(Ordering::Relaxed);
        for name in crate::reader::list_shards(one.path()).unwrap() {
            let name = name.file_name().unwrap();
            assert_eq!(
                std::fs::read(one.path().join(name)).unwrap(),
                std::fs::read(many.path().join(name)).unwrap()
            );
        }
        let m = run_with(one.path(), 5, &calls);
        assert_eq!(
            calls.load(Ordering::Relaxed),
            first_calls,
            "finished inputs re-encoded"
        );
        assert!(m.complete);
        std::fs::remove_file(one.path().join(&m.shards[0].file)).unwrap();
        run_with(one.path(), 5, &calls);
        assert_eq!(
            calls.load(Ordering::Relaxed),
            first_calls + 300,
            "only input a redone"
        );
        assert!(Dataset::open(one.path()).is_ok());
    }

    #[test]
    fn seed_shuffles_documents_within_an_input() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        run_with(a.path(), 0, &AtomicUsize::new(0));
        run_with(b.path(), 3, &AtomicUsize::new(0));
        let (da, db) = (
            Dataset::open(a.path()).unwrap(),
            Dataset::open(b.path()).unwrap(),
        );
        let docs = |d: &Dataset| {
            (0..d.docs())
                .map(|n| d.doc_tokens(n).unwrap())
                .collect::<Vec<_>>()
        };
        let (mut xa, mut xb) = (docs(&da), docs(&db));
        assert_ne!(xa, xb);
        xa.sort();
        xb.sort();
        assert_eq!(xa, xb);
        assert_eq!(db.header().seed, 3);
    }

    #[test]
    fn stale_and_unfinished_directories_are_not_read_as_training_data() {
        let dir = tempfile::tempdir().unwrap();
        let calls = AtomicUsize::new(0);
        let two = run_with(dir.path(), 0, &calls);
        let one = run_on(&[PathBuf::from("in/a.jsonl")], dir.path(), 0, &calls);
        assert!(one.shards.len() < two.shards.len());
        let data = Dataset::open(dir.path()).unwrap();
        assert_eq!(data.docs(), 300, "shards of the dropped input must be gone");

        let extra = dir.path().join("99999-0000.shard");
        std::fs::copy(dir.path().join(&one.shards[0].file), &extra).unwrap();
        let err = Dataset::open(dir.path()).err().unwrap().to_string();
        assert!(
            err.contains("differ from those the manifest lists"),
            "{err}"
        );
        std::fs::remove_file(extra).unwrap();

        let mut unfinished = one.clone();
        unfinished.complete = false;
        unfinished.pending_inputs = vec!["in/b.jsonl".into()];
        unfinished.save(&dir.path().join("manifest.json")).unwrap();
        let err = Dataset::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("has not finished"), "{err}");
    }
}

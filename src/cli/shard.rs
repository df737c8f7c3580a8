//! `whale shard` (documents → token shards) and `whale shards inspect|verify|decode`.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context};
use shards::stage::{DocIn, DocIter, Encoder, StageConfig};
use shards::{Dataset, Shard};
use tokenizer::Tokenizer;

/// Encode every document with a tokenizer.json and write zstd token shards with an index and
/// checksums (format: shards/FORMAT.md). Each document becomes `[BOS] ids [EOS]` (see
/// --doc-specials); ids are uint16 when the vocabulary fits, else uint32. Writes
/// NNNNN-MMMM.shard per input file, .done/ markers and manifest.json; reruns skip finished inputs.
#[derive(clap::Args)]
pub struct Args {
    /// tokenizer.json (ours or any byte-level BPE one).
    #[arg(long)]
    tokenizer: PathBuf,
    /// Input: a directory (walked), a file or a glob of Parquet, JSONL or WARC/WET files.
    #[arg(long)]
    input: PathBuf,
    /// Output directory.
    #[arg(long)]
    output: PathBuf,
    /// Target shard size in MiB (compressed); a shard closes at the first document past it.
    #[arg(long, default_value_t = 256.0)]
    shard_mb: f64,
    /// Token ids per zstd chunk: the unit of random access and of checksums.
    #[arg(long, default_value_t = shards::writer::DEFAULT_CHUNK_TOKENS)]
    chunk_tokens: usize,
    /// zstd compression level.
    #[arg(long, default_value_t = shards::writer::DEFAULT_ZSTD_LEVEL)]
    zstd_level: i32,
    /// Special tokens around each document: `names` finds BOS and EOS among the tokenizer's
    /// special tokens by their usual names (`<｜begin▁of▁sentence｜>`, `<|begin_of_text|>`, `<s>`,
    /// `<|endoftext|>`, …); `template` takes those of the tokenizer.json's own post-processor
    /// (e.g. Llama-3 and DeepSeek LLM: BOS only), as HF's `add_special_tokens=True`; `none` adds
    /// nothing.
    #[arg(long, value_enum, default_value_t = DocSpecials::Names)]
    doc_specials: DocSpecials,
    /// Shuffle documents within each input file with this seed (0 keeps input order).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Hold out this fraction of documents (whole documents, chosen by a hash of their text, so
    /// duplicates stay on one side) as validation shards in OUTPUT/val/; `whale train --shards
    /// OUTPUT` then reports the held-out loss every `eval_every` steps.
    #[arg(long, default_value_t = 0.0)]
    val_fraction: f64,
    #[command(flatten)]
    split: super::split::Split,
    /// Print the manifest as JSON instead of one line.
    #[arg(long)]
    json: bool,
}

/// Where the BOS/EOS around each document come from (`--doc-specials`).
#[derive(Clone, Copy, clap::ValueEnum)]
enum DocSpecials {
    Names,
    Template,
    None,
}

/// The BOS and EOS ids `policy` puts around each document of `tok`.
fn doc_specials(
    tok: &Tokenizer,
    policy: DocSpecials,
) -> anyhow::Result<(Option<u32>, Option<u32>)> {
    Ok(match policy {
        DocSpecials::Names => (tok.bos_id(), tok.eos_id()),
        DocSpecials::None => (None, None),
        DocSpecials::Template => match tok.template_specials() {
            (before @ ([] | [_]), after @ ([] | [_])) => {
                (before.first().copied(), after.first().copied())
            }
            (before, after) => bail!(
                "the tokenizer's post-processor puts {before:?} before and {after:?} after a \
                 sequence, but shards hold at most one BOS and one EOS per document: use \
                 --doc-specials names or none"
            ),
        },
    })
}

/// Look into shard files.
#[derive(clap::Subcommand)]
pub enum ShardsCommand {
    /// Print a shard's header and statistics (or a directory's totals and per-shard lines).
    Inspect {
        /// A .shard file or a directory of them.
        path: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check every checksum and the index of every shard; exits non-zero naming each bad
    /// shard and chunk.
    Verify {
        /// A .shard file or a directory of them.
        path: PathBuf,
    },
    /// Print document N (0-based; across a directory, shards in name order) as text.
    Decode {
        /// A .shard file or a directory of them.
        path: PathBuf,
        /// Document number.
        n: u64,
        /// tokenizer.json the shards were written with (checked against their hash).
        #[arg(long, required_unless_present = "ids")]
        tokenizer: Option<PathBuf>,
        /// Print the token ids (JSON, BOS/EOS included) instead of text.
        #[arg(long)]
        ids: bool,
    },
}

pub fn run(args: Args) -> anyhow::Result<()> {
    ensure!(args.shard_mb > 0.0, "--shard-mb must be positive");
    let tok = Tokenizer::from_file(&args.tokenizer)?;
    let inputs = pipeline::io::list_inputs(&args.input)?;
    let cfg = StageConfig {
        output: args.output.clone(),
        shard_bytes: (args.shard_mb * (1u64 << 20) as f64) as u64,
        chunk_tokens: args.chunk_tokens,
        zstd_level: args.zstd_level,
        seed: args.seed,
        val_fraction: args.val_fraction,
        force: args.split.force,
        tasks: args.split.tasks,
        task: args.split.task,
    };
    let encode = |text: &str| tok.encode(text);
    let (bos_id, eos_id) = doc_specials(&tok, args.doc_specials)?;
    let enc = Encoder {
        vocab_size: u32::try_from(tok.vocab_size()).context("vocabulary too large")?,
        hash: tok.hash(),
        bos_id,
        eos_id,
        encode: &encode,
    };
    let shards::stage::Manifests { train: m, val } =
        shards::stage::run(&inputs, &cfg, &enc, &read_input).context("shard")?;
    if args.json {
        // The training manifest, with the held-out one under "val" when there is one.
        let mut out = serde_json::to_value(&m)?;
        if let Some(v) = &val {
            out["val"] = serde_json::to_value(v)?;
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let held_out = val
        .map(|v| {
            format!(
                "; held out {} docs, {} tokens in {} shards → {}",
                v.docs,
                v.tokens,
                v.shards.len(),
                cfg.output.join(shards::stage::VAL_DIR).display()
            )
        })
        .unwrap_or_default();
    println!(
        "shard: {} docs, {} tokens in {} shards ({}, {:.2}x vs raw, {:.2}x vs Megatron .bin/.idx), \
         {} records skipped{} → {}{held_out}",
        m.docs,
        m.tokens,
        m.shards.len(),
        m.dtype,
        m.compression_ratio,
        m.megatron_bytes as f64 / m.bytes.max(1) as f64,
        m.skipped,
        if m.complete { "" } else { " (other tasks pending)" },
        args.output.display()
    );
    Ok(())
}

/// Documents of one input file, as the shard stage wants them.
fn read_input(path: &Path) -> anyhow::Result<DocIter> {
    Ok(Box::new(pipeline::io::read_documents(path).map(|item| {
        item.map(|d| DocIn {
            text: d.text,
            source: d.source,
            domain: d.domain,
        })
        .map_err(|skip| skip.to_string())
    })))
}

pub fn run_shards(cmd: ShardsCommand) -> anyhow::Result<()> {
    match cmd {
        ShardsCommand::Inspect { path, json } => inspect(&path, json),
        ShardsCommand::Verify { path } => verify(&path),
        ShardsCommand::Decode {
            path,
            n,
            tokenizer,
            ids,
        } => decode(&path, n, tokenizer.as_deref(), ids),
    }
}

fn shard_paths(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if path.is_dir() {
        let paths = shards::list_shards(path)?;
        ensure!(!paths.is_empty(), "no .shard files in {}", path.display());
        Ok(paths)
    } else {
        Ok(vec![path.to_path_buf()])
    }
}

fn open_dataset(path: &Path) -> anyhow::Result<Dataset> {
    let opened = shard_paths(path)?
        .iter()
        .map(|p| Shard::open(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Dataset::from_shards(opened)
}

fn inspect(path: &Path, json: bool) -> anyhow::Result<()> {
    let data = open_dataset(path)?;
    let h = data.header();
    let rows: Vec<serde_json::Value> = data
        .shards()
        .iter()
        .map(|s| {
            let stored: u64 = s.chunks().iter().map(|c| c.stored_len).sum();
            serde_json::json!({
                "file": s.path().display().to_string(),
                "docs": s.docs(),
                "tokens": s.tokens(),
                "chunks": s.chunks().len(),
                "bytes": s.file_bytes(),
                "compression_ratio": (s.tokens() * h.dtype.width() as u64) as f64 / stored.max(1) as f64,
            })
        })
        .collect();
    let bytes: u64 = data.shards().iter().map(|s| s.file_bytes()).sum();
    let raw = data.tokens() * h.dtype.width() as u64;
    let summary = serde_json::json!({
        "version": shards::format::VERSION,
        "dtype": format!("uint{}", h.dtype.width() * 8),
        "vocab_size": h.vocab_size,
        "tokenizer_hash": format!("{:016x}", h.tokenizer_hash),
        "seed": h.seed,
        "bos_id": h.bos_id,
        "eos_id": h.eos_id,
        "shards": rows.len(),
        "docs": data.docs(),
        "tokens": data.tokens(),
        "bytes": bytes,
        "raw_bytes": raw,
        "compression_ratio": raw as f64 / bytes.max(1) as f64,
        "megatron_bytes": shards::manifest::megatron_bytes(data.tokens(), data.docs(), h.vocab_size),
        "mean_doc_tokens": data.tokens() as f64 / data.docs().max(1) as f64,
        "files": rows,
    });
    if json {
        return emit(&(serde_json::to_string_pretty(&summary)? + "\n"));
    }
    let mut out = String::new();
    let opt = |v: Option<u32>| v.map_or("none".to_string(), |v| v.to_string());
    writeln!(
        out,
        "format v{}  dtype {}  vocab {}  tokenizer {:016x}  seed {}  bos {}  eos {}",
        shards::format::VERSION,
        summary["dtype"].as_str().unwrap_or_default(),
        h.vocab_size,
        h.tokenizer_hash,
        h.seed,
        opt(h.bos_id),
        opt(h.eos_id)
    )?;
    for r in &rows {
        writeln!(
            out,
            "  {}: {} docs, {} tokens, {} chunks, {} bytes ({:.2}x)",
            r["file"].as_str().unwrap_or_default(),
            r["docs"],
            r["tokens"],
            r["chunks"],
            r["bytes"],
            r["compression_ratio"].as_f64().unwrap_or_default()
        )?;
    }
    writeln!(
        out,
        "total: {} shards, {} docs, {} tokens ({:.1} per doc), {} bytes, {:.2}x vs raw {}",
        rows.len(),
        data.docs(),
        data.tokens(),
        summary["mean_doc_tokens"].as_f64().unwrap_or_default(),
        bytes,
        summary["compression_ratio"].as_f64().unwrap_or_default(),
        summary["dtype"].as_str().unwrap_or_default()
    )?;
    emit(&out)
}

fn verify(path: &Path) -> anyhow::Result<()> {
    let reports = shards::verify::verify_all(&shard_paths(path)?)?;
    let mut out = String::new();
    let mut bad = 0;
    for r in &reports {
        if r.ok() {
            writeln!(
                out,
                "ok {}: {} chunks, {} tokens, {} docs",
                r.path.display(),
                r.chunks,
                r.tokens,
                r.docs
            )?;
        } else {
            bad += 1;
            for e in &r.errors {
                writeln!(out, "BAD {e}")?;
            }
        }
    }
    if bad > 0 {
        emit(&out)?;
        bail!("{bad} of {} shards failed verification", reports.len());
    }
    writeln!(out, "verify: {} shards ok", reports.len())?;
    emit(&out)
}

fn decode(path: &Path, n: u64, tokenizer: Option<&Path>, as_ids: bool) -> anyhow::Result<()> {
    let data = open_dataset(path)?;
    let ids = data.doc_tokens(n)?;
    if as_ids {
        return emit(&(serde_json::to_string(&ids)? + "\n"));
    }
    let tok = Tokenizer::from_file(tokenizer.context("--tokenizer is required to print text")?)?;
    let h = data.header();
    ensure!(
        tok.hash() == h.tokenizer_hash,
        "tokenizer hash {:016x} does not match the shards' {:016x}",
        tok.hash(),
        h.tokenizer_hash
    );
    let mut body = &ids[..];
    if h.bos_id.is_some() && body.first().copied() == h.bos_id {
        body = &body[1..];
    }
    if h.eos_id.is_some() && body.last().copied() == h.eos_id {
        body = &body[..body.len() - 1];
    }
    emit_bytes(&tok.decode(body))
}

/// Writes `text` to stdout; a closed pipe (`| head`) ends the output quietly instead of panicking.
fn emit(text: &str) -> anyhow::Result<()> {
    emit_bytes(text.as_bytes())
}

fn emit_bytes(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

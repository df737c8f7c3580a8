//! `whale tokenizer train|encode|decode|inspect`: byte-level BPE with the DeepSeek-V3
//! pre-tokenizer, HF tokenizer.json in and out. The work is in the `tokenizer` crate; this file
//! reads documents (via `pipeline::io`) and prints.

use anyhow::{bail, Context, Result};
use pipeline::io::{list_inputs, read_documents, Skip, SkipCounts, SkipKind};
use rayon::prelude::*;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use tokenizer::fit::{fit, TrainSettings};
use tokenizer::Tokenizer;

/// Train, use and inspect byte-level BPE tokenizers (HF tokenizer.json).
#[derive(clap::Subcommand)]
pub enum TokenizerCommand {
    /// Learn a byte-level BPE from documents; writes tokenizer.json and manifest.json beside it.
    Train(TrainArgs),
    /// Print the ids of a text (no BOS/EOS added; special tokens in the text are recognised).
    Encode(EncodeArgs),
    /// Write the bytes of token ids to stdout.
    Decode(DecodeArgs),
    /// Summarise a tokenizer.json: sizes, special tokens, BOS/EOS, pre-tokenizer, hash.
    Inspect(InspectArgs),
}

/// `whale tokenizer train`.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// Documents: directories, globs or files (Parquet/JSONL/WARC by extension, as every stage
    /// reads them); plain `.txt` files named directly are read one document per line.
    #[arg(long, required = true, num_args = 1..)]
    input: Vec<PathBuf>,
    /// Where to write the tokenizer: a `.json` file, or a directory (existing, or any name not
    /// ending in `.json`) that gets `tokenizer.json`; manifest.json is written beside it.
    #[arg(long)]
    out: PathBuf,
    /// Settings file (see configs/tokenizer.toml); flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Final vocabulary size, special tokens included (default 32000).
    #[arg(long)]
    vocab_size: Option<usize>,
    /// Never merge a pair seen fewer times than this (default 2).
    #[arg(long)]
    min_frequency: Option<u64>,
    /// Special tokens, comma-separated, given ids 0.. in order (default: DeepSeek's BOS, EOS, pad).
    #[arg(long, value_delimiter = ',')]
    special_tokens: Option<Vec<String>>,
    /// Pre-tokenizer preset: deepseek-v3 (default) or gpt2.
    #[arg(long)]
    pre_tokenizer: Option<String>,
    /// Retrain even if --out and its manifest already exist.
    #[arg(long)]
    force: bool,
    /// Print the summary as JSON (and no progress bars).
    #[arg(long)]
    json: bool,
}

/// `whale tokenizer encode`.
#[derive(clap::Args)]
pub struct EncodeArgs {
    /// tokenizer.json to use (ours or any byte-level BPE one, e.g. DeepSeek-V3's).
    #[arg(long)]
    tokenizer: PathBuf,
    /// Text to encode; without it and without --input, stdin is read (invalid UTF-8 is replaced
    /// by U+FFFD).
    #[arg(long, conflicts_with = "input")]
    text: Option<String>,
    /// Encode a corpus instead of one text: directories, globs or files, read as `tokenizer
    /// train` reads them (Parquet/JSONL/WARC by extension, `.txt` one document per line).
    #[arg(long, num_args = 1.., requires = "output")]
    input: Vec<PathBuf>,
    /// With --input: the JSONL file to write, one `{"id": …, "ids": […]}` line per document in
    /// input order (same bytes for any thread count; written to a temporary name, then renamed).
    #[arg(long, requires = "input")]
    output: Option<PathBuf>,
    /// Add the special tokens of the tokenizer.json's own post-processor (e.g. Llama-3's BOS), as
    /// HF's `encode(text, add_special_tokens=True)`; without it, none are added.
    #[arg(long)]
    add_special_tokens: bool,
    /// Print one `id<TAB>token bytes` line per token instead of the ids on one line (one text).
    #[arg(long, conflicts_with = "input")]
    pieces: bool,
    /// With --input: print the summary as JSON.
    #[arg(long, requires = "input")]
    json: bool,
}

/// `whale tokenizer decode`.
#[derive(clap::Args)]
pub struct DecodeArgs {
    /// tokenizer.json to use.
    #[arg(long)]
    tokenizer: PathBuf,
    /// Token ids; without them, whitespace-separated ids are read from stdin.
    ids: Vec<u32>,
}

/// `whale tokenizer inspect`.
#[derive(clap::Args)]
pub struct InspectArgs {
    /// tokenizer.json to inspect.
    #[arg(long)]
    tokenizer: PathBuf,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: TokenizerCommand) -> Result<()> {
    match cmd {
        TokenizerCommand::Train(args) => train(args),
        TokenizerCommand::Encode(args) => encode(args),
        TokenizerCommand::Decode(args) => decode(args),
        TokenizerCommand::Inspect(args) => inspect(args),
    }
}

fn train(args: TrainArgs) -> Result<()> {
    let mut settings = match &args.config {
        Some(path) => TrainSettings::load(path)?,
        None => TrainSettings::default(),
    };
    if let Some(v) = args.vocab_size {
        settings.vocab_size = v;
    }
    if let Some(v) = args.min_frequency {
        settings.min_frequency = v;
    }
    if let Some(v) = args.special_tokens.clone() {
        settings.special_tokens = v;
    }
    if let Some(v) = args.pre_tokenizer.clone() {
        settings.pre_tokenizer = v;
    }
    let out = tokenizer_path(&args.out);
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let manifest_path = dir.join("manifest.json");
    if !args.force && out.exists() && manifest_path.exists() {
        println!(
            "tokenizer: {} already trained (manifest.json present); --force retrains",
            out.display()
        );
        return Ok(());
    }
    let files = input_files(&args.input)?;
    let mut skips = SkipCounts::default();
    let docs = files.iter().flat_map(|path| documents(path));
    let docs = docs.filter_map(|item| match item {
        Ok((_, text)) => Some(text),
        Err(skip) => {
            skips.record(&skip);
            None
        }
    });
    let (json, report) = fit(docs, &settings, !args.json)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    write_atomic(&out, json.as_bytes())?;
    let tok = Tokenizer::from_file(&out)?;
    let manifest = serde_json::json!({
        "stage": "tokenizer",
        "tool_version": env!("CARGO_PKG_VERSION"),
        "config": settings,
        "inputs": files,
        "counts": {
            "docs_in": report.docs,
            "bytes_in": report.bytes,
            "skipped": skips.to_named(),
            "distinct_pieces": report.distinct_pieces,
            "merges": report.merges,
            "vocab_size": tok.vocab_size(),
        },
        "tokenizer": {
            "path": out,
            "hash": format!("{:016x}", tok.hash()),
            "bos_id": tok.bos_id(),
            "eos_id": tok.eos_id(),
        },
        "seconds": {"count": report.count_seconds, "merge": report.merge_seconds},
    });
    write_atomic(
        &manifest_path,
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&manifest)?);
    } else {
        println!(
            "tokenizer: {} docs ({:.1} MB, {} skipped) → {} merges, vocab {} (hash {:016x}) in {:.1}s → {}",
            report.docs,
            report.bytes as f64 / 1e6,
            skips.total(),
            report.merges,
            tok.vocab_size(),
            tok.hash(),
            report.count_seconds + report.merge_seconds,
            out.display()
        );
    }
    Ok(())
}

/// The file `--out` names: itself when it ends in `.json` and is not a directory, else
/// `tokenizer.json` inside it, so that `--out DIR` works as every other stage's output does
/// (and as `--tokenizer DIR` reads it back).
fn tokenizer_path(out: &Path) -> PathBuf {
    if out.is_dir() || out.extension().is_none_or(|e| e != "json") {
        out.join("tokenizer.json")
    } else {
        out.to_path_buf()
    }
}

/// The files named by `--input` specs: `.txt` files as named, the rest as every stage lists them.
fn input_files(specs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for spec in specs {
        if spec.extension().is_some_and(|e| e == "txt") && spec.is_file() {
            files.push(spec.clone());
        } else {
            files.extend(list_inputs(spec)?);
        }
    }
    if files.is_empty() {
        bail!("no input files found in {specs:?}");
    }
    Ok(files)
}

/// One input document: its id (the reader's, or `FILE:OFFSET` for a `.txt` line) and its text.
type Text = (String, String);

/// The documents of one input file: pipeline readers for known formats, lines of `.txt` files
/// (a line that is not UTF-8 is skipped and counted, unlike HF, which rejects the whole file).
fn documents(path: &Path) -> Box<dyn Iterator<Item = Result<Text, Skip>>> {
    if path.extension().is_none_or(|e| e != "txt") {
        return Box::new(read_documents(path).map(|item| item.map(|doc| (doc.id, doc.text))));
    }
    let file = match std::fs::File::open(path) {
        Ok(f) => BufReader::with_capacity(1 << 20, f),
        Err(e) => {
            let skip = Skip::new(SkipKind::Unreadable, path, 0, e.to_string());
            return Box::new(std::iter::once(Err(skip)));
        }
    };
    let path = path.to_path_buf();
    let mut offset = 0u64;
    let mut reader = Some(file);
    Box::new(std::iter::from_fn(move || {
        let mut line = Vec::new();
        match reader.as_mut()?.read_until(b'\n', &mut line) {
            Ok(0) => None,
            Ok(n) => {
                let at = offset;
                offset += n as u64;
                Some(
                    String::from_utf8(line)
                        .map(|text| (format!("{}:{at}", path.display()), text))
                        .map_err(|e| Skip::new(SkipKind::InvalidUtf8, &path, at, e.to_string())),
                )
            }
            Err(e) => {
                reader = None;
                Some(Err(Skip::new(
                    SkipKind::Unreadable,
                    &path,
                    offset,
                    e.to_string(),
                )))
            }
        }
    }))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

fn encode(args: EncodeArgs) -> Result<()> {
    let tok = Tokenizer::from_file(&args.tokenizer)?;
    let encode = |text: &str| {
        if args.add_special_tokens {
            tok.encode_with_specials(text)
        } else {
            tok.encode(text)
        }
    };
    if let Some(output) = &args.output {
        return encode_corpus(&args.input, output, &encode, args.json);
    }
    let text = match args.text {
        Some(t) => t,
        None => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("reading stdin")?;
            String::from_utf8_lossy(&bytes).into_owned()
        }
    };
    let ids = encode(&text);
    let mut out = std::io::stdout().lock();
    if args.pieces {
        for id in ids {
            writeln!(out, "{id}\t{}", tok.decode(&[id]).escape_ascii())?;
        }
    } else {
        let line: Vec<String> = ids.iter().map(u32::to_string).collect();
        writeln!(out, "{}", line.join(" "))?;
    }
    Ok(())
}

/// Documents encoded together: enough to keep every core busy, few enough to bound memory.
const ENCODE_BATCH: usize = 2048;
/// Skipped records named on stderr before the rest are only counted.
const LOGGED_SKIPS: u64 = 10;

/// `tokenizer encode --input … --output ids.jsonl`: every document of every input, in input
/// order, encoded in parallel batches.
fn encode_corpus(
    specs: &[PathBuf],
    output: &Path,
    encode: &(dyn Fn(&str) -> Vec<u32> + Sync),
    json: bool,
) -> Result<()> {
    let files = input_files(specs)?;
    let tmp = pipeline::io::tmp_path(output);
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let bar = pipeline::progress::bar(files.len() as u64, "encode", "files");
    let (mut docs, mut tokens, mut bytes) = (0u64, 0u64, 0u64);
    let mut skips = SkipCounts::default();
    let mut batch: Vec<Text> = Vec::with_capacity(ENCODE_BATCH);
    let mut line = String::new();
    let mut flush =
        |batch: &mut Vec<Text>, out: &mut std::io::BufWriter<std::fs::File>| -> Result<()> {
            let encoded: Vec<Vec<u32>> = batch.par_iter().map(|(_, text)| encode(text)).collect();
            for ((id, text), ids) in batch.iter().zip(&encoded) {
                line.clear();
                line.push_str("{\"id\":");
                line.push_str(&serde_json::to_string(id)?);
                line.push_str(",\"ids\":[");
                for (i, t) in ids.iter().enumerate() {
                    if i > 0 {
                        line.push(',');
                    }
                    write!(line, "{t}").expect("writing to a String");
                }
                line.push_str("]}\n");
                out.write_all(line.as_bytes())?;
                docs += 1;
                tokens += ids.len() as u64;
                bytes += text.len() as u64;
            }
            batch.clear();
            Ok(())
        };
    for path in &files {
        for item in documents(path) {
            match item {
                Ok(doc) => batch.push(doc),
                Err(skip) => {
                    skips.record(&skip);
                    if skips.total() <= LOGGED_SKIPS {
                        eprintln!("tokenizer encode: skipped a record: {skip}");
                    }
                }
            }
            if batch.len() == ENCODE_BATCH {
                flush(&mut batch, &mut out)?;
            }
        }
        bar.inc(1);
    }
    flush(&mut batch, &mut out)?;
    bar.finish_and_clear();
    out.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, output).with_context(|| format!("renaming to {}", output.display()))?;
    let summary = serde_json::json!({
        "files": files.len(), "docs": docs, "tokens": tokens, "bytes": bytes,
        "skipped": skips.to_named(), "output": output,
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "tokenizer encode: {docs} docs ({:.1} MB) from {} files → {tokens} tokens ({:.2} bytes/token), {} records skipped → {}",
            bytes as f64 / 1e6,
            files.len(),
            bytes as f64 / tokens.max(1) as f64,
            skips.total(),
            output.display()
        );
    }
    Ok(())
}

fn decode(args: DecodeArgs) -> Result<()> {
    let tok = Tokenizer::from_file(&args.tokenizer)?;
    let ids = if args.ids.is_empty() {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading stdin")?;
        text.split_whitespace()
            .map(|s| {
                s.parse::<u32>()
                    .with_context(|| format!("{s:?} is not a token id"))
            })
            .collect::<Result<Vec<u32>>>()?
    } else {
        args.ids
    };
    if let Some(bad) = ids.iter().find(|&&id| id as usize >= tok.vocab_size()) {
        bail!(
            "token id {bad} is outside the vocabulary (size {})",
            tok.vocab_size()
        );
    }
    std::io::stdout().lock().write_all(&tok.decode(&ids))?;
    Ok(())
}

fn inspect(args: InspectArgs) -> Result<()> {
    let tok = Tokenizer::from_file(&args.tokenizer)?;
    let specials: Vec<_> = tok
        .added_tokens()
        .iter()
        .map(|t| serde_json::json!({"id": t.id, "content": t.content, "special": t.special}))
        .collect();
    let summary = serde_json::json!({
        "path": args.tokenizer,
        "hash": format!("{:016x}", tok.hash()),
        "vocab_size": tok.vocab_size(),
        "model_vocab": tok.model_vocab_len(),
        "added_tokens": specials,
        "bos_id": tok.bos_id(),
        "eos_id": tok.eos_id(),
        "pre_tokenizer": tok.pre_tokenizer().name(),
        "normalizes": tok.normalizes(),
        "template": {"before": tok.template_specials().0, "after": tok.template_specials().1},
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!("tokenizer   {}", args.tokenizer.display());
    println!("hash        {:016x}", tok.hash());
    println!(
        "vocab size  {} ({} model + added)",
        tok.vocab_size(),
        tok.model_vocab_len()
    );
    println!("pre-tok     {}", tok.pre_tokenizer().name());
    println!("normalizes  {}", tok.normalizes());
    println!("bos / eos   {:?} / {:?}", tok.bos_id(), tok.eos_id());
    let (before, after) = tok.template_specials();
    println!("template    {before:?} $A {after:?}");
    for t in tok.added_tokens() {
        let kind = if t.special { "special" } else { "added" };
        println!("{kind:<11} {:>7}  {}", t.id, t.content);
    }
    Ok(())
}

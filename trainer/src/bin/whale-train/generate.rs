//! `whale generate CKPT --tokenizer tokenizer.json --prompt TEXT`: continue prompts with a
//! trained checkpoint, streaming the text to stdout as it is decoded, with MLA's latent cache and
//! optionally MTP speculative decoding. A one-line summary goes to stderr.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use trainer::config::AttentionKind;
use trainer::generate::sampling::SamplingConfig;
use trainer::generate::text_stream::TextStream;
use trainer::generate::{generate, GenerateOptions, Generation};
use trainer::info::model_info;
use trainer::kv_cache::Layout;

use crate::checkpoint_arg;

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory (RUN/checkpoints/step-N), or a run directory for its newest one.
    checkpoint: PathBuf,
    /// The tokenizer.json the model was trained with (prompts start with its BOS, decoding stops
    /// at its EOS).
    #[arg(long, required_unless_present = "prompt_ids")]
    tokenizer: Option<PathBuf>,
    /// Text to continue.
    #[arg(
        long,
        required_unless_present_any = ["prompts", "prompt_ids"],
        conflicts_with_all = ["prompts", "prompt_ids"]
    )]
    prompt: Option<String>,
    /// File of prompts, one per line; each is continued on its own line of output.
    #[arg(long, conflicts_with = "prompt_ids")]
    prompts: Option<PathBuf>,
    /// A prompt given as comma-separated token ids, used as they are (no BOS added): to compare
    /// with other implementations, with or without a tokenizer.
    #[arg(long, value_delimiter = ',')]
    prompt_ids: Option<Vec<u32>>,
    /// New tokens per prompt at most (generation also stops at EOS and at the model's
    /// max_seq_len).
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Sampling temperature; 0 is greedy decoding.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Sample only among the k most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Sample only among the most likely tokens that make up this much probability.
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Seed of the sampler: the same seed gives the same text.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// `mtp`: the MTP module drafts the token after next and the main model verifies both in one
    /// pass (greedy only; the text is exactly greedy decoding's). `none`: one pass per token.
    #[arg(long, default_value = "none")]
    speculative: String,
    /// What the attention cache keeps per token and layer: `latent` (MLA's c_kv and RoPE key, with
    /// absorbed attention) or `up-projected` (per-head keys and values, for comparison). Models
    /// with grouped-query attention always cache their KV heads.
    #[arg(long, default_value = "latent")]
    cache: String,
    #[command(flatten)]
    runtime: checkpoint_arg::Runtime,
    /// Instead of streaming text, print one JSON object per prompt (prompt ids, generated ids,
    /// text when there is a tokenizer, timing, cache bytes, drafts accepted).
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let speculative = match args.speculative.as_str() {
        "none" => false,
        "mtp" => true,
        other => bail!("unknown --speculative {other:?} (expected none or mtp)"),
    };
    if args.temperature < 0.0 || !(args.top_p > 0.0 && args.top_p <= 1.0) {
        bail!("--temperature must be >= 0 and --top-p in (0, 1]");
    }
    if speculative && args.temperature != 0.0 {
        bail!("--speculative mtp decodes greedily: leave out --temperature (or pass 0)");
    }
    let layout: Layout = args.cache.parse()?;
    let (dir, _vs, model) = checkpoint_arg::load(&args.checkpoint, &args.runtime)?;
    let tok = match &args.tokenizer {
        Some(path) => Some(checkpoint_arg::tokenizer_for(
            path,
            &dir,
            model.cfg.vocab_size,
        )?),
        None => None,
    };
    let prompts: Vec<Vec<u32>> = match (&args.prompt, &args.prompts, &args.prompt_ids, &tok) {
        (_, _, Some(ids), _) => vec![ids.clone()],
        (Some(text), _, _, Some(tok)) => vec![encode(tok, text)],
        (None, Some(file), _, Some(tok)) => std::fs::read_to_string(file)
            .with_context(|| format!("reading prompts from {}", file.display()))?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| encode(tok, l))
            .collect(),
        _ => bail!("pass --prompt TEXT or --prompts FILE with --tokenizer, or --prompt-ids"),
    };
    let opts = GenerateOptions {
        max_tokens: args.max_tokens,
        sampling: SamplingConfig {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            seed: args.seed,
        },
        eos: tok.as_ref().and_then(|t| t.eos_id()),
        vocab_limit: tok.as_ref().map(|t| t.vocab_size()),
        speculative,
        layout,
    };
    let mut stdout = std::io::stdout().lock();
    let mut total = Generation::default();
    for (i, ids) in prompts.iter().enumerate() {
        let mut stream = TextStream::default();
        let mut failed = None;
        let g = generate(&model, ids, &opts, i as u64, &mut |token| {
            let (Some(tok), false) = (&tok, args.json) else {
                return;
            };
            let text = stream.push(&tok.decode(&[token]));
            if let Err(e) = write!(stdout, "{text}").and_then(|_| stdout.flush()) {
                failed.get_or_insert(e);
            }
        })
        .with_context(|| format!("prompt {}", i + 1))?;
        if let Some(e) = failed {
            return Err(e).context("writing to stdout");
        }
        if args.json {
            let text = tok
                .as_ref()
                .map(|t| String::from_utf8_lossy(&t.decode(&g.tokens)).into_owned());
            let line = serde_json::json!({ "prompt_ids": ids, "text": text, "generation": g });
            writeln!(stdout, "{line}")?;
        } else {
            writeln!(stdout, "{}", stream.finish())?;
        }
        total.prompt_tokens += g.prompt_tokens;
        total.tokens.extend(g.tokens);
        total.seconds += g.seconds;
        total.prefill_seconds += g.prefill_seconds;
        total.cache_bytes = total.cache_bytes.max(g.cache_bytes);
        total.full_kv_bytes = total.full_kv_bytes.max(g.full_kv_bytes);
        total.cache_positions = total.cache_positions.max(g.cache_positions);
        total.drafts += g.drafts;
        total.accepted += g.accepted;
    }
    // Grouped-query attention caches its KV heads whatever --cache says.
    let cache = match model.cfg.attention {
        AttentionKind::Mla => args.cache.clone(),
        AttentionKind::Gqa => format!("{} K/V", model_info(&model.cfg, 1).attention),
    };
    eprintln!("{}", summary(prompts.len(), &cache, &total));
    Ok(())
}

/// The ids of a text prompt: BOS (when the tokenizer has one), then the text's.
fn encode(tok: &tokenizer::Tokenizer, text: &str) -> Vec<u32> {
    tok.bos_id().into_iter().chain(tok.encode(text)).collect()
}

fn summary(prompts: usize, layout: &str, g: &Generation) -> String {
    let kib = |b: i64| b as f64 / 1024.0;
    let per_token = |b: i64| b / g.cache_positions.max(1);
    let drafts = if g.drafts > 0 {
        format!(
            ", MTP drafts accepted {}/{} ({:.1}%)",
            g.accepted,
            g.drafts,
            100.0 * g.accepted as f64 / g.drafts as f64
        )
    } else {
        String::new()
    };
    format!(
        "generate: {prompts} prompt(s), {} tokens in {:.2} s (prefill {:.3} s, decoding {:.1} \
         tokens/s), cache {:.1} KiB {layout} ({} B/token) vs {:.1} KiB multi-head K/V ({} \
         B/token){drafts}",
        g.tokens.len(),
        g.seconds,
        g.prefill_seconds,
        g.decode_tokens_per_second(),
        kib(g.cache_bytes),
        per_token(g.cache_bytes),
        kib(g.full_kv_bytes),
        per_token(g.full_kv_bytes),
    )
}

//! Language of each line of a JSONL file, for `scripts/bench-extract langid`: reads `{"text"}`
//! objects from the file given, identifies each with the filter's language id (the code `whale
//! filter` runs) on one thread, writes `{"lang", "language_score"}` per line to stdout and the
//! identification time to stderr as JSON.
//!
//! `cargo run --example lang_id -- docs.jsonl`

use std::io::BufRead;
use std::time::Instant;

use pipeline::filter::lang::LangId;

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: lang_id DOCS.jsonl"))?;
    let mut texts = Vec::new();
    for (i, line) in std::io::BufReader::new(std::fs::File::open(&path)?)
        .lines()
        .enumerate()
    {
        let value: serde_json::Value =
            serde_json::from_str(&line?).map_err(|e| anyhow::anyhow!("{path}:{}: {e}", i + 1))?;
        let text = value["text"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("{path}:{}: no string `text`", i + 1))?;
        texts.push(text.to_string());
    }
    let id = LangId::default();
    let start = Instant::now();
    let guesses: Vec<_> = texts.iter().map(|t| id.identify(t)).collect();
    let seconds = start.elapsed().as_secs_f64();
    for g in guesses {
        println!(
            "{}",
            serde_json::json!({ "lang": g.lang, "language_score": g.score })
        );
    }
    eprintln!(
        "{}",
        serde_json::json!({ "docs": texts.len(), "seconds": seconds })
    );
    Ok(())
}

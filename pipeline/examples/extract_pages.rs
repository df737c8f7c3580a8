//! Main text of saved pages, for `scripts/bench-extract`: reads every `*.html` / `*.html.gz` in
//! a directory, decodes it (charset detection as for WARC records) and extracts its text on one
//! thread, writing `{"<file stem>": {"articleBody": text}}` — the article-extraction benchmark's
//! prediction format — to stdout, and the extraction time to stderr as JSON.
//!
//! `cargo run --example extract_pages -- DIR [main-content|full-text] [URLS.json]`
//!
//! URLS.json (`{"<file stem>": {"url": …}}`, e.g. the benchmark's ground-truth file, of which
//! only `url` is read) gives each page the URL it was served from, as a WARC record does.

use std::io::Read;
use std::time::Instant;

use pipeline::extract::{charset, TextMode};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: extract_pages DIR [MODE]"))?;
    let mode: TextMode = match args.next() {
        Some(m) => serde_json::from_value(serde_json::Value::String(m))?,
        None => TextMode::default(),
    };
    let urls: serde_json::Value = match args.next() {
        Some(path) => serde_json::from_slice(&std::fs::read(&path)?)
            .map_err(|e| anyhow::anyhow!("{path}: {e}"))?,
        None => serde_json::Value::Null,
    };
    let mut pages = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let Some(stem) = name.strip_suffix(".html.gz").or(name.strip_suffix(".html")) else {
            continue;
        };
        let mut bytes = std::fs::read(&path)?;
        if name.ends_with(".gz") {
            let mut plain = Vec::new();
            flate2::read::MultiGzDecoder::new(&bytes[..])
                .read_to_end(&mut plain)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            bytes = plain;
        }
        pages.push((stem.to_string(), bytes));
    }
    pages.sort();
    let start = Instant::now();
    let mut out = serde_json::Map::new();
    for (id, bytes) in &pages {
        let url = urls[id.as_str()]["url"].as_str().unwrap_or("");
        let html = charset::decode_page(bytes, "", url).text;
        let text = mode.text(&html);
        out.insert(id.clone(), serde_json::json!({ "articleBody": text }));
    }
    let seconds = start.elapsed().as_secs_f64();
    println!("{}", serde_json::Value::Object(out));
    eprintln!(
        "{}",
        serde_json::json!({ "pages": pages.len(), "seconds": seconds })
    );
    Ok(())
}

//! Runs each filter rule set, as whale's defaults resolve it for one language, over a JSONL file
//! of `{"id", "text"}` documents, one rule set at a time, and prints every document's decisions
//! as JSON lines plus one timing line per rule set on stderr. `scripts/bench-filter` compares
//! these with datatrove's decisions on the same documents and times both.
//!
//! Usage: filter_rules [--lang L] DOCS.jsonl > decisions.jsonl 2> timings.jsonl
//!        filter_rules [--lang L] --words [--every-doc] DOCS.jsonl > words.jsonl   (each document's words)
//!        filter_rules [--lang L] --rules                            (the rule set, as JSON)
//! The language defaults to English; for any other, only the documents whale's language id
//! calls that language are judged (a JSON line on stderr counts them), unless `--every-doc`
//! (before the file) says to take every document as that language (`scripts/fuzz-words`).

use std::io::{BufRead, Write};
use std::time::Instant;

use bumpalo::Bump;
use pipeline::filter::c4::C4Outcome;
use pipeline::filter::config::FilterConfig;
use pipeline::filter::lang::LangId;
use pipeline::filter::text::Ctx;

/// A rule set as the benchmark runs it: text → (decision, C4's rewritten text).
type Rule<'a> = &'a dyn Fn(&str) -> (String, Option<String>);

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let lang = match args.iter().position(|a| a == "--lang") {
        Some(at) => {
            args.remove(at);
            args.remove(at)
        }
        None => "en".to_string(),
    };
    let (base, mut per_lang) = FilterConfig::default().resolve()?;
    let rules = per_lang.remove(&lang).unwrap_or(base);
    if args.first().is_some_and(|a| a == "--rules") {
        println!("{}", serde_json::to_string(&rules)?);
        return Ok(());
    }
    let words_only = args.first().is_some_and(|a| a == "--words");
    let path = args
        .last()
        .expect("usage: filter_rules [--lang L] [--words] DOCS.jsonl");
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut docs: Vec<(String, String)> = Vec::new();
    for line in file.lines() {
        let v: serde_json::Value = serde_json::from_str(&line?)?;
        docs.push((
            v["id"].as_str().unwrap_or("").to_string(),
            v["text"].as_str().unwrap_or("").to_string(),
        ));
    }
    let every_doc = args.iter().any(|a| a == "--every-doc");
    if lang != "en" && !every_doc {
        let id = LangId::default();
        let before = docs.len();
        docs.retain(|(_, text)| id.identify(text).lang == lang);
        eprintln!(
            "{}",
            serde_json::json!({"identified_as": lang, "docs": docs.len(), "of": before})
        );
    }
    if words_only {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for (id, text) in &docs {
            let (spill, mut words) = (Bump::new(), Vec::new());
            pipeline::filter::words::split_words(text, &lang, &spill, &mut words);
            writeln!(out, "{}", serde_json::json!({"id": id, "words": words}))?;
        }
        return Ok(());
    }
    let (rep, qual, c4, fw) = (
        rules.gopher_repetition,
        rules.gopher_quality,
        rules.c4,
        rules.fineweb,
    );
    let lang = lang.as_str();
    let mut results: Vec<serde_json::Map<String, serde_json::Value>> =
        vec![serde_json::Map::new(); docs.len()];
    let keep = |r: Option<String>| r.unwrap_or_else(|| "keep".into());
    let enabled = [rep.enabled, qual.enabled, c4.enabled, fw.enabled];
    let rules: [(&str, Rule); 4] = [
        ("gopher_repetition", &|t| {
            (keep(rep.check(&Ctx::new(t, lang, &Bump::new()))), None)
        }),
        ("gopher_quality", &|t| {
            (
                keep(
                    qual.check(&Ctx::new(t, lang, &Bump::new()))
                        .map(String::from),
                ),
                None,
            )
        }),
        ("c4", &|t| match c4.apply(t, lang) {
            C4Outcome::Keep(text) => ("keep".into(), Some(text)),
            C4Outcome::Drop(r) => (r.into(), None),
        }),
        ("fineweb", &|t| {
            (
                keep(fw.check(&Ctx::new(t, lang, &Bump::new())).map(String::from)),
                None,
            )
        }),
    ];
    // A rule set the language's config turns off is not run (nor reported).
    for ((name, rule), _) in rules.into_iter().zip(enabled).filter(|(_, on)| *on) {
        let start = Instant::now();
        let decisions: Vec<(String, Option<String>)> = docs.iter().map(|(_, t)| rule(t)).collect();
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "{}",
            serde_json::json!({"rule": name, "docs": docs.len(), "seconds": secs})
        );
        for (res, (decision, text)) in results.iter_mut().zip(decisions) {
            res.insert(name.into(), decision.into());
            if let Some(text) = text {
                res.insert(
                    "c4_text_hash".into(),
                    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes())).into(),
                );
            }
        }
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for ((id, _), mut res) in docs.iter().zip(results) {
        res.insert("id".into(), id.clone().into());
        writeln!(out, "{}", serde_json::Value::Object(res))?;
    }
    Ok(())
}

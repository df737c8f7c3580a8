//! Pre-tokenizers: cut text into the pieces BPE runs inside. The forms HF `tokenizer.json` files
//! use for byte-level BPE (`Split`, `Digits`, `ByteLevel`, `Sequence`) run through Oniguruma, the
//! engine HF uses; the two presets we know (DeepSeek-V3, GPT-2) run through hand-written
//! scanners (`scan.rs`) that agree with those regexes.

use crate::scan;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::sync::Arc;

/// DeepSeek-V3's number split: runs of up to three digits.
pub const DEEPSEEK_DIGITS: &str = r"\p{N}{1,3}";
/// DeepSeek-V3's CJK split: ideographs, hiragana and katakana runs.
pub const DEEPSEEK_CJK: &str = "[一-龥぀-ゟ゠-ヿ]+";
/// DeepSeek-V3's main split: punctuation+ASCII word, words, punctuation runs with their line
/// breaks, line breaks, whitespace.
pub const DEEPSEEK_MAIN: &str = r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##;
/// GPT-2's regex, which HF's `ByteLevel` applies when `use_regex` is true.
pub const GPT2_REGEX: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// What `Split` does with the pieces its pattern matches (HF's `SplitDelimiterBehavior`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behavior {
    Removed,
    Isolated,
    MergedWithPrevious,
    MergedWithNext,
    Contiguous,
}

/// One pre-tokenization step of a HF `Sequence`.
#[derive(Clone)]
pub enum Step {
    /// Split on a regex (or an escaped literal).
    Split {
        regex: Arc<onig::Regex>,
        behavior: Behavior,
        invert: bool,
    },
    /// Split digits apart, one by one or as runs.
    Digits { individual: bool },
    /// Byte-level mapping; optionally a leading space and the GPT-2 regex first.
    ByteLevel {
        add_prefix_space: bool,
        use_regex: bool,
    },
}

/// How a tokenizer cuts text into pieces.
#[derive(Clone)]
pub enum PreTokenizer {
    /// The DeepSeek-V3 Sequence, by the hand-written scanner.
    DeepSeekV3,
    /// GPT-2's `ByteLevel(add_prefix_space=false, use_regex=true)`, by the hand-written scanner.
    Gpt2,
    /// Any other sequence of supported steps, run like HF does.
    General(Vec<Step>),
}

impl PreTokenizer {
    /// Parses the `pre_tokenizer` field of a tokenizer.json, which must end with a ByteLevel step
    /// (a byte-level BPE: any other gives HF's model characters, not bytes). Recognises the
    /// presets so they take the fast path.
    pub fn from_json(value: &Value) -> Result<PreTokenizer> {
        let mut steps = Vec::new();
        if !value.is_null() {
            parse_steps(value, &mut steps)?;
        }
        match steps.iter().position(|s| matches!(s, Step::ByteLevel { .. })) {
            None => bail!(
                "unsupported pre_tokenizer without a ByteLevel step: whale handles byte-level BPE \
                 tokenizers, whose pre_tokenizer ends with ByteLevel (without it HF gives the model \
                 characters, not bytes)"
            ),
            Some(i) if i + 1 < steps.len() => bail!(
                "unsupported pre_tokenizer with steps after ByteLevel: they would split \
                 byte-level characters, which whale does not reproduce"
            ),
            Some(_) => {}
        }
        Ok(if is_deepseek_v3(value) {
            PreTokenizer::DeepSeekV3
        } else if is_gpt2(value) {
            PreTokenizer::Gpt2
        } else {
            PreTokenizer::General(steps)
        })
    }

    /// A preset by name (`deepseek-v3` or `gpt2`), as the trainer's `--pre-tokenizer` takes it.
    pub fn preset(name: &str) -> Result<PreTokenizer> {
        match name {
            "deepseek-v3" => Ok(PreTokenizer::DeepSeekV3),
            "gpt2" => Ok(PreTokenizer::Gpt2),
            other => bail!("unknown pre-tokenizer preset {other:?} (known: deepseek-v3, gpt2)"),
        }
    }

    /// A short human-readable name: the preset's, or `general (N steps)`.
    pub fn name(&self) -> String {
        match self {
            PreTokenizer::DeepSeekV3 => "deepseek-v3".into(),
            PreTokenizer::Gpt2 => "gpt2".into(),
            PreTokenizer::General(steps) => format!("general ({} steps)", steps.len()),
        }
    }

    /// The tokenizer.json form of a preset, as HF writes it. `None` for general pipelines, whose
    /// JSON the caller keeps verbatim.
    pub fn preset_json(&self) -> Option<Value> {
        match self {
            PreTokenizer::DeepSeekV3 => Some(deepseek_v3_json()),
            PreTokenizer::Gpt2 => Some(byte_level_json(true)),
            PreTokenizer::General(_) => None,
        }
    }

    /// The reference pipeline for a preset: the same steps run through Oniguruma. Tests compare
    /// the hand-written scanners with it; for general pipelines it is the pipeline itself.
    pub fn reference(&self) -> PreTokenizer {
        match self.preset_json() {
            Some(value) => {
                let mut steps = Vec::new();
                parse_steps(&value, &mut steps).expect("preset JSON parses");
                PreTokenizer::General(steps)
            }
            None => self.clone(),
        }
    }

    /// Calls `emit` with the bytes of each piece of `text`, in order. Pieces are never empty.
    pub fn split<F: FnMut(&[u8])>(&self, text: &str, mut emit: F) {
        let bytes = text.as_bytes();
        match self {
            PreTokenizer::DeepSeekV3 => scan::deepseek_v3(text, &mut |a, b| emit(&bytes[a..b])),
            PreTokenizer::Gpt2 => scan::gpt2(text, &mut |a, b| emit(&bytes[a..b])),
            PreTokenizer::General(steps) => {
                let mut pieces = vec![text.to_string()];
                for step in steps {
                    pieces = pieces.iter().flat_map(|p| step.apply(p)).collect();
                }
                for piece in &pieces {
                    emit(piece.as_bytes());
                }
            }
        }
    }
}

impl Step {
    /// Splits one piece into its sub-pieces (empty ones dropped, like HF).
    fn apply(&self, piece: &str) -> Vec<String> {
        let ranges = match self {
            Step::Split {
                regex,
                behavior,
                invert,
            } => {
                let mut m = regex_matches(regex, piece);
                if *invert {
                    m.iter_mut()
                        .for_each(|(_, is_match)| *is_match = !*is_match);
                }
                apply_behavior(m, *behavior)
            }
            Step::Digits { individual } => {
                let behavior = if *individual {
                    Behavior::Isolated
                } else {
                    Behavior::Contiguous
                };
                apply_behavior(char_matches(piece, char::is_numeric), behavior)
            }
            Step::ByteLevel {
                add_prefix_space,
                use_regex,
            } => {
                let owned;
                let piece = if *add_prefix_space && !piece.starts_with(' ') {
                    owned = format!(" {piece}");
                    owned.as_str()
                } else {
                    piece
                };
                if *use_regex {
                    let ranges = apply_behavior(regex_matches(&GPT2, piece), Behavior::Isolated);
                    return slices(piece, ranges);
                }
                return vec![piece.to_string()];
            }
        };
        slices(piece, ranges)
    }
}

static GPT2: std::sync::LazyLock<onig::Regex> =
    std::sync::LazyLock::new(|| onig::Regex::new(GPT2_REGEX).expect("GPT-2 regex compiles"));

fn slices(piece: &str, ranges: Vec<(usize, usize)>) -> Vec<String> {
    ranges
        .into_iter()
        .filter(|(a, b)| a < b)
        .map(|(a, b)| piece[a..b].to_string())
        .collect()
}

/// HF's `Pattern::find_matches` for a regex: matches and the gaps between them, in order.
fn regex_matches(regex: &onig::Regex, text: &str) -> Vec<((usize, usize), bool)> {
    let mut out = Vec::new();
    let mut prev = 0;
    for (start, end) in regex.find_iter(text) {
        if prev != start {
            out.push(((prev, start), false));
        }
        out.push(((start, end), true));
        prev = end;
    }
    if prev != text.len() {
        out.push(((prev, text.len()), false));
    }
    out
}

/// HF's `Pattern::find_matches` for a char predicate: every matching char is its own match.
fn char_matches(text: &str, pred: fn(char) -> bool) -> Vec<((usize, usize), bool)> {
    let mut out = Vec::new();
    let mut last = 0;
    for (b, c) in text.char_indices() {
        if pred(c) {
            if last < b {
                out.push(((last, b), false));
            }
            out.push(((b, b + c.len_utf8()), true));
            last = b + c.len_utf8();
        }
    }
    if last < text.len() {
        out.push(((last, text.len()), false));
    }
    out
}

/// HF's `NormalizedString::split`: turns matches into the kept ranges.
fn apply_behavior(m: Vec<((usize, usize), bool)>, behavior: Behavior) -> Vec<(usize, usize)> {
    let mut acc: Vec<(usize, usize)> = Vec::with_capacity(m.len());
    let mut previous_match = false;
    match behavior {
        Behavior::Isolated => return m.into_iter().map(|(r, _)| r).collect(),
        Behavior::Removed => return m.into_iter().filter(|(_, x)| !x).map(|(r, _)| r).collect(),
        Behavior::Contiguous => {
            for (r, is_match) in m {
                match acc.last_mut() {
                    Some(last) if is_match == previous_match => last.1 = r.1,
                    _ => acc.push(r),
                }
                previous_match = is_match;
            }
        }
        Behavior::MergedWithPrevious => {
            for (r, is_match) in m {
                match acc.last_mut() {
                    Some(last) if is_match && !previous_match => last.1 = r.1,
                    _ => acc.push(r),
                }
                previous_match = is_match;
            }
        }
        Behavior::MergedWithNext => {
            for (r, is_match) in m.into_iter().rev() {
                match acc.last_mut() {
                    Some(last) if is_match && !previous_match => last.0 = r.0,
                    _ => acc.push(r),
                }
                previous_match = is_match;
            }
            acc.reverse();
        }
    }
    acc
}

fn parse_steps(value: &Value, steps: &mut Vec<Step>) -> Result<()> {
    let kind = value["type"].as_str().unwrap_or_default();
    match kind {
        "Sequence" => {
            let list = value["pretokenizers"]
                .as_array()
                .ok_or_else(|| anyhow!("Sequence pre-tokenizer without a `pretokenizers` list"))?;
            for item in list {
                parse_steps(item, steps)?;
            }
        }
        "Split" => {
            let pattern = &value["pattern"];
            let source = if let Some(r) = pattern["Regex"].as_str() {
                r.to_string()
            } else if let Some(s) = pattern["String"].as_str() {
                regex_syntax::escape(s)
            } else {
                bail!("Split pre-tokenizer without a Regex or String pattern: {pattern}");
            };
            let regex = onig::Regex::new(&source)
                .with_context(|| format!("Split pattern {source:?} does not compile"))?;
            let behavior = match value["behavior"].as_str().unwrap_or("Isolated") {
                "Removed" => Behavior::Removed,
                "Isolated" => Behavior::Isolated,
                "MergedWithPrevious" => Behavior::MergedWithPrevious,
                "MergedWithNext" => Behavior::MergedWithNext,
                "Contiguous" => Behavior::Contiguous,
                other => bail!("unknown Split behavior {other:?}"),
            };
            steps.push(Step::Split {
                regex: Arc::new(regex),
                behavior,
                invert: value["invert"].as_bool().unwrap_or(false),
            });
        }
        "Digits" => steps.push(Step::Digits {
            individual: value["individual_digits"].as_bool().unwrap_or(false),
        }),
        "ByteLevel" => steps.push(Step::ByteLevel {
            add_prefix_space: value["add_prefix_space"].as_bool().unwrap_or(true),
            use_regex: value["use_regex"].as_bool().unwrap_or(true),
        }),
        "Metaspace" => bail!(
            "unsupported pre_tokenizer type \"Metaspace\": whale handles byte-level BPE \
             tokenizers and this looks like a SentencePiece tokenizer"
        ),
        other => bail!(
            "unsupported pre_tokenizer type {other:?}: whale handles byte-level BPE tokenizers, \
             whose pre_tokenizer is made of Sequence, Split, Digits and ByteLevel"
        ),
    }
    Ok(())
}

fn split_json(pattern: &str) -> Value {
    json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false})
}

fn byte_level_json(use_regex: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex})
}

/// The DeepSeek-V3 pre-tokenizer exactly as its published tokenizer.json spells it.
pub fn deepseek_v3_json() -> Value {
    json!({"type": "Sequence", "pretokenizers": [
        split_json(DEEPSEEK_DIGITS),
        split_json(DEEPSEEK_CJK),
        split_json(DEEPSEEK_MAIN),
        byte_level_json(false),
    ]})
}

fn is_deepseek_v3(value: &Value) -> bool {
    let Some(list) = value["pretokenizers"].as_array() else {
        return false;
    };
    // The published file writes the CR and LF of the main regex as the characters themselves,
    // which Oniguruma reads exactly as the escapes `\r` and `\n` (no extended mode here).
    let split_is = |v: &Value, p: &str| {
        v["type"] == "Split"
            && v["pattern"]["Regex"]
                .as_str()
                .is_some_and(|r| r.replace('\r', "\\r").replace('\n', "\\n") == p)
            && v["behavior"] == "Isolated"
            && !v["invert"].as_bool().unwrap_or(false)
    };
    value["type"] == "Sequence"
        && list.len() == 4
        && split_is(&list[0], DEEPSEEK_DIGITS)
        && split_is(&list[1], DEEPSEEK_CJK)
        && split_is(&list[2], DEEPSEEK_MAIN)
        && list[3]["type"] == "ByteLevel"
        && list[3]["add_prefix_space"] == false
        && list[3]["use_regex"] == false
}

fn is_gpt2(value: &Value) -> bool {
    let single = match value["pretokenizers"].as_array() {
        Some(list) if value["type"] == "Sequence" && list.len() == 1 => &list[0],
        _ => value,
    };
    single["type"] == "ByteLevel"
        && single["add_prefix_space"] == false
        && single["use_regex"].as_bool().unwrap_or(true)
}

//! Normalizers: what HF `tokenizers` does to each stretch of text (between added tokens) before
//! pre-tokenization, step for step as HF 0.22 does it, so published tokenizers that normalize
//! (Qwen's NFC, Claude's NFKC, SentencePiece-converted `Prepend`/`Replace` pipelines) encode to
//! HF's ids. Only the text matters here: HF's offset alignments are not kept.
//!
//! Each step returns what it changed, so a file without a normalizer, or with an empty
//! `Sequence` (DeepSeek-V3), and steps that leave the text alone cost no copy.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::borrow::Cow;
// HF normalizes with `unicode-normalization-alignments` (Unicode 9 tables), not
// `unicode-normalization` (Unicode 16+): under NFKC they disagree on 239 code points decomposed
// since Unicode 9 (U+1FBF0 SEGMENTED DIGIT ZERO, U+A7F2, U+32FF SQUARE ERA NAME REIWA stay
// themselves for HF), so parity needs HF's crate.
use unicode_normalization_alignments::{
    is_nfc_quick, is_nfd_quick, is_nfkc_quick, is_nfkd_quick, IsNormalized, UnicodeNormalization,
};

/// The normalizer types that [`Normalizer::from_json`] accepts.
const SUPPORTED: &str = "Sequence, NFC, NFD, NFKC, NFKD, Lowercase, Strip, Prepend, Replace";

/// A Unicode normalization form.
#[derive(Clone, Copy, Debug)]
enum Form {
    Nfc,
    Nfd,
    Nfkc,
    Nfkd,
}

/// One normalization step of a HF normalizer.
#[derive(Debug)]
enum Step {
    Unicode(Form),
    /// Char-wise `char::to_lowercase`, as HF (so a final `Σ` becomes `σ`, not `ς`).
    Lowercase,
    /// Removes `char::is_whitespace` characters at either end.
    Strip {
        left: bool,
        right: bool,
    },
    /// Puts a string in front of a non-empty text.
    Prepend(String),
    /// Replaces every Oniguruma match (a `String` pattern is escaped first, as HF does).
    Replace {
        regex: onig::Regex,
        content: String,
    },
}

/// What one step does to a text.
enum Edit {
    Same,
    /// Keeps the byte range `start..end`.
    Slice(usize, usize),
    New(String),
}

/// A tokenizer's normalizer: the steps of its (possibly nested) `Sequence`, flattened, in order.
#[derive(Debug, Default)]
pub struct Normalizer {
    steps: Vec<Step>,
}

impl Normalizer {
    /// Parses the `normalizer` field of a tokenizer.json; null means none. Types whale does not
    /// run (BertNormalizer, Precompiled, StripAccents, ...) are errors naming the field, so a
    /// file is never encoded differently from HF.
    pub fn from_json(value: &Value) -> Result<Normalizer> {
        let mut steps = Vec::new();
        if !value.is_null() {
            parse(value, "normalizer", &mut steps)?;
        }
        Ok(Normalizer { steps })
    }

    /// True when normalizing changes nothing (no normalizer, or an empty `Sequence`).
    pub fn is_identity(&self) -> bool {
        self.steps.is_empty()
    }

    /// `text` normalized; borrowed when no step changed it.
    pub fn normalize<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for step in &self.steps {
            out = match (step.apply(&out), out) {
                (Edit::Same, out) => out,
                (Edit::Slice(a, b), Cow::Borrowed(t)) => Cow::Borrowed(&t[a..b]),
                (Edit::Slice(a, b), Cow::Owned(mut s)) => {
                    s.truncate(b);
                    s.drain(..a);
                    Cow::Owned(s)
                }
                (Edit::New(s), _) => Cow::Owned(s),
            };
        }
        out
    }
}

impl Step {
    fn apply(&self, text: &str) -> Edit {
        match self {
            Step::Unicode(form) => unicode(*form, text),
            Step::Lowercase if text.chars().all(lowercase_is_itself) => Edit::Same,
            Step::Lowercase => Edit::New(text.chars().flat_map(char::to_lowercase).collect()),
            Step::Strip { left, right } => {
                let start = match left {
                    true => text.len() - text.trim_start_matches(char::is_whitespace).len(),
                    false => 0,
                };
                let end = match right {
                    true => start + text[start..].trim_end_matches(char::is_whitespace).len(),
                    false => text.len(),
                };
                match (start, end) == (0, text.len()) {
                    true => Edit::Same,
                    false => Edit::Slice(start, end),
                }
            }
            // HF prepends only to a non-empty text, and replaces nothing in an empty one.
            Step::Prepend(_) | Step::Replace { .. } if text.is_empty() => Edit::Same,
            Step::Prepend(prefix) => Edit::New(format!("{prefix}{text}")),
            Step::Replace { regex, content } => {
                let mut matches = regex.find_iter(text).peekable();
                if matches.peek().is_none() {
                    return Edit::Same;
                }
                let mut out = String::with_capacity(text.len());
                let mut done = 0;
                for (start, end) in matches {
                    out.push_str(&text[done..start]);
                    out.push_str(content);
                    done = end;
                }
                out.push_str(&text[done..]);
                Edit::New(out)
            }
        }
    }
}

fn lowercase_is_itself(c: char) -> bool {
    let mut lower = c.to_lowercase();
    lower.next() == Some(c) && lower.next().is_none()
}

/// `text` in `form`, skipping the work when the quick check says it already is.
fn unicode(form: Form, text: &str) -> Edit {
    match quick_check(form, text) {
        IsNormalized::Yes => Edit::Same,
        _ => Edit::New(normalized(form, text)),
    }
}

fn quick_check(form: Form, text: &str) -> IsNormalized {
    match form {
        Form::Nfc => is_nfc_quick(text.chars()),
        Form::Nfd => is_nfd_quick(text.chars()),
        Form::Nfkc => is_nfkc_quick(text.chars()),
        Form::Nfkd => is_nfkd_quick(text.chars()),
    }
}

fn normalized(form: Form, text: &str) -> String {
    match form {
        Form::Nfc => text.nfc().map(|(c, _)| c).collect(),
        Form::Nfd => text.nfd().map(|(c, _)| c).collect(),
        Form::Nfkc => text.nfkc().map(|(c, _)| c).collect(),
        Form::Nfkd => text.nfkd().map(|(c, _)| c).collect(),
    }
}

/// Appends the steps of the normalizer `value`, found at `path` in the file.
fn parse(value: &Value, path: &str, steps: &mut Vec<Step>) -> Result<()> {
    let kind = value["type"]
        .as_str()
        .ok_or_else(|| anyhow!("{path} has no \"type\": {value}"))?;
    let string = |field: &str| {
        value[field]
            .as_str()
            .ok_or_else(|| anyhow!("{path}.{field} is missing or not a string ({kind})"))
    };
    let flag = |field: &str| {
        value[field]
            .as_bool()
            .ok_or_else(|| anyhow!("{path}.{field} is missing or not a boolean ({kind})"))
    };
    match kind {
        "Sequence" => {
            let list = value["normalizers"]
                .as_array()
                .ok_or_else(|| anyhow!("{path}.normalizers is missing or not a list"))?;
            for (i, item) in list.iter().enumerate() {
                parse(item, &format!("{path}.normalizers[{i}]"), steps)?;
            }
        }
        "NFC" => steps.push(Step::Unicode(Form::Nfc)),
        "NFD" => steps.push(Step::Unicode(Form::Nfd)),
        "NFKC" => steps.push(Step::Unicode(Form::Nfkc)),
        "NFKD" => steps.push(Step::Unicode(Form::Nfkd)),
        "Lowercase" => steps.push(Step::Lowercase),
        "Strip" => steps.push(Step::Strip {
            left: flag("strip_left")?,
            right: flag("strip_right")?,
        }),
        "Prepend" => steps.push(Step::Prepend(string("prepend")?.to_string())),
        "Replace" => {
            let pattern = &value["pattern"];
            let source = match (pattern["String"].as_str(), pattern["Regex"].as_str()) {
                (Some(s), None) => regex_syntax::escape(s),
                (None, Some(r)) => r.to_string(),
                _ => bail!(
                    "{path}.pattern must be {{\"String\": ..}} or {{\"Regex\": ..}}: {pattern}"
                ),
            };
            let regex = onig::Regex::new(&source)
                .with_context(|| format!("{path}.pattern {source:?} does not compile"))?;
            if regex.is_match("") {
                bail!(
                    "unsupported {path}.pattern {pattern}: it matches the empty string, which \
                     HF's Replace cannot apply (it panics)"
                );
            }
            let content = string("content")?.to_string();
            steps.push(Step::Replace { regex, content });
        }
        other => {
            let hint = match other {
                "BertNormalizer" | "Bert" | "StripAccents" => {
                    "this looks like a WordPiece (BERT-style) tokenizer"
                }
                "Precompiled" | "Nmt" => "this looks like a SentencePiece tokenizer",
                _ => "whale cannot reproduce what HF does with it",
            };
            bail!(
                "unsupported normalizer {path}.type = {other:?}: whale handles byte-level BPE \
                 tokenizers (GPT-2, Llama-3, Qwen, DeepSeek-V3 style) and {hint}; supported \
                 normalizers are {SUPPORTED}"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(normalizer: Value, text: &str) -> String {
        Normalizer::from_json(&normalizer)
            .unwrap()
            .normalize(text)
            .into_owned()
    }

    #[test]
    fn steps_do_what_hf_does() {
        assert_eq!(run(json!({"type": "NFKC"}), "ﬁ①ＡＢ"), "fi1AB");
        assert_eq!(run(json!({"type": "NFC"}), "e\u{301}"), "é");
        assert_eq!(run(json!({"type": "NFD"}), "é"), "e\u{301}");
        assert_eq!(run(json!({"type": "Lowercase"}), "ΟΔΟΣ İ"), "οδοσ i\u{307}");
        let strip = |l, r| json!({"type": "Strip", "strip_left": l, "strip_right": r});
        assert_eq!(run(strip(true, false), " \u{3000}a b\n"), "a b\n");
        assert_eq!(run(strip(false, true), " a b\n"), " a b");
        assert_eq!(run(strip(true, true), " \t "), "");
        let prepend = json!({"type": "Prepend", "prepend": "▁"});
        assert_eq!(run(prepend.clone(), "a"), "▁a");
        assert_eq!(run(prepend, ""), "");
        let replace = json!({"type": "Replace", "pattern": {"String": "."}, "content": "▁"});
        assert_eq!(run(replace, "a.b c"), "a▁b c");
        let regex = json!({"type": "Replace", "pattern": {"Regex": " +"}, "content": "_"});
        assert_eq!(run(regex, "a  b c "), "a_b_c_");
        let nested = json!({"type": "Sequence", "normalizers": [
            {"type": "Sequence", "normalizers": [{"type": "Lowercase"}]},
            {"type": "Prepend", "prepend": "X"}]});
        assert_eq!(run(nested, "AB"), "Xab");
    }

    #[test]
    fn unchanged_text_is_not_copied() {
        let n = Normalizer::from_json(&json!({"type": "Sequence", "normalizers": [
            {"type": "NFC"}, {"type": "Lowercase"}, {"type": "Strip", "strip_left": true, "strip_right": true}
        ]}))
        .unwrap();
        assert!(matches!(
            n.normalize("plain text"),
            Cow::Borrowed("plain text")
        ));
        assert!(matches!(n.normalize("  中文 "), Cow::Borrowed("中文")));
        let empty = Normalizer::from_json(&json!({"type": "Sequence", "normalizers": []})).unwrap();
        assert!(empty.is_identity());
    }

    /// The quick check that skips normalizing never disagrees with normalizing, char by char.
    #[test]
    fn quick_check_agrees_with_normalizing() {
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            let s = c.to_string();
            for form in [Form::Nfc, Form::Nfd, Form::Nfkc, Form::Nfkd] {
                if quick_check(form, &s) == IsNormalized::Yes {
                    assert_eq!(normalized(form, &s), s, "{form:?} of U+{:04X}", c as u32);
                }
            }
        }
    }
}

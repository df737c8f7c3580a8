//! C4 line-level cleaning (Raffel et al. 2020) with datatrove's `C4QualityFilter` semantics.
//! Unlike the other rule sets it rewrites the document: only the lines that pass are kept,
//! so a kept document may come out shorter (the runner records that in `meta`).

use serde::{Deserialize, Serialize};

use super::pystr::{char_len, py_strip, split_py_space, splitlines};
use super::words::count_sentences;

/// Switches and thresholds; `-1`/`0` disable the numeric ones, as in datatrove.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct C4 {
    pub enabled: bool,
    /// Delete Wikipedia-style citation marks (`[1]`, `[edit]`, `[citation needed]`).
    pub remove_citations: bool,
    /// Drop lines that do not end in `. ? ! " '` (or that end in an ellipsis).
    pub filter_no_terminal_punct: bool,
    /// Drop the document when fewer sentences remain (0 disables).
    pub min_num_sentences: usize,
    /// Drop lines with fewer whitespace-separated words (0 disables).
    pub min_words_per_line: usize,
    /// Drop lines holding a word longer than this many characters (0 disables).
    pub max_word_length: usize,
    /// Drop the document when a kept line contains "lorem ipsum".
    pub filter_lorem_ipsum: bool,
    /// Drop lines mentioning "javascript".
    pub filter_javascript: bool,
    /// Drop the document when a kept line contains `{`.
    pub filter_curly_bracket: bool,
    /// Drop lines about cookies, terms of use and privacy policies.
    pub filter_policy: bool,
}

impl Default for C4 {
    fn default() -> Self {
        C4 {
            enabled: true,
            remove_citations: true,
            filter_no_terminal_punct: true,
            min_num_sentences: 5,
            min_words_per_line: 3,
            max_word_length: 1000,
            filter_lorem_ipsum: true,
            filter_javascript: true,
            filter_curly_bracket: true,
            filter_policy: true,
        }
    }
}

const POLICY_SUBSTRINGS: [&str; 6] = [
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
];

/// What C4 makes of a document.
#[derive(Debug, Clone, PartialEq)]
pub enum C4Outcome {
    /// Keep, with the text reduced to the kept lines (equal to the input when nothing changed).
    Keep(String),
    /// Drop, with datatrove's reason.
    Drop(&'static str),
}

/// Python's `CITATION_REGEX.sub("", line)` for `\[\d*]|\[edit]|\[citation needed]`.
fn remove_citations(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.contains('[') {
        return line.into();
    }
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find('[') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let digits = tail[1..].bytes().take_while(u8::is_ascii_digit).count();
        let skip = if tail.as_bytes().get(1 + digits) == Some(&b']') {
            digits + 2
        } else if tail.starts_with("[edit]") {
            6
        } else if tail.starts_with("[citation needed]") {
            17
        } else {
            out.push('[');
            1
        };
        rest = &tail[skip..];
    }
    out.push_str(rest);
    out.into()
}

impl C4 {
    /// Applies the rules line by line; `lang` picks the sentence splitter.
    pub fn apply(&self, text: &str, lang: &str) -> C4Outcome {
        // The kept lines joined by newlines.
        let (mut kept, mut n_kept) = (String::new(), 0);
        let mut sentences = 0;
        for line in splitlines(text) {
            let stripped = py_strip(line);
            // datatrove's per-line tests that only skip the line are independent: the cheap
            // ending test runs first, so most lines are never split into words.
            let line = if self.remove_citations {
                remove_citations(stripped)
            } else {
                stripped.into()
            };
            let ends_ok = line.ends_with(['.', '?', '!', '"', '\'']) && !line.ends_with("...");
            if self.filter_no_terminal_punct && !ends_ok {
                continue;
            }
            // Words and their lengths as on the line before citation removal.
            let (mut n_words, mut too_long) = (0, false);
            for w in split_py_space(stripped) {
                n_words += 1;
                if self.max_word_length > 0 && char_len(w) > self.max_word_length {
                    too_long = true;
                    break;
                }
            }
            if too_long || n_words < self.min_words_per_line {
                continue;
            }
            let lower = line.to_lowercase();
            if self.filter_lorem_ipsum && lower.contains("lorem ipsum") {
                return C4Outcome::Drop("lorem_ipsum");
            }
            if self.filter_javascript && lower.contains("javascript") {
                continue;
            }
            if self.filter_curly_bracket && line.contains('{') {
                return C4Outcome::Drop("curly_bracket");
            }
            if self.filter_policy && POLICY_SUBSTRINGS.iter().any(|p| lower.contains(p)) {
                continue;
            }
            if self.min_num_sentences > 0 {
                sentences += count_sentences(&line, lang);
            }
            if n_kept > 0 {
                kept.push('\n');
            }
            kept.push_str(&line);
            n_kept += 1;
        }
        if sentences < self.min_num_sentences {
            return C4Outcome::Drop("too_few_sentences");
        }
        let stripped = py_strip(&kept);
        if stripped.len() == kept.len() {
            return C4Outcome::Keep(kept);
        }
        C4Outcome::Keep(stripped.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "The council met on Monday. It approved the budget.\nResidents asked questions about the park.\nThe mayor answered all of them! Was it enough?\nMost people left satisfied.";

    fn apply(text: &str) -> C4Outcome {
        C4::default().apply(text, "en")
    }

    #[test]
    fn keeps_good_text_unchanged() {
        assert_eq!(apply(GOOD), C4Outcome::Keep(GOOD.to_string()));
    }

    #[test]
    fn rewrites_to_the_kept_lines() {
        let noisy = format!("Home | About | Contact\n{GOOD}\nPlease enable JavaScript to view comments.\nWe use cookies to improve the site.\nShort one.\nA fact[1] with a citation[edit].");
        let C4Outcome::Keep(text) = apply(&noisy) else {
            panic!("dropped")
        };
        assert_eq!(text, format!("{GOOD}\nA fact with a citation."));
    }

    #[test]
    fn each_document_rule_can_fail() {
        assert_eq!(
            apply(&format!("{GOOD}\nLorem ipsum dolor sit amet.")),
            C4Outcome::Drop("lorem_ipsum")
        );
        assert_eq!(
            apply(&format!("{GOOD}\nvar x = {{ a: 1 }} is code.")),
            C4Outcome::Drop("curly_bracket")
        );
        assert_eq!(
            apply("One sentence only here.\nAnd a second one here."),
            C4Outcome::Drop("too_few_sentences")
        );
        assert_eq!(apply(""), C4Outcome::Drop("too_few_sentences"));
        let long_word = format!("{GOOD}\nThis line has {} in it.", "x".repeat(1001));
        assert_eq!(apply(&long_word), C4Outcome::Keep(GOOD.to_string()));
    }

    #[test]
    fn citation_removal_matches_the_regex() {
        assert_eq!(
            remove_citations("a[12] b[] c[edit] d[citation needed] e[x]"),
            "a b c d e[x]"
        );
    }
}

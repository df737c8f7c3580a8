//! FineWeb's own quality rules (Penedo et al. 2024) with datatrove's `FineWebQualityFilter`
//! semantics: ratios over non-blank lines split on `\n`, terminal punctuation from datatrove's
//! `TERMINAL_PUNCTUATION`, and a newline-per-word ratio that catches bare lists.

use serde::{Deserialize, Serialize};

use super::gopher_repetition::find_duplicates;
use super::pystr::{char_len, py_strip};
use super::text::{is_terminal_punct, Ctx};

/// Thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FineWeb {
    pub enabled: bool,
    /// Drop when fewer than this share of lines end in terminal punctuation.
    pub line_punct_thr: f64,
    /// Do not drop documents where no line at all ends in punctuation (some languages).
    pub line_punct_exclude_zero: bool,
    /// Drop when more than this share of lines are at most `short_line_length` characters.
    pub short_line_thr: f64,
    pub short_line_length: usize,
    /// Drop when more than this share of characters sit in repeated lines.
    pub char_duplicates_ratio: f64,
    /// Drop when there are more than this many newlines per word.
    pub new_line_ratio: f64,
}

impl Default for FineWeb {
    fn default() -> Self {
        FineWeb {
            enabled: true,
            line_punct_thr: 0.12,
            line_punct_exclude_zero: false,
            short_line_thr: 0.67,
            short_line_length: 30,
            char_duplicates_ratio: 0.01,
            new_line_ratio: 0.3,
        }
    }
}

impl FineWeb {
    /// The reason datatrove would give for dropping the document, or `None` to keep it.
    pub fn check(&self, ctx: &Ctx) -> Option<&'static str> {
        let text = ctx.text;
        let lines: Vec<&str> = text
            .split('\n')
            .filter(|l| !py_strip(l).is_empty())
            .collect();
        if lines.is_empty() {
            return Some("empty");
        }
        let n = lines.len() as f64;
        let punct = lines
            .iter()
            .filter(|l| l.chars().next_back().is_some_and(is_terminal_punct))
            .count();
        let ratio = punct as f64 / n;
        if ratio < self.line_punct_thr && !(punct == 0 && self.line_punct_exclude_zero) {
            return Some("line_punct_ratio");
        }
        let short = lines
            .iter()
            .filter(|l| char_len(l) <= self.short_line_length)
            .count();
        if short as f64 / n > self.short_line_thr {
            return Some("short_line_ratio");
        }
        let (_, dup_chars) = find_duplicates(lines.iter().copied());
        let non_newline = char_len(text) - text.matches('\n').count();
        if dup_chars as f64 / non_newline as f64 > self.char_duplicates_ratio {
            return Some("char_dup_ratio");
        }
        let newlines = text.matches('\n').count() as f64;
        if newlines / ctx.words().len() as f64 > self.new_line_ratio {
            return Some("list_ratio");
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bumpalo::Bump;

    fn check(text: &str) -> Option<&'static str> {
        FineWeb::default().check(&Ctx::new(text, "en", &Bump::new()))
    }

    #[test]
    fn keeps_paragraphs_of_prose() {
        let text = "The council met on Monday evening to discuss the new budget for the town.\n\
                    Residents asked many questions about the park and the library opening hours.";
        assert_eq!(check(text), None);
    }

    #[test]
    fn each_test_can_fail() {
        assert_eq!(check("  \n\n"), Some("empty"));
        let no_punct = "Home and garden supplies for every season of the year\nContact our friendly team today for a quote";
        assert_eq!(check(no_punct), Some("line_punct_ratio"));
        let short =
            "Menu.\nHome.\nNews.\nThe council met on Monday evening to discuss the new budget.";
        assert_eq!(check(short), Some("short_line_ratio"));
        let dup = "The council met on Monday evening to discuss the new budget.\n\
                   The council met on Monday evening to discuss the new budget.\n\
                   Residents asked many questions about the park and the library hours.";
        assert_eq!(check(dup), Some("char_dup_ratio"));
        let list = "Hippopotomonstrosesquippedaliophobia.\nPneumonoultramicroscopicsilicovolcanoconiosis.\nFloccinaucinihilipilificationism.\nSupercalifragilisticexpialidocious.";
        assert_eq!(check(list), Some("list_ratio"));
    }

    #[test]
    fn exclude_zero_keeps_unpunctuated_languages() {
        let rule = FineWeb {
            line_punct_exclude_zero: true,
            ..FineWeb::default()
        };
        let text = "Home and garden supplies for every season of the year\nContact our friendly team today for a quote";
        assert_eq!(rule.check(&Ctx::new(text, "en", &Bump::new())), None);
    }
}

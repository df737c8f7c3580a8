//! Gopher quality rules (Rae et al. 2021, Table A1) with datatrove's `GopherQualityFilter`
//! semantics: word counts exclude tokens made only of punctuation, the symbol ratios divide by
//! all tokens, and the stop-word test counts distinct stop words present.

use serde::{Deserialize, Serialize};

use super::pystr::{char_len, is_py_alpha, is_py_space, splitlines};
use super::text::{is_datatrove_punct, Ctx};

/// Thresholds; a zero disables that test, as datatrove's falsy `None`/`0` does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GopherQuality {
    pub enabled: bool,
    pub min_doc_words: usize,
    pub max_doc_words: usize,
    pub min_avg_word_length: f64,
    pub max_avg_word_length: f64,
    pub max_symbol_word_ratio: f64,
    pub max_bullet_lines_ratio: f64,
    pub max_ellipsis_lines_ratio: f64,
    /// Minimum share of words with a letter (datatrove's misnamed `max_non_alpha_words_ratio`).
    pub min_alpha_words_ratio: f64,
    pub min_stop_words: usize,
    pub stop_words: Vec<String>,
}

impl Default for GopherQuality {
    fn default() -> Self {
        GopherQuality {
            enabled: true,
            min_doc_words: 50,
            max_doc_words: 100_000,
            min_avg_word_length: 3.0,
            max_avg_word_length: 10.0,
            max_symbol_word_ratio: 0.1,
            max_bullet_lines_ratio: 0.9,
            max_ellipsis_lines_ratio: 0.3,
            min_alpha_words_ratio: 0.8,
            min_stop_words: 2,
            stop_words: ["the", "be", "to", "of", "and", "that", "have", "with"]
                .map(String::from)
                .to_vec(),
        }
    }
}

impl GopherQuality {
    /// The reason datatrove would give for dropping the document, or `None` to keep it.
    pub fn check(&self, ctx: &Ctx) -> Option<&'static str> {
        let text = ctx.text;
        let words = ctx.words();
        let n_words = words.len();
        let (mut n_non_symbol, mut non_symbol_chars) = (0usize, 0usize);
        for w in words {
            if !w.chars().all(is_datatrove_punct) {
                n_non_symbol += 1;
                non_symbol_chars += char_len(w);
            }
        }
        if self.min_doc_words > 0 && n_non_symbol < self.min_doc_words {
            return Some("gopher_short_doc");
        }
        if self.max_doc_words > 0 && n_non_symbol > self.max_doc_words {
            return Some("gopher_long_doc");
        }
        // numpy's mean of an empty list is NaN, and every comparison with NaN is false.
        let avg = non_symbol_chars as f64 / n_non_symbol as f64;
        if self.min_avg_word_length > 0.0 && avg < self.min_avg_word_length {
            return Some("gopher_below_avg_threshold");
        }
        if self.max_avg_word_length > 0.0 && avg > self.max_avg_word_length {
            return Some("gopher_above_avg_threshold");
        }
        if self.max_symbol_word_ratio > 0.0 {
            let hashes = text.matches('#').count() as f64;
            if hashes / n_words as f64 > self.max_symbol_word_ratio {
                return Some("gopher_too_many_hashes");
            }
            let ellipses = (text.matches("...").count() + text.matches('…').count()) as f64;
            if ellipses / n_words as f64 > self.max_symbol_word_ratio {
                return Some("gopher_too_many_ellipsis");
            }
        }
        let lines = splitlines(text);
        let n_lines = lines.len() as f64;
        if self.max_bullet_lines_ratio > 0.0 {
            let bullets = lines
                .iter()
                .filter(|l| {
                    let l = l.trim_start_matches(is_py_space);
                    l.starts_with('•') || l.starts_with('-')
                })
                .count();
            if bullets as f64 / n_lines > self.max_bullet_lines_ratio {
                return Some("gopher_too_many_bullets");
            }
        }
        if self.max_ellipsis_lines_ratio > 0.0 {
            let ending = lines
                .iter()
                .filter(|l| {
                    let l = l.trim_end_matches(is_py_space);
                    l.ends_with("...") || l.ends_with('…')
                })
                .count();
            if ending as f64 / n_lines > self.max_ellipsis_lines_ratio {
                return Some("gopher_too_many_end_ellipsis");
            }
        }
        if self.min_alpha_words_ratio > 0.0 {
            let alpha = words.iter().filter(|w| w.chars().any(is_py_alpha)).count();
            if (alpha as f64) / (n_words as f64) < self.min_alpha_words_ratio {
                return Some("gopher_below_alpha_threshold");
            }
        }
        if self.min_stop_words > 0 {
            let present = self
                .stop_words
                .iter()
                .filter(|s| words.contains(&s.as_str()))
                .count();
            if present < self.min_stop_words {
                return Some("gopher_enough_stop_words");
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bumpalo::Bump;

    fn check(text: &str) -> Option<&'static str> {
        GopherQuality::default().check(&Ctx::new(text, "en", &Bump::new()))
    }

    fn prose(n: usize) -> String {
        "The farmers of the valley have worked with care to bring water to the fields. ".repeat(n)
    }

    #[test]
    fn keeps_ordinary_prose() {
        assert_eq!(check(&prose(5)), None);
    }

    #[test]
    fn each_test_can_fail() {
        assert_eq!(check("the cat and the dog"), Some("gopher_short_doc"));
        assert_eq!(
            check(&"a of to ".repeat(30)),
            Some("gopher_below_avg_threshold")
        );
        assert_eq!(
            check(&format!("{} the and", "incomprehensibilities ".repeat(60))),
            Some("gopher_above_avg_threshold")
        );
        assert_eq!(
            check(&format!("{}{}", prose(5), "#tag ".repeat(20))),
            Some("gopher_too_many_hashes")
        );
        assert_eq!(
            check(&format!("{}{}", prose(5), "and so... ".repeat(20))),
            Some("gopher_too_many_ellipsis")
        );
        let bullets = "• the water and the fields of the valley\n".repeat(10);
        assert_eq!(check(&bullets), Some("gopher_too_many_bullets"));
        let trailing = "the water and the fields of the valley were...\n".repeat(10);
        assert_eq!(check(&trailing), Some("gopher_too_many_end_ellipsis"));
        assert_eq!(
            check(&format!("{} the and with", "1234 5678 ".repeat(40))),
            Some("gopher_below_alpha_threshold")
        );
        assert_eq!(
            check(&"farmers worked hard planting seeds ".repeat(20)),
            Some("gopher_enough_stop_words")
        );
        assert_eq!(check(""), Some("gopher_short_doc"));
    }

    #[test]
    fn zero_disables_a_test() {
        let rule = GopherQuality {
            min_doc_words: 0,
            min_stop_words: 0,
            ..GopherQuality::default()
        };
        assert_eq!(
            rule.check(&Ctx::new("the cat and the dog", "en", &Bump::new())),
            None
        );
    }
}

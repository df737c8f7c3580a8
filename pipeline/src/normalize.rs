//! Text normalization for duplicate detection, and the token stream shingles are made of.
//!
//! Two pages that differ only in case, accents, numbers (dates, counters), punctuation or spacing
//! should look identical to dedup, as in datatrove's `simplify_text`. Scripts written without
//! spaces (Chinese, Japanese, Thai, …) yield one token per character, so word n-grams over the
//! token stream become character n-grams inside such runs and a Chinese near-duplicate is found.

use unicode_normalization::char::{decompose_canonical, is_combining_mark};
use unicode_normalization::UnicodeNormalization;

/// NFKC, lowercase, accents stripped, every number → `0`, punctuation and symbols → space,
/// whitespace collapsed to single spaces, trimmed.
///
/// A number is a run of digits, optionally followed by one `.` or `,` (or an Arabic or other
/// decimal separator) and more digits, as datatrove's `simplify_text` replaces
/// `\p{Nd}+([.,،٫⎖⎗⎘]\p{Nd}+)?` with `0`: `2024` and `3.14` are one `0`, `1,000,000` is `0 0`.
/// A counter going from 99 to 100 or a changed version number leaves the text as it was, where one
/// `0` per digit would not.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    let mut number = Number::Outside;
    let mut push = |c: char, out: &mut String| {
        if c.is_numeric() && number != Number::Outside {
            // More of the same number; after its separator, drop the space that asked for.
            if number == Number::Separator {
                pending_space = false;
                number = Number::Fraction;
            }
        } else if c.is_alphanumeric() {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            number = if c.is_numeric() {
                out.push('0');
                Number::Digits
            } else {
                out.push(c);
                Number::Outside
            };
        } else if !is_combining_mark(c) {
            pending_space = true;
            number = match (number, c) {
                (Number::Digits, '.' | ',' | '،' | '٫' | '⎖' | '⎗' | '⎘') => {
                    Number::Separator
                }
                _ => Number::Outside,
            };
        }
    };
    if text.is_ascii() {
        for c in text.chars() {
            push(c.to_ascii_lowercase(), &mut out);
        }
        return out;
    }
    for c in text.nfkc() {
        for lower in c.to_lowercase() {
            // Strip accents from alphabetic scripts only: decomposing Hangul or kana would change
            // the characters themselves, not drop a diacritic.
            if (0xC0..0x3000).contains(&(lower as u32)) {
                decompose_canonical(lower, |d| push(d, &mut out));
            } else {
                push(lower, &mut out);
            }
        }
    }
    out
}

/// Where [`normalize`] is relative to a number.
#[derive(Clone, Copy, PartialEq)]
enum Number {
    Outside,
    /// Just after a digit.
    Digits,
    /// Just after a digit and one decimal or thousands separator.
    Separator,
    /// In the digits after the separator: another separator ends the number.
    Fraction,
}

/// Characters of scripts written without spaces between words; each is one token.
pub fn is_unspaced_script(c: char) -> bool {
    matches!(c as u32,
        0x0E00..=0x0EFF          // Thai, Lao
        | 0x1000..=0x109F        // Myanmar
        | 0x1780..=0x17FF        // Khmer
        | 0x3040..=0x30FF        // Hiragana, Katakana
        | 0x3400..=0x4DBF        // CJK extension A
        | 0x4E00..=0x9FFF        // CJK unified ideographs
        | 0xF900..=0xFAFF        // CJK compatibility ideographs
        | 0x20000..=0x2FA1F) // CJK extensions B–F, compatibility supplement
}

/// Tokens of normalized text: space-separated words, with every character of an unspaced script
/// (see [`is_unspaced_script`]) a token of its own.
pub fn tokens(normalized: &str) -> impl Iterator<Item = &str> {
    normalized
        .split(' ')
        .filter(|w| !w.is_empty())
        .flat_map(split_unspaced)
}

fn split_unspaced(word: &str) -> Box<dyn Iterator<Item = &str> + '_> {
    if word.is_ascii() {
        return Box::new(std::iter::once(word));
    }
    let mut rest = word;
    Box::new(std::iter::from_fn(move || {
        let first = rest.chars().next()?;
        let end = if is_unspaced_script(first) {
            first.len_utf8()
        } else {
            rest.find(is_unspaced_script).unwrap_or(rest.len())
        };
        let (token, tail) = rest.split_at(end);
        rest = tail;
        Some(token)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_case_accents_digits_punctuation_and_space() {
        assert_eq!(
            normalize("  Héllo, WORLD!!  It's 2024-05-31\n\tÇa va?"),
            "hello world it s 0 0 0 ca va"
        );
        assert_eq!(normalize("ＦＵＬＬ　ｗｉｄｔｈ １２３"), "full width 0");
        assert_eq!(normalize("Straße ﬁne"), "straße fine");
        assert_eq!(normalize("你好，世界。２０２４年"), "你好 世界 0年");
        assert_eq!(
            normalize("한국어 텍스트"),
            "한국어 텍스트",
            "Hangul is not decomposed"
        );
        assert_eq!(normalize("がぎ"), "がぎ", "kana keep their voicing marks");
        assert_eq!(normalize("...!!!"), "");
    }

    #[test]
    fn a_number_is_one_zero_whatever_its_digits() {
        assert_eq!(normalize("page 99 of 100"), normalize("page 100 of 250"));
        assert_eq!(normalize("v3.14, 2,5 users"), "v0 0 users");
        assert_eq!(
            normalize("1,000,000 and 1.2.3"),
            "0 0 and 0 0",
            "one separator per number, as datatrove's regex"
        );
        assert_eq!(normalize("pi is 3. next"), "pi is 0 next");
        assert_eq!(normalize("mp3 and 3d"), "mp0 and 0d");
        assert_eq!(
            normalize("1.x"),
            "0 x",
            "a separator not followed by a digit splits"
        );
    }

    #[test]
    fn unspaced_scripts_become_character_tokens() {
        let n = normalize("数据去重 is 重要的 step");
        let t: Vec<&str> = tokens(&n).collect();
        assert_eq!(t, ["数", "据", "去", "重", "is", "重", "要", "的", "step"]);
        let mixed: Vec<&str> = tokens("gpu加速ok").collect();
        assert_eq!(mixed, ["gpu", "加", "速", "ok"]);
    }
}

//! What the rules share about one document: its text, its language and its words, split once
//! (datatrove caches `split_into_words` for the same reason).

use std::cell::OnceCell;

use bumpalo::Bump;

use super::ref_data::{PUNCTUATION, TERMINAL_PUNCTUATION};
use super::words::split_words;

/// One document as the rules see it.
pub struct Ctx<'a> {
    pub text: &'a str,
    /// ISO 639-1 code choosing the word splitter.
    pub lang: &'a str,
    /// Holds the words a splitter builds rather than slices from `text` (see [`split_words`]).
    spill: &'a Bump,
    words: OnceCell<Vec<&'a str>>,
}

impl<'a> Ctx<'a> {
    pub fn new(text: &'a str, lang: &'a str, spill: &'a Bump) -> Self {
        Ctx {
            text,
            lang,
            spill,
            words: OnceCell::new(),
        }
    }

    /// The document's words (computed on first use).
    pub fn words(&self) -> &[&'a str] {
        self.words.get_or_init(|| {
            let mut out = Vec::with_capacity(self.text.len() / 5);
            split_words(self.text, self.lang, self.spill, &mut out);
            out
        })
    }
}

/// Member of datatrove's `PUNCTUATION_SET`.
pub fn is_datatrove_punct(c: char) -> bool {
    if c.is_ascii() {
        return ASCII_PUNCTUATION >> c as u32 & 1 == 1;
    }
    PUNCTUATION.binary_search(&c).is_ok()
}

/// Member of datatrove's `TERMINAL_PUNCTUATION`.
pub fn is_terminal_punct(c: char) -> bool {
    if c.is_ascii() {
        return ASCII_TERMINAL_PUNCTUATION >> c as u32 & 1 == 1;
    }
    TERMINAL_PUNCTUATION.binary_search(&c).is_ok()
}

/// The ASCII members of a set, as a bit mask.
const fn ascii_mask(set: &[char]) -> u128 {
    let (mut mask, mut i) = (0u128, 0);
    while i < set.len() {
        if set[i].is_ascii() {
            mask |= 1 << set[i] as u32;
        }
        i += 1;
    }
    mask
}

const ASCII_PUNCTUATION: u128 = ascii_mask(PUNCTUATION);
const ASCII_TERMINAL_PUNCTUATION: u128 = ascii_mask(TERMINAL_PUNCTUATION);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn punctuation_sets_hold_the_expected_marks() {
        assert!(is_datatrove_punct('.') && is_datatrove_punct('…') && is_datatrove_punct('。'));
        assert!(!is_datatrove_punct('a') && !is_datatrove_punct(' '));
        assert!(is_terminal_punct('.') && is_terminal_punct('？') && !is_terminal_punct('"'));
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            assert_eq!(is_datatrove_punct(c), PUNCTUATION.contains(&c), "{c:?}");
            assert_eq!(
                is_terminal_punct(c),
                TERMINAL_PUNCTUATION.contains(&c),
                "{c:?}"
            );
        }
    }

    #[test]
    fn words_are_split_once_and_cached() {
        let spill = Bump::new();
        let ctx = Ctx::new("Hello, world.", "en", &spill);
        assert_eq!(ctx.words(), ["Hello", ",", "world", "."]);
        assert!(std::ptr::eq(ctx.words(), ctx.words()));
    }
}

//! Unicode general categories for the hand-written pre-tokenizers, and `\w` for added tokens: one
//! flag byte per code point, built once from regex-syntax's tables (the classes the reference
//! regexes use).

use regex_syntax::hir::{Class, HirKind};
use std::sync::LazyLock;

/// `\p{L}`: letters.
pub const LETTER: u8 = 1;
/// `\p{M}`: combining marks.
pub const MARK: u8 = 2;
/// `\p{N}`: numbers.
pub const NUMBER: u8 = 4;
/// `\p{P}`: punctuation.
pub const PUNCT: u8 = 8;
/// `\p{S}`: symbols.
pub const SYMBOL: u8 = 16;
/// `\s`: Unicode White_Space.
pub const SPACE: u8 = 32;
/// DeepSeek-V3's `[一-龥぀-ゟ゠-ヿ]`: CJK ideographs, hiragana, katakana.
pub const CJK: u8 = 64;
/// `\w` as the `regex` crate defines it, which HF's added-token `single_word` check uses.
pub const WORD: u8 = 128;

static TABLE: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let mut table = vec![0u8; 0x11_0000];
    for (class, flag) in [
        (r"\p{L}", LETTER),
        (r"\p{M}", MARK),
        (r"\p{N}", NUMBER),
        (r"\p{P}", PUNCT),
        (r"\p{S}", SYMBOL),
        (r"\s", SPACE),
        (r"[一-龥぀-ゟ゠-ヿ]", CJK),
        (r"\w", WORD),
    ] {
        let hir = regex_syntax::Parser::new()
            .parse(class)
            .expect("static class parses");
        let HirKind::Class(Class::Unicode(set)) = hir.kind() else {
            unreachable!("a Unicode class parses to a Unicode class")
        };
        for range in set.ranges() {
            for entry in &mut table[range.start() as usize..=range.end() as usize] {
                *entry |= flag;
            }
        }
    }
    table
});

/// The category flags of `c`.
#[inline]
pub fn flags(c: char) -> u8 {
    TABLE[c as usize]
}

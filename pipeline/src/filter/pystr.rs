//! Python `str` semantics the datatrove rules rely on (`splitlines`, `strip`, `split`,
//! `isalpha`, `len` in code points), so thresholds mean the same thing here as there.

use super::ref_data::PY_ALPHA_RANGES;

/// Python's `str.isspace()`: Unicode White_Space plus the ASCII information separators.
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.isalpha()` for one character: Unicode letters (categories L*), from a table
/// generated from Python. Rust's `is_alphabetic` also admits letter numbers and the vowel signs
/// of Thai and the Indic scripts (Unicode's Other_Alphabetic), which Python does not count.
pub fn is_py_alpha(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    in_ranges(PY_ALPHA_RANGES, c)
}

/// Whether `c` lies in one of `table`'s sorted, disjoint ranges of code points (a character
/// class generated from Python or spaCy). The tables start above ASCII, so most characters need
/// no search.
pub fn in_ranges(table: &[(u32, u32)], c: char) -> bool {
    let c = c as u32;
    if table.first().is_none_or(|&(lo, _)| c < lo) {
        return false;
    }
    let i = table.partition_point(|&(_, hi)| hi < c);
    table.get(i).is_some_and(|&(lo, _)| lo <= c)
}

/// Characters spaCy treats as quotes (its `LIST_QUOTES`).
pub fn is_quote(c: char) -> bool {
    matches!(
        c,
        '\'' | '"'
            | '”'
            | '“'
            | '`'
            | '‘'
            | '´'
            | '’'
            | '‚'
            | ','
            | '„'
            | '»'
            | '«'
            | '「'
            | '」'
            | '『'
            | '』'
            | '（'
            | '）'
            | '〔'
            | '〕'
            | '【'
            | '】'
            | '《'
            | '》'
            | '〈'
            | '〉'
            | '⟦'
            | '⟧'
    )
}

/// Python's `str.strip()`.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

/// Length in code points, as Python's `len(str)`.
pub fn char_len(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.chars().count()
    }
}

/// Python's `str.splitlines()`: breaks on \n, \r, \r\n, \v, \f, \x1c-\x1e, \x85, U+2028, U+2029;
/// no empty last line for a trailing break.
pub fn splitlines(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        // Eight ASCII bytes at or above 0x20 hold no break: skip them at once.
        if let Some(chunk) = bytes.get(i..i + 8) {
            let x = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
            if x & HIGH_BITS == 0 && !has_byte_below(x, 0x20) {
                i += 8;
                continue;
            }
        }
        // Byte length of the line break at `i`, 0 if none. Lead bytes 0xC2 (\x85) and 0xE2
        // (U+2028, U+2029) only ever start a character, so `i` is always a boundary.
        let brk = match bytes[i] {
            0x20..=0x7f => 0,
            b'\n' | 0x0b | 0x0c | 0x1c..=0x1e => 1,
            b'\r' => 1 + usize::from(bytes.get(i + 1) == Some(&b'\n')),
            0xC2 if bytes.get(i + 1) == Some(&0x85) => 2,
            0xE2 if bytes.get(i + 1) == Some(&0x80)
                && matches!(bytes.get(i + 2), Some(0xA8 | 0xA9)) =>
            {
                3
            }
            _ => 0,
        };
        if brk == 0 {
            i += 1;
        } else {
            out.push(&s[start..i]);
            i += brk;
            start = i;
        }
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

const LOW_BITS: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// Whether a byte of `x` is below `n` (at most 128): the classic SWAR test, exact as a yes/no
/// answer.
#[inline]
fn has_byte_below(x: u64, n: u8) -> bool {
    x.wrapping_sub(LOW_BITS * u64::from(n)) & !x & HIGH_BITS != 0
}

/// ASCII bytes Python's `str.isspace()` accepts: \t \n \v \f \r, \x1c-\x1f and the space.
const fn is_ascii_py_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0x1c..=0x1f | b' ')
}

/// Python's `str.split()`: the non-empty runs of `s` between whitespace.
pub fn split_py_space(s: &str) -> SplitPySpace<'_> {
    SplitPySpace { s, pos: 0 }
}

/// Iterator of [`split_py_space`].
pub struct SplitPySpace<'a> {
    s: &'a str,
    pos: usize,
}

/// Per byte: 0 inside a word, 1 an ASCII space, 2 a lead byte that may start non-ASCII
/// whitespace (0xC2: U+0085, U+00A0; 0xE1: U+1680; 0xE2: U+2000–U+205F; 0xE3: U+3000). Lead
/// bytes are never continuation bytes, so stepping one byte over anything else stays on track.
const SPACE_CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = if is_ascii_py_space(b as u8) {
            1
        } else if matches!(b, 0xC2 | 0xE1 | 0xE2 | 0xE3) {
            2
        } else {
            0
        };
        b += 1;
    }
    t
};

impl SplitPySpace<'_> {
    /// Byte length of the whitespace character at `i`, 0 if it is not whitespace.
    #[inline(always)]
    fn space_at(&self, i: usize) -> usize {
        match SPACE_CLASS[self.s.as_bytes()[i] as usize] {
            0 => 0,
            1 => 1,
            _ => {
                let c = self.s[i..]
                    .chars()
                    .next()
                    .expect("a lead byte starts a character");
                if is_py_space(c) {
                    c.len_utf8()
                } else {
                    0
                }
            }
        }
    }
}

impl<'a> Iterator for SplitPySpace<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        let bytes = self.s.as_bytes();
        let len = bytes.len();
        let mut i = self.pos;
        loop {
            if i >= len {
                self.pos = i;
                return None;
            }
            match self.space_at(i) {
                0 => break,
                w => i += w,
            }
        }
        let start = i;
        i += 1;
        loop {
            if let Some(chunk) = bytes.get(i..i + 8) {
                // Step over ASCII bytes above the space eight at a time, then to the first byte
                // that is not one (the lowest flag of the SWAR test is exact).
                let x = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
                let flags = x.wrapping_sub(LOW_BITS * 0x21) & !x & HIGH_BITS | x & HIGH_BITS;
                if flags == 0 {
                    i += 8;
                    continue;
                }
                i += (flags.trailing_zeros() / 8) as usize;
            } else if i >= len {
                break;
            }
            if SPACE_CLASS[bytes[i] as usize] != 0 && self.space_at(i) != 0 {
                break;
            }
            i += 1;
        }
        self.pos = i;
        Some(&self.s[start..i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitlines_matches_python() {
        assert_eq!(
            splitlines("a\nb\r\nc\rd\u{2028}e\n"),
            ["a", "b", "c", "d", "e"]
        );
        assert_eq!(splitlines("a\n\nb"), ["a", "", "b"]);
        assert!(splitlines("").is_empty());
        assert_eq!(splitlines("\n"), [""]);
    }

    #[test]
    fn split_py_space_matches_the_char_test() {
        let text = "a b\u{85}c\u{a0}d\u{1680}e\u{2000}f\u{200a}g\u{2028}h\u{202f}i\u{205f}j\u{3000}k\u{1f}l\
                    \u{200b}m\u{e1}n\u{2010}o\u{3001}p  \t\n q\u{1c}";
        let by_char: Vec<&str> = text.split(is_py_space).filter(|w| !w.is_empty()).collect();
        assert_eq!(split_py_space(text).collect::<Vec<_>>(), by_char);
        assert_eq!(by_char.len(), 13);
        assert_eq!(split_py_space("").count(), 0);
        assert_eq!(split_py_space(" \u{3000} ").count(), 0);
        // Long words on both sides, so that the eight-byte steps meet the character anywhere.
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            let pad = &"abcdefghijklmnopq"[..1 + c as usize % 9];
            let s = format!("{pad}{c}ijklmnopqrstuv{c}a{c}");
            let n = if is_py_space(c) { 3 } else { 1 };
            assert_eq!(split_py_space(&s).count(), n, "{c:?}");
        }
    }

    #[test]
    fn splitlines_breaks_on_every_python_break() {
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            let pad = &"abcdefghijklmnopq"[..1 + c as usize % 9];
            let s = format!("{pad}{c}ijklmnopqrstuv");
            let breaks = matches!(
                c,
                '\n' | '\r' | '\u{0b}' | '\u{0c}' | '\u{1c}'
                    ..='\u{1e}' | '\u{85}' | '\u{2028}' | '\u{2029}'
            );
            assert_eq!(splitlines(&s).len(), 1 + usize::from(breaks), "{c:?}");
        }
        assert_eq!(splitlines("a\r\n\r\nb\r"), ["a", "", "b"]);
    }

    #[test]
    fn strip_alpha_and_len_follow_python() {
        assert_eq!(py_strip("\u{1f} x \u{3000}"), "x");
        assert!(is_py_alpha('é') && is_py_alpha('中') && !is_py_alpha('1') && !is_py_alpha('Ⅻ'));
        // Thai and Devanagari vowel signs are marks to Python, letters to Unicode's Alphabetic.
        assert!(is_py_alpha('ก') && !is_py_alpha('\u{e31}') && !is_py_alpha('\u{e34}'));
        assert!(is_py_alpha('क') && !is_py_alpha('\u{93e}') && !is_py_alpha('\u{bbe}'));
        assert!('\u{e31}'.is_alphabetic() && '\u{93e}'.is_alphabetic());
        assert_eq!(char_len("héllo"), 5);
    }
}

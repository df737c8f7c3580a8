//! datatrove's MinHash signature (its `MinhashDedupSignature`, version 0.10), reproduced to the
//! bit, for `scheme = "datatrove"`: users who validated a corpus with datatrove can switch to
//! whale and get the same duplicate clusters, and the benchmark can compare like with like.
//!
//! The definition: `simplify_text` (lowercase, numbers → `0`, datatrove's punctuation list →
//! space, whitespace collapsed, NFD with nonspacing marks dropped), spaCy's English word
//! tokenizer (whale's replica in `filter::words`), shingles = xxh64 of 5 words joined by one
//! space (none for a text of fewer words), and 112 permutations `(a·x + b mod 2^64) mod (2^61 − 1)`
//! whose `a`, `b` are drawn by numpy's legacy `RandomState(seed).randint` (MT19937).

use std::sync::OnceLock;

use bumpalo::Bump;
use regex::Regex;
use unicode_normalization::UnicodeNormalization;
use xxhash_rust::xxh64::xxh64;

use crate::filter::pystr::is_py_space;
use crate::filter::words::split_words;

/// The Mersenne prime 2^61 − 1 that datatrove's permutations reduce modulo.
pub const MERSENNE_PRIME: u64 = (1 << 61) - 1;

/// `x mod (2^61 − 1)` for any 64-bit `x`, without a division: 2^61 ≡ 1.
#[inline(always)]
pub fn mod_mersenne(x: u64) -> u64 {
    let r = (x & MERSENNE_PRIME) + (x >> 61);
    if r >= MERSENNE_PRIME {
        r - MERSENNE_PRIME
    } else {
        r
    }
}

/// `a` and `b` of `count` permutations as datatrove draws them: `RandomState(seed)`, then
/// `randint(1, p, size=count)` for `a` and `randint(0, p, size=count)` for `b`.
pub fn permutations(seed: u64, count: usize) -> (Vec<u64>, Vec<u64>) {
    let mut rng = NumpyRandomState::new(seed as u32);
    let a = (0..count).map(|_| rng.randint(1, MERSENNE_PRIME)).collect();
    let b = (0..count).map(|_| rng.randint(0, MERSENNE_PRIME)).collect();
    (a, b)
}

/// Sorted, distinct shingle hashes of `text` under datatrove's definition (`ngram` spaCy words
/// joined by a space, xxh64 with seed 0); empty for a text of fewer than `ngram` words, which
/// datatrove gives no signature and so never deduplicates.
pub fn shingles(text: &str, ngram: usize) -> Vec<u64> {
    let simple = simplify_text(text);
    let (spill, mut words) = (Bump::new(), Vec::new());
    split_words(&simple, "en", &spill, &mut words);
    if words.len() < ngram {
        return Vec::new();
    }
    let mut joined = String::new();
    let mut out: Vec<u64> = words
        .windows(ngram)
        .map(|w| {
            joined.clear();
            for (i, word) in w.iter().enumerate() {
                if i > 0 {
                    joined.push(' ');
                }
                joined.push_str(word);
            }
            xxh64(joined.as_bytes(), 0)
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// datatrove's `simplify_text` with its default `TextNormConfig`, step by step in its order.
pub fn simplify_text(text: &str) -> String {
    static NUMBER: OnceLock<Regex> = OnceLock::new();
    static NONSPACING: OnceLock<Regex> = OnceLock::new();
    let number = NUMBER
        .get_or_init(|| Regex::new(r"\p{Nd}+([.,،٫⎖⎗⎘]\p{Nd}+)?").expect("valid number pattern"));
    let lower = text.to_lowercase();
    let numbered = number.replace_all(&lower, "0");
    // Punctuation → space, then strip and collapse whitespace runs (Python's `\s`).
    let mut collapsed = String::with_capacity(numbered.len());
    let mut space = false;
    for c in numbered.chars() {
        let c = if is_punctuation(c) { ' ' } else { c };
        if is_py_space(c) {
            space = true;
        } else {
            if space && !collapsed.is_empty() {
                collapsed.push(' ');
            }
            space = false;
            collapsed.push(c);
        }
    }
    if collapsed.is_ascii() {
        return collapsed; // NFD of ASCII is itself and has no marks
    }
    let nonspacing = NONSPACING.get_or_init(|| Regex::new(r"\p{Mn}+").expect("valid Mn pattern"));
    let decomposed: String = collapsed.nfd().collect();
    nonspacing
        .replace_all(&decomposed, "")
        .trim_matches(is_py_space)
        .to_string()
}

/// datatrove's `PUNCTUATION` string plus the control characters it appends (not its separate
/// list of terminal punctuation, which `simplify_text` does not use).
fn is_punctuation(c: char) -> bool {
    const MARKS: &str =
        "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»";
    static SORTED: OnceLock<Vec<char>> = OnceLock::new();
    let u = c as u32;
    if u < 9 || (11..32).contains(&u) || (127..160).contains(&u) {
        return true;
    }
    if c.is_ascii_alphanumeric() || c == ' ' {
        return false;
    }
    SORTED
        .get_or_init(|| {
            let mut v: Vec<char> = MARKS.chars().collect();
            v.sort_unstable();
            v
        })
        .binary_search(&c)
        .is_ok()
}

/// numpy's legacy `RandomState`: MT19937 seeded by `init_genrand`, 64-bit draws as two 32-bit
/// outputs (high word first), bounded integers by masked rejection sampling.
struct NumpyRandomState {
    key: [u32; 624],
    pos: usize,
}

impl NumpyRandomState {
    fn new(seed: u32) -> NumpyRandomState {
        let mut key = [0u32; 624];
        key[0] = seed;
        for i in 1..624 {
            key[i] = 1_812_433_253u32
                .wrapping_mul(key[i - 1] ^ (key[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        NumpyRandomState { key, pos: 624 }
    }

    fn next_u32(&mut self) -> u32 {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        const MATRIX: u32 = 0x9908_b0df;
        if self.pos == 624 {
            for i in 0..624 {
                let y = (self.key[i] & UPPER) | (self.key[(i + 1) % 624] & LOWER);
                let mag = if y & 1 == 1 { MATRIX } else { 0 };
                self.key[i] = self.key[(i + 397) % 624] ^ (y >> 1) ^ mag;
            }
            self.pos = 0;
        }
        let mut y = self.key[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    fn next_u64(&mut self) -> u64 {
        let high = self.next_u32() as u64;
        (high << 32) | self.next_u32() as u64
    }

    /// `randint(low, high, dtype=uint64)` for a range wider than 32 bits (numpy draws narrower
    /// ranges from 32-bit outputs, which datatrove's 61-bit range never needs).
    fn randint(&mut self, low: u64, high: u64) -> u64 {
        let range = high - 1 - low;
        assert!(range > u32::MAX as u64, "only ranges wider than 32 bits");
        let mask = u64::MAX >> range.leading_zeros();
        loop {
            let v = self.next_u64() & mask;
            if v <= range {
                return low + v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `np.random.RandomState(1).randint(...)` as datatrove calls it, printed by numpy 2.4.
    #[test]
    fn permutations_equal_numpys() {
        let (a, b) = permutations(1, 112);
        assert_eq!(
            a[..3],
            [775169054918279404, 1758426461858698313, 2109959069025162]
        );
        assert_eq!(a[111], 223865076026037746);
        assert_eq!(
            b[..3],
            [
                1062448801025099917,
                1324811268927594100,
                1217488311597731462
            ]
        );
        assert_eq!(b[111], 1097409548522419201);
    }

    #[test]
    fn mersenne_reduction_is_a_true_modulo() {
        for x in [
            0,
            1,
            MERSENNE_PRIME - 1,
            MERSENNE_PRIME,
            MERSENNE_PRIME + 5,
            u64::MAX,
        ] {
            assert_eq!(mod_mersenne(x), x % MERSENNE_PRIME, "{x}");
        }
    }

    /// Outputs of datatrove 0.10.1's `simplify_text`.
    #[test]
    fn simplify_text_equals_datatroves() {
        assert_eq!(
            simplify_text("Héllo, WORLD!! It’s 2024-05-31 3.14 1,000,000 パッケージ §5 © ·x"),
            "hello world it s 0 0 0 0 0 0 ハッケーシ §0 © ·x"
        );
        assert_eq!(simplify_text("  \t\n"), "");
    }

    /// Shingle hashes of datatrove 0.10.1's `MinhashDedupSignature.get_shingles` (English spaCy
    /// tokenizer, xxhash 3 `xxh64_intdigest`).
    #[test]
    fn shingles_equal_datatroves() {
        assert_eq!(xxh64(b"hello world foo bar baz", 0), 5587187255992174781);
        assert!(shingles("only four words here", 5).is_empty());
        assert_eq!(
            shingles("Hello, world foo bar baz!", 5),
            [5587187255992174781]
        );
    }
}

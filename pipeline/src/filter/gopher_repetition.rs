//! Gopher repetition rules (Rae et al. 2021, Table A1) with datatrove's
//! `GopherRepetitionFilter` semantics: paragraphs split on 2+ newlines after strip, lines on 1+
//! newlines, top n-grams joined with spaces, duplicate n-grams joined without, fractions of the
//! document's length in code points.

use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use super::pystr::{char_len, py_strip};
use super::text::Ctx;

/// Thresholds; a zero disables that test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GopherRepetition {
    pub enabled: bool,
    pub dup_line_frac: f64,
    pub dup_para_frac: f64,
    pub dup_line_char_frac: f64,
    pub dup_para_char_frac: f64,
    /// `[n, max share]`: the most frequent n-gram's characters × count over the document's.
    pub top_n_grams: Vec<(usize, f64)>,
    /// `[n, max share]`: characters in repeated n-grams over the document's.
    pub dup_n_grams: Vec<(usize, f64)>,
}

impl Default for GopherRepetition {
    fn default() -> Self {
        GopherRepetition {
            enabled: true,
            dup_line_frac: 0.3,
            dup_para_frac: 0.3,
            dup_line_char_frac: 0.2,
            dup_para_char_frac: 0.2,
            top_n_grams: vec![(2, 0.2), (3, 0.18), (4, 0.16)],
            dup_n_grams: vec![
                (5, 0.15),
                (6, 0.14),
                (7, 0.13),
                (8, 0.12),
                (9, 0.11),
                (10, 0.10),
            ],
        }
    }
}

/// Number of repeated elements and their characters (datatrove's `find_duplicates`).
pub fn find_duplicates<'a>(items: impl IntoIterator<Item = &'a str>) -> (usize, usize) {
    let mut seen = FxHashSet::default();
    let (mut n, mut chars) = (0, 0);
    for item in items {
        if !seen.insert(item) {
            n += 1;
            chars += char_len(item);
        }
    }
    (n, chars)
}

/// Words as small integers, so n-grams hash and compare as `[u32]` slices; `lens[id]` is the
/// word's length in code points, `strs[id]` the word.
struct Interned<'a> {
    ids: Vec<u32>,
    lens: Vec<usize>,
    strs: Vec<&'a str>,
}

fn intern<'a>(words: &[&'a str]) -> Interned<'a> {
    let mut index: FxHashMap<&str, u32> =
        FxHashMap::with_capacity_and_hasher(words.len().min(1 << 16), Default::default());
    let (mut lens, mut strs) = (Vec::new(), Vec::new());
    let ids = words
        .iter()
        .map(|w| {
            *index.entry(w).or_insert_with(|| {
                lens.push(char_len(w));
                strs.push(*w);
                (lens.len() - 1) as u32
            })
        })
        .collect();
    Interned { ids, lens, strs }
}

impl Interned<'_> {
    fn chars(&self, gram: &[u32]) -> usize {
        gram.iter().map(|&id| self.lens[id as usize]).sum()
    }
}

/// How datatrove turns an n-gram into the string it compares: top n-grams are joined with
/// spaces, duplicate n-grams without a separator, so two different runs of words that spell the
/// same characters ("tahanShift ketika" and "tahan Shiftketika") are one n-gram there. Joined
/// with spaces, different words are different strings unless a word holds a space itself, as
/// Vietnamese words do ("thư viện" "mới" and "thư" "viện mới").
#[derive(Clone, Copy, PartialEq, Eq)]
enum Join {
    Spaced,
    Glued,
}

impl Join {
    fn separator(self) -> &'static str {
        match self {
            Join::Spaced => " ",
            Join::Glued => "",
        }
    }
}

/// The document's n-grams for one `n` at a time, in an open-addressing table of first
/// positions. Hashes come from prefix sums of a polynomial hash, so every n-gram's hash costs
/// O(1) whatever `n`; equal hashes are confirmed by comparing the words (or their characters).
struct Grams<'w> {
    words: &'w Interned<'w>,
    /// `prefix[i]`: polynomial hash of `words.ids[..i]`.
    prefix: Vec<u64>,
    /// A hash over the n-grams' text as `join` builds it, where comparing words is not the
    /// same: always for [`Join::Glued`], for [`Join::Spaced`] when a word holds a space.
    text: Option<(Join, GluedHash)>,
    /// Whether some word holds a space (joined with spaces, words then differ from text).
    spaced_words: bool,
    n: usize,
    /// `BASE^n`.
    base_n: u64,
    /// Slots of earlier generations (earlier `n`) count as empty: starting over clears nothing.
    slots: Vec<Slot>,
    generation: u32,
    shift: u32,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    generation: u32,
    /// Position of the n-gram's first occurrence.
    pos: u32,
    /// Low bits of the n-gram's hash.
    tag: u32,
    count: u32,
}

/// Odd, so every power of it is invertible modulo 2^64 (which [`GluedHash`] relies on).
const BASE: u64 = 0x9E37_79B9_7F4A_7C15;

/// A polynomial hash over the bytes of the words joined as [`Join`] says (each word followed
/// by a space for [`Join::Spaced`], which adds the same trailing space to every n-gram), with
/// each word's share
/// precomputed: `prefix[i]` hashes words `..i`, and `scale[i]` / `unscale[i]` are `BASE` to the
/// power of their byte length and its inverse, so any run of words hashes in O(1).
struct GluedHash {
    prefix: Vec<u64>,
    scale: Vec<u64>,
    unscale: Vec<u64>,
}

impl GluedHash {
    fn new(words: &Interned<'_>, join: Join) -> GluedHash {
        let separator = join.separator().as_bytes();
        // Per distinct word: the hash of its bytes and BASE^(its length).
        let parts: Vec<(u64, u64)> = words
            .strs
            .iter()
            .map(|w| {
                w.bytes()
                    .chain(separator.iter().copied())
                    .fold((0u64, 1u64), |(h, p), b| {
                        (
                            h.wrapping_mul(BASE).wrapping_add(u64::from(b) + 1),
                            p.wrapping_mul(BASE),
                        )
                    })
            })
            .collect();
        let n = words.ids.len();
        let (mut prefix, mut scale, mut unscale) = (
            Vec::with_capacity(n + 1),
            Vec::with_capacity(n + 1),
            Vec::with_capacity(n + 1),
        );
        let (mut h, mut p, mut q) = (0u64, 1u64, 1u64);
        let inverses: Vec<u64> = parts.iter().map(|&(_, p)| inverse(p)).collect();
        for &id in &words.ids {
            prefix.push(h);
            scale.push(p);
            unscale.push(q);
            let (wh, wp) = parts[id as usize];
            h = h.wrapping_mul(wp).wrapping_add(wh);
            p = p.wrapping_mul(wp);
            q = q.wrapping_mul(inverses[id as usize]);
        }
        prefix.push(h);
        scale.push(p);
        unscale.push(q);
        GluedHash {
            prefix,
            scale,
            unscale,
        }
    }

    /// Hash of the bytes of words `i..j` glued.
    fn range(&self, i: usize, j: usize) -> u64 {
        let span = self.scale[j].wrapping_mul(self.unscale[i]);
        self.prefix[j].wrapping_sub(self.prefix[i].wrapping_mul(span))
    }
}

/// The inverse of odd `a` modulo 2^64 (Newton's iteration doubles the correct bits each step).
fn inverse(a: u64) -> u64 {
    let mut x = a;
    for _ in 0..5 {
        x = x.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(x)));
    }
    x
}

impl<'w> Grams<'w> {
    fn new(words: &'w Interned<'w>) -> Self {
        let ids = &words.ids[..];
        let mut prefix = Vec::with_capacity(ids.len() + 1);
        let mut h = 0u64;
        prefix.push(h);
        for &id in ids {
            let x = (u64::from(id) + 1).wrapping_mul(0xD6E8_FEB8_6659_FD93);
            h = h.wrapping_mul(BASE).wrapping_add(x ^ (x >> 29));
            prefix.push(h);
        }
        // Load factor at most 1/2 for the largest number of n-grams (n = 1 bounds them all).
        let bits = (2 * ids.len().max(1))
            .next_power_of_two()
            .trailing_zeros()
            .max(4);
        Grams {
            words,
            prefix,
            text: None,
            spaced_words: words.strs.iter().any(|w| w.contains(' ')),
            n: 0,
            base_n: 1,
            slots: vec![Slot::default(); 1 << bits],
            generation: 0,
            shift: 64 - bits,
        }
    }

    /// Starts over with n-grams of `n` words, compared as `join` says.
    fn reset(&mut self, n: usize, join: Join) {
        let by_text = join == Join::Glued || self.spaced_words;
        if by_text && self.text.as_ref().map(|t| t.0) != Some(join) {
            self.text = Some((join, GluedHash::new(self.words, join)));
        } else if !by_text {
            self.text = None;
        }
        self.n = n;
        self.base_n = (0..n).fold(1u64, |b, _| b.wrapping_mul(BASE));
        self.generation += 1;
    }

    /// The slot of the n-gram at `i` and whether it was new: the slot holding an equal
    /// n-gram, or an empty one taken for it (first seen at `i`, count 0).
    fn slot(&mut self, i: usize) -> (&mut Slot, bool) {
        let n = self.n;
        let h = match &self.text {
            Some((_, text)) => text.range(i, i + n),
            None => self.prefix[i + n].wrapping_sub(self.prefix[i].wrapping_mul(self.base_n)),
        };
        let h = (h ^ (h >> 32)).wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        let tag = h as u32;
        let mask = self.slots.len() - 1;
        let mut at = (h >> self.shift) as usize;
        let gram = &self.words.ids[i..i + n];
        loop {
            let s = self.slots[at];
            if s.generation != self.generation {
                let generation = self.generation;
                let s = &mut self.slots[at];
                *s = Slot {
                    generation,
                    pos: i as u32,
                    tag,
                    count: 0,
                };
                return (s, true);
            }
            if s.tag == tag && self.equal(s.pos as usize, gram) {
                return (&mut self.slots[at], false);
            }
            at = (at + 1) & mask;
        }
    }
}

impl Grams<'_> {
    /// Whether the n-gram at `pos` is `gram`: the same words, or the same text as `join`
    /// builds it.
    fn equal(&self, pos: usize, gram: &[u32]) -> bool {
        let other = &self.words.ids[pos..pos + gram.len()];
        if same(other, gram) {
            return true;
        }
        let Some((join, _)) = self.text else {
            return false;
        };
        let text = |g: &[u32]| {
            let words: Vec<&str> = g.iter().map(|&id| self.words.strs[id as usize]).collect();
            words.join(join.separator())
        };
        text(other) == text(gram)
    }
}

/// Whether `a` starts with `gram`: a plain loop, as n-grams are short and a `memcmp` call costs
/// more than comparing them.
#[inline(always)]
fn same(a: &[u32], gram: &[u32]) -> bool {
    let a = &a[..gram.len()];
    let mut k = 0;
    while k < gram.len() && a[k] == gram[k] {
        k += 1;
    }
    k == gram.len()
}

/// Characters × count of the most frequent n-gram joined by spaces; ties go to the n-gram seen
/// first, as Python's `Counter.most_common(1)` does.
fn top_ngram_chars(words: &Interned, grams: &mut Grams, n: usize) -> usize {
    grams.reset(n, Join::Spaced);
    // The most frequent n-gram so far as (count, first position): counts grow one at a time,
    // so checking each n-gram as it is counted finds the largest count, and among n-grams
    // with that count the first seen.
    let mut best = (0u32, 0usize);
    for i in 0..=words.ids.len() - n {
        let (slot, _) = grams.slot(i);
        slot.count += 1;
        let (count, pos) = (slot.count, slot.pos as usize);
        if count > best.0 || (count == best.0 && pos < best.1) {
            best = (count, pos);
        }
    }
    let (count, pos) = best;
    (words.chars(&words.ids[pos..pos + n]) + n - 1) * count as usize
}

/// Characters in n-grams (joined without separator) already seen, skipping past each repeat
/// (datatrove's `find_all_duplicate`).
fn dup_ngram_chars(words: &Interned, grams: &mut Grams, n: usize) -> usize {
    let ids = &words.ids;
    grams.reset(n, Join::Glued);
    let (mut chars, mut i) = (0, 0);
    while i + n <= ids.len() {
        if grams.slot(i).1 {
            i += 1;
        } else {
            chars += words.chars(&ids[i..i + n]);
            i += n;
        }
    }
    chars
}

/// Python's `re.split(r"\n{2,}", s)`.
fn split_paragraphs(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, bytes) = (0, s.as_bytes());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\n' && bytes.get(i + 1) == Some(&b'\n') {
            let end = i;
            while i < bytes.len() && bytes[i] == b'\n' {
                i += 1;
            }
            out.push(&s[start..end]);
            start = i;
        } else {
            i += 1;
        }
    }
    out.push(&s[start..]);
    out
}

impl GopherRepetition {
    /// The reason datatrove would give for dropping the document, or `None` to keep it.
    pub fn check(&self, ctx: &Ctx) -> Option<String> {
        let text = ctx.text;
        if text.is_empty() {
            return Some("empty".into());
        }
        let text_len = char_len(text) as f64;
        let paragraphs = split_paragraphs(py_strip(text));
        let (n, chars) = find_duplicates(paragraphs.iter().copied());
        if self.dup_para_frac > 0.0 && n as f64 / paragraphs.len() as f64 > self.dup_para_frac {
            return Some("dup_para_frac".into());
        }
        if self.dup_para_char_frac > 0.0 && chars as f64 / text_len > self.dup_para_char_frac {
            return Some("dup_para_char_frac".into());
        }
        // re.split("\n+", text): runs of newlines are one break, empty ends are kept.
        let lines: Vec<&str> = split_newline_runs(text);
        let (n, chars) = find_duplicates(lines.iter().copied());
        if self.dup_line_frac > 0.0 && n as f64 / lines.len() as f64 > self.dup_line_frac {
            return Some("dup_line_frac".into());
        }
        if self.dup_line_char_frac > 0.0 && chars as f64 / text_len > self.dup_line_char_frac {
            return Some("dup_line_char_frac".into());
        }
        let words = intern(ctx.words());
        let mut grams = Grams::new(&words);
        for &(n, frac) in &self.top_n_grams {
            if n == 0 || words.ids.len() < n {
                continue;
            }
            if top_ngram_chars(&words, &mut grams, n) as f64 / text_len > frac {
                return Some(format!("top_{n}_gram"));
            }
        }
        for &(n, frac) in &self.dup_n_grams {
            if n == 0 {
                continue;
            }
            if n > words.ids.len() {
                continue;
            }
            if dup_ngram_chars(&words, &mut grams, n) as f64 / text_len > frac {
                return Some(format!("duplicated_{n}_n_grams"));
            }
        }
        None
    }
}

fn split_newline_runs(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('\n') {
        out.push(&rest[..i]);
        rest = rest[i..].trim_start_matches('\n');
    }
    out.push(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bumpalo::Bump;

    fn check(text: &str) -> Option<String> {
        GopherRepetition::default().check(&Ctx::new(text, "en", &Bump::new()))
    }

    const PARAS: [&str; 6] = [
        "The river rose quickly after the storm and the bridge closed for two days.",
        "Volunteers filled sandbags while the council met to discuss the damage.",
        "Schools reopened on Thursday, although several roads remained under water.",
        "Insurance assessors arrived from the capital to inspect flooded homes.",
        "A local bakery handed out bread to families who had lost their kitchens.",
        "Engineers say the old levee will need to be rebuilt before next winter.",
    ];

    #[test]
    fn keeps_varied_text() {
        assert_eq!(check(&PARAS.join("\n\n")), None);
    }

    #[test]
    fn each_test_can_fail() {
        let p = PARAS;
        let dup_para = [p[0], p[1], p[0], p[1], p[2]].join("\n\n");
        assert_eq!(check(&dup_para).as_deref(), Some("dup_para_frac"));
        let long = "The river rose quickly after the storm, and the bridge closed for two whole days while crews worked.";
        let para_chars = [long, p[1], p[2], long].join("\n\n");
        assert_eq!(check(&para_chars).as_deref(), Some("dup_para_char_frac"));
        let lines = [p[0], p[1], p[0], p[1], p[2]].join("\n");
        assert_eq!(check(&lines).as_deref(), Some("dup_line_frac"));
        let line_chars = [long, p[1], p[2], long].join("\n");
        assert_eq!(check(&line_chars).as_deref(), Some("dup_line_char_frac"));
        let top2 = format!(
            "{} {}",
            p[0], "big news big news big news big news big news big news"
        );
        assert_eq!(check(&top2).as_deref(), Some("top_2_gram"));
        let grams = format!(
            "{} {} {}",
            p[3],
            p[0],
            "one two three four five six seven eight nine ten eleven ".repeat(2)
        );
        assert!(
            check(&grams).is_some_and(|r| r.starts_with("duplicated_") || r.starts_with("top_")),
            "{grams}"
        );
        assert_eq!(check("").as_deref(), Some("empty"));
    }

    #[test]
    fn ngram_helpers_follow_datatrove() {
        let w = intern(&["a", "b", "a", "b", "a", "b"]);
        let mut grams = Grams::new(&w);
        assert_eq!(top_ngram_chars(&w, &mut grams, 2), 3 * 3);
        // grams: ab ba ab(dup, skip 2) ab(dup, skip 2) -> 2 + 2 chars
        assert_eq!(dup_ngram_chars(&w, &mut grams, 2), 4);
        // A tie goes to the n-gram seen first: "cc" and "ddd" both twice, "cc" first.
        let w = intern(&["x", "cc", "cc", "y", "ddd", "ddd", "z"]);
        let mut grams = Grams::new(&w);
        assert_eq!(top_ngram_chars(&w, &mut grams, 1), 2 * 2);
        assert_eq!(find_duplicates(["x", "yy", "x", "yy", "yy"]), (3, 5));
        // Glued, ", tahanShift ketika" repeats as ", tahan Shiftketika" (a real Indonesian
        // manual page, where datatrove counts it as a duplicate 5-gram).
        let w = intern(&[
            ",",
            "tahanShift",
            "ketika",
            "Anda",
            "menyeret",
            "x",
            ",",
            "tahan",
            "Shiftketika",
            "Anda",
            "menyeret",
        ]);
        let mut grams = Grams::new(&w);
        assert_eq!(dup_ngram_chars(&w, &mut grams, 5), 29);
        assert_eq!(
            top_ngram_chars(&w, &mut grams, 2),
            ("Anda".len() + "menyeret".len() + 1) * 2
        );
        // Joined with spaces, Vietnamese words that hold a space can spell the same n-gram:
        // "thư viện mới" twice.
        let w = intern(&["thư viện", "mới", "x", "thư", "viện mới"]);
        let mut grams = Grams::new(&w);
        assert_eq!(
            top_ngram_chars(&w, &mut grams, 2),
            "thư viện mới".chars().count() * 2
        );
        assert_eq!(split_paragraphs("a\n\n\nb\nc\n\nd"), ["a", "b\nc", "d"]);
        assert_eq!(split_newline_runs("\na\n\nb\n"), ["", "a", "b", ""]);
    }

    /// The n-gram table against plain hash maps of slices (datatrove's definitions read
    /// literally), on word sequences with few distinct words, so n-grams repeat and tie a lot.
    #[test]
    fn ngram_table_matches_plain_maps() {
        fn top_reference(w: &Interned, n: usize) -> usize {
            let mut counts: FxHashMap<String, (usize, usize)> = FxHashMap::default();
            for (i, gram) in w.ids.windows(n).enumerate() {
                let words: Vec<&str> = gram.iter().map(|&id| w.strs[id as usize]).collect();
                counts.entry(words.join(" ")).or_insert((0, i)).0 += 1;
            }
            let best = counts
                .iter()
                .max_by(|a, b| a.1 .0.cmp(&b.1 .0).then(b.1 .1.cmp(&a.1 .1)));
            best.map_or(0, |(joined, (count, _))| joined.chars().count() * count)
        }
        fn dup_reference(w: &Interned, n: usize) -> usize {
            let mut seen: FxHashSet<String> = FxHashSet::default();
            let (mut chars, mut i) = (0, 0);
            while i + n <= w.ids.len() {
                let gram = &w.ids[i..i + n];
                let glued: String = gram.iter().map(|&id| w.strs[id as usize]).collect();
                if seen.contains(&glued) {
                    chars += w.chars(gram);
                    i += n;
                } else {
                    seen.insert(glued);
                    i += 1;
                }
            }
            chars
        }
        // Words that glue into each other ("a" "bb" = "ab" "b"), so glued n-grams collide, and
        // Vietnamese-style words that hold a space ("a" "bb a" = "a bb" "a", joined with one).
        const VOCAB: [&str; 16] = [
            "a", "bb", "ab", "b", "a bb", "bb a", "ccc", "the", "of", "and", "é", "中文", "中",
            "文", "x", "yy",
        ];
        let mut next = super::super::test_rng(0x2545_F491_4F6C_DD1Du64);
        for round in 0..300 {
            let (len, vocab) = (next(400) + 1, 2 + round % 15);
            let text: Vec<&str> = (0..len).map(|_| VOCAB[next(vocab)]).collect();
            let w = intern(&text);
            let mut grams = Grams::new(&w);
            for n in 1..=10.min(len) {
                assert_eq!(top_ngram_chars(&w, &mut grams, n), top_reference(&w, n));
                assert_eq!(dup_ngram_chars(&w, &mut grams, n), dup_reference(&w, n));
            }
        }
    }
}

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
/// word's length in code points.
struct Interned {
    ids: Vec<u32>,
    lens: Vec<usize>,
}

fn intern(words: &[&str]) -> Interned {
    let mut index: FxHashMap<&str, u32> =
        FxHashMap::with_capacity_and_hasher(words.len().min(1 << 16), Default::default());
    let mut lens = Vec::new();
    let ids = words
        .iter()
        .map(|w| {
            *index.entry(w).or_insert_with(|| {
                lens.push(char_len(w));
                (lens.len() - 1) as u32
            })
        })
        .collect();
    Interned { ids, lens }
}

impl Interned {
    fn chars(&self, gram: &[u32]) -> usize {
        gram.iter().map(|&id| self.lens[id as usize]).sum()
    }
}

/// The document's n-grams for one `n` at a time, in an open-addressing table of first
/// positions. Hashes come from prefix sums of a polynomial hash, so every n-gram's hash costs
/// O(1) whatever `n`; equal hashes are confirmed by comparing the words.
struct Grams<'w> {
    ids: &'w [u32],
    /// `prefix[i]`: polynomial hash of `ids[..i]`.
    prefix: Vec<u64>,
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

const BASE: u64 = 0x9E37_79B9_7F4A_7C15;

impl<'w> Grams<'w> {
    fn new(ids: &'w [u32]) -> Self {
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
            ids,
            prefix,
            n: 0,
            base_n: 1,
            slots: vec![Slot::default(); 1 << bits],
            generation: 0,
            shift: 64 - bits,
        }
    }

    /// Starts over with n-grams of `n` words.
    fn reset(&mut self, n: usize) {
        self.n = n;
        self.base_n = (0..n).fold(1u64, |b, _| b.wrapping_mul(BASE));
        self.generation += 1;
    }

    /// The slot of the n-gram at `i` and whether it was new: the slot holding an equal
    /// n-gram, or an empty one taken for it (first seen at `i`, count 0).
    fn slot(&mut self, i: usize) -> (&mut Slot, bool) {
        let n = self.n;
        let h = self.prefix[i + n].wrapping_sub(self.prefix[i].wrapping_mul(self.base_n));
        let h = (h ^ (h >> 32)).wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        let tag = h as u32;
        let mask = self.slots.len() - 1;
        let mut at = (h >> self.shift) as usize;
        let gram = &self.ids[i..i + n];
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
            if s.tag == tag && same(&self.ids[s.pos as usize..], gram) {
                return (&mut self.slots[at], false);
            }
            at = (at + 1) & mask;
        }
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
    grams.reset(n);
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
    grams.reset(n);
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
        let mut grams = Grams::new(&words.ids);
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

    fn check(text: &str) -> Option<String> {
        GopherRepetition::default().check(&Ctx::new(text, "en"))
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
        let mut grams = Grams::new(&w.ids);
        assert_eq!(top_ngram_chars(&w, &mut grams, 2), 3 * 3);
        // grams: ab ba ab(dup, skip 2) ab(dup, skip 2) -> 2 + 2 chars
        assert_eq!(dup_ngram_chars(&w, &mut grams, 2), 4);
        // A tie goes to the n-gram seen first: "cc" and "ddd" both twice, "cc" first.
        let w = intern(&["x", "cc", "cc", "y", "ddd", "ddd", "z"]);
        let mut grams = Grams::new(&w.ids);
        assert_eq!(top_ngram_chars(&w, &mut grams, 1), 2 * 2);
        assert_eq!(find_duplicates(["x", "yy", "x", "yy", "yy"]), (3, 5));
        assert_eq!(split_paragraphs("a\n\n\nb\nc\n\nd"), ["a", "b\nc", "d"]);
        assert_eq!(split_newline_runs("\na\n\nb\n"), ["", "a", "b", ""]);
    }

    /// The n-gram table against plain hash maps of slices (datatrove's definitions read
    /// literally), on word sequences with few distinct words, so n-grams repeat and tie a lot.
    #[test]
    fn ngram_table_matches_plain_maps() {
        fn top_reference(w: &Interned, n: usize) -> usize {
            let mut counts: FxHashMap<&[u32], (usize, usize)> = FxHashMap::default();
            for (i, gram) in w.ids.windows(n).enumerate() {
                counts.entry(gram).or_insert((0, i)).0 += 1;
            }
            let best = counts
                .iter()
                .max_by(|a, b| a.1 .0.cmp(&b.1 .0).then(b.1 .1.cmp(&a.1 .1)));
            best.map_or(0, |(gram, (count, _))| (w.chars(gram) + n - 1) * count)
        }
        fn dup_reference(w: &Interned, n: usize) -> usize {
            let mut seen: FxHashSet<&[u32]> = FxHashSet::default();
            let (mut chars, mut i) = (0, 0);
            while i + n <= w.ids.len() {
                let gram = &w.ids[i..i + n];
                if seen.contains(gram) {
                    chars += w.chars(gram);
                    i += n;
                } else {
                    seen.insert(gram);
                    i += 1;
                }
            }
            chars
        }
        const VOCAB: [&str; 12] = [
            "a", "bb", "ccc", "the", "of", "and", "river", "é", "中文", "x", "yy", "zzz",
        ];
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move |m: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % m as u64) as usize
        };
        for round in 0..300 {
            let (len, vocab) = (next(400) + 1, 2 + round % 11);
            let text: Vec<&str> = (0..len).map(|_| VOCAB[next(vocab)]).collect();
            let w = intern(&text);
            let mut grams = Grams::new(&w.ids);
            for n in 1..=10.min(len) {
                assert_eq!(top_ngram_chars(&w, &mut grams, n), top_reference(&w, n));
                assert_eq!(dup_ngram_chars(&w, &mut grams, n), dup_reference(&w, n));
            }
        }
    }
}

//! Japanese word segmentation with TinySegmenter's model (Taku Kudo's boosted classifier over
//! character n-grams, character types and the previous decisions: 30 KB of weights in
//! `ja_model.rs`, where a dictionary segmenter such as Sudachi needs ~200 MB).
//!
//! Written here rather than taken from the `tinysegmenter` crate: that crate builds its padding
//! characters with `char::from_u32_unchecked` on values past U+10FFFF (undefined behaviour, which
//! debug builds abort on) and allocates a string per token. This implementation keeps units as
//! `u32`, so padding needs no invalid `char`, maps each character once to a small id (unigram
//! weights are then array reads, and an n-gram with a character the model never names is not
//! looked up), keeps type features in dense tables, and returns slices of the input.

use std::sync::OnceLock;

use rustc_hash::FxHashMap;

use super::ja_model::{BIAS, TYPE_FEATURES, WORD_FEATURES};

/// Appends the words of `chunk` (text without whitespace) to `out`, as slices of it: where
/// TinySegmenter (the Python package, version 0.4) splits it, except that numbers and Latin
/// words are kept whole and numbers apart as Sudachi does (datatrove's segmenter, which TinySegmenter stands
/// in for; TinySegmenter alone splits "2024" into four words).
pub(super) fn segment<'a>(chunk: &'a str, out: &mut Vec<&'a str>) {
    if chunk.is_empty() {
        return;
    }
    let model = model();
    // Units and types with three padding places on either side, and each character's offset.
    let n = chunk.chars().count();
    let mut units = Vec::with_capacity(n + 6);
    let mut types = Vec::with_capacity(n + 6);
    let mut offsets = Vec::with_capacity(n);
    units.extend(PADDING_BEFORE);
    types.extend([OTHER; 3]);
    for (at, c) in chunk.char_indices() {
        units.push(c as u32);
        types.push(char_type(c));
        offsets.push(at);
    }
    units.extend(PADDING_AFTER);
    types.extend([OTHER; 3]);

    let joined = joined_separators(&units[3..3 + n], &types[3..3 + n]);
    let ids: Vec<u16> = units.iter().map(|u| model.id(*u)).collect();

    let mut decisions = [UNKNOWN; 3];
    let mut start = 0;
    for i in 4..units.len() - 3 {
        let w = &units[i - 3..i + 3];
        let c = &types[i - 3..i + 3];
        let [p1, p2, p3] = decisions;
        // The model's score, needed only where the character classes below leave it the choice.
        let score = || {
            BIAS + model.chars(&ids[i - 3..i + 3])
                + model.types(&[
                    &[p1],
                    &[p2],
                    &[p3],
                    &[p1, p2],
                    &[p2, p3],
                    &[c[0]],
                    &[c[1]],
                    &[c[2]],
                    &[c[3]],
                    &[c[4]],
                    &[c[5]],
                    &[c[1], c[2]],
                    &[c[2], c[3]],
                    &[c[3], c[4]],
                    &[c[0], c[1], c[2]],
                    &[c[1], c[2], c[3]],
                    &[c[2], c[3], c[4]],
                    &[c[3], c[4], c[5]],
                    &[p1, c[0]],
                    &[p2, c[1]],
                    &[p3, c[2]],
                    &[p2, c[1], c[2]],
                    &[p2, c[2], c[3]],
                    &[p3, c[1], c[2]],
                    &[p3, c[2], c[3]],
                    &[p2, c[0], c[1], c[2]],
                    &[p2, c[1], c[2], c[3]],
                    &[p3, c[0], c[1], c[2]],
                    &[p3, c[1], c[2], c[3]],
                ])
        };
        // Sudachi groups characters its dictionary lacks by category: a number's digits (and
        // separators) make one word, apart from its neighbours; Latin letters stay together,
        // apart from symbols ("/usr", "(see" are two words each).
        let k = i - 3;
        let boundary = match (c[2], c[3]) {
            _ if joined[k] || joined[k - 1] => false,
            (DIGIT, DIGIT) | (LATIN, LATIN) => false,
            (DIGIT, _) | (_, DIGIT) => true,
            (LATIN, OTHER) => !is_letter(w[3]),
            (OTHER, LATIN) => !is_letter(w[2]),
            _ => score() > 0,
        };
        let decision = if boundary {
            let at = offsets[k];
            out.push(&chunk[start..at]);
            start = at;
            BOUNDARY
        } else {
            NO_BOUNDARY
        };
        decisions = [p2, p3, decision];
    }
    out.push(&chunk[start..]);
}

/// For each character (`types` are their classes), whether it is a separator inside a number that Sudachi keeps whole (its
/// numeric-joining plugin): digits with single `.`/`,` between them, at most one `.` (counting
/// one right after the digits), every `,` before the `.` and followed by exactly three digits
/// ("1,000", "16.112"; not "2.10.34" nor the section number "6.2.").
fn joined_separators(units: &[u32], types: &[u8]) -> Vec<bool> {
    let is_digit = |at: usize| types[at] == DIGIT;
    let is_sep = |u: u32| matches!(char::from_u32(u), Some('.' | ',' | '．' | '，'));
    let is_point = |u: u32| matches!(char::from_u32(u), Some('.' | '．'));
    let mut joined = vec![false; units.len()];
    let mut at = 0;
    while at < units.len() {
        if !is_digit(at) {
            at += 1;
            continue;
        }
        // The run: digit groups separated by single separators.
        let mut seps = Vec::new();
        let mut groups = Vec::new();
        loop {
            let group_start = at;
            while at < units.len() && is_digit(at) {
                at += 1;
            }
            groups.push(at - group_start);
            if at + 1 < units.len() && is_sep(units[at]) && is_digit(at + 1) {
                seps.push(at);
                at += 1;
            } else {
                break;
            }
        }
        // A point right after the run counts: "6.2." is a section number, not a decimal.
        let trailing_point = at < units.len() && is_point(units[at]);
        let points =
            seps.iter().filter(|&&s| is_point(units[s])).count() + usize::from(trailing_point);
        let commas_ok = seps.iter().enumerate().all(|(g, &s)| {
            is_point(units[s])
                || (groups[g + 1] == 3 && !seps[..g].iter().any(|&p| is_point(units[p])))
        });
        if points <= 1 && commas_ok {
            for s in seps {
                joined[s] = true;
            }
        }
    }
    joined
}

/// Whether a unit is a letter of any script (padding is not).
fn is_letter(unit: u32) -> bool {
    char::from_u32(unit).is_some_and(char::is_alphabetic)
}

/// Padding units B3 B2 B1 before the text and E1 E2 E3 after it, numbered past U+10FFFF so that
/// no character equals one (B1..B3 are 0x110001..0x110003, E1..E3 0x110004..0x110006, as in the
/// model file).
const PADDING_BEFORE: [u32; 3] = [0x11_0003, 0x11_0002, 0x11_0001];
const PADDING_AFTER: [u32; 3] = [0x11_0004, 0x11_0005, 0x11_0006];

/// Character types and decisions share one code space (a type feature mixes both), each code
/// below 8 so that a key of up to four codes indexes a dense table in base 8.
const TYPE_LETTERS: &[u8; 7] = b"OMHIKAN";
const DECISION_LETTERS: &[u8; 3] = b"UOB";
const OTHER: u8 = 0;
const LATIN: u8 = 5;
const DIGIT: u8 = 6;
const UNKNOWN: u8 = 0;
const NO_BOUNDARY: u8 = 1;
const BOUNDARY: u8 = 2;

/// The character features in the order `segment` passes them: unigrams of the six characters
/// around the candidate boundary, bigrams, trigrams.
const WORD_NAMES: [&str; 13] = [
    "UW1", "UW2", "UW3", "UW4", "UW5", "UW6", "BW1", "BW2", "BW3", "TW1", "TW2", "TW3", "TW4",
];

/// The type and decision features in the order `segment` passes them.
const TYPE_NAMES: [&str; 29] = [
    "UP1", "UP2", "UP3", "BP1", "BP2", "UC1", "UC2", "UC3", "UC4", "UC5", "UC6", "BC1", "BC2",
    "BC3", "TC1", "TC2", "TC3", "TC4", "UQ1", "UQ2", "UQ3", "BQ1", "BQ2", "BQ3", "BQ4", "TQ1",
    "TQ2", "TQ3", "TQ4",
];

/// TinySegmenter's character classes (the Python package's patterns, tried in this order).
fn char_type(c: char) -> u8 {
    let letter = match c {
        '一' | '二' | '三' | '四' | '五' | '六' | '七' | '八' | '九' | '十' | '百' | '千'
        | '万' | '億' | '兆' => b'M',
        '\u{4E00}'..='\u{9FA0}' | '々' | '〆' | 'ヵ' | 'ヶ' => b'H',
        'ぁ'..='ん' => b'I',
        'ァ'..='ヺ' | 'ー' | 'ｦ'..='ﾞ' => b'K',
        'a'..='z'
        | 'A'..='Z'
        | 'ａ'..='ｚ'
        | 'Ａ'..='Ｚ'
        | 'À'..='Ö'
        | 'Ø'..='ö'
        | 'ø'..='ÿ'
        | 'Ā'..='ſ' => b'A',
        '0'..='9' | '０'..='９' => b'N',
        _ => b'O',
    };
    code(TYPE_LETTERS, letter)
}

fn code(letters: &[u8], letter: u8) -> u8 {
    letters
        .iter()
        .position(|&l| l == letter)
        .expect("letter of the model's alphabet") as u8
}

/// The model in lookup form, built on first use.
struct Model {
    /// Small ids of the units the character features name (0: a unit no feature names).
    ids: FxHashMap<u32, u16>,
    /// By unit id: the weights of the unigram features UW1..UW6.
    unigrams: Vec<[i32; 6]>,
    /// Bigram and trigram features keyed by [`ngram_key`].
    ngrams: FxHashMap<u64, i32>,
    /// One dense table per type feature, indexed by its codes in base 8.
    types: Vec<Vec<i32>>,
}

/// Where each bigram and trigram feature (`WORD_NAMES` from index 6) reads the six units around
/// a candidate boundary.
const NGRAM_SPANS: [(usize, std::ops::Range<usize>); 7] = [
    (6, 1..3),
    (7, 2..4),
    (8, 3..5),
    (9, 0..3),
    (10, 1..4),
    (11, 2..5),
    (12, 3..6),
];

fn ngram_key(feature: usize, ids: &[u16]) -> u64 {
    ids.iter()
        .fold(feature as u64, |key, &id| key << 16 | u64::from(id))
}

impl Model {
    fn build() -> Model {
        let index = |names: &[&str], name: &str| {
            names
                .iter()
                .position(|n| *n == name)
                .unwrap_or_else(|| panic!("feature {name} of ja_model.rs is not used"))
        };
        let mut ids = FxHashMap::default();
        for (_, units, _) in WORD_FEATURES {
            for &u in units.iter().filter(|&&u| u != 0) {
                let next = u16::try_from(ids.len() + 1).expect("fewer than 65,535 units");
                ids.entry(u).or_insert(next);
            }
        }
        let mut unigrams = vec![[0; 6]; ids.len() + 1];
        let mut ngrams = FxHashMap::default();
        for &(name, units, weight) in WORD_FEATURES {
            let feature = index(&WORD_NAMES, name);
            let arity = name_arity(name) as usize;
            let key: Vec<u16> = units[..arity].iter().map(|u| ids[u]).collect();
            if arity == 1 {
                unigrams[usize::from(key[0])][feature] = weight;
            } else {
                ngrams.insert(ngram_key(feature, &key), weight);
            }
        }
        let mut types: Vec<Vec<i32>> = TYPE_NAMES
            .iter()
            .map(|name| vec![0; 8usize.pow(name_arity(name))])
            .collect();
        for &(name, key, weight) in TYPE_FEATURES {
            // Decisions come first in a key: all of a P feature's units, a Q feature's first.
            let decisions = match name.as_bytes()[1] {
                b'P' => key.len(),
                b'Q' => 1,
                _ => 0,
            };
            let codes: Vec<u8> = key
                .bytes()
                .enumerate()
                .map(|(at, b)| {
                    let letters: &[u8] = if at < decisions {
                        DECISION_LETTERS
                    } else {
                        TYPE_LETTERS
                    };
                    code(letters, b)
                })
                .collect();
            types[index(&TYPE_NAMES, name)][dense_index(&codes)] = weight;
        }
        Model {
            ids,
            unigrams,
            ngrams,
            types,
        }
    }

    fn id(&self, unit: u32) -> u16 {
        self.ids.get(&unit).copied().unwrap_or(0)
    }

    /// Sum of the character features for the six unit ids around a candidate boundary; an
    /// n-gram with a unit no feature names cannot match and is not looked up.
    #[inline]
    fn chars(&self, ids: &[u16]) -> i32 {
        let unigrams: i32 = (0..6).map(|k| self.unigrams[usize::from(ids[k])][k]).sum();
        let ngrams: i32 = NGRAM_SPANS
            .iter()
            .filter(|(_, span)| !ids[span.clone()].contains(&0))
            .map(|(feature, span)| {
                self.ngrams
                    .get(&ngram_key(*feature, &ids[span.clone()]))
                    .copied()
                    .unwrap_or(0)
            })
            .sum();
        unigrams + ngrams
    }

    /// Sum of the type features, their codes in `TYPE_NAMES` order.
    #[inline]
    fn types(&self, keys: &[&[u8]; 29]) -> i32 {
        keys.iter()
            .zip(&self.types)
            .map(|(key, table)| table[dense_index(key)])
            .sum()
    }
}

/// Units of a feature: U=1, B=2, T=3; Q features have a decision on top (UQ 2, BQ 3, TQ 4).
fn name_arity(name: &str) -> u32 {
    let base = match name.as_bytes()[0] {
        b'U' => 1,
        b'B' => 2,
        _ => 3,
    };
    base + u32::from(name.as_bytes()[1] == b'Q')
}

#[inline]
fn dense_index(codes: &[u8]) -> usize {
    codes.iter().fold(0, |i, &c| i * 8 + usize::from(c))
}

fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(Model::build)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        segment(text, &mut out);
        out
    }

    /// Expected splits are the Python package's (`tinysegmenter.TinySegmenter().tokenize`).
    #[test]
    fn splits_as_the_reference_segmenter() {
        assert_eq!(
            words("私の名前は中野です"),
            ["私", "の", "名前", "は", "中野", "です"]
        );
        assert_eq!(
            words("今日は朝から雨が降っていたので、久しぶりに家でゆっくり過ごしました。"),
            [
                "今日",
                "は",
                "朝",
                "から",
                "雨",
                "が",
                "降っ",
                "て",
                "い",
                "た",
                "の",
                "で",
                "、",
                "久しぶり",
                "に",
                "家",
                "で",
                "ゆっくり",
                "過ごし",
                "まし",
                "た",
                "。"
            ]
        );
    }

    #[test]
    fn every_feature_of_the_model_is_used() {
        let model = model();
        let unigrams = model.unigrams.iter().flatten().filter(|&&w| w != 0).count();
        assert_eq!(
            unigrams + model.ngrams.len(),
            WORD_FEATURES.iter().filter(|&&(_, _, w)| w != 0).count()
        );
        let set: usize = model
            .types
            .iter()
            .map(|t| t.iter().filter(|&&w| w != 0).count())
            .sum();
        assert_eq!(
            set,
            TYPE_FEATURES.iter().filter(|&&(_, _, w)| w != 0).count()
        );
    }

    #[test]
    fn keeps_numbers_and_latin_words_whole_as_sudachi_does() {
        assert_eq!(
            words("価格は1,000円で16.112秒"),
            ["価格", "は", "1,000", "円", "で", "16.112", "秒"]
        );
        assert_eq!(
            words("バージョン2.10.34を"),
            ["バージョン", "2", ".", "10", ".", "34", "を"]
        );
        assert_eq!(words("ＧＩＭＰ２を起動"), ["ＧＩＭＰ", "２", "を", "起動"]);
        assert_eq!(words("6.2.概要"), ["6", ".", "2", ".", "概要"]);
        assert_eq!(words("1,000."), ["1,000", "."]);
        assert_eq!(words("「Input」"), ["「", "Input", "」"]);
        assert_eq!(words("/usr/share"), ["/", "usr", "/", "share"]);
        assert_eq!(words("2024年12月"), ["2024", "年", "12", "月"]);
        assert_eq!(
            (code(TYPE_LETTERS, b'A'), code(TYPE_LETTERS, b'N')),
            (LATIN, DIGIT)
        );
    }

    #[test]
    fn words_spell_the_input() {
        for text in ["ＡＢＣ１２３円", "a", "東京都は3日、", "ﾃｽﾄﾃﾞｰﾀ"] {
            assert_eq!(words(text).concat(), text);
            assert!(words(text).iter().all(|w| !w.is_empty()));
        }
        assert!(words("").is_empty());
    }
}

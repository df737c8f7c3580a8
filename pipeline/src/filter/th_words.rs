//! Thai words as datatrove splits them: PyThaiNLP's `word_tokenize(text, engine="newmm-safe",
//! keep_whitespace=False)`, the dictionary-based maximal matching FineWeb-2 configures for Thai
//! (`tha_Thai`: `ThaiTokenizer`).
//!
//! Thai is written without spaces between words, so the Gopher rules' word counts, mean word
//! length and n-grams depend entirely on where this segmenter cuts. It is reproduced step for
//! step from PyThaiNLP 5.4.0:
//! - break positions are the ends of Thai Character Clusters ([`tcc_ends`], PyThaiNLP's own TCC
//!   pattern, run by Oniguruma in Python syntax);
//! - from each break position, every dictionary word (PyThaiNLP's `words_th.txt`, 62,106 words,
//!   CC0, built in by `scripts/gen-th-dictionary`) that ends on a break position adds an edge;
//!   when only one candidate position is left, the shortest path (breadth first, edges in
//!   dictionary-prefix order) up to it is emitted; with no candidate, a non-Thai run or the
//!   shortest stretch up to the next place a word of three or more characters or a non-Thai run
//!   starts is emitted as one word ([`onecut`]);
//! - "safe" mode cuts texts of 140 characters or more into chunks first, at the last space among
//!   characters 100..140 or else before the longest word found there ([`chunks`]);
//! - numbers that the segments split ("1,234.5") are joined again ([`rejoin_numbers`]), and
//!   whitespace words dropped.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::OnceLock;

use onig::{Regex as Onig, RegexOptions, SearchOptions, Syntax};
use regex::Regex;
use rustc_hash::FxHashMap;

use super::pystr::py_strip;

/// PyThaiNLP's `words_th.txt`, one word per line.
const DICTIONARY: &[u8] = include_bytes!("th_words.txt.zst");

/// newmm's `_MAX_GRAPH_SIZE`: edges gathered before each position adds at most one more.
const MAX_GRAPH_SIZE: usize = 50;
/// newmm's safe-mode window: texts of `SCAN_END` characters or more are cut into chunks.
const SCAN_BEGIN: usize = 100;
const SCAN_END: usize = 140;

/// Appends the words of `text` to `out`, as datatrove's `ThaiTokenizer.word_tokenize`.
pub fn split<'a>(text: &'a str, out: &mut Vec<&'a str>) {
    let th = Thai::get();
    let mut segments = Vec::new();
    for (offset, chunk) in chunks(th, text) {
        segments.extend(
            onecut(th, chunk)
                .into_iter()
                .map(|(s, e)| (s + offset, e + offset)),
        );
    }
    for (s, e) in rejoin_numbers(th, text, &segments) {
        let word = py_strip(&text[s..e]);
        if !word.is_empty() {
            out.push(word);
        }
    }
}

/// The dictionary and the patterns, built once.
struct Thai {
    trie: Trie,
    /// PyThaiNLP's `_PAT_TCC`.
    tcc: Onig,
    /// newmm's `_PAT_NONTHAI`, anchored.
    non_thai: Regex,
    /// `_DIGITS_WITH_SEPARATOR` of the number-joining post-processor.
    number: Regex,
}

impl Thai {
    fn get() -> &'static Thai {
        static THAI: OnceLock<Thai> = OnceLock::new();
        THAI.get_or_init(|| {
            let words = zstd::decode_all(DICTIONARY).expect("the built-in Thai dictionary");
            let words = std::str::from_utf8(&words).expect("the Thai dictionary is UTF-8");
            Thai {
                trie: Trie::new(words.lines()),
                tcc: Onig::with_options(
                    &tcc_pattern(),
                    RegexOptions::REGEX_OPTION_NONE,
                    Syntax::python(),
                )
                .expect("the TCC pattern compiles"),
                non_thai: Regex::new(
                    r"^(?:[-a-zA-Z]+|\d+(?:[,.]\d+)*|[ \t]+|\r?\n|[^\x{0E00}-\x{0E7F} \t\r\n]+)",
                )
                .expect("the non-Thai pattern compiles"),
                number: Regex::new(r"(?:\d+[.,:])+\d+").expect("the number pattern compiles"),
            }
        })
    }

    /// Byte length of the non-Thai run `_PAT_NONTHAI.match(text, at)` finds, if any.
    fn non_thai_at(&self, text: &str, at: usize) -> Option<usize> {
        self.non_thai.find(&text[at..]).map(|m| m.end())
    }
}

/// PyThaiNLP's TCC rules, expanded exactly as `tcc_p.py` expands them (`k` final consonants,
/// `c` a consonant, `t` a tone mark, `d` a lower vowel), one alternative per line.
fn tcc_pattern() -> String {
    const RULES: &str = "เc็ck
เcctาะk
เccีtยะk
เccีtย(?=[เ-ไก-ฮ]|$)k
เcc็ck
เcิc์ck
เcิtck
เcีtยะ?k
เcืtอะ?k
เc[ิีุู]tย(?=[เ-ไก-ฮ]|$)k
เctา?ะ?k
cัtวะk
c[ัื]tc[ุิะ]?k
c[ิุู]์
c[ะ-ู]tk
cรรc์
c็
ct[ะาำ]?k
ck
แc็c
แcc์
แctะ
แcc็c
แccc์
โctะ
[เ-ไ]ct
ก็
อึ
หึ";
    RULES
        .replace('k', "(cc?[dิ]?[์])?")
        .replace('c', "[ก-ฮ]")
        .replace('t', "[่-๋]?")
        .replace('d', "\u{e39}\u{e38}")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join("|")
}

/// `tcc_pos_array`: for each byte offset of `text` (and its end), whether a Thai Character
/// Cluster ends there. A position no cluster pattern matches at is a cluster of one character.
fn tcc_ends(th: &Thai, text: &str) -> Vec<bool> {
    let mut ends = vec![false; text.len() + 1];
    let mut p = 0;
    while p < text.len() {
        let c = text[p..].chars().next().expect("inside the text");
        // Every cluster pattern starts with a consonant or a leading vowel (เ แ โ ใ ไ).
        let may_start =
            ('\u{e01}'..='\u{e2e}').contains(&c) || ('\u{e40}'..='\u{e44}').contains(&c);
        let n = may_start
            .then(|| {
                th.tcc
                    .match_with_options(text, p, SearchOptions::SEARCH_OPTION_NONE, None)
            })
            .flatten()
            .filter(|&n| n > 0)
            .unwrap_or(c.len_utf8());
        p += n;
        ends[p] = true;
    }
    ends
}

/// A character trie of the dictionary (PyThaiNLP's `Trie`), its edges stored per node in one
/// array sorted by character, so a lookup is a short binary search with no hashing.
struct Trie {
    /// Node `n`'s edges are `chars[first[n]..first[n + 1]]` and `child[..]` alike.
    first: Vec<u32>,
    chars: Vec<char>,
    child: Vec<u32>,
    is_word: Vec<bool>,
}

impl Trie {
    fn new<'w>(words: impl Iterator<Item = &'w str>) -> Trie {
        let mut edges: FxHashMap<(u32, char), u32> = FxHashMap::default();
        let mut is_word = vec![false];
        for word in words.map(py_strip).filter(|w| !w.is_empty()) {
            let mut node = 0;
            for c in word.chars() {
                let next = is_word.len() as u32;
                node = *edges.entry((node, c)).or_insert(next);
                if node == next {
                    is_word.push(false);
                }
            }
            is_word[node as usize] = true;
        }
        let mut sorted: Vec<((u32, char), u32)> = edges.into_iter().collect();
        sorted.sort_unstable();
        let mut first = vec![0u32; is_word.len() + 1];
        for &((node, _), _) in &sorted {
            first[node as usize + 1] += 1;
        }
        for n in 0..is_word.len() {
            first[n + 1] += first[n];
        }
        Trie {
            first,
            chars: sorted.iter().map(|&((_, c), _)| c).collect(),
            child: sorted.iter().map(|&(_, child)| child).collect(),
            is_word,
        }
    }

    /// `Trie.prefixes(text, at)`: the end offsets of the dictionary words `text[at..]` starts
    /// with, shortest first.
    fn prefix_ends(&self, text: &str, at: usize, ends: &mut Vec<usize>) {
        ends.clear();
        let mut node = 0;
        for (i, c) in text[at..].char_indices() {
            let (lo, hi) = (self.first[node] as usize, self.first[node + 1] as usize);
            match self.chars[lo..hi].binary_search(&c) {
                Ok(k) => node = self.child[lo + k] as usize,
                Err(_) => return,
            }
            if self.is_word[node] {
                ends.push(at + i + c.len_utf8());
            }
        }
    }
}

/// newmm's `_onecut`: the segments of `text`, as byte ranges.
fn onecut(th: &Thai, text: &str) -> Vec<(usize, usize)> {
    let valid = tcc_ends(th, text);
    let mut out = Vec::new();
    // newmm's graph as its edges in the order they were added; its size is their number.
    let mut edges: Vec<(usize, usize)> = Vec::new();
    let mut candidates = BinaryHeap::from([Reverse(0usize)]);
    let (mut word_ends, mut path) = (Vec::new(), Vec::new());
    let mut end_pos = 0;
    while let Some(&Reverse(first)) = candidates.peek() {
        if first >= text.len() {
            break;
        }
        let Reverse(begin) = candidates.pop().expect("peeked");
        // `_extend_graph`: dictionary words from `begin` that end on a cluster boundary.
        th.trie.prefix_ends(text, begin, &mut word_ends);
        for &end in &word_ends {
            if !valid[end] {
                continue;
            }
            edges.push((begin, end));
            if !candidates.iter().any(|&Reverse(p)| p == end) {
                candidates.push(Reverse(end));
            }
            if edges.len() > MAX_GRAPH_SIZE {
                break;
            }
        }
        match candidates.len() {
            1 => {
                let goal = candidates.peek().expect("one candidate").0;
                shortest_path(&edges, end_pos, goal, &mut path);
                edges.clear();
                for &pos in &path {
                    out.push((end_pos, pos));
                    end_pos = pos;
                }
            }
            0 => {
                end_pos = skip_end(th, text, begin, &valid, &mut word_ends);
                edges.clear();
                out.push((begin, end_pos));
                candidates.push(Reverse(end_pos));
            }
            _ => {}
        }
    }
    out
}

/// The first path `_bfs_paths_graph` yields from `start` to `goal`, without `start`, into
/// `path`: breadth first, each position reached once, edges in the order they were added. The
/// graph holds at most a few dozen edges, so scanning them beats building adjacency lists.
fn shortest_path(edges: &[(usize, usize)], start: usize, goal: usize, path: &mut Vec<usize>) {
    // The breadth-first queue: each reached position with its parent's index in the queue.
    let mut queue = vec![(start, 0)];
    let mut head = 0;
    while head < queue.len() {
        let v = queue[head].0;
        for &(from, to) in edges {
            if from != v {
                continue;
            }
            if to == goal {
                path.clear();
                path.push(goal);
                let mut i = head;
                while i != 0 {
                    path.push(queue[i].0);
                    i = queue[i].1;
                }
                path.reverse();
                return;
            }
            if !queue.iter().any(|&(p, _)| p == to) {
                queue.push((to, head));
            }
        }
        head += 1;
    }
    unreachable!("newmm's graph always reaches its only candidate")
}

/// newmm's `_find_skip_end`: where a word no dictionary entry covers, starting at `begin`, ends.
fn skip_end(th: &Thai, text: &str, begin: usize, valid: &[bool], ends: &mut Vec<usize>) -> usize {
    if let Some(n) = th.non_thai_at(text, begin) {
        return begin + n;
    }
    let first = text[begin..].chars().next().map_or(0, char::len_utf8);
    for (i, _) in text[begin + first..].char_indices() {
        let pos = begin + first + i;
        if !valid[pos] {
            continue;
        }
        th.trie.prefix_ends(text, pos, ends);
        if ends
            .iter()
            .any(|&e| valid[e] && !is_two_consonants(&text[pos..e]))
        {
            return pos;
        }
        if th.non_thai_at(text, pos).is_some() {
            return pos;
        }
    }
    text.len()
}

/// `_PAT_THAI_TWOCHARS.match(word)`: at most two Thai consonants and nothing else.
fn is_two_consonants(word: &str) -> bool {
    word.chars().count() <= 2 && word.chars().all(|c| ('ก'..='ฮ').contains(&c))
}

/// newmm-safe's chunks of `text` with their byte offsets: texts shorter than [`SCAN_END`]
/// characters stay whole.
fn chunks<'t>(th: &Thai, mut text: &'t str) -> Vec<(usize, &'t str)> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        // Byte offsets of characters SCAN_BEGIN and SCAN_END, if the text is that long.
        let mut at = text.char_indices().map(|(i, _)| i).chain([text.len()]);
        let (Some(begin), Some(end)) = (at.nth(SCAN_BEGIN), at.nth(SCAN_END - SCAN_BEGIN - 1))
        else {
            break;
        };
        let cut = cut_at(th, text, begin, end);
        out.push((offset, &text[..cut]));
        offset += cut;
        text = &text[cut..];
    }
    if !text.is_empty() {
        out.push((offset, text));
    }
    out
}

/// `_find_cut_pos`: after the last space of the window, or else before its longest word (the
/// last of equally long ones), as a byte offset of `text`.
fn cut_at(th: &Thai, text: &str, begin: usize, end: usize) -> usize {
    let sample = &text[begin..end];
    if let Some(space) = sample.rfind(' ') {
        return begin + space + 1;
    }
    let words = onecut(th, sample);
    let (mut longest, mut longest_len) = (0, 0);
    for (i, &(s, e)) in words.iter().enumerate() {
        let len = sample[s..e].chars().count();
        if len >= longest_len {
            (longest, longest_len) = (i, len);
        }
    }
    begin + words.get(longest).map_or(0, |&(s, _)| s)
}

/// `rejoin_formatted_num`: the segments that overlap a number with separators ("1,234.5",
/// "12:30") in the whole text, from the first that starts inside it, joined into one.
fn rejoin_numbers(th: &Thai, text: &str, segments: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(segments.len());
    let mut numbers = th.number.find_iter(text).map(|m| (m.start(), m.end()));
    let mut number = numbers.next();
    let mut i = 0;
    while let (Some((start, end)), true) = (number, i < segments.len()) {
        let (s, e) = segments[i];
        if s >= start {
            // Segments are contiguous: the joined word runs from the first's start to the last's end.
            let first = i;
            while i < segments.len() && segments[i].0 < end {
                i += 1;
            }
            if i > first {
                out.push((s, segments[i - 1].1));
            }
            number = numbers.next();
        } else {
            out.push((s, e));
            i += 1;
        }
    }
    out.extend_from_slice(&segments[i..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values printed by PyThaiNLP 5.4.0's `word_tokenize(text, engine="newmm-safe",
    /// keep_whitespace=False)` through datatrove 0.10.1's `strip_strings`.
    #[test]
    fn splits_as_pythainlp() {
        let cases: &[(&str, &[&str])] = &[
            (
                "สวัสดีครับ ผมชื่อสมชาย",
                &["สวัสดี", "ครับ", "ผม", "ชื่อ", "สม", "ชาย"],
            ),
            (
                "ราคา 1,234.50 บาท เวลา 12:30 น.",
                &["ราคา", "1,234.50", "บาท", "เวลา", "12:30", "น."],
            ),
            (
                "ภาษาไทยเป็นภาษาราชการของประเทศไทย\nใช้อักษรไทยในการเขียน",
                &["ภาษาไทย", "เป็น", "ภาษาราชการ", "ของ", "ประเทศ", "ไทย", "ใช้", "อักษร", "ไทย", "ใน", "การเขียน"],
            ),
            (
                "Firefox เป็นเว็บเบราว์เซอร์ที่พัฒนาโดย Mozilla (มูลนิธิ) ปี ๒๕๖๗",
                &["Firefox", "เป็น", "เว็บ", "เบราว์เซอร์", "ที่", "พัฒนา", "โดย", "Mozilla", "(", "มูลนิธิ", ")", "ปี", "๒๕๖๗"],
            ),
            (
                "ประเทศไทยมีประชากรประมาณหกสิบหกล้านคนและมีกรุงเทพมหานครเป็นเมืองหลวงซึ่งเป็นศูนย์กลางทางเศรษฐกิจการเมืองและวัฒนธรรมของประเทศนักท่องเที่ยวจำนวนมากเดินทางมาเยี่ยมชมวัดวาอารามและชายหาดที่สวยงามทุกปี",
                &["ประเทศ", "ไทย", "มี", "ประชากร", "ประมาณ", "หกสิบ", "หก", "ล้าน", "คน", "และ", "มี", "กรุงเทพมหานคร", "เป็น", "เมืองหลวง", "ซึ่ง", "เป็น", "ศูนย์กลาง", "ทางเศรษฐกิจ", "การเมือง", "และ", "วัฒนธรรม", "ของ", "ประเทศ", "นักท่องเที่ยว", "จำนวนมาก", "เดินทาง", "มา", "เยี่ยมชม", "วัดวาอาราม", "และ", "ชายหาด", "ที่", "สวยงาม", "ทุกปี"],
            ),
            (
                "การประชุมครั้งที่ 3/2567 จะจัดขึ้นในวันที่ 15 มกราคม 2567 ณ ห้องประชุมใหญ่ อาคาร A ชั้น 5 โดยมีผู้เข้าร่วมประมาณ 120 คน กรุณาลงทะเบียนล่วงหน้าที่ www.example.co.th หรือโทร 02-123-4567",
                &["การประชุม", "ครั้ง", "ที่", "3", "/2567", "จะ", "จัด", "ขึ้น", "ใน", "วันที่", "15", "มกราคม", "2567", "ณ", "ห้องประชุม", "ใหญ่", "อาคาร", "A", "ชั้น", "5", "โดย", "มี", "ผู้เข้าร่วม", "ประมาณ", "120", "คน", "กรุณา", "ลงทะเบียน", "ล่วง", "หน้าที่", "www", ".example.co.th", "หรือ", "โทร", "02", "-", "123", "-", "4567"],
            ),
            (
                "เขาไปตลาด\r\nซื้อผลไม้\tมะม่วง ทุเรียน",
                &["เขา", "ไป", "ตลาด", "ซื้อ", "ผลไม้", "มะม่วง", "ทุเรียน"],
            ),
            (
                "กขค งจฉ ฮฮฮฮ",
                &["กขค", "งจฉ", "ฮฮฮฮ"],
            ),
            (
                "เกี่ยวกับ เลี้ยงดู เกียร์ เดี๋ยว",
                &["เกี่ยวกับ", "เลี้ยงดู", "เกียร์", "เดี๋ยว"],
            ),
            (
                "ก็ อึ หึ เอ็ด แก้ว โต๊ะ",
                &["ก็", "อึ", "หึ", "เอ็ด", "แก้ว", "โต๊ะ"],
            ),
            (
                "",
                &[],
            ),
            (
                "  \n ",
                &[],
            ),
            (
                "abc-def 3.14.15 x",
                &["abc-def", "3.14.15", "x"],
            ),
            (
                "เตียง\n",
                &["เตียง"],
            ),
            (
                "ยินดีต้อนรับสู่เว็บไซต์ของเรายินดีต้อนรับสู่เว็บไซต์ของเรายินดีต้อนรับสู่เว็บไซต์ของเรายินดีต้อนรับสู่เว็บไซต์ของเรายินดีต้อนรับสู่เว็บไซต์ของเรายินดีต้อนรับสู่เว็บไซต์ของเรายินดีต้อนรับสู่เว็บไซต์ของเรายินดีต้อนรับสู่เว็บไซต์ของเรา",
                &["ยินดีต้อนรับ", "สู่", "เว็บไซต์", "ของ", "เรา", "ยินดีต้อนรับ", "สู่", "เว็บไซต์", "ของ", "เรา", "ยินดีต้อนรับ", "สู่", "เว็บไซต์", "ของ", "เรา", "ยินดีต้อนรับ", "สู่", "เว็บไซต์", "ของ", "เรา", "ยินดีต้อนรับ", "สู่", "เว็บไซต์", "ของ", "เรา", "ยินดีต้อนรับ", "สู่", "เว็บไซต์", "ของ", "เรา", "ยินดีต้อนรับ", "สู่", "เว็บไซต์", "ของ", "เรา", "ยินดีต้อนรับ", "สู่", "เว็บไซต์", "ของ", "เรา"],
            ),
        ];
        for (text, want) in cases {
            let mut got = Vec::new();
            split(text, &mut got);
            assert_eq!(got, *want, "{text:?}");
        }
    }
}

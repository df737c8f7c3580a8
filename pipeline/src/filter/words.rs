//! Word and sentence splitting with datatrove's semantics.
//!
//! datatrove's Gopher, FineWeb and C4 rules count words and sentences with `spacy.blank(lang)`
//! (English: prefix/suffix/infix rules plus ~1,350 special cases; Chinese: jieba). Word counts,
//! mean word length and n-gram character fractions all depend on where tokens break, so to agree
//! with datatrove's decisions this module reproduces spaCy's English tokenizer algorithm in plain
//! Rust (no regex engine: the rules are small character tests), with its special-case table
//! generated from spaCy itself (`scripts/gen-spacy-en-data`). Chinese goes through jieba-rs, the
//! same segmenter datatrove configures for spaCy's Chinese tokenizer. Japanese is segmented by
//! TinySegmenter ([`ja_words`]): datatrove runs Sudachi there, whose dictionary (~200 MB) cannot
//! ship inside a binary; TinySegmenter's model is 30 KB of weights and splits into similar short
//! units (how often FineWeb-2's Japanese rules decide as with Sudachi: BENCHMARKS.md). Tokens are
//! slices of the input, so splitting allocates only the output vector.

use std::sync::OnceLock;

use rustc_hash::FxHashMap;

use super::ja_words;
use super::pystr::{is_py_space, is_quote, split_py_space};
use super::ref_data::{ICON_RANGES, SPECIAL_CASES};

/// Appends the words of `text` to `out`, as datatrove's `split_into_words(text, lang)` would
/// (whitespace tokens dropped). `lang` is an ISO 639-1 code; Chinese is segmented with jieba,
/// Japanese with TinySegmenter between spaces, every other language uses the English rules
/// (spaCy's rules differ little between Latin-script languages, and the special cases only ever
/// match English words).
pub fn split_words<'a>(text: &'a str, lang: &str, out: &mut Vec<&'a str>) {
    match lang {
        "zh" => {
            for w in jieba().cut(text, true) {
                let w = w.trim_matches(is_py_space);
                if !w.is_empty() {
                    out.push(w);
                }
            }
            return;
        }
        "ja" => {
            for chunk in split_py_space(text) {
                ja_words::segment(chunk, out);
            }
            return;
        }
        _ => {}
    }
    let mut scratch = Scratch::default();
    for chunk in split_py_space(text) {
        let first = out.len();
        tokenize_chunk(chunk, out, &mut scratch);
        if out.len() - first > 1 {
            merge_special_spans(chunk, first, out);
        }
    }
}

/// Number of sentences spaCy's `sentencizer` finds in `text` (datatrove's
/// `split_into_sentences`): a sentence ends after a token that is a sentence-final mark, together
/// with any punctuation that follows it.
pub fn count_sentences(text: &str, lang: &str) -> usize {
    let mut words = Vec::new();
    split_words(text, lang, &mut words);
    if words.is_empty() {
        return usize::from(!text.is_empty());
    }
    let mut sentences = 1;
    let mut seen_final = false;
    for w in words {
        let is_final = is_sentence_final(w);
        if seen_final && !is_final && !w.chars().all(is_py_punct) {
            sentences += 1;
            seen_final = false;
        } else if is_final {
            seen_final = true;
        }
    }
    sentences
}

fn jieba() -> &'static jieba_rs::Jieba {
    static JIEBA: OnceLock<jieba_rs::Jieba> = OnceLock::new();
    JIEBA.get_or_init(jieba_rs::Jieba::new)
}

/// Token lengths (bytes) of each special case: every special case is the concatenation of its
/// tokens, so lengths are enough to slice the input.
#[inline]
fn special(s: &str) -> Option<&'static [&'static str]> {
    let specials = SPECIALS.get_or_init(Specials::new);
    if !specials.may_hold(s) {
        return None;
    }
    specials.map.get(s).copied()
}

static SPECIALS: OnceLock<Specials> = OnceLock::new();

/// The special cases, behind a filter on (first byte, last byte, length) that turns most words
/// away without hashing them.
struct Specials {
    map: FxHashMap<&'static str, &'static [&'static str]>,
    /// Bit `filter_bit(s)` is set for every special case `s`.
    filter: Vec<u64>,
}

const FILTER_BITS: usize = 1 << 16;

#[inline]
fn filter_bit(s: &str) -> usize {
    let b = s.as_bytes();
    let key = (usize::from(b[0]) << 8 | usize::from(b[b.len() - 1])) ^ (s.len().min(255) << 16);
    key.wrapping_mul(0x9E37_79B9) >> 7 & (FILTER_BITS - 1)
}

impl Specials {
    fn new() -> Specials {
        let mut filter = vec![0u64; FILTER_BITS / 64];
        for (s, _) in SPECIAL_CASES {
            let bit = filter_bit(s);
            filter[bit / 64] |= 1 << (bit % 64);
        }
        Specials {
            map: SPECIAL_CASES.iter().copied().collect(),
            filter,
        }
    }

    #[inline]
    fn may_hold(&self, s: &str) -> bool {
        if s.is_empty() {
            return false;
        }
        let bit = filter_bit(s);
        self.filter[bit / 64] >> (bit % 64) & 1 == 1
    }
}

fn push_special<'a>(s: &'a str, parts: &[&str], out: &mut Vec<&'a str>) {
    let mut at = 0;
    for p in parts {
        out.push(&s[at..at + p.len()]);
        at += p.len();
    }
}

/// Longest run of tokens a special case can span (spaCy's longest, an emoticon, spans 7).
const MAX_SPECIAL_TOKENS: usize = 8;

/// spaCy 3's special-case matcher: after affix splitting, adjacent tokens of one chunk that
/// together spell a special case (`):`, `d.`, `''`) become that special case's tokens again.
/// Matches are taken longest first, then leftmost, without overlap.
fn merge_special_spans<'a>(chunk: &'a str, first: usize, out: &mut Vec<&'a str>) {
    let base = chunk.as_ptr() as usize;
    let offset = |t: &str| t.as_ptr() as usize - base;
    let toks = &out[first..];
    let mut found: Vec<(usize, usize)> = Vec::new();
    for i in 0..toks.len() {
        for j in i + 2..=toks.len().min(i + MAX_SPECIAL_TOKENS) {
            let span = &chunk[offset(toks[i])..offset(toks[j - 1]) + toks[j - 1].len()];
            if special(span).is_some() && splits_without_specials(span) {
                found.push((i, j));
            }
        }
    }
    if found.is_empty() {
        return;
    }
    found.sort_by_key(|&(i, j)| (std::cmp::Reverse(j - i), i));
    let mut taken: Vec<(usize, usize)> = Vec::new();
    for (i, j) in found {
        if taken.iter().all(|&(a, b)| j <= a || i >= b) {
            taken.push((i, j));
        }
    }
    taken.sort_unstable();
    let old: Vec<&'a str> = out.drain(first..).collect();
    let mut k = 0;
    for (i, j) in taken {
        out.extend_from_slice(&old[k..i]);
        let span = &chunk[offset(old[i])..offset(old[j - 1]) + old[j - 1].len()];
        push_special(span, special(span).expect("matched above"), out);
        k = j;
    }
    out.extend_from_slice(&old[k..]);
}

/// Whether affix or infix rules split `s`: spaCy's matcher only holds such special cases (a
/// plain-word case like `id` → `i d` is applied to whole chunks only).
fn splits_without_specials(s: &str) -> bool {
    if prefix_len(s) > 0 || suffix_len(s) > 0 {
        return true;
    }
    let mut parts = Vec::new();
    split_infixes(s, &mut parts, &mut Vec::new());
    parts.len() > 1
}

/// Buffers `tokenize_chunk` reuses from one chunk to the next.
#[derive(Default)]
struct Scratch {
    chars: Vec<(usize, char)>,
    suffixes: Vec<(usize, usize)>,
}

/// spaCy's `Tokenizer._split_affixes` + `_attach_tokens` for one whitespace-free chunk.
fn tokenize_chunk<'a>(s: &'a str, out: &mut Vec<&'a str>, scratch: &mut Scratch) {
    if let Some(parts) = special(s) {
        push_special(s, parts, out);
        return;
    }
    // Fast path: no prefix, suffix, infix or URL rule can match a run of ASCII letters.
    if s.bytes().all(|b| b.is_ascii_alphabetic()) {
        out.push(s);
        return;
    }
    let (mut start, mut end) = (0, s.len());
    let suffixes = &mut scratch.suffixes;
    suffixes.clear();
    let mut last = usize::MAX;
    // The special case the remaining core is, once one is found. At the top of each round the
    // core is known not to be one (tested above, or at the end of the last round), which is
    // where spaCy tests it.
    let mut core_special = None;
    while start < end && end - start != last {
        let cur = &s[start..end];
        last = cur.len();
        let pre = prefix_len(cur);
        if pre > 0 && pre < cur.len() {
            if let Some(parts) = special(&cur[pre..]) {
                out.push(&cur[..pre]);
                start += pre;
                core_special = Some(parts);
                break;
            }
        }
        let suf = suffix_len(&cur[pre..]);
        if suf > 0 && suf < cur.len() {
            if let Some(parts) = special(&cur[..cur.len() - suf]) {
                suffixes.push((end - suf, end));
                end -= suf;
                core_special = Some(parts);
                break;
            }
        }
        if pre > 0 && suf > 0 && pre + suf <= cur.len() {
            out.push(&cur[..pre]);
            suffixes.push((end - suf, end));
            start += pre;
            end -= suf;
        } else if pre > 0 {
            out.push(&cur[..pre]);
            start += pre;
        } else if suf > 0 {
            suffixes.push((end - suf, end));
            end -= suf;
        }
        if let Some(parts) = special(&s[start..end]) {
            core_special = Some(parts);
            break;
        }
    }
    if start < end {
        let core = &s[start..end];
        if let Some(parts) = core_special {
            push_special(core, parts, out);
        } else if is_url(core) {
            out.push(core);
        } else {
            split_infixes(core, out, &mut scratch.chars);
        }
    }
    for &(a, b) in suffixes.iter().rev() {
        out.push(&s[a..b]);
    }
}

/// spaCy's punctuation class as a list; `is_punct_cls` tests it (and a test checks the two agree).
#[cfg(test)]
const PUNCT: &str = "…,:;!?¿؟¡()[]{}<>_#*&。？！，、；：～·।،۔؛٪";
const CURRENCY: &str = "$£€¥฿₽﷼₴₠₡₢₣₤₥₦₧₨₩₪₫₭₮₯₰₱₲₳₵₶₷₸₹₺₻₼₾₿";
const UNITS: &[&str] = &[
    "km", "km²", "km³", "m", "m²", "m³", "dm", "dm²", "dm³", "cm", "cm²", "cm³", "mm", "mm²",
    "mm³", "ha", "µm", "nm", "yd", "in", "ft", "kg", "g", "mg", "µg", "t", "lb", "oz", "m/s",
    "km/h", "kmh", "mph", "hPa", "Pa", "mbar", "mb", "MB", "kb", "KB", "gb", "GB", "tb", "TB", "T",
    "G", "M", "K", "%", "км", "км²", "км³", "м", "м²", "м³", "дм", "дм²", "дм³", "см", "см²",
    "см³", "мм", "мм²", "мм³", "нм", "кг", "г", "мг", "м/с", "км/ч", "кПа", "Па", "мбар", "Кб",
    "КБ", "кб", "Мб", "МБ", "мб", "Гб", "ГБ", "гб", "Тб", "ТБ",
];

/// `PUNCT.contains(c)` without scanning the string.
fn is_punct_cls(c: char) -> bool {
    matches!(
        c,
        '…' | ','
            | ':'
            | ';'
            | '!'
            | '?'
            | '¿'
            | '؟'
            | '¡'
            | '('
            | ')'
            | '['
            | ']'
            | '{'
            | '}'
            | '<'
            | '>'
            | '_'
            | '#'
            | '*'
            | '&'
            | '。'
            | '？'
            | '！'
            | '，'
            | '、'
            | '；'
            | '：'
            | '～'
            | '·'
            | '।'
            | '،'
            | '۔'
            | '؛'
            | '٪'
    )
}

/// `CURRENCY.contains(c)` without scanning the string.
fn is_currency(c: char) -> bool {
    matches!(c, '$' | '£' | '€' | '¥' | '฿' | '₽' | '﷼' | '₴' | '₠'..='₩' | '₪'..='₫' | '₭'..='₰'
        | '₱'..='₳' | '₵'..='₺' | '₻'..='₼' | '₾'..='₿')
}

/// Suffixes spaCy splits off only after a digit: `+`, a currency sign or code, or a unit.
fn is_digit_suffix(tail: &str) -> bool {
    static SET: OnceLock<rustc_hash::FxHashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| digit_suffixes().collect())
        .contains(tail)
}

fn digit_suffixes() -> impl Iterator<Item = &'static str> {
    let currency = CURRENCY
        .char_indices()
        .map(|(i, c)| &CURRENCY[i..i + c.len_utf8()]);
    ["+", "US$", "C$", "A$"]
        .into_iter()
        .chain(currency)
        .chain(UNITS.iter().copied())
}

/// Longest of `digit_suffixes()` in bytes.
const MAX_DIGIT_SUFFIX_LEN: usize = 8;

fn is_icon(c: char) -> bool {
    let c = c as u32;
    // The table is sorted and starts above ASCII: most characters need no search.
    if c < ICON_RANGES[0].0 {
        return false;
    }
    ICON_RANGES
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// spaCy's ALPHA class: letters, plus the CJK symbol and punctuation blocks its CJK ranges
/// happen to cover.
fn is_alpha_cls(c: char) -> bool {
    c.is_alphabetic()
        || matches!(c, '\u{2E80}'..='\u{2FDF}' | '\u{2FF0}'..='\u{303F}' | '\u{31C0}'..='\u{31EF}'
            | '\u{3200}'..='\u{33FF}' | '\u{F900}'..='\u{FAFF}' | '\u{FE30}'..='\u{FE4F}')
}

/// spaCy's ALPHA_LOWER / ALPHA_UPPER include uncased scripts (CJK, Arabic, …) in both classes.
fn is_lower_cls(c: char) -> bool {
    c.is_lowercase() || (is_alpha_cls(c) && !c.is_uppercase())
}

fn is_upper_cls(c: char) -> bool {
    c.is_uppercase() || (is_alpha_cls(c) && !c.is_lowercase())
}

/// Python's `unicodedata.category(c).startswith("P")`, which spaCy's `is_punct` tests; exact for
/// ASCII and the common general/CJK punctuation blocks.
pub(super) fn is_py_punct(c: char) -> bool {
    matches!(c,
        '!' | '"' | '#' | '%' | '&' | '\'' | '(' | ')' | '*' | ',' | '-' | '.' | '/' | ':'
        | ';' | '?' | '@' | '[' | '\\' | ']' | '_' | '{' | '}'
        | '¡' | '§' | '«' | '¶' | '·' | '»' | '¿' | '\u{37E}' | '\u{387}'
        | '\u{2010}'..='\u{2027}' | '\u{2030}'..='\u{2043}' | '\u{2045}'..='\u{2051}'
        | '\u{2053}'..='\u{205E}' | '\u{3001}'..='\u{3003}' | '\u{3008}'..='\u{3011}'
        | '\u{3014}'..='\u{301F}' | '\u{FF01}'..='\u{FF03}' | '\u{FF05}'..='\u{FF0A}'
        | '\u{FF0C}'..='\u{FF0F}' | '\u{FF1A}' | '\u{FF1B}' | '\u{FF1F}' | '\u{FF20}'
        | '\u{FF3B}'..='\u{FF3D}' | '\u{FF3F}' | '\u{FF5B}' | '\u{FF5D}' | '\u{FF5F}'..='\u{FF65}'
        | '\u{055A}'..='\u{055F}' | '\u{0589}' | '\u{060C}' | '\u{061B}' | '\u{061F}' | '\u{06D4}'
        | '\u{0964}' | '\u{0965}')
}

/// Tokens that end a sentence for spaCy's sentencizer (its default `punct_chars`, common subset).
fn is_sentence_final(w: &str) -> bool {
    matches!(
        w,
        "!" | "."
            | "?"
            | "։"
            | "؟"
            | "۔"
            | "।"
            | "॥"
            | "‼"
            | "‽"
            | "⁇"
            | "⁈"
            | "⁉"
            | "﹒"
            | "﹖"
            | "﹗"
            | "！"
            | "．"
            | "？"
            | "｡"
            | "。"
    )
}

fn prefix_len(s: &str) -> usize {
    let Some(c) = s.chars().next() else { return 0 };
    let next = s[c.len_utf8()..].chars().next();
    if matches!(c, '§' | '%' | '=' | '—' | '–') || is_punct_cls(c) || is_quote(c) {
        return c.len_utf8();
    }
    if c == '+' {
        return if next.is_some_and(|n| n.is_ascii_digit()) {
            0
        } else {
            1
        };
    }
    if c == '.' && next == Some('.') {
        return s.bytes().take_while(|&b| b == b'.').count();
    }
    if is_currency(c) || is_icon(c) {
        return c.len_utf8();
    }
    if matches!(c, 'U' | 'C' | 'A') {
        for cur in ["US$", "C$", "A$"] {
            if s.starts_with(cur) {
                return cur.len();
            }
        }
    }
    0
}

/// Longest spaCy suffix match at the end of `s` (regex search finds the leftmost start, and every
/// alternative is anchored at the end, so leftmost means longest).
fn suffix_len(s: &str) -> usize {
    let mut rev = s.chars().rev();
    let Some(last) = rev.next() else { return 0 };
    let prev = rev.next();
    let prev2 = rev.next();
    let mut best = 0;
    if is_punct_cls(last) || is_quote(last) || is_icon(last) || matches!(last, '—' | '–') {
        best = last.len_utf8();
    }
    match last {
        '…' if s.ends_with("……") => best = best.max("……".len()),
        '.' => {
            let dots = s.bytes().rev().take_while(|&b| b == b'.').count();
            if dots >= 2 {
                best = best.max(dots);
            }
        }
        's' | 'S' => {
            for q in ["'s", "'S", "’s", "’S"] {
                if s.ends_with(q) {
                    best = best.max(q.len());
                }
            }
        }
        _ => {}
    }
    // `+`, currencies and units count only right after an ASCII digit. None of them holds a
    // digit, so only the tail after the last digit can be one (an ASCII byte always ends a
    // character, so that tail starts on a boundary).
    let bytes = s.as_bytes();
    let from = s.len().saturating_sub(MAX_DIGIT_SUFFIX_LEN + 1);
    if let Some(d) = bytes[from..].iter().rposition(u8::is_ascii_digit) {
        let k = from + d + 1;
        if k < s.len() && is_digit_suffix(&s[k..]) {
            best = best.max(s.len() - k);
        }
    }
    if last == '.' {
        if let Some(p) = prev {
            let after_temp = matches!(p, 'F' | 'f' | 'C' | 'c' | 'K' | 'k') && prev2 == Some('°');
            let after_class = p.is_ascii_digit()
                || is_lower_cls(p)
                || matches!(p, '%' | '²' | '-' | '+' | '|')
                || is_punct_cls(p)
                || is_quote(p);
            let after_upper2 = is_upper_cls(p) && prev2.is_some_and(is_upper_cls);
            if after_temp || after_class || after_upper2 {
                best = best.max(1);
            }
        }
    }
    best
}

/// spaCy's English infix rules, applied left to right without overlap; an infix at position 0
/// is not split off. `chars` is scratch space.
fn split_infixes<'a>(s: &'a str, out: &mut Vec<&'a str>, chars: &mut Vec<(usize, char)>) {
    // Fast path: in ASCII text only these characters can start an infix (icons, `…` and the
    // long dashes are not ASCII).
    if s.bytes().all(|b| {
        b.is_ascii()
            && !matches!(
                b,
                b'.' | b'+' | b'-' | b'*' | b'^' | b',' | b'~' | b':' | b'<' | b'>' | b'=' | b'/'
            )
    }) {
        if !s.is_empty() {
            out.push(s);
        }
        return;
    }
    chars.clear();
    chars.extend(s.char_indices());
    let chars = &chars[..];
    let mut start = 0;
    let mut i = 0;
    while i < chars.len() {
        let (pos, c) = chars[i];
        let prev = if i > 0 { Some(chars[i - 1].1) } else { None };
        let next = chars.get(i + 1).map(|&(_, c)| c);
        let len = infix_at(chars, i, c, prev, next);
        if len == 0 {
            i += 1;
            continue;
        }
        let end = chars.get(i + len).map_or(s.len(), |&(p, _)| p);
        if pos != 0 {
            if pos != start {
                out.push(&s[start..pos]);
            }
            out.push(&s[pos..end]);
            start = end;
        }
        i += len;
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
}

/// Length in chars of the infix match starting at char `i`, 0 if none.
fn infix_at(
    chars: &[(usize, char)],
    i: usize,
    c: char,
    prev: Option<char>,
    next: Option<char>,
) -> usize {
    // Every rule below starts with one of these characters.
    if !matches!(
        c,
        '.' | '…' | '+' | '-' | '*' | '^' | ',' | '–' | '—' | '~' | ':' | '<' | '>' | '=' | '/'
    ) && !is_icon(c)
    {
        return 0;
    }
    let alpha = |c: Option<char>| c.is_some_and(is_alpha_cls);
    if c == '.' && next == Some('.') {
        return chars[i..].iter().take_while(|&&(_, c)| c == '.').count();
    }
    if c == '…' || is_icon(c) {
        return 1;
    }
    let prev_digit = prev.is_some_and(|p| p.is_ascii_digit());
    if prev_digit
        && matches!(c, '+' | '-' | '*' | '^')
        && next.is_some_and(|n| n.is_ascii_digit() || n == '-')
    {
        return 1;
    }
    if c == '.'
        && prev.is_some_and(|p| is_lower_cls(p) || is_quote(p))
        && next.is_some_and(|n| is_upper_cls(n) || is_quote(n))
    {
        return 1;
    }
    if c == ',' && alpha(prev) && alpha(next) {
        return 1;
    }
    if !(alpha(prev) || prev_digit) {
        return 0;
    }
    let at = |k: usize| chars.get(i + k).map(|&(_, c)| c);
    for hyphen in ["-", "–", "—", "--", "---", "——", "~"] {
        let n = hyphen.chars().count();
        if hyphen.chars().enumerate().all(|(k, h)| at(k) == Some(h)) && alpha(at(n)) {
            return n;
        }
    }
    if matches!(c, ':' | '<' | '>' | '=' | '/') && alpha(next) {
        return 1;
    }
    0
}

/// spaCy's `url_match` (its URL regex, without a regex engine): optional scheme, optional user
/// info up to an `@`, then a public IPv4 address or a dotted host ending in a lower-case
/// top-level label of 2+ letters, optional port, optional path.
fn is_url(s: &str) -> bool {
    // Every accepted host has a dot.
    if !s.contains('.') {
        return false;
    }
    let mut rest = s;
    if let Some(at) = s.find("://") {
        let scheme = &s[..at];
        let scheme_ok = scheme.chars().count() >= 2
            && scheme
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'));
        if !scheme_ok {
            return false;
        }
        rest = &s[at + 3..];
    }
    // The user info is optional and may end at any '@': the regex matches if any choice does.
    host_and_path_ok(rest)
        || rest
            .match_indices('@')
            .any(|(at, _)| host_and_path_ok(&rest[at + 1..]))
}

fn host_and_path_ok(rest: &str) -> bool {
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let mut host = &rest[..host_end];
    if let Some((h, port)) = host.rsplit_once(':') {
        if !(2..=5).contains(&port.len()) || !port.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        host = h;
    }
    let labels: Vec<&str> = host.split('.').collect();
    if labels.len() < 2 {
        return false;
    }
    if labels
        .iter()
        .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
    {
        return is_public_ipv4(&labels);
    }
    let (tld, rest_labels) = labels.split_last().expect("two or more labels");
    let tld_ok = (2..=63).contains(&tld.chars().count())
        && tld.chars().all(|c| is_alpha_cls(c) && is_lower_cls(c));
    let label_ok = |l: &&str| {
        let edge = |c: char| c.is_ascii_alphanumeric() || c as u32 >= 0xA1;
        !l.is_empty()
            && l.chars().next().is_some_and(edge)
            && l.chars().last().is_some_and(edge)
            && l.chars().all(|c| edge(c) || c == '_' || c == '-')
    };
    tld_ok && rest_labels.iter().all(label_ok)
}

/// spaCy's IPv4 rule: first octet 1–223, last 1–254, private and loopback ranges excluded.
fn is_public_ipv4(labels: &[&str]) -> bool {
    let octets: Vec<u32> = labels
        .iter()
        .filter_map(|l| if l.len() <= 3 { l.parse().ok() } else { None })
        .collect();
    if octets.len() != 4 || labels[0].starts_with('0') {
        return false;
    }
    let (a, b) = (octets[0], octets[1]);
    let private = a == 10
        || a == 127
        || (a == 169 && b == 254)
        || (a == 192 && b == 168)
        || (a == 172 && (16..=31).contains(&b));
    (1..=223).contains(&a)
        && octets[1..3].iter().all(|&o| o <= 255)
        && (1..=254).contains(&octets[3])
        && !private
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        split_words(text, "en", &mut out);
        out
    }

    #[test]
    fn class_tests_match_their_lists() {
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            assert_eq!(is_punct_cls(c), PUNCT.contains(c), "{c:?}");
            assert_eq!(is_currency(c), CURRENCY.contains(c), "{c:?}");
        }
        assert_eq!(
            digit_suffixes().map(str::len).max(),
            Some(MAX_DIGIT_SUFFIX_LEN)
        );
        assert!(digit_suffixes().all(|s| !s.bytes().any(|b| b.is_ascii_digit())));
    }

    #[test]
    fn splits_punctuation_like_spacy() {
        assert_eq!(words("Hello, world!"), ["Hello", ",", "world", "!"]);
        assert_eq!(words("(see below)."), ["(", "see", "below", ")", "."]);
        assert_eq!(words("\"Quoted\""), ["\"", "Quoted", "\""]);
        assert_eq!(words("wait..."), ["wait", "..."]);
    }

    #[test]
    fn applies_special_cases_and_contractions() {
        assert_eq!(
            words("I can't go, e.g. now."),
            ["I", "ca", "n't", "go", ",", "e.g.", "now", "."]
        );
        assert_eq!(words("John's dog"), ["John", "'s", "dog"]);
        assert_eq!(words("Mr. Smith"), ["Mr.", "Smith"]);
    }

    #[test]
    fn splits_infixes_but_keeps_urls() {
        assert_eq!(words("well-known"), ["well", "-", "known"]);
        assert_eq!(words("3-4"), ["3", "-", "4"]);
        assert_eq!(words("end.The"), ["end", ".", "The"]);
        assert_eq!(
            words("see https://example.com/a."),
            ["see", "https://example.com/a", "."]
        );
        assert_eq!(words("python.org"), ["python.org"]);
        assert_eq!(words("10km"), ["10", "km"]);
        assert_eq!(words("mail/me@kernel.org"), ["mail/me@kernel.org"]);
        assert_eq!(words("8.8.8.8/x"), ["8.8.8.8/x"]);
        assert_eq!(words("192.168.0.0/24"), ["192.168.0.0/24"]);
        assert_eq!(words("|."), ["|", "."]);
        assert_eq!(words("$20"), ["$", "20"]);
    }

    #[test]
    fn merges_special_cases_spanning_affixes() {
        assert_eq!(words("foo():"), ["foo", "(", "):"]);
        assert_eq!(words("a-d."), ["a", "-", "d."]);
        assert_eq!(words("Hello''"), ["Hello", "''"]);
        assert_eq!(words("word:X"), ["word", ":X"]);
        assert_eq!(words("user id."), ["user", "i", "d."]);
        assert_eq!(words("a ) : b"), ["a", ")", ":", "b"]);
    }

    #[test]
    fn counts_sentences_like_the_sentencizer() {
        assert_eq!(count_sentences("One. Two! Three?", "en"), 3);
        assert_eq!(count_sentences("Wait... what?! Yes.", "en"), 2);
        assert_eq!(count_sentences("No final mark", "en"), 1);
        assert_eq!(count_sentences("", "en"), 0);
    }

    #[test]
    fn segments_chinese_with_jieba() {
        let mut out = Vec::new();
        split_words("我们在北京学习中文。", "zh", &mut out);
        assert!(out.len() >= 4 && out.contains(&"北京"), "{out:?}");
    }

    #[test]
    fn segments_japanese_into_short_units() {
        let mut out = Vec::new();
        split_words(
            "今日は朝から雨が降っていた。 Rust では所有権",
            "ja",
            &mut out,
        );
        assert_eq!(
            out,
            [
                "今日", "は", "朝", "から", "雨", "が", "降っ", "て", "い", "た", "。", "Rust",
                "で", "は", "所有", "権"
            ]
        );
    }
}

//! Vietnamese words as datatrove finds them: pyvi's syllables joined into words by pyvi's CRF.
//!
//! Vietnamese writes one syllable per space-separated unit, and most words have two or three
//! ("thư viện", library). datatrove counts words with spaCy's `vi` tokenizer, which is pyvi's:
//! a regular expression splits the text into syllables and punctuation, a linear-chain CRF labels
//! each one as starting a word (B_W) or continuing one (I_W), and a syllable labelled I_W joins
//! the word before it (whitespace included) unless punctuation, a digit or a capital after a
//! small letter stands at the seam. Counting syllables instead, as the English rules would,
//! changes the word count, mean word length and stop-word share that FineWeb-2's Vietnamese
//! thresholds were set on.
//!
//! The model is pyvi's own (weights, dictionary of two- and three-syllable words, and Python's
//! character classes), read out of the package by `scripts/gen-vi-segmenter`; this module runs
//! it as crfsuite does: state scores summed feature by feature in pyvi's order, Viterbi with the
//! first label kept on ties. Words are slices of the input.

use std::ops::Range;
use std::sync::OnceLock;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::Deserialize;

use super::pystr::{in_ranges, is_py_space};

/// Appends the words of `text` to `out`, as `spacy.blank("vi")` with pyvi finds them.
pub(super) fn split<'a>(text: &'a str, out: &mut Vec<&'a str>) {
    let model = model();
    let syllables = syllabelize(model, text);
    if syllables.is_empty() {
        return;
    }
    let tokens: Vec<&str> = syllables.iter().map(|r| &text[r.clone()]).collect();
    let labels = model.label(&tokens);
    let mut start = syllables[0].start;
    for i in 1..tokens.len() {
        if !(labels[i] == INSIDE && joins(model, tokens[i - 1], tokens[i])) {
            out.push(&text[start..syllables[i - 1].end]);
            start = syllables[i].start;
        }
    }
    out.push(&text[start..syllables[tokens.len() - 1].end]);
}

/// The label that continues a word (crfsuite's label 1, `I_W`).
const INSIDE: u8 = 1;

/// pyvi's guard on a CRF join: no punctuation on either side, no digit starting either
/// syllable, and no capital starting a syllable after one that does not.
fn joins(model: &Model, prev: &str, cur: &str) -> bool {
    /// Python's `string.punctuation`; pyvi tests `word in string.punctuation`, a substring test.
    const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
    let first = |s: &str| s.chars().next().expect("syllables are not empty");
    let (p, c) = (first(prev), first(cur));
    let seam_breaks = PUNCTUATION.contains(cur)
        || PUNCTUATION.contains(prev)
        || model.classes.digit.contains(c)
        || model.classes.digit.contains(p)
        || (model.is_title_char(c) && !model.is_title_char(p));
    !seam_breaks
}

#[derive(Deserialize)]
struct Data {
    labels: Vec<String>,
    transitions: [[u64; 2]; 2],
    fixed: FxHashMap<String, [u64; 2]>,
    lexical: Vec<(String, [u64; 6])>,
    bi_grams: Vec<String>,
    tri_grams: Vec<String>,
    classes: ClassData,
}

#[derive(Deserialize)]
struct ClassData {
    word: Vec<(u32, u32)>,
    decimal: Vec<(u32, u32)>,
    digit: Vec<(u32, u32)>,
    title: Vec<(u32, u32)>,
}

/// A Python character class: ASCII from a bitmap, the rest from the ranges above ASCII.
struct CharClass {
    ascii: u128,
    ranges: Vec<(u32, u32)>,
}

impl CharClass {
    fn new(ranges: Vec<(u32, u32)>) -> CharClass {
        let mut ascii = 0u128;
        for &(lo, hi) in &ranges {
            for c in lo..=hi.min(127) {
                ascii |= 1 << c;
            }
        }
        let ranges = ranges.into_iter().filter(|&(_, hi)| hi >= 128).collect();
        CharClass { ascii, ranges }
    }

    #[inline]
    fn contains(&self, c: char) -> bool {
        if c.is_ascii() {
            return self.ascii >> c as u32 & 1 == 1;
        }
        in_ranges(&self.ranges, c)
    }
}

struct Classes {
    /// `\w` of Python's `re` (`str.isalnum()` or `_`).
    word: CharClass,
    /// `\d` of Python's `re` (decimal digits).
    decimal: CharClass,
    /// `str.isdigit()` (decimal digits plus superscripts, circled digits and the like).
    digit: CharClass,
    /// Titlecase letters (category Lt), which Python's `istitle` treats as capitals.
    title: CharClass,
}

/// The features of pyvi's `word2features` whose value is a number, in the order it emits them.
#[derive(Clone, Copy)]
enum Fixed {
    Bias,
    IsUpper,
    IsTitle,
    IsDigit,
    PrevIsTitle,
    PrevIsUpper,
    PrevBiGram,
    PrevTriGram,
    NextIsTitle,
    NextIsUpper,
    NextBiGram,
    NextTriGram,
}

const FIXED_NAMES: [&str; 12] = [
    "bias",
    "word.isupper()",
    "word.istitle()",
    "word.isdigit()",
    "-1:word.istitle()",
    "-1:word.isupper()",
    "-1:word.bi_gram()",
    "-2:word.tri_gram()",
    "+1:word.istitle()",
    "+1:word.isupper()",
    "+1:word.bi_gram()",
    "+2:word.tri_gram()",
];

/// Weights of a lowercased syllable seen as the current word, the one before and the one after.
type Lexical = [[f64; 2]; 3];

struct Model {
    transitions: [[f64; 2]; 2],
    fixed: [[f64; 2]; 12],
    lexical: FxHashMap<Box<str>, Lexical>,
    bi_grams: FxHashSet<Box<str>>,
    tri_grams: FxHashSet<Box<str>>,
    classes: Classes,
}

fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let raw = zstd::decode_all(&include_bytes!("vi_segmenter.json.zst")[..])
            .expect("the embedded Vietnamese model decompresses");
        let data: Data =
            serde_json::from_slice(&raw).expect("the embedded Vietnamese model parses");
        assert_eq!(data.labels, ["B_W", "I_W"], "the model's labels");
        let weights = |bits: [u64; 2]| bits.map(f64::from_bits);
        Model {
            transitions: data.transitions.map(weights),
            fixed: FIXED_NAMES.map(|name| weights(data.fixed[name])),
            lexical: data
                .lexical
                .into_iter()
                .map(|(syllable, w)| {
                    let w = w.map(f64::from_bits);
                    (syllable.into(), [[w[0], w[1]], [w[2], w[3]], [w[4], w[5]]])
                })
                .collect(),
            bi_grams: data.bi_grams.into_iter().map(Into::into).collect(),
            tri_grams: data.tri_grams.into_iter().map(Into::into).collect(),
            classes: Classes {
                word: CharClass::new(data.classes.word),
                decimal: CharClass::new(data.classes.decimal),
                digit: CharClass::new(data.classes.digit),
                title: CharClass::new(data.classes.title),
            },
        }
    })
}

/// What the features need to know of one syllable.
struct Syllable<'m> {
    lexical: Option<&'m Lexical>,
    upper: bool,
    title: bool,
    digit: bool,
    /// Whether it and the syllable before it spell one of pyvi's two-syllable words.
    bi_gram: bool,
    /// Whether the two syllables before it and it spell one of pyvi's three-syllable words.
    tri_gram: bool,
}

impl Model {
    /// `str.istitle()` of a one-character string: an uppercase or titlecase letter.
    fn is_title_char(&self, c: char) -> bool {
        c.is_uppercase() || self.classes.title.contains(c)
    }

    /// Python's `str.isupper()`: a cased character, and no lowercase or titlecase one.
    fn is_upper(&self, s: &str) -> bool {
        let mut cased = false;
        for c in s.chars() {
            if c.is_lowercase() || self.classes.title.contains(c) {
                return false;
            }
            cased |= c.is_uppercase();
        }
        cased
    }

    /// Python's `str.istitle()`: capitals only after uncased characters, small letters only
    /// after cased ones, and at least one cased character.
    fn is_title(&self, s: &str) -> bool {
        let (mut cased, mut after_cased) = (false, false);
        for c in s.chars() {
            if c.is_uppercase() || self.classes.title.contains(c) {
                if after_cased {
                    return false;
                }
                (after_cased, cased) = (true, true);
            } else if c.is_lowercase() {
                if !after_cased {
                    return false;
                }
                (after_cased, cased) = (true, true);
            } else {
                after_cased = false;
            }
        }
        cased
    }

    fn features(&self, tokens: &[&str]) -> Vec<Syllable<'_>> {
        let lower: Vec<String> = tokens.iter().map(|t| t.to_lowercase()).collect();
        let mut key = String::new();
        let mut joined = |parts: &[String], set: &FxHashSet<Box<str>>| {
            key.clear();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    key.push(' ');
                }
                key.push_str(p);
            }
            set.contains(key.as_str())
        };
        (0..tokens.len())
            .map(|i| {
                let t = tokens[i];
                // crfsuite takes attribute names as C strings: a NUL ends the name.
                let name = lower[i].split('\0').next().unwrap_or_default();
                Syllable {
                    lexical: self.lexical.get(name),
                    upper: self.is_upper(t),
                    title: self.is_title(t),
                    digit: t.chars().all(|c| self.classes.digit.contains(c)),
                    bi_gram: i >= 1 && joined(&lower[i - 1..=i], &self.bi_grams),
                    tri_gram: i >= 2 && joined(&lower[i - 2..=i], &self.tri_grams),
                }
            })
            .collect()
    }

    /// crfsuite's state score of each label at each position: the weights of the attributes
    /// pyvi emits, added in its order (the sums are then the ones crfsuite computes, bit for bit).
    fn state_scores(&self, syl: &[Syllable<'_>]) -> Vec<[f64; 2]> {
        let w = |f: Fixed| self.fixed[f as usize];
        // An attribute the syllable lacks (or the model does not know) adds nothing.
        let absent = (false, [0.0; 2]);
        let lexical = |s: &Syllable<'_>, slot: usize| s.lexical.map_or(absent, |l| (true, l[slot]));
        (0..syl.len())
            .map(|i| {
                let (me, prev, next) = (&syl[i], i.checked_sub(1).map(|j| &syl[j]), syl.get(i + 1));
                let terms = [
                    (true, w(Fixed::Bias)),
                    lexical(me, 0),
                    (me.upper, w(Fixed::IsUpper)),
                    (me.title, w(Fixed::IsTitle)),
                    (me.digit, w(Fixed::IsDigit)),
                    prev.map_or(absent, |p| lexical(p, 1)),
                    (prev.is_some_and(|p| p.title), w(Fixed::PrevIsTitle)),
                    (prev.is_some_and(|p| p.upper), w(Fixed::PrevIsUpper)),
                    (me.bi_gram, w(Fixed::PrevBiGram)),
                    (me.tri_gram, w(Fixed::PrevTriGram)),
                    next.map_or(absent, |x| lexical(x, 2)),
                    (next.is_some_and(|x| x.title), w(Fixed::NextIsTitle)),
                    (next.is_some_and(|x| x.upper), w(Fixed::NextIsUpper)),
                    (next.is_some_and(|x| x.bi_gram), w(Fixed::NextBiGram)),
                    (
                        syl.get(i + 2).is_some_and(|x| x.tri_gram),
                        w(Fixed::NextTriGram),
                    ),
                ];
                let mut score = [0.0f64; 2];
                for (_, [begin, inside]) in terms.into_iter().filter(|t| t.0) {
                    score[0] += begin;
                    score[1] += inside;
                }
                score
            })
            .collect()
    }

    /// The best label sequence, by crfsuite's Viterbi (ties keep the lower label).
    fn label(&self, tokens: &[&str]) -> Vec<u8> {
        let state = self.state_scores(&self.features(tokens));
        let n = state.len();
        let mut back = vec![[0u8; 2]; n];
        let mut score = state[0];
        for t in 1..n {
            let mut next = [0.0; 2];
            for j in 0..2 {
                let (mut best, mut arg) = (f64::MIN, 0u8);
                for (i, prev) in score.iter().enumerate() {
                    let s = prev + self.transitions[i][j];
                    if best < s {
                        (best, arg) = (s, i as u8);
                    }
                }
                back[t][j] = arg;
                next[j] = best + state[t][j];
            }
            score = next;
        }
        let mut labels = vec![0u8; n];
        labels[n - 1] = u8::from(score[0] < score[1]);
        for t in (0..n - 1).rev() {
            labels[t] = back[t + 1][labels[t + 1] as usize];
        }
        labels
    }
}

/// The syllables, numbers, addresses and punctuation of `text` (byte ranges, whitespace left
/// out), as spaCy's `pyvi_sylabelize_with_ws` finds them with `re.findall` over
/// `\s+|[A-ZĐ]+\.|Tp\.|Mr\.|Mrs\.|Ms\.|Dr\.|ThS\.|==>|->|\.\.\.|>>|\w+://[^\s]+|` (e-mail)
/// `|\d+([\.,_]\d+)+|[^\w\s]|\w+`: at each position the first alternative that matches wins.
fn syllabelize(model: &Model, text: &str) -> Vec<Range<usize>> {
    let classes = &model.classes;
    let mut out = Vec::new();
    let mut p = 0;
    while let Some(c) = text[p..].chars().next() {
        let rest = &text[p..];
        let len = if is_py_space(c) {
            let end = rest.find(|c| !is_py_space(c)).unwrap_or(rest.len());
            p += end;
            continue;
        } else if let Some(n) = abbreviation(rest) {
            n
        } else if let Some(n) = ["==>", "->", "...", ">>"]
            .iter()
            .find(|s| rest.starts_with(*s))
            .map(|s| s.len())
        {
            n
        } else if let Some(n) = web_address(classes, rest) {
            n
        } else if let Some(n) = email(rest) {
            n
        } else if let Some(n) = grouped_number(classes, rest) {
            n
        } else if !classes.word.contains(c) {
            c.len_utf8()
        } else {
            run(rest, |c| classes.word.contains(c))
        };
        out.push(p..p + len);
        p += len;
    }
    out
}

/// Length in bytes of the longest prefix of `s` whose characters all pass `class`.
fn run(s: &str, class: impl Fn(char) -> bool) -> usize {
    s.find(|c| !class(c)).unwrap_or(s.len())
}

/// `[A-ZĐ]+\.` and pyvi's abbreviations (`Tp.`, `Mr.`, `Mrs.`, `Ms.`, `Dr.`, `ThS.`).
fn abbreviation(s: &str) -> Option<usize> {
    let caps = run(s, |c| c.is_ascii_uppercase() || c == 'Đ');
    if caps > 0 && s[caps..].starts_with('.') {
        return Some(caps + 1);
    }
    ["Tp.", "Mr.", "Mrs.", "Ms.", "Dr.", "ThS."]
        .iter()
        .find(|a| s.starts_with(*a))
        .map(|a| a.len())
}

/// `\w+://[^\s]+`.
fn web_address(classes: &Classes, s: &str) -> Option<usize> {
    let scheme = run(s, |c| classes.word.contains(c));
    if scheme == 0 || !s[scheme..].starts_with("://") {
        return None;
    }
    let at = scheme + 3;
    let tail = run(&s[at..], |c| !is_py_space(c));
    (tail > 0).then_some(at + tail)
}

/// `[a-zA-Z0-9_.+-]+@([a-zA-Z0-9-]+\.)+[a-zA-Z0-9-]+`, with the backtracking Python's engine
/// does: the domain ends at its last label that a dot does not end.
fn email(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let local = run(s, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | '-')
    });
    if local == 0 || b.get(local) != Some(&b'@') {
        return None;
    }
    let label = |at: usize| run(&s[at..], |c| c.is_ascii_alphanumeric() || c == '-');
    let (mut at, mut groups, mut last_label_end) = (local + 1, 0, 0);
    loop {
        let n = label(at);
        if n == 0 {
            // A dot was followed by no label: give the last group's label back as the final one.
            return (groups >= 2).then_some(last_label_end);
        }
        if b.get(at + n) != Some(&b'.') {
            return (groups >= 1).then_some(at + n);
        }
        (groups, last_label_end, at) = (groups + 1, at + n, at + n + 1);
    }
}

/// `\d+([\.,_]\d+)+`: digits in at least two groups ("12,5", "50.000", "1_000").
fn grouped_number(classes: &Classes, s: &str) -> Option<usize> {
    let digits = |at: usize| run(&s[at..], |c| classes.decimal.contains(c));
    let mut end = digits(0);
    if end == 0 {
        return None;
    }
    let mut groups = 0;
    while matches!(s.as_bytes().get(end), Some(b'.' | b',' | b'_')) {
        let n = digits(end + 1);
        if n == 0 {
            break;
        }
        (end, groups) = (end + 1 + n, groups + 1);
    }
    (groups > 0).then_some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        split(text, &mut out);
        out
    }

    /// Expected words are datatrove 0.10.1's `load_word_tokenizer("vi").word_tokenize` (spaCy
    /// 3.8 with pyvi 0.1.1) on the same text.
    #[test]
    fn joins_syllables_into_words_as_pyvi_does() {
        let cases: [(&str, &str); 6] = [
            (
                "Thư viện Quốc gia Việt Nam mở cửa từ 8 giờ sáng đến 17 giờ chiều, kể cả thứ Bảy.",
                "Thư viện|Quốc gia|Việt Nam|mở cửa|từ|8|giờ|sáng|đến|17|giờ|chiều|,|kể cả|thứ|Bảy|.",
            ),
            (
                "Ông Nguyễn Văn An, Giám đốc Sở Y tế Tp. Hồ Chí Minh, cho biết số ca mắc đã giảm \
                 12,5% so với tuần trước.",
                "Ông|Nguyễn|Văn An|,|Giám đốc|Sở|Y tế|Tp.|Hồ Chí Minh|,|cho|biết|số|ca|mắc|đã|\
                 giảm|12,5|%|so|với|tuần|trước|.",
            ),
            (
                "Liên hệ: hotro@thuvien.gov.vn hoặc truy cập https://thuvien.gov.vn/tra-cuu?q=sach \
                 để tra cứu.\nGiá vé: 50.000 đồng/người...",
                "Liên hệ|:|hotro@thuvien.gov.vn|hoặc|truy cập|https://thuvien.gov.vn/tra-cuu?q=sach|\
                 để|tra cứu|.|Giá|vé|:|50.000|đồng|/|người|...",
            ),
            (
                "TP.HCM  ->  Hà Nội ==> chuyến bay VN-123 cất cánh lúc 06:30 ngày 15/08/2024 >> \
                 Dr. Smith và ThS. Lê Thị Hoa đi cùng.",
                "TP.|HCM|->|Hà Nội|==>|chuyến|bay|VN|-|123|cất cánh|lúc|06|:|30|ngày|15|/|08|/|\
                 2024|>>|Dr. Smith|và|ThS.|Lê Thị Hoa|đi|cùng|.",
            ),
            (
                "Phần mềm LibreOffice hỗ trợ định dạng tệp Microsoft Word (.docx) và bảng tính Excel.",
                "Phần mềm|LibreOffice|hỗ trợ|định dạng|tệp|Microsoft Word|(|.|docx|)|và|bảng|tính|\
                 Excel|.",
            ),
            (
                "Trường đại học Bách Khoa Hà Nội tuyển sinh năm 2025 với 7.985 chỉ tiêu; học phí \
                 ước tính 28,5 triệu đồng mỗi năm.",
                "Trường|đại học|Bách Khoa|Hà Nội|tuyển sinh|năm|2025|với|7.985|chỉ tiêu|;|học phí|\
                 ước tính|28,5|triệu|đồng|mỗi|năm|.",
            ),
        ];
        for (text, expected) in cases {
            let expected: Vec<&str> = expected.split('|').collect();
            assert_eq!(words(text), expected, "{text}");
        }
    }

    /// Decomposed tone marks are not `\w` to Python's `re`: spaCy skips pyvi's NFC step, so each
    /// mark stands alone, and whale must split the same way to count the same words.
    #[test]
    fn decomposed_marks_split_as_in_python() {
        let nfd = "Ngu\u{31b}o\u{31b}\u{300}i du\u{300}ng co\u{301} the\u{302}\u{309} thay.";
        let expected = [
            "Ngu", "\u{31b}", "o", "\u{31b}", "\u{300}", "i", "du", "\u{300}", "ng", "co",
            "\u{301}", "the", "\u{302}", "\u{309}", "thay", ".",
        ];
        assert_eq!(words(nfd), expected);
    }

    #[test]
    fn addresses_and_numbers_follow_pythons_backtracking() {
        let model = model();
        assert_eq!(email("a.b@mail.example.com, x"), Some(20));
        assert_eq!(email("a@b.c."), Some(5), "a trailing dot is left out");
        assert_eq!(
            email("a@b..c"),
            None,
            "one label then an empty one: no match"
        );
        assert_eq!(email("a@b.c..d"), Some(5));
        assert_eq!(email("a@bc"), None, "a domain needs a dot");
        assert_eq!(grouped_number(&model.classes, "1.000.000đ"), Some(9));
        assert_eq!(grouped_number(&model.classes, "2024."), None);
        assert_eq!(web_address(&model.classes, "http:// x"), None);
        assert_eq!(abbreviation("ĐHQG.HN"), Some("ĐHQG.".len()));
        assert!(words("").is_empty() && words(" \n\t ").is_empty());
    }
}

//! Words of Indian languages as FineWeb-2 splits them: the Indic NLP Library's
//! `trivial_tokenize`, which datatrove's `IndicNLPTokenizer` runs for Hindi, Bengali, Tamil,
//! Urdu and the other languages of Brahmi-derived and Perso-Arabic scripts (FineWeb-2's
//! `hin_Deva`, `ben_Beng`, … keys; see [`super::words::split_words`]).
//!
//! The tokenizer is punctuation-based, and what it does is reproduced step for step, quirks
//! included, because word counts and lengths decide the Gopher rules:
//! - a tab becomes a space; every punctuation mark of its class (ASCII punctuation but the
//!   backslash, plus the danda, double danda and a few others; Urdu: Arabic-script marks
//!   instead) is surrounded by spaces; runs of spaces collapse; the text is split at single
//!   spaces. So only spaces and tabs separate words: "दुनिया\nनमस्ते" is one word (datatrove then
//!   strips each word of Python whitespace and drops the empty ones).
//! - except in Urdu, numbers are glued back: a match of `([0-9]+ [,.:/] )+[0-9]+` in the spaced text loses its
//!   spaces ("12 , 345" → "12,345", also "ab12,3" → "ab12,3" and "1 : 30" → "1:30"), except a
//!   match at the very start of the text (`if start > prev` in the library): "1/2/2020 को" at the
//!   start of a document stays "1" "/" "2" "/" "2020".
//!
//! A glued number is a slice of the text unless the text had spaces or tabs inside it; those rare
//! words are written to the caller's spill arena.

use bumpalo::Bump;

use super::pystr::py_strip;

/// Which punctuation class splits: Urdu's differs from the Brahmi scripts'.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Script {
    Brahmi,
    Urdu,
}

/// The tokenizer the library runs for an ISO 639-1 code, `None` for other languages. The codes
/// are those FineWeb-2 gives `IndicNLPTokenizer` (by their `{iso3}_{script}` key in datatrove's
/// `tokenizer_assignment.csv`) that whale's language identifier can name.
pub fn script_of(lang: &str) -> Option<Script> {
    match lang {
        "hi" | "bn" | "gu" | "kn" | "ml" | "mr" | "ne" | "pa" | "ta" | "te" | "or" | "as"
        | "si" | "sa" => Some(Script::Brahmi),
        "ur" => Some(Script::Urdu),
        _ => None,
    }
}

/// `string.punctuation` as the library's character class holds it: its `\]` escapes the
/// bracket, so the backslash itself is not in the class.
fn is_ascii_class(c: char) -> bool {
    c.is_ascii_punctuation() && c != '\\'
}

fn splits_alone(c: char, script: Script) -> bool {
    if c.is_ascii() {
        return is_ascii_class(c);
    }
    match script {
        Script::Brahmi => matches!(
            c,
            '\u{964}' | '\u{965}' | '\u{aaf0}' | '\u{aaf1}' | '\u{abeb}'
                ..='\u{abef}' | '\u{1c7e}' | '\u{1c7f}'
        ),
        Script::Urdu => matches!(
            c,
            '\u{609}' | '\u{60a}' | '\u{60c}' | '\u{61e}' | '\u{66a}'..='\u{66d}' | '\u{6d4}'
        ),
    }
}

/// A token of the spaced text, as a byte range of the original.
#[derive(Clone, Copy)]
struct Tok {
    start: usize,
    end: usize,
}

/// Appends the words of `text` to `out`, as datatrove's `IndicNLPTokenizer.word_tokenize`.
pub fn split<'a>(text: &'a str, script: Script, spill: &'a Bump, out: &mut Vec<&'a str>) {
    let toks = spaced_tokens(text, script);
    let s = |t: &Tok| &text[t.start..t.end];
    let all_digits = |t: &Tok| s(t).bytes().all(|b| b.is_ascii_digit());
    let number_mark = |t: &Tok| matches!(s(t), "," | "." | ":" | "/");
    let starts_digit = |t: &Tok| s(t).as_bytes()[0].is_ascii_digit();
    // Where a glued number that starts at word `i` ends: it starts at a word ending in a digit,
    // `([0-9]+ [,.:/] )+` takes whole digit words after it, and the last `[0-9]+` the digits
    // a word starts with. `i` itself when no number starts there.
    let chain_end = |i: usize| {
        let mut j = i;
        if s(&toks[i])
            .as_bytes()
            .last()
            .is_some_and(u8::is_ascii_digit)
        {
            while j + 2 < toks.len()
                && (j == i || all_digits(&toks[j]))
                && number_mark(&toks[j + 1])
                && starts_digit(&toks[j + 2])
            {
                j += 2;
            }
        }
        j
    };
    if script == Script::Urdu {
        // `trivial_tokenize_urdu` glues no numbers.
        for t in &toks {
            push_stripped(s(t), out);
        }
        return;
    }
    let mut i = 0;
    while i < toks.len() {
        let mut j = chain_end(i);
        if j == i {
            push_stripped(s(&toks[i]), out);
            i += 1;
            continue;
        }
        if i == 0 && all_digits(&toks[0]) {
            // The library's `if start > prev` leaves a match that starts the text as it is; its
            // last word may still start the next match, after its leading digits.
            for t in &toks[..j] {
                push_stripped(s(t), out);
            }
            i = j;
            continue;
        }
        // A word that ends a match and ends in digits of its own starts the next one: both
        // glue into one word ("x1 , 2ab3 , 4" → "x1,2ab3,4").
        loop {
            let next = chain_end(j);
            if next == j {
                break;
            }
            j = next;
        }
        let group = &toks[i..=j];
        if group.windows(2).all(|w| w[0].end == w[1].start) {
            push_stripped(&text[group[0].start..group[j - i].end], out);
        } else {
            let glued = spill.alloc_str(&group.iter().map(s).collect::<String>());
            push_stripped(glued, out);
        }
        i = j + 1;
    }
}

/// The tokens `re.sub('[ ]+', ' ', spaced).strip(' ').split(' ')` yields: runs of characters
/// other than spaces, tabs and splitting marks, and each mark alone.
fn spaced_tokens(text: &str, script: Script) -> Vec<Tok> {
    let mut toks = Vec::with_capacity(text.len() / 6);
    let mut start = None;
    for (at, c) in text.char_indices() {
        let alone = splits_alone(c, script);
        if c == ' ' || c == '\t' || alone {
            if let Some(s) = start.take() {
                toks.push(Tok { start: s, end: at });
            }
            if alone {
                toks.push(Tok {
                    start: at,
                    end: at + c.len_utf8(),
                });
            }
        } else if start.is_none() {
            start = Some(at);
        }
    }
    if let Some(s) = start {
        toks.push(Tok {
            start: s,
            end: text.len(),
        });
    }
    toks
}

/// datatrove's `strip_strings`: Python's `str.strip()`, empty words dropped.
fn push_stripped<'a>(word: &'a str, out: &mut Vec<&'a str>) {
    let word = py_strip(word);
    if !word.is_empty() {
        out.push(word);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str, script: Script) -> Vec<String> {
        let spill = Bump::new();
        let mut out = Vec::new();
        split(text, script, &spill, &mut out);
        out.into_iter().map(String::from).collect()
    }

    /// Expected values printed by indic-nlp-library 0.92's `trivial_tokenize` through
    /// datatrove 0.10.1's `strip_strings`.
    #[test]
    fn splits_as_the_indic_nlp_library() {
        let cases: &[(&str, &[&str])] = &[
            ("12 , 345 है", &["12", ",", "345", "है"]),
            ("यह 12,345 है।", &["यह", "12,345", "है", "।"]),
            ("a1 , 2 , 3x , 4", &["a1,2,3x", ",", "4"]),
            ("1 , 2ab3 , 4", &["1", ",", "2ab3,4"]),
            ("1 , 2 , 3 और", &["1", ",", "2", ",", "3", "और"]),
            ("x1 , 2ab3 , 4", &["x1,2ab3,4"]),
            ("x1 , 2ab3 , 4 , 5c", &["x1,2ab3,4,5c"]),
            ("x\n12 : 30\tबजे", &["x\n12:30", "बजे"]),
            ("नमस्ते\nदुनिया। 3.14", &["नमस्ते\nदुनिया", "।", "3.14"]),
            (" \u{a0}क\u{3000}ख ", &["क\u{3000}ख"]),
            ("ab12, 3", &["ab12,3"]),
            ("1/2/2020 को", &["1", "/", "2", "/", "2020", "को"]),
            ("को 1/2/2020", &["को", "1/2/2020"]),
            ("C:\\path (x)", &["C", ":", "\\path", "(", "x", ")"]),
            ("", &[]),
            ("\n\n", &[]),
        ];
        for (text, want) in cases {
            assert_eq!(words(text, Script::Brahmi), *want, "{text:?}");
        }
    }

    #[test]
    fn urdu_splits_at_arabic_marks_not_at_the_danda_and_glues_no_numbers() {
        assert_eq!(
            words("یہ کتاب ہے۔ اور، وہ।", Script::Urdu),
            ["یہ", "کتاب", "ہے", "۔", "اور", "،", "وہ।"]
        );
        assert_eq!(words("यह है। और", Script::Brahmi), ["यह", "है", "।", "और"]);
        assert_eq!(words("कुल 1.5 और", Script::Brahmi), ["कुल", "1.5", "और"]);
        assert_eq!(
            words("کل 1.5 اور", Script::Urdu),
            ["کل", "1", ".", "5", "اور"]
        );
    }

    #[test]
    fn glued_numbers_are_slices_unless_the_text_spaced_them() {
        let text = "कुल 12,345 और 6 , 789";
        let spill = Bump::new();
        let mut out = Vec::new();
        split(text, Script::Brahmi, &spill, &mut out);
        assert_eq!(out, ["कुल", "12,345", "और", "6,789"]);
        let inside = |w: &str| text.as_bytes().as_ptr_range().contains(&w.as_ptr());
        assert!(inside(out[1]) && !inside(out[3]));
    }

    #[test]
    fn languages_follow_fineweb2() {
        assert_eq!(script_of("hi"), Some(Script::Brahmi));
        assert_eq!(script_of("ta"), Some(Script::Brahmi));
        assert_eq!(script_of("ur"), Some(Script::Urdu));
        assert_eq!(script_of("en"), None);
        assert_eq!(script_of("th"), None);
    }
}

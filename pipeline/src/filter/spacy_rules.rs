//! spaCy's tokenizer rules for the languages other than English, run as spaCy runs them.
//!
//! datatrove counts a document's words with `spacy.blank(lang)`, whose prefix, suffix and infix
//! patterns, `token_match` and special cases differ per language: German keeps "z.B." and an
//! ordinal "4." whole, Norwegian keeps "32-bits", Indonesian has 16,000 hyphenated words, French
//! splits elisions ("l'"), Romanian splits clitics ("-ul"). English is written out by hand in
//! [`super::words`] for speed; every other language datatrove gives to spaCy uses that language's
//! own patterns, generated from spaCy into `spacy_rules.json.zst` by `scripts/gen-spacy-rules`
//! and run by Oniguruma in Python syntax (lookbehinds included, alternatives tried in order, as
//! Python's `re` does). The tokenizer algorithm around them is the one `words.rs` shares with
//! English; like spaCy, a chunk's tokens are remembered (per thread), so a word costs its regex
//! searches once.

use std::cell::RefCell;
use std::sync::OnceLock;

use onig::{Regex, RegexOptions, SearchOptions, Syntax};
use rustc_hash::FxHashMap;
use serde::Deserialize;

use super::words::{Rules, Scratch, Specials};

/// Chunks remembered per language and thread before the memory starts over (spaCy's cache
/// holds 10,000 per tokenizer; words repeat, so a larger one serves long runs better).
const CACHE_CHUNKS: usize = 1 << 16;

#[derive(Deserialize)]
struct Data {
    languages: FxHashMap<String, String>,
    rules: FxHashMap<String, LangData>,
}

#[derive(Deserialize)]
struct LangData {
    prefix: Option<String>,
    /// The suffix alternatives that match at most `suffix_chars` characters.
    suffix: Option<String>,
    suffix_chars: usize,
    /// The suffix alternatives without such a bound.
    suffix_unbounded: Option<String>,
    infix: Option<String>,
    token_match: Option<String>,
    special_cases: Vec<(String, Vec<String>)>,
}

/// The generated data, parsed once; the patterns of a language are compiled on first use.
struct Table {
    /// ISO 639-1 code → index into `langs`.
    codes: FxHashMap<String, usize>,
    langs: Vec<(String, OnceLock<LangRules>)>,
    data: Vec<LangData>,
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let raw = zstd::decode_all(&include_bytes!("spacy_rules.json.zst")[..])
            .expect("the embedded spaCy rules decompress");
        let data: Data = serde_json::from_slice(&raw).expect("the embedded spaCy rules parse");
        let mut names: Vec<String> = data.rules.keys().cloned().collect();
        names.sort();
        let index: FxHashMap<&str, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let codes = data
            .languages
            .iter()
            .map(|(code, lang)| (code.clone(), index[lang.as_str()]))
            .collect();
        let mut rules = data.rules;
        let data = names
            .iter()
            .map(|n| rules.remove(n).expect("named above"))
            .collect();
        Table {
            codes,
            langs: names.into_iter().map(|n| (n, OnceLock::new())).collect(),
            data,
        }
    })
}

/// The rules datatrove's tokenizer for ISO 639-1 `code` uses, when they are spaCy's rule-based
/// ones other than English's.
pub(super) fn for_language(code: &str) -> Option<&'static LangRules> {
    let table = table();
    let &i = table.codes.get(code)?;
    Some(
        table.langs[i]
            .1
            .get_or_init(|| LangRules::new(i, &table.data[i])),
    )
}

/// One language's compiled rules.
pub(super) struct LangRules {
    /// Index of the language, for the per-thread chunk cache.
    id: usize,
    prefix: Option<Regex>,
    /// spaCy's suffix pattern in two parts: a match of `suffix` starts within the last
    /// `suffix_chars` characters, so only those start positions are tried.
    suffix: Option<Regex>,
    suffix_chars: usize,
    suffix_unbounded: Option<Regex>,
    infix: Option<Regex>,
    token_match: Option<Regex>,
    specials: Specials,
}

fn compile(lang: usize, what: &str, source: &Option<String>) -> Option<Regex> {
    source.as_ref().map(|s| {
        Regex::with_options(s, RegexOptions::REGEX_OPTION_NONE, Syntax::python()).unwrap_or_else(
            |e| {
                panic!(
                    "spaCy {what} pattern of language {} does not compile: {e}",
                    table().langs[lang].0
                )
            },
        )
    })
}

impl LangRules {
    fn new(id: usize, data: &'static LangData) -> LangRules {
        let specials = data
            .special_cases
            .iter()
            .map(|(chunk, parts)| {
                let parts: Vec<&'static str> = parts.iter().map(String::as_str).collect();
                (chunk.as_str(), &*Box::leak(parts.into_boxed_slice()))
            })
            .collect();
        LangRules {
            id,
            prefix: compile(id, "prefix", &data.prefix),
            suffix: compile(id, "suffix", &data.suffix),
            suffix_chars: data.suffix_chars,
            suffix_unbounded: compile(id, "suffix", &data.suffix_unbounded),
            infix: compile(id, "infix", &data.infix),
            token_match: compile(id, "token_match", &data.token_match),
            specials: Specials::new(specials),
        }
    }
}

/// Chunk → its tokens' lengths in bytes (a chunk's tokens cover it).
type ChunkMemo = FxHashMap<Box<str>, Box<[u32]>>;

thread_local! {
    /// One memo per language, indexed like the table's languages.
    static CACHE: RefCell<Vec<ChunkMemo>> = const { RefCell::new(Vec::new()) };
}

impl Rules for LangRules {
    fn specials(&self) -> Option<&Specials> {
        Some(&self.specials)
    }

    fn prefix_len(&self, s: &str) -> usize {
        // `^(?:…)` searched: a match at the start or none.
        self.prefix.as_ref().map_or(0, |r| {
            r.match_with_options(s, 0, SearchOptions::SEARCH_OPTION_NONE, None)
                .unwrap_or(0)
        })
    }

    fn suffix_len(&self, s: &str) -> usize {
        // spaCy searches `a$|b$|…` for the leftmost match. Every alternative ends at the end, so
        // the leftmost start over all alternatives is that match's start, whichever part it is in.
        // (Oniguruma's range end bounds where a `$`-anchored match may end, not where it may
        // start, so every search runs to the end of the word.)
        let search = |r: &Regex, from: usize| {
            r.search_with_options(s, from, s.len(), SearchOptions::SEARCH_OPTION_NONE, None)
        };
        let tail = s
            .char_indices()
            .rev()
            .nth(self.suffix_chars.saturating_sub(1))
            .map_or(0, |(at, _)| at);
        let bounded = self.suffix.as_ref().and_then(|r| search(r, tail));
        let unbounded = self.suffix_unbounded.as_ref().and_then(|r| search(r, 0));
        bounded
            .into_iter()
            .chain(unbounded)
            .min()
            .map_or(0, |start| s.len() - start)
    }

    fn token_match(&self, s: &str) -> bool {
        self.token_match.as_ref().is_some_and(|r| {
            r.match_with_options(s, 0, SearchOptions::SEARCH_OPTION_NONE, None)
                .is_some()
        })
    }

    /// Python's `finditer`: leftmost matches left to right, without overlap; after an empty
    /// match the next one starts a character later.
    fn split_infixes<'a>(&self, s: &'a str, out: &mut Vec<&'a str>, scratch: &mut Scratch) {
        let Some(infix) = &self.infix else {
            out.push(s);
            return;
        };
        let region = scratch.region.get_or_insert_with(onig::Region::new);
        let mut from = 0;
        let mut start = 0;
        while from <= s.len() {
            let found = infix.search_with_options(
                s,
                from,
                s.len(),
                SearchOptions::SEARCH_OPTION_NONE,
                Some(region),
            );
            let Some((a, b)) = found.and_then(|_| region.pos(0)) else {
                break;
            };
            // spaCy skips a match at the very start, and an empty match is no token.
            if a != 0 {
                if a != start {
                    out.push(&s[start..a]);
                }
                if a != b {
                    out.push(&s[a..b]);
                }
                start = b;
            }
            from = if a == b {
                match s[b..].chars().next() {
                    Some(c) => b + c.len_utf8(),
                    None => break,
                }
            } else {
                b
            };
        }
        if start < s.len() {
            out.push(&s[start..]);
        }
    }

    fn tokenize<'a>(&self, chunk: &'a str, out: &mut Vec<&'a str>, scratch: &mut Scratch) {
        let hit = CACHE.with_borrow(|cache| {
            let lens = cache.get(self.id)?.get(chunk)?;
            let mut at = 0;
            for &len in lens.iter() {
                out.push(&chunk[at..at + len as usize]);
                at += len as usize;
            }
            Some(())
        });
        if hit.is_some() {
            return;
        }
        let first = out.len();
        super::words::tokenize_chunk(self, chunk, out, scratch);
        let lens: Box<[u32]> = out[first..].iter().map(|t| t.len() as u32).collect();
        CACHE.with_borrow_mut(|cache| {
            if cache.len() <= self.id {
                cache.resize_with(self.id + 1, FxHashMap::default);
            }
            let memo = &mut cache[self.id];
            if memo.len() >= CACHE_CHUNKS {
                memo.clear();
            }
            memo.insert(chunk.into(), lens);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_compiles() {
        let table = table();
        assert!(table.langs.len() >= 40, "{} languages", table.langs.len());
        for code in ["de", "fr", "nl", "id", "ro", "nn", "sl", "hr", "fa", "is"] {
            assert!(for_language(code).is_some(), "{code}");
        }
        for (i, (name, _)) in table.langs.iter().enumerate() {
            let code = table
                .codes
                .iter()
                .find(|(_, &j)| j == i)
                .expect("a code per language")
                .0;
            assert!(for_language(code).is_some(), "{name}");
        }
        for code in ["en", "zh", "ja", "vi", "ko", "hi"] {
            assert!(for_language(code).is_none(), "{code}");
        }
    }

    /// The suffix search tries only the last `suffix_chars` characters for the bounded
    /// alternatives; on every language it must find what spaCy's whole pattern finds.
    #[test]
    fn split_suffix_search_equals_the_whole_pattern() {
        let words = [
            "Haus.",
            "z.B.",
            "usw..",
            "Ende...",
            "10km",
            "3,5kg",
            "5.000€",
            "20%",
            "(Text)",
            "\"Zitat\",",
            "l'homme.",
            "ab-",
            "Ö.",
            "dvs.",
            "32-bits",
            "4.",
            "x'",
            "co-op)",
            "€5",
            "12:30h",
            "Σελίδα.",
            "10mg",
            "3.5m",
            "2000'",
            "καλο-καίρι",
            "—",
            "a",
            "",
            "...",
            "Mrs.)",
            "cm²",
            "½",
            "“quoted”",
            "word…",
            "2¢",
            "AT&T's",
            "1.2.3.",
            "**bold**",
            // Longer than any bounded suffix: the search starts inside the word, and lookbehinds
            // must still see the characters before that point.
            "Übersetzungsprogramm.",
            "Entfernung1234567km",
            "Gesamtpreis:12,50€",
            "Seite123456.",
            "Straßenbahnhaltestelle...",
            "((((((Klammer))))))",
            "Σελίδααααα10mg",
            "1234567890%",
            "Bundesministerium's",
            "abcdefgh-",
            "Kilometerzähler)\".",
            "Temperatur25°C",
        ];
        let table = table();
        for (i, (name, _)) in table.langs.iter().enumerate() {
            let data = &table.data[i];
            let whole = [&data.suffix, &data.suffix_unbounded]
                .into_iter()
                .flatten()
                .cloned()
                .collect::<Vec<_>>()
                .join("|");
            let whole =
                Regex::with_options(&whole, RegexOptions::REGEX_OPTION_NONE, Syntax::python())
                    .expect("compiles");
            let rules = LangRules::new(i, data);
            for w in words {
                let expected = whole
                    .search_with_options(w, 0, w.len(), SearchOptions::SEARCH_OPTION_NONE, None)
                    .map_or(0, |start| w.len() - start);
                assert_eq!(rules.suffix_len(w), expected, "{name}: {w:?}");
            }
        }
    }
}

//! Added and special tokens: found before pre-tokenization, as HF's `AddedVocabulary` does
//! (leftmost-longest; tokens with `normalized: false` in the raw text first, then the others in
//! the normalized text of what is left; honouring `single_word`, `lstrip` and `rstrip`).

use crate::normalizer::Normalizer;
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use anyhow::{anyhow, Result};
use serde::{Deserialize, Serialize};

/// One entry of tokenizer.json's `added_tokens`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddedToken {
    pub id: u32,
    pub content: String,
    #[serde(default)]
    pub single_word: bool,
    #[serde(default)]
    pub lstrip: bool,
    #[serde(default)]
    pub rstrip: bool,
    #[serde(default)]
    pub normalized: bool,
    #[serde(default)]
    pub special: bool,
}

impl AddedToken {
    /// A special token as the trainer adds it (HF's `AddedToken::from(content, true)`).
    pub fn special(id: u32, content: &str) -> AddedToken {
        AddedToken {
            id,
            content: content.to_string(),
            single_word: false,
            lstrip: false,
            rstrip: false,
            normalized: false,
            special: true,
        }
    }
}

/// A stretch of input: (normalized) plain text to pre-tokenize, or an added token's id.
pub enum Segment<'a> {
    Text(&'a str),
    Token(u32),
}

/// One leftmost-longest matcher: the automaton and, per pattern, the index of its token.
struct Matcher {
    automaton: AhoCorasick,
    tokens: Vec<usize>,
}

/// The added tokens of a tokenizer, and the two matchers HF builds over them: one for tokens
/// with `normalized: false`, run on the raw text, one for the others, run on normalized text and
/// holding their normalized contents.
pub struct AddedVocab {
    pub tokens: Vec<AddedToken>,
    raw: Option<Matcher>,
    normalized: Option<Matcher>,
}

/// The matcher over `patterns`: (token index, text to match) in priority order. No matcher when
/// there is nothing to match.
fn matcher(patterns: Vec<(usize, String)>) -> Result<Option<Matcher>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let automaton = AhoCorasickBuilder::new()
        .match_kind(MatchKind::LeftmostLongest)
        .build(patterns.iter().map(|(_, p)| p))
        .map_err(|e| anyhow!("cannot index added tokens: {e}"))?;
    Ok(Some(Matcher {
        automaton,
        tokens: patterns.into_iter().map(|(i, _)| i).collect(),
    }))
}

impl AddedVocab {
    /// Indexes `tokens` (non-empty, distinct contents) as HF's `AddedVocabulary` does: special
    /// tokens come before the others (which decides between two normalized tokens that
    /// normalize to the same text), and `normalized` tokens match by their normalized content.
    pub fn new(tokens: Vec<AddedToken>, normalizer: &Normalizer) -> Result<AddedVocab> {
        let mut order: Vec<usize> = (0..tokens.len()).collect();
        order.sort_by_key(|&i| !tokens[i].special);
        let (mut raw, mut normalized) = (Vec::new(), Vec::new());
        for i in order {
            let token = &tokens[i];
            if !token.normalized {
                raw.push((i, token.content.clone()));
                continue;
            }
            // A token that normalizes to nothing would match between any two bytes (HF panics
            // on such text); it never matches here.
            let pattern = normalizer.normalize(&token.content).into_owned();
            if !pattern.is_empty() {
                normalized.push((i, pattern));
            }
        }
        Ok(AddedVocab {
            raw: matcher(raw)?,
            normalized: matcher(normalized)?,
            tokens,
        })
    }

    /// Cuts `text` as HF's `AddedVocabulary::extract_and_normalize` does: raw tokens out of the
    /// raw text, then each stretch between them normalized, then normalized tokens out of that.
    /// Text segments are never empty.
    pub fn split(&self, text: &str, normalizer: &Normalizer, emit: &mut dyn FnMut(Segment<'_>)) {
        match &self.raw {
            None => self.split_normalized(text, normalizer, emit),
            Some(raw) => self.find(text, raw, &mut |segment| match segment {
                Segment::Text(t) => self.split_normalized(t, normalizer, emit),
                token => emit(token),
            }),
        }
    }

    fn split_normalized(
        &self,
        text: &str,
        normalizer: &Normalizer,
        emit: &mut dyn FnMut(Segment<'_>),
    ) {
        let text = normalizer.normalize(text);
        match &self.normalized {
            None if text.is_empty() => {}
            None => emit(Segment::Text(&text)),
            Some(normalized) => self.find(&text, normalized, emit),
        }
    }

    /// HF's `AddedVocabulary::find_matches` with one matcher, empty pieces dropped as HF's
    /// `PreTokenizedString::split` drops them.
    fn find(&self, text: &str, matcher: &Matcher, emit: &mut dyn FnMut(Segment<'_>)) {
        let mut done = 0;
        for m in matcher.automaton.find_iter(text) {
            let token = &self.tokens[matcher.tokens[m.pattern().as_usize()]];
            let (mut start, mut stop) = (m.start(), m.end());
            if token.single_word {
                let before = text[..start].chars().next_back().is_some_and(is_word);
                let after = text[stop..].chars().next().is_some_and(is_word);
                if before || after {
                    continue;
                }
            }
            if token.lstrip {
                let trimmed = text[..start].trim_end_matches(char::is_whitespace).len();
                start = trimmed.max(done);
            }
            if token.rstrip {
                let rest = &text[stop..];
                stop += rest.len() - rest.trim_start_matches(char::is_whitespace).len();
            }
            if done < start {
                emit(Segment::Text(&text[done..start]));
            }
            if start < stop {
                emit(Segment::Token(token.id));
            }
            done = stop;
        }
        if done < text.len() {
            emit(Segment::Text(&text[done..]));
        }
    }
}

/// Regex `\w` (the `regex` crate's Unicode word character), as HF's `single_word` check uses it.
fn is_word(c: char) -> bool {
    crate::unicode::flags(c) & crate::unicode::WORD != 0
}

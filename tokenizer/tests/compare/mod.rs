//! Whale against HF `tokenizers`, both loading the same tokenizer.json: the ids of
//! `encode(text, false)` and of `encode(text, true)` must be identical.

use rayon::prelude::*;
use std::str::FromStr;
use tokenizer::Tokenizer;

/// How much was compared: texts (once per encode mode) and ids.
#[derive(Clone, Copy, Debug, Default)]
pub struct Compared {
    texts: usize,
    ids: usize,
}

impl std::ops::AddAssign for Compared {
    fn add_assign(&mut self, other: Compared) {
        self.texts += other.texts;
        self.ids += other.ids;
    }
}

impl std::fmt::Display for Compared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} texts, {} ids compared with HF", self.texts, self.ids)
    }
}

/// Loads `json` with both libraries and asserts the same ids on every text, in both modes.
pub fn assert_same_ids(json: &str, texts: &[String]) -> Compared {
    let hf = tokenizers::Tokenizer::from_str(json).expect("HF loads the file");
    let ours = Tokenizer::from_json_str(json).expect("whale loads the file");
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let plain = ours.encode_batch(&refs);
    let mut compared = Compared::default();
    let specials = refs
        .par_iter()
        .map(|t| ours.encode_with_specials(t))
        .collect();
    for (add_specials, ours_ids) in [(false, plain), (true, specials)] {
        let expected = hf
            .encode_batch(refs.clone(), add_specials)
            .expect("HF encodes");
        for ((text, ids), hf_ids) in texts.iter().zip(&ours_ids).zip(&expected) {
            let hf_ids = hf_ids.get_ids();
            if ids != hf_ids {
                let at = ids.iter().zip(hf_ids).take_while(|(a, b)| a == b).count();
                panic!(
                    "ids differ (add_special_tokens = {add_specials}) at index {at}: whale {:?}, \
                     HF {:?}, on {:?}",
                    &ids[at..ids.len().min(at + 8)],
                    &hf_ids[at..hf_ids.len().min(at + 8)],
                    text.chars().take(300).collect::<String>()
                );
            }
            compared.ids += ids.len();
        }
        compared.texts += texts.len();
    }
    compared
}

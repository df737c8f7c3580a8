//! Language identification with whatlang, whose trigram model is compiled into the crate, so
//! filtering never downloads a model at run time. Scores are whatlang's confidence in [0, 1]
//! (not comparable to fastText's or GlotLID's, so `min_score` defaults are whatlang's own).
//!
//! whatlang first picks the script with the most letters and then a language of that script.
//! On Chinese, Japanese and Korean pages that quote English (code, product names, URLs) Latin
//! letters outnumber the ideographs, although one ideograph carries about as much text as a
//! Latin word: such pages were called English. Letters are therefore weighed per script first
//! ([`cjk_language`]), as fastText's character n-grams effectively do. Likewise a Russian or
//! Greek page that quotes a lot of Latin (commands, names) is identified from its words in its
//! own script once they are a quarter of its letters ([`own_script_words`]).

use serde::{Deserialize, Serialize};

/// Which languages to keep and how sure the identifier must be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LangId {
    pub enabled: bool,
    /// ISO 639-1 codes to keep (ISO 639-3 where a language has no 639-1 code); empty keeps all.
    pub keep: Vec<String>,
    /// Drop documents identified with lower confidence.
    pub min_score: f64,
    /// Identify from at most this many bytes of the start of the text (bounds the cost on huge
    /// pages; the first few KB decide the language as well as the whole page does).
    pub sample_bytes: usize,
}

impl Default for LangId {
    fn default() -> Self {
        LangId {
            enabled: true,
            keep: Vec::new(),
            min_score: 0.5,
            sample_bytes: 4096,
        }
    }
}

/// A language guess: ISO code (empty when unknown) and confidence.
#[derive(Debug, Clone, PartialEq)]
pub struct Guess {
    pub lang: String,
    pub score: f64,
}

impl LangId {
    /// Identify the language of `text` ("" and 0.0 when there is nothing to go on).
    pub fn identify(&self, text: &str) -> Guess {
        let mut end = text.len().min(self.sample_bytes.max(1));
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let sample = &text[..end];
        if let Some(guess) = cjk_language(sample) {
            return guess;
        }
        let own_script = own_script_words(sample);
        match whatlang::detect(own_script.as_deref().unwrap_or(sample)) {
            Some(info) => Guess {
                lang: iso639_1(info.lang()).to_string(),
                score: info.confidence(),
            },
            None => Guess {
                lang: String::new(),
                score: 0.0,
            },
        }
    }

    /// Why `guess` fails the rule (language not kept, or score below `min_score`), if it does.
    pub fn check(&self, guess: &Guess, min_score: f64) -> Option<&'static str> {
        if guess.lang.is_empty() {
            return Some("unknown_language");
        }
        if !self.keep.is_empty() && !self.keep.contains(&guess.lang) {
            return Some("language_not_kept");
        }
        if guess.score < min_score {
            return Some("low_language_score");
        }
        None
    }
}

/// Latin letters one ideograph or Hangul syllable is worth: about one word's letters.
const CJK_WEIGHT: usize = 4;

/// Chinese, Japanese or Korean when their characters, weighed by [`CJK_WEIGHT`], outweigh the
/// letters of every other script; `None` leaves the decision to whatlang. Japanese is told by
/// kana (any running Japanese text has them, Chinese has none), Korean by Hangul. The score is
/// the CJK share of the weighed letters.
fn cjk_language(text: &str) -> Option<Guess> {
    let (mut han, mut kana, mut hangul, mut other) = (0usize, 0usize, 0usize, 0usize);
    for c in text.chars() {
        match c as u32 {
            0x3040..=0x30ff | 0x31f0..=0x31ff | 0xff66..=0xff9d => kana += 1,
            0xac00..=0xd7af | 0x1100..=0x11ff | 0x3130..=0x318f => hangul += 1,
            0x4e00..=0x9fff | 0x3400..=0x4dbf | 0xf900..=0xfaff | 0x20000..=0x2ffff => han += 1,
            _ if c.is_alphabetic() => other += 1,
            _ => {}
        }
    }
    let cjk = (han + kana + hangul) * CJK_WEIGHT;
    if cjk == 0 || cjk <= other {
        return None;
    }
    let lang = if hangul > han + kana {
        "ko"
    } else if kana * 10 >= han + kana {
        "ja"
    } else {
        "zh"
    };
    Some(Guess {
        lang: lang.to_string(),
        score: cjk as f64 / (cjk + other) as f64,
    })
}

/// Share of a text's letters a non-Latin script needs for its words alone to decide.
const OWN_SCRIPT_SHARE: f64 = 0.25;

/// The words of `text` written in a non-Latin alphabet, when such letters are at least
/// [`OWN_SCRIPT_SHARE`] of all letters and Latin ones are also present; `None` otherwise.
fn own_script_words(text: &str) -> Option<String> {
    let (mut latin, mut other) = (0usize, 0usize);
    for c in text.chars().filter(|c| c.is_alphabetic()) {
        if c.is_ascii_alphabetic() || ('\u{c0}'..='\u{24f}').contains(&c) {
            latin += 1;
        } else {
            other += 1;
        }
    }
    if latin == 0 || (other as f64) < OWN_SCRIPT_SHARE * (latin + other) as f64 {
        return None;
    }
    let words: Vec<&str> = text
        .split_whitespace()
        .filter(|w| {
            w.chars().any(|c| {
                c.is_alphabetic()
                    && !c.is_ascii_alphabetic()
                    && !('\u{c0}'..='\u{24f}').contains(&c)
            })
        })
        .collect();
    Some(words.join(" "))
}

/// ISO 639-1 code of a whatlang language (every whatlang language has one).
fn iso639_1(lang: whatlang::Lang) -> &'static str {
    use whatlang::Lang::*;
    match lang {
        Eng => "en",
        Cmn => "zh",
        Deu => "de",
        Fra => "fr",
        Rus => "ru",
        Spa => "es",
        Por => "pt",
        Ita => "it",
        Jpn => "ja",
        Kor => "ko",
        Ara => "ar",
        Hin => "hi",
        Ben => "bn",
        Nld => "nl",
        Pol => "pl",
        Ukr => "uk",
        Tur => "tr",
        Swe => "sv",
        Dan => "da",
        Nob => "nb",
        Fin => "fi",
        Hun => "hu",
        Ces => "cs",
        Ell => "el",
        Bul => "bg",
        Ron => "ro",
        Heb => "he",
        Vie => "vi",
        Tha => "th",
        Ind => "id",
        Pes => "fa",
        Urd => "ur",
        Tam => "ta",
        Tel => "te",
        Mar => "mr",
        Kat => "ka",
        Hye => "hy",
        Epo => "eo",
        Lat => "la",
        Cat => "ca",
        Slk => "sk",
        Slv => "sl",
        Hrv => "hr",
        Srp => "sr",
        Mkd => "mk",
        Lit => "lt",
        Lav => "lv",
        Est => "et",
        Bel => "be",
        Afr => "af",
        Zul => "zu",
        Jav => "jv",
        Tgl => "tl",
        Aze => "az",
        Uzb => "uz",
        Mal => "ml",
        Kan => "kn",
        Guj => "gu",
        Pan => "pa",
        Ori => "or",
        Nep => "ne",
        Sin => "si",
        Khm => "km",
        Mya => "my",
        Amh => "am",
        Yid => "yi",
        Sna => "sn",
        Aka => "ak",
        Tuk => "tk",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifies_english_and_chinese() {
        let id = LangId::default();
        let en = id.identify(
            "The council approved the new budget for the public library on Monday evening.",
        );
        assert_eq!(en.lang, "en");
        assert!(en.score > 0.5);
        assert_eq!(
            id.identify("市议会周一晚上批准了公共图书馆的新预算，居民们对此表示欢迎。")
                .lang,
            "zh"
        );
        assert_eq!(id.identify("").lang, "");
    }

    #[test]
    fn cjk_pages_quoting_english_keep_their_language() {
        let id = LangId::default();
        let ja =
            "設定ファイルは /etc/apt/sources.list にあります。apt-get update を実行してください。";
        assert_eq!(id.identify(ja).lang, "ja");
        let zh = "使用 apt-get install firefox-esr 命令安装浏览器，然后运行 firefox 即可。";
        assert_eq!(id.identify(zh).lang, "zh");
        let ko = "설정 파일은 /etc/default/grub 에 있으며 update-grub 명령으로 적용합니다.";
        assert_eq!(id.identify(ko).lang, "ko");
        let ru = "Параметр --verbose (или -v) включает подробный вывод, а --quiet отключает его \
                  полностью: use `rsync -avz --delete src/ dest/` as an example.";
        assert_eq!(id.identify(ru).lang, "ru");
        // A few ideographs in an English sentence do not make it Chinese.
        let en = "The word for water in Chinese is 水, and the sign is common in restaurant menus.";
        assert_eq!(id.identify(en).lang, "en");
    }

    #[test]
    fn keep_list_and_score_can_fail() {
        let id = LangId {
            keep: vec!["en".into()],
            ..LangId::default()
        };
        let de = Guess {
            lang: "de".into(),
            score: 1.0,
        };
        assert_eq!(id.check(&de, 0.5), Some("language_not_kept"));
        let weak = Guess {
            lang: "en".into(),
            score: 0.2,
        };
        assert_eq!(id.check(&weak, 0.5), Some("low_language_score"));
        assert_eq!(
            id.check(
                &Guess {
                    lang: String::new(),
                    score: 0.0
                },
                0.5
            ),
            Some("unknown_language")
        );
        assert_eq!(
            id.check(
                &Guess {
                    lang: "en".into(),
                    score: 0.9
                },
                0.5
            ),
            None
        );
    }
}

//! Language identification: Google's CLD2 (the detector Chrome runs on web pages; its n-gram
//! tables are compiled into the binary, so filtering never downloads a model at run time), with
//! whatlang for what CLD2 will not call reliably (mostly texts of a few words).
//!
//! CLD2 was chosen by `scripts/bench-extract langid` (BENCHMARKS.md): on real documents in 31
//! languages it agrees with fastText's lid.176 (what datatrove and Dolma filter with) on 96.5% of
//! those of 200 characters or more, where whatlang alone agreed on 90.6% — whatlang knows 69
//! languages and calls Basque, Galician and others by a neighbour's name, CLD2 knows 83 —, and it
//! is four times faster. lingua (high accuracy) was measured too: no closer to lid.176, 40 times
//! slower.
//!
//! The score is the share of the language it names in the text CLD2 attributed to any language
//! (0..1: a page half in English and half in German scores about 0.5), or whatlang's confidence
//! for the texts that fall through to it.
//!
//! whatlang first picks the script with the most letters and then a language of that script.
//! On Chinese, Japanese and Korean text that quotes English (code, product names, URLs) Latin
//! letters outnumber the ideographs, although one ideograph carries about as much text as a
//! Latin word: such texts were called English. Letters are therefore weighed per script first
//! ([`cjk_language`]), as fastText's character n-grams effectively do. Likewise a Russian or
//! Greek text that quotes a lot of Latin (commands, names) is identified from its words in its
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
        cld2_language(sample).unwrap_or_else(|| whatlang_language(sample))
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

/// CLD2's guess when it calls it reliable; `None` leaves the text to whatlang.
fn cld2_language(text: &str) -> Option<Guess> {
    let result = cld2::detect_language_ext(text, cld2::Format::Text, &cld2::Hints::default());
    if result.reliability != cld2::Reliability::Reliable {
        return None;
    }
    let language = result.language?;
    // CLD2 may name a language other than the one covering most of the text (it passes over
    // English that is not clearly dominant, as on half-translated pages). The score is the share
    // of the named language in the text CLD2 attributed to a language: its percentages are of all
    // text bytes, and the bytes of chunks it could not score (about a tenth of a plain Russian
    // news page) would otherwise count against a single-language page.
    let percent = |of: Option<cld2::Lang>| {
        result
            .scores
            .iter()
            .filter(|s| s.language.is_some() && (of.is_none() || s.language == of))
            .map(|s| f64::from(s.percent))
            .sum::<f64>()
    };
    let identified = percent(None);
    Some(Guess {
        lang: iso639_from_cld2(language.0)?.to_string(),
        score: if identified > 0.0 {
            percent(Some(language)) / identified
        } else {
            0.0
        },
    })
}

/// ISO 639-1 code of a CLD2 language code (ISO 639-3 where there is no 639-1, as CLD2 has it):
/// CLD2 keeps a few withdrawn codes (`iw`, `jw`, `mo`) and tags Chinese scripts and Serbian
/// variants (`zh-Hant`, `sr-ME`), which the filter's `keep` list should not need to know. `None`
/// for CLD2's "unknown" and script-only codes (`un`, `xx-Latn`, `zzb` …).
fn iso639_from_cld2(code: &'static str) -> Option<&'static str> {
    let base = code.split('-').next().unwrap_or(code);
    match base {
        "un" | "xx" | "xxx" | "zzb" | "zze" | "zzh" | "zzp" | "" => None,
        "iw" => Some("he"),
        "jw" => Some("jv"),
        "mo" => Some("ro"),
        "zht" => Some("zh"),
        // Bokmål: the name whatlang gives it, so both paths agree.
        "no" => Some("nb"),
        _ => Some(base),
    }
}

/// whatlang's guess, after the script rules below ("" and 0.0 when there is nothing to go on).
fn whatlang_language(sample: &str) -> Guess {
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
    fn languages_whatlang_lacks_and_cld2_codes() {
        let id = LangId::default();
        // Basque and Galician: whatlang has neither and called them Indonesian and Portuguese.
        let eu = "Udalak astelehen arratsaldean onartu zuen liburutegi publikoaren aurrekontu \
                  berria, eta herritarrek pozik hartu dute erabakia, urte askotako eskaeren ondoren.";
        assert_eq!(id.identify(eu).lang, "eu");
        let gl = "O concello aprobou o luns pola tarde o novo orzamento da biblioteca pública, e \
                  a veciñanza recibiu a decisión con ledicia despois de moitos anos de peticións.";
        assert_eq!(id.identify(gl).lang, "gl");
        // CLD2 says `iw` for Hebrew and `zh-Hant` for traditional Chinese: the filter says he, zh.
        let he = "מועצת העיר אישרה ביום שני בערב את התקציב החדש של הספרייה הציבורית, והתושבים \
                  קיבלו את ההחלטה בברכה לאחר שנים רבות של בקשות.";
        assert_eq!(id.identify(he).lang, "he");
        let zh_hant = "市議會週一晚上批准了公共圖書館的新預算，居民們對此表示歡迎，認為這是多年來\
                       爭取的結果，圖書館將延長開放時間並增加兒童閱讀區。";
        assert_eq!(id.identify(zh_hant).lang, "zh");
    }

    #[test]
    fn score_is_the_share_of_the_named_language() {
        let id = LangId::default();
        let de = "Der Stadtrat hat am Montagabend den neuen Haushalt für die öffentliche \
                  Bibliothek beschlossen, und die Bewohner begrüßten die Entscheidung nach \
                  vielen Jahren der Forderungen.";
        let pure = id.identify(de);
        assert_eq!(pure.lang, "de");
        assert!(pure.score > 0.9, "{pure:?}");
        // Half of it English: still German (CLD2 passes over English that does not dominate,
        // as lid.176 does on half-translated pages), with a lower score.
        let mixed = format!(
            "{de} The council approved the new budget for the public library on Monday \
             evening, and residents welcomed the decision after many years of requests."
        );
        let half = id.identify(&mixed);
        assert_eq!(half.lang, "de", "{half:?}");
        assert!(half.score < pure.score, "{half:?} vs {pure:?}");
    }

    #[test]
    fn short_texts_fall_through_to_whatlang() {
        let id = LangId::default();
        // Too short for CLD2 to call reliably; whatlang still names it.
        let guess = id.identify("Guten Morgen");
        assert!(!guess.lang.is_empty(), "{guess:?}");
        assert!(cld2_language("Guten Morgen").is_none());
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

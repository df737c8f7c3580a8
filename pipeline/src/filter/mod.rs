//! `whale filter`: quality rules and language identification, every rejection attributed to the
//! first rule that made it.
//!
//! Rule sets run cheapest and most general first, in FineWeb's order: `length`, `url`, `lang`,
//! `gopher_repetition`, `gopher_quality`, `c4` (which may rewrite the text to its kept lines),
//! `fineweb`. Each is a small module with a config struct whose defaults are datatrove's
//! thresholds, and whose semantics (word splitting, ratios, line splitting) reproduce datatrove's
//! so that decisions agree with it document for document (see `scripts/bench-filter`).

pub mod c4;
pub mod config;
pub mod fineweb;
pub mod gopher_quality;
pub mod gopher_repetition;
mod indic_words;
mod ja_model;
mod ja_words;
pub mod lang;
pub mod length;
/// Python `str` semantics, which datatrove's rules and dedup normalization rely on.
pub(crate) mod pystr;
mod ref_data;
pub mod runner;
mod spacy_rules;
pub mod text;
mod th_words;
pub mod url;
mod vi_words;
pub mod words;

use std::collections::BTreeMap;

use anyhow::Result;
use bumpalo::Bump;

pub use config::{FilterConfig, RuleSet};

/// Numbers below `m` from a xorshift generator, for the randomized tests: the same sequence on
/// every run, so a failure repeats.
#[cfg(test)]
fn test_rng(mut state: u64) -> impl FnMut(usize) -> usize {
    move |m| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % m as u64) as usize
    }
}
pub use runner::{run, FilterOptions, FilterSummary};

use crate::doc::{host_of, Document};
use c4::C4Outcome;
use text::Ctx;
use url::Blocklist;

/// The verdict on one document.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Language used for the per-language thresholds ("" when unknown).
    pub lang: String,
    /// Identifier confidence (1.0 when the language came with the document and `lang` is off).
    pub lang_score: f64,
    /// `rule_set.reason` of the first rule that dropped the document; `None` when kept.
    pub dropped_by: Option<String>,
    /// The text C4 reduced the document to, when it changed it.
    pub rewritten: Option<String>,
}

/// A compiled configuration, ready to judge documents from many threads.
pub struct Filter {
    cfg: FilterConfig,
    base: RuleSet,
    per_lang: BTreeMap<String, RuleSet>,
    blocklist: Blocklist,
}

impl Filter {
    /// Validate `cfg` and load its lists; every config error surfaces here, before any work.
    pub fn new(cfg: FilterConfig) -> Result<Filter> {
        let (base, per_lang) = cfg.resolve()?;
        let blocklist = if cfg.url.enabled {
            Blocklist::load(&cfg.url)?
        } else {
            Blocklist::default()
        };
        Ok(Filter {
            cfg,
            base,
            per_lang,
            blocklist,
        })
    }

    /// The rules that apply to documents in `lang`.
    pub fn rules_for(&self, lang: &str) -> &RuleSet {
        self.per_lang.get(lang).unwrap_or(&self.base)
    }

    /// Judge one document.
    pub fn decide(&self, doc: &Document) -> Decision {
        let (lang, lang_score) = if self.cfg.lang.enabled {
            let guess = self.cfg.lang.identify(&doc.text);
            (guess.lang, guess.score)
        } else {
            (doc.lang.clone(), 1.0)
        };
        let mut decision = Decision {
            lang,
            lang_score,
            dropped_by: None,
            rewritten: None,
        };
        match self.judge(doc, &decision) {
            Ok(rewritten) => decision.rewritten = rewritten,
            Err(rule) => decision.dropped_by = Some(rule),
        }
        decision
    }

    /// `Err(rule_set.reason)` for the first rule that drops the document, else `Ok` with the
    /// C4-reduced text when C4 changed it.
    fn judge(&self, doc: &Document, d: &Decision) -> Result<Option<String>, String> {
        let tag = |set: &str, reason: &str| Err(format!("{set}.{reason}"));
        if self.cfg.length.enabled {
            if let Some(r) = self.cfg.length.check(&doc.text) {
                return tag("length", r);
            }
        }
        if self.cfg.url.enabled {
            let host = if doc.domain.is_empty() {
                host_of(&doc.url)
            } else {
                doc.domain.clone()
            };
            if let Some(r) = self.blocklist.check(&doc.url, &host) {
                return tag("url", r);
            }
        }
        let rules = self.rules_for(&d.lang);
        if self.cfg.lang.enabled {
            let guess = lang::Guess {
                lang: d.lang.clone(),
                score: d.lang_score,
            };
            if let Some(r) = self.cfg.lang.check(&guess, rules.lang.min_score) {
                return tag("lang", r);
            }
        }
        let word_lang = if d.lang.is_empty() {
            "en"
        } else {
            d.lang.as_str()
        };
        let spill = Bump::new();
        let ctx = Ctx::new(&doc.text, word_lang, &spill);
        if rules.gopher_repetition.enabled {
            if let Some(r) = rules.gopher_repetition.check(&ctx) {
                return tag("gopher_repetition", &r);
            }
        }
        if rules.gopher_quality.enabled {
            if let Some(r) = rules.gopher_quality.check(&ctx) {
                return tag("gopher_quality", r);
            }
        }
        let mut rewritten = None;
        if rules.c4.enabled {
            match rules.c4.apply(&doc.text, word_lang) {
                C4Outcome::Drop(r) => return tag("c4", r),
                C4Outcome::Keep(text) if text != doc.text => rewritten = Some(text),
                C4Outcome::Keep(_) => {}
            }
        }
        if rules.fineweb.enabled {
            // FineWeb's rules see C4's output, as in the FineWeb pipeline.
            let reduced;
            let ctx = match &rewritten {
                Some(text) => {
                    reduced = Ctx::new(text, word_lang, &spill);
                    &reduced
                }
                None => &ctx,
            };
            if let Some(r) = rules.fineweb.check(ctx) {
                return tag("fineweb", r);
            }
        }
        Ok(rewritten)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Document {
        Document {
            id: "d".into(),
            text: text.into(),
            url: "https://news.example.com/a".into(),
            ..Document::default()
        }
    }

    const PROSE: &str = "The council met on Monday evening to discuss the budget for the new library. \
        Residents asked about the opening hours, and the mayor promised that the doors would stay open late. \
        Several teachers said that the reading room had been too small for years. \
        The architect explained that the extension will add two floors and a garden. \
        Work is expected to begin in the spring, and the council will publish the plans next week. \
        Local businesses have offered to help with the cost of new books for the children's section.";

    #[test]
    fn keeps_prose_and_reports_c4_rewrites() {
        let filter = Filter::new(FilterConfig::default()).unwrap();
        let d = filter.decide(&doc(PROSE));
        assert_eq!((d.lang.as_str(), d.dropped_by.as_deref()), ("en", None));
        assert!(d.rewritten.is_none());
        let d = filter.decide(&doc(&format!(
            "Home | News | Contact\n{PROSE}\nAccept cookies"
        )));
        assert_eq!(d.dropped_by, None);
        assert_eq!(d.rewritten.as_deref(), Some(PROSE));
    }

    #[test]
    fn the_first_failing_rule_is_named() {
        let mut cfg = FilterConfig::default();
        cfg.url.domains = vec!["example.com".into()];
        let filter = Filter::new(cfg).unwrap();
        assert_eq!(
            filter.decide(&doc(PROSE)).dropped_by.as_deref(),
            Some("url.blocked_domain")
        );
        assert_eq!(
            filter.decide(&doc("")).dropped_by.as_deref(),
            Some("length.too_short")
        );
        let mut cfg = FilterConfig::default();
        cfg.lang.keep = vec!["zh".into()];
        let filter = Filter::new(cfg).unwrap();
        assert_eq!(
            filter.decide(&doc(PROSE)).dropped_by.as_deref(),
            Some("lang.language_not_kept")
        );
    }

    /// The same news item in Spanish, Dutch and Polish: FineWeb-2's stop words and thresholds
    /// keep it; the base rules, whose stop words are English, would drop every one.
    #[test]
    fn prose_in_languages_with_fineweb2_tables_is_kept() {
        const NEWS: [(&str, &str); 8] = [
            ("es", "El ayuntamiento de Valencia aprobó el lunes un nuevo presupuesto para la biblioteca municipal. \
                Los vecinos preguntaron por el horario de apertura, y la alcaldesa prometió que las puertas permanecerán abiertas hasta tarde. \
                Varios profesores explicaron que la sala de lectura se había quedado pequeña durante años. \
                El arquitecto presentó una ampliación con dos plantas nuevas y un jardín interior. \
                Las obras comenzarán en primavera, según el calendario publicado por la concejalía de cultura. \
                Los comercios del barrio se han ofrecido a colaborar con la compra de libros para la sección infantil."),
            ("nl", "De gemeenteraad van Utrecht heeft maandagavond de begroting voor de nieuwe bibliotheek besproken. \
                Bewoners vroegen naar de openingstijden, en de burgemeester beloofde dat de deuren tot laat open blijven. \
                Verschillende leraren zeiden dat de leeszaal al jaren te klein is. \
                De architect legde uit dat de uitbreiding twee verdiepingen en een tuin krijgt. \
                Het werk begint volgens de planning in het voorjaar, en de gemeente publiceert volgende week de tekeningen. \
                Lokale ondernemers hebben aangeboden om mee te betalen aan nieuwe boeken voor de kinderafdeling."),
            ("pl", "Rada miasta Krakowa omówiła w poniedziałek budżet nowej biblioteki publicznej. \
                Mieszkańcy pytali o godziny otwarcia, a prezydent miasta obiecał, że drzwi będą otwarte do późna. \
                Kilku nauczycieli powiedziało, że czytelnia od lat jest zbyt mała. \
                Architekt wyjaśnił, że rozbudowa obejmie dwa nowe piętra oraz ogród. \
                Prace mają się rozpocząć wiosną, a szczegółowe plany zostaną opublikowane w przyszłym tygodniu. \
                Lokalni przedsiębiorcy zaoferowali pomoc w zakupie nowych książek dla oddziału dziecięcego."),
            ("ja", "京都市議会は月曜日、新しい市立図書館の予算案について審議した。\
                住民からは開館時間についての質問が相次ぎ、市長は夜遅くまで開館することを約束した。\
                複数の教員は、閲覧室が何年も前から手狭になっていると説明した。\
                設計を担当した建築家は、増築によって二つの階と中庭が加わると述べた。\
                工事は春に始まる予定で、詳しい図面は来週公表される。\
                地元の商店主たちは、児童書コーナーの本の購入に協力すると申し出ている。"),
            ("et", "Tartu linnavolikogu arutas esmaspäeval uue raamatukogu eelarvet. \
                Elanikud küsisid lahtiolekuaegade kohta ja linnapea lubas, et uksed on avatud hilisõhtuni. \
                Mitu õpetajat ütles, et lugemissaal on juba aastaid liiga väike olnud. \
                Arhitekt selgitas, et juurdeehitus toob kaks uut korrust ja sisehoovi. \
                Ehitustööd algavad kevadel ning linn avaldab joonised järgmisel nädalal. \
                Kohalikud ettevõtjad on pakkunud abi lasteosakonna uute raamatute ostmisel."),
            ("vi", "Hội đồng nhân dân thành phố Đà Nẵng đã thảo luận về ngân sách cho thư viện mới vào sáng thứ Hai. \
                Người dân hỏi về giờ mở cửa, và chủ tịch thành phố hứa rằng thư viện sẽ mở cửa đến khuya. \
                Nhiều giáo viên cho biết phòng đọc đã quá chật trong nhiều năm qua. \
                Kiến trúc sư giải thích rằng phần mở rộng sẽ có thêm hai tầng và một khu vườn bên trong. \
                Công trình dự kiến khởi công vào mùa xuân, và bản vẽ chi tiết sẽ được công bố vào tuần sau. \
                Các doanh nghiệp địa phương đã đề nghị hỗ trợ mua sách mới cho khu vực dành cho thiếu nhi."),
            ("hi", "नगर निगम की बैठक में सोमवार को नए पुस्तकालय के बजट पर चर्चा हुई। \
                निवासियों ने खुलने के समय के बारे में सवाल पूछे, और महापौर ने वादा किया कि पुस्तकालय देर रात तक खुला रहेगा। \
                कई शिक्षकों ने कहा कि वाचनालय कई वर्षों से बहुत छोटा है। \
                वास्तुकार ने बताया कि विस्तार में दो नई मंज़िलें और एक बगीचा होगा। \
                काम वसंत में शुरू होगा, और नगर निगम अगले सप्ताह नक्शे प्रकाशित करेगा। \
                स्थानीय व्यापारियों ने बच्चों के विभाग के लिए नई किताबें खरीदने में मदद की पेशकश की है।"),
            ("th", "สภาเทศบาลเมืองเชียงใหม่ประชุมเมื่อวันจันทร์เพื่อพิจารณางบประมาณสำหรับห้องสมุดแห่งใหม่ \
                ชาวบ้านหลายคนถามถึงเวลาเปิดทำการ และนายกเทศมนตรีสัญญาว่าห้องสมุดจะเปิดจนถึงดึก \
                ครูหลายคนกล่าวว่าห้องอ่านหนังสือคับแคบมาหลายปีแล้ว \
                สถาปนิกอธิบายว่าการขยายอาคารจะเพิ่มอีกสองชั้นและสวนภายใน \
                งานก่อสร้างจะเริ่มในฤดูใบไม้ผลิ และเทศบาลจะเผยแพร่แบบแปลนในสัปดาห์หน้า \
                ผู้ประกอบการในท้องถิ่นเสนอที่จะช่วยซื้อหนังสือใหม่สำหรับแผนกเด็ก"),
        ];
        let filter = Filter::new(FilterConfig::default()).unwrap();
        let mut english_only = FilterConfig::default();
        english_only.per_lang.clear();
        let english_only = Filter::new(english_only).unwrap();
        for (lang, text) in NEWS {
            let d = filter.decide(&doc(text));
            assert_eq!((d.lang.as_str(), d.dropped_by.as_deref()), (lang, None));
            // English rules: no English stop words; Japanese words are shorter than English ones.
            let english_reason = if lang == "ja" {
                "gopher_quality.gopher_below_avg_threshold"
            } else {
                "gopher_quality.gopher_enough_stop_words"
            };
            assert_eq!(
                english_only.decide(&doc(text)).dropped_by.as_deref(),
                Some(english_reason),
                "{lang}"
            );
        }
    }

    #[test]
    fn per_language_rules_apply_and_lang_can_come_with_the_document() {
        let filter = Filter::new(FilterConfig::default()).unwrap();
        assert!(!filter.rules_for("zh").c4.enabled && filter.rules_for("en").c4.enabled);
        let mut cfg = FilterConfig::default();
        cfg.lang.enabled = false;
        let filter = Filter::new(cfg).unwrap();
        let mut d = doc(PROSE);
        d.lang = "xx".into();
        let decision = filter.decide(&d);
        assert_eq!((decision.lang.as_str(), decision.lang_score), ("xx", 1.0));
    }
}

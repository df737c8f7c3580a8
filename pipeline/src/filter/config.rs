//! `configs/filter.toml`: one table per rule set, each with `enabled` and its thresholds, plus
//! per-language overrides. Unknown tables or keys are errors, so a typo never silently falls
//! back to a default.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::c4::C4;
use super::fineweb::FineWeb;
use super::gopher_quality::GopherQuality;
use super::gopher_repetition::GopherRepetition;
use super::lang::LangId;
use super::length::Length;
use super::url::UrlRule;

/// The whole filter configuration. Defaults are datatrove's (FineWeb's) thresholds, with
/// FineWeb-2's thresholds and stop words for 32 languages in `per_lang`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    pub length: Length,
    pub url: UrlRule,
    pub lang: LangId,
    pub gopher_repetition: GopherRepetition,
    pub gopher_quality: GopherQuality,
    pub c4: C4,
    pub fineweb: FineWeb,
    /// Language code → tables overriding some keys of the language-dependent rule sets
    /// (`lang.min_score`, `gopher_repetition`, `gopher_quality`, `c4`, `fineweb`).
    pub per_lang: BTreeMap<String, toml::Table>,
}

/// The language-dependent rules, resolved for one language.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSet {
    pub lang: LangScore,
    pub gopher_repetition: GopherRepetition,
    pub gopher_quality: GopherQuality,
    pub c4: C4,
    pub fineweb: FineWeb,
}

/// The one key of `lang` a language may override.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LangScore {
    pub min_score: f64,
}

impl Default for FilterConfig {
    fn default() -> Self {
        let per_lang: BTreeMap<String, toml::Table> =
            toml::from_str(FINEWEB2_PER_LANG).expect("built-in per-language tables parse");
        FilterConfig {
            length: Length::default(),
            url: UrlRule::default(),
            lang: LangId::default(),
            gopher_repetition: GopherRepetition::default(),
            gopher_quality: GopherQuality::default(),
            c4: C4::default(),
            fineweb: FineWeb::default(),
            per_lang,
        }
    }
}

/// FineWeb-2's per-language thresholds and stop words for the 32 languages whose words whale
/// splits as datatrove does or close to it (the file's header says which, why and how close).
const FINEWEB2_PER_LANG: &str = include_str!("fineweb2_per_lang.toml");

impl FilterConfig {
    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<FilterConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut cfg: FilterConfig =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        cfg.per_lang = merge_per_lang(
            FilterConfig::default().per_lang,
            std::mem::take(&mut cfg.per_lang),
        );
        cfg.resolve()
            .with_context(|| format!("checking {}", path.display()))?;
        Ok(cfg)
    }

    /// The rules for languages without overrides.
    pub fn base_rules(&self) -> RuleSet {
        RuleSet {
            lang: LangScore {
                min_score: self.lang.min_score,
            },
            gopher_repetition: self.gopher_repetition.clone(),
            gopher_quality: self.gopher_quality.clone(),
            c4: self.c4.clone(),
            fineweb: self.fineweb.clone(),
        }
    }

    /// Base rules and every language's merged rules; an unknown table or key is an error.
    pub fn resolve(&self) -> Result<(RuleSet, BTreeMap<String, RuleSet>)> {
        let base = self.base_rules();
        let base_value = toml::Table::try_from(&base)?;
        let mut per_lang = BTreeMap::new();
        for (lang, overrides) in &self.per_lang {
            let mut merged = base_value.clone();
            for (section, table) in overrides {
                let Some(toml::Value::Table(target)) = merged.get_mut(section) else {
                    bail!("per_lang.{lang}: unknown rule set `{section}` (expected lang, gopher_repetition, gopher_quality, c4 or fineweb)");
                };
                let toml::Value::Table(table) = table else {
                    bail!("per_lang.{lang}.{section} must be a table")
                };
                for (key, value) in table {
                    if !target.contains_key(key) {
                        bail!("per_lang.{lang}.{section}: unknown key `{key}`");
                    }
                    target.insert(key.clone(), value.clone());
                }
            }
            let rules: RuleSet = merged
                .try_into()
                .with_context(|| format!("per_lang.{lang}"))?;
            per_lang.insert(lang.clone(), rules);
        }
        Ok((base, per_lang))
    }
}

/// A config file's `per_lang` tables refine the built-in ones key by key (so a file can change
/// one Chinese threshold without restating FineWeb-2's stop words).
fn merge_per_lang(
    mut base: BTreeMap<String, toml::Table>,
    overrides: BTreeMap<String, toml::Table>,
) -> BTreeMap<String, toml::Table> {
    for (lang, sections) in overrides {
        let entry = base.entry(lang).or_default();
        for (section, value) in sections {
            match (entry.get_mut(&section), value) {
                (Some(toml::Value::Table(target)), toml::Value::Table(keys)) => target.extend(keys),
                (_, value) => {
                    entry.insert(section, value);
                }
            }
        }
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_hold_datatrove_and_fineweb2_thresholds() {
        let (base, per_lang) = FilterConfig::default().resolve().unwrap();
        assert_eq!(base.gopher_quality.min_doc_words, 50);
        assert_eq!(base.fineweb.line_punct_thr, 0.12);
        let zh = &per_lang["zh"];
        assert_eq!(zh.gopher_quality.max_avg_word_length, 5.0);
        assert_eq!(
            zh.gopher_quality.min_doc_words, 50,
            "keys not overridden keep the base value"
        );
        assert_eq!(zh.gopher_repetition.top_n_grams[0], (2, 0.256));
        assert!(!zh.c4.enabled);
        let langs: Vec<&str> = per_lang.keys().map(String::as_str).collect();
        assert_eq!(langs.len(), 48, "{langs:?}");
        let es = &per_lang["es"];
        assert_eq!(es.gopher_repetition.top_n_grams[0], (2, 0.077));
        assert_eq!(es.gopher_quality.min_avg_word_length, 4.0);
        assert_eq!(es.gopher_quality.stop_words[..3], ["de", "la", "en"]);
        assert_eq!(per_lang["nb"].lang.min_score, 0.813);
        assert!(per_lang["ar"]
            .gopher_quality
            .stop_words
            .contains(&"،".to_string()));
        let ja = &per_lang["ja"];
        assert!(!ja.c4.enabled);
        assert_eq!(ja.gopher_quality.stop_words[..3], ["の", "に", "を"]);
        assert!(
            !per_lang.contains_key("ko"),
            "no morphological segmenter for Korean"
        );
    }

    #[test]
    fn unknown_names_are_errors() {
        assert!(toml::from_str::<FilterConfig>("[gopher_qualty]\nenabled = false").is_err());
        assert!(toml::from_str::<FilterConfig>("[c4]\nmin_sentences = 3").is_err());
        let cfg: FilterConfig = toml::from_str("[per_lang.de.gopher]\nenabled = false").unwrap();
        assert!(cfg
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("unknown rule set"));
        let cfg: FilterConfig = toml::from_str("[per_lang.de.c4]\nminimum = 1").unwrap();
        assert!(cfg
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("unknown key"));
    }

    #[test]
    fn file_per_lang_tables_refine_the_builtin_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.toml");
        std::fs::write(&path, "[per_lang.zh.gopher_repetition]\ndup_n_grams = []\n[per_lang.es.c4]\nenabled = false\n").unwrap();
        let (_, per_lang) = FilterConfig::load(&path).unwrap().resolve().unwrap();
        assert!(per_lang["zh"].gopher_repetition.dup_n_grams.is_empty());
        assert_eq!(
            per_lang["zh"].gopher_repetition.dup_line_frac, 0.287,
            "other zh keys stay"
        );
        assert_eq!(per_lang["zh"].gopher_quality.max_avg_word_length, 5.0);
        assert!(!per_lang["es"].c4.enabled && per_lang.contains_key("de"));
    }

    #[test]
    fn shipped_config_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/filter.toml");
        assert_eq!(FilterConfig::load(&path).unwrap(), FilterConfig::default());
    }
}

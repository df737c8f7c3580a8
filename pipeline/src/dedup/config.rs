//! Dedup parameters, read from `configs/dedup.toml` (`[dedup]` table) and overridden by flags.

use serde::{Deserialize, Serialize};

use crate::extract::TextMode;
use crate::io::ReadOptions;

/// How documents become MinHash signatures and which copy of a cluster is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// whale's own: NFKC normalization, CJK text shingled by characters, 64-bit xxh3
    /// permutations; a cluster keeps its oldest copy (earliest dump, then smallest id).
    #[default]
    Whale,
    /// datatrove 0.10's MinhashDedup to the bit: its `simplify_text`, spaCy English words, xxh64
    /// shingles, numpy-drawn permutations modulo 2^61 − 1, and its keep rule (the root of a
    /// union by size over the pairs in its order), for reproducing a datatrove run.
    Datatrove,
}

/// What counts as a duplicate and how the work is partitioned. Defaults equal datatrove's MinHash
/// defaults (word 5-grams, 14 bands × 8 rows, 64-bit hashes) so results can be compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DedupConfig {
    /// Signature definition and keep rule.
    pub scheme: Scheme,
    /// Words per shingle (characters inside Chinese/Japanese/Thai runs).
    pub ngram: usize,
    /// LSH bands; two documents are candidates when any band matches.
    pub bands: usize,
    /// MinHash values per band.
    pub rows: usize,
    /// Remove documents whose normalized text is identical (xxh3-128).
    pub exact: bool,
    /// Remove near-duplicates found by MinHash-LSH.
    pub near: bool,
    /// Also remove documents with an identical URL.
    pub url: bool,
    /// Check every near-duplicate candidate pair by exact shingle Jaccard and drop those below
    /// `verify_threshold` (LSH false positives).
    pub verify: bool,
    pub verify_threshold: f64,
    /// Seed of the MinHash permutations; unset, the scheme's default (whale 0, datatrove 1, as
    /// its `MinhashConfig`). Runs with different seeds differ only where LSH is left to chance
    /// (pairs of Jaccard ≈ 0.5–0.85): comparing two seeds measures that noise floor.
    pub seed: Option<u64>,
    /// Number of key partitions of the bucket step (its unit of parallel work and memory).
    pub partitions: usize,
    /// Text of WARC HTML pages: their main content (boilerplate removed, as FineWeb) or the
    /// whole page's text.
    pub html: TextMode,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            scheme: Scheme::Whale,
            ngram: 5,
            bands: 14,
            rows: 8,
            exact: true,
            near: true,
            url: false,
            verify: false,
            verify_threshold: 0.7,
            seed: None,
            partitions: 64,
            html: TextMode::MainContent,
        }
    }
}

#[derive(Deserialize)]
struct ConfigFile {
    dedup: DedupConfig,
}

impl DedupConfig {
    /// Parse the `[dedup]` table of a TOML config file.
    pub fn from_toml(text: &str) -> anyhow::Result<DedupConfig> {
        let file: ConfigFile = toml::from_str(text)?;
        file.dedup.validate()
    }

    /// How the input files are read (the signatures and filter steps must read them alike).
    pub fn read_options(&self) -> ReadOptions {
        ReadOptions { html: self.html }
    }

    /// The permutations' seed in effect.
    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or(match self.scheme {
            Scheme::Whale => 0,
            Scheme::Datatrove => 1,
        })
    }

    /// Reject parameters that cannot work, with a message saying which.
    pub fn validate(self) -> anyhow::Result<DedupConfig> {
        anyhow::ensure!(self.ngram >= 1, "ngram must be at least 1");
        anyhow::ensure!(
            (1..=255).contains(&self.bands) && self.rows >= 1,
            "bands must be 1..=255 and rows at least 1"
        );
        anyhow::ensure!(
            self.scheme == Scheme::Whale || self.seed() <= u32::MAX as u64,
            "scheme datatrove seeds numpy's RandomState, which takes 0..=4294967295"
        );
        anyhow::ensure!(
            (1..=65536).contains(&self.partitions),
            "partitions must be 1..=65536"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.verify_threshold),
            "verify_threshold is a Jaccard in 0..=1"
        );
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::{DedupConfig, Scheme};

    #[test]
    fn shipped_config_equals_the_defaults() {
        let text = include_str!("../../../configs/dedup.toml");
        assert_eq!(
            DedupConfig::from_toml(text).unwrap(),
            DedupConfig::default()
        );
        assert!(DedupConfig::from_toml("[dedup]\nbands = 0\n").is_err());
        assert!(
            DedupConfig::from_toml("[dedup]\nbandz = 3\n").is_err(),
            "typos are errors"
        );
        let dt = DedupConfig::from_toml("[dedup]\nscheme = \"datatrove\"\n").unwrap();
        assert_eq!((dt.scheme, dt.seed()), (Scheme::Datatrove, 1));
        assert_eq!(DedupConfig::default().seed(), 0);
        assert!(DedupConfig::from_toml("[dedup]\nscheme = \"nemo\"\n").is_err());
    }
}

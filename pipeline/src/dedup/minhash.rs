//! MinHash signatures over word n-gram shingles, LSH band keys, and exact Jaccard of shingle sets.
//!
//! Scheme `whale`: each of the `bands × rows` permutations is `x ↦ a·x + b (mod 2^64)` with odd
//! `a`, applied to a 64-bit xxh3 shingle hash: a bijection of the 64-bit space, so the minimum
//! over a document's shingles is a min-wise sample as in datatrove, at a handful of instructions
//! per value. Scheme `datatrove`: datatrove's own shingles and permutations (see `datatrove.rs`).

use xxhash_rust::xxh3::{xxh3_128_with_seed, xxh3_64, xxh3_64_with_seed};

use super::config::Scheme;
use super::datatrove;
use crate::normalize::{is_unspaced_script, tokens};

/// The permutations of one MinHash configuration.
pub struct MinHasher {
    scheme: Scheme,
    ngram: usize,
    rows: usize,
    a: Vec<u64>,
    b: Vec<u64>,
}

impl MinHasher {
    /// `bands × rows` permutations drawn from `seed`, so signatures agree across runs, tasks and
    /// machines that use the same seed.
    pub fn new(scheme: Scheme, ngram: usize, bands: usize, rows: usize, seed: u64) -> MinHasher {
        let n = bands * rows;
        let (a, b) = match scheme {
            Scheme::Whale => {
                let mut state = 0x5eed_f00d_u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let mut next = || {
                    state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    let mut z = state;
                    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                    z ^ (z >> 31)
                };
                let a = (0..n).map(|_| next() | 1).collect();
                (a, (0..n).map(|_| next()).collect())
            }
            Scheme::Datatrove => datatrove::permutations(seed, n),
        };
        MinHasher {
            scheme,
            ngram: ngram.max(1),
            rows,
            a,
            b,
        }
    }

    /// Sorted, distinct shingle hashes of a document: of its whale-normalized text
    /// ([`crate::normalize::normalize`]) under scheme `whale`, of its raw text under `datatrove`.
    pub fn shingles(&self, text: &str, normalized: &str) -> Vec<u64> {
        match self.scheme {
            Scheme::Whale => self.word_shingles(normalized),
            Scheme::Datatrove => datatrove::shingles(text, self.ngram),
        }
    }

    /// Sorted, distinct hashes of the word n-grams of normalized text. A character of an
    /// unspaced script counts as half a word: a Chinese word averages under two characters, so a
    /// shingle spans `2 × ngram` such characters, about as much text as datatrove's jieba-word
    /// shingles (5 single characters are mostly inside one phrase and match unrelated pages).
    /// Text shorter than one shingle is one shingle; text without tokens has none.
    fn word_shingles(&self, normalized: &str) -> Vec<u64> {
        // (hash, weight): 2 for a word, 1 for a character of an unspaced script.
        let tokens: Vec<(u64, usize)> = tokens(normalized)
            .map(|t| {
                let unspaced = t.chars().next().is_some_and(is_unspaced_script);
                (xxh3_64(t.as_bytes()), if unspaced { 1 } else { 2 })
            })
            .collect();
        if tokens.is_empty() {
            return Vec::new();
        }
        let span = 2 * self.ngram;
        let mut bytes = Vec::with_capacity(span * 8);
        let mut out = Vec::with_capacity(tokens.len());
        let (mut end, mut weight) = (0, 0);
        for start in 0..tokens.len() {
            while end < tokens.len() && weight < span {
                weight += tokens[end].1;
                end += 1;
            }
            if weight < span && start > 0 {
                break; // the tail is covered by the previous, full window
            }
            bytes.clear();
            for (h, _) in &tokens[start..end] {
                bytes.extend_from_slice(&h.to_le_bytes());
            }
            out.push(xxh3_64_with_seed(&bytes, self.ngram as u64));
            weight -= tokens[start].1;
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// MinHash signature of a shingle set (`u64::MAX` everywhere for an empty set).
    pub fn signature(&self, shingles: &[u64]) -> Vec<u64> {
        let mut sig = vec![u64::MAX; self.a.len()];
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            unsafe { self.fold_avx2(shingles, &mut sig) };
            return sig;
        }
        self.fold(shingles, &mut sig);
        sig
    }

    /// [`Self::fold`] compiled for AVX2: four permutations per instruction instead of one (the
    /// signature is most of the arithmetic of the whole stage).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn fold_avx2(&self, shingles: &[u64], sig: &mut [u64]) {
        self.fold(shingles, sig)
    }

    #[inline(always)]
    fn fold(&self, shingles: &[u64], sig: &mut [u64]) {
        match self.scheme {
            Scheme::Whale => min_permuted(shingles, &self.a, &self.b, sig, |v| v),
            Scheme::Datatrove => {
                min_permuted(shingles, &self.a, &self.b, sig, datatrove::mod_mersenne)
            }
        }
    }

    /// One 128-bit key per band: two documents share a band key when all `rows` values of that
    /// band agree. The top byte is the band index ([`band_of`]) and the band index also seeds
    /// the hash below it, so keys of different bands never meet.
    pub fn band_keys(&self, signature: &[u64]) -> Vec<u128> {
        signature
            .chunks(self.rows)
            .enumerate()
            .map(|(band, rows)| {
                let bytes: Vec<u8> = rows.iter().flat_map(|v| v.to_le_bytes()).collect();
                (xxh3_128_with_seed(&bytes, band as u64 + 1) >> 8) | ((band as u128) << 120)
            })
            .collect()
    }
}

/// `sig[k] = min(sig[k], reduce(a[k]·x + b[k] mod 2^64))` over every shingle `x`.
#[inline(always)]
fn min_permuted(
    shingles: &[u64],
    a: &[u64],
    b: &[u64],
    sig: &mut [u64],
    reduce: impl Fn(u64) -> u64,
) {
    for &x in shingles {
        for ((s, a), b) in sig.iter_mut().zip(a).zip(b) {
            *s = (*s).min(reduce(a.wrapping_mul(x).wrapping_add(*b)));
        }
    }
}

/// The band a key of [`MinHasher::band_keys`] belongs to.
pub fn band_of(key: u128) -> u8 {
    (key >> 120) as u8
}

/// Exact Jaccard similarity of two sorted, distinct shingle sets.
pub fn jaccard(a: &[u64], b: &[u64]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let (mut i, mut j, mut common) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                common += 1;
                i += 1;
                j += 1;
            }
        }
    }
    common as f64 / (a.len() + b.len() - common) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::normalize;

    fn words(n: usize, seed: u64) -> Vec<String> {
        (0..n)
            .map(|i| format!("w{}", xxh3_64_with_seed(&i.to_le_bytes(), seed) % 5000))
            .collect()
    }

    /// Band-collision rate of pairs at Jaccard ≈ 0.8 matches the LSH curve 1 − (1 − J^8)^14 ≈ 0.9,
    /// so the permutations behave as independent min-wise hashes.
    #[test]
    fn band_collisions_follow_the_lsh_curve() {
        let h = MinHasher::new(Scheme::Whale, 5, 14, 8, 0);
        let (mut shared, mut jaccard_sum, mut agree_sum) = (0, 0.0, 0.0);
        let trials = 300;
        for seed in 0..trials {
            let base = words(200, seed);
            let mut edited = base.clone();
            for i in (7..200).step_by(40) {
                edited[i] = format!("changed{i}");
            }
            let (sa, sb) = (
                h.word_shingles(&base.join(" ")),
                h.word_shingles(&edited.join(" ")),
            );
            jaccard_sum += jaccard(&sa, &sb);
            let (ga, gb) = (h.signature(&sa), h.signature(&sb));
            agree_sum +=
                ga.iter().zip(&gb).filter(|(x, y)| x == y).count() as f64 / ga.len() as f64;
            let (ka, kb) = (h.band_keys(&ga), h.band_keys(&gb));
            shared += ka.iter().zip(&kb).any(|(x, y)| x == y) as usize;
        }
        let (j, agree) = (jaccard_sum / trials as f64, agree_sum / trials as f64);
        let expected = 1.0 - (1.0 - j.powi(8)).powi(14);
        let rate = shared as f64 / trials as f64;
        assert!(
            (agree - j).abs() < 0.02,
            "signature agreement {agree:.3} vs Jaccard {j:.3}"
        );
        assert!(
            (rate - expected).abs() < 0.06,
            "collision rate {rate:.3} vs {expected:.3} at J={j:.3}"
        );
        let other = h.band_keys(&h.signature(&h.word_shingles(&words(200, 999).join(" "))));
        let first = h.band_keys(&h.signature(&h.word_shingles(&words(200, 0).join(" "))));
        assert!(
            first.iter().zip(&other).all(|(x, y)| x != y),
            "unrelated texts share no band"
        );
    }

    #[test]
    fn chinese_near_duplicate_shares_bands_and_template_pages_do_not() {
        let h = MinHasher::new(Scheme::Whale, 5, 14, 8, 0);
        let text =
            "深度求索发布了新的语言模型，该模型在多项基准测试中取得了优异的成绩。研究人员表示，\
                    训练数据经过了严格的去重和质量过滤，这对模型的最终效果至关重要。团队计划在明年\
                    开放更多的训练细节，并与高校合作开展长期研究。业内人士认为，这一进展将推动整个\
                    行业的发展，也为中小企业提供了新的机会。";
        let near = text.replace("优异", "很好");
        let (sa, sb) = (
            h.shingles(text, &normalize(text)),
            h.shingles(&near, &normalize(&near)),
        );
        assert!(jaccard(&sa, &sb) > 0.8, "{}", jaccard(&sa, &sb));
        let (ka, kb) = (
            h.band_keys(&h.signature(&sa)),
            h.band_keys(&h.signature(&sb)),
        );
        assert!(ka.iter().zip(&kb).any(|(x, y)| x == y));
        // Different pages made of the same stock phrases (as news sites' are) are not near-dups.
        let who = [
            "学校老师",
            "年轻的工程师们",
            "村委会",
            "图书馆",
            "当地居民",
            "医院专家",
        ];
        let how = [
            "在多方协商以后",
            "在本月初",
            "于上周五下午",
            "在新闻发布会上",
            "经过长时间的讨论之后",
        ];
        let what = [
            "公布了公共交通线路的调整",
            "批准了明年的教育预算",
            "发布了老旧桥梁的维修方案",
            "宣布了水质检测的最新结果",
        ];
        let page = |seed: usize| -> String {
            (0..12)
                .map(|i| {
                    let k = seed * 31 + i * 7;
                    format!(
                        "{}{}{}，涉及约{}户家庭。",
                        who[k % 6],
                        how[(k / 6) % 5],
                        what[(k / 5 + seed) % 4],
                        100 + k
                    )
                })
                .collect()
        };
        let (pa, pb) = (
            h.word_shingles(&normalize(&page(1))),
            h.word_shingles(&normalize(&page(2))),
        );
        assert!(
            jaccard(&pa, &pb) < 0.3,
            "template pages: {}",
            jaccard(&pa, &pb)
        );
    }

    /// datatrove 0.10.1's `get_shingles` and `get_signature` (MinhashConfig defaults, 64-bit
    /// hashes, seed 1) printed for the same texts: spaCy's English splits, numbers, accents,
    /// and a Chinese text that is four "words" to datatrove, so it has no shingle at all.
    #[test]
    fn datatrove_scheme_reproduces_datatroves_signatures() {
        let h = MinHasher::new(Scheme::Datatrove, 5, 14, 8, 1);
        let en =
            "Don't panic: the U.S. economy grew 3.2% in Q2 2024, e-mail us at info@example.com \
                  or visit https://example.com/a-b?x=1 (it's free!) -- isn't it great?";
        let s = h.shingles(en, "");
        assert_eq!(s.len(), 31);
        assert_eq!(s[..2], [30174420786080034, 728146726510989241]);
        assert_eq!(s[30], 17950345060217843164);
        let sig = h.signature(&s);
        assert_eq!(sig[..2], [47928301614344657, 89825342934310942]);
        assert_eq!(sig[111], 158157075807602139);

        let de = "Die Größe der Straße beträgt 1.234,5 Meter; Ärger über Öl-Preise (z.B. in München) wächst.";
        let s = h.shingles(de, "");
        assert_eq!(s.len(), 13);
        assert_eq!(s[..2], [122312917896345850, 443032619733893942]);
        assert_eq!(s[12], 16561005201934421410);
        let sig = h.signature(&s);
        assert_eq!(sig[..2], [96271098502374238, 30052043284529137]);
        assert_eq!(sig[111], 6853624018056169);

        let zh =
            "深度求索发布了新的语言模型，该模型在多项基准测试中取得了优异的成绩。研究人员表示，\
                  训练数据经过了严格的去重和质量过滤。";
        assert!(h.shingles(zh, "").is_empty());
    }

    #[test]
    fn short_and_empty_texts() {
        let h = MinHasher::new(Scheme::Whale, 5, 14, 8, 0);
        assert_eq!(h.word_shingles("two words").len(), 1);
        assert!(h.word_shingles("").is_empty());
        assert_eq!(jaccard(&[1, 2, 3], &[2, 3, 4]), 0.5);
    }
}

//! Choosing the next token from logits: greedy, or sampling with temperature, top-k and top-p
//! (nucleus). Sampling runs on the host with its own seeded generator, so a seed gives the same
//! tokens on every device and libtorch version.

/// How to pick a token. `temperature == 0` is greedy (argmax, first index on ties).
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingConfig {
    pub temperature: f64,
    /// Keep only the k most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches p (1: all).
    pub top_p: f64,
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

impl SamplingConfig {
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

/// A `SamplingConfig` with its generator state.
#[derive(Debug)]
pub struct Sampler {
    cfg: SamplingConfig,
    state: u64,
}

/// splitmix64: small, well mixed, and the same on every platform.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Index of the largest value, the first one on ties.
pub fn argmax(logits: &[f32]) -> usize {
    logits
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &l)| {
            if l > best.1 {
                (i, l)
            } else {
                best
            }
        })
        .0
}

impl Sampler {
    /// A sampler whose draws depend only on `cfg.seed` and `stream` (e.g. the prompt's index).
    pub fn new(cfg: SamplingConfig, stream: u64) -> Self {
        let mut state = cfg.seed ^ stream.wrapping_mul(0xA24B_AED4_963E_E407);
        splitmix(&mut state);
        Self { cfg, state }
    }

    /// The next token for `logits` over the vocabulary.
    pub fn pick(&mut self, logits: &[f32]) -> usize {
        if self.cfg.is_greedy() {
            return argmax(logits);
        }
        // p_i = softmax(l_i / T) over the candidates, most likely first.
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        if self.cfg.top_k > 0 {
            order.truncate(self.cfg.top_k);
        }
        let max = logits[order[0]] as f64;
        let mut probs: Vec<f64> = order
            .iter()
            .map(|&i| ((logits[i] as f64 - max) / self.cfg.temperature).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if self.cfg.top_p < 1.0 {
            let mut mass = 0.0;
            let keep = probs
                .iter()
                .position(|p| {
                    mass += p;
                    mass >= self.cfg.top_p
                })
                .map_or(probs.len(), |i| i + 1);
            probs.truncate(keep);
            order.truncate(keep);
        }
        let draw = (splitmix(&mut self.state) >> 11) as f64 / (1u64 << 53) as f64;
        let mut target = draw * probs.iter().sum::<f64>();
        for (&token, &p) in order.iter().zip(&probs) {
            target -= p;
            if target < 0.0 {
                return token;
            }
        }
        *order.last().expect("no candidate token")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(temperature: f64, top_k: usize, top_p: f64, seed: u64) -> Sampler {
        Sampler::new(
            SamplingConfig {
                temperature,
                top_k,
                top_p,
                seed,
            },
            0,
        )
    }

    fn draws(s: &mut Sampler, logits: &[f32], n: usize) -> Vec<usize> {
        (0..n).map(|_| s.pick(logits)).collect()
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(sampler(0.0, 0, 1.0, 0).pick(&[0.5, 2.0, 2.0, -1.0]), 1);
    }

    #[test]
    fn top_k_and_top_p_restrict_the_candidates() {
        let logits = [3.0, 2.9, 0.0, -1.0, 2.8];
        let top2 = draws(&mut sampler(1.0, 2, 1.0, 1), &logits, 200);
        assert!(top2.iter().all(|&t| t == 0 || t == 1));
        assert!(top2.contains(&0) && top2.contains(&1));
        // p(0) ≈ 0.36, p(1) ≈ 0.33, p(4) ≈ 0.30: top-p 0.5 keeps two tokens.
        let nucleus = draws(&mut sampler(1.0, 0, 0.5, 2), &logits, 200);
        assert!(nucleus.iter().all(|&t| t == 0 || t == 1));
        let all = draws(&mut sampler(1.0, 0, 1.0, 3), &logits, 400);
        assert!(all.contains(&4) && all.contains(&2));
    }

    #[test]
    fn a_seed_repeats_its_draws() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let a = draws(&mut sampler(0.8, 0, 0.9, 42), &logits, 50);
        let b = draws(&mut sampler(0.8, 0, 0.9, 42), &logits, 50);
        let c = draws(&mut sampler(0.8, 0, 0.9, 43), &logits, 50);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}

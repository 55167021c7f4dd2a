//! Token sampling: greedy, or repetition penalty → top-k → top-p → min-p →
//! temperature → a draw from a seeded RNG (llama.cpp's default chain order).
//! The same logits, parameters and seed always give the same token.

use std::collections::VecDeque;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 (or below) is greedy.
    pub temperature: f32,
    /// 0 disables.
    pub top_k: usize,
    /// 1.0 disables.
    pub top_p: f32,
    /// 0.0 disables.
    pub min_p: f32,
    /// 1.0 disables.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repeat_last_n: usize,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..Default::default()
        }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }
}

/// Per-sequence sampler state.
#[derive(Debug, Clone)]
pub struct Sampler {
    pub params: SamplingParams,
    rng: ChaCha8Rng,
    recent: VecDeque<u32>,
    /// Scratch: candidate (id, logit) pairs.
    cand: Vec<(u32, f32)>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Sampler {
        Sampler {
            rng: ChaCha8Rng::seed_from_u64(params.seed),
            params,
            recent: VecDeque::new(),
            cand: Vec::new(),
        }
    }

    /// Remember a token (prompt or generated) for the repetition penalty.
    pub fn accept(&mut self, id: u32) {
        if self.params.repeat_last_n == 0 {
            return;
        }
        if self.recent.len() == self.params.repeat_last_n {
            self.recent.pop_front();
        }
        self.recent.push_back(id);
    }

    /// Choose the next token from raw logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let p = &self.params;
        let penalize = p.repeat_penalty != 1.0 && !self.recent.is_empty();
        let logit_of = |id: usize, l: f32, recent: &VecDeque<u32>| -> f32 {
            if penalize && recent.contains(&(id as u32)) {
                if l > 0.0 {
                    l / p.repeat_penalty
                } else {
                    l * p.repeat_penalty
                }
            } else {
                l
            }
        };
        if p.is_greedy() {
            let mut best = 0usize;
            let mut best_l = f32::NEG_INFINITY;
            for (i, &l) in logits.iter().enumerate() {
                let l = logit_of(i, l, &self.recent);
                if l > best_l {
                    best_l = l;
                    best = i;
                }
            }
            return best as u32;
        }
        let cand = &mut self.cand;
        cand.clear();
        cand.extend(
            logits
                .iter()
                .enumerate()
                .map(|(i, &l)| (i as u32, logit_of(i, l, &self.recent)))
                .filter(|(_, l)| l.is_finite()),
        );
        if cand.is_empty() {
            return 0;
        }
        let by_logit_desc =
            |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        // Top-k (and a full sort when top-p needs order).
        if p.top_k > 0 && p.top_k < cand.len() {
            cand.select_nth_unstable_by(p.top_k - 1, by_logit_desc);
            cand.truncate(p.top_k);
        }
        let max_l = cand.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
        // Min-p: drop tokens whose probability is below min_p × the best's.
        if p.min_p > 0.0 {
            let cut = max_l + p.min_p.ln();
            cand.retain(|c| c.1 >= cut);
        }
        cand.sort_unstable_by(by_logit_desc);
        // Top-p over the softmax of the survivors.
        if p.top_p < 1.0 {
            let total: f64 = cand.iter().map(|c| ((c.1 - max_l) as f64).exp()).sum();
            let mut acc = 0.0f64;
            let mut keep = cand.len();
            for (i, c) in cand.iter().enumerate() {
                acc += ((c.1 - max_l) as f64).exp() / total;
                if acc >= p.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            cand.truncate(keep.max(1));
        }
        // Temperature, then draw.
        let t = p.temperature;
        let weights: Vec<f64> = cand
            .iter()
            .map(|c| (((c.1 - max_l) / t) as f64).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut r = self.rng.random::<f64>() * total;
        for (c, w) in cand.iter().zip(&weights) {
            if r < *w {
                return c.0;
            }
            r -= w;
        }
        cand.last().map(|c| c.0).unwrap_or(0)
    }
}

/// Log-probability of `token` under softmax(logits), and the `top_n` most
/// likely tokens with theirs (for the OpenAI `logprobs` field).
pub fn logprobs(logits: &[f32], token: u32, top_n: usize) -> (f32, Vec<(u32, f32)>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max as f64
        + logits
            .iter()
            .map(|&l| ((l - max) as f64).exp())
            .sum::<f64>()
            .ln();
    let lp = |l: f32| (l as f64 - lse) as f32;
    let mine = logits
        .get(token as usize)
        .map_or(f32::NEG_INFINITY, |&l| lp(l));
    let mut top: Vec<(u32, f32)> = Vec::new();
    if top_n > 0 {
        let mut idx: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        let n = top_n.min(idx.len());
        idx.select_nth_unstable_by(n - 1, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        idx.truncate(n);
        idx.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        top = idx.into_iter().map(|(i, l)| (i, lp(l))).collect();
    }
    (mine, top)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        (0..1000)
            .map(|i| ((i * 7919) % 1000) as f32 / 100.0)
            .collect()
    }

    #[test]
    fn greedy_takes_first_maximum() {
        let mut s = Sampler::new(SamplingParams::greedy());
        assert_eq!(s.sample(&[1.0, 3.0, 3.0, 2.0]), 1);
    }

    #[test]
    fn same_seed_same_tokens() {
        let l = logits();
        let params = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 42,
            ..Default::default()
        };
        let run = |p: &SamplingParams| {
            let mut s = Sampler::new(p.clone());
            (0..50).map(|_| s.sample(&l)).collect::<Vec<_>>()
        };
        assert_eq!(run(&params), run(&params));
        let other = SamplingParams {
            seed: 43,
            ..params.clone()
        };
        assert_ne!(run(&params), run(&other));
    }

    #[test]
    fn top_k_one_is_greedy() {
        let l = logits();
        let mut s = Sampler::new(SamplingParams {
            temperature: 5.0,
            top_k: 1,
            seed: 1,
            ..Default::default()
        });
        let best = Sampler::new(SamplingParams::greedy()).sample(&l);
        for _ in 0..20 {
            assert_eq!(s.sample(&l), best);
        }
    }

    #[test]
    fn top_p_and_min_p_restrict_the_support() {
        let mut l = vec![-10.0f32; 100];
        l[3] = 5.0;
        l[7] = 4.9;
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.5,
            seed: 9,
            ..Default::default()
        });
        for _ in 0..200 {
            let t = s.sample(&l);
            assert!(t == 3 || t == 7, "{t}");
        }
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.3,
            min_p: 0.0,
            seed: 9,
            ..Default::default()
        });
        for _ in 0..200 {
            assert_eq!(s.sample(&l), 3);
        }
    }

    #[test]
    fn repetition_penalty_discourages_recent_tokens() {
        let l = vec![1.0f32, 1.1, 0.5];
        let mut s = Sampler::new(SamplingParams {
            temperature: 0.0,
            repeat_penalty: 2.0,
            ..Default::default()
        });
        s.accept(1);
        assert_eq!(s.sample(&l), 0);
    }

    #[test]
    fn logprobs_are_normalised() {
        let l = vec![0.0f32, 1.0, 2.0];
        let (lp, top) = logprobs(&l, 2, 3);
        let total: f32 = top.iter().map(|t| t.1.exp()).sum();
        assert!((total - 1.0).abs() < 1e-5);
        assert_eq!(top[0].0, 2);
        assert!((lp - top[0].1).abs() < 1e-7);
    }
}

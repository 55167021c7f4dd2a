//! `attend_tiled` against a plain statement of the same arithmetic, and
//! `decode` for groups of heads against `decode_one` head by head.

use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

struct SpecScratch {
    k: Vec<f32>,
    kq: Vec<f32>,
    v: Vec<f32>,
    acc: Vec<f32>,
}

/// The specification: one key at a time, converted for every query.
fn spec_tiled(isa: Isa, q: &[f32], kv: &KvSpan, kq_scale: f32, out: &mut [f32]) {
    let (k_cache, v_cache, kv_stride, head_off) = (kv.k, kv.v, kv.stride, kv.head_off);
    let (first, pos) = (kv.first, kv.last);
    let hd = q.len();
    let mut t = SpecScratch {
        k: vec![0.0; hd],
        kq: vec![0.0; FA_TILE_KV],
        v: vec![0.0; hd],
        acc: vec![0.0; hd],
    };
    t.acc.iter_mut().for_each(|a| *a = 0.0);
    let mut m = f32::NEG_INFINITY;
    let mut sum = 0.0f32;
    let mut tile0 = first / FA_TILE_KV * FA_TILE_KV;
    while tile0 <= pos {
        // Scores for the tile; masked and out-of-range keys are -inf.
        for j in 0..FA_TILE_KV {
            let p = tile0 + j;
            t.kq[j] = if p < first || p > pos {
                f32::NEG_INFINITY
            } else {
                let off = p * kv_stride + head_off;
                for (d, &b) in t.k.iter_mut().zip(&k_cache[off..off + hd]) {
                    *d = f16::from_bits(b).to_f32();
                }
                let mut kq = 0.0f32;
                for (&kd, &qd) in t.k.iter().zip(q) {
                    kq = kd.mul_add(qd, kq);
                }
                kq * kq_scale
            };
        }
        let tile_max = t.kq.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if tile_max != f32::NEG_INFINITY {
            let m_new = m.max(tile_max);
            if m_new > m {
                let ms = (m - m_new).exp();
                vec::vec_scale_f32(&mut t.acc, ms);
                sum *= ms;
            }
            m = m_new;
            let kq_in = t.kq.clone();
            sum = (sum as f64 + vec::soft_max_f32(isa, &mut t.kq, &kq_in, m_new)) as f32;
            for j in 0..FA_TILE_KV {
                let p = tile0 + j;
                if p < first || p > pos {
                    continue; // weight 0: ggml's FMA adds exactly nothing
                }
                let off = p * kv_stride + head_off;
                for (d, &b) in t.v.iter_mut().zip(&v_cache[off..off + hd]) {
                    *d = f16::from_bits(b).to_f32();
                }
                let w = t.kq[j];
                for (a, &vd) in t.acc.iter_mut().zip(&t.v) {
                    *a = vd.mul_add(w, *a);
                }
            }
        }
        tile0 += FA_TILE_KV;
    }
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    for (o, &a) in out.iter_mut().zip(&t.acc) {
        *o = a * inv;
    }
}

/// Queries in the orders the forward pass issues them (heads of a group,
/// then the next token; several sequences; windows; spans longer than the
/// converted-key cache) give the specification's bits.
#[test]
fn tiled_attention_matches_its_specification() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for &(hd, n_kv_heads, group, n_pos, window) in &[
        (64usize, 3usize, 3usize, 200usize, usize::MAX),
        (256, 1, 4, 150, usize::MAX),
        (32, 2, 2, 300, 70),
        (16, 1, 1, TILED_CACHE_KEYS + 130, usize::MAX),
    ] {
        let kv_stride = hd * n_kv_heads;
        let n_caches = 2;
        let caches: Vec<(Vec<u16>, Vec<u16>)> = (0..n_caches)
            .map(|_| {
                let mut g = || -> Vec<u16> {
                    (0..n_pos * kv_stride)
                        .map(|_| f16::from_f32(rng.random_range(-2.0f32..2.0)).to_bits())
                        .collect()
                };
                (g(), g())
            })
            .collect();
        for isa in Isa::all_available() {
            let mut t = TiledScratch::new(hd);
            let mut out = vec![0f32; hd];
            // Ascending positions in two sequences, then a jump back.
            let mut order: Vec<(usize, usize)> =
                (n_pos - 80..n_pos).map(|p| (p % n_caches, p)).collect();
            order.extend([(0, 5), (1, n_pos - 1), (0, 64), (0, 63)]);
            for (c, pos) in order {
                for h in 0..n_kv_heads * group {
                    let head_off = (h / group) * hd;
                    let q: Vec<f32> = (0..hd).map(|_| rng.random_range(-1.0f32..1.0)).collect();
                    let (k, v) = (&caches[c].0, &caches[c].1);
                    let kv = KvSpan::new(k, v, kv_stride, head_off, pos, window);
                    attend_tiled(isa, &q, &kv, 0.125, &mut t, &mut out);
                    let mut want = vec![0f32; hd];
                    spec_tiled(isa, &q, &kv, 0.125, &mut want);
                    let (a, b): (Vec<u32>, Vec<u32>) = (
                        out.iter().map(|x| x.to_bits()).collect(),
                        want.iter().map(|x| x.to_bits()).collect(),
                    );
                    assert_eq!(a, b, "{isa:?} hd {hd} pos {pos} head {h} window {window}");
                }
            }
        }
    }
}

/// Every group size and head size the architectures use, spans longer than
/// a block, windows, scores far apart (exponents on libm's special paths)
/// and ties: each head of a group gets `decode_one`'s bits.
#[test]
fn grouped_decode_equals_one_head_at_a_time() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for &(hd, n_kv_heads, group, n_pos, window, spread) in &[
        (64usize, 3usize, 3usize, 70usize, usize::MAX, 1.0f32),
        (64, 2, 5, 600, usize::MAX, 1.0),
        (128, 2, 4, 300, 100, 1.0),
        (256, 1, 4, 90, 40, 1.0),
        (64, 1, 8, 40, usize::MAX, 60.0),
        (64, 1, 1, 20, usize::MAX, 0.0),
        (80, 1, 2, 30, usize::MAX, 1.0),
        (16, 2, 1, 30, 7, 1.0),
    ] {
        let kv_stride = hd * n_kv_heads;
        let mut g = |scale: f32| -> Vec<u16> {
            (0..n_pos * kv_stride)
                .map(|_| f16::from_f32(rng.random_range(-scale..=scale)).to_bits())
                .collect()
        };
        let (k, v) = (g(spread.max(0.001)), g(2.0));
        for isa in Isa::all_available() {
            let (mut qh, mut acc) = (vec![f16::ZERO; hd], vec![f16::ZERO; hd]);
            for pos in [0, 1, n_pos / 2, n_pos - 1] {
                for kvh in 0..n_kv_heads {
                    let q: Vec<f32> = (0..group * hd)
                        .map(|_| rng.random_range(-1.0f32..1.0))
                        .collect();
                    let kv = KvSpan::new(&k, &v, kv_stride, kvh * hd, pos, window);
                    let mut got = vec![0f32; group * hd];
                    decode(isa, &q, &kv, hd, 0.125, &mut got);
                    for h in 0..group {
                        let mut want = vec![0f32; hd];
                        let qr = &q[h * hd..(h + 1) * hd];
                        decode_one(isa, qr, &kv, 0.125, &mut qh, &mut acc, &mut want);
                        let gh = &got[h * hd..(h + 1) * hd];
                        let (a, b): (Vec<u32>, Vec<u32>) = (
                            gh.iter().map(|x| x.to_bits()).collect(),
                            want.iter().map(|x| x.to_bits()).collect(),
                        );
                        assert_eq!(a, b, "{isa:?} hd {hd} group {group} pos {pos} head {h}");
                    }
                }
            }
        }
    }
}

#[test]
#[ignore]
fn probe_decode_speed() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (hd, nkv, group, n_pos) = (64, 3, 3, 64);
    let stride = hd * nkv;
    let k: Vec<u16> = (0..n_pos * stride)
        .map(|_| f16::from_f32(rng.random_range(-1.0f32..1.0)).to_bits())
        .collect();
    let v = k.clone();
    let q: Vec<f32> = (0..group * hd)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let mut out = vec![0f32; group * hd];
    for isa in Isa::all_available() {
        for pos in [0usize, 8, 32, 63] {
            let kv = KvSpan::new(&k, &v, stride, hd, pos, usize::MAX);
            let n = 20000;
            let t = std::time::Instant::now();
            for _ in 0..n {
                decode(isa, &q, &kv, hd, 0.125, &mut out);
            }
            let ns = t.elapsed().as_nanos() as f64 / n as f64;
            println!(
                "{isa:?} pos {pos}: {ns:.0} ns per call, {:.1} ns per head-position",
                ns / (group * (pos + 1)) as f64
            );
        }
    }
}

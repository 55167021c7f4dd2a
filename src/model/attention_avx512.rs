//! Decode attention on AVX-512 for the query heads of a GQA group: the same
//! operations as `decode_one`, on the same values, regrouped so that they
//! pipeline. Keys and values are loaded and converted once for up to four
//! heads. Per block of positions:
//!
//! 1. every head's scores, `ggml_vec_dot_f16` lane for lane (four 16-lane
//!    FMA chains, GCC's reduction), times the scale;
//! 2. the online-softmax bookkeeping, a scalar scan that yields each
//!    position's `(ms, vs)` pair: the exponent of one of them is computed,
//!    for the whole block at once, with `vec::exp_in_place`'s AVX-512 body
//!    (libm's bits);
//! 3. the F16 value accumulators, kept in registers as f32 values rounded
//!    to F16 after every operation, as `ggml_vec_scale_f16` and
//!    `ggml_vec_mad_f16` round them when they store.

use core::arch::x86_64::*;

use super::KvSpan;
use crate::backend::cpu::vec::x86::{exp_in_place_512, reduce16};

/// Positions per block: the per-position arrays stay in L1.
const BLK: usize = 256;
/// Positions ahead that step 1 prefetches.
const PREFETCH: usize = 8;
/// Heads per pass.
const MAX_HEADS: usize = 4;

/// Per-task buffers of [`decode_group`].
#[derive(Default)]
pub(super) struct GroupScratch {
    /// The query heads rounded to F16, as f32.
    q: Vec<f32>,
    /// Per head and position of the block: the score, then the exponent.
    e: Vec<f32>,
    ms: Vec<f32>,
    vs: Vec<f32>,
    /// Per position of the block: some head has a new maximum there.
    rescale: Vec<bool>,
    /// Per head: the accumulator between blocks.
    acc: Vec<f32>,
}

/// # Safety
/// AVX-512 F/BW/DQ/VL (with FMA, F16C) available; `hd % 64 == 0`;
/// `q.len() == out.len()`, a multiple of `hd`; positions `kv.first..=kv.last`
/// of `kv`'s head lie inside its key and value slices.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")]
pub(super) unsafe fn decode_group(
    q: &[f32],
    kv: &KvSpan,
    hd: usize,
    kq_scale: f32,
    sc: &mut GroupScratch,
    out: &mut [f32],
) {
    let nh = q.len() / hd;
    let n = MAX_HEADS * BLK;
    if sc.e.len() < n {
        sc.e.resize(n, 0.0);
        sc.ms.resize(n, 0.0);
        sc.vs.resize(n, 0.0);
        sc.rescale.resize(BLK, false);
    }
    let mut h0 = 0;
    while h0 < nh {
        let th = (nh - h0).min(MAX_HEADS);
        let (qs, os) = (
            &q[h0 * hd..(h0 + th) * hd],
            &mut out[h0 * hd..(h0 + th) * hd],
        );
        // SAFETY: as this function's.
        unsafe {
            match th {
                1 => heads::<1>(qs, kv, hd, kq_scale, sc, os),
                2 => heads::<2>(qs, kv, hd, kq_scale, sc, os),
                3 => heads::<3>(qs, kv, hd, kq_scale, sc, os),
                _ => heads::<4>(qs, kv, hd, kq_scale, sc, os),
            }
        }
        h0 += th;
    }
}

/// Rounds each lane to F16 and back, as a store to an F16 buffer does.
#[inline(always)]
unsafe fn round_f16(x: __m512) -> __m512 {
    unsafe { _mm512_cvtph_ps(_mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x)) }
}

#[inline(always)]
unsafe fn load_f16(p: *const u16) -> __m512 {
    unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)) }
}

#[inline(always)]
unsafe fn heads<const NH: usize>(
    q: &[f32],
    kv: &KvSpan,
    hd: usize,
    kq_scale: f32,
    sc: &mut GroupScratch,
    out: &mut [f32],
) {
    unsafe {
        sc.q.resize(NH * hd, 0.0);
        for (d, x) in sc.q.chunks_exact_mut(16).zip(q.chunks_exact(16)) {
            _mm512_storeu_ps(d.as_mut_ptr(), round_f16(_mm512_loadu_ps(x.as_ptr())));
        }
        sc.acc.clear();
        sc.acc.resize(NH * hd, 0.0);
        let qp = sc.q.as_ptr();
        let mut m = [f32::NEG_INFINITY; NH];
        let mut sum = [0.0f32; NH];
        let (kp, vp) = (kv.k.as_ptr(), kv.v.as_ptr());
        let mut p0 = kv.first;
        while p0 <= kv.last {
            let bn = (kv.last + 1 - p0).min(BLK);
            // 1. Scores.
            for i in 0..bn {
                let k = kp.add((p0 + i) * kv.stride + kv.head_off);
                // The cache rows of a batch of sequences outgrow L2: fetch
                // keys (and values, for step 3) a few positions ahead.
                if p0 + i + PREFETCH <= kv.last {
                    let ahead = PREFETCH * kv.stride;
                    for l in (0..hd * 2).step_by(64) {
                        _mm_prefetch::<_MM_HINT_T0>((k.add(ahead) as *const i8).add(l));
                        _mm_prefetch::<_MM_HINT_T0>(
                            (vp.add(ahead + (p0 + i) * kv.stride + kv.head_off) as *const i8)
                                .add(l),
                        );
                    }
                }
                let mut s = [[_mm512_setzero_ps(); 4]; NH];
                for c in (0..hd).step_by(64) {
                    let kc = [
                        load_f16(k.add(c)),
                        load_f16(k.add(c + 16)),
                        load_f16(k.add(c + 32)),
                        load_f16(k.add(c + 48)),
                    ];
                    for (h, sh) in s.iter_mut().enumerate() {
                        for (j, sj) in sh.iter_mut().enumerate() {
                            let qv = _mm512_loadu_ps(qp.add(h * hd + c + 16 * j));
                            *sj = _mm512_fmadd_ps(kc[j], qv, *sj);
                        }
                    }
                }
                for (h, sh) in s.iter().enumerate() {
                    let t = _mm512_add_ps(_mm512_add_ps(sh[0], sh[2]), _mm512_add_ps(sh[1], sh[3]));
                    *sc.e.get_unchecked_mut(h * BLK + i) = reduce16(t) * kq_scale;
                }
            }
            // 2. Softmax bookkeeping, in position order per head.
            sc.rescale[..bn].fill(false);
            for h in 0..NH {
                let e = &mut sc.e[h * BLK..h * BLK + bn];
                let ms = &mut sc.ms[h * BLK..h * BLK + bn];
                let mut mh = m[h];
                // Mark a new maximum with ms = 0 for now (exponents are
                // computed below); keep the exponent's argument in e.
                for (x, msi) in e.iter_mut().zip(ms.iter_mut()) {
                    let s = *x;
                    if s > mh {
                        *x = mh - s;
                        *msi = 0.0;
                        mh = s;
                    } else {
                        *x = s - mh;
                        *msi = 1.0;
                    }
                }
                m[h] = mh;
                exp_in_place_512(e);
                let vs = &mut sc.vs[h * BLK..h * BLK + bn];
                let mut sh = sum[h];
                for (i, ((&x, msi), vsi)) in e.iter().zip(ms.iter_mut()).zip(vs).enumerate() {
                    if *msi == 0.0 {
                        *msi = x;
                        *vsi = 1.0;
                        sc.rescale[i] = true;
                    } else {
                        *vsi = x;
                    }
                    sh = sh.mul_add(*msi, *vsi);
                }
                sum[h] = sh;
            }
            // 3. Value accumulators, 64 dimensions at a time.
            for c in (0..hd).step_by(64) {
                let mut a = [[_mm512_setzero_ps(); 4]; NH];
                for (h, ah) in a.iter_mut().enumerate() {
                    for (j, aj) in ah.iter_mut().enumerate() {
                        *aj = _mm512_loadu_ps(sc.acc.as_ptr().add(h * hd + c + 16 * j));
                    }
                }
                for i in 0..bn {
                    let v = vp.add((p0 + i) * kv.stride + kv.head_off + c);
                    let vc = [
                        load_f16(v),
                        load_f16(v.add(16)),
                        load_f16(v.add(32)),
                        load_f16(v.add(48)),
                    ];
                    if *sc.rescale.get_unchecked(i) {
                        // Heads without a new maximum here have ms = 1,
                        // which leaves their (F16-exact) values as they are.
                        for (h, ah) in a.iter_mut().enumerate() {
                            let ms = _mm512_set1_ps(*sc.ms.get_unchecked(h * BLK + i));
                            for aj in ah.iter_mut() {
                                *aj = round_f16(_mm512_mul_ps(*aj, ms));
                            }
                        }
                    }
                    for (h, ah) in a.iter_mut().enumerate() {
                        let vs = _mm512_set1_ps(*sc.vs.get_unchecked(h * BLK + i));
                        for (j, aj) in ah.iter_mut().enumerate() {
                            *aj = round_f16(_mm512_fmadd_ps(vc[j], vs, *aj));
                        }
                    }
                }
                for (h, ah) in a.iter().enumerate() {
                    for (j, aj) in ah.iter().enumerate() {
                        _mm512_storeu_ps(sc.acc.as_mut_ptr().add(h * hd + c + 16 * j), *aj);
                    }
                }
            }
            p0 += bn;
        }
        for h in 0..NH {
            let inv = if sum[h] == 0.0 { 0.0 } else { 1.0 / sum[h] };
            for (o, &a) in out[h * hd..(h + 1) * hd].iter_mut().zip(&sc.acc[h * hd..]) {
                *o = a * inv;
            }
        }
    }
}

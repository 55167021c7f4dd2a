//! AVX2 bodies of the activation quantizers, the same arithmetic as
//! `quantize_act` (and so as ggml's x86 build); tests check the bytes match.

use core::arch::x86_64::*;

#[inline(always)]
unsafe fn hmax8(v: __m256) -> f32 {
    unsafe {
        let m = _mm_max_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)))
    }
}

#[inline(always)]
unsafe fn hsum_i32_8(a: __m256i) -> i32 {
    unsafe {
        let s = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
        let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
        _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s)))
    }
}

/// Four i32 vectors (elements 0..8, 8..16, 16..24, 24..32) to 32 signed
/// saturated bytes in element order.
#[inline(always)]
unsafe fn pack32(i0: __m256i, i1: __m256i, i2: __m256i, i3: __m256i) -> __m256i {
    unsafe {
        let a = _mm256_packs_epi32(i0, i1);
        let b = _mm256_packs_epi32(i2, i3);
        let c = _mm256_packs_epi16(a, b);
        _mm256_permutevar8x32_epi32(c, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
    }
}

/// ggml's AVX2 `quantize_row_q8_0` / `quantize_row_q8_1` for whole blocks.
///
/// # Safety
/// AVX2/FMA/F16C available; `x.len() / 32` blocks fit in `y` at `bsize`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q8_blocks(
    x: &[f32],
    y: &mut [u8],
    bsize: usize,
    off_d: usize,
    off_s: Option<usize>,
    off_qs: usize,
) {
    unsafe {
        let sign = _mm256_set1_ps(-0.0);
        for (xb, yb) in x.chunks_exact(32).zip(y.chunks_exact_mut(bsize)) {
            let p = xb.as_ptr();
            let v = [
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            ];
            let mut m = _mm256_andnot_ps(sign, v[0]);
            for vi in &v[1..] {
                m = _mm256_max_ps(m, _mm256_andnot_ps(sign, *vi));
            }
            let amax = hmax8(m);
            let d = amax / 127.0;
            let dh = _mm_cvtsi128_si32(_mm_cvtps_ph::<0>(_mm_set_ss(d))) as u16;
            yb[off_d..off_d + 2].copy_from_slice(&dh.to_le_bytes());
            let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
            let q: [__m256i; 4] = [
                _mm256_cvtps_epi32(_mm256_round_ps::<0>(_mm256_mul_ps(v[0], id))),
                _mm256_cvtps_epi32(_mm256_round_ps::<0>(_mm256_mul_ps(v[1], id))),
                _mm256_cvtps_epi32(_mm256_round_ps::<0>(_mm256_mul_ps(v[2], id))),
                _mm256_cvtps_epi32(_mm256_round_ps::<0>(_mm256_mul_ps(v[3], id))),
            ];
            if let Some(off_s) = off_s {
                let sum = hsum_i32_8(_mm256_add_epi32(
                    _mm256_add_epi32(q[0], q[1]),
                    _mm256_add_epi32(q[2], q[3]),
                ));
                let sh = _mm_cvtsi128_si32(_mm_cvtps_ph::<0>(_mm_set_ss(d * sum as f32))) as u16;
                yb[off_s..off_s + 2].copy_from_slice(&sh.to_le_bytes());
            }
            _mm256_storeu_si256(
                yb.as_mut_ptr().add(off_qs) as *mut __m256i,
                pack32(q[0], q[1], q[2], q[3]),
            );
        }
    }
}

/// `quantize_row_q8_K_ref` for whole super-blocks (292 bytes each).
///
/// # Safety
/// AVX2/FMA/F16C available; `x.len() / 256` blocks fit in `y`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q8_k_blocks(x: &[f32], y: &mut [u8]) {
    unsafe {
        let sign = _mm256_set1_ps(-0.0);
        for (xb, yb) in x.chunks_exact(256).zip(y.chunks_exact_mut(292)) {
            let p = xb.as_ptr();
            // Max |x|, ignoring NaN as the scalar scan does (NaN second).
            let mut m = _mm256_setzero_ps();
            for i in 0..32 {
                m = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(p.add(8 * i))), m);
            }
            let amax = hmax8(m);
            if amax == 0.0 {
                yb.fill(0);
                continue;
            }
            // The signed value of the first element of largest magnitude.
            let max = xb.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
            let iscale = -127.0 / max;
            let is = _mm256_set1_ps(iscale);
            let magic = _mm256_set1_ps(12_582_912.0);
            let mant = _mm256_set1_epi32(0x007f_ffff);
            let bias = _mm256_set1_epi32(0x0040_0000);
            let cap = _mm256_set1_epi32(127);
            let qs = yb.as_mut_ptr().add(4);
            for g in 0..8 {
                let mut q = [_mm256_setzero_si256(); 4];
                for (k, qk) in q.iter_mut().enumerate() {
                    // nearest_int(iscale * x): product, then the magic add.
                    let t = _mm256_add_ps(
                        _mm256_mul_ps(is, _mm256_loadu_ps(p.add(32 * g + 8 * k))),
                        magic,
                    );
                    let i = _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(t), mant), bias);
                    *qk = _mm256_min_epi32(i, cap);
                }
                let packed = pack32(q[0], q[1], q[2], q[3]);
                _mm256_storeu_si256(qs.add(32 * g) as *mut __m256i, packed);
                // Sums of each 16 quants (the i32 lanes before packing).
                let s0 = hsum_i32_8(_mm256_add_epi32(q[0], q[1]));
                let s1 = hsum_i32_8(_mm256_add_epi32(q[2], q[3]));
                yb[260 + 4 * g..262 + 4 * g].copy_from_slice(&(s0 as i16).to_le_bytes());
                yb[262 + 4 * g..264 + 4 * g].copy_from_slice(&(s1 as i16).to_le_bytes());
            }
            yb[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
        }
    }
}

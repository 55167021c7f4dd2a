//! x86 SIMD bodies of `vec.rs`, in ggml's lane layouts.

use super::Isa;
use core::arch::x86_64::*;
use half::f16;

/// # Safety
/// `isa` available; `x`, `y` valid for `n` f32 reads.
pub(super) unsafe fn dot_f32(isa: Isa, n: usize, x: *const u8, y: *const u8) -> f32 {
    unsafe {
        match isa {
            Isa::Avx512 => dot_f32_512(n, x as *const f32, y as *const f32),
            _ => dot_f32_256(n, x as *const f32, y as *const f32),
        }
    }
}

/// # Safety
/// `isa` available; `x`, `y` valid for `n` f16 reads.
pub(super) unsafe fn dot_f16(isa: Isa, n: usize, x: *const u8, y: *const u8) -> f32 {
    unsafe {
        match isa {
            Isa::Avx512 => dot_f16_512(n, x as *const u16, y as *const u16),
            _ => dot_f16_256(n, x as *const u16, y as *const u16),
        }
    }
}

#[inline(always)]
unsafe fn reduce8(v: __m256) -> f32 {
    // GGML_F32x8_REDUCE's tail: lo + hi, then two hadds.
    unsafe {
        let t0 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let t1 = _mm_hadd_ps(t0, t0);
        _mm_cvtss_f32(_mm_hadd_ps(t1, t1))
    }
}

/// # Safety
/// AVX-512 F/DQ available.
#[inline(always)]
pub(crate) unsafe fn reduce16(v: __m512) -> f32 {
    // GCC's _mm512_reduce_add_ps.
    unsafe {
        let t3 = _mm256_add_ps(_mm512_extractf32x8_ps(v, 1), _mm512_castps512_ps256(v));
        let t6 = _mm_add_ps(_mm256_extractf128_ps(t3, 1), _mm256_castps256_ps128(t3));
        let t8 = _mm_add_ps(t6, _mm_shuffle_ps(t6, t6, 0b01_00_11_10));
        _mm_cvtss_f32(_mm_add_ss(t8, _mm_movehdup_ps(t8)))
    }
}

/// `ggml_vec_dot_f32`'s tail; see `super::f32_tail_fused_from`.
#[inline(always)]
unsafe fn f32_tail(sumf: &mut f32, np: usize, n: usize, x: *const f32, y: *const f32) {
    unsafe {
        let fused_from = super::f32_tail_fused_from(np, n);
        // Rows from the file need not be 4-byte aligned.
        for k in np..fused_from {
            *sumf += x.add(k).read_unaligned() * y.add(k).read_unaligned();
        }
        for k in fused_from..n {
            *sumf = x
                .add(k)
                .read_unaligned()
                .mul_add(y.add(k).read_unaligned(), *sumf);
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f32_256(n: usize, x: *const f32, y: *const f32) -> f32 {
    unsafe {
        let np = n & !31;
        let mut s = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i < np {
            for (j, sj) in s.iter_mut().enumerate() {
                let a = _mm256_loadu_ps(x.add(i + 8 * j));
                let b = _mm256_loadu_ps(y.add(i + 8 * j));
                *sj = _mm256_fmadd_ps(a, b, *sj);
            }
            i += 32;
        }
        let s0 = _mm256_add_ps(s[0], s[2]);
        let s1 = _mm256_add_ps(s[1], s[3]);
        let mut sumf = reduce8(_mm256_add_ps(s0, s1));
        f32_tail(&mut sumf, np, n, x, y);
        sumf
    }
}

#[target_feature(enable = "avx512f,avx512dq,avx2,fma,f16c")]
unsafe fn dot_f32_512(n: usize, x: *const f32, y: *const f32) -> f32 {
    unsafe {
        let np = n & !63;
        let mut s = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        while i < np {
            for (j, sj) in s.iter_mut().enumerate() {
                let a = _mm512_loadu_ps(x.add(i + 16 * j));
                let b = _mm512_loadu_ps(y.add(i + 16 * j));
                *sj = _mm512_fmadd_ps(a, b, *sj);
            }
            i += 64;
        }
        let s0 = _mm512_add_ps(s[0], s[2]);
        let s1 = _mm512_add_ps(s[1], s[3]);
        let mut sumf = reduce16(_mm512_add_ps(s0, s1));
        f32_tail(&mut sumf, np, n, x, y);
        sumf
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f16_256(n: usize, x: *const u16, y: *const u16) -> f32 {
    unsafe {
        let np = n & !31;
        let mut s = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i < np {
            for (j, sj) in s.iter_mut().enumerate() {
                let a = _mm256_cvtph_ps(_mm_loadu_si128(x.add(i + 8 * j) as *const __m128i));
                let b = _mm256_cvtph_ps(_mm_loadu_si128(y.add(i + 8 * j) as *const __m128i));
                *sj = _mm256_fmadd_ps(a, b, *sj);
            }
            i += 32;
        }
        let s0 = _mm256_add_ps(s[0], s[2]);
        let s1 = _mm256_add_ps(s[1], s[3]);
        let mut sumf = reduce8(_mm256_add_ps(s0, s1)) as f64;
        for k in np..n {
            let p = f16::from_bits(x.add(k).read_unaligned()).to_f32()
                * f16::from_bits(y.add(k).read_unaligned()).to_f32();
            sumf += p as f64;
        }
        sumf as f32
    }
}

#[target_feature(enable = "avx512f,avx512dq,avx2,fma,f16c")]
unsafe fn dot_f16_512(n: usize, x: *const u16, y: *const u16) -> f32 {
    unsafe {
        let np = n & !63;
        let mut s = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        while i < np {
            for (j, sj) in s.iter_mut().enumerate() {
                let a = _mm512_cvtph_ps(_mm256_loadu_si256(x.add(i + 16 * j) as *const __m256i));
                let b = _mm512_cvtph_ps(_mm256_loadu_si256(y.add(i + 16 * j) as *const __m256i));
                *sj = _mm512_fmadd_ps(a, b, *sj);
            }
            i += 64;
        }
        let s0 = _mm512_add_ps(s[0], s[2]);
        let s1 = _mm512_add_ps(s[1], s[3]);
        let mut sumf = reduce16(_mm512_add_ps(s0, s1)) as f64;
        for k in np..n {
            let p = f16::from_bits(x.add(k).read_unaligned()).to_f32()
                * f16::from_bits(y.add(k).read_unaligned()).to_f32();
            sumf += p as f64;
        }
        sumf as f32
    }
}

/// Element-wise, so one 8-wide body serves every ISA.
///
/// # Safety
/// AVX2, FMA and F16C available; `y.len() == x.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn mad_f16(y: &mut [f16], x: &[f16], v: f32) {
    unsafe {
        let n = y.len();
        let yp = y.as_mut_ptr() as *mut u16;
        let xp = x.as_ptr() as *const u16;
        let vv = _mm256_set1_ps(v);
        let mut i = 0;
        while i + 8 <= n {
            let a = _mm256_cvtph_ps(_mm_loadu_si128(xp.add(i) as *const __m128i));
            let b = _mm256_cvtph_ps(_mm_loadu_si128(yp.add(i) as *const __m128i));
            let r = _mm256_fmadd_ps(a, vv, b);
            _mm_storeu_si128(yp.add(i) as *mut __m128i, _mm256_cvtps_ph::<0>(r));
            i += 8;
        }
        for k in i..n {
            y[k] = f16::from_f32(x[k].to_f32().mul_add(v, y[k].to_f32()));
        }
    }
}

/// Converts the whole groups of eight of `x` to f16 bits (round to nearest
/// even); returns how many it did.
///
/// # Safety
/// F16C available; `y.len() == x.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn f32_to_f16_body(x: &[f32], y: &mut [u16]) -> usize {
    unsafe {
        let n = x.len() & !7;
        let mut i = 0;
        while i < n {
            let v = _mm256_loadu_ps(x.as_ptr().add(i));
            _mm_storeu_si128(
                y.as_mut_ptr().add(i) as *mut __m128i,
                _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v),
            );
            i += 8;
        }
        n
    }
}

/// # Safety
/// AVX2 and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn scale_f16(y: &mut [f16], v: f32) {
    unsafe {
        let n = y.len();
        let yp = y.as_mut_ptr() as *mut u16;
        let vv = _mm256_set1_ps(v);
        let mut i = 0;
        while i + 8 <= n {
            let b = _mm256_cvtph_ps(_mm_loadu_si128(yp.add(i) as *const __m128i));
            _mm_storeu_si128(
                yp.add(i) as *mut __m128i,
                _mm256_cvtps_ph::<0>(_mm256_mul_ps(b, vv)),
            );
            i += 8;
        }
        for yk in &mut y[i..] {
            *yk = f16::from_f32(yk.to_f32() * v);
        }
    }
}

/// ggml's `ggml_v_expf` for AVX-512 (vec.h), instruction for instruction.
#[inline(always)]
unsafe fn v_expf_zmm(x: __m512) -> __m512 {
    unsafe {
        let r = _mm512_set1_ps(f32::from_bits(0x4b40_0000));
        let z = _mm512_fmadd_ps(x, _mm512_set1_ps(f32::from_bits(0x3fb8_aa3b)), r);
        let n = _mm512_sub_ps(z, r);
        let b = _mm512_fnmadd_ps(
            n,
            _mm512_set1_ps(f32::from_bits(0x35bf_be8e)),
            _mm512_fnmadd_ps(n, _mm512_set1_ps(f32::from_bits(0x3f31_7200)), x),
        );
        let d = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(_mm512_abs_ps(n), _mm512_set1_ps(192.0));
        let u = _mm512_mul_ps(b, b);
        let j = _mm512_fmadd_ps(
            _mm512_fmadd_ps(
                _mm512_fmadd_ps(
                    _mm512_set1_ps(f32::from_bits(0x3c07_2010)),
                    b,
                    _mm512_set1_ps(f32::from_bits(0x3d2b_9f17)),
                ),
                u,
                _mm512_fmadd_ps(
                    _mm512_set1_ps(f32::from_bits(0x3e2a_af33)),
                    b,
                    _mm512_set1_ps(f32::from_bits(0x3eff_fedb)),
                ),
            ),
            u,
            _mm512_fmadd_ps(
                _mm512_set1_ps(f32::from_bits(0x3f7f_fff6)),
                b,
                _mm512_set1_ps(1.0),
            ),
        );
        let res = _mm512_scalef_ps(j, n);
        if d == 0 {
            return res;
        }
        let zero = _mm512_setzero_ps();
        let le = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(n, zero);
        let alt = _mm512_mask_blend_ps(le, _mm512_set1_ps(f32::INFINITY), zero);
        _mm512_mask_blend_ps(d, res, alt)
    }
}

/// ggml's `ggml_v_expf` for AVX2+FMA (vec.h), instruction for instruction.
#[inline(always)]
unsafe fn v_expf_ymm(x: __m256) -> __m256 {
    unsafe {
        let r = _mm256_set1_ps(f32::from_bits(0x4b40_0000));
        let z = _mm256_fmadd_ps(x, _mm256_set1_ps(f32::from_bits(0x3fb8_aa3b)), r);
        let n = _mm256_sub_ps(z, r);
        let b = _mm256_fnmadd_ps(
            n,
            _mm256_set1_ps(f32::from_bits(0x35bf_be8e)),
            _mm256_fnmadd_ps(n, _mm256_set1_ps(f32::from_bits(0x3f31_7200)), x),
        );
        let e = _mm256_slli_epi32::<23>(_mm256_castps_si256(z));
        let k = _mm256_castsi256_ps(_mm256_add_epi32(
            e,
            _mm256_castps_si256(_mm256_set1_ps(1.0)),
        ));
        let absn = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
        let c = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(absn, _mm256_set1_ps(126.0)));
        let u = _mm256_mul_ps(b, b);
        let j = _mm256_fmadd_ps(
            _mm256_fmadd_ps(
                _mm256_fmadd_ps(
                    _mm256_set1_ps(f32::from_bits(0x3c07_2010)),
                    b,
                    _mm256_set1_ps(f32::from_bits(0x3d2b_9f17)),
                ),
                u,
                _mm256_fmadd_ps(
                    _mm256_set1_ps(f32::from_bits(0x3e2a_af33)),
                    b,
                    _mm256_set1_ps(f32::from_bits(0x3eff_fedb)),
                ),
            ),
            u,
            _mm256_mul_ps(_mm256_set1_ps(f32::from_bits(0x3f7f_fff6)), b),
        );
        if _mm256_movemask_ps(_mm256_castsi256_ps(c)) == 0 {
            return _mm256_fmadd_ps(j, k, k);
        }
        let g = _mm256_and_si256(
            _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(n, _mm256_setzero_ps())),
            _mm256_set1_epi32(0x8200_0000u32 as i32),
        );
        let s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f00_0000)));
        let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
        let d = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(absn, _mm256_set1_ps(192.0)));
        _mm256_or_ps(
            _mm256_and_ps(_mm256_castsi256_ps(d), _mm256_mul_ps(s1, s1)),
            _mm256_andnot_ps(
                _mm256_castsi256_ps(d),
                _mm256_or_ps(
                    _mm256_and_ps(
                        _mm256_castsi256_ps(c),
                        _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1),
                    ),
                    _mm256_andnot_ps(_mm256_castsi256_ps(c), _mm256_fmadd_ps(k, j, k)),
                ),
            ),
        )
    }
}

/// `ggml_vec_soft_max_f32`'s SIMD body over the full chunks of `x`
/// (16 lanes for `Avx512`, 8 for `Avx2`); returns (elements done, f64 sum).
///
/// # Safety
/// `isa` available; `y.len() == x.len()`.
pub(super) unsafe fn soft_max_body(isa: Isa, y: &mut [f32], x: &[f32], max: f32) -> (usize, f64) {
    unsafe {
        match isa {
            Isa::Avx512 => soft_max_512(y, x, max),
            _ => soft_max_256(y, x, max),
        }
    }
}

#[target_feature(enable = "avx512f,avx512dq,avx2,fma,f16c")]
unsafe fn soft_max_512(y: &mut [f32], x: &[f32], max: f32) -> (usize, f64) {
    unsafe {
        let (mut i, mut sum) = (0, 0f64);
        let m = _mm512_set1_ps(max);
        while i + 16 <= x.len() {
            let v = v_expf_zmm(_mm512_sub_ps(_mm512_loadu_ps(x.as_ptr().add(i)), m));
            _mm512_storeu_ps(y.as_mut_ptr().add(i), v);
            sum += reduce16(v) as f64;
            i += 16;
        }
        (i, sum)
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn soft_max_256(y: &mut [f32], x: &[f32], max: f32) -> (usize, f64) {
    unsafe {
        let (mut i, mut sum) = (0, 0f64);
        let m = _mm256_set1_ps(max);
        while i + 8 <= x.len() {
            let v = v_expf_ymm(_mm256_sub_ps(_mm256_loadu_ps(x.as_ptr().add(i)), m));
            _mm256_storeu_ps(y.as_mut_ptr().add(i), v);
            // ggml's softmax sum: hi + lo, movehl, movehdup.
            let h = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
            let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
            sum += _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h))) as f64;
            i += 8;
        }
        (i, sum)
    }
}

/// `ggml_vec_swiglu_f32` / `ggml_vec_silu_f32` SIMD body: `y = silu(x) * g`
/// (or `silu(x)` without `g`) over full chunks; returns the elements done.
///
/// # Safety
/// `isa` available; `y`, `x` (and `g`) of equal length.
pub(super) unsafe fn silu_body(isa: Isa, y: &mut [f32], x: &[f32], g: Option<&[f32]>) -> usize {
    unsafe {
        match isa {
            Isa::Avx512 => silu_512(y, x, g),
            _ => silu_256(y, x, g),
        }
    }
}

#[target_feature(enable = "avx512f,avx512dq,avx2,fma,f16c")]
unsafe fn silu_512(y: &mut [f32], x: &[f32], g: Option<&[f32]>) -> usize {
    unsafe {
        let mut i = 0;
        let one = _mm512_set1_ps(1.0);
        while i + 16 <= x.len() {
            let v = _mm512_loadu_ps(x.as_ptr().add(i));
            let e = v_expf_zmm(_mm512_sub_ps(_mm512_setzero_ps(), v));
            let mut s = _mm512_div_ps(v, _mm512_add_ps(one, e));
            if let Some(g) = g {
                s = _mm512_mul_ps(s, _mm512_loadu_ps(g.as_ptr().add(i)));
            }
            _mm512_storeu_ps(y.as_mut_ptr().add(i), s);
            i += 16;
        }
        i
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn silu_256(y: &mut [f32], x: &[f32], g: Option<&[f32]>) -> usize {
    unsafe {
        let mut i = 0;
        let one = _mm256_set1_ps(1.0);
        while i + 8 <= x.len() {
            let v = _mm256_loadu_ps(x.as_ptr().add(i));
            let e = v_expf_ymm(_mm256_sub_ps(_mm256_setzero_ps(), v));
            let mut s = _mm256_div_ps(v, _mm256_add_ps(one, e));
            if let Some(g) = g {
                s = _mm256_mul_ps(s, _mm256_loadu_ps(g.as_ptr().add(i)));
            }
            _mm256_storeu_ps(y.as_mut_ptr().add(i), s);
            i += 8;
        }
        i
    }
}

/// `__exp2f_data.tab` of glibc's `expf`: `tab[i] = bits(2^(i/32)) - (i << 47)`.
const EXP2F_TAB: [u64; 32] = [
    0x3ff0000000000000,
    0x3fefd9b0d3158574,
    0x3fefb5586cf9890f,
    0x3fef9301d0125b51,
    0x3fef72b83c7d517b,
    0x3fef54873168b9aa,
    0x3fef387a6e756238,
    0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715,
    0x3feef1a7373aa9cb,
    0x3feedea64c123422,
    0x3feece086061892d,
    0x3feebfdad5362a27,
    0x3feeb42b569d4f82,
    0x3feeab07dd485429,
    0x3feea47eb03a5585,
    0x3feea09e667f3bcd,
    0x3fee9f75e8ec5f74,
    0x3feea11473eb0187,
    0x3feea589994cce13,
    0x3feeace5422aa0db,
    0x3feeb737b0cdc5e5,
    0x3feec49182a3f090,
    0x3feed503b23e255d,
    0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47,
    0x3fef199bdd85529c,
    0x3fef3720dcef9069,
    0x3fef5818dcfba487,
    0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da,
    0x3fefd0765b6e4540,
];

/// `x[i] = x[i].exp()` eight lanes at a time: glibc's `expf`
/// (sysdeps/ieee754/flt-32/e_expf.c) step for step as its FMA build runs it
/// (the `z + shift` and `z - kd` steps fused with the scaling of `x`, the
/// polynomial as three FMAs), in f64 lanes. Lanes that take the function's
/// special paths (|x| >= 88, infinities, NaN) and the tail call libm itself.
/// Results equal the scalar call bit for bit (tested over all inputs).
///
/// # Safety
/// AVX-512 F/DQ/VL available.
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx2,fma")]
pub(crate) unsafe fn exp_in_place_512(x: &mut [f32]) {
    unsafe {
        let inv_ln2_n = _mm512_set1_pd(f64::from_bits(0x40471547652b82fe));
        let shift = _mm512_set1_pd(f64::from_bits(0x4338000000000000));
        let c0 = _mm512_set1_pd(f64::from_bits(0x3ebc6af84b912394));
        let c1 = _mm512_set1_pd(f64::from_bits(0x3f2ebfce50fac4f3));
        let c2 = _mm512_set1_pd(f64::from_bits(0x3f962e42ff0c52d6));
        let one = _mm512_set1_pd(1.0);
        let tp = EXP2F_TAB.as_ptr() as *const __m512i;
        let (t0, t1, t2, t3) = (
            _mm512_loadu_si512(tp),
            _mm512_loadu_si512(tp.add(1)),
            _mm512_loadu_si512(tp.add(2)),
            _mm512_loadu_si512(tp.add(3)),
        );
        let n8 = x.len() & !7;
        let p = x.as_mut_ptr();
        let mut i = 0;
        while i < n8 {
            let xv = _mm256_loadu_ps(p.add(i));
            // abstop >= top12(88.0): the special paths.
            let abs = _mm256_and_si256(_mm256_castps_si256(xv), _mm256_set1_epi32(0x7fff_ffff));
            let special = _mm256_cmpgt_epi32_mask(abs, _mm256_set1_epi32(0x42af_ffff));
            let xd = _mm512_cvtps_pd(xv);
            let kd = _mm512_fmadd_pd(inv_ln2_n, xd, shift);
            let ki = _mm512_castpd_si512(kd);
            let kd = _mm512_sub_pd(kd, shift);
            let r = _mm512_fmsub_pd(inv_ln2_n, xd, kd);
            let idx = _mm512_and_si512(ki, _mm512_set1_epi64(31));
            let lo = _mm512_permutex2var_epi64(t0, idx, t1);
            let hi = _mm512_permutex2var_epi64(t2, idx, t3);
            let t =
                _mm512_mask_blend_epi64(_mm512_test_epi64_mask(idx, _mm512_set1_epi64(16)), lo, hi);
            let s = _mm512_castsi512_pd(_mm512_add_epi64(t, _mm512_slli_epi64::<47>(ki)));
            let z = _mm512_fmadd_pd(c0, r, c1);
            let r2 = _mm512_mul_pd(r, r);
            let y = _mm512_fmadd_pd(r, c2, one);
            let y = _mm512_fmadd_pd(z, r2, y);
            let y = _mm512_mul_pd(y, s);
            _mm256_storeu_ps(p.add(i), _mm512_cvtpd_ps(y));
            if special != 0 {
                let mut orig = [0f32; 8];
                _mm256_storeu_ps(orig.as_mut_ptr(), xv);
                for (l, &o) in orig.iter().enumerate() {
                    if special & (1 << l) != 0 {
                        *p.add(i + l) = o.exp();
                    }
                }
            }
            i += 8;
        }
        for v in &mut x[n8..] {
            *v = v.exp();
        }
    }
}

//! Shared x86 building blocks for the tiled kernels, generic over the integer
//! dot instruction (`Arch`): AVX2 `maddubs`+`madd`, or AVX-512 VNNI
//! `vpdpbusd`/`vpdpwssd`. Both give exactly the integer lane sums of
//! `dot_scalar` (for activations in -127..=127, which is all our quantizers
//! produce), so the float arithmetic on top is identical.
//!
//! Everything here is `#[inline(always)]` and only reached from functions
//! compiled with the matching `#[target_feature]`.

use core::arch::x86_64::*;

pub(super) trait Arch {
    /// Whether `vpdpbusd` is available (changes how signed weights are fed).
    const VNNI: bool;

    /// `init + sum over groups of 4 bytes of q[i] * a[i]`, `q` unsigned
    /// (< 128 for the AVX2 path), `a` signed: eight i32 lanes.
    unsafe fn dp_u8i8(init: __m256i, q: __m256i, a: __m256i) -> __m256i;

    /// `acc + p[2m] * s[2m] + p[2m+1] * s[2m+1]` (i16 pairs to i32 lanes).
    unsafe fn dp_i16(acc: __m256i, p: __m256i, s: __m256i) -> __m256i;
}

pub(super) struct Avx2;
pub(super) struct Vnni;

impl Arch for Avx2 {
    const VNNI: bool = false;

    #[inline(always)]
    unsafe fn dp_u8i8(init: __m256i, q: __m256i, a: __m256i) -> __m256i {
        unsafe {
            let p = _mm256_maddubs_epi16(q, a);
            _mm256_add_epi32(init, _mm256_madd_epi16(p, _mm256_set1_epi16(1)))
        }
    }

    #[inline(always)]
    unsafe fn dp_i16(acc: __m256i, p: __m256i, s: __m256i) -> __m256i {
        unsafe { _mm256_add_epi32(acc, _mm256_madd_epi16(p, s)) }
    }
}

impl Arch for Vnni {
    const VNNI: bool = true;

    #[inline(always)]
    unsafe fn dp_u8i8(init: __m256i, q: __m256i, a: __m256i) -> __m256i {
        unsafe { _mm256_dpbusd_epi32(init, q, a) }
    }

    #[inline(always)]
    unsafe fn dp_i16(acc: __m256i, p: __m256i, s: __m256i) -> __m256i {
        unsafe { _mm256_dpwssd_epi32(acc, p, s) }
    }
}

/// ggml's `hsum_float_8`.
#[inline(always)]
pub(super) unsafe fn hsum8(x: __m256) -> f32 {
    unsafe {
        let mut r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
        r = _mm_add_ps(r, _mm_movehl_ps(r, r));
        r = _mm_add_ss(r, _mm_movehdup_ps(r));
        _mm_cvtss_f32(r)
    }
}

/// Signed i8 products through `maddubs`, ggml's `mul_sum_i8_pairs` sign
/// trick: `init + sum(w * a)` per 4 bytes, exact for `a != -128`.
#[inline(always)]
pub(super) unsafe fn dp_i8i8_avx2(init: __m256i, w: __m256i, a: __m256i) -> __m256i {
    unsafe {
        let aw = _mm256_sign_epi8(w, w);
        let sa = _mm256_sign_epi8(a, w);
        Avx2::dp_u8i8(init, aw, sa)
    }
}

/// 32 nibbles of a 32-wide block: low nibbles (elements 0..16) in bytes
/// 0..16, high nibbles in bytes 16..32. Built from a 128-bit broadcast load,
/// a shift and a blend, so it needs no shuffle-port work.
#[inline(always)]
pub(super) unsafe fn nibbles32(p: *const u8) -> __m256i {
    unsafe {
        let x = _mm256_broadcastsi128_si256(_mm_loadu_si128(p as *const __m128i));
        let v = _mm256_blend_epi32::<0b1111_0000>(x, _mm256_srli_epi16(x, 4));
        _mm256_and_si256(v, _mm256_set1_epi8(0x0F))
    }
}

/// ggml's `bytes_from_bits_32`: byte i = 0xFF where bit i of `bits` is set.
#[inline(always)]
pub(super) unsafe fn bytes_from_bits32(bits: u32) -> __m256i {
    unsafe {
        let shuf = _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0x0000_0000_0000_0000,
        );
        let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(bits as i32), shuf);
        let bit_mask = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
        _mm256_cmpeq_epi8(_mm256_or_si256(bytes, bit_mask), _mm256_set1_epi64x(-1))
    }
}

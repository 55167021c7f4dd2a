//! Tiled kernels for the K-quants (Q2_K..Q6_K) against Q8_K activations,
//! generic over the ISA (`Arch`).
//!
//! Per (row, column) pair the arithmetic is exactly `dot_scalar`'s (ggml's
//! AVX2 kernels): per super-block, eight i32 lane sums built chunk by chunk
//! (32 elements) as `scale * (q . a)` through `maddubs` then an i16 dot with
//! the scales, then one or two FMAs into eight f32 lanes, plus the type's
//! min term. A row's super-block is unpacked once per chunk and reused for
//! every column of the tile.

use super::gemm::GemmArgs;
use super::simd::{hsum8, Arch};
use super::tile_q32::{prefetch_enabled, PREFETCH_AHEAD};
use core::arch::x86_64::*;

const A_SIZE: usize = 292;
const A_QS: usize = 4;
const A_BSUMS: usize = 260;

/// A K-quant super-block type.
pub(super) trait Qk {
    const SIZE: usize;
    /// Per-super-block decoded scales (and whatever else chunks need).
    type Meta: Copy;
    /// One chunk's unpacked weights.
    type Chunk: Copy;
    unsafe fn meta(w: *const u8) -> Self::Meta;
    /// Chunk `j` (elements `32j..32j+32`): weights and the i16 scale of each
    /// `maddubs` pair.
    unsafe fn chunk(w: *const u8, m: &Self::Meta, j: usize) -> (Self::Chunk, __m256i);
    /// The i16 pair products of a chunk with 32 activation bytes.
    unsafe fn pairs(q: Self::Chunk, a: __m256i) -> __m256i;
    /// The eight i32 lane sums of one super-block against each of `C`
    /// activation blocks (at `a[c]`, their quants). The default goes chunk
    /// by chunk; types override it to share loads between chunks.
    #[inline(always)]
    unsafe fn sumi<A: Arch, const C: usize>(
        w: *const u8,
        m: &Self::Meta,
        a: &[*const u8; C],
    ) -> [__m256i; C] {
        unsafe {
            let mut sumi = [_mm256_setzero_si256(); C];
            for j in 0..8 {
                let (q, sc) = Self::chunk(w, m, j);
                for c in 0..C {
                    sumi[c] = A::dp_i16(sumi[c], Self::pairs(q, load256(a[c].add(32 * j))), sc);
                }
            }
            sumi
        }
    }
    /// Folds one super-block's lane sums into the pair's accumulators:
    /// `acc` (eight lanes) and `extra` (the min term, type-specific).
    unsafe fn finish(
        w: *const u8,
        m: &Self::Meta,
        a: *const u8,
        sumi: __m256i,
        acc: &mut __m256,
        extra: &mut __m128,
    );
    /// The pair's result from its accumulators.
    unsafe fn result(acc: __m256, extra: __m128) -> f32;
}

#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    unsafe {
        let h = u16::from_le_bytes([*p, *p.add(1)]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
    }
}

#[inline(always)]
unsafe fn f32_at(p: *const u8) -> f32 {
    unsafe { (p as *const f32).read_unaligned() }
}

#[inline(always)]
unsafe fn load256(p: *const u8) -> __m256i {
    unsafe { _mm256_loadu_si256(p as *const __m256i) }
}

/// i16 vector: `lo` in the first 8 entries, `hi` in the last 8.
#[inline(always)]
unsafe fn split_scale(lo: i16, hi: i16) -> __m256i {
    unsafe { _mm256_setr_m128i(_mm_set1_epi16(lo), _mm_set1_epi16(hi)) }
}

/// Broadcast of i16 element `i` (0..8) of each 128-bit lane (ggml's
/// `get_scale_shuffle_k4`).
#[inline(always)]
unsafe fn bcast16(v: __m256i, i: usize) -> __m256i {
    unsafe {
        let lo = (2 * i) as i16;
        _mm256_shuffle_epi8(v, _mm256_set1_epi16(lo | ((lo + 1) << 8)))
    }
}

/// Q6_K's per-16 scales for chunk `j`: i8 scale `2j` for the first eight
/// i16 pairs, `2j+1` for the last eight (ggml's `get_scale_shuffle`).
#[inline(always)]
unsafe fn q6_scales(sc: __m128i, j: usize) -> __m256i {
    unsafe {
        let (a, b) = (
            (2 * j) as i64 * 0x0101_0101_0101_0101,
            (2 * j + 1) as i64 * 0x0101_0101_0101_0101,
        );
        _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc, _mm_set_epi64x(b, a)))
    }
}

/// Sum of four i32 lanes (exact, wrapping).
#[inline(always)]
unsafe fn hsum_i32_4(v: __m128i) -> i32 {
    unsafe {
        let s = _mm_add_epi32(v, _mm_unpackhi_epi64(v, v));
        _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s)))
    }
}

/// The 16 bsums of an activation block, i16.
#[inline(always)]
unsafe fn bsums(a: *const u8) -> __m256i {
    unsafe { load256(a.add(A_BSUMS)) }
}

/// Q4_K/Q5_K 6-bit scales and mins (ggml's `utmp` unpacking): scales in
/// bytes 0..8, mins in bytes 8..16, as four little-endian words.
#[inline(always)]
unsafe fn k4_scales_mins(p: *const u8) -> [u32; 4] {
    unsafe {
        let rd = |o: usize| (p.add(o) as *const u32).read_unaligned();
        let (k1, k2, k3) = (0x3f3f_3f3fu32, 0x0f0f_0f0fu32, 0x0303_0303u32);
        let mut u = [rd(0), rd(4), rd(8), 0];
        u[3] = ((u[2] >> 4) & k2) | (((u[1] >> 6) & k3) << 4);
        let uaux = u[1] & k1;
        u[1] = (u[2] & k2) | (((u[0] >> 6) & k3) << 4);
        u[2] = uaux;
        u[0] &= k1;
        u
    }
}

/// Q4_K/Q5_K scales as i16 (the eight in each 128-bit lane) and mins as i16.
#[inline(always)]
unsafe fn k4_meta(p: *const u8) -> (__m256i, __m128i) {
    unsafe {
        let u = k4_scales_mins(p);
        // Built from registers: a store then a vector load would stall on
        // store forwarding.
        let v = _mm_set_epi32(u[3] as i32, u[2] as i32, u[1] as i32, u[0] as i32);
        let sc = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(v));
        (sc, _mm_cvtepu8_epi16(_mm_srli_si128::<8>(v)))
    }
}

pub(super) struct Q2K;
pub(super) struct Q3K;
pub(super) struct Q4K;
pub(super) struct Q5K;
pub(super) struct Q6K;

impl Qk for Q2K {
    const SIZE: usize = 84;
    /// Scales (low nibbles) as i16, then mins (high nibbles) as i16.
    type Meta = ([i16; 16], __m256i);
    type Chunk = __m256i;

    #[inline(always)]
    unsafe fn meta(w: *const u8) -> Self::Meta {
        unsafe {
            let raw = _mm_loadu_si128(w as *const __m128i);
            let mins =
                _mm256_cvtepi8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(0xF)));
            let mut sc = [0i16; 16];
            for (j, s) in sc.iter_mut().enumerate() {
                *s = (*w.add(j) & 0xF) as i16;
            }
            (sc, mins)
        }
    }

    #[inline(always)]
    unsafe fn chunk(w: *const u8, m: &Self::Meta, j: usize) -> (__m256i, __m256i) {
        unsafe {
            let (half, t) = (j / 4, j % 4);
            let bits = load256(w.add(16 + 32 * half));
            let q = _mm256_and_si256(
                _mm256_srl_epi16(bits, _mm_cvtsi32_si128(2 * t as i32)),
                _mm256_set1_epi8(3),
            );
            (q, split_scale(m.0[2 * j], m.0[2 * j + 1]))
        }
    }

    #[inline(always)]
    unsafe fn pairs(q: __m256i, a: __m256i) -> __m256i {
        unsafe { _mm256_maddubs_epi16(q, a) }
    }

    #[inline(always)]
    unsafe fn finish(
        w: *const u8,
        m: &Self::Meta,
        a: *const u8,
        sumi: __m256i,
        acc: &mut __m256,
        _: &mut __m128,
    ) {
        unsafe {
            let ad = f32_at(a);
            let d = ad * f16_at(w.add(80));
            let dmin = -ad * f16_at(w.add(82));
            let prod = _mm256_madd_epi16(m.1, bsums(a));
            *acc = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(prod), *acc);
            *acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), *acc);
        }
    }

    #[inline(always)]
    unsafe fn result(acc: __m256, _: __m128) -> f32 {
        unsafe { hsum8(acc) }
    }
}

impl Qk for Q3K {
    const SIZE: usize = 110;
    /// Signed scales as i16, and the high-bit mask bytes.
    type Meta = ([i16; 16], __m256i);
    /// Low two bits, and 4 where the high bit is clear (ggml subtracts it).
    type Chunk = (__m256i, __m256i);

    #[inline(always)]
    unsafe fn meta(w: *const u8) -> Self::Meta {
        unsafe {
            let mut raw = [0u8; 12];
            core::ptr::copy_nonoverlapping(w.add(96), raw.as_mut_ptr(), 12);
            let s8 = super::blocks::q3k_scales(&raw);
            let mut sc = [0i16; 16];
            for (o, s) in sc.iter_mut().zip(s8) {
                *o = s as i16;
            }
            (sc, load256(w))
        }
    }

    #[inline(always)]
    unsafe fn chunk(w: *const u8, m: &Self::Meta, j: usize) -> (Self::Chunk, __m256i) {
        unsafe {
            let (half, t) = (j / 4, j % 4);
            let bits = load256(w.add(32 + 32 * half));
            let low = _mm256_and_si256(
                _mm256_srl_epi16(bits, _mm_cvtsi32_si128(2 * t as i32)),
                _mm256_set1_epi8(3),
            );
            let bit = 4 * half + t;
            let clear = _mm256_andnot_si256(m.1, _mm256_set1_epi8((1u8 << bit) as i8));
            let high = _mm256_slli_epi16(_mm256_srl_epi16(clear, _mm_cvtsi32_si128(bit as i32)), 2);
            ((low, high), split_scale(m.0[2 * j], m.0[2 * j + 1]))
        }
    }

    #[inline(always)]
    unsafe fn pairs(q: Self::Chunk, a: __m256i) -> __m256i {
        unsafe { _mm256_sub_epi16(_mm256_maddubs_epi16(q.0, a), _mm256_maddubs_epi16(q.1, a)) }
    }

    #[inline(always)]
    unsafe fn finish(
        w: *const u8,
        _: &Self::Meta,
        a: *const u8,
        sumi: __m256i,
        acc: &mut __m256,
        _: &mut __m128,
    ) {
        unsafe {
            let d = f32_at(a) * f16_at(w.add(108));
            *acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), *acc);
        }
    }

    #[inline(always)]
    unsafe fn result(acc: __m256, _: __m128) -> f32 {
        unsafe { hsum8(acc) }
    }
}

impl Qk for Q4K {
    const SIZE: usize = 144;
    /// Scales and mins (see `k4_meta`).
    type Meta = (__m256i, __m128i);
    type Chunk = __m256i;

    #[inline(always)]
    unsafe fn meta(w: *const u8) -> Self::Meta {
        unsafe { k4_meta(w.add(4)) }
    }

    #[inline(always)]
    unsafe fn chunk(w: *const u8, m: &Self::Meta, j: usize) -> (__m256i, __m256i) {
        unsafe {
            let bits = load256(w.add(16 + 32 * (j / 2)));
            let q = if j.is_multiple_of(2) {
                bits
            } else {
                _mm256_srli_epi16(bits, 4)
            };
            (_mm256_and_si256(q, _mm256_set1_epi8(0xF)), bcast16(m.0, j))
        }
    }

    #[inline(always)]
    unsafe fn pairs(q: __m256i, a: __m256i) -> __m256i {
        unsafe { _mm256_maddubs_epi16(q, a) }
    }

    #[inline(always)]
    unsafe fn sumi<A: Arch, const C: usize>(
        w: *const u8,
        m: &Self::Meta,
        a: &[*const u8; C],
    ) -> [__m256i; C] {
        unsafe {
            let sc = m.0;
            let m4 = _mm256_set1_epi8(0xF);
            let mut sumi = [_mm256_setzero_si256(); C];
            for g in 0..4 {
                let bits = load256(w.add(16 + 32 * g));
                let lo = _mm256_and_si256(bits, m4);
                let hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
                let (sl, sh) = (bcast16(sc, 2 * g), bcast16(sc, 2 * g + 1));
                for c in 0..C {
                    let pl = _mm256_maddubs_epi16(lo, load256(a[c].add(64 * g)));
                    let ph = _mm256_maddubs_epi16(hi, load256(a[c].add(64 * g + 32)));
                    sumi[c] = A::dp_i16(A::dp_i16(sumi[c], pl, sl), ph, sh);
                }
            }
            sumi
        }
    }

    /// llama.cpp's repacked-Q4_K arithmetic (see `dot_scalar::q4_k`): lane 0
    /// of `e` accumulates the super-block sums, lane 1 the min terms.
    #[inline(always)]
    unsafe fn finish(
        w: *const u8,
        m: &Self::Meta,
        a: *const u8,
        sumi: __m256i,
        _acc: &mut __m256,
        e: &mut __m128,
    ) {
        unsafe {
            let ad = f32_at(a);
            let bs = bsums(a);
            let q8s = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
            let imin = hsum_i32_4(_mm_madd_epi16(m.1, q8s));
            let s = _mm_add_epi32(
                _mm256_castsi256_si128(sumi),
                _mm256_extracti128_si256(sumi, 1),
            );
            let isum = hsum_i32_4(s);
            let d = _mm_setr_ps(f16_at(w) * ad, f16_at(w.add(2)) * ad, 0.0, 0.0);
            let v = _mm_setr_ps(isum as f32, imin as f32, 0.0, 0.0);
            *e = _mm_fmadd_ps(v, d, *e);
        }
    }

    #[inline(always)]
    unsafe fn result(_acc: __m256, e: __m128) -> f32 {
        unsafe { _mm_cvtss_f32(e) - _mm_cvtss_f32(_mm_movehdup_ps(e)) }
    }
}

impl Qk for Q5K {
    const SIZE: usize = 176;
    /// Scales and mins (see `k4_meta`), and the high-bit bytes.
    type Meta = (__m256i, __m128i, __m256i);
    type Chunk = __m256i;

    #[inline(always)]
    unsafe fn meta(w: *const u8) -> Self::Meta {
        unsafe {
            let (sc, mins) = k4_meta(w.add(4));
            (sc, mins, load256(w.add(16)))
        }
    }

    #[inline(always)]
    unsafe fn chunk(w: *const u8, m: &Self::Meta, j: usize) -> (__m256i, __m256i) {
        unsafe {
            let bits = load256(w.add(48 + 32 * (j / 2)));
            let low = if j.is_multiple_of(2) {
                bits
            } else {
                _mm256_srli_epi16(bits, 4)
            };
            let low = _mm256_and_si256(low, _mm256_set1_epi8(0xF));
            let hb = _mm256_and_si256(m.2, _mm256_set1_epi8((1u8 << j) as i8));
            let high = _mm256_slli_epi16(_mm256_srl_epi16(hb, _mm_cvtsi32_si128(j as i32)), 4);
            (_mm256_add_epi8(low, high), bcast16(m.0, j))
        }
    }

    #[inline(always)]
    unsafe fn pairs(q: __m256i, a: __m256i) -> __m256i {
        unsafe { _mm256_maddubs_epi16(q, a) }
    }

    #[inline(always)]
    unsafe fn sumi<A: Arch, const C: usize>(
        w: *const u8,
        m: &Self::Meta,
        a: &[*const u8; C],
    ) -> [__m256i; C] {
        unsafe {
            let sc = m.0;
            let m4 = _mm256_set1_epi8(0xF);
            let mut sumi = [_mm256_setzero_si256(); C];
            for g in 0..4 {
                let bits = load256(w.add(48 + 32 * g));
                let hb0 = _mm256_and_si256(m.2, _mm256_set1_epi8((1u8 << (2 * g)) as i8));
                let hb1 = _mm256_and_si256(m.2, _mm256_set1_epi8((2u8 << (2 * g)) as i8));
                // 16 where the high bit is set: compare against zero, invert.
                let h0 = _mm256_andnot_si256(
                    _mm256_cmpeq_epi8(hb0, _mm256_setzero_si256()),
                    _mm256_set1_epi8(16),
                );
                let h1 = _mm256_andnot_si256(
                    _mm256_cmpeq_epi8(hb1, _mm256_setzero_si256()),
                    _mm256_set1_epi8(16),
                );
                let lo = _mm256_add_epi8(_mm256_and_si256(bits, m4), h0);
                let hi = _mm256_add_epi8(_mm256_and_si256(_mm256_srli_epi16(bits, 4), m4), h1);
                let (sl, sh) = (bcast16(sc, 2 * g), bcast16(sc, 2 * g + 1));
                for c in 0..C {
                    let pl = _mm256_maddubs_epi16(lo, load256(a[c].add(64 * g)));
                    let ph = _mm256_maddubs_epi16(hi, load256(a[c].add(64 * g + 32)));
                    sumi[c] = A::dp_i16(A::dp_i16(sumi[c], pl, sl), ph, sh);
                }
            }
            sumi
        }
    }

    #[inline(always)]
    unsafe fn finish(
        w: *const u8,
        m: &Self::Meta,
        a: *const u8,
        sumi: __m256i,
        acc: &mut __m256,
        summs: &mut __m128,
    ) {
        unsafe {
            let ad = f32_at(a);
            let d = ad * f16_at(w);
            let dmin = -ad * f16_at(w.add(2));
            let bs = bsums(a);
            let q8s = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
            let prod = _mm_madd_epi16(m.1, q8s);
            let z = _mm_setzero_si128();
            let hsum = _mm_cvtsi128_si32(_mm_hadd_epi32(_mm_hadd_epi32(prod, z), z));
            *summs = _mm_fmadd_ss(_mm_set_ss(dmin), _mm_set_ss(hsum as f32), *summs);
            *acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), *acc);
        }
    }

    #[inline(always)]
    unsafe fn result(acc: __m256, summs: __m128) -> f32 {
        unsafe { hsum8(acc) + _mm_cvtss_f32(summs) }
    }
}

impl Qk for Q6K {
    const SIZE: usize = 210;
    /// The 16 signed scale bytes.
    type Meta = __m128i;
    type Chunk = __m256i;

    #[inline(always)]
    unsafe fn meta(w: *const u8) -> Self::Meta {
        unsafe { _mm_loadu_si128(w.add(192) as *const __m128i) }
    }

    #[inline(always)]
    unsafe fn chunk(w: *const u8, m: &Self::Meta, j: usize) -> (__m256i, __m256i) {
        unsafe {
            let (half, t) = (j / 4, j % 4);
            let ql = load256(w.add(64 * half + 32 * (t & 1)));
            let low = if t < 2 { ql } else { _mm256_srli_epi16(ql, 4) };
            let low = _mm256_and_si256(low, _mm256_set1_epi8(0xF));
            let qh = load256(w.add(128 + 32 * half));
            let hb = _mm256_and_si256(qh, _mm256_set1_epi8((3u8 << (2 * t)) as i8));
            // Move bits 2t..2t+1 to bits 4..5.
            let high = if t < 2 {
                _mm256_sll_epi16(hb, _mm_cvtsi32_si128(4 - 2 * t as i32))
            } else {
                _mm256_srl_epi16(hb, _mm_cvtsi32_si128(2 * t as i32 - 4))
            };
            (_mm256_or_si256(low, high), q6_scales(*m, j))
        }
    }

    #[inline(always)]
    unsafe fn pairs(q: __m256i, a: __m256i) -> __m256i {
        unsafe { _mm256_maddubs_epi16(q, a) }
    }

    #[inline(always)]
    unsafe fn sumi<A: Arch, const C: usize>(
        w: *const u8,
        m: &Self::Meta,
        a: &[*const u8; C],
    ) -> [__m256i; C] {
        unsafe {
            let sc = *m;
            let m4 = _mm256_set1_epi8(0xF);
            let mut sumi = [_mm256_setzero_si256(); C];
            for h in 0..2 {
                let b1 = load256(w.add(64 * h));
                let b2 = load256(w.add(64 * h + 32));
                let hb = load256(w.add(128 + 32 * h));
                let q = [
                    _mm256_or_si256(
                        _mm256_and_si256(b1, m4),
                        _mm256_slli_epi16(_mm256_and_si256(hb, _mm256_set1_epi8(3)), 4),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(b2, m4),
                        _mm256_slli_epi16(_mm256_and_si256(hb, _mm256_set1_epi8(12)), 2),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(b1, 4), m4),
                        _mm256_and_si256(hb, _mm256_set1_epi8(48)),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(b2, 4), m4),
                        _mm256_srli_epi16(_mm256_and_si256(hb, _mm256_set1_epi8(-64)), 2),
                    ),
                ];
                for (t, qt) in q.iter().enumerate() {
                    let s_t = q6_scales(sc, 4 * h + t);
                    for c in 0..C {
                        let p = _mm256_maddubs_epi16(*qt, load256(a[c].add(128 * h + 32 * t)));
                        sumi[c] = A::dp_i16(sumi[c], p, s_t);
                    }
                }
            }
            sumi
        }
    }

    #[inline(always)]
    unsafe fn finish(
        w: *const u8,
        m: &Self::Meta,
        a: *const u8,
        sumi: __m256i,
        acc: &mut __m256,
        _: &mut __m128,
    ) {
        unsafe {
            let d = f32_at(a) * f16_at(w.add(208));
            let sc = _mm256_cvtepi8_epi16(*m);
            let sub = _mm256_slli_epi32(_mm256_madd_epi16(bsums(a), sc), 5);
            let sumi = _mm256_sub_epi32(sumi, sub);
            *acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), *acc);
        }
    }

    #[inline(always)]
    unsafe fn result(acc: __m256, _: __m128) -> f32 {
        unsafe { hsum8(acc) }
    }
}

/// Gemm driver: one row at a time against tiles of `CT` columns (one column
/// at a time for the remainder).
///
/// # Safety
/// Buffers validated by `Kernels::gemm`; the features of `A` available.
#[inline(always)]
pub(super) unsafe fn gemm<W: Qk, A: Arch, const CT: usize>(args: &GemmArgs<'_>, out: &mut [f32]) {
    unsafe {
        let nct = args.nc / CT * CT;
        for r in 0..args.nr {
            let w = args.w_row(r).as_ptr();
            let mut c0 = 0;
            while c0 < nct {
                tile::<W, A, CT>(args, w, r, c0, out);
                c0 += CT;
            }
            for c in nct..args.nc {
                tile::<W, A, 1>(args, w, r, c, out);
            }
        }
    }
}

#[inline(always)]
unsafe fn tile<W: Qk, A: Arch, const C: usize>(
    args: &GemmArgs<'_>,
    w: *const u8,
    r: usize,
    c0: usize,
    out: &mut [f32],
) {
    unsafe {
        let mut ap = [core::ptr::null::<u8>(); C];
        for (c, p) in ap.iter_mut().enumerate() {
            *p = args.act_row(c0 + c).as_ptr();
        }
        let mut acc = [_mm256_setzero_ps(); C];
        let mut extra = [_mm_setzero_ps(); C];
        // Decode streams weights from memory: prefetch ahead (see
        // `tile_q32`); rows are contiguous, so ahead is linear.
        let pf = C == 1 && args.w_stride == args.wb && prefetch_enabled();
        for b in 0..args.nb {
            let wb = w.add(b * W::SIZE);
            if pf {
                let p = wb.wrapping_add(PREFETCH_AHEAD);
                let mut o = 0;
                while o < W::SIZE {
                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(o) as *const i8);
                    o += 64;
                }
            }
            let meta = W::meta(wb);
            let mut aq = [core::ptr::null::<u8>(); C];
            for c in 0..C {
                aq[c] = ap[c].add(b * A_SIZE + A_QS);
            }
            let sumi = W::sumi::<A, C>(wb, &meta, &aq);
            for c in 0..C {
                W::finish(
                    wb,
                    &meta,
                    ap[c].add(b * A_SIZE),
                    sumi[c],
                    &mut acc[c],
                    &mut extra[c],
                );
            }
        }
        for c in 0..C {
            out[(c0 + c) * args.out_stride + r] = W::result(acc[c], extra[c]);
        }
    }
}

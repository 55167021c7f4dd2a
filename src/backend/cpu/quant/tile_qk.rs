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

/// The 16 bsums of an activation block, i16.
#[inline(always)]
unsafe fn bsums(a: *const u8) -> __m256i {
    unsafe { load256(a.add(A_BSUMS)) }
}

/// Q4_K/Q5_K 6-bit scales and mins (ggml's `utmp` unpacking): scales in
/// bytes 0..8, mins in bytes 8..16.
#[inline(always)]
unsafe fn k4_scales_mins(p: *const u8) -> [u8; 16] {
    unsafe {
        let rd =
            |o: usize| u32::from_le_bytes([*p.add(o), *p.add(o + 1), *p.add(o + 2), *p.add(o + 3)]);
        let (k1, k2, k3) = (0x3f3f_3f3fu32, 0x0f0f_0f0fu32, 0x0303_0303u32);
        let mut u = [rd(0), rd(4), rd(8), 0];
        u[3] = ((u[2] >> 4) & k2) | (((u[1] >> 6) & k3) << 4);
        let uaux = u[1] & k1;
        u[1] = (u[2] & k2) | (((u[0] >> 6) & k3) << 4);
        u[2] = uaux;
        u[0] &= k1;
        let mut out = [0u8; 16];
        for (i, w) in u.iter().enumerate() {
            out[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
        }
        out
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
    /// Scales (i16 each), and the 8 mins as i16 in a 128-bit vector.
    type Meta = ([i16; 8], __m128i);
    type Chunk = __m256i;

    #[inline(always)]
    unsafe fn meta(w: *const u8) -> Self::Meta {
        unsafe {
            let sm = k4_scales_mins(w.add(4));
            let mut sc = [0i16; 8];
            for (o, s) in sc.iter_mut().zip(&sm[..8]) {
                *o = *s as i16;
            }
            let mins = _mm_cvtepu8_epi16(_mm_loadl_epi64(sm[8..].as_ptr() as *const __m128i));
            (sc, mins)
        }
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
            (
                _mm256_and_si256(q, _mm256_set1_epi8(0xF)),
                _mm256_set1_epi16(m.0[j]),
            )
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
        acc_m: &mut __m128,
    ) {
        unsafe {
            let ad = f32_at(a);
            let d = ad * f16_at(w);
            let dmin = -ad * f16_at(w.add(2));
            let bs = bsums(a);
            let q8s = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
            let prod = _mm_madd_epi16(m.1, q8s);
            *acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), *acc_m);
            *acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), *acc);
        }
    }

    #[inline(always)]
    unsafe fn result(acc: __m256, acc_m: __m128) -> f32 {
        unsafe {
            let m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
            let m = _mm_add_ss(m, _mm_movehdup_ps(m));
            hsum8(acc) + _mm_cvtss_f32(m)
        }
    }
}

impl Qk for Q5K {
    const SIZE: usize = 176;
    /// Scales, mins (128-bit i16), and the high-bit bytes.
    type Meta = ([i16; 8], __m128i, __m256i);
    type Chunk = __m256i;

    #[inline(always)]
    unsafe fn meta(w: *const u8) -> Self::Meta {
        unsafe {
            let sm = k4_scales_mins(w.add(4));
            let mut sc = [0i16; 8];
            for (o, s) in sc.iter_mut().zip(&sm[..8]) {
                *o = *s as i16;
            }
            let mins = _mm_cvtepu8_epi16(_mm_loadl_epi64(sm[8..].as_ptr() as *const __m128i));
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
            (_mm256_add_epi8(low, high), _mm256_set1_epi16(m.0[j]))
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
    /// The 16 signed scales as i16.
    type Meta = [i16; 16];
    type Chunk = __m256i;

    #[inline(always)]
    unsafe fn meta(w: *const u8) -> Self::Meta {
        unsafe {
            let mut sc = [0i16; 16];
            for (j, s) in sc.iter_mut().enumerate() {
                *s = *w.add(192 + j) as i8 as i16;
            }
            sc
        }
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
            (
                _mm256_or_si256(low, high),
                split_scale(m[2 * j], m[2 * j + 1]),
            )
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
            let d = f32_at(a) * f16_at(w.add(208));
            let sc = _mm256_loadu_si256(m.as_ptr() as *const __m256i);
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
        for b in 0..args.nb {
            let wb = w.add(b * W::SIZE);
            let meta = W::meta(wb);
            let mut sumi = [_mm256_setzero_si256(); C];
            for j in 0..8 {
                let (q, sc) = W::chunk(wb, &meta, j);
                for c in 0..C {
                    let a = load256(ap[c].add(b * A_SIZE + A_QS + 32 * j));
                    sumi[c] = A::dp_i16(sumi[c], W::pairs(q, a), sc);
                }
            }
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

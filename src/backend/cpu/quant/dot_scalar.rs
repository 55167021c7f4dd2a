//! Portable dot products: the specification every SIMD kernel must match bit
//! for bit.
//!
//! They follow ggml's x86 `ggml_vec_dot_*` (arch/x86/quants.c, as GCC builds
//! it on an AVX2/AVX-512 machine: with FMA contraction) rather than ggml's
//! scalar `_generic` code, so that every ISA here gives the same bits and
//! those are llama.cpp's. ggml keeps eight f32 accumulator lanes: lane `k`
//! receives, per block, the integer sum over the elements `e` with
//! `(e % 32) / 4 == k` (the i32 lanes of `maddubs`/`madd`/`dpbusd` over 32
//! bytes), scaled by one fused multiply-add; the lanes are summed at the end
//! in `hsum_float_8` order. Integer work is exact, so any SIMD layout that
//! produces the same eight lane sums per block gives identical results.
//!
//! Q4_K is the exception: it follows the kernel llama.cpp actually runs for
//! it (see `q4_k`).
//!
//! `w` and `a` hold exactly `nb` blocks each (checked by the caller).

use super::blocks::*;

/// Eight f32 accumulator lanes, as one `__m256` in ggml.
pub(super) type Lanes = [f32; 8];

/// ggml's `hsum_float_8`.
#[inline(always)]
pub(super) fn hsum8(a: &Lanes) -> f32 {
    let t = [a[4] + a[0], a[5] + a[1], a[6] + a[2], a[7] + a[3]];
    let u0 = t[0] + t[2];
    let u1 = t[1] + t[3];
    u0 + u1
}

#[inline(always)]
fn fma_lanes(acc: &mut Lanes, d: f32, l: &[i32; 8]) {
    for k in 0..8 {
        acc[k] = d.mul_add(l[k] as f32, acc[k]);
    }
}

#[inline(always)]
fn i8at(b: &[u8], i: usize) -> i32 {
    b[i] as i8 as i32
}

pub(super) fn q4_0(nb: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut acc = [0f32; 8];
    for i in 0..nb {
        let wb = &w[i * q4_0::SIZE..(i + 1) * q4_0::SIZE];
        let ab = &a[i * q8_0::SIZE..(i + 1) * q8_0::SIZE];
        let d = rd_f16(wb, q4_0::D) * rd_f16(ab, q8_0::D);
        let mut l = [0i32; 8];
        for e in 0..32 {
            let q = nibble(&wb[q4_0::QS..], e) as i32 - 8;
            l[e / 4] += q * i8at(ab, q8_0::QS + e);
        }
        fma_lanes(&mut acc, d, &l);
    }
    hsum8(&acc)
}

pub(super) fn q4_1(nb: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut acc = [0f32; 8];
    let mut summs = 0f32;
    for i in 0..nb {
        let wb = &w[i * q4_1::SIZE..(i + 1) * q4_1::SIZE];
        let ab = &a[i * q8_1::SIZE..(i + 1) * q8_1::SIZE];
        let d = rd_f16(wb, q4_1::D) * rd_f16(ab, q8_1::D);
        summs = rd_f16(wb, q4_1::M).mul_add(rd_f16(ab, q8_1::S), summs);
        let mut l = [0i32; 8];
        for e in 0..32 {
            let q = nibble(&wb[q4_1::QS..], e) as i32;
            l[e / 4] += q * i8at(ab, q8_1::QS + e);
        }
        fma_lanes(&mut acc, d, &l);
    }
    hsum8(&acc) + summs
}

#[inline(always)]
fn q5_high(qh: u32, e: usize) -> u8 {
    (((qh >> e) & 1) << 4) as u8
}

pub(super) fn q5_0(nb: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut acc = [0f32; 8];
    for i in 0..nb {
        let wb = &w[i * q5_0::SIZE..(i + 1) * q5_0::SIZE];
        let ab = &a[i * q8_0::SIZE..(i + 1) * q8_0::SIZE];
        let d = rd_f16(wb, q5_0::D) * rd_f16(ab, q8_0::D);
        let qh = rd_u32(wb, q5_0::QH);
        let mut l = [0i32; 8];
        for e in 0..32 {
            let q = (nibble(&wb[q5_0::QS..], e) | q5_high(qh, e)) as i32 - 16;
            l[e / 4] += q * i8at(ab, q8_0::QS + e);
        }
        fma_lanes(&mut acc, d, &l);
    }
    hsum8(&acc)
}

pub(super) fn q5_1(nb: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut acc = [0f32; 8];
    let mut summs = 0f32;
    for i in 0..nb {
        let wb = &w[i * q5_1::SIZE..(i + 1) * q5_1::SIZE];
        let ab = &a[i * q8_1::SIZE..(i + 1) * q8_1::SIZE];
        let d = rd_f16(wb, q5_1::D) * rd_f16(ab, q8_1::D);
        summs = rd_f16(wb, q5_1::M).mul_add(rd_f16(ab, q8_1::S), summs);
        let qh = rd_u32(wb, q5_1::QH);
        let mut l = [0i32; 8];
        for e in 0..32 {
            let q = (nibble(&wb[q5_1::QS..], e) | q5_high(qh, e)) as i32;
            l[e / 4] += q * i8at(ab, q8_1::QS + e);
        }
        fma_lanes(&mut acc, d, &l);
    }
    hsum8(&acc) + summs
}

pub(super) fn q8_0(nb: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut acc = [0f32; 8];
    for i in 0..nb {
        let wb = &w[i * q8_0::SIZE..(i + 1) * q8_0::SIZE];
        let ab = &a[i * q8_0::SIZE..(i + 1) * q8_0::SIZE];
        let d = rd_f16(wb, q8_0::D) * rd_f16(ab, q8_0::D);
        let mut l = [0i32; 8];
        for e in 0..32 {
            l[e / 4] += i8at(wb, q8_0::QS + e) * i8at(ab, q8_0::QS + e);
        }
        fma_lanes(&mut acc, d, &l);
    }
    hsum8(&acc)
}

/// The Q8_K block's `bsums`, i16 each.
#[inline(always)]
fn bsums(ab: &[u8]) -> [i32; 16] {
    let mut s = [0i32; 16];
    for (j, v) in s.iter_mut().enumerate() {
        *v = rd_i16(ab, q8_k::BSUMS + 2 * j) as i32;
    }
    s
}

pub(super) fn q2_k(nb: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut acc = [0f32; 8];
    for i in 0..nb {
        let wb = &w[i * q2_k::SIZE..(i + 1) * q2_k::SIZE];
        let ab = &a[i * q8_k::SIZE..(i + 1) * q8_k::SIZE];
        let ad = rd_f32(ab, q8_k::D);
        let d = ad * rd_f16(wb, q2_k::D);
        let dmin = -ad * rd_f16(wb, q2_k::DMIN);
        let sc = &wb[q2_k::SCALES..q2_k::SCALES + 16];
        let bs = bsums(ab);
        let mut m = [0i32; 8];
        for k in 0..8 {
            m[k] =
                (sc[2 * k] >> 4) as i32 * bs[2 * k] + (sc[2 * k + 1] >> 4) as i32 * bs[2 * k + 1];
        }
        fma_lanes(&mut acc, dmin, &m);
        let mut l = [0i32; 8];
        for e in 0..QK_K {
            // Element e = 128*half + 32*t + b sits in byte b of the half, bits 2t.
            let (half, t, b) = (e / 128, (e % 128) / 32, e % 32);
            let q = ((wb[q2_k::QS + 32 * half + b] >> (2 * t)) & 3) as i32;
            let s = (sc[e / 16] & 0xF) as i32;
            l[b / 4] += s * q * i8at(ab, q8_k::QS + e);
        }
        fma_lanes(&mut acc, d, &l);
    }
    hsum8(&acc)
}

pub(super) fn q3_k(nb: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut acc = [0f32; 8];
    for i in 0..nb {
        let wb = &w[i * q3_k::SIZE..(i + 1) * q3_k::SIZE];
        let ab = &a[i * q8_k::SIZE..(i + 1) * q8_k::SIZE];
        let d = rd_f32(ab, q8_k::D) * rd_f16(wb, q3_k::D);
        let sc = q3k_scales(&wb[q3_k::SCALES..q3_k::SCALES + 12]);
        let mut l = [0i32; 8];
        for e in 0..QK_K {
            let (half, t, b) = (e / 128, (e % 128) / 32, e % 32);
            let low = ((wb[q3_k::QS + 32 * half + b] >> (2 * t)) & 3) as i32;
            let hbit = (wb[q3_k::HMASK + b] >> (4 * half + t)) & 1;
            let q = low - if hbit != 0 { 0 } else { 4 };
            l[b / 4] += sc[e / 16] as i32 * q * i8at(ab, q8_k::QS + e);
        }
        fma_lanes(&mut acc, d, &l);
    }
    hsum8(&acc)
}

/// The 8 scales and 8 mins of a Q4_K/Q5_K block.
#[inline(always)]
fn k4_scales_mins(sc: &[u8]) -> ([i32; 8], [i32; 8]) {
    let mut s = [0i32; 8];
    let mut m = [0i32; 8];
    for j in 0..8 {
        let (a, b) = scale_min_k4(j, sc);
        s[j] = a as i32;
        m[j] = b as i32;
    }
    (s, m)
}

/// Pairwise sums of the 16 bsums as ggml's `_mm_hadd_epi16` makes them
/// (i16 wrap-around included).
#[inline(always)]
fn bsums_pairs(bs: &[i32; 16]) -> [i32; 8] {
    let mut p = [0i32; 8];
    for j in 0..8 {
        p[j] = (bs[2 * j] as i16).wrapping_add(bs[2 * j + 1] as i16) as i32;
    }
    p
}

/// Q4_K as llama.cpp really computes it on x86: its weights are repacked
/// eight rows at a time (`q4_K_8x8`, used whenever a tensor's row count is a
/// multiple of 8) and the decode kernel `ggml_gemv_q4_K_8x8_q8_K` takes one
/// FMA per super-block on the whole super-block's integer sum, with the min
/// term in a second accumulator subtracted at the end. (`ggml_vec_dot_q4_K`'s
/// eight-lane form is not what runs.)
pub(super) fn q4_k(nb: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut acc = 0f32;
    let mut acc_min = 0f32;
    for i in 0..nb {
        let wb = &w[i * q4_k::SIZE..(i + 1) * q4_k::SIZE];
        let ab = &a[i * q8_k::SIZE..(i + 1) * q8_k::SIZE];
        let ad = rd_f32(ab, q8_k::D);
        let (sc, mn) = k4_scales_mins(&wb[q4_k::SCALES..q4_k::SCALES + 12]);
        let bs = bsums(ab);
        let mut imin = 0i32;
        for j in 0..8 {
            imin = imin.wrapping_add(mn[j] * (bs[2 * j] + bs[2 * j + 1]));
        }
        let mut isum = 0i32;
        for e in 0..QK_K {
            let (j, hi, b) = (e / 64, (e % 64) / 32, e % 32);
            let byte = wb[q4_k::QS + 32 * j + b];
            let q = if hi == 0 { byte & 0xF } else { byte >> 4 } as i32;
            isum = isum.wrapping_add(sc[e / 32] * q * i8at(ab, q8_k::QS + e));
        }
        acc = (isum as f32).mul_add(rd_f16(wb, q4_k::D) * ad, acc);
        acc_min = (imin as f32).mul_add(rd_f16(wb, q4_k::DMIN) * ad, acc_min);
    }
    acc - acc_min
}

pub(super) fn q5_k(nb: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut acc = [0f32; 8];
    let mut summs = 0f32;
    for i in 0..nb {
        let wb = &w[i * q5_k::SIZE..(i + 1) * q5_k::SIZE];
        let ab = &a[i * q8_k::SIZE..(i + 1) * q8_k::SIZE];
        let ad = rd_f32(ab, q8_k::D);
        let d = ad * rd_f16(wb, q5_k::D);
        let dmin = -ad * rd_f16(wb, q5_k::DMIN);
        let (sc, mn) = k4_scales_mins(&wb[q5_k::SCALES..q5_k::SCALES + 12]);
        let q8s = bsums_pairs(&bsums(ab));
        let mut msum = 0i32;
        for k in 0..8 {
            msum = msum.wrapping_add(mn[k] * q8s[k]);
        }
        summs = dmin.mul_add(msum as f32, summs);
        let mut l = [0i32; 8];
        for e in 0..QK_K {
            let (j, hi, b) = (e / 64, (e % 64) / 32, e % 32);
            let byte = wb[q5_k::QS + 32 * j + b];
            let low = if hi == 0 { byte & 0xF } else { byte >> 4 } as i32;
            let hbit = ((wb[q5_k::QH + b] >> (2 * j + hi)) & 1) as i32;
            l[b / 4] += sc[e / 32] * (low + 16 * hbit) * i8at(ab, q8_k::QS + e);
        }
        fma_lanes(&mut acc, d, &l);
    }
    hsum8(&acc) + summs
}

pub(super) fn q6_k(nb: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut acc = [0f32; 8];
    for i in 0..nb {
        let wb = &w[i * q6_k::SIZE..(i + 1) * q6_k::SIZE];
        let ab = &a[i * q8_k::SIZE..(i + 1) * q8_k::SIZE];
        let d = rd_f32(ab, q8_k::D) * rd_f16(wb, q6_k::D);
        let sc = |j: usize| wb[q6_k::SCALES + j] as i8 as i32;
        let bs = bsums(ab);
        let mut l = [0i32; 8];
        for e in 0..QK_K {
            let (half, t, b) = (e / 128, (e % 128) / 32, e % 32);
            let ql = wb[q6_k::QL + 64 * half + 32 * (t & 1) + b];
            let low = if t < 2 { ql & 0xF } else { ql >> 4 };
            let high = (wb[q6_k::QH + 32 * half + b] >> (2 * t)) & 3;
            let q = (low | (high << 4)) as i32; // unsigned 0..64; the -32 comes below
            l[b / 4] += sc(e / 16) * q * i8at(ab, q8_k::QS + e);
        }
        // ggml subtracts 32 * sum(bsums * scales) per lane pair of sub-blocks.
        for k in 0..8 {
            let s = bs[2 * k] * sc(2 * k) + bs[2 * k + 1] * sc(2 * k + 1);
            l[k] = l[k].wrapping_sub(s.wrapping_shl(5));
        }
        fma_lanes(&mut acc, d, &l);
    }
    hsum8(&acc)
}

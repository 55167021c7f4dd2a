//! Dequantization to f32, exactly as ggml's `dequantize_row_*` (ggml-quants.c,
//! which ggml builds without FMA: plain IEEE f32 multiplies and adds, in the
//! same order). Lengths are checked by the caller (`super::dequantize_row`).

use super::blocks::*;
use crate::gguf::GgmlType;

/// `src` holds exactly `out.len() / block_size` blocks of `ty`.
pub(super) fn dequantize(ty: GgmlType, src: &[u8], out: &mut [f32]) {
    use GgmlType::*;
    match ty {
        F32 => {
            for (o, b) in out.iter_mut().zip(src.chunks_exact(4)) {
                *o = rd_f32(b, 0);
            }
        }
        F16 => {
            for (o, b) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = rd_f16(b, 0);
            }
        }
        BF16 => {
            for (o, b) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = rd_bf16(b, 0);
            }
        }
        Q4_0 => blocks(src, out, q4_0::SIZE, QK, q4_0_block),
        Q4_1 => blocks(src, out, q4_1::SIZE, QK, q4_1_block),
        Q5_0 => blocks(src, out, q5_0::SIZE, QK, q5_0_block),
        Q5_1 => blocks(src, out, q5_1::SIZE, QK, q5_1_block),
        Q8_0 => blocks(src, out, q8_0::SIZE, QK, q8_0_block),
        Q8_1 => blocks(src, out, q8_1::SIZE, QK, q8_1_block),
        Q2_K => blocks(src, out, q2_k::SIZE, QK_K, q2_k_block),
        Q3_K => blocks(src, out, q3_k::SIZE, QK_K, q3_k_block),
        Q4_K => blocks(src, out, q4_k::SIZE, QK_K, q4_k_block),
        Q5_K => blocks(src, out, q5_k::SIZE, QK_K, q5_k_block),
        Q6_K => blocks(src, out, q6_k::SIZE, QK_K, q6_k_block),
        Q8_K => blocks(src, out, q8_k::SIZE, QK_K, q8_k_block),
        other => unreachable!("dequantize: {other} is rejected by the caller"),
    }
}

fn blocks(src: &[u8], out: &mut [f32], size: usize, qk: usize, f: fn(&[u8], &mut [f32])) {
    for (b, o) in src.chunks_exact(size).zip(out.chunks_exact_mut(qk)) {
        f(b, o);
    }
}

fn q4_0_block(b: &[u8], y: &mut [f32]) {
    let d = rd_f16(b, q4_0::D);
    let qs = &b[q4_0::QS..q4_0::QS + 16];
    for j in 0..16 {
        y[j] = ((qs[j] & 0xF) as i32 - 8) as f32 * d;
        y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
    }
}

fn q4_1_block(b: &[u8], y: &mut [f32]) {
    let d = rd_f16(b, q4_1::D);
    let m = rd_f16(b, q4_1::M);
    let qs = &b[q4_1::QS..q4_1::QS + 16];
    for j in 0..16 {
        y[j] = (qs[j] & 0xF) as f32 * d + m;
        y[j + 16] = (qs[j] >> 4) as f32 * d + m;
    }
}

fn q5_0_block(b: &[u8], y: &mut [f32]) {
    let d = rd_f16(b, q5_0::D);
    let qh = rd_u32(b, q5_0::QH);
    let qs = &b[q5_0::QS..q5_0::QS + 16];
    for j in 0..16 {
        let h0 = (((qh >> j) << 4) & 0x10) as u8;
        let h1 = ((qh >> (j + 12)) & 0x10) as u8;
        y[j] = (((qs[j] & 0xF) | h0) as i32 - 16) as f32 * d;
        y[j + 16] = (((qs[j] >> 4) | h1) as i32 - 16) as f32 * d;
    }
}

fn q5_1_block(b: &[u8], y: &mut [f32]) {
    let d = rd_f16(b, q5_1::D);
    let m = rd_f16(b, q5_1::M);
    let qh = rd_u32(b, q5_1::QH);
    let qs = &b[q5_1::QS..q5_1::QS + 16];
    for j in 0..16 {
        let h0 = (((qh >> j) << 4) & 0x10) as u8;
        let h1 = ((qh >> (j + 12)) & 0x10) as u8;
        y[j] = ((qs[j] & 0xF) | h0) as f32 * d + m;
        y[j + 16] = ((qs[j] >> 4) | h1) as f32 * d + m;
    }
}

fn q8_0_block(b: &[u8], y: &mut [f32]) {
    let d = rd_f16(b, q8_0::D);
    for j in 0..32 {
        y[j] = b[q8_0::QS + j] as i8 as f32 * d;
    }
}

fn q8_1_block(b: &[u8], y: &mut [f32]) {
    let d = rd_f16(b, q8_1::D);
    for j in 0..32 {
        y[j] = b[q8_1::QS + j] as i8 as f32 * d;
    }
}

fn q2_k_block(b: &[u8], y: &mut [f32]) {
    let d = rd_f16(b, q2_k::D);
    let min = rd_f16(b, q2_k::DMIN);
    let sc = &b[q2_k::SCALES..q2_k::SCALES + 16];
    let mut out = 0;
    let mut is = 0;
    for half in 0..2 {
        let q = &b[q2_k::QS + 32 * half..q2_k::QS + 32 * half + 32];
        for shift in [0u32, 2, 4, 6] {
            for part in 0..2 {
                let s = sc[is];
                is += 1;
                let dl = d * (s & 0xF) as f32;
                let ml = min * (s >> 4) as f32;
                for l in 0..16 {
                    y[out] = dl * ((q[l + 16 * part] >> shift) & 3) as f32 - ml;
                    out += 1;
                }
            }
        }
    }
}

fn q3_k_block(b: &[u8], y: &mut [f32]) {
    let d_all = rd_f16(b, q3_k::D);
    let scales = q3k_scales(&b[q3_k::SCALES..q3_k::SCALES + 12]);
    let hm = &b[q3_k::HMASK..q3_k::HMASK + 32];
    let mut m: u8 = 1;
    let mut out = 0;
    let mut is = 0;
    for half in 0..2 {
        let q = &b[q3_k::QS + 32 * half..q3_k::QS + 32 * half + 32];
        for shift in [0u32, 2, 4, 6] {
            for part in 0..2 {
                let dl = d_all * scales[is] as f32;
                is += 1;
                for l in 0..16 {
                    let i = l + 16 * part;
                    let low = ((q[i] >> shift) & 3) as i32;
                    let sub = if hm[i] & m != 0 { 0 } else { 4 };
                    y[out] = dl * (low - sub) as f32;
                    out += 1;
                }
            }
            m = m.wrapping_shl(1);
        }
    }
}

fn q4_k_block(b: &[u8], y: &mut [f32]) {
    let d = rd_f16(b, q4_k::D);
    let min = rd_f16(b, q4_k::DMIN);
    let sc = &b[q4_k::SCALES..q4_k::SCALES + 12];
    for j in 0..4 {
        let q = &b[q4_k::QS + 32 * j..q4_k::QS + 32 * j + 32];
        let (s1, m1) = scale_min_k4(2 * j, sc);
        let (s2, m2) = scale_min_k4(2 * j + 1, sc);
        let (d1, m1) = (d * s1 as f32, min * m1 as f32);
        let (d2, m2) = (d * s2 as f32, min * m2 as f32);
        let o = &mut y[64 * j..64 * j + 64];
        for l in 0..32 {
            o[l] = d1 * (q[l] & 0xF) as f32 - m1;
            o[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

fn q5_k_block(b: &[u8], y: &mut [f32]) {
    let d = rd_f16(b, q5_k::D);
    let min = rd_f16(b, q5_k::DMIN);
    let sc = &b[q5_k::SCALES..q5_k::SCALES + 12];
    let qh = &b[q5_k::QH..q5_k::QH + 32];
    for j in 0..4 {
        let ql = &b[q5_k::QS + 32 * j..q5_k::QS + 32 * j + 32];
        let (s1, m1) = scale_min_k4(2 * j, sc);
        let (s2, m2) = scale_min_k4(2 * j + 1, sc);
        let (d1, m1) = (d * s1 as f32, min * m1 as f32);
        let (d2, m2) = (d * s2 as f32, min * m2 as f32);
        let (u1, u2) = (1u8 << (2 * j), 2u8 << (2 * j));
        let o = &mut y[64 * j..64 * j + 64];
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            o[l] = d1 * ((ql[l] & 0xF) + h1) as f32 - m1;
            o[l + 32] = d2 * ((ql[l] >> 4) + h2) as f32 - m2;
        }
    }
}

fn q6_k_block(b: &[u8], y: &mut [f32]) {
    let d = rd_f16(b, q6_k::D);
    for half in 0..2 {
        let ql = &b[q6_k::QL + 64 * half..q6_k::QL + 64 * half + 64];
        let qh = &b[q6_k::QH + 32 * half..q6_k::QH + 32 * half + 32];
        let sc = &b[q6_k::SCALES + 8 * half..q6_k::SCALES + 8 * half + 8];
        let o = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            o[l] = d * sc[is] as i8 as f32 * q1 as f32;
            o[l + 32] = d * sc[is + 2] as i8 as f32 * q2 as f32;
            o[l + 64] = d * sc[is + 4] as i8 as f32 * q3 as f32;
            o[l + 96] = d * sc[is + 6] as i8 as f32 * q4 as f32;
        }
    }
}

fn q8_k_block(b: &[u8], y: &mut [f32]) {
    let d = rd_f32(b, q8_k::D);
    for j in 0..QK_K {
        y[j] = d * b[q8_k::QS + j] as i8 as f32;
    }
}

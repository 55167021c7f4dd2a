//! Activation quantizers: what ggml-cpu's x86 build produces for the
//! `vec_dot_type` of each weight type (`from_float` in `type_traits_cpu`).
//!
//! - Q8_0 / Q8_1: ggml's AVX2 `quantize_row_q8_0/1` (arch/x86/quants.c), not
//!   the `_ref` versions: `d = amax / 127`, multiplier `127 / amax`, rounding
//!   half to even (`_mm256_round_ps(.., _MM_ROUND_NEAREST)`), and for Q8_1
//!   `s = f16(d * sum(q))`.
//! - Q8_K: `quantize_row_q8_K_ref` (x86 forwards to it): f32 `d`, multiplier
//!   `-127 / max`, `nearest_int`, i16 sums of 16.
//! - F16: round to nearest even; BF16: ggml's `GGML_FP32_TO_BF16`.
//!
//! The code here is the specification; `quantize_act_x86` has AVX2 bodies
//! for the Q8 types that produce the same bytes (tested). Lengths are checked
//! by the caller.

use super::blocks::*;
use super::quantize_ref;
use crate::gguf::GgmlType;
use half::f16;

/// `simd`: use the AVX2 bodies (same bytes; the caller checked AVX2).
pub(super) fn quantize_act(act: GgmlType, x: &[f32], out: &mut [u8], simd: bool) {
    use GgmlType::*;
    #[cfg(target_arch = "x86_64")]
    if simd {
        use super::quantize_act_x86 as x86;
        // SAFETY: `simd` is only set when AVX2/FMA/F16C are available;
        // lengths were checked by the caller.
        unsafe {
            match act {
                Q8_0 => return x86::q8_blocks(x, out, q8_0::SIZE, q8_0::D, None, q8_0::QS),
                Q8_1 => {
                    return x86::q8_blocks(x, out, q8_1::SIZE, q8_1::D, Some(q8_1::S), q8_1::QS)
                }
                Q8_K => return x86::q8_k_blocks(x, out),
                _ => {}
            }
        }
    }
    let _ = simd;
    match act {
        F32 => {
            for (o, v) in out.chunks_exact_mut(4).zip(x) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        F16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(x) {
                o.copy_from_slice(&f16::from_f32(*v).to_bits().to_le_bytes());
            }
        }
        BF16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(x) {
                o.copy_from_slice(&fp32_to_bf16(*v).to_le_bytes());
            }
        }
        Q8_0 => {
            for (xb, ob) in x.chunks_exact(QK).zip(out.chunks_exact_mut(q8_0::SIZE)) {
                q8_x86_block(xb, ob, q8_0::D, None, q8_0::QS);
            }
        }
        Q8_1 => {
            for (xb, ob) in x.chunks_exact(QK).zip(out.chunks_exact_mut(q8_1::SIZE)) {
                q8_x86_block(xb, ob, q8_1::D, Some(q8_1::S), q8_1::QS);
            }
        }
        Q8_K => {
            for (xb, ob) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(q8_k::SIZE)) {
                quantize_ref::q8_k_block(xb, ob);
            }
        }
        other => unreachable!("quantize_act: {other} is rejected by the caller"),
    }
}

/// ggml's `ggml_compute_fp32_to_bf16`: round to nearest even, NaN kept quiet.
pub(crate) fn fp32_to_bf16(s: f32) -> u16 {
    let i = s.to_bits();
    if (i & 0x7fff_ffff) > 0x7f80_0000 {
        return ((i >> 16) | 64) as u16;
    }
    (i.wrapping_add(0x7fff + ((i >> 16) & 1)) >> 16) as u16
}

/// One Q8_0/Q8_1 block the way ggml's AVX2 `quantize_row_q8_0/1` does it.
fn q8_x86_block(x: &[f32], y: &mut [u8], off_d: usize, off_s: Option<usize>, off_qs: usize) {
    // max(|x|) over the block; max is order-independent for non-NaN input.
    let mut amax = 0.0f32;
    for v in x {
        let a = v.abs();
        // _mm256_max_ps(a, b) returns b when either is NaN; keep that.
        amax = if amax > a { amax } else { a };
    }
    let d = amax / 127.0;
    wr_f16(y, off_d, d);
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut sum = 0i32;
    for (j, v) in x.iter().enumerate() {
        let q = cvtps_epi32((v * id).round_ties_even());
        sum = sum.wrapping_add(q);
        // packs_epi32 then packs_epi16: signed saturation to i8.
        y[off_qs + j] = q.clamp(-128, 127) as i8 as u8;
    }
    if let Some(off_s) = off_s {
        wr_f16(y, off_s, d * sum as f32);
    }
}

/// `_mm256_cvtps_epi32` on an already-integral value: out-of-range and NaN
/// give `i32::MIN` (the "integer indefinite" value).
#[inline(always)]
fn cvtps_epi32(v: f32) -> i32 {
    if !(-2_147_483_648.0..2_147_483_648.0).contains(&v) {
        i32::MIN
    } else {
        v as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q8_0(x: &[f32]) -> Vec<u8> {
        let mut out = vec![0u8; q8_0::SIZE * (x.len() / 32)];
        quantize_act(GgmlType::Q8_0, x, &mut out, false);
        out
    }

    #[test]
    fn q8_0_rounds_ties_to_even_unlike_ref() {
        // amax 127 gives multiplier exactly 1, so x*id is x itself.
        let mut x = [0.0f32; 32];
        x[0] = 127.0;
        x[1] = 0.5;
        x[2] = 1.5;
        x[3] = 2.5;
        x[4] = -0.5;
        x[5] = -2.5;
        x[6] = -126.5;
        let y = q8_0(&x);
        let q: Vec<i8> = y[2..9].iter().map(|&b| b as i8).collect();
        assert_eq!(q, vec![127, 0, 2, 2, 0, -2, -126]);
        assert_eq!(rd_f16(&y, 0), f16::from_f32(1.0).to_f32());

        // The reference quantizer (roundf) rounds the same ties away from zero.
        let mut r = vec![0u8; q8_0::SIZE];
        quantize_ref::quantize_ref(GgmlType::Q8_0, &x, &mut r);
        let qr: Vec<i8> = r[2..9].iter().map(|&b| b as i8).collect();
        assert_eq!(qr, vec![127, 1, 2, 3, -1, -3, -127]);
    }

    #[test]
    fn q8_1_sum_field_is_d_times_sum_of_quants() {
        let x: Vec<f32> = (0..32).map(|i| (i as f32 - 10.0) * 0.37).collect();
        let mut y = vec![0u8; q8_1::SIZE];
        quantize_act(GgmlType::Q8_1, &x, &mut y, false);
        let d = (21.0f32 * 0.37) / 127.0;
        assert_eq!(rd_f16(&y, q8_1::D), f16::from_f32(d).to_f32());
        let sum: i32 = y[q8_1::QS..].iter().map(|&b| b as i8 as i32).sum();
        assert_eq!(rd_f16(&y, q8_1::S), f16::from_f32(d * sum as f32).to_f32());
        // The largest magnitude maps to +-127.
        assert_eq!(y[q8_1::QS + 31] as i8, 127);
    }

    #[test]
    fn zero_block_quantizes_to_zero() {
        let y = q8_0(&[0.0; 32]);
        assert!(y.iter().all(|&b| b == 0));
        let mut k = vec![0xAAu8; q8_k::SIZE];
        quantize_act(GgmlType::Q8_K, &[0.0; 256], &mut k, false);
        assert!(k.iter().all(|&b| b == 0));
    }

    #[test]
    fn q8_k_uses_nearest_int_and_keeps_bsums() {
        let x: Vec<f32> = (0..256)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let mut y = vec![0u8; q8_k::SIZE];
        quantize_act(GgmlType::Q8_K, &x, &mut y, false);
        let max = x
            .iter()
            .fold(0.0f32, |m, v| if v.abs() > m.abs() { *v } else { m });
        let iscale = -127.0 / max;
        assert_eq!(rd_f32(&y, q8_k::D), 1.0 / iscale);
        for j in 0..16 {
            let s: i32 = (0..16).map(|i| y[q8_k::QS + 16 * j + i] as i8 as i32).sum();
            assert_eq!(rd_i16(&y, q8_k::BSUMS + 2 * j) as i32, s);
        }
        for (j, v) in x.iter().enumerate() {
            let want = (iscale * v).round_ties_even() as i32;
            assert_eq!(y[q8_k::QS + j] as i8 as i32, want.min(127), "element {j}");
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        // 1 + 2^-8 is exactly half way between two bf16 values: goes to even.
        assert_eq!(fp32_to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(fp32_to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(fp32_to_bf16(f32::NAN) & 0x7fc0, 0x7fc0);
    }
}

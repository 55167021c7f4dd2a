//! Reference quantizers for weight types, following ggml's
//! `quantize_row_*_ref` (ggml-quants.c) operation for operation, so a row we
//! quantize is byte-identical to what ggml writes. Used by tests and by the
//! synthetic-model writer; never on the inference path. Lengths are checked by
//! the caller (`super::quantize_row_ref`).

use super::blocks::*;
use crate::gguf::GgmlType;
use half::{bf16, f16};

const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `nearest_int`: round half to even through the 1.5*2^23 trick (valid
/// for |x| < 2^22, which every caller guarantees; outside it the result is
/// garbage but never a panic, as in ggml).
#[inline(always)]
pub(super) fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    ((v.to_bits() & 0x007f_ffff) as i32) - 0x0040_0000
}

pub(super) fn quantize_ref(ty: GgmlType, x: &[f32], out: &mut [u8]) {
    use GgmlType::*;
    match ty {
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
                o.copy_from_slice(&bf16::from_f32(*v).to_bits().to_le_bytes());
            }
        }
        Q4_0 => blocks(x, out, QK, q4_0::SIZE, q4_0_block),
        Q4_1 => blocks(x, out, QK, q4_1::SIZE, q4_1_block),
        Q5_0 => blocks(x, out, QK, q5_0::SIZE, q5_0_block),
        Q5_1 => blocks(x, out, QK, q5_1::SIZE, q5_1_block),
        Q8_0 => blocks(x, out, QK, q8_0::SIZE, q8_0_block),
        Q8_1 => blocks(x, out, QK, q8_1::SIZE, q8_1_block),
        Q2_K => blocks(x, out, QK_K, q2_k::SIZE, q2_k_block),
        Q3_K => blocks(x, out, QK_K, q3_k::SIZE, q3_k_block),
        Q4_K => blocks(x, out, QK_K, q4_k::SIZE, q4_k_block),
        Q5_K => blocks(x, out, QK_K, q5_k::SIZE, q5_k_block),
        Q6_K => blocks(x, out, QK_K, q6_k::SIZE, q6_k_block),
        Q8_K => blocks(x, out, QK_K, q8_k::SIZE, q8_k_block),
        other => unreachable!("quantize_ref: {other} is rejected by the caller"),
    }
}

fn blocks(x: &[f32], out: &mut [u8], qk: usize, size: usize, f: fn(&[f32], &mut [u8])) {
    for (xb, ob) in x.chunks_exact(qk).zip(out.chunks_exact_mut(size)) {
        ob.fill(0);
        f(xb, ob);
    }
}

/// Value of largest magnitude (first one wins ties), as ggml scans for it.
fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    (amax, max)
}

fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

fn q4_0_block(x: &[f32], y: &mut [u8]) {
    let (_, max) = signed_absmax(x);
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    wr_f16(y, q4_0::D, d);
    for j in 0..16 {
        let x0 = x[j] * id;
        let x1 = x[16 + j] * id;
        let q0 = ((x0 + 8.5) as i32 as i8).min(15) as u8;
        let q1 = ((x1 + 8.5) as i32 as i8).min(15) as u8;
        y[q4_0::QS + j] = q0 | (q1 << 4);
    }
}

fn q4_1_block(x: &[f32], y: &mut [u8]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    wr_f16(y, q4_1::D, d);
    wr_f16(y, q4_1::M, min);
    for j in 0..16 {
        let x0 = (x[j] - min) * id;
        let x1 = (x[16 + j] - min) * id;
        let q0 = ((x0 + 0.5) as i32 as i8).min(15) as u8;
        let q1 = ((x1 + 0.5) as i32 as i8).min(15) as u8;
        y[q4_1::QS + j] = q0 | (q1 << 4);
    }
}

fn q5_0_block(x: &[f32], y: &mut [u8]) {
    let (_, max) = signed_absmax(x);
    let d = max / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    wr_f16(y, q5_0::D, d);
    let mut qh = 0u32;
    for j in 0..16 {
        let x0 = x[j] * id;
        let x1 = x[16 + j] * id;
        let q0 = ((x0 + 16.5) as i32 as i8).min(31) as u8;
        let q1 = ((x1 + 16.5) as i32 as i8).min(31) as u8;
        y[q5_0::QS + j] = (q0 & 0xF) | ((q1 & 0xF) << 4);
        qh |= (((q0 & 0x10) >> 4) as u32) << j;
        qh |= (((q1 & 0x10) >> 4) as u32) << (j + 16);
    }
    y[q5_0::QH..q5_0::QH + 4].copy_from_slice(&qh.to_le_bytes());
}

fn q5_1_block(x: &[f32], y: &mut [u8]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 31.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    wr_f16(y, q5_1::D, d);
    wr_f16(y, q5_1::M, min);
    let mut qh = 0u32;
    for j in 0..16 {
        let x0 = (x[j] - min) * id;
        let x1 = (x[16 + j] - min) * id;
        let q0 = (x0 + 0.5) as i32 as u8;
        let q1 = (x1 + 0.5) as i32 as u8;
        y[q5_1::QS + j] = (q0 & 0xF) | ((q1 & 0xF) << 4);
        qh |= (((q0 & 0x10) >> 4) as u32) << j;
        qh |= (((q1 & 0x10) >> 4) as u32) << (j + 16);
    }
    y[q5_1::QH..q5_1::QH + 4].copy_from_slice(&qh.to_le_bytes());
}

fn q8_0_block(x: &[f32], y: &mut [u8]) {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    wr_f16(y, q8_0::D, d);
    for j in 0..32 {
        y[q8_0::QS + j] = (x[j] * id).round() as i32 as i8 as u8;
    }
}

fn q8_1_block(x: &[f32], y: &mut [u8]) {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    wr_f16(y, q8_1::D, d);
    let mut sum = 0i32;
    for j in 0..32 {
        let q = (x[j] * id).round() as i32 as i8;
        y[q8_1::QS + j] = q as u8;
        sum += q as i32;
    }
    wr_f16(y, q8_1::S, sum as f32 * d);
}

/// ggml's `make_qkx2_quants`: scale and (negated) min for an asymmetric
/// sub-block, searching `nstep` scales around the min/max one.
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out[..n].fill(0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l_out[i] = l as u8;
        let mut diff = scale * l as f32 + min - x[i];
        diff = if use_mad { diff.abs() } else { diff * diff };
        best_error += weights[i] * diff;
    }
    if nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = l as u8;
            let w = weights[i];
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let dd = sum_w * sum_l2 - sum_l * sum_l;
        if dd > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / dd;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / dd;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let mut diff = this_scale * laux[i] as f32 + this_min - x[i];
                diff = if use_mad { diff.abs() } else { diff * diff };
                cur_error += weights[i] * diff;
            }
            if cur_error < best_error {
                l_out[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// ggml's `make_qx_quants` with `qw == NULL`: symmetric scale for a
/// sub-block, `L` in `0..2*nmax`.
fn make_qx_quants(nmax: i32, x: &[f32], l_out: &mut [i8], rmse_type: i32) -> f32 {
    let n = x.len();
    let (amax, max) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let mut iscale = -(nmax as f32) / max;
    if rmse_type == 0 {
        for i in 0..n {
            let l = nearest_int(iscale * x[i]);
            l_out[i] = (nmax + l.clamp(-nmax, nmax - 1)) as i8;
        }
        return 1.0 / iscale;
    }
    let weight = |v: f32| -> f32 {
        match rmse_type {
            1 => v * v,
            2 => 1.0,
            3 => v.abs(),
            _ => v.abs().sqrt(),
        }
    };
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l_out[i] = (l + nmax) as i8;
        let w = weight(x[i]);
        let lf = l as f32;
        sumlx += w * x[i] * lf;
        suml2 += w * lf * lf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &xi in x {
            let l = nearest_int(iscale * xi).clamp(-nmax, nmax - 1);
            let w = weight(xi);
            let lf = l as f32;
            sumlx += w * xi * lf;
            suml2 += w * lf * lf;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..n {
                let l = nearest_int(iscale * x[i]);
                l_out[i] = (nmax + l.clamp(-nmax, nmax - 1)) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// ggml's `make_q3_quants` with `do_rmse == true`.
fn make_q3_quants(nmax: i32, x: &[f32], l_out: &mut [i8]) -> f32 {
    let n = x.len();
    let (amax, max) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l_out[i] = l as i8;
        let w = x[i] * x[i];
        let lf = l as f32;
        sumlx += w * x[i] * lf;
        suml2 += w * lf * lf;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for i in 0..n {
            let w = x[i] * x[i];
            let li = l_out[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * li * li;
                let new_l = nearest_int(x[i] * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != l_out[i] as i32 {
                    let nl = new_l as f32;
                    slx += w * x[i] * nl;
                    sl2 += w * nl * nl;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l_out[i] = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    for l in l_out[..n].iter_mut() {
        *l += nmax as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

fn q2_k_block(x: &[f32], y: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 16];
    let mut weights = [0f32; 16];
    let mut mins = [0f32; 16];
    let mut scales = [0f32; 16];
    const Q4SCALE: f32 = 15.0;
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = v.abs();
        }
        let (s, m) = make_qkx2_quants(
            3,
            xs,
            &weights,
            &mut l[16 * j..16 * j + 16],
            &mut laux,
            -0.5,
            0.1,
            15,
            true,
        );
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let sc = q2_k::SCALES;
    if max_scale > 0.0 {
        let iscale = Q4SCALE / max_scale;
        for j in 0..16 {
            y[sc + j] = nearest_int(iscale * scales[j]) as u8;
        }
        wr_f16(y, q2_k::D, max_scale / Q4SCALE);
    } else {
        y[sc..sc + 16].fill(0);
        wr_f16(y, q2_k::D, 0.0);
    }
    if max_min > 0.0 {
        let iscale = Q4SCALE / max_min;
        for j in 0..16 {
            let m = nearest_int(iscale * mins[j]);
            y[sc + j] |= (m << 4) as u8;
        }
        wr_f16(y, q2_k::DMIN, max_min / Q4SCALE);
    } else {
        wr_f16(y, q2_k::DMIN, 0.0);
    }
    let dall = rd_f16(y, q2_k::D);
    let dmin = rd_f16(y, q2_k::DMIN);
    for j in 0..16 {
        let d = dall * (y[sc + j] & 0xF) as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin * (y[sc + j] >> 4) as f32;
        for ii in 0..16 {
            let q = nearest_int((x[16 * j + ii] + dm) / d).clamp(0, 3);
            l[16 * j + ii] = q as u8;
        }
    }
    for j in (0..QK_K).step_by(128) {
        for i in 0..32 {
            y[q2_k::QS + j / 4 + i] =
                l[j + i] | (l[j + i + 32] << 2) | (l[j + i + 64] << 4) | (l[j + i + 96] << 6);
        }
    }
}

fn q3_k_block(x: &[f32], y: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut amax) = (0.0f32, 0.0f32);
    for j in 0..16 {
        scales[j] = make_q3_quants(4, &x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
        let s = scales[j].abs();
        if s > amax {
            amax = s;
            max_scale = scales[j];
        }
    }
    let sc = q3_k::SCALES;
    y[sc..sc + 12].fill(0);
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        for j in 0..16 {
            let q = (nearest_int(iscale * scales[j]) as i8).clamp(-32, 31) + 32;
            if j < 8 {
                y[sc + j] = (q & 0xF) as u8;
            } else {
                y[sc + j - 8] |= ((q & 0xF) << 4) as u8;
            }
            let hi = (q >> 4) as u8;
            y[sc + 8 + j % 4] |= hi << (2 * (j / 4));
        }
        wr_f16(y, q3_k::D, 1.0 / iscale);
    } else {
        wr_f16(y, q3_k::D, 0.0);
    }
    let d_all = rd_f16(y, q3_k::D);
    let sv = q3k_scales(&y[sc..sc + 12]);
    for j in 0..16 {
        let d = d_all * sv[j] as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / d).clamp(-4, 3);
            l[16 * j + ii] = (q + 4) as i8;
        }
    }
    let hm = q3_k::HMASK;
    y[hm..hm + 32].fill(0);
    let (mut m, mut bit) = (0usize, 1u8);
    for lj in l.iter_mut() {
        if *lj > 3 {
            y[hm + m] |= bit;
            *lj -= 4;
        }
        m += 1;
        if m == 32 {
            m = 0;
            bit = bit.wrapping_shl(1);
        }
    }
    for j in (0..QK_K).step_by(128) {
        for i in 0..32 {
            y[q3_k::QS + j / 4 + i] =
                (l[j + i] | (l[j + i + 32] << 2) | (l[j + i + 64] << 4) | (l[j + i + 96] << 6))
                    as u8;
        }
    }
}

/// Shared by Q4_K (`nmax` 15) and Q5_K (`nmax` 31): per-32 scales and mins,
/// packed 6-bit, then the quants `l` in `0..=nmax`.
#[allow(clippy::too_many_arguments)]
fn k_scales_mins(
    x: &[f32],
    y: &mut [u8],
    nmax: i32,
    rmin: f32,
    nstep: i32,
    l: &mut [u8; QK_K],
    off_d: usize,
    off_dmin: usize,
    off_sc: usize,
) {
    let mut laux = [0u8; 32];
    let mut weights = [0f32; 32];
    let mut mins = [0f32; 8];
    let mut scales = [0f32; 8];
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (s, m) = make_qkx2_quants(
            nmax,
            xs,
            &weights,
            &mut l[32 * j..32 * j + 32],
            &mut laux,
            rmin,
            0.1,
            nstep,
            false,
        );
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let sc = &mut y[off_sc..off_sc + 12];
    sc.fill(0);
    for j in 0..8 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            sc[j - 4] |= (ls >> 4) << 6;
            sc[j] |= (lm >> 4) << 6;
        }
    }
    wr_f16(y, off_d, max_scale / 63.0);
    wr_f16(y, off_dmin, max_min / 63.0);
    let d_all = rd_f16(y, off_d);
    let dmin = rd_f16(y, off_dmin);
    for j in 0..8 {
        let (s, m) = scale_min_k4(j, &y[off_sc..off_sc + 12]);
        let d = d_all * s as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin * m as f32;
        for ii in 0..32 {
            let q = nearest_int((x[32 * j + ii] + dm) / d).clamp(0, nmax);
            l[32 * j + ii] = q as u8;
        }
    }
}

fn q4_k_block(x: &[f32], y: &mut [u8]) {
    let mut l = [0u8; QK_K];
    k_scales_mins(
        x,
        y,
        15,
        -1.0,
        20,
        &mut l,
        q4_k::D,
        q4_k::DMIN,
        q4_k::SCALES,
    );
    for j in 0..4 {
        for i in 0..32 {
            y[q4_k::QS + 32 * j + i] = l[64 * j + i] | (l[64 * j + i + 32] << 4);
        }
    }
}

fn q5_k_block(x: &[f32], y: &mut [u8]) {
    let mut l = [0u8; QK_K];
    k_scales_mins(
        x,
        y,
        31,
        -0.5,
        15,
        &mut l,
        q5_k::D,
        q5_k::DMIN,
        q5_k::SCALES,
    );
    y[q5_k::QH..q5_k::QH + 32].fill(0);
    let (mut m1, mut m2) = (1u8, 2u8);
    for n in 0..4 {
        for j in 0..32 {
            let mut l1 = l[64 * n + j];
            if l1 > 15 {
                l1 -= 16;
                y[q5_k::QH + j] |= m1;
            }
            let mut l2 = l[64 * n + j + 32];
            if l2 > 15 {
                l2 -= 16;
                y[q5_k::QH + j] |= m2;
            }
            y[q5_k::QS + 32 * n + j] = l1 | (l2 << 4);
        }
        m1 = m1.wrapping_shl(2);
        m2 = m2.wrapping_shl(2);
    }
}

fn q6_k_block(x: &[f32], y: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
    for ib in 0..16 {
        let s = make_qx_quants(
            32,
            &x[16 * ib..16 * ib + 16],
            &mut l[16 * ib..16 * ib + 16],
            1,
        );
        scales[ib] = s;
        if s.abs() > max_abs_scale {
            max_abs_scale = s.abs();
            max_scale = s;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        y[..q6_k::SIZE].fill(0);
        return;
    }
    let iscale = -128.0 / max_scale;
    wr_f16(y, q6_k::D, 1.0 / iscale);
    for ib in 0..16 {
        y[q6_k::SCALES + ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
    }
    let d_all = rd_f16(y, q6_k::D);
    for j in 0..16 {
        let d = d_all * y[q6_k::SCALES + j] as i8 as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
            l[16 * j + ii] = (q + 32) as i8;
        }
    }
    for half in 0..2 {
        let j = 128 * half;
        for i in 0..32 {
            let q1 = l[j + i] as u8 & 0xF;
            let q2 = l[j + i + 32] as u8 & 0xF;
            let q3 = l[j + i + 64] as u8 & 0xF;
            let q4 = l[j + i + 96] as u8 & 0xF;
            y[q6_k::QL + 64 * half + i] = q1 | (q3 << 4);
            y[q6_k::QL + 64 * half + i + 32] = q2 | (q4 << 4);
            y[q6_k::QH + 32 * half + i] = (l[j + i] as u8 >> 4)
                | ((l[j + i + 32] as u8 >> 4) << 2)
                | ((l[j + i + 64] as u8 >> 4) << 4)
                | ((l[j + i + 96] as u8 >> 4) << 6);
        }
    }
}

/// ggml's `quantize_row_q8_K_ref`, which is also what ggml's x86 build uses
/// for activations (`quantize_row_q8_K` forwards to it).
pub(super) fn q8_k_block(x: &[f32], y: &mut [u8]) {
    let (amax, max) = signed_absmax(x);
    if amax == 0.0 {
        y[..q8_k::SIZE].fill(0);
        return;
    }
    let iscale = -127.0 / max;
    for j in 0..QK_K {
        let v = nearest_int(iscale * x[j]).min(127);
        y[q8_k::QS + j] = v as i8 as u8;
    }
    for j in 0..16 {
        let mut sum = 0i32;
        for ii in 0..16 {
            sum += y[q8_k::QS + 16 * j + ii] as i8 as i32;
        }
        y[q8_k::BSUMS + 2 * j..q8_k::BSUMS + 2 * j + 2]
            .copy_from_slice(&(sum as i16).to_le_bytes());
    }
    y[q8_k::D..q8_k::D + 4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
}

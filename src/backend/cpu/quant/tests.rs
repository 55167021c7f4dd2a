//! Tests for the quantized kernels: round trips, dot products against a float
//! reference, cross-ISA bit equality, gemm batch invariance, and input checks.

use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use GgmlType::*;

const QUANT: [GgmlType; 10] = [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K];

/// Rows with the shapes real weights and activations take, plus the corner
/// cases: all-zero blocks, tiny and huge scales, one outlier, constant blocks.
pub(super) fn rand_row(rng: &mut ChaCha8Rng, n: usize, kind: usize) -> Vec<f32> {
    let gauss = |rng: &mut ChaCha8Rng| -> f32 {
        // Sum of uniforms: cheap, bell-shaped, deterministic.
        (0..4).map(|_| rng.random::<f32>() - 0.5).sum::<f32>()
    };
    let mut x: Vec<f32> = (0..n).map(|_| gauss(rng)).collect();
    match kind % 6 {
        0 => {}
        1 => x.iter_mut().for_each(|v| *v *= 1e-3),
        2 => x.iter_mut().for_each(|v| *v *= 3000.0),
        3 => {
            // Zero out every other 32-block (and so whole K-quant groups).
            for (i, v) in x.iter_mut().enumerate() {
                if (i / 32) % 2 == 0 {
                    *v = 0.0;
                }
            }
        }
        4 => {
            let i = rng.random_range(0..n);
            x[i] = 40.0;
        }
        _ => {
            // Constant and near-constant blocks (min == max paths).
            for (i, v) in x.iter_mut().enumerate() {
                if (i / 64) % 2 == 0 {
                    *v = 0.25;
                }
            }
        }
    }
    x
}

fn quantize(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; row_bytes(ty, x.len()).unwrap()];
    quantize_row_ref(ty, x, &mut out).unwrap();
    out
}

fn dequantize(ty: GgmlType, b: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    dequantize_row(ty, b, &mut out).unwrap();
    out
}

fn quantize_act_row(weight: GgmlType, x: &[f32]) -> Vec<u8> {
    let act = activation_type(weight).unwrap();
    let mut out = vec![0u8; row_bytes(act, x.len()).unwrap()];
    quantize_row(Isa::Scalar, act, x, &mut out).unwrap();
    out
}

/// Max error of a round trip, relative to the row's largest magnitude.
fn round_trip_error(ty: GgmlType, x: &[f32]) -> f32 {
    let y = dequantize(ty, &quantize(ty, x), x.len());
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = x
        .iter()
        .zip(&y)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    if amax == 0.0 {
        err
    } else {
        err / amax
    }
}

#[test]
fn round_trip_error_is_bounded_per_type() {
    // Bound on max|x - deq(q(x))| / max|x| for each type (a few steps of
    // its quantization grid; K-quants lose a little to 6-bit scales).
    let bound = |ty: GgmlType| -> f32 {
        match ty {
            F32 => 0.0,
            F16 | BF16 => 4e-3,
            // Tiny rows (kind 1) push d into f16 subnormals.
            Q8_0 | Q8_1 => 0.01,
            Q8_K => 5e-3,
            // Q4_0/Q5_0 put the signed extreme at -8/-16, so the opposite
            // extreme clips to 7/8 (15/16) of it.
            Q5_0 => 0.07,
            Q5_1 => 0.04,
            Q4_0 => 0.13,
            Q4_1 => 0.08,
            Q6_K => 0.04,
            Q5_K => 0.06,
            Q4_K => 0.12,
            Q3_K => 0.3,
            Q2_K => 0.5,
            _ => unreachable!(),
        }
    };
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let types = [F32, F16, BF16, Q8_1, Q8_K].into_iter().chain(QUANT);
    for ty in types {
        for kind in 0..6 {
            let x = rand_row(&mut rng, 512, kind);
            let e = round_trip_error(ty, &x);
            assert!(
                e <= bound(ty),
                "{ty} kind {kind}: relative error {e} > {}",
                bound(ty)
            );
        }
        // All zeros stay all zeros.
        assert_eq!(round_trip_error(ty, &[0.0; 256]), 0.0, "{ty} zeros");
    }
}

#[test]
fn reference_quantizers_match_hand_computed_blocks() {
    // Q8_0: amax 2.54 gives d = 0.02 and multiplier 50; roundf rounds 0.5
    // away from zero.
    let mut x = [0f32; 32];
    x[0] = 2.54;
    x[1] = -0.01; // -0.5 -> -1
    x[2] = 0.03; // 1.5 -> 2
    let q = quantize(Q8_0, &x);
    assert_eq!(rd_f16(&q, 0), half::f16::from_f32(2.54 / 127.0).to_f32());
    assert_eq!(q[2] as i8, 127);
    assert_eq!(q[3] as i8, -1);
    assert_eq!(q[4] as i8, 2);

    // Q4_0: the signed extreme maps to -8 (nibble 0); d = max / -8.
    let mut x = [0f32; 32];
    x[0] = -4.0;
    x[16] = 2.0;
    let q = quantize(Q4_0, &x);
    assert_eq!(rd_f16(&q, 0), 0.5);
    assert_eq!(q[2] & 0xF, 0); // -4 / 0.5 = -8 -> 0
    assert_eq!(q[2] >> 4, 12); // 2 / 0.5 = 4 -> 12
    assert_eq!(q[3], 0x88); // zeros -> 8

    // Q4_1: min -1, max 2 -> d = 0.2, nibbles (x - min) / d.
    let mut x = [0.5f32; 32];
    x[0] = -1.0;
    x[1] = 2.0;
    let q = quantize(Q4_1, &x);
    assert_eq!(rd_f16(&q, 2), -1.0);
    assert_eq!(q[4] & 0xF, 0);
    assert_eq!(q[5] & 0xF, 15);
    assert_eq!(q[6] & 0xF, 8); // 1.5 / 0.2 = 7.5 -> 8
}

fn blocks_rd_f16(b: &[u8], off: usize) -> f32 {
    blocks::rd_f16(b, off)
}
use blocks_rd_f16 as rd_f16;

/// sum |w_i * a_i| over the dequantized rows, for tolerances.
fn abs_dot(w: &[f32], a: &[f32]) -> f64 {
    w.iter()
        .zip(a)
        .map(|(x, y)| (*x as f64 * *y as f64).abs())
        .sum()
}

/// For Q4_1/Q5_1 the kernel uses the activation's f16 `s = d * sum(q)`, which
/// differs from the dequantized sum by f16 rounding: allow for it.
fn min_term_slack(weight: GgmlType, w: &[u8], act: &[u8]) -> f64 {
    let (wsize, moff, ssize) = match weight {
        Q4_1 => (blocks::q4_1::SIZE, blocks::q4_1::M, blocks::q8_1::SIZE),
        Q5_1 => (blocks::q5_1::SIZE, blocks::q5_1::M, blocks::q8_1::SIZE),
        _ => return 0.0,
    };
    w.chunks_exact(wsize)
        .zip(act.chunks_exact(ssize))
        .map(|(wb, ab)| (rd_f16(wb, moff) as f64 * rd_f16(ab, blocks::q8_1::S) as f64).abs() * 1e-3)
        .sum()
}

#[test]
fn vec_dot_matches_dequantized_f64_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for weight in QUANT.into_iter().chain([F32, F16, BF16]) {
        let act_ty = activation_type(weight).unwrap();
        for kind in 0..6 {
            let n = 1024;
            let w = quantize(weight, &rand_row(&mut rng, n, kind));
            let a = quantize_act_row(weight, &rand_row(&mut rng, n, (kind + 1) % 6));
            let wd = dequantize(weight, &w, n);
            let ad = dequantize(act_ty, &a, n);
            let want: f64 = wd.iter().zip(&ad).map(|(x, y)| *x as f64 * *y as f64).sum();
            let tol = 1e-5 * abs_dot(&wd, &ad) + min_term_slack(weight, &w, &a) + 1e-30;
            for isa in Isa::all_available() {
                let got = vec_dot(isa, weight, n, &w, &a).unwrap() as f64;
                assert!(
                    (got - want).abs() <= tol,
                    "{weight} {isa} kind {kind}: got {got}, want {want}, tol {tol}"
                );
            }
        }
    }
}

#[test]
fn quantized_dots_are_bit_identical_across_isas() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for weight in QUANT {
        for (kind, n) in [
            (0, 256),
            (2, 768),
            (3, 1536),
            (4, 4096),
            (5, 512),
            (1, 2304),
        ] {
            let w = quantize(weight, &rand_row(&mut rng, n, kind));
            let a = quantize_act_row(weight, &rand_row(&mut rng, n, kind + 1));
            let want = vec_dot(Isa::Scalar, weight, n, &w, &a).unwrap();
            for isa in Isa::all_available() {
                let got = vec_dot(isa, weight, n, &w, &a).unwrap();
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{weight} {isa} n {n}: {got} vs scalar {want}"
                );
            }
        }
    }
}

#[test]
fn float_dots_agree_across_isas() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for weight in [F32, F16, BF16] {
        for n in [1, 7, 31, 64, 100, 576, 1000] {
            let w = quantize(weight, &rand_row(&mut rng, n.max(32), 0)[..n]);
            let a = quantize_act_row(weight, &rand_row(&mut rng, n.max(32), 0)[..n]);
            let scalar = vec_dot(Isa::Scalar, weight, n, &w, &a).unwrap();
            for isa in Isa::all_available() {
                let got = vec_dot(isa, weight, n, &w, &a).unwrap();
                // The AVX-512 build and the scalar emulation of it agree
                // exactly; the 8-lane AVX2 build only within rounding.
                if isa == Isa::Avx2 {
                    let wd = dequantize(weight, &w, n);
                    let ad = dequantize(weight, &a, n);
                    let tol = 1e-5 * abs_dot(&wd, &ad) as f32 + 1e-30;
                    assert!(
                        (got - scalar).abs() <= tol,
                        "{weight} {isa} n {n}: {got} vs {scalar}"
                    );
                } else {
                    assert_eq!(got.to_bits(), scalar.to_bits(), "{weight} {isa} n {n}");
                }
            }
        }
    }
}

/// Epochs for `with_activation_epoch` in these tests, unique per buffer
/// contents.
static EPOCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1 << 40);

#[test]
fn gemm_is_bit_identical_to_vec_dot_for_every_shape() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    // One block per row as well as several: the tiled kernels compute each
    // block's scales one block ahead.
    let shapes = QUANT.into_iter().chain([F32, F16, BF16]).flat_map(|w| {
        let ns: &[usize] = if w.block_size() == 256 {
            &[512]
        } else {
            &[96, 32]
        };
        ns.iter().map(move |&n| (w, n))
    });
    for (weight, n) in shapes {
        let k = kernels(Isa::Scalar, weight).unwrap();
        let (wb, ab) = (k.weight_row_bytes(n).unwrap(), k.act_row_bytes(n).unwrap());
        // Strides larger than a row, to catch stride mistakes.
        let (w_stride, a_stride) = (wb + 3, ab + 5);
        let max_nr = 13;
        let max_nc = 19;
        let mut w = vec![0u8; w_stride * max_nr];
        for r in 0..max_nr {
            let q = quantize(weight, &rand_row(&mut rng, n, r));
            w[r * w_stride..r * w_stride + wb].copy_from_slice(&q);
        }
        let mut acts = vec![0u8; a_stride * max_nc];
        for c in 0..max_nc {
            let q = quantize_act_row(weight, &rand_row(&mut rng, n, c + 2));
            acts[c * a_stride..c * a_stride + ab].copy_from_slice(&q);
        }
        for isa in Isa::all_available() {
            let k = kernels(isa, weight).unwrap();
            let single: Vec<Vec<u32>> = (0..max_nc)
                .map(|c| {
                    (0..max_nr)
                        .map(|r| {
                            k.vec_dot(
                                n,
                                &w[r * w_stride..r * w_stride + wb],
                                &acts[c * a_stride..c * a_stride + ab],
                            )
                            .unwrap()
                            .to_bits()
                        })
                        .collect()
                })
                .collect();
            // Without, then with, the promise that lets a kernel keep its
            // activation tables across calls (as matmul makes it).
            EPOCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            for epoch in [0, EPOCH.load(std::sync::atomic::Ordering::Relaxed)] {
                super::with_activation_epoch(epoch, || {
                    for nr in [1, 2, 3, 4, 5, 7, 8, 13] {
                        for nc in (1..=10).chain([15, 16, 17, 19]) {
                            // Every row offset, so tiles start at every position.
                            for r0 in [0, 1, max_nr - nr] {
                                if r0 + nr > max_nr {
                                    continue;
                                }
                                let out_stride = nr + 2;
                                let mut out = vec![f32::NAN; out_stride * nc];
                                k.gemm(
                                    n,
                                    &w[r0 * w_stride..],
                                    w_stride,
                                    nr,
                                    &acts,
                                    a_stride,
                                    nc,
                                    &mut out,
                                    out_stride,
                                )
                                .unwrap();
                                for c in 0..nc {
                                    for r in 0..nr {
                                        assert_eq!(
                                            out[c * out_stride + r].to_bits(),
                                            single[c][r0 + r],
                                            "{weight} {isa} nr {nr} nc {nc} r0 {r0} at ({r}, {c})"
                                        );
                                    }
                                    // Padding between output rows is untouched.
                                    assert!(out[c * out_stride + nr].is_nan());
                                }
                            }
                        }
                    }
                });
            }
        }
    }
}

#[test]
fn activation_quantizers_are_bit_identical_across_isas() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for act in [Q8_0, Q8_1, Q8_K, F16, BF16, F32] {
        for kind in 0..6 {
            let x = rand_row(&mut rng, 1024, kind);
            let mut want = vec![0u8; row_bytes(act, 1024).unwrap()];
            quantize_row(Isa::Scalar, act, &x, &mut want).unwrap();
            for isa in Isa::all_available() {
                let mut got = vec![0xEEu8; want.len()];
                quantize_row(isa, act, &x, &mut got).unwrap();
                assert_eq!(got, want, "{act} {isa} kind {kind}");
            }
        }
    }
}

#[test]
fn bad_inputs_give_errors_not_panics() {
    let w = vec![0u8; 20 * 4];
    let a = vec![0u8; 36 * 4];
    // Ragged length.
    assert!(matches!(
        vec_dot(Isa::Scalar, Q4_1, 100, &w, &a),
        Err(QuantError::RaggedRow { block: 32, .. })
    ));
    // Wrong buffer sizes.
    assert!(matches!(
        vec_dot(Isa::Scalar, Q4_1, 128, &w[..79], &a),
        Err(QuantError::BufferSize { .. })
    ));
    assert!(matches!(
        vec_dot(Isa::Scalar, Q4_1, 128, &w, &a[..100]),
        Err(QuantError::BufferSize { .. })
    ));
    // Unsupported and non-activation types.
    assert_eq!(
        activation_type(IQ2_XXS),
        Err(QuantError::UnsupportedType(IQ2_XXS))
    );
    assert!(kernels(Isa::Scalar, Q8_K).is_err());
    let mut out = vec![0u8; 34];
    assert_eq!(
        quantize_row(Isa::Scalar, Q4_0, &[0.0; 32], &mut out),
        Err(QuantError::NotActivationType(Q4_0))
    );
    assert!(quantize_row_ref(I32, &[0.0; 32], &mut out).is_err());
    let mut f = vec![0f32; 32];
    assert!(dequantize_row(Q8_0, &out[..33], &mut f).is_err());
    // gemm: stride smaller than a row, output too short.
    let k = kernels(Isa::Scalar, Q4_1).unwrap();
    let mut o = vec![0f32; 4];
    assert!(matches!(
        k.gemm(128, &w, 79, 1, &a, 144, 1, &mut o, 1),
        Err(QuantError::Stride { .. })
    ));
    assert!(matches!(
        k.gemm(32, &w, 20, 4, &a, 36, 2, &mut o, 4),
        Err(QuantError::BufferSize { .. })
    ));
    // Overflowing stride arithmetic is an error too.
    assert!(k.gemm(32, &w, usize::MAX, 3, &a, 36, 1, &mut o, 4).is_err());
    // Empty gemm is a no-op.
    assert!(k.gemm(32, &[], 20, 0, &a, 36, 1, &mut o, 4).is_ok());
    // Unavailable ISA (when the machine lacks one) is an error.
    for isa in Isa::ALL {
        if !isa.available() {
            assert_eq!(
                kernels(isa, Q4_0).unwrap_err(),
                QuantError::IsaUnavailable(isa)
            );
        }
    }
}

#[test]
fn non_finite_inputs_do_not_panic() {
    let mut x = vec![1.0f32; 512];
    x[3] = f32::NAN;
    x[40] = f32::INFINITY;
    x[77] = f32::NEG_INFINITY;
    x[300] = 3e38;
    x[301] = -3e38;
    x[400] = 1e-40; // subnormal
    for ty in [F32, F16, BF16, Q8_1, Q8_K].into_iter().chain(QUANT) {
        let q = quantize(ty, &x);
        let _ = dequantize(ty, &q, x.len());
    }
    for act in [Q8_0, Q8_1, Q8_K, F16, BF16, F32] {
        let mut out = vec![0u8; row_bytes(act, 512).unwrap()];
        for isa in Isa::all_available() {
            quantize_row(isa, act, &x, &mut out).unwrap();
        }
    }
    // (2^64 - 32) / 32 blocks of 34 bytes overflow usize.
    assert!(row_bytes(Q8_0, usize::MAX / 32 * 32).is_err());
}

#[test]
fn garbage_blocks_do_not_panic() {
    // Arbitrary bytes (NaN/inf scales, out-of-range quants) must not panic.
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    for weight in QUANT {
        let n = 512;
        let act_ty = activation_type(weight).unwrap();
        let w: Vec<u8> = (0..row_bytes(weight, n).unwrap())
            .map(|_| rng.random())
            .collect();
        let a: Vec<u8> = (0..row_bytes(act_ty, n).unwrap())
            .map(|_| rng.random())
            .collect();
        for isa in Isa::all_available() {
            let _ = vec_dot(isa, weight, n, &w, &a).unwrap();
        }
        let mut f = vec![0f32; n];
        dequantize_row(weight, &w, &mut f).unwrap();
    }
}

/// Real tensors of both test models: for every weight type they use, a few
/// rows against real-looking activations, on every ISA: the float reference
/// within tolerance, gemm equal to vec_dot, all ISAs equal.
#[test]
fn real_model_tensors() {
    use crate::gguf::GgufFile;
    use crate::testing::{real_model, RealModel};
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for m in [RealModel::Smollm2, RealModel::Gemma3] {
        let f = GgufFile::open(&real_model(m)).unwrap();
        let mut seen = std::collections::HashSet::new();
        let names: Vec<String> = f.header.tensors.iter().map(|t| t.name.clone()).collect();
        for name in names {
            let (t, data) = f.tensor(&name).unwrap();
            if t.ty == F32 || t.dims.len() != 2 || !seen.insert((t.ty, t.dims[0])) {
                continue;
            }
            let (n, rows) = t.rows();
            let wb = row_bytes(t.ty, n).unwrap();
            let nr = rows.min(9);
            let w = &data[..wb * nr];
            let x = rand_row(&mut rng, n, 0);
            let a = quantize_act_row(t.ty, &x);
            let act_ty = activation_type(t.ty).unwrap();
            let ad = dequantize(act_ty, &a, n);
            for isa in Isa::all_available() {
                let k = kernels(isa, t.ty).unwrap();
                let mut out = vec![0f32; nr];
                k.gemm(n, w, wb, nr, &a, a.len(), 1, &mut out, nr).unwrap();
                for r in 0..nr {
                    let wr = &w[r * wb..(r + 1) * wb];
                    let single = k.vec_dot(n, wr, &a).unwrap();
                    let scalar = vec_dot(Isa::Scalar, t.ty, n, wr, &a).unwrap();
                    assert_eq!(out[r].to_bits(), single.to_bits(), "{name} {isa} row {r}");
                    if QUANT.contains(&t.ty) {
                        assert_eq!(single.to_bits(), scalar.to_bits(), "{name} {isa} row {r}");
                    }
                    let wd = dequantize(t.ty, wr, n);
                    let want: f64 = wd.iter().zip(&ad).map(|(p, q)| *p as f64 * *q as f64).sum();
                    let tol = 1e-5 * abs_dot(&wd, &ad) + min_term_slack(t.ty, wr, &a) + 1e-30;
                    assert!(
                        (single as f64 - want).abs() <= tol,
                        "{name} {isa} row {r}: {single} vs {want}"
                    );
                }
            }
        }
        assert!(!seen.is_empty());
    }
}

/// Under one activation epoch the multi-column kernels reuse their tables
/// (so the buffer must not change); a new epoch derives them again.
#[test]
fn activation_tables_are_reused_within_an_epoch_only() {
    if !Isa::Avx512.available() {
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let (n, nr, nc) = (96, 8, 8);
    for weight in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0] {
        let k = kernels(Isa::Avx512, weight).unwrap();
        let (wb, ab) = (k.weight_row_bytes(n).unwrap(), k.act_row_bytes(n).unwrap());
        let w: Vec<u8> = (0..nr)
            .flat_map(|r| quantize(weight, &rand_row(&mut rng, n, r)))
            .collect();
        let acts_of = |rng: &mut ChaCha8Rng| -> Vec<u8> {
            (0..nc)
                .flat_map(|c| quantize_act_row(weight, &rand_row(rng, n, c + 2)))
                .collect()
        };
        let run = |acts: &[u8], epoch: u64| -> Vec<u32> {
            let mut out = vec![0f32; nr * nc];
            super::with_activation_epoch(epoch, || {
                k.gemm(n, &w, wb, nr, acts, ab, nc, &mut out, nr).unwrap()
            });
            out.iter().map(|x| x.to_bits()).collect()
        };
        let mut acts = acts_of(&mut rng);
        let plain = run(&acts, 0);
        let e1 = EPOCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let first = run(&acts, e1);
        assert_eq!(first, plain, "{weight}");
        // New contents in the same buffer.
        let fresh = acts_of(&mut rng);
        acts.copy_from_slice(&fresh);
        assert_eq!(
            run(&acts, e1),
            first,
            "{weight}: the epoch's tables are kept"
        );
        // A call without the promise lays out its own tables.
        let want = run(&acts, 0);
        assert_ne!(want, first, "{weight}");
        let e2 = EPOCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            run(&acts, e2),
            want,
            "{weight}: a new epoch lays them out again"
        );
    }
}

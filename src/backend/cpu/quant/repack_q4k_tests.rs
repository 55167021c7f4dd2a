//! Tests for the prefill-quad kernels (`repack_q4k`, `Kernels::gemm_quads`):
//! SIMD equal to the scalar specification, column independence, the
//! 4-row activation quantizer's sign choice, the math against a float
//! reference, other types unchanged, bad input. The bits against llama.cpp
//! are in `golden_tests`.

use super::blocks::{self, q4_k, q8_k, QK_K};
use super::tests::rand_row;
use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use GgmlType::*;

fn quantize_w(x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; row_bytes(Q4_K, x.len()).unwrap()];
    quantize_row_ref(Q4_K, x, &mut out).unwrap();
    out
}

fn quantize_a(x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; row_bytes(Q8_K, x.len()).unwrap()];
    quantize_row(Isa::Scalar, Q8_K, x, &mut out).unwrap();
    out
}

/// Activation rows like the oracle's kind 7 on top of `rand_row`: the
/// largest magnitude both positive and negative, the negative first in
/// every other super-block.
fn activation(rng: &mut ChaCha8Rng, n: usize, kind: usize) -> Vec<f32> {
    let mut x = rand_row(rng, n, kind);
    if kind % 7 == 6 {
        for (b, blk) in x.chunks_exact_mut(QK_K).enumerate() {
            blk[3] = if b % 2 == 1 { 5.0 } else { -5.0 };
            blk[200] = -blk[3];
        }
    }
    x
}

/// `nr` weight rows at `w_stride` and `nc` activation rows at `a_stride`
/// (strides larger than a row, to catch stride mistakes).
struct Operands {
    n: usize,
    w: Vec<u8>,
    w_stride: usize,
    acts: Vec<u8>,
    a_stride: usize,
}

impl Operands {
    fn new(rng: &mut ChaCha8Rng, n: usize, nr: usize, nc: usize) -> Self {
        let (wb, ab) = (row_bytes(Q4_K, n).unwrap(), row_bytes(Q8_K, n).unwrap());
        let (w_stride, a_stride) = (wb + 3, ab + 5);
        let mut w = vec![0u8; w_stride * nr];
        for r in 0..nr {
            w[r * w_stride..r * w_stride + wb].copy_from_slice(&quantize_w(&rand_row(rng, n, r)));
        }
        let mut acts = vec![0u8; a_stride * nc];
        for c in 0..nc {
            let a = quantize_a(&activation(rng, n, c + 1));
            acts[c * a_stride..c * a_stride + ab].copy_from_slice(&a);
        }
        Operands {
            n,
            w,
            w_stride,
            acts,
            a_stride,
        }
    }

    fn w_row(&self, r: usize) -> &[u8] {
        let wb = row_bytes(Q4_K, self.n).unwrap();
        &self.w[r * self.w_stride..r * self.w_stride + wb]
    }

    fn act(&self, c: usize) -> &[u8] {
        let ab = row_bytes(Q8_K, self.n).unwrap();
        &self.acts[c * self.a_stride..c * self.a_stride + ab]
    }

    /// `gemm_quads` over rows `r0..r0 + nr` and all `nc` columns, with two
    /// padding floats after each output row (checked untouched).
    fn quads(&self, k: &Kernels, r0: usize, nr: usize, nc: usize) -> Vec<Vec<f32>> {
        let out_stride = nr + 2;
        let mut out = vec![f32::NAN; out_stride * nc];
        k.gemm_quads(
            self.n,
            &self.w[r0 * self.w_stride..],
            self.w_stride,
            nr,
            &self.acts,
            self.a_stride,
            nc,
            &mut out,
            out_stride,
        )
        .unwrap();
        (0..nc)
            .map(|c| {
                assert!(out[c * out_stride + nr].is_nan(), "padding written");
                out[c * out_stride..c * out_stride + nr].to_vec()
            })
            .collect()
    }
}

#[test]
fn quads_equal_the_scalar_specification_on_every_isa_and_shape() {
    let mut rng = ChaCha8Rng::seed_from_u64(40);
    for n in [256, 1024] {
        let (max_nr, max_nc) = (13, 12);
        let ops = Operands::new(&mut rng, n, max_nr, max_nc);
        let nb = n / QK_K;
        for isa in Isa::all_available() {
            let k = kernels(isa, Q4_K).unwrap();
            assert!(k.has_quad_arithmetic());
            for nr in [1, 2, 3, 8, 13] {
                for nc in [4, 8, 12] {
                    for r0 in [0, max_nr - nr] {
                        let got = ops.quads(&k, r0, nr, nc);
                        for (c, col) in got.iter().enumerate() {
                            for (r, v) in col.iter().enumerate() {
                                let want = repack_q4k::pair(nb, ops.w_row(r0 + r), ops.act(c));
                                assert_eq!(
                                    v.to_bits(),
                                    want.to_bits(),
                                    "{isa} n {n} nr {nr} nc {nc} r0 {r0} at ({r}, {c})"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A column's value does not depend on the other three columns of its
/// group, nor on its place in the group.
#[test]
fn quad_columns_are_independent() {
    let mut rng = ChaCha8Rng::seed_from_u64(41);
    let n = 512;
    let nr = 9;
    let ops = Operands::new(&mut rng, n, nr, 4);
    let others = Operands::new(&mut rng, n, 1, 3);
    let ab = row_bytes(Q8_K, n).unwrap();
    for isa in Isa::all_available() {
        let k = kernels(isa, Q4_K).unwrap();
        let base = ops.quads(&k, 0, nr, 4);
        for place in 0..4 {
            for c in 0..4 {
                // Column `c` of the base group at `place`, new columns
                // elsewhere.
                let mut acts = vec![0u8; 4 * ab];
                for p in 0..4 {
                    let src = if p == place {
                        ops.act(c)
                    } else {
                        others.act((p + c) % 3)
                    };
                    acts[p * ab..(p + 1) * ab].copy_from_slice(src);
                }
                let mut out = vec![0f32; 4 * nr];
                k.gemm_quads(n, &ops.w, ops.w_stride, nr, &acts, ab, 4, &mut out, nr)
                    .unwrap();
                for r in 0..nr {
                    assert_eq!(
                        out[place * nr + r].to_bits(),
                        base[c][r].to_bits(),
                        "{isa}: column {c} at place {place}, row {r}"
                    );
                }
            }
        }
    }
}

/// `ggml_quantize_mat_q8_K_4x8` for one row, de-interleaved into an ordinary
/// Q8_K row: `d = 1 / iscale` with `iscale = -127 / amax` when some element
/// equals `+amax`, else `127 / amax`; quants rounded half to even
/// (`_mm256_round_ps`) with i8 saturation; i16 sums of 16.
fn ggml_4x8_row(x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; row_bytes(Q8_K, x.len()).unwrap()];
    for (xb, ob) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(q8_k::SIZE)) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let positive = xb.contains(&amax);
        let iscale = match (amax != 0.0, positive) {
            (false, _) => 0.0,
            (true, true) => -127.0 / amax,
            (true, false) => 127.0 / amax,
        };
        let d = if amax != 0.0 { 1.0 / iscale } else { 0.0 };
        ob[..4].copy_from_slice(&d.to_le_bytes());
        for (j, v) in xb.iter().enumerate() {
            let q = (v * iscale).round_ties_even().clamp(-128.0, 127.0) as i8;
            ob[q8_k::QS + j] = q as u8;
        }
        for j in 0..16 {
            let s: i32 = (0..16)
                .map(|i| ob[q8_k::QS + 16 * j + i] as i8 as i32)
                .sum();
            ob[q8_k::BSUMS + 2 * j..q8_k::BSUMS + 2 * j + 2]
                .copy_from_slice(&(s as i16).to_le_bytes());
        }
    }
    out
}

/// The gemm reads activations from the 4-row quantizer; the kernel takes
/// per-row ones. They agree byte for byte except where the 4-row quantizer
/// picks the other sign, and then every result is still bit-identical.
#[test]
fn per_row_activations_give_the_4_row_quantizers_results() {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let n = 1024;
    let ws: Vec<Vec<u8>> = (0..6)
        .map(|r| quantize_w(&rand_row(&mut rng, n, r)))
        .collect();
    let mut flipped = 0;
    for kind in 0..14 {
        let x = activation(&mut rng, n, kind);
        let ours = quantize_a(&x);
        let theirs = ggml_4x8_row(&x);
        for (a, b) in ours
            .chunks_exact(q8_k::SIZE)
            .zip(theirs.chunks_exact(q8_k::SIZE))
        {
            if a == b {
                continue;
            }
            // The same block with every sign flipped.
            flipped += 1;
            assert_eq!(blocks::rd_f32(a, 0), -blocks::rd_f32(b, 0), "kind {kind}");
            for j in 0..QK_K {
                assert_eq!(
                    a[q8_k::QS + j] as i8,
                    (b[q8_k::QS + j] as i8).wrapping_neg()
                );
            }
            for j in 0..16 {
                let off = q8_k::BSUMS + 2 * j;
                assert_eq!(blocks::rd_i16(a, off), -blocks::rd_i16(b, off));
            }
        }
        for w in &ws {
            let (p, q) = (
                repack_q4k::pair(n / QK_K, w, &ours),
                repack_q4k::pair(n / QK_K, w, &theirs),
            );
            assert_eq!(p.to_bits(), q.to_bits(), "kind {kind}: {p} vs {q}");
        }
    }
    assert!(flipped > 0, "no block exercised the sign choice");
}

/// The quad arithmetic is the dot product (against the dequantized rows in
/// f64, within rounding), and really rounds differently from the decode
/// kernel: otherwise there would be nothing to reproduce.
#[test]
fn quads_are_the_dot_product_and_differ_from_decode_rounding() {
    let mut rng = ChaCha8Rng::seed_from_u64(43);
    let n = 2048;
    let (nr, nc) = (16, 8);
    let ops = Operands::new(&mut rng, n, nr, nc);
    let k = kernels(Isa::detect(), Q4_K).unwrap();
    let quads = ops.quads(&k, 0, nr, nc);
    let mut decode = vec![0f32; nr * nc];
    k.gemm(
        n,
        &ops.w,
        ops.w_stride,
        nr,
        &ops.acts,
        ops.a_stride,
        nc,
        &mut decode,
        nr,
    )
    .unwrap();
    let mut differ = 0;
    for c in 0..nc {
        let mut ad = vec![0f32; n];
        dequantize_row(Q8_K, ops.act(c), &mut ad).unwrap();
        for r in 0..nr {
            let w = ops.w_row(r);
            let mut wd = vec![0f32; n];
            dequantize_row(Q4_K, w, &mut wd).unwrap();
            let want: f64 = wd.iter().zip(&ad).map(|(p, q)| *p as f64 * *q as f64).sum();
            // Bound on the two accumulators before their final difference:
            // |d sc q a| <= |w a| + |dmin m a| per element.
            let mut bound = 0f64;
            for (i, (p, q)) in wd.iter().zip(&ad).enumerate() {
                let wb = &w[(i / QK_K) * q4_k::SIZE..];
                let (_, m) = blocks::scale_min_k4((i % QK_K) / 32, &wb[q4_k::SCALES..]);
                let dmin = blocks::rd_f16(wb, q4_k::DMIN) as f64;
                let mins = (dmin * m as f64 * *q as f64).abs();
                bound += (*p as f64 * *q as f64).abs() + 2.0 * mins;
            }
            let got = quads[c][r];
            assert!(
                (got as f64 - want).abs() <= 1e-5 * bound + 1e-30,
                "({r}, {c}): {got} vs {want}"
            );
            differ += (got.to_bits() != decode[c * nr + r].to_bits()) as usize;
        }
    }
    assert!(differ > 0, "quad and decode arithmetic agreed everywhere");
}

#[test]
fn other_types_take_quads_as_ordinary_gemm_columns() {
    let mut rng = ChaCha8Rng::seed_from_u64(44);
    for weight in [
        Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q5_K, Q6_K, F32, F16, BF16,
    ] {
        let n = 512;
        let (nr, nc) = (5, 8);
        let wb = row_bytes(weight, n).unwrap();
        let act = activation_type(weight).unwrap();
        let ab = row_bytes(act, n).unwrap();
        let mut w = vec![0u8; wb * nr];
        for r in 0..nr {
            quantize_row_ref(
                weight,
                &rand_row(&mut rng, n, r),
                &mut w[r * wb..(r + 1) * wb],
            )
            .unwrap();
        }
        let mut acts = vec![0u8; ab * nc];
        for c in 0..nc {
            quantize_row(
                Isa::Scalar,
                act,
                &rand_row(&mut rng, n, c),
                &mut acts[c * ab..(c + 1) * ab],
            )
            .unwrap();
        }
        for isa in Isa::all_available() {
            let k = kernels(isa, weight).unwrap();
            assert!(!k.has_quad_arithmetic(), "{weight}");
            let mut a = vec![0f32; nr * nc];
            let mut b = vec![1f32; nr * nc];
            k.gemm(n, &w, wb, nr, &acts, ab, nc, &mut a, nr).unwrap();
            k.gemm_quads(n, &w, wb, nr, &acts, ab, nc, &mut b, nr)
                .unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "{weight} {isa}");
        }
    }
}

#[test]
fn bad_quad_inputs_give_errors_not_panics() {
    let n = 512;
    let (wb, ab) = (row_bytes(Q4_K, n).unwrap(), row_bytes(Q8_K, n).unwrap());
    let w = vec![0u8; wb * 3];
    let acts = vec![0u8; ab * 4];
    let mut out = vec![0f32; 3 * 4];
    for isa in Isa::all_available() {
        for weight in [Q4_K, Q6_K] {
            let k = kernels(isa, weight).unwrap();
            for nc in [1, 3, 5] {
                assert_eq!(
                    k.gemm_quads(n, &w, wb, 3, &acts, ab, nc, &mut out, 3),
                    Err(QuantError::QuadColumns(nc))
                );
            }
        }
        let k = kernels(isa, Q4_K).unwrap();
        assert!(matches!(
            k.gemm_quads(n + 32, &w, wb, 3, &acts, ab, 4, &mut out, 3),
            Err(QuantError::RaggedRow { .. })
        ));
        assert!(matches!(
            k.gemm_quads(n, &w[1..], wb, 3, &acts, ab, 4, &mut out, 3),
            Err(QuantError::BufferSize { .. })
        ));
        assert!(matches!(
            k.gemm_quads(n, &w, wb, 3, &acts[..ab * 4 - 1], ab, 4, &mut out, 3),
            Err(QuantError::BufferSize { .. })
        ));
        assert!(matches!(
            k.gemm_quads(n, &w, wb, 3, &acts, ab, 4, &mut out[..11], 3),
            Err(QuantError::BufferSize { .. })
        ));
        assert!(matches!(
            k.gemm_quads(n, &w, wb - 1, 3, &acts, ab, 4, &mut out, 3),
            Err(QuantError::Stride { .. })
        ));
        assert!(matches!(
            k.gemm_quads(n, &w, wb, 3, &acts, ab, 4, &mut out, 2),
            Err(QuantError::Stride { .. })
        ));
        // Empty work is fine, whatever the buffers.
        k.gemm_quads(n, &[], wb, 0, &acts, ab, 4, &mut [], 0)
            .unwrap();
        k.gemm_quads(n, &w, wb, 3, &[], ab, 0, &mut [], 3).unwrap();
    }
}

/// Arbitrary bytes (NaN/inf scales, -128 quants, any bsums) must not panic,
/// and finite results agree across ISAs.
#[test]
fn garbage_blocks_do_not_panic() {
    let mut rng = ChaCha8Rng::seed_from_u64(45);
    let n = 768;
    let (wb, ab) = (row_bytes(Q4_K, n).unwrap(), row_bytes(Q8_K, n).unwrap());
    for _ in 0..20 {
        let w: Vec<u8> = (0..wb * 3).map(|_| rng.random()).collect();
        let acts: Vec<u8> = (0..ab * 4).map(|_| rng.random()).collect();
        let mut want = vec![0f32; 12];
        kernels(Isa::Scalar, Q4_K)
            .unwrap()
            .gemm_quads(n, &w, wb, 3, &acts, ab, 4, &mut want, 3)
            .unwrap();
        for isa in Isa::all_available() {
            let mut got = vec![0f32; 12];
            kernels(isa, Q4_K)
                .unwrap()
                .gemm_quads(n, &w, wb, 3, &acts, ab, 4, &mut got, 3)
                .unwrap();
            for (g, v) in got.iter().zip(&want) {
                assert!(
                    g.is_nan() && v.is_nan() || g.to_bits() == v.to_bits(),
                    "{isa}: {g} vs {v}"
                );
            }
        }
    }
}

/// `cargo test --lib quant::repack_q4k_tests::quad_speed -- --ignored
/// --nocapture`: one thread, Gemma's attn_output shape (640 x 1024), 64
/// prompt tokens, quads against the decode-arithmetic gemm.
#[test]
#[ignore]
fn quad_speed() {
    use std::time::Instant;
    let mut rng = ChaCha8Rng::seed_from_u64(46);
    let (n, nr, nc) = (1024, 640, 64);
    let distinct = Operands::new(&mut rng, n, 64, nc);
    let wb = row_bytes(Q4_K, n).unwrap();
    let w: Vec<u8> = (0..nr)
        .flat_map(|r| distinct.w_row(r % 64).to_vec())
        .collect();
    let ab = row_bytes(Q8_K, n).unwrap();
    let acts: Vec<u8> = (0..nc).flat_map(|c| distinct.act(c).to_vec()).collect();
    let mut out = vec![0f32; nr * nc];
    for isa in Isa::all_available() {
        let k = kernels(isa, Q4_K).unwrap();
        let mut best = [f64::MAX; 2];
        for _ in 0..20 {
            for (i, b) in best.iter_mut().enumerate() {
                let t = Instant::now();
                if i == 0 {
                    k.gemm(n, &w, wb, nr, &acts, ab, nc, &mut out, nr).unwrap();
                } else {
                    k.gemm_quads(n, &w, wb, nr, &acts, ab, nc, &mut out, nr)
                        .unwrap();
                }
                *b = b.min(t.elapsed().as_secs_f64());
            }
        }
        let gops = |t: f64| 2.0 * (n * nr * nc) as f64 / t / 1e9;
        eprintln!(
            "{isa:7} gemm {:7.3} ms ({:5.1} GOP/s)   gemm_quads {:7.3} ms ({:5.1} GOP/s)",
            best[0] * 1e3,
            gops(best[0]),
            best[1] * 1e3,
            gops(best[1])
        );
    }
}

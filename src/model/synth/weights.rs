//! Random tensor data in the GGML layout of any supported type, scaled so a
//! forward pass stays numerically sane: float weights ~ N(0, std), norms
//! ~ 1, and quantized blocks of random bits whose f16 scale fields are
//! overwritten with values that give roughly the same spread.

use std::io::{self, Write};

use half::{bf16, f16};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::gguf::GgmlType;

/// How a tensor's values are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// N(0, std).
    Normal(f32),
    /// 1 + N(0, 0.02): a norm weight.
    Norm,
}

/// The stream of random numbers for tensor number `index` of a model made
/// with `seed`: independent of the order tensors are generated in.
pub fn tensor_rng(seed: u64, index: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index);
    rng
}

fn normal(rng: &mut ChaCha8Rng) -> f32 {
    // Box-Muller; 1 - u keeps the log argument in (0, 1].
    let u1: f32 = 1.0 - rng.random::<f32>();
    let u2: f32 = rng.random::<f32>();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

fn draw(init: Init, rng: &mut ChaCha8Rng) -> f32 {
    match init {
        Init::Normal(std) => std * normal(rng),
        Init::Norm => 1.0 + 0.02 * normal(rng),
    }
}

/// f16 scale fields of a quantized block: (byte offset, typical value).
/// The values give dequantized weights a spread of about 0.02; the layouts
/// are those of ggml-common.h (`block_q4_0` ... `block_q6_K`).
fn scale_fields(ty: GgmlType) -> &'static [(usize, f32)] {
    use GgmlType::*;
    match ty {
        // d * (q - 8), q in 0..16.
        Q4_0 => &[(0, 0.0043)],
        // d * q + m: m centres q's mean of 7.5.
        Q4_1 => &[(0, 0.0043), (2, -0.032)],
        // d * (q - 16), q in 0..32.
        Q5_0 => &[(0, 0.0022)],
        Q5_1 => &[(0, 0.0022), (2, -0.034)],
        // d * q, q an i8.
        Q8_0 => &[(0, 0.00027)],
        // d * sc * q - dmin * m; sc, m in 0..16, q in 0..4.
        Q2_K => &[(80, 0.0015), (82, 0.0022)],
        // d * (sc - 32) * q, q in -4..4.
        Q3_K => &[(108, 0.0005)],
        // d * sc * q - dmin * m; sc, m in 0..64, q in 0..16.
        Q4_K => &[(0, 0.00008), (2, 0.0006)],
        // As Q4_K with q in 0..32.
        Q5_K => &[(0, 0.00004), (2, 0.0006)],
        // d * sc * (q - 32); sc an i8, q in 0..64.
        Q6_K => &[(208, 0.000015)],
        _ => &[],
    }
}

/// Write `n_rows` rows of `row_len` random values of type `ty` to `out`.
/// Quantized types are only for [`Init::Normal`] (norms are F32).
pub fn write_random(
    ty: GgmlType,
    row_len: u64,
    n_rows: u64,
    init: Init,
    rng: &mut ChaCha8Rng,
    out: &mut dyn Write,
) -> io::Result<()> {
    let row_bytes = ty.row_bytes(row_len).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a row of {row_len} is not a whole number of {ty} blocks"),
        )
    })? as usize;
    // Whole rows, about 1 MiB at a time.
    let rows_per_chunk = ((1 << 20) / row_bytes.max(1)).max(1) as u64;
    let mut buf = Vec::with_capacity(row_bytes * rows_per_chunk as usize);
    let mut done = 0;
    while done < n_rows {
        let rows = rows_per_chunk.min(n_rows - done);
        buf.clear();
        let n = (rows * row_len) as usize;
        match ty {
            GgmlType::F32 => {
                (0..n).for_each(|_| buf.extend_from_slice(&draw(init, rng).to_le_bytes()))
            }
            GgmlType::F16 => (0..n)
                .for_each(|_| buf.extend_from_slice(&f16::from_f32(draw(init, rng)).to_le_bytes())),
            GgmlType::BF16 => (0..n).for_each(|_| {
                buf.extend_from_slice(&bf16::from_f32(draw(init, rng)).to_le_bytes())
            }),
            _ => {
                let fields = scale_fields(ty);
                if fields.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("cannot make random {ty} data"),
                    ));
                }
                let block = ty.type_size();
                buf.resize(rows as usize * row_bytes, 0);
                rng.fill_bytes(&mut buf);
                for b in buf.chunks_exact_mut(block) {
                    for &(off, typical) in fields {
                        // Vary each block's scale by up to ±25%.
                        let v = typical * (0.75 + 0.5 * rng.random::<f32>());
                        b[off..off + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
                    }
                }
            }
        }
        out.write_all(&buf)?;
        done += rows;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_types_have_the_asked_spread() {
        let mut out = Vec::new();
        write_random(
            GgmlType::F32,
            256,
            64,
            Init::Normal(0.02),
            &mut tensor_rng(1, 0),
            &mut out,
        )
        .unwrap();
        let v: Vec<f32> = out
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32).sqrt();
        assert!(mean.abs() < 0.002, "{mean}");
        assert!((std - 0.02).abs() < 0.002, "{std}");

        let mut out = Vec::new();
        write_random(
            GgmlType::F16,
            32,
            8,
            Init::Norm,
            &mut tensor_rng(1, 1),
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), 32 * 8 * 2);
        for c in out.chunks_exact(2) {
            let x = f16::from_le_bytes([c[0], c[1]]).to_f32();
            assert!((0.8..1.2).contains(&x), "{x}");
        }
    }

    #[test]
    fn quantized_blocks_get_small_finite_scales() {
        for ty in GgmlType::SUPPORTED
            .into_iter()
            .filter(|t| t.block_size() > 1)
        {
            let mut out = Vec::new();
            write_random(
                ty,
                512,
                3,
                Init::Normal(0.02),
                &mut tensor_rng(7, 2),
                &mut out,
            )
            .unwrap();
            assert_eq!(out.len() as u64, ty.row_bytes(512).unwrap() * 3, "{ty}");
            for b in out.chunks_exact(ty.type_size()) {
                for &(off, typical) in scale_fields(ty) {
                    let d = f16::from_le_bytes([b[off], b[off + 1]]).to_f32();
                    assert!(
                        d.is_finite() && d.abs() <= typical.abs() * 1.3 && d != 0.0,
                        "{ty} @{off}: {d}"
                    );
                }
            }
        }
    }

    #[test]
    fn same_seed_same_bytes_and_streams_differ() {
        let gen = |seed, idx| {
            let mut out = Vec::new();
            write_random(
                GgmlType::Q4_K,
                256,
                2,
                Init::Normal(0.02),
                &mut tensor_rng(seed, idx),
                &mut out,
            )
            .unwrap();
            out
        };
        assert_eq!(gen(3, 0), gen(3, 0));
        assert_ne!(gen(3, 0), gen(3, 1));
        assert_ne!(gen(3, 0), gen(4, 0));
    }

    #[test]
    fn partial_blocks_and_unknown_types_are_errors() {
        let mut out = Vec::new();
        let rng = &mut tensor_rng(0, 0);
        assert!(write_random(GgmlType::Q4_K, 100, 1, Init::Normal(0.02), rng, &mut out).is_err());
        assert!(write_random(GgmlType::IQ2_XS, 256, 1, Init::Normal(0.02), rng, &mut out).is_err());
    }
}

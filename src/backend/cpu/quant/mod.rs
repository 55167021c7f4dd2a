//! Quantized tensor kernels, bit-faithful to llama.cpp's ggml-cpu on x86.
//!
//! - [`activation_type`]: the type a weight type's activations are quantized
//!   to before a dot product (ggml's `vec_dot_type`).
//! - [`quantize_row`]: f32 activations to that type, as ggml-cpu's x86 build
//!   does it; [`quantize_row_ref`]: ggml's reference quantizers for weights.
//! - [`dequantize_row`]: ggml's `dequantize_row_*`.
//! - [`vec_dot`] and [`gemm`]: dot products of weight rows with activation
//!   rows. `gemm` computes many at once and gives, for every (row, column),
//!   the same bits as `vec_dot` on the same ISA (batch invariance). The
//!   quantized types give the same bits on every ISA: those of llama.cpp's
//!   x86 decode kernels (`ggml_vec_dot_*`, and for Q4_K its repacked
//!   `ggml_gemv_q4_K_8x8_q8_K`; see `dot_scalar`).
//! - [`Kernels::gemm_quads`]: prompt tokens in aligned groups of four, with
//!   the arithmetic llama.cpp's prefill uses for them (for Q4_K its repacked
//!   4-column gemm, see `repack_q4k`; for every other type the same as
//!   `gemm`).
//! - [`kernels`]: the same, resolved once into function pointers for hot loops.
//!
//! Rows are byte slices (slices of the mmapped file for weights). Every entry
//! point checks lengths and types and returns [`QuantError`] rather than
//! panicking.

#[cfg(test)]
mod bench;
mod blocks;
mod dequant;
#[cfg(target_arch = "x86_64")]
mod dot_avx2;
#[cfg(target_arch = "x86_64")]
mod dot_avx512;
mod dot_scalar;
mod gemm;
mod quantize_act;
#[cfg(target_arch = "x86_64")]
mod quantize_act_x86;
mod quantize_ref;
mod repack_q4k;
#[cfg(test)]
mod repack_q4k_tests;
#[cfg(target_arch = "x86_64")]
mod simd;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod tile_q32;
#[cfg(target_arch = "x86_64")]
mod tile_q32_rows;
#[cfg(target_arch = "x86_64")]
mod tile_qk;

pub use gemm::with_activation_epoch;

use super::isa::Isa;
use super::vec;
use crate::gguf::GgmlType;

pub(crate) use quantize_act::fp32_to_bf16;

/// Why a kernel call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    #[error("tensor type {0} is not supported by the CPU kernels")]
    UnsupportedType(GgmlType),
    #[error("{0} is not an activation type (expected Q8_0, Q8_1, Q8_K, F16, BF16 or F32)")]
    NotActivationType(GgmlType),
    #[error("row length {n} is not a multiple of the {ty} block size {block}")]
    RaggedRow {
        ty: GgmlType,
        n: usize,
        block: usize,
    },
    #[error("{what}: buffer holds {got} bytes or elements, needs {need}")]
    BufferSize {
        what: &'static str,
        got: usize,
        need: usize,
    },
    #[error("{what}: stride {stride} is smaller than a row ({row})")]
    Stride {
        what: &'static str,
        stride: usize,
        row: usize,
    },
    #[error("instruction set {0} is not available on this CPU")]
    IsaUnavailable(Isa),
    #[error("gemm_quads takes columns in groups of 4, got {0}")]
    QuadColumns(usize),
}

/// Types that can hold weights (any supported type) plus the activation-only
/// Q8_1 and Q8_K, which can also be dequantized and quantized.
fn is_row_type(ty: GgmlType) -> bool {
    ty.is_supported() || matches!(ty, GgmlType::Q8_1 | GgmlType::Q8_K)
}

/// The type activations are quantized to for a dot product with `weight`
/// (ggml's `type_traits_cpu[weight].vec_dot_type`).
pub fn activation_type(weight: GgmlType) -> Result<GgmlType, QuantError> {
    use GgmlType::*;
    Ok(match weight {
        F32 => F32,
        F16 => F16,
        BF16 => BF16,
        Q4_0 | Q5_0 | Q8_0 => Q8_0,
        Q4_1 | Q5_1 => Q8_1,
        Q2_K | Q3_K | Q4_K | Q5_K | Q6_K => Q8_K,
        other => return Err(QuantError::UnsupportedType(other)),
    })
}

/// Bytes in a row of `n` elements of `ty`, checking that `n` is whole blocks.
pub fn row_bytes(ty: GgmlType, n: usize) -> Result<usize, QuantError> {
    let block = ty.block_size();
    if !n.is_multiple_of(block) {
        return Err(QuantError::RaggedRow { ty, n, block });
    }
    (n / block)
        .checked_mul(ty.type_size())
        .ok_or(QuantError::BufferSize {
            what: "row size",
            got: n,
            need: usize::MAX,
        })
}

fn check_len(what: &'static str, got: usize, need: usize) -> Result<(), QuantError> {
    if got != need {
        return Err(QuantError::BufferSize { what, got, need });
    }
    Ok(())
}

fn check_isa(isa: Isa) -> Result<(), QuantError> {
    if !isa.available() {
        return Err(QuantError::IsaUnavailable(isa));
    }
    Ok(())
}

/// Quantizes activations `x` to `act` (one of Q8_0, Q8_1, Q8_K, F16, BF16,
/// F32) exactly as ggml-cpu's x86 build does; `out` must be exactly one row.
/// The bytes are the same on every ISA (`isa` picks the implementation).
pub fn quantize_row(isa: Isa, act: GgmlType, x: &[f32], out: &mut [u8]) -> Result<(), QuantError> {
    check_isa(isa)?;
    use GgmlType::*;
    if !matches!(act, Q8_0 | Q8_1 | Q8_K | F16 | BF16 | F32) {
        return Err(QuantError::NotActivationType(act));
    }
    check_len("quantize_row output", out.len(), row_bytes(act, x.len())?)?;
    quantize_act::quantize_act(act, x, out, isa != Isa::Scalar);
    Ok(())
}

/// ggml's reference quantizer (`quantize_row_*_ref`) for any supported type
/// (and Q8_1, Q8_K): what `llama-quantize` writes without an importance
/// matrix. `out` must be exactly one row.
pub fn quantize_row_ref(ty: GgmlType, x: &[f32], out: &mut [u8]) -> Result<(), QuantError> {
    if !is_row_type(ty) {
        return Err(QuantError::UnsupportedType(ty));
    }
    check_len(
        "quantize_row_ref output",
        out.len(),
        row_bytes(ty, x.len())?,
    )?;
    quantize_ref::quantize_ref(ty, x, out);
    Ok(())
}

/// ggml's `dequantize_row_*`: `src` must be exactly the row of `out.len()`
/// elements.
pub fn dequantize_row(ty: GgmlType, src: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    if !is_row_type(ty) {
        return Err(QuantError::UnsupportedType(ty));
    }
    check_len("dequantize_row input", src.len(), row_bytes(ty, out.len())?)?;
    dequant::dequantize(ty, src, out);
    Ok(())
}

/// Dot product of `n` elements: one weight row `w` of type `weight` and one
/// activation row `act` of type `activation_type(weight)`.
pub fn vec_dot(
    isa: Isa,
    weight: GgmlType,
    n: usize,
    w: &[u8],
    act: &[u8],
) -> Result<f32, QuantError> {
    kernels(isa, weight)?.vec_dot(n, w, act)
}

/// Many dot products at once: `nr` weight rows (row `r` at `w[r * w_stride..]`)
/// against `nc` activation rows (column `c` at `acts[c * act_stride..]`), each
/// `n` elements long. Writes `out[c * out_stride + r]`. Every value is
/// bit-identical to `vec_dot` of that pair on the same ISA.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    isa: Isa,
    weight: GgmlType,
    n: usize,
    w: &[u8],
    w_stride: usize,
    nr: usize,
    acts: &[u8],
    act_stride: usize,
    nc: usize,
    out: &mut [f32],
    out_stride: usize,
) -> Result<(), QuantError> {
    kernels(isa, weight)?.gemm(n, w, w_stride, nr, acts, act_stride, nc, out, out_stride)
}

/// `unsafe` because SIMD variants need their ISA: a `Kernels` only ever holds
/// pointers for an ISA that `available()` confirmed. The slices hold exactly
/// `nb` blocks (elements for F32/F16/BF16).
pub(crate) type DotFn = unsafe fn(nb: usize, w: &[u8], a: &[u8]) -> f32;

/// A gemm over validated buffers; see [`gemm::GemmArgs`].
pub(crate) type GemmFn = unsafe fn(args: &gemm::GemmArgs<'_>, out: &mut [f32]);

/// Kernels for one (ISA, weight type) pair, resolved once. Cheap to copy.
#[derive(Clone, Copy)]
pub struct Kernels {
    isa: Isa,
    weight: GgmlType,
    act: GgmlType,
    dot: DotFn,
    gemm: GemmFn,
    /// The prefill-quad kernel where it differs from `gemm`.
    quads: Option<GemmFn>,
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernels")
            .field("isa", &self.isa)
            .field("weight", &self.weight)
            .field("act", &self.act)
            .finish()
    }
}

/// Resolves the kernels for `weight` on `isa` (which must be available).
pub fn kernels(isa: Isa, weight: GgmlType) -> Result<Kernels, QuantError> {
    check_isa(isa)?;
    let act = activation_type(weight)?;
    let (dot, gemm) = select(isa, weight);
    Ok(Kernels {
        isa,
        weight,
        act,
        dot,
        gemm,
        quads: repack_q4k::select(isa, weight),
    })
}

fn select(isa: Isa, weight: GgmlType) -> (DotFn, GemmFn) {
    #[cfg(target_arch = "x86_64")]
    {
        let simd = match isa {
            Isa::Avx512 => dot_avx512::select(weight),
            Isa::Avx2 => dot_avx2::select(weight),
            Isa::Scalar => None,
        };
        if let Some(k) = simd {
            return k;
        }
    }
    let _ = isa;
    (scalar_dot(weight), gemm::gemm_by_dot_scalar)
}

/// The portable dot for `weight` (activation type implied).
fn scalar_dot(weight: GgmlType) -> DotFn {
    use GgmlType::*;
    match weight {
        F32 => |nb, w, a| vec::dot_f32_bytes(Isa::Scalar, nb, w, a),
        F16 => |nb, w, a| vec::dot_f16_bytes(Isa::Scalar, nb, w, a),
        BF16 => |nb, w, a| vec::dot_bf16_bytes(Isa::Scalar, nb, w, a),
        Q4_0 => dot_scalar::q4_0,
        Q4_1 => dot_scalar::q4_1,
        Q5_0 => dot_scalar::q5_0,
        Q5_1 => dot_scalar::q5_1,
        Q8_0 => dot_scalar::q8_0,
        Q2_K => dot_scalar::q2_k,
        Q3_K => dot_scalar::q3_k,
        Q4_K => dot_scalar::q4_k,
        Q5_K => dot_scalar::q5_k,
        Q6_K => dot_scalar::q6_k,
        other => unreachable!("scalar_dot: {other} rejected by activation_type"),
    }
}

impl Kernels {
    pub fn isa(&self) -> Isa {
        self.isa
    }

    pub fn weight_type(&self) -> GgmlType {
        self.weight
    }

    /// The activation type these kernels expect.
    pub fn act_type(&self) -> GgmlType {
        self.act
    }

    /// Bytes of one activation row of `n` elements.
    pub fn act_row_bytes(&self, n: usize) -> Result<usize, QuantError> {
        row_bytes(self.act, n)
    }

    /// Bytes of one weight row of `n` elements.
    pub fn weight_row_bytes(&self, n: usize) -> Result<usize, QuantError> {
        row_bytes(self.weight, n)
    }

    /// Quantizes one activation row for these kernels (see [`quantize_row`]).
    pub fn quantize_act(&self, x: &[f32], out: &mut [u8]) -> Result<(), QuantError> {
        check_len(
            "quantize_act output",
            out.len(),
            row_bytes(self.act, x.len())?,
        )?;
        quantize_act::quantize_act(self.act, x, out, self.isa != Isa::Scalar);
        Ok(())
    }

    /// See [`vec_dot`].
    pub fn vec_dot(&self, n: usize, w: &[u8], act: &[u8]) -> Result<f32, QuantError> {
        let wb = row_bytes(self.weight, n)?;
        let ab = row_bytes(self.act, n)?;
        check_len("vec_dot weight row", w.len(), wb)?;
        check_len("vec_dot activation row", act.len(), ab)?;
        let nb = n / self.weight.block_size();
        // SAFETY: lengths checked above; the ISA was checked in `kernels`.
        Ok(unsafe { (self.dot)(nb, w, act) })
    }

    /// See [`gemm`].
    #[allow(clippy::too_many_arguments)]
    pub fn gemm(
        &self,
        n: usize,
        w: &[u8],
        w_stride: usize,
        nr: usize,
        acts: &[u8],
        act_stride: usize,
        nc: usize,
        out: &mut [f32],
        out_stride: usize,
    ) -> Result<(), QuantError> {
        let wb = row_bytes(self.weight, n)?;
        let ab = row_bytes(self.act, n)?;
        if nr == 0 || nc == 0 {
            return Ok(());
        }
        check_strided("gemm weights", w.len(), w_stride, wb, nr)?;
        check_strided("gemm activations", acts.len(), act_stride, ab, nc)?;
        check_strided("gemm output", out.len(), out_stride, nr, nc)?;
        let args = gemm::GemmArgs {
            nb: n / self.weight.block_size(),
            wb,
            ab,
            dot: self.dot,
            w,
            w_stride,
            nr,
            acts,
            act_stride,
            nc,
            out_stride,
        };
        // SAFETY: every row and output range checked above; ISA checked in
        // `kernels`.
        unsafe { (self.gemm)(&args, out) };
        Ok(())
    }
    /// Whether [`Kernels::gemm_quads`] computes differently from
    /// [`Kernels::gemm`] (true for Q4_K, whose prefill llama.cpp runs
    /// through its repacked 4-column gemm). Where false, quads may be mixed
    /// freely with other columns.
    pub fn has_quad_arithmetic(&self) -> bool {
        self.quads.is_some()
    }

    /// Like [`Kernels::gemm`], for `nc` prompt-token columns taken as
    /// `nc / 4` groups of four (`nc` must be a multiple of 4): the values
    /// llama.cpp's prefill gives columns `4k..4k+4` of a mul_mat. Every
    /// value depends only on its own (row, column) pair, and is the same on
    /// every ISA. llama.cpp computes the last `n % 4` columns of a mul_mat
    /// with its decode kernel: give those to [`Kernels::gemm`].
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_quads(
        &self,
        n: usize,
        w: &[u8],
        w_stride: usize,
        nr: usize,
        acts: &[u8],
        act_stride: usize,
        nc: usize,
        out: &mut [f32],
        out_stride: usize,
    ) -> Result<(), QuantError> {
        if !nc.is_multiple_of(4) {
            return Err(QuantError::QuadColumns(nc));
        }
        let Some(quads) = self.quads else {
            return self.gemm(n, w, w_stride, nr, acts, act_stride, nc, out, out_stride);
        };
        let wb = row_bytes(self.weight, n)?;
        let ab = row_bytes(self.act, n)?;
        if nr == 0 || nc == 0 {
            return Ok(());
        }
        check_strided("gemm_quads weights", w.len(), w_stride, wb, nr)?;
        check_strided("gemm_quads activations", acts.len(), act_stride, ab, nc)?;
        check_strided("gemm_quads output", out.len(), out_stride, nr, nc)?;
        let args = gemm::GemmArgs {
            nb: n / self.weight.block_size(),
            wb,
            ab,
            dot: self.dot,
            w,
            w_stride,
            nr,
            acts,
            act_stride,
            nc,
            out_stride,
        };
        // SAFETY: as in `gemm`; `nc` is a multiple of 4.
        unsafe { quads(&args, out) };
        Ok(())
    }
}

/// `count` rows of `row` units at `stride` must fit in `len`.
fn check_strided(
    what: &'static str,
    len: usize,
    stride: usize,
    row: usize,
    count: usize,
) -> Result<(), QuantError> {
    if stride < row {
        return Err(QuantError::Stride { what, stride, row });
    }
    let need = (count - 1)
        .checked_mul(stride)
        .and_then(|v| v.checked_add(row))
        .ok_or(QuantError::BufferSize {
            what,
            got: len,
            need: usize::MAX,
        })?;
    if len < need {
        return Err(QuantError::BufferSize {
            what,
            got: len,
            need,
        });
    }
    Ok(())
}

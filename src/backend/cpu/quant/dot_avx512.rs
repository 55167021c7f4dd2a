//! AVX-512 (F/BW/VL/DQ/VNNI) kernels: the same arithmetic as `dot_avx2`,
//! with `vpdpbusd`/`vpdpwssd` integer dots, 32 registers for larger tiles.

use super::gemm::{gemm_by_dot_scalar, single, GemmArgs};
use super::simd::Vnni;
use super::{dot_scalar, tile_q32, tile_qk, DotFn, GemmFn};
use crate::backend::cpu::{vec, Isa};
use crate::gguf::GgmlType;

macro_rules! q32 {
    ($gemm:ident, $dot:ident, $ty:ident, $scalar:path) => {
        #[target_feature(
            enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,bmi2"
        )]
        unsafe fn $gemm(args: &GemmArgs<'_>, out: &mut [f32]) {
            unsafe { tile_q32::gemm::<tile_q32::$ty, Vnni, 8, 4, 4>(args, out) }
        }
        unsafe fn $dot(nb: usize, w: &[u8], a: &[u8]) -> f32 {
            unsafe { single(nb, w, a, $gemm, $scalar) }
        }
    };
}

q32!(gemm_q4_0, dot_q4_0, Q4_0, dot_scalar::q4_0);
q32!(gemm_q4_1, dot_q4_1, Q4_1, dot_scalar::q4_1);
q32!(gemm_q5_0, dot_q5_0, Q5_0, dot_scalar::q5_0);
q32!(gemm_q5_1, dot_q5_1, Q5_1, dot_scalar::q5_1);
q32!(gemm_q8_0, dot_q8_0, Q8_0, dot_scalar::q8_0);

macro_rules! qk {
    ($gemm:ident, $dot:ident, $ty:ident, $scalar:path) => {
        #[target_feature(
            enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,bmi2"
        )]
        unsafe fn $gemm(args: &GemmArgs<'_>, out: &mut [f32]) {
            unsafe { tile_qk::gemm::<tile_qk::$ty, Vnni, 4>(args, out) }
        }
        unsafe fn $dot(nb: usize, w: &[u8], a: &[u8]) -> f32 {
            unsafe { single(nb, w, a, $gemm, $scalar) }
        }
    };
}

qk!(gemm_q2_k, dot_q2_k, Q2K, dot_scalar::q2_k);
qk!(gemm_q3_k, dot_q3_k, Q3K, dot_scalar::q3_k);
qk!(gemm_q4_k, dot_q4_k, Q4K, dot_scalar::q4_k);
qk!(gemm_q5_k, dot_q5_k, Q5K, dot_scalar::q5_k);
qk!(gemm_q6_k, dot_q6_k, Q6K, dot_scalar::q6_k);

pub(super) fn select(weight: GgmlType) -> Option<(DotFn, GemmFn)> {
    use GgmlType::*;
    Some(match weight {
        Q4_0 => (dot_q4_0, gemm_q4_0),
        Q4_1 => (dot_q4_1, gemm_q4_1),
        Q5_0 => (dot_q5_0, gemm_q5_0),
        Q5_1 => (dot_q5_1, gemm_q5_1),
        Q8_0 => (dot_q8_0, gemm_q8_0),
        Q2_K => (dot_q2_k, gemm_q2_k),
        Q3_K => (dot_q3_k, gemm_q3_k),
        Q4_K => (dot_q4_k, gemm_q4_k),
        Q5_K => (dot_q5_k, gemm_q5_k),
        Q6_K => (dot_q6_k, gemm_q6_k),
        F32 => (
            |nb, w, a| vec::dot_f32_bytes(Isa::Avx512, nb, w, a),
            gemm_by_dot_scalar,
        ),
        F16 => (
            |nb, w, a| vec::dot_f16_bytes(Isa::Avx512, nb, w, a),
            gemm_by_dot_scalar,
        ),
        BF16 => (
            |nb, w, a| vec::dot_bf16_bytes(Isa::Avx512, nb, w, a),
            gemm_by_dot_scalar,
        ),
        _ => return None,
    })
}

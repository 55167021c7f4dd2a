//! The CPU backend: numeric kernels, synchronous and allocation-free on the
//! hot path, plus the thread pool and the matrix driver the forward pass
//! runs on.
//!
//! - `isa`: the SIMD level, detected once or forced by the caller.
//! - `quant`: block formats, (de)quantization, quantized dot products and gemm.
//! - `vec`: f32/f16 helpers (attention dot products, softmax, norms, SiLU/GELU).
//! - `threadpool`: the fork-join pool; `matmul`: weight rows split across it.

pub mod isa;
pub mod matmul;
pub mod quant;
pub mod threadpool;
pub mod vec;

pub use isa::Isa;

#[cfg(test)]
mod golden_tests;

//! The CPU backend: numeric kernels, synchronous and allocation-free on the
//! hot path. Threads, the matmul driver and the forward pass live above it.
//!
//! - `isa`: the SIMD level, detected once or forced by the caller.
//! - `quant`: block formats, (de)quantization, quantized dot products and gemm.
//! - `vec`: f32/f16 helpers (attention dot products, softmax, norms, SiLU/GELU).

pub mod isa;
pub mod quant;
pub mod vec;

pub use isa::Isa;

#[cfg(test)]
mod golden_tests;

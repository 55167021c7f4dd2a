//! llorchd: serve and orchestrate LLM inference on GGUF models.
//!
//! Layout (see docs/ARCHITECTURE.md for the invariants):
//! - `config`: typed TOML config, defaults, env overrides; depends on nothing.
//! - `gguf`: the GGUF format (parse over bytes, write, tensor types).
//! - `backend`: numeric kernels (`backend::cpu`: quantized dot products, gemm,
//!   f16/f32 vector helpers), bit-faithful to llama.cpp's ggml-cpu.
//! - `testing`: where tests find the real models (not used by the server).

pub mod backend;
pub mod config;
pub mod gguf;
#[doc(hidden)]
pub mod testing;

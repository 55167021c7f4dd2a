//! llorchd: serve and orchestrate LLM inference on GGUF models.
//!
//! Layout (see docs/ARCHITECTURE.md for the invariants):
//! - `cli`: subcommand bodies of the binary (`anyhow` lives here and in main).
//! - `config`: typed TOML config, defaults, env overrides; depends on nothing.
//! - `gguf`: the GGUF format (parse over bytes, write, tensor types).
//! - `backend`: numeric kernels (`backend::cpu`: quantized dot products, gemm,
//!   f16/f32 vector helpers, thread pool, matrix driver), bit-faithful to
//!   llama.cpp's ggml-cpu.
//! - `model`: hyperparameters, weights, tokenizers, chat templates, forward
//!   pass, KV cache, sampling.
//! - `worker`: pools, the engine thread and continuous batching.
//! - `telemetry`: metric names, the Prometheus recorder, logging, systemd notify.
//! - `testing`: where tests find the real models (not used by the server).

pub mod backend;
pub mod cli;
pub mod config;
pub mod gguf;
pub mod model;
pub mod telemetry;
#[doc(hidden)]
pub mod testing;
pub mod worker;

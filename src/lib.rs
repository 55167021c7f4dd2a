//! llorchd: serve and orchestrate LLM inference on GGUF models.
//!
//! Layout (see docs/ARCHITECTURE.md for the invariants):
//! - `api`: HTTP routes and JSON wire shapes (the node protocol so far).
//! - `config`: typed TOML config, defaults, env overrides; depends on nothing.
//! - `gguf`: the GGUF format (parse over bytes, write, tensor types, summary).
//! - `backend`: numeric kernels (`backend::cpu`: quantized dot products, gemm,
//!   f16/f32 vector helpers, thread pool, matrix driver), bit-faithful to
//!   llama.cpp's ggml-cpu.
//! - `model`: hyperparameters, weights, tokenizers, chat templates, forward
//!   pass, KV cache, sampling, synthetic models.
//! - `net`: bearer auth, TLS (rustls), pure-Rust DNS, the HTTP client and
//!   the accept loop shared by the HTTP servers.
//! - `store`: the model store and its redb catalog (the only redb user).
//! - `control`: the control side (node registry and node placement so far).
//! - `worker`: pools, the engine thread and continuous batching.
//! - `telemetry`: metric names, the Prometheus recorder, logging, systemd notify.
//! - `testing`: where tests find the real models (not used by the server).
//!
//! The CLI's subcommand bodies live in the binary (`src/cli/`), where
//! `anyhow` is allowed.

pub mod api;
pub mod backend;
pub mod config;
pub mod control;
pub mod gguf;
pub mod model;
pub mod net;
pub mod store;
pub mod telemetry;
#[doc(hidden)]
pub mod testing;
pub mod worker;

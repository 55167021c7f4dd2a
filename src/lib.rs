//! llorchd: serve and orchestrate LLM inference on GGUF models.
//!
//! Layout (see docs/ARCHITECTURE.md for the invariants):
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
//! - `worker`: pools, the engine thread and continuous batching.
//! - `transport`: how the control side reaches a pool (`PoolClient`), with
//!   the in-process implementation `LocalPool`.
//! - `control`: admission, placement, sessions, task records, dispatch; the
//!   cloud node registry and node placement.
//! - `api`: HTTP routes, wire shapes, SSE, the OpenAI surface, the node
//!   protocol.
//! - `profile`: wiring a process from its config (`profile::Home`).
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
pub mod profile;
pub mod store;
pub mod telemetry;
#[doc(hidden)]
pub mod testing;
pub mod transport;
pub mod worker;

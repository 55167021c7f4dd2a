//! llorchd: serve and orchestrate LLM inference on GGUF models.
//!
//! Layout (see docs/ARCHITECTURE.md for the invariants):
//! - `config`: typed TOML config, defaults, env overrides; depends on nothing.
//! - `gguf`: the GGUF format (parse over bytes, write, tensor types).
//! - `telemetry`: metric names, the Prometheus recorder, logging, systemd notify.
//! - `testing`: where tests find the real models (not used by the server).

pub mod config;
pub mod gguf;
pub mod telemetry;
#[doc(hidden)]
pub mod testing;

//! llorchd: serve and orchestrate LLM inference on GGUF models.
//!
//! Layout (see docs/ARCHITECTURE.md for the invariants):
//! - `config`: typed TOML config, defaults, env overrides; depends on nothing.
//! - `gguf`: the GGUF format (parse over bytes, write, tensor types).

pub mod config;
pub mod gguf;

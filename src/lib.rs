//! llorchd: serve and orchestrate LLM inference on GGUF models.
//!
//! Layout (see docs/ARCHITECTURE.md for the invariants):
//! - `cli`: subcommand bodies of the binary (`anyhow` lives here and in main).
//! - `config`: typed TOML config, defaults, env overrides; depends on nothing.
//! - `gguf`: the GGUF format (parse over bytes, write, tensor types).
//! - `model`: tokenizers and chat templates (the engine joins later).
//! - `testing`: where tests find the real models (not used by the server).

pub mod cli;
pub mod config;
pub mod gguf;
pub mod model;
#[doc(hidden)]
pub mod testing;

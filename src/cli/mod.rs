//! Subcommand bodies of the `llorchd` binary. Like `main.rs`, this is where
//! `anyhow` may be used.

pub mod tokenize;

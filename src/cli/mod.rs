//! The command line (clap derive).
//!
//! Adding a subcommand: write `src/cli/<name>.rs` with a clap `Args` type
//! that implements [`Run`], declare the module below, and add one line to
//! the `commands!` list. Exit codes: 0 ok, 1 runtime error, 2 usage or
//! validation error (bad arguments, invalid config, invalid ids); errors go
//! to stderr as one line.

mod bench;
mod check_config;
mod engine_args;
mod generate;
mod models;
mod serve;
mod synth;
mod tokenize;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use llorchd::config::{self, Config};

/// Serve and orchestrate LLM inference on GGUF models.
#[derive(Debug, Parser)]
#[command(name = "llorchd", version, propagate_version = true)]
pub struct Cli {
    /// Config file (TOML). Default: $LLORCH_CONFIG, else built-in defaults.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// What every subcommand gets besides its own arguments.
#[derive(Debug)]
pub struct Context {
    config_path: Option<PathBuf>,
}

impl Context {
    /// The config, from `--config`, else `$LLORCH_CONFIG`, else defaults,
    /// with env overrides applied. An invalid config is a usage error.
    pub fn load_config(&self) -> anyhow::Result<Config> {
        let path = config::locate(self.config_path.as_deref(), &|k| std::env::var(k).ok());
        Config::load(path.as_deref()).map_err(|e| usage(e.to_string()))
    }
}

/// A subcommand body.
pub trait Run {
    fn run(self, ctx: &Context) -> anyhow::Result<ExitCode>;
}

/// An error the caller fixes by changing the command line or the config:
/// exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

/// Declares the `Command` enum and its dispatch from one list, so that a
/// new subcommand is one line here.
macro_rules! commands {
    ($($(#[$doc:meta])* $variant:ident($ty:ty),)*) => {
        #[derive(Debug, Subcommand)]
        pub enum Command {
            $($(#[$doc])* $variant($ty),)*
        }

        impl Command {
            fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
                match self {
                    $(Command::$variant(c) => c.run(ctx),)*
                }
            }
        }
    };
}

commands! {
    /// Check a config file: exit 0 when valid, else name the key and line.
    CheckConfig(check_config::CheckConfig),
    /// Inspect GGUF files, and stage and manage models in the store.
    Models(models::Models),
    /// Generate text from a prompt; only the text goes to stdout.
    Generate(generate::Generate),
    /// Measure prompt-processing and generation speed (like llama-bench).
    Bench(bench::Bench),
    /// Print a model's token ids for a text (like `llama-tokenize --ids`).
    Tokenize(tokenize::TokenizeArgs),
    /// Serve the API: the home profile with the pools named in the config.
    Serve(serve::Serve),
}

fn init_logging() {
    // Subcommands log little (warnings from the store); the server sets up
    // its own logging.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}

pub fn main() -> ExitCode {
    // clap prints help and version (exit 0) and usage errors (exit 2) itself.
    let cli = Cli::parse();
    // The server installs its own logging (JSON, journald) from the config.
    if !matches!(cli.command, Command::Serve(_)) {
        init_logging();
    }
    let ctx = Context {
        config_path: cli.config,
    };
    match cli.command.run(&ctx) {
        Ok(code) => code,
        Err(e) => {
            let code = if e.downcast_ref::<UsageError>().is_some() {
                2
            } else {
                1
            };
            let msg = format!("{e:#}");
            let one_line: Vec<&str> = msg
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!("llorchd: error: {}", one_line.join(" "));
            ExitCode::from(code)
        }
    }
}

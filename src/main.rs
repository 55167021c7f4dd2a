//! The `llorchd` binary: parse the command line and hand over to the
//! library. The only place, with `cli/`, where `anyhow` is used.

use clap::{Parser, Subcommand};

use llorchd::cli;

#[derive(Debug, Parser)]
#[command(
    name = "llorchd",
    version,
    about = "Serve and orchestrate LLM inference on GGUF models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a model's token ids for a text as a JSON array.
    Tokenize(cli::tokenize::TokenizeArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Tokenize(args) => cli::tokenize::run(&args),
    }
}

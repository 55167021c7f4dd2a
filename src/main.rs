//! The `llorchd` binary. Subcommand bodies live in `src/cli/`; this file
//! only hands over. `anyhow` is used here and in `cli`, nowhere else.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}

//! `llorchd check-config FILE`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use llorchd::config::Config;

use super::{usage, Context, Run};

#[derive(Debug, Args)]
pub struct CheckConfig {
    /// The TOML config to check (env overrides are applied, as at start).
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

impl Run for CheckConfig {
    fn run(self, _ctx: &Context) -> anyhow::Result<ExitCode> {
        let cfg = Config::load(Some(&self.file)).map_err(|e| usage(e.to_string()))?;
        let role = cfg
            .role
            .map(|r| format!(" ({r:?})").to_lowercase())
            .unwrap_or_default();
        println!(
            "{}: ok: profile {}{role}, {} pool(s), store {}",
            self.file.display(),
            format!("{:?}", cfg.profile).to_lowercase(),
            cfg.pools.len(),
            cfg.store.dir.display()
        );
        Ok(ExitCode::SUCCESS)
    }
}

//! Engine flags shared by `generate` and `bench`.

use clap::Args;
use llorchd::backend::cpu::Isa;
use llorchd::model::Model;

use super::usage;

#[derive(Debug, Args)]
pub struct EngineArgs {
    /// Engine threads (default: the cores available).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// SIMD level: avx512, avx2 or scalar (default: the best this CPU has).
    #[arg(long)]
    pub isa: Option<String>,
    /// Context length (default: what the run needs, within the model's).
    #[arg(short = 'c', long)]
    pub ctx: Option<usize>,
    /// Prompt tokens per forward pass.
    #[arg(short = 'b', long, default_value_t = 512)]
    pub batch: usize,
}

impl EngineArgs {
    pub fn threads(&self) -> usize {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    }

    pub fn isa(&self) -> anyhow::Result<Isa> {
        match &self.isa {
            None => Ok(Isa::detect()),
            Some(name) => {
                let isa = Isa::from_name(name).ok_or_else(|| {
                    usage(format!("unknown --isa {name:?} (avx512, avx2, scalar)"))
                })?;
                if !isa.available() {
                    return Err(usage(format!("--isa {name}: not available on this CPU")));
                }
                Ok(isa)
            }
        }
    }

    /// The context to allocate for a run that needs `need` tokens.
    pub fn ctx_for(&self, model: &Model, need: usize) -> anyhow::Result<usize> {
        let train = model.hparams.n_ctx_train;
        let ctx = self.ctx.unwrap_or(need);
        if need > ctx || need > train {
            return Err(usage(format!(
                "prompt plus max tokens ({need}) exceed the context ({})",
                ctx.min(train)
            )));
        }
        Ok(ctx.min(train))
    }
}

//! `llorchd bench`: prompt-processing and generation speed, like llama-bench
//! (`pp` = one batch of `-p` prompt tokens; `tg` = `-n` tokens decoded one at
//! a time), plus aggregate decode throughput with several sequences batched.

use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use llorchd::model::{BatchEntry, Forward, Model};
use serde_json::json;

use super::engine_args::EngineArgs;
use super::{usage, Context, Run};

#[derive(Debug, Args)]
pub struct Bench {
    /// GGUF model file.
    #[arg(short = 'm', long, value_name = "FILE")]
    model: std::path::PathBuf,
    /// Prompt tokens for the prompt-processing test (0 skips it).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 128)]
    n_prompt: usize,
    /// Tokens for the generation test (0 skips it).
    #[arg(short = 'n', long = "n-gen", default_value_t = 64)]
    n_gen: usize,
    /// Also measure aggregate decode throughput with this many sequences
    /// batched together (each generating `-n` tokens).
    #[arg(long, default_value_t = 0)]
    concurrent: usize,
    /// Repetitions of each test (after one warm-up).
    #[arg(short = 'r', long, default_value_t = 3)]
    reps: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

/// Deterministic token ids spread over the vocabulary (skipping the first
/// few, which are usually special).
fn tokens(n: usize, n_vocab: usize, salt: usize) -> Vec<u32> {
    (0..n)
        .map(|i| (100 + (i * 7919 + salt * 104_729) % (n_vocab - 100)) as u32)
        .collect()
}

struct Stat {
    mean: f64,
    sd: f64,
}

fn stat(xs: &[f64]) -> Stat {
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>()
        / xs.len().max(2).saturating_sub(1) as f64;
    Stat {
        mean,
        sd: var.sqrt(),
    }
}

impl Run for Bench {
    fn run(self, _ctx: &Context) -> anyhow::Result<ExitCode> {
        if self.reps == 0 {
            return Err(usage("--reps must be at least 1"));
        }
        let model = Model::load(&self.model)?;
        let threads = self.engine.threads();
        let isa = self.engine.isa()?;
        let mut fw = Forward::new(threads, isa);
        let nv = model.hparams.n_vocab;
        let ctx = self
            .engine
            .ctx_for(&model, self.n_prompt.max(self.n_gen + 1))?;

        let mut pp = Vec::new();
        if self.n_prompt > 0 {
            for rep in 0..=self.reps {
                let mut cache = model.new_cache(ctx);
                let toks = tokens(self.n_prompt, nv, rep);
                let t0 = Instant::now();
                for chunk in toks.chunks(self.engine.batch) {
                    let mut b = [BatchEntry {
                        cache: &mut cache,
                        tokens: chunk,
                        want_logits: true,
                        prompt_len: toks.len(),
                    }];
                    model.forward(&mut fw, &mut b)?;
                }
                let dt = t0.elapsed().as_secs_f64();
                if rep > 0 {
                    pp.push(self.n_prompt as f64 / dt);
                }
            }
        }

        let mut tg = Vec::new();
        if self.n_gen > 0 {
            for rep in 0..=self.reps {
                let mut cache = model.new_cache(ctx);
                let toks = tokens(self.n_gen, nv, rep + 1000);
                let t0 = Instant::now();
                for &t in &toks {
                    let mut b = [BatchEntry {
                        cache: &mut cache,
                        tokens: &[t],
                        want_logits: true,
                        prompt_len: 0,
                    }];
                    model.forward(&mut fw, &mut b)?;
                }
                let dt = t0.elapsed().as_secs_f64();
                if rep > 0 {
                    tg.push(self.n_gen as f64 / dt);
                }
            }
        }

        let mut batched = Vec::new();
        if self.concurrent > 0 && self.n_gen > 0 {
            let k = self.concurrent;
            for rep in 0..=self.reps {
                let mut caches: Vec<_> = (0..k).map(|_| model.new_cache(ctx)).collect();
                let seqs: Vec<Vec<u32>> = (0..k)
                    .map(|s| tokens(self.n_gen, nv, rep * 31 + s))
                    .collect();
                let t0 = Instant::now();
                for step in 0..self.n_gen {
                    let mut entries: Vec<BatchEntry> = caches
                        .iter_mut()
                        .zip(&seqs)
                        .map(|(c, s)| BatchEntry {
                            cache: c,
                            tokens: &s[step..step + 1],
                            want_logits: true,
                            prompt_len: 0,
                        })
                        .collect();
                    model.forward(&mut fw, &mut entries)?;
                }
                let dt = t0.elapsed().as_secs_f64();
                if rep > 0 {
                    batched.push((k * self.n_gen) as f64 / dt);
                }
            }
        }

        let name = self
            .model
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        if self.json {
            let mut o = json!({
                "model": name,
                "arch": model.hparams.arch.name(),
                "threads": threads,
                "isa": isa.name(),
                "reps": self.reps,
            });
            if !pp.is_empty() {
                let s = stat(&pp);
                o["pp_tokens"] = json!(self.n_prompt);
                o["pp_tps"] = json!(s.mean);
                o["pp_tps_sd"] = json!(s.sd);
            }
            if !tg.is_empty() {
                let s = stat(&tg);
                o["tg_tokens"] = json!(self.n_gen);
                o["tg_tps"] = json!(s.mean);
                o["tg_tps_sd"] = json!(s.sd);
            }
            if !batched.is_empty() {
                let s = stat(&batched);
                o["concurrent"] = json!(self.concurrent);
                o["concurrent_tg_tps"] = json!(s.mean);
                o["concurrent_tg_tps_sd"] = json!(s.sd);
            }
            println!("{o}");
        } else {
            println!("| model | arch | threads | isa | test | t/s |");
            println!("| --- | --- | ---: | --- | --- | ---: |");
            let row = |test: String, xs: &[f64]| {
                let s = stat(xs);
                println!(
                    "| {name} | {} | {threads} | {} | {test} | {:.2} ± {:.2} |",
                    model.hparams.arch.name(),
                    isa.name(),
                    s.mean,
                    s.sd
                );
            };
            if !pp.is_empty() {
                row(format!("pp{}", self.n_prompt), &pp);
            }
            if !tg.is_empty() {
                row(format!("tg{}", self.n_gen), &tg);
            }
            if !batched.is_empty() {
                row(
                    format!("tg{} x{} (aggregate)", self.n_gen, self.concurrent),
                    &batched,
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

//! `llorchd generate`: run one prompt through the engine and stream only
//! the generated text to stdout (logs go to stderr).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use llorchd::model::chat_template::ChatMessage;
use llorchd::model::decode::{DecodeParams, SequenceDecoder};
use llorchd::model::{BatchEntry, Forward, Model, SamplingParams};
use llorchd::worker::scheduler::PREFILL_ALIGN;

use super::engine_args::EngineArgs;
use super::{usage, Context, Run};

#[derive(Debug, Args)]
pub struct Generate {
    /// GGUF model file.
    #[arg(short = 'm', long, value_name = "FILE")]
    model: PathBuf,
    /// The prompt (special tokens such as <|im_start|> are parsed).
    #[arg(short = 'p', long)]
    prompt: String,
    /// Tokens to generate at most.
    #[arg(short = 'n', long, default_value_t = 128)]
    max_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// 0 disables.
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// 1.0 disables.
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// 0.0 disables.
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    /// 1.0 disables.
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    /// RNG seed for sampling (default: random, printed to stderr).
    #[arg(long)]
    seed: Option<u64>,
    /// Stop when this text is generated (may repeat).
    #[arg(long)]
    stop: Vec<String>,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// System message (with --chat).
    #[arg(long, requires = "chat")]
    system: Option<String>,
    #[command(flatten)]
    engine: EngineArgs,
}

impl Run for Generate {
    fn run(self, _ctx: &Context) -> anyhow::Result<ExitCode> {
        let model = Model::load(&self.model)?;
        let text = if self.chat {
            let tmpl = model.chat_template.as_ref().ok_or_else(|| {
                usage(format!(
                    "{} has no usable chat template",
                    self.model.display()
                ))
            })?;
            let mut msgs = Vec::new();
            if let Some(s) = &self.system {
                msgs.push(ChatMessage::new("system", s.as_str()));
            }
            msgs.push(ChatMessage::new("user", self.prompt.as_str()));
            tmpl.render(&msgs, true)
                .context("rendering the chat template")?
        } else {
            self.prompt.clone()
        };
        // The template drops a leading BOS text when the tokenizer adds BOS.
        let prompt = model.tokenizer.encode(&text, true, true);
        if prompt.is_empty() {
            return Err(usage("the prompt is empty after tokenization"));
        }
        let ctx_len = self
            .engine
            .ctx_for(&model, prompt.len() + self.max_tokens)?;
        let seed = self.seed.unwrap_or_else(rand::random);
        if self.seed.is_none() && self.temperature > 0.0 {
            eprintln!("llorchd: seed {seed}");
        }
        let params = DecodeParams {
            sampling: SamplingParams {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                repeat_penalty: self.repeat_penalty,
                repeat_last_n: 64,
                seed,
            },
            max_tokens: self.max_tokens,
            stop: self.stop.clone(),
            logprobs: None,
        };
        let mut fw = Forward::new(self.engine.threads(), self.engine.isa()?);
        let mut cache = model.new_cache(ctx_len);
        let mut dec = SequenceDecoder::new(model.tokenizer.clone(), &params, &prompt);
        let nv = model.hparams.n_vocab;
        let mut out = std::io::stdout().lock();
        // Prefill in aligned chunks (as the server does), then decode one
        // token at a time.
        let chunk_len = (self.engine.batch / PREFILL_ALIGN * PREFILL_ALIGN).max(PREFILL_ALIGN);
        let mut pos = 0;
        let mut next = Vec::new();
        loop {
            let prefill = pos < prompt.len();
            let tokens: Vec<u32> = if prefill {
                let end = (pos + chunk_len).min(prompt.len());
                let chunk = prompt[pos..end].to_vec();
                pos = end;
                chunk
            } else {
                std::mem::take(&mut next)
            };
            let want = pos == prompt.len();
            let mut batch = [BatchEntry {
                cache: &mut cache,
                tokens: &tokens,
                want_logits: want,
                prompt_len: if prefill { prompt.len() } else { 0 },
            }];
            model.forward(&mut fw, &mut batch)?;
            if !want {
                continue;
            }
            let t = dec.step(&model.tokenizer, fw.logits(0, nv));
            // A reader that went away (`| head`) ends generation quietly.
            match out.write_all(t.text.as_bytes()).and_then(|()| out.flush()) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    return Ok(ExitCode::SUCCESS)
                }
                r => r?,
            }
            if t.finish.is_some() {
                break;
            }
            next = vec![t.id];
        }
        match writeln!(out) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            r => r?,
        }
        Ok(ExitCode::SUCCESS)
    }
}

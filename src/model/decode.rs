//! The text side of one generating sequence: sample a token from logits,
//! detokenize it into complete UTF-8, apply stop strings and limits. The
//! worker's scheduler and the CLI both drive generation through this.

use super::sampling::{logprobs, Sampler, SamplingParams};
use std::sync::Arc;

use super::stop::StopMatcher;
use super::tokenizer::{StreamDecoder, Tokenizer};

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-generation token or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

#[derive(Debug, Clone)]
pub struct DecodeParams {
    pub sampling: SamplingParams,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    /// Report the chosen token's log-probability and this many alternatives
    /// (None: no logprobs).
    pub logprobs: Option<usize>,
}

/// One generated token, as the client sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenOut {
    pub id: u32,
    /// Text released by this token (may be empty while UTF-8 or a possible
    /// stop string is held back).
    pub text: String,
    pub logprob: Option<f32>,
    pub top_logprobs: Vec<(u32, f32)>,
    /// Set on the last token of the sequence.
    pub finish: Option<FinishReason>,
}

pub struct SequenceDecoder {
    sampler: Sampler,
    stream: StreamDecoder<Arc<Tokenizer>>,
    stop: StopMatcher,
    max_tokens: usize,
    logprobs: Option<usize>,
    generated: usize,
    finished: Option<FinishReason>,
}

impl SequenceDecoder {
    pub fn new(tok: Arc<Tokenizer>, params: &DecodeParams, prompt: &[u32]) -> SequenceDecoder {
        let mut sampler = Sampler::new(params.sampling.clone());
        for &t in prompt {
            sampler.accept(t);
        }
        SequenceDecoder {
            sampler,
            stream: StreamDecoder::new(tok),
            stop: StopMatcher::new(&params.stop),
            max_tokens: params.max_tokens,
            logprobs: params.logprobs,
            generated: 0,
            finished: None,
        }
    }

    pub fn generated(&self) -> usize {
        self.generated
    }

    pub fn finished(&self) -> Option<FinishReason> {
        self.finished
    }

    /// Sample the next token from `logits` and turn it into output.
    pub fn step(&mut self, tok: &Tokenizer, logits: &[f32]) -> TokenOut {
        debug_assert!(self.finished.is_none(), "step after finish");
        let id = self.sampler.sample(logits);
        self.sampler.accept(id);
        self.generated += 1;
        let (logprob, top_logprobs) = match self.logprobs {
            Some(n) => {
                let (lp, top) = logprobs(logits, id, n);
                (Some(lp), top)
            }
            None => (None, Vec::new()),
        };
        let mut text = String::new();
        let mut finish = None;
        if tok.is_eog(id) {
            finish = Some(FinishReason::Stop);
        } else {
            let piece = self.stream.push(id);
            let o = self.stop.push(&piece);
            text = o.emit;
            if o.stopped {
                finish = Some(FinishReason::Stop);
            }
        }
        if finish.is_none() && self.generated >= self.max_tokens {
            finish = Some(FinishReason::Length);
        }
        if let Some(f) = finish {
            if f == FinishReason::Length || tok.is_eog(id) {
                // Release what was held back for UTF-8 or a possible stop.
                let rest = self.stream.finish();
                let o = self.stop.push(&rest);
                text.push_str(&o.emit);
                if !o.stopped {
                    text.push_str(&self.stop.finish());
                }
            }
            self.finished = Some(f);
        }
        TokenOut {
            id,
            text,
            logprob,
            top_logprobs,
            finish,
        }
    }
}

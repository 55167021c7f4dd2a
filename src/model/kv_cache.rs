//! Per-sequence KV cache, in F16 like llama.cpp's default (halves memory and
//! keeps attention arithmetic identical to the reference).
//!
//! Layout per layer: `[position][kv_head * head_dim]`. Buffers are allocated
//! zeroed up front; the OS maps pages only as positions are written, so an
//! idle slot costs address space, not resident memory.

use super::hparams::HParams;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum KvError {
    #[error("context full: {used} + {adding} tokens exceed the context of {ctx}")]
    ContextFull {
        used: usize,
        adding: usize,
        ctx: usize,
    },
}

/// The keys and values of one sequence, for every layer.
#[derive(Debug)]
pub struct SeqCache {
    /// f16 bits, per layer.
    pub(crate) k: Vec<Vec<u16>>,
    pub(crate) v: Vec<Vec<u16>>,
    len: usize,
    ctx: usize,
    kv_dim: usize,
}

impl SeqCache {
    pub fn new(hp: &HParams, ctx: usize) -> SeqCache {
        let kv_dim = hp.kv_dim();
        // vec![0u16; n] uses a zeroed allocation: no pages touched yet.
        let mk = || (0..hp.n_layer).map(|_| vec![0u16; ctx * kv_dim]).collect();
        SeqCache {
            k: mk(),
            v: mk(),
            len: 0,
            ctx,
            kv_dim,
        }
    }

    /// Tokens currently cached (the next token's position).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn ctx(&self) -> usize {
        self.ctx
    }

    /// Forget everything after the first `n` tokens (prefix reuse).
    pub fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n);
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    pub(crate) fn check_room(&self, adding: usize) -> Result<(), KvError> {
        if self.len + adding > self.ctx {
            return Err(KvError::ContextFull {
                used: self.len,
                adding,
                ctx: self.ctx,
            });
        }
        Ok(())
    }

    pub(crate) fn advance(&mut self, n: usize) {
        debug_assert!(self.len + n <= self.ctx);
        self.len += n;
    }

    /// Bytes of KV memory this sequence uses at its current length.
    pub fn bytes_used(&self) -> usize {
        self.len * self.kv_dim * 2 * 2 * self.k.len()
    }

    /// Bytes reserved for the full context.
    pub fn bytes_reserved(&self) -> usize {
        self.ctx * self.kv_dim * 2 * 2 * self.k.len()
    }
}

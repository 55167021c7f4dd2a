//! Incremental detokenization for streaming: a character split across
//! tokens (emoji and CJK often are, as byte tokens) is held back until it is
//! complete, so every chunk is valid UTF-8 and the chunks concatenate to
//! [`Tokenizer::decode`] of the same ids.

use std::borrow::Borrow;

use super::Tokenizer;

/// Turns a stream of token ids into text chunks. Holds a `&Tokenizer` or an
/// `Arc<Tokenizer>`.
#[derive(Debug)]
pub struct StreamDecoder<T: Borrow<Tokenizer>> {
    tok: T,
    /// Bytes of an incomplete character at the end of the stream so far.
    pending: Vec<u8>,
    special: bool,
}

impl<T: Borrow<Tokenizer>> StreamDecoder<T> {
    /// Control tokens render as nothing (like [`Tokenizer::decode`]).
    pub fn new(tok: T) -> Self {
        StreamDecoder {
            tok,
            pending: Vec::new(),
            special: false,
        }
    }

    /// Render control tokens as their text (e.g. `<|im_end|>`).
    pub fn with_special(tok: T) -> Self {
        StreamDecoder {
            special: true,
            ..Self::new(tok)
        }
    }

    /// Add one token; returns the text that is now complete (often empty
    /// while a character is incomplete).
    pub fn push(&mut self, id: u32) -> String {
        self.pending
            .extend_from_slice(self.tok.borrow().piece(id, self.special));
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (ok, tail) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(ok).expect("valid prefix"));
                    match e.error_len() {
                        // Bytes that can never start a character: replace
                        // them now, as a lossy decode of the whole would.
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &tail[n..];
                        }
                        // An incomplete character at the end: wait for more.
                        None => {
                            rest = tail;
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        let start = self.pending.len() - keep;
        self.pending.drain(..start);
        out
    }

    /// End of stream: whatever is held back, with an incomplete character
    /// replaced by U+FFFD.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }

    /// Bytes currently held back.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

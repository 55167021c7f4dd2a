//! Tokenizers from GGUF metadata, giving exactly llama.cpp's token ids.
//!
//! - `vocab`: token texts, scores and attributes; `strtable` stores them.
//! - `load`: reading `tokenizer.*` metadata the way llama.cpp does
//!   (defaults, special ids, the end-of-generation set).
//! - `special`: carving special tokens out of raw text.
//! - `pretokenize` + `unicode` + `bpe`: gpt2-style byte-level BPE.
//! - `spm`: SentencePiece-style merging by score with byte fallback.
//! - `piece`: token → text (pieces, detokenize).
//! - `stream`: incremental decoding that only yields whole characters.

mod bpe;
mod load;
mod piece;
pub mod pretokenize;
mod special;
mod spm;
mod stream;
mod strtable;
pub mod unicode;
mod vocab;

pub use stream::StreamDecoder;
pub use vocab::TokenAttr;

use bpe::{Bpe, BpeScratch};
use pretokenize::PreTokenizer;
use special::{Fragment, SpecialTokens};
use vocab::Vocab;

/// Why a model's tokenizer could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("GGUF has no {0:?} (not a model with a tokenizer?)")]
    MissingKey(&'static str),
    #[error("GGUF key {key:?} has the wrong type: expected {expected}")]
    WrongType {
        key: &'static str,
        expected: &'static str,
    },
    #[error("GGUF key {key:?} has {got} entries, fewer than the {want} tokens")]
    TooShort {
        key: &'static str,
        got: usize,
        want: usize,
    },
    #[error("unknown tokenizer model {0:?} (supported: llama, gpt2)")]
    UnknownModel(String),
    #[error("unsupported pre-tokenizer {0:?} (tokenizer.ggml.pre)")]
    UnknownPre(String),
    #[error("the vocabulary is empty")]
    EmptyVocab,
    #[error("the vocabulary has more than 2^31 tokens ({0})")]
    TooManyTokens(usize),
    #[error("token {second} has the same text as token {first}: {text:?}")]
    DuplicateToken {
        first: u32,
        second: u32,
        text: String,
    },
    #[error("token text or merges exceed 4 GiB")]
    TooLarge,
    #[error(transparent)]
    Regex(#[from] pretokenize::RegexError),
}

/// Which algorithm turns text fragments into tokens.
#[derive(Debug)]
enum Model {
    /// SentencePiece-style (`tokenizer.ggml.model = "llama"`).
    Spm,
    /// Byte-pair encoding (`"gpt2"`) after a regex pre-tokenizer.
    Bpe { bpe: Bpe, pre: PreTokenizer },
}

/// Special token ids; None where the model has none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub sep: Option<u32>,
    pub pad: Option<u32>,
    pub mask: Option<u32>,
    pub fim_pre: Option<u32>,
    pub fim_suf: Option<u32>,
    pub fim_mid: Option<u32>,
    pub fim_pad: Option<u32>,
    pub fim_rep: Option<u32>,
    pub fim_sep: Option<u32>,
}

/// A model's tokenizer: text ⇄ token ids exactly as llama.cpp does it.
/// Immutable after loading; share it between threads freely.
#[derive(Debug)]
pub struct Tokenizer {
    vocab: Vocab,
    model: Model,
    special: SpecialTokens,
    ids: SpecialIds,
    /// End-of-generation tokens, sorted.
    eog: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    /// Replace spaces by U+2581 before BPE (SPM-style BPE vocabularies).
    escape_whitespaces: bool,
    clean_spaces: bool,
    /// Token pieces as llama.cpp renders them with special = true.
    pieces: piece::Pieces,
    model_name: &'static str,
    pre_name: String,
}

impl Tokenizer {
    /// Number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        self.vocab.len()
    }

    pub fn bos(&self) -> Option<u32> {
        self.ids.bos
    }

    pub fn eos(&self) -> Option<u32> {
        self.ids.eos
    }

    pub fn eot(&self) -> Option<u32> {
        self.ids.eot
    }

    pub fn unk(&self) -> Option<u32> {
        self.ids.unk
    }

    pub fn pad(&self) -> Option<u32> {
        self.ids.pad
    }

    pub fn special_ids(&self) -> &SpecialIds {
        &self.ids
    }

    /// Whether `encode(.., add_special = true, ..)` starts with BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos && self.ids.bos.is_some()
    }

    /// Whether `encode(.., add_special = true, ..)` ends with EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos && self.ids.eos.is_some()
    }

    /// True for tokens that end generation (EOS, end-of-turn and the
    /// tokens llama.cpp adds to that set by their text).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// The end-of-generation set, sorted.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }

    /// `"llama"` (SentencePiece) or `"gpt2"` (BPE).
    pub fn model_name(&self) -> &'static str {
        self.model_name
    }

    /// `tokenizer.ggml.pre` (empty for SentencePiece models).
    pub fn pre_name(&self) -> &str {
        &self.pre_name
    }

    pub fn token_attr(&self, id: u32) -> TokenAttr {
        self.vocab.attr(id)
    }

    /// True for control tokens (BOS, EOS, chat markers).
    pub fn is_control(&self, id: u32) -> bool {
        self.vocab.attr(id).has(TokenAttr::CONTROL)
    }

    /// The raw vocabulary text of a token (e.g. `"▁Hello"`, `"ĠHello"`,
    /// `"<|im_end|>"`); empty for an id out of range.
    pub fn token_text(&self, id: u32) -> &[u8] {
        self.vocab.text(id)
    }

    /// The id whose vocabulary text is exactly `text`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.find(text.as_bytes())
    }

    /// Approximate heap bytes held by the tokenizer.
    pub fn heap_bytes(&self) -> usize {
        self.vocab.heap_bytes() + self.pieces.heap_bytes() + self.special.heap_bytes()
    }

    /// Text to token ids, like llama.cpp's `llama_tokenize`.
    ///
    /// `add_special` adds BOS/EOS as the model's metadata asks;
    /// `parse_special` turns special-token text such as `<|im_start|>` into
    /// that token (user-defined tokens are always matched).
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        let frags = self.special.partition(&self.vocab, text, parse_special);
        if add_special && self.add_bos {
            out.extend(self.ids.bos);
        }
        match &self.model {
            Model::Spm => {
                let mut prev_special = true;
                let mut buf = String::new();
                for f in frags {
                    match f {
                        Fragment::Text(r) => {
                            buf.clear();
                            if self.add_space_prefix && prev_special {
                                buf.push(' ');
                            }
                            buf.push_str(&text[r]);
                            let escaped = buf.replace(' ', "\u{2581}");
                            spm::encode(&self.vocab, &escaped, self.ids.unk, &mut out);
                            prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                    }
                }
            }
            Model::Bpe { bpe, pre } => {
                let mut scratch = BpeScratch::default();
                for f in frags {
                    match f {
                        Fragment::Text(r) => {
                            let escaped;
                            let frag = if self.escape_whitespaces {
                                escaped = text[r].replace(' ', "\u{2581}");
                                escaped.as_str()
                            } else {
                                &text[r]
                            };
                            for w in pre.split(frag) {
                                bpe.encode_word(&self.vocab, &frag[w], &mut scratch, &mut out);
                            }
                        }
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.ids.eos);
        }
        out
    }
}

#[cfg(test)]
mod tests;

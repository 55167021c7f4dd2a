//! The token table: text, score and attributes per id, and text → id.

use super::strtable::StrTable;

/// Token attributes, as llama.cpp's `llama_token_attr` bits. GGUF stores a
/// token *type* per token; loading turns it into one of these, and a few
/// load-time rules add more (CONTROL for end-of-turn tokens found by text,
/// UNUSED for control tokens named "unused", RSTRIP for some models).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TokenAttr(pub u16);

impl TokenAttr {
    pub const UNDEFINED: u16 = 0;
    pub const UNKNOWN: u16 = 1 << 0;
    pub const UNUSED: u16 = 1 << 1;
    pub const NORMAL: u16 = 1 << 2;
    pub const CONTROL: u16 = 1 << 3;
    pub const USER_DEFINED: u16 = 1 << 4;
    pub const BYTE: u16 = 1 << 5;
    pub const NORMALIZED: u16 = 1 << 6;
    pub const LSTRIP: u16 = 1 << 7;
    pub const RSTRIP: u16 = 1 << 8;
    pub const SINGLE_WORD: u16 = 1 << 9;

    /// From a GGUF `tokenizer.ggml.token_type` value (NORMAL=1, UNKNOWN=2,
    /// CONTROL=3, USER_DEFINED=4, UNUSED=5, BYTE=6; anything else is
    /// undefined).
    pub fn from_token_type(t: i64) -> TokenAttr {
        TokenAttr(match t {
            1 => Self::NORMAL,
            2 => Self::UNKNOWN,
            3 => Self::CONTROL,
            4 => Self::USER_DEFINED,
            5 => Self::UNUSED,
            6 => Self::BYTE,
            _ => Self::UNDEFINED,
        })
    }

    #[inline]
    pub fn has(self, bits: u16) -> bool {
        self.0 & bits != 0
    }
}

#[derive(Debug, Default)]
pub struct Vocab {
    texts: StrTable,
    scores: Vec<f32>,
    attrs: Vec<TokenAttr>,
}

impl Vocab {
    pub fn new(texts: StrTable, scores: Vec<f32>, attrs: Vec<TokenAttr>) -> Vocab {
        debug_assert_eq!(texts.len(), scores.len());
        debug_assert_eq!(texts.len(), attrs.len());
        Vocab {
            texts,
            scores,
            attrs,
        }
    }

    pub fn len(&self) -> usize {
        self.attrs.len()
    }

    pub fn contains(&self, id: u32) -> bool {
        (id as usize) < self.len()
    }

    /// Token text; empty for an id out of range.
    pub fn text(&self, id: u32) -> &[u8] {
        if self.contains(id) {
            self.texts.get(id)
        } else {
            &[]
        }
    }

    pub fn score(&self, id: u32) -> f32 {
        self.scores.get(id as usize).copied().unwrap_or(0.0)
    }

    pub fn attr(&self, id: u32) -> TokenAttr {
        self.attrs.get(id as usize).copied().unwrap_or_default()
    }

    pub fn set_attr(&mut self, id: u32, a: TokenAttr) {
        if let Some(x) = self.attrs.get_mut(id as usize) {
            *x = a;
        }
    }

    pub fn find(&self, text: &[u8]) -> Option<u32> {
        self.texts.find(text)
    }

    pub fn heap_bytes(&self) -> usize {
        self.texts.heap_bytes() + self.scores.capacity() * 4 + self.attrs.capacity() * 2
    }
}

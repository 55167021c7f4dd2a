//! Token ids back to text, as llama.cpp's `token_to_piece` and
//! `detokenize`.

use super::strtable::ArenaFull;
use super::unicode::char_to_byte;
use super::vocab::{TokenAttr, Vocab};
use super::Tokenizer;

/// The byte of a `<0xXX>` token: llama.cpp parses the two characters after
/// `<0x` with strtol, so junk parses as far as it is hex.
fn byte_of(text: &[u8]) -> u8 {
    let hex = text.get(3..5).unwrap_or(&[]);
    let mut v = 0u8;
    for &c in hex {
        match (c as char).to_digit(16) {
            Some(d) => v = v.wrapping_mul(16).wrapping_add(d as u8),
            None => break,
        }
    }
    v
}

/// GPT-2 byte-level text back to bytes. A character outside the mapping
/// renders as llama.cpp's `[UNK_BYTE_0x..<token text>]`.
fn decode_byte_level(text: &[u8], out: &mut Vec<u8>) {
    let s = String::from_utf8_lossy(text);
    for c in s.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text);
                out.push(b']');
            }
        }
    }
}

/// Each token's piece with special tokens rendered (llama.cpp's
/// `cache_token_to_piece`): one arena, no per-token allocation.
#[derive(Debug, Default)]
pub struct Pieces {
    arena: Vec<u8>,
    /// `offsets[i]..offsets[i + 1]` is token i's piece.
    offsets: Vec<u32>,
}

impl Pieces {
    pub fn get(&self, id: u32) -> &[u8] {
        let i = id as usize;
        &self.arena[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    pub fn heap_bytes(&self) -> usize {
        self.arena.capacity() + self.offsets.capacity() * 4
    }
}

pub fn build_cache(
    vocab: &Vocab,
    is_spm: bool,
    escape_whitespaces: bool,
) -> Result<Pieces, ArenaFull> {
    const SPACE_MARK: &[u8] = "\u{2581}".as_bytes();
    let mut p = Pieces {
        arena: Vec::with_capacity(vocab.heap_bytes().min(64 << 20) / 2),
        offsets: Vec::with_capacity(vocab.len() + 1),
    };
    p.offsets.push(0);
    for id in 0..vocab.len() as u32 {
        let a = vocab.attr(id);
        let text = vocab.text(id);
        let out = &mut p.arena;
        if a.has(TokenAttr::UNKNOWN | TokenAttr::CONTROL | TokenAttr::USER_DEFINED) {
            out.extend_from_slice(text);
        } else if a.has(TokenAttr::NORMAL) {
            if is_spm || escape_whitespaces {
                // U+2581 back to a space.
                let mut rest = text;
                while let Some(i) = memchr::memmem::find(rest, SPACE_MARK) {
                    out.extend_from_slice(&rest[..i]);
                    out.push(b' ');
                    rest = &rest[i + SPACE_MARK.len()..];
                }
                out.extend_from_slice(rest);
            } else {
                decode_byte_level(text, out);
            }
        } else if a.has(TokenAttr::BYTE) {
            out.push(byte_of(text));
        }
        p.offsets
            .push(u32::try_from(p.arena.len()).map_err(|_| ArenaFull)?);
    }
    Ok(p)
}

impl Tokenizer {
    /// A token's text as llama.cpp's `token_to_piece(special = false)`:
    /// control and unknown tokens render as nothing. Out-of-range ids too.
    pub fn token_to_piece(&self, id: u32) -> &[u8] {
        self.piece(id, false)
    }

    /// A token's text; with `special`, control tokens render as their text
    /// (e.g. `<|im_end|>`).
    pub fn piece(&self, id: u32, special: bool) -> &[u8] {
        if !self.vocab.contains(id) {
            return &[];
        }
        if !special
            && self
                .vocab
                .attr(id)
                .has(TokenAttr::UNKNOWN | TokenAttr::CONTROL)
        {
            return &[];
        }
        self.pieces.get(id)
    }

    /// The text of generated tokens: the pieces concatenated (control
    /// tokens render as nothing), with invalid UTF-8 replaced by U+FFFD.
    /// A [`super::StreamDecoder`] fed the same ids yields the same text.
    pub fn decode(&self, ids: &[u32]) -> String {
        String::from_utf8_lossy(&self.decode_bytes(ids, false)).into_owned()
    }

    /// The pieces concatenated, as raw bytes.
    pub fn decode_bytes(&self, ids: &[u32], special: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for &id in ids {
            out.extend_from_slice(self.piece(id, special));
        }
        out
    }

    /// llama.cpp's `llama_detokenize`: like [`Tokenizer::decode_bytes`],
    /// but drops the leading space that add_space_prefix put there,
    /// optionally the BOS/EOS that encode added (`remove_special`), and
    /// applies the model's clean-up of spaces before punctuation.
    pub fn detokenize(&self, ids: &[u32], remove_special: bool, unparse_special: bool) -> Vec<u8> {
        let mut ids = ids;
        let mut remove_space = self.add_space_prefix;
        if remove_special && self.add_bos && !ids.is_empty() && Some(ids[0]) == self.ids.bos {
            remove_space = false;
            ids = &ids[1..];
        }
        if remove_special
            && self.add_eos
            && !ids.is_empty()
            && Some(ids[ids.len() - 1]) == self.ids.eos
        {
            ids = &ids[..ids.len() - 1];
        }
        let mut text = Vec::new();
        for &id in ids {
            let mut p = self.piece(id, unparse_special);
            if remove_space {
                if let Some(rest) = p.strip_prefix(b" ") {
                    p = rest;
                }
            }
            remove_space = false;
            text.extend_from_slice(p);
        }
        if self.clean_spaces {
            clean_up_spaces(&mut text);
        }
        text
    }
}

/// `clean_up_tokenization_spaces`, the three in-place passes of llama.cpp's
/// detokenize: " ?", " !", " .", " ," lose the space; " ' " loses both;
/// " 's", " 'm", " 're", " 've" lose the space.
fn clean_up_spaces(text: &mut Vec<u8>) {
    // Pass 1.
    let n = text.len();
    let mut total = usize::from(n > 0);
    for i in 1..n {
        let x = text[i];
        if text[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            total -= 1;
        }
        text[total] = x;
        total += 1;
    }
    text.truncate(total);

    // Pass 2: in place, as the original (it overwrites the space after the
    // apostrophe, which the next step then sees).
    let n = text.len();
    let mut total = usize::from(n > 0);
    let mut i = 1;
    while i < n {
        let x = text[i];
        if x == b'\'' && i + 1 < n && text[i - 1] == b' ' && text[i + 1] == b' ' {
            total -= 1;
            i += 1;
            text[i] = 0;
        }
        text[total] = x;
        total += 1;
        i += 1;
    }
    text.truncate(total);

    // Pass 3.
    let n = text.len();
    let mut total = usize::from(n > 0);
    for i in 1..n {
        let x = text[i];
        if text[i - 1] == b' ' && x == b'\'' && i + 1 < n {
            let x1 = text[i + 1];
            let drop = match x1 {
                b's' | b'm' => true,
                b't' | b'd' => false,
                _ => i + 2 < n && matches!((x1, text[i + 2]), (b'r', b'e') | (b'v', b'e')),
            };
            if drop {
                total -= 1;
            }
        }
        text[total] = x;
        total += 1;
    }
    text.truncate(total);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(s: &str) -> String {
        let mut v = s.as_bytes().to_vec();
        clean_up_spaces(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn clean_up_matches_llama_cpp_rules() {
        assert_eq!(clean("Hello , world !"), "Hello, world!");
        assert_eq!(clean("it ' s"), "it's");
        assert_eq!(
            clean("he 's she 'll we 're I 'd"),
            "he's she 'll we're I 'd"
        );
        assert_eq!(clean(""), "");
        assert_eq!(clean(" ."), ".");
    }

    #[test]
    fn byte_tokens_parse_like_strtol() {
        assert_eq!(byte_of(b"<0x0A>"), 0x0A);
        assert_eq!(byte_of(b"<0xff>"), 0xFF);
        assert_eq!(byte_of(b"<0x4G>"), 0x4);
        assert_eq!(byte_of(b"<0"), 0);
    }

    #[test]
    fn byte_level_decoding() {
        let mut out = Vec::new();
        decode_byte_level("ĠhelloĊ".as_bytes(), &mut out);
        assert_eq!(out, b" hello\n");
        out.clear();
        decode_byte_level("a€".as_bytes(), &mut out);
        assert_eq!(out, "a[UNK_BYTE_0xe282aca€]".as_bytes());
    }
}

//! Byte-pair merging for one pre-tokenized word, as llama.cpp's
//! `llm_tokenizer_bpe_session` does it: start from one symbol per character
//! of the (byte-encoded) word and repeatedly merge the adjacent pair with
//! the lowest merge rank, leftmost first on ties.
//!
//! llama.cpp keys ranks by the two strings. We intern every string that a
//! merge names (its two sides and their concatenation) once at load time, so
//! that merging works on integer ids: ids below `n_vocab` are tokens, the
//! rest are merge strings that are not tokens themselves.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use hashbrown::HashMap;

use super::strtable::StrTable;
use super::unicode::byte_to_char;
use super::vocab::Vocab;

/// A symbol with no id: a character that no token or merge names. It can
/// never merge.
const NO_SYMBOL: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct Merge {
    rank: u32,
    result: u32,
}

#[derive(Debug)]
pub struct Bpe {
    /// (left, right) symbol ids → rank and merged symbol.
    merges: HashMap<u64, Merge>,
    /// Merge strings that are not tokens; symbol id = n_vocab + index.
    extra: StrTable,
    n_vocab: u32,
    /// GPT-2 byte-to-unicode encoding of words (false for SPM-style BPE).
    pub byte_encode: bool,
    /// Emit a word that is itself a token without merging.
    pub ignore_merges: bool,
}

/// A malformed entry of `tokenizer.ggml.merges` is skipped like llama.cpp
/// does (it stores an empty pair that never matches); too much text is an
/// error.
#[derive(Debug, thiserror::Error)]
#[error("tokenizer merges exceed 4 GiB")]
pub struct MergesTooLarge;

fn key(l: u32, r: u32) -> u64 {
    ((l as u64) << 32) | r as u64
}

impl Bpe {
    pub fn new<'a>(
        vocab: &Vocab,
        merges: impl ExactSizeIterator<Item = &'a str>,
        byte_encode: bool,
        ignore_merges: bool,
    ) -> Result<Bpe, MergesTooLarge> {
        let n_vocab = vocab.len() as u32;
        let mut bpe = Bpe {
            merges: HashMap::with_capacity(merges.len()),
            extra: StrTable::with_capacity(64, 1024),
            n_vocab,
            byte_encode,
            ignore_merges,
        };
        let mut joined = Vec::new();
        for (rank, m) in merges.enumerate() {
            // llama.cpp splits at the first space after the first byte.
            let Some(pos) = m
                .as_bytes()
                .iter()
                .skip(1)
                .position(|&b| b == b' ')
                .map(|p| p + 1)
            else {
                continue;
            };
            let (l, r) = (&m[..pos], &m[pos + 1..]);
            let li = bpe.intern(vocab, l.as_bytes())?;
            let ri = bpe.intern(vocab, r.as_bytes())?;
            joined.clear();
            joined.extend_from_slice(l.as_bytes());
            joined.extend_from_slice(r.as_bytes());
            let result = bpe.intern(vocab, &joined)?;
            // The first rank of a repeated pair wins (llama.cpp's emplace).
            bpe.merges.entry(key(li, ri)).or_insert(Merge {
                rank: rank as u32,
                result,
            });
        }
        Ok(bpe)
    }

    fn intern(&mut self, vocab: &Vocab, s: &[u8]) -> Result<u32, MergesTooLarge> {
        if let Some(id) = vocab.find(s) {
            return Ok(id);
        }
        let id = self.extra.intern(s).map_err(|_| MergesTooLarge)?;
        Ok(self.n_vocab + id)
    }

    fn symbol(&self, vocab: &Vocab, s: &[u8]) -> u32 {
        vocab
            .find(s)
            .or_else(|| self.extra.find(s).map(|i| self.n_vocab + i))
            .unwrap_or(NO_SYMBOL)
    }

    #[cfg(test)]
    pub fn n_merges(&self) -> usize {
        self.merges.len()
    }

    /// Append the tokens of one word (raw text as the pre-tokenizer cut it).
    pub fn encode_word(
        &self,
        vocab: &Vocab,
        word: &str,
        scratch: &mut BpeScratch,
        out: &mut Vec<u32>,
    ) {
        let enc = &mut scratch.encoded;
        enc.clear();
        if self.byte_encode {
            for &b in word.as_bytes() {
                let mut buf = [0u8; 4];
                enc.extend_from_slice(byte_to_char(b).encode_utf8(&mut buf).as_bytes());
            }
        } else {
            enc.extend_from_slice(word.as_bytes());
        }
        if enc.is_empty() {
            return;
        }
        if self.ignore_merges {
            if let Some(id) = vocab.find(enc) {
                out.push(id);
                return;
            }
        }

        let syms = &mut scratch.symbols;
        syms.clear();
        let text = std::str::from_utf8(enc).expect("encoded words are UTF-8");
        for (i, (start, c)) in text.char_indices().enumerate() {
            let len = c.len_utf8();
            syms.push(Symbol {
                start: start as u32,
                len: len as u32,
                id: self.symbol(vocab, &enc[start..start + len]),
                prev: i as i32 - 1,
                next: i as i32 + 1,
            });
        }
        if let Some(last) = syms.last_mut() {
            last.next = -1;
        }

        let heap = &mut scratch.heap;
        heap.clear();
        for i in 1..syms.len() {
            self.push_pair(syms, heap, i as i32 - 1, i as i32);
        }
        while let Some(Reverse(c)) = heap.pop() {
            let (l, r) = (c.left as usize, c.right as usize);
            // Skip pairs outdated by an earlier merge.
            if syms[l].len == 0
                || syms[r].len == 0
                || syms[l].id != c.left_id
                || syms[r].id != c.right_id
            {
                continue;
            }
            syms[l].id = c.result;
            syms[l].len += syms[r].len;
            syms[r].len = 0;
            syms[l].next = syms[r].next;
            if syms[r].next >= 0 {
                let n = syms[r].next as usize;
                syms[n].prev = l as i32;
            }
            self.push_pair(syms, heap, syms[l].prev, l as i32);
            self.push_pair(syms, heap, l as i32, syms[l].next);
        }

        for s in syms.iter().filter(|s| s.len > 0) {
            if s.id < self.n_vocab {
                out.push(s.id);
                continue;
            }
            // Not a token: llama.cpp looks up each byte of the symbol's text
            // as a token of its own and drops the bytes that are not.
            let bytes = &enc[s.start as usize..(s.start + s.len) as usize];
            for &b in bytes {
                let t = if self.byte_encode {
                    vocab.find(&[b])
                } else {
                    vocab.find(format!("<0x{b:02X}>").as_bytes())
                };
                out.extend(t);
            }
        }
    }

    fn push_pair(
        &self,
        syms: &[Symbol],
        heap: &mut BinaryHeap<Reverse<Candidate>>,
        l: i32,
        r: i32,
    ) {
        if l < 0 || r < 0 {
            return;
        }
        let (ls, rs) = (&syms[l as usize], &syms[r as usize]);
        if ls.id == NO_SYMBOL || rs.id == NO_SYMBOL {
            return;
        }
        if let Some(m) = self.merges.get(&key(ls.id, rs.id)) {
            heap.push(Reverse(Candidate {
                rank: m.rank,
                left: l as u32,
                right: r as u32,
                left_id: ls.id,
                right_id: rs.id,
                result: m.result,
            }));
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Symbol {
    start: u32,
    len: u32,
    id: u32,
    prev: i32,
    next: i32,
}

/// Lowest rank first, then leftmost (the field order gives the ordering).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Candidate {
    rank: u32,
    left: u32,
    right: u32,
    left_id: u32,
    right_id: u32,
    result: u32,
}

/// Buffers reused across the words of one encode call.
#[derive(Default)]
pub struct BpeScratch {
    encoded: Vec<u8>,
    symbols: Vec<Symbol>,
    heap: BinaryHeap<Reverse<Candidate>>,
}

#[cfg(test)]
mod tests {
    use super::super::vocab::TokenAttr;
    use super::*;

    fn vocab(tokens: &[&str]) -> Vocab {
        let mut t = StrTable::with_capacity(tokens.len(), 64);
        for s in tokens {
            t.push(s.as_bytes()).unwrap();
        }
        Vocab::new(
            t,
            vec![0.0; tokens.len()],
            vec![TokenAttr(TokenAttr::NORMAL); tokens.len()],
        )
    }

    fn encode(bpe: &Bpe, v: &Vocab, word: &str) -> Vec<u32> {
        let mut out = Vec::new();
        bpe.encode_word(v, word, &mut BpeScratch::default(), &mut out);
        out
    }

    #[test]
    fn merges_by_rank_then_leftmost() {
        let v = vocab(&["a", "b", "c", "ab", "bc", "abc", "Ġ", "Ġa"]);
        // "b c" outranks "a b": "abc" → a + bc, and no "a bc" merge.
        let bpe = Bpe::new(&v, ["b c", "a b"].into_iter(), true, false).unwrap();
        assert_eq!(encode(&bpe, &v, "abc"), [0, 4]);
        // Equal candidates: the leftmost merges first.
        let bpe = Bpe::new(&v, ["a b", "b c", "ab c"].into_iter(), true, false).unwrap();
        assert_eq!(encode(&bpe, &v, "abc"), [5]);
        let bpe = Bpe::new(&v, ["Ġ a"].into_iter(), true, false).unwrap();
        assert_eq!(encode(&bpe, &v, " a"), [7]);
    }

    #[test]
    fn merge_results_that_are_not_tokens_still_merge() {
        // "x y" makes "xy" (not a token), then "xy z" makes the token "xyz".
        let v = vocab(&["x", "y", "z", "xyz"]);
        let bpe = Bpe::new(&v, ["x y", "xy z"].into_iter(), true, false).unwrap();
        assert_eq!(encode(&bpe, &v, "xyz"), [3]);
        // A final symbol that is not a token falls back to its bytes.
        assert_eq!(encode(&bpe, &v, "xy"), [0, 1]);
    }

    #[test]
    fn ignore_merges_takes_whole_words() {
        let v = vocab(&["h", "e", "he"]);
        let bpe = Bpe::new(&v, std::iter::empty(), true, true).unwrap();
        assert_eq!(encode(&bpe, &v, "he"), [2]);
        let bpe = Bpe::new(&v, std::iter::empty(), true, false).unwrap();
        assert_eq!(encode(&bpe, &v, "he"), [0, 1]);
    }

    #[test]
    fn malformed_merges_are_skipped() {
        let v = vocab(&["a", "b", "ab"]);
        let bpe = Bpe::new(&v, ["ab", "", " a", "a b"].into_iter(), true, false).unwrap();
        assert_eq!(bpe.n_merges(), 1);
        assert_eq!(encode(&bpe, &v, "ab"), [2]);
    }
}

//! SentencePiece-style tokenization, as llama.cpp's `llm_tokenizer_spm`:
//! start from one symbol per UTF-8 character and repeatedly merge the
//! adjacent pair whose concatenation is the token with the highest score
//! (leftmost first on ties). Characters left over that are not tokens fall
//! back to `<0xXX>` byte tokens.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::vocab::Vocab;

#[derive(Clone, Copy, Debug)]
struct Symbol {
    start: u32,
    len: u32,
    prev: i32,
    next: i32,
}

#[derive(Clone, Copy, Debug)]
struct Bigram {
    score: f32,
    left: u32,
    right: u32,
    size: u32,
}

/// Highest score first, then the leftmost pair.
impl Ord for Bigram {
    fn cmp(&self, o: &Self) -> Ordering {
        self.score
            .total_cmp(&o.score)
            .then_with(|| o.left.cmp(&self.left))
    }
}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl PartialEq for Bigram {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Bigram {}

/// Byte fallback: `<0xXX>`, else the byte itself as a token. llama.cpp
/// throws when neither exists; we use the unknown token, or drop the byte.
pub fn byte_token(vocab: &Vocab, b: u8, unk: Option<u32>) -> Option<u32> {
    vocab
        .find(format!("<0x{b:02X}>").as_bytes())
        .or_else(|| vocab.find(&[b]))
        .or(unk)
}

/// Append the tokens of `text` (already space-escaped to U+2581).
pub fn encode(vocab: &Vocab, text: &str, unk: Option<u32>, out: &mut Vec<u32>) {
    let bytes = text.as_bytes();
    let mut syms: Vec<Symbol> = text
        .char_indices()
        .enumerate()
        .map(|(i, (start, c))| Symbol {
            start: start as u32,
            len: c.len_utf8() as u32,
            prev: i as i32 - 1,
            next: i as i32 + 1,
        })
        .collect();
    let Some(last) = syms.last_mut() else {
        return;
    };
    last.next = -1;

    let mut heap = BinaryHeap::new();
    let try_add = |syms: &[Symbol], heap: &mut BinaryHeap<Bigram>, l: i32, r: i32| {
        if l < 0 || r < 0 {
            return;
        }
        let (ls, rs) = (syms[l as usize], syms[r as usize]);
        // Adjacent symbols are contiguous in the text.
        let s = &bytes[ls.start as usize..(rs.start + rs.len) as usize];
        if let Some(id) = vocab.find(s) {
            heap.push(Bigram {
                score: vocab.score(id),
                left: l as u32,
                right: r as u32,
                size: s.len() as u32,
            });
        }
    };
    for i in 1..syms.len() {
        try_add(&syms, &mut heap, i as i32 - 1, i as i32);
    }
    while let Some(b) = heap.pop() {
        let (l, r) = (b.left as usize, b.right as usize);
        if syms[l].len == 0 || syms[r].len == 0 || syms[l].len + syms[r].len != b.size {
            continue;
        }
        syms[l].len += syms[r].len;
        syms[r].len = 0;
        syms[l].next = syms[r].next;
        if syms[r].next >= 0 {
            let n = syms[r].next as usize;
            syms[n].prev = l as i32;
        }
        try_add(&syms, &mut heap, syms[l].prev, l as i32);
        try_add(&syms, &mut heap, l as i32, syms[l].next);
    }

    let mut i = 0i32;
    while i >= 0 {
        let s = syms[i as usize];
        let piece = &bytes[s.start as usize..(s.start + s.len) as usize];
        match vocab.find(piece) {
            Some(id) => out.push(id),
            // Only single characters can be left that are not tokens: every
            // merge made a token.
            None => out.extend(piece.iter().filter_map(|&b| byte_token(vocab, b, unk))),
        }
        i = s.next;
    }
}

#[cfg(test)]
mod tests {
    use super::super::strtable::StrTable;
    use super::super::vocab::TokenAttr;
    use super::*;

    fn vocab(tokens: &[(&str, f32)]) -> Vocab {
        let mut t = StrTable::with_capacity(tokens.len(), 64);
        for (s, _) in tokens {
            t.push(s.as_bytes()).unwrap();
        }
        let scores = tokens.iter().map(|&(_, s)| s).collect();
        Vocab::new(t, scores, vec![TokenAttr(TokenAttr::NORMAL); tokens.len()])
    }

    fn enc(v: &Vocab, s: &str) -> Vec<u32> {
        let mut out = Vec::new();
        encode(v, s, None, &mut out);
        out
    }

    #[test]
    fn highest_score_wins() {
        // "bc" scores higher than "ab"; then "a"+"bc" has no token.
        let v = vocab(&[
            ("a", 0.0),
            ("b", 0.0),
            ("c", 0.0),
            ("ab", -2.0),
            ("bc", -1.0),
        ]);
        assert_eq!(enc(&v, "abc"), [0, 4]);
        // Any concatenation that is a token merges, whatever its score.
        let v = vocab(&[
            ("a", 0.0),
            ("b", 0.0),
            ("c", 0.0),
            ("ab", -1.0),
            ("bc", -2.0),
            ("abc", -5.0),
        ]);
        assert_eq!(enc(&v, "abc"), [5]);
    }

    #[test]
    fn ties_merge_leftmost_first() {
        let v = vocab(&[("a", 0.0), ("aa", -1.0)]);
        assert_eq!(enc(&v, "aaa"), [1, 0]);
    }

    #[test]
    fn unknown_characters_fall_back_to_bytes() {
        let mut toks: Vec<(String, f32)> =
            (0..=255u8).map(|b| (format!("<0x{b:02X}>"), 0.0)).collect();
        toks.push(("▁".into(), -1.0));
        let refs: Vec<(&str, f32)> = toks.iter().map(|(s, f)| (s.as_str(), *f)).collect();
        let v = vocab(&refs);
        // "é" is not a token: its two UTF-8 bytes are.
        assert_eq!(enc(&v, "▁é"), [256, 0xC3, 0xA9]);
    }
}

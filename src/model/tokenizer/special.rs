//! Special tokens in raw text: before pre-tokenization, llama.cpp carves
//! control, user-defined and unknown tokens out of the text as whole tokens
//! (`tokenizer_st_partition`). It takes the special tokens longest first
//! and, for each, splits every remaining text fragment at its occurrences,
//! left to right. A token with LSTRIP/RSTRIP also eats the whitespace
//! before/after it.
//!
//! llama.cpp searches the text once per special token (Gemma 3 has
//! thousands). We find which special tokens occur at all with one
//! Aho-Corasick pass, then carve only those, in llama.cpp's order, which
//! gives the same fragments.

use std::ops::Range;

use aho_corasick::AhoCorasick;

use super::vocab::{TokenAttr, Vocab};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fragment {
    Text(Range<usize>),
    Token(u32),
}

#[derive(Debug)]
pub struct SpecialTokens {
    /// Pattern i of `ac` is token `ids[i]`; patterns are in llama.cpp's
    /// processing order (longest text first, then lowest id).
    ac: Option<AhoCorasick>,
    ids: Vec<u32>,
}

/// C's isspace in the "C" locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

impl SpecialTokens {
    pub fn new(vocab: &Vocab) -> SpecialTokens {
        let special = TokenAttr::CONTROL | TokenAttr::USER_DEFINED | TokenAttr::UNKNOWN;
        let mut ids: Vec<u32> = (0..vocab.len() as u32)
            .filter(|&id| vocab.attr(id).has(special) && !vocab.text(id).is_empty())
            .collect();
        // llama.cpp's std::sort by length is not stable; equal lengths keep
        // id order here. That only matters for two equal-length special
        // tokens that overlap in the text.
        ids.sort_by_key(|&id| std::cmp::Reverse(vocab.text(id).len()));
        let ac = (!ids.is_empty())
            .then(|| AhoCorasick::new(ids.iter().map(|&id| vocab.text(id))).ok())
            .flatten();
        SpecialTokens { ac, ids }
    }

    pub fn heap_bytes(&self) -> usize {
        self.ids.capacity() * 4 + self.ac.as_ref().map_or(0, AhoCorasick::memory_usage)
    }

    /// Split `text` into special tokens and the text between them. With
    /// `parse_special` false, only user-defined tokens are carved out.
    pub fn partition(&self, vocab: &Vocab, text: &str, parse_special: bool) -> Vec<Fragment> {
        if text.is_empty() {
            return Vec::new();
        }
        let whole = vec![Fragment::Text(0..text.len())];
        let Some(ac) = &self.ac else {
            return whole;
        };
        let skip =
            |id: u32| !parse_special && vocab.attr(id).has(TokenAttr::CONTROL | TokenAttr::UNKNOWN);
        let mut present: Vec<usize> = Vec::new();
        let mut seen = vec![false; self.ids.len()];
        for m in ac.find_overlapping_iter(text) {
            let p = m.pattern().as_usize();
            if !seen[p] && !skip(self.ids[p]) {
                seen[p] = true;
                present.push(p);
            }
        }
        if present.is_empty() {
            return whole;
        }
        present.sort_unstable();

        let bytes = text.as_bytes();
        let mut frags = whole;
        for p in present {
            let id = self.ids[p];
            let needle = vocab.text(id);
            let attr = vocab.attr(id);
            let finder = memchr::memmem::Finder::new(needle);
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                let Fragment::Text(r) = f else {
                    next.push(f);
                    continue;
                };
                let mut start = r.start;
                while start < r.end {
                    let Some(at) = finder.find(&bytes[start..r.end]).map(|i| start + i) else {
                        break;
                    };
                    let mut left_end = at;
                    if attr.has(TokenAttr::LSTRIP) {
                        while left_end > start && is_c_space(bytes[left_end - 1]) {
                            left_end -= 1;
                        }
                    }
                    if left_end > start {
                        next.push(Fragment::Text(start..left_end));
                    }
                    next.push(Fragment::Token(id));
                    start = at + needle.len();
                    if attr.has(TokenAttr::RSTRIP) {
                        while start < r.end && is_c_space(bytes[start]) {
                            start += 1;
                        }
                    }
                }
                if start < r.end {
                    next.push(Fragment::Text(start..r.end));
                }
            }
            frags = next;
        }
        frags
    }
}

#[cfg(test)]
mod tests {
    use super::super::strtable::StrTable;
    use super::*;

    fn vocab(tokens: &[(&str, u16)]) -> Vocab {
        let mut t = StrTable::with_capacity(tokens.len(), 64);
        for (s, _) in tokens {
            t.push(s.as_bytes()).unwrap();
        }
        let attrs = tokens.iter().map(|&(_, a)| TokenAttr(a)).collect();
        Vocab::new(t, vec![0.0; tokens.len()], attrs)
    }

    const N: u16 = TokenAttr::NORMAL;
    const C: u16 = TokenAttr::CONTROL;
    const U: u16 = TokenAttr::USER_DEFINED;

    #[test]
    fn carves_tokens_and_keeps_text_between() {
        let v = vocab(&[("a", N), ("<s>", C), ("<|x|>", C)]);
        let s = SpecialTokens::new(&v);
        let text = "<s>hi<|x|> there<s>";
        assert_eq!(
            s.partition(&v, text, true),
            [
                Fragment::Token(1),
                Fragment::Text(3..5),
                Fragment::Token(2),
                Fragment::Text(10..16),
                Fragment::Token(1)
            ]
        );
        // Without parse_special, control tokens stay text.
        assert_eq!(
            s.partition(&v, text, false),
            [Fragment::Text(0..text.len())]
        );
    }

    #[test]
    fn user_defined_tokens_are_always_carved() {
        let v = vocab(&[("\n\n", U), ("<b>", C)]);
        let s = SpecialTokens::new(&v);
        assert_eq!(
            s.partition(&v, "a\n\n\nb<b>", false),
            [
                Fragment::Text(0..1),
                Fragment::Token(0),
                Fragment::Text(3..8)
            ]
        );
    }

    #[test]
    fn longer_tokens_go_first() {
        let v = vocab(&[("ab", C), ("abc", C), ("c", C)]);
        let s = SpecialTokens::new(&v);
        assert_eq!(
            s.partition(&v, "abcab", true),
            [Fragment::Token(1), Fragment::Token(0)]
        );
    }

    #[test]
    fn strip_flags_eat_whitespace() {
        let v = vocab(&[
            ("<m>", C | TokenAttr::LSTRIP),
            ("<r>", C | TokenAttr::RSTRIP),
        ]);
        let s = SpecialTokens::new(&v);
        assert_eq!(
            s.partition(&v, "a \t<m> b<r> \nc", true),
            [
                Fragment::Text(0..1),
                Fragment::Token(0),
                Fragment::Text(6..8),
                Fragment::Token(1),
                Fragment::Text(13..14)
            ]
        );
    }
}

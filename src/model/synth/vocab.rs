//! Tokenizer vocabularies for synthetic models: a byte-level GPT-2 style BPE
//! (`tokenizer.ggml.model = "gpt2"`) and a SentencePiece-style one
//! (`"llama"`) with scores and `<0xXX>` byte fallback. Both get their merges
//! from a small BPE training run over a fixed English text, so common words
//! become single tokens and the result is the same on every run.

use std::collections::HashMap;

/// llama.cpp's `llama_token_type` values, as GGUF stores them.
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// A vocabulary ready to be written as `tokenizer.ggml.*` metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Vocab {
    /// `tokenizer.ggml.model`: `gpt2` or `llama`.
    pub model: &'static str,
    /// `tokenizer.ggml.pre` (gpt2 only).
    pub pre: Option<&'static str>,
    pub tokens: Vec<String>,
    pub token_types: Vec<i32>,
    /// SentencePiece only.
    pub scores: Option<Vec<f32>>,
    /// gpt2 only: `"left right"` pairs, highest priority first.
    pub merges: Option<Vec<String>>,
    pub bos: u32,
    pub eos: u32,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub add_bos: bool,
    pub chat_template: &'static str,
}

/// Text the merges are learned from: plain English, chat-ish.
const CORPUS: &str = "The quick brown fox jumps over the lazy dog. \
Hello, how are you today? I am fine, thank you. What is the weather like? \
It is a sunny day and the sky is blue. The cat sat on the mat and the dog \
slept in the sun. Once upon a time there was a little girl who lived in a \
village near the forest. She liked to read books and to write stories about \
the things she saw. The model answers the question of the user with a short \
and helpful reply. Please explain the answer in simple words. There are many \
ways to learn something new: read, listen, practice and ask questions. \
One, two, three, four, five, six, seven, eight, nine, ten. \
This is a test of the tokenizer, and this is the end of the test. \
What would you like to do next? I would like to go to the park with my friends.";

/// Split text into words the way GPT-2's pre-tokenizer roughly does: a run
/// of letters, of digits, or of other chars, each with the space before it.
fn words(text: &str) -> Vec<String> {
    fn class(c: char) -> u8 {
        if c.is_alphabetic() {
            0
        } else if c.is_numeric() {
            1
        } else {
            2
        }
    }
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            space = true;
            continue;
        }
        let same = cur
            .chars()
            .last()
            .is_some_and(|l| l != ' ' && class(l) == class(c));
        if !same && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        if cur.is_empty() && space {
            cur.push(' ');
        }
        space = false;
        cur.push(c);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Learn up to `max` BPE merges over `words`, each word given as symbols.
/// The most frequent pair wins; ties break by the pair's text, so the
/// result is deterministic. Training stops when every word is one symbol.
fn train_merges(
    words: &[String],
    to_symbols: &dyn Fn(&str) -> Vec<String>,
    max: usize,
) -> Vec<(String, String)> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for w in words {
        *counts.entry(w.clone()).or_default() += 1;
    }
    let mut seqs: Vec<(Vec<String>, usize)> = {
        let mut v: Vec<_> = counts.into_iter().collect();
        v.sort();
        v.into_iter().map(|(w, n)| (to_symbols(&w), n)).collect()
    };
    let mut merges = Vec::new();
    while merges.len() < max {
        let mut pairs: HashMap<(&str, &str), usize> = HashMap::new();
        for (s, n) in &seqs {
            for w in s.windows(2) {
                *pairs.entry((&w[0], &w[1])).or_default() += n;
            }
        }
        let best = pairs
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)));
        let Some(((l, r), _)) = best else { break };
        let (l, r) = (l.to_string(), r.to_string());
        let joined = format!("{l}{r}");
        for (s, _) in &mut seqs {
            let mut i = 0;
            while i + 1 < s.len() {
                if s[i] == l && s[i + 1] == r {
                    s[i] = joined.clone();
                    s.remove(i + 1);
                }
                i += 1;
            }
        }
        merges.push((l, r));
    }
    merges
}

/// GPT-2's map from bytes to printable chars, in its vocabulary order:
/// the printable Latin-1 bytes keep their char, the rest map to U+0100 up.
pub fn gpt2_byte_chars() -> Vec<(u8, char)> {
    let mut out: Vec<(u8, char)> = Vec::with_capacity(256);
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    for b in 0..=255u8 {
        if printable(b) {
            out.push((b, char::from(b)));
        }
    }
    let mut n = 0u32;
    for b in 0..=255u8 {
        if !printable(b) {
            out.push((b, char::from_u32(256 + n).expect("valid code point")));
            n += 1;
        }
    }
    out
}

const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

const GEMMA: &str = "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}";

/// Specials of the gpt2 vocab, at ids 0.. (as SmolLM2 has them).
pub const GPT2_SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
/// Smallest gpt2 vocab: the specials and the 256 byte tokens.
pub const GPT2_MIN_VOCAB: u64 = 3 + 256;

/// A byte-level BPE vocab of exactly `size` tokens (at least
/// [`GPT2_MIN_VOCAB`]): specials, the 256 byte tokens, learned merges, then
/// unused filler tokens.
pub fn gpt2(size: u64) -> Result<Vocab, String> {
    if size < GPT2_MIN_VOCAB {
        return Err(format!(
            "a gpt2 vocab needs at least {GPT2_MIN_VOCAB} tokens, got {size}"
        ));
    }
    let size = usize::try_from(size).map_err(|_| "vocab size too large".to_string())?;
    let byte_chars = gpt2_byte_chars();
    let map: HashMap<u8, char> = byte_chars.iter().copied().collect();
    let encode = |w: &str| -> Vec<String> { w.bytes().map(|b| map[&b].to_string()).collect() };

    let mut tokens: Vec<String> = GPT2_SPECIALS.iter().map(|s| s.to_string()).collect();
    let mut types = vec![token_type::CONTROL; tokens.len()];
    tokens.extend(byte_chars.iter().map(|(_, c)| c.to_string()));
    types.resize(tokens.len(), token_type::NORMAL);
    let merges = train_merges(&words(CORPUS), &encode, size - tokens.len());
    for (l, r) in &merges {
        tokens.push(format!("{l}{r}"));
        types.push(token_type::NORMAL);
    }
    let mut i = 0;
    while tokens.len() < size {
        tokens.push(format!("<|unused_{i}|>"));
        types.push(token_type::UNUSED);
        i += 1;
    }
    Ok(Vocab {
        model: "gpt2",
        pre: Some("default"),
        tokens,
        token_types: types,
        scores: None,
        merges: Some(
            merges
                .into_iter()
                .map(|(l, r)| format!("{l} {r}"))
                .collect(),
        ),
        bos: 1,
        eos: 2,
        unk: Some(0),
        pad: Some(2),
        add_bos: false,
        chat_template: CHATML,
    })
}

/// Specials of the SentencePiece vocab, at ids 0.. (Gemma's first four,
/// then its turn markers).
pub const SPM_SPECIALS: [&str; 6] = [
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<start_of_turn>",
    "<end_of_turn>",
];
/// The word-start marker SentencePiece uses for a space.
pub const SPM_SPACE: char = '\u{2581}';

fn spm_chars() -> Vec<String> {
    std::iter::once(SPM_SPACE)
        .chain((b'!'..=b'~').map(char::from))
        .map(|c| c.to_string())
        .collect()
}

/// Smallest SentencePiece vocab: specials, 256 byte tokens, `▁` and the
/// printable ASCII chars.
pub fn spm_min_vocab() -> u64 {
    (SPM_SPECIALS.len() + 256 + spm_chars().len()) as u64
}

/// A SentencePiece-style vocab of exactly `size` tokens: specials, the
/// `<0xXX>` byte-fallback tokens, single chars, learned pieces (scored so
/// that earlier merges win), then unused filler tokens.
pub fn sentencepiece(size: u64) -> Result<Vocab, String> {
    let min = spm_min_vocab();
    if size < min {
        return Err(format!(
            "a SentencePiece vocab needs at least {min} tokens, got {size}"
        ));
    }
    let size = usize::try_from(size).map_err(|_| "vocab size too large".to_string())?;
    let mut tokens: Vec<String> = SPM_SPECIALS.iter().map(|s| s.to_string()).collect();
    let mut types = vec![token_type::CONTROL; tokens.len()];
    types[3] = token_type::UNKNOWN;
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(token_type::BYTE);
    }
    for c in spm_chars() {
        tokens.push(c);
        types.push(token_type::NORMAL);
    }
    let encode = |w: &str| -> Vec<String> {
        w.chars()
            .map(|c| if c == ' ' { SPM_SPACE } else { c })
            .map(|c| c.to_string())
            .collect()
    };
    let merges = train_merges(&words(CORPUS), &encode, size - tokens.len());
    for (l, r) in merges {
        tokens.push(format!("{l}{r}"));
        types.push(token_type::NORMAL);
    }
    let mut i = 0;
    while tokens.len() < size {
        tokens.push(format!("<unused{i}>"));
        types.push(token_type::UNUSED);
        i += 1;
    }
    // Specials and bytes score 0; normal pieces score lower the later they
    // come, so the SentencePiece merge loop prefers earlier (more common)
    // pieces; filler scores lowest.
    let scores = types
        .iter()
        .enumerate()
        .map(|(i, &t)| match t {
            token_type::NORMAL | token_type::UNUSED => -(i as f32),
            _ => 0.0,
        })
        .collect();
    Ok(Vocab {
        model: "llama",
        pre: Some("default"),
        tokens,
        token_types: types,
        scores: Some(scores),
        merges: None,
        bos: 2,
        eos: 1,
        unk: Some(3),
        pad: Some(0),
        add_bos: true,
        chat_template: GEMMA,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn gpt2_byte_map_is_a_bijection_in_gpt2_order() {
        let m = gpt2_byte_chars();
        assert_eq!(m.len(), 256);
        assert_eq!(m[0], (b'!', '!'));
        // Space is the 33rd unprintable byte: U+0100 + 32 = 'Ġ'.
        assert!(m.contains(&(b' ', '\u{120}')));
        assert!(m.contains(&(b'\n', '\u{10A}')));
        let chars: HashSet<char> = m.iter().map(|p| p.1).collect();
        let bytes: HashSet<u8> = m.iter().map(|p| p.0).collect();
        assert_eq!((chars.len(), bytes.len()), (256, 256));
    }

    #[test]
    fn gpt2_vocab_is_consistent() {
        let v = gpt2(1000).unwrap();
        assert_eq!(v.tokens.len(), 1000);
        assert_eq!(v.token_types.len(), 1000);
        assert_eq!(&v.tokens[..3], &GPT2_SPECIALS.map(String::from));
        let merges = v.merges.as_ref().unwrap();
        assert!(merges.len() > 100, "{} merges", merges.len());
        let ids: HashMap<&str, usize> = v
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i))
            .collect();
        assert_eq!(ids.len(), 1000, "tokens are unique");
        // Every merge joins two tokens that exist into one that exists.
        for m in merges {
            let (l, r) = m.split_once(' ').unwrap();
            assert!(ids.contains_key(l) && ids.contains_key(r), "{m}");
            assert!(ids.contains_key(format!("{l}{r}").as_str()), "{m}");
        }
        // Common words became whole tokens.
        assert!(ids.contains_key("\u{120}the"), "Ġthe missing");
        assert!(gpt2(GPT2_MIN_VOCAB - 1).is_err());
        assert_eq!(gpt2(GPT2_MIN_VOCAB).unwrap().merges.unwrap().len(), 0);
    }

    #[test]
    fn sentencepiece_vocab_is_consistent() {
        let v = sentencepiece(600).unwrap();
        assert_eq!(v.tokens.len(), 600);
        assert_eq!(v.tokens[v.bos as usize], "<bos>");
        assert_eq!(v.tokens[v.eos as usize], "<eos>");
        assert_eq!(v.tokens[6], "<0x00>");
        assert_eq!(v.tokens[6 + 255], "<0xFF>");
        let scores = v.scores.as_ref().unwrap();
        assert_eq!(scores.len(), 600);
        let ids: HashMap<&str, usize> = v
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i))
            .collect();
        assert_eq!(ids.len(), 600, "tokens are unique");
        assert!(ids.contains_key("\u{2581}the"));
        // Every learned piece can be built from two shorter pieces.
        for (i, t) in v.tokens.iter().enumerate() {
            if v.token_types[i] == token_type::NORMAL && t.chars().count() > 1 {
                let ok = t
                    .char_indices()
                    .skip(1)
                    .any(|(k, _)| ids.contains_key(&t[..k]) && ids.contains_key(&t[k..]));
                assert!(ok, "{t} has no split into known pieces");
            }
        }
        assert!(sentencepiece(spm_min_vocab() - 1).is_err());
    }

    #[test]
    fn training_is_deterministic() {
        assert_eq!(gpt2(800).unwrap(), gpt2(800).unwrap());
        assert_eq!(sentencepiece(800).unwrap(), sentencepiece(800).unwrap());
    }
}

//! Tokenizer tests on small synthetic vocabularies written as GGUF. The
//! real models and llama.cpp's outputs are in tests/tokenizer_parity.rs.

use super::*;
use crate::gguf::{Array, Gguf, GgufWriter, Value};

fn strings(v: &[&str]) -> Value {
    Value::Array(Array::String(v.iter().map(|s| s.to_string()).collect()))
}

fn parse(w: &GgufWriter) -> Gguf {
    Gguf::parse(&w.to_bytes()).expect("valid gguf")
}

/// A byte-level BPE vocabulary: the 256 byte characters, a few merges and
/// two control tokens.
fn bpe_gguf(pre: &str) -> GgufWriter {
    let mut tokens: Vec<String> = vec!["<|endoftext|>".into(), "<|im_end|>".into()];
    for b in 0..=255u8 {
        tokens.push(unicode::byte_to_char(b).to_string());
    }
    for t in [
        "he", "ll", "llo", "hello", "Ġw", "or", "Ġwor", "ld", "Ġworld", "ĠĠ",
    ] {
        tokens.push(t.into());
    }
    let mut types = vec![3i32, 3];
    types.resize(tokens.len(), 1);
    let mut w = GgufWriter::new();
    w.set_str("tokenizer.ggml.model", "gpt2")
        .set_str("tokenizer.ggml.pre", pre)
        .set("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)))
        .set("tokenizer.ggml.token_type", Value::Array(Array::I32(types)))
        .set(
            "tokenizer.ggml.merges",
            strings(&[
                "h e", "l l", "ll o", "he llo", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "Ġ Ġ",
            ]),
        )
        .set_u32("tokenizer.ggml.bos_token_id", 0)
        .set_u32("tokenizer.ggml.eos_token_id", 0);
    w
}

fn id_of(tok: &Tokenizer, text: &str) -> u32 {
    tok.token_id(text)
        .unwrap_or_else(|| panic!("no token {text:?}"))
}

#[test]
fn bpe_encodes_with_merges_and_specials() {
    let tok = Tokenizer::from_gguf(&parse(&bpe_gguf("gpt-2"))).unwrap();
    assert_eq!(tok.model_name(), "gpt2");
    let hello = id_of(&tok, "hello");
    let world = id_of(&tok, "Ġworld");
    assert_eq!(tok.encode("hello world", false, false), [hello, world]);
    // add_bos defaults to false for BPE; the control token is parsed only
    // when asked.
    assert_eq!(tok.encode("hello<|im_end|>", true, true), [hello, 1]);
    let plain = tok.encode("hello<|im_end|>", true, false);
    assert_eq!(plain.len(), 1 + "<|im_end|>".len());
    assert_eq!(tok.decode(&plain), "hello<|im_end|>");
    // Control tokens render as nothing unless asked.
    assert_eq!(tok.decode(&[hello, 1, world]), "hello world");
    assert_eq!(tok.decode_bytes(&[hello, 1], true), b"hello<|im_end|>");
    assert!(tok.is_eog(0) && tok.is_eog(1));
    assert!(!tok.is_eog(hello));
}

#[test]
fn bpe_round_trips_any_text() {
    let tok = Tokenizer::from_gguf(&parse(&bpe_gguf("llama3"))).unwrap();
    for s in [
        "",
        " ",
        "héllo wörld  \n\t\r\n",
        "🚀 中文 'S'll 12345",
        "\u{0}\u{7f}\u{10FFFF}",
    ] {
        let ids = tok.encode(s, false, false);
        assert_eq!(tok.decode(&ids), s, "{s:?}");
    }
}

#[test]
fn metadata_sets_bos_and_eos() {
    let mut w = bpe_gguf("gpt-2");
    w.set_bool("tokenizer.ggml.add_bos_token", true)
        .set_bool("tokenizer.ggml.add_eos_token", true);
    let tok = Tokenizer::from_gguf(&parse(&w)).unwrap();
    assert!(tok.add_bos() && tok.add_eos());
    let hello = id_of(&tok, "hello");
    assert_eq!(tok.encode("hello", true, false), [0, hello, 0]);
    assert_eq!(tok.encode("hello", false, false), [hello]);
    // llama3 turns add_bos on by default.
    let tok = Tokenizer::from_gguf(&parse(&bpe_gguf("llama3"))).unwrap();
    assert!(tok.add_bos());
}

#[test]
fn bad_metadata_gives_errors() {
    let mut w = bpe_gguf("no-such-pre");
    assert!(
        matches!(Tokenizer::from_gguf(&parse(&w)), Err(TokenizerError::UnknownPre(p)) if p == "no-such-pre")
    );
    w.set_str("tokenizer.ggml.model", "wordpiece9");
    assert!(matches!(
        Tokenizer::from_gguf(&parse(&w)),
        Err(TokenizerError::UnknownModel(_))
    ));
    let mut w = bpe_gguf("gpt-2");
    w.metadata.retain(|(k, _)| k != "tokenizer.ggml.merges");
    assert!(matches!(
        Tokenizer::from_gguf(&parse(&w)),
        Err(TokenizerError::MissingKey(_))
    ));
    let mut w = bpe_gguf("gpt-2");
    w.set(
        "tokenizer.ggml.tokens",
        Value::Array(Array::I32(vec![1, 2])),
    );
    assert!(matches!(
        Tokenizer::from_gguf(&parse(&w)),
        Err(TokenizerError::WrongType { .. })
    ));
    let mut w = bpe_gguf("gpt-2");
    w.set("tokenizer.ggml.tokens", strings(&["a", "b", "a"]));
    w.set(
        "tokenizer.ggml.token_type",
        Value::Array(Array::I32(vec![1, 1, 1])),
    );
    assert!(matches!(
        Tokenizer::from_gguf(&parse(&w)),
        Err(TokenizerError::DuplicateToken {
            first: 0,
            second: 2,
            ..
        })
    ));
    let mut w = bpe_gguf("gpt-2");
    w.set(
        "tokenizer.ggml.token_type",
        Value::Array(Array::I32(vec![1])),
    );
    assert!(matches!(
        Tokenizer::from_gguf(&parse(&w)),
        Err(TokenizerError::TooShort { .. })
    ));
    let mut w = bpe_gguf("gpt-2");
    w.set("tokenizer.ggml.tokens", strings(&[]));
    assert!(matches!(
        Tokenizer::from_gguf(&parse(&w)),
        Err(TokenizerError::EmptyVocab)
    ));
    let w = GgufWriter::new();
    assert!(matches!(
        Tokenizer::from_gguf(&parse(&w)),
        Err(TokenizerError::MissingKey(_))
    ));
}

#[test]
fn special_ids_out_of_range_are_ignored() {
    let mut w = bpe_gguf("gpt-2");
    w.set_u32("tokenizer.ggml.bos_token_id", 1_000_000);
    w.set_u32("tokenizer.ggml.eot_token_id", 1);
    let tok = Tokenizer::from_gguf(&parse(&w)).unwrap();
    // The default BPE BOS (11) stays.
    assert_eq!(tok.bos(), Some(11));
    assert_eq!(tok.eot(), Some(1));
    // Out-of-range ids decode to nothing rather than panicking.
    assert_eq!(tok.token_to_piece(u32::MAX), b"");
    assert_eq!(tok.decode(&[u32::MAX, 5]), tok.decode(&[5]));
}

/// A SentencePiece vocabulary with byte fallback.
fn spm_gguf() -> GgufWriter {
    let mut tokens: Vec<String> = vec![
        "<unk>".into(),
        "<s>".into(),
        "</s>".into(),
        "<start>".into(),
        "\n\n".into(),
    ];
    let mut types = vec![2i32, 3, 3, 3, 4];
    let mut scores = vec![0f32; 5];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    for (t, s) in [
        ("▁", -1.0),
        ("h", -2.0),
        ("i", -2.0),
        ("▁h", -3.0),
        ("hi", -1.5),
        ("▁hi", -0.5),
        ("!", -2.0),
    ] {
        tokens.push(t.into());
        types.push(1);
        scores.push(s);
    }
    let mut w = GgufWriter::new();
    w.set_str("tokenizer.ggml.model", "llama")
        .set("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)))
        .set("tokenizer.ggml.token_type", Value::Array(Array::I32(types)))
        .set("tokenizer.ggml.scores", Value::Array(Array::F32(scores)));
    w
}

#[test]
fn spm_merges_by_score_with_space_prefix_and_byte_fallback() {
    let tok = Tokenizer::from_gguf(&parse(&spm_gguf())).unwrap();
    assert_eq!(tok.model_name(), "llama");
    // SPM defaults: BOS 1, add_bos, add_space_prefix.
    assert!(tok.add_bos());
    let hi = id_of(&tok, "▁hi");
    let bang = id_of(&tok, "!");
    assert_eq!(tok.encode("hi!", true, true), [1, hi, bang]);
    // "é" has no token: its UTF-8 bytes.
    assert_eq!(
        tok.encode("é", false, false),
        [id_of(&tok, "▁"), 5 + 0xC3, 5 + 0xA9]
    );
    // After a special token the next text gets the space prefix again;
    // user-defined "\n\n" is carved out even without parse_special.
    assert_eq!(tok.encode("hi<start>hi", false, true), [hi, 3, hi]);
    assert_eq!(tok.encode("hi\n\nhi", false, false), [hi, 4, hi]);
    // Pieces: ▁ is a space, byte tokens are raw bytes.
    assert_eq!(tok.token_to_piece(hi), b" hi");
    assert_eq!(tok.token_to_piece(5 + 0xC3), [0xC3]);
    assert_eq!(tok.token_to_piece(1), b"");
    assert_eq!(tok.piece(1, true), b"<s>");
    // detokenize drops the prefix space of the first token, unless it
    // removed a BOS before it (llama.cpp's rule).
    let ids = tok.encode("hi é", true, false);
    assert_eq!(tok.detokenize(&ids[1..], false, false), "hi é".as_bytes());
    assert_eq!(tok.detokenize(&ids, true, false), " hi é".as_bytes());
    assert_eq!(tok.detokenize(&ids, false, true), "<s> hi é".as_bytes());
    assert!(tok.is_eog(2) && !tok.is_eog(1));
}

#[test]
fn spm_without_space_prefix() {
    let mut w = spm_gguf();
    w.set_bool("tokenizer.ggml.add_space_prefix", false);
    let tok = Tokenizer::from_gguf(&parse(&w)).unwrap();
    assert_eq!(tok.encode("hi", false, false), [id_of(&tok, "hi")]);
    assert_eq!(tok.encode(" hi", false, false), [id_of(&tok, "▁hi")]);
}

#[test]
fn stream_decoder_holds_back_partial_characters() {
    let tok = Tokenizer::from_gguf(&parse(&spm_gguf())).unwrap();
    // "🚀中" as byte tokens: 4 + 3 bytes.
    let bytes = "🚀中".as_bytes();
    let ids: Vec<u32> = bytes.iter().map(|&b| 5 + b as u32).collect();
    let mut d = StreamDecoder::new(&tok);
    let chunks: Vec<String> = ids.iter().map(|&id| d.push(id)).collect();
    assert_eq!(chunks, ["", "", "", "🚀", "", "", "中"]);
    assert_eq!(d.finish(), "");
    // An incomplete character at the end becomes U+FFFD, like decode.
    let mut d = StreamDecoder::new(&tok);
    let mut s: String = ids[..6].iter().map(|&id| d.push(id)).collect();
    s += &d.finish();
    assert_eq!(s, tok.decode(&ids[..6]));
    assert_eq!(s, "🚀\u{FFFD}");
    // An invalid byte in the middle is replaced at once.
    let mut d = StreamDecoder::new(std::sync::Arc::new(tok));
    assert_eq!(d.push(5 + 0xF0), "");
    assert_eq!(d.push(5 + b'A' as u32), "\u{FFFD}A");
}

#[test]
fn tokenizer_is_shareable_between_threads() {
    fn check<T: Send + Sync>() {}
    check::<Tokenizer>();
    check::<StreamDecoder<std::sync::Arc<Tokenizer>>>();
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Byte-level BPE loses nothing, whatever the text and
        /// pre-tokenizer; the stream decoder agrees with decode.
        #[test]
        fn bpe_round_trips(s in "\\PC*|[ \t\n\r'a-zA-Z0-9\u{A0}\u{3000}é中🙂]{0,40}", pre in prop::sample::select(vec!["default", "llama3", "qwen2", "smollm", "deepseek-llm", "bloom", "falcon"])) {
            let tok = Tokenizer::from_gguf(&parse(&bpe_gguf(pre))).unwrap();
            let ids = tok.encode(&s, false, false);
            prop_assert_eq!(tok.decode(&ids), s.clone());
            let mut d = StreamDecoder::new(&tok);
            let mut out: String = ids.iter().map(|&id| d.push(id)).collect();
            out += &d.finish();
            prop_assert_eq!(out, s);
        }

        /// SentencePiece with byte fallback and no space prefix loses
        /// nothing either.
        #[test]
        fn spm_round_trips(s in "\\PC*") {
            let mut w = spm_gguf();
            w.set_bool("tokenizer.ggml.add_space_prefix", false);
            let tok = Tokenizer::from_gguf(&parse(&w)).unwrap();
            let ids = tok.encode(&s, false, false);
            prop_assert_eq!(tok.decode(&ids), s);
        }
    }
}

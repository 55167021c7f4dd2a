//! Building a [`Tokenizer`] from GGUF metadata, following the order and
//! defaults of llama.cpp's `llama_vocab::impl::load`.

use crate::gguf::{Array, Gguf};

use super::bpe::Bpe;
use super::pretokenize::{pre_spec, PreTokenizer};
use super::special::SpecialTokens;
use super::strtable::StrTable;
use super::vocab::{TokenAttr, Vocab};
use super::{piece, Model, SpecialIds, Tokenizer, TokenizerError};

const KEY_MODEL: &str = "tokenizer.ggml.model";
const KEY_PRE: &str = "tokenizer.ggml.pre";
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_SCORES: &str = "tokenizer.ggml.scores";
const KEY_TYPES: &str = "tokenizer.ggml.token_type";
const KEY_MERGES: &str = "tokenizer.ggml.merges";

/// End-of-turn tokens llama.cpp recognises by text when the metadata names
/// none.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];

/// Tokens that end generation, recognised by text (llama.cpp issue 9606).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

fn strings<'g>(g: &'g Gguf, key: &'static str) -> Result<Option<&'g [String]>, TokenizerError> {
    match g.get_array(key) {
        None if g.get(key).is_none() => Ok(None),
        Some(Array::String(v)) => Ok(Some(v)),
        _ => Err(TokenizerError::WrongType {
            key,
            expected: "array of strings",
        }),
    }
}

fn bool_key(g: &Gguf, key: &str) -> Option<bool> {
    g.get_bool(key)
}

impl Tokenizer {
    /// Load the tokenizer that a model's GGUF metadata describes.
    pub fn from_gguf(g: &Gguf) -> Result<Tokenizer, TokenizerError> {
        let model_name = g
            .get_str(KEY_MODEL)
            .ok_or(TokenizerError::MissingKey(KEY_MODEL))?;
        let is_spm = match model_name {
            "llama" => true,
            "gpt2" => false,
            other => return Err(TokenizerError::UnknownModel(other.to_string())),
        };

        // Defaults by model type, then by pre-tokenizer (llama.cpp order).
        let mut ids = if is_spm {
            SpecialIds {
                bos: Some(1),
                eos: Some(2),
                unk: Some(0),
                ..SpecialIds::default()
            }
        } else {
            SpecialIds {
                bos: Some(11),
                eos: Some(11),
                ..SpecialIds::default()
            }
        };
        let pre_name = if is_spm {
            String::new()
        } else {
            g.get_str(KEY_PRE).unwrap_or("").to_string()
        };
        let mut add_bos;
        let mut add_space_prefix;
        let clean_spaces;
        let pre = if is_spm {
            add_space_prefix = true;
            clean_spaces = false;
            add_bos = true;
            None
        } else {
            let spec =
                pre_spec(&pre_name).ok_or_else(|| TokenizerError::UnknownPre(pre_name.clone()))?;
            add_space_prefix = false;
            clean_spaces = spec.clean_spaces;
            add_bos = spec.add_bos;
            if spec.no_bos {
                ids.bos = None;
            }
            Some(spec)
        };
        let mut add_eos = false;
        if let Some(v) = bool_key(g, "tokenizer.ggml.add_space_prefix") {
            add_space_prefix = v;
        }

        let vocab = load_vocab(g)?;
        let n = vocab.len();
        let mut vocab = vocab;

        let model = match &pre {
            None => Model::Spm,
            Some(spec) => {
                let merges =
                    strings(g, KEY_MERGES)?.ok_or(TokenizerError::MissingKey(KEY_MERGES))?;
                let bpe = Bpe::new(
                    &vocab,
                    merges.iter().map(String::as_str),
                    true,
                    spec.ignore_merges,
                )
                .map_err(|_| TokenizerError::TooLarge)?;
                Model::Bpe {
                    bpe,
                    pre: PreTokenizer::new(spec.regexes)?,
                }
            }
        };

        read_special_ids(g, &mut ids, n);
        if let Some(v) = bool_key(g, "tokenizer.ggml.add_bos_token") {
            add_bos = v;
        }
        if let Some(v) = bool_key(g, "tokenizer.ggml.add_eos_token") {
            add_eos = v;
        }

        let eog = detect_special_by_text(&mut vocab, &mut ids);
        apply_model_quirks(g, &mut vocab, &pre_name);

        let special = SpecialTokens::new(&vocab);
        // Per-model strip attributes do not change pieces, so the order
        // against llama.cpp's piece cache does not matter.
        let pieces =
            piece::build_cache(&vocab, is_spm, false).map_err(|_| TokenizerError::TooLarge)?;

        Ok(Tokenizer {
            vocab,
            model,
            special,
            ids,
            eog,
            add_bos,
            add_eos,
            add_space_prefix,
            escape_whitespaces: false,
            clean_spaces,
            pieces,
            model_name: if is_spm { "llama" } else { "gpt2" },
            pre_name,
        })
    }
}

fn load_vocab(g: &Gguf) -> Result<Vocab, TokenizerError> {
    let tokens = strings(g, KEY_TOKENS)?.ok_or(TokenizerError::MissingKey(KEY_TOKENS))?;
    let n = tokens.len();
    if n == 0 {
        return Err(TokenizerError::EmptyVocab);
    }
    if n > i32::MAX as usize {
        return Err(TokenizerError::TooManyTokens(n));
    }
    let scores: Vec<f32> = match g.get(KEY_SCORES) {
        None => vec![0.0; n],
        Some(v) => {
            let s: Vec<f32> = match v.as_array() {
                Some(Array::F32(s)) => s.clone(),
                Some(Array::I32(s)) => s.iter().map(|&x| x as f32).collect(),
                _ => {
                    return Err(TokenizerError::WrongType {
                        key: KEY_SCORES,
                        expected: "array of f32 or i32",
                    })
                }
            };
            if s.len() < n {
                return Err(TokenizerError::TooShort {
                    key: KEY_SCORES,
                    got: s.len(),
                    want: n,
                });
            }
            s
        }
    };
    let attrs: Vec<TokenAttr> = match g.get(KEY_TYPES) {
        None => vec![TokenAttr(TokenAttr::NORMAL); n],
        Some(v) => match v.as_array() {
            Some(Array::I32(t)) if t.len() >= n => t[..n]
                .iter()
                .map(|&x| TokenAttr::from_token_type(x as i64))
                .collect(),
            Some(Array::I32(t)) => {
                return Err(TokenizerError::TooShort {
                    key: KEY_TYPES,
                    got: t.len(),
                    want: n,
                })
            }
            _ => {
                return Err(TokenizerError::WrongType {
                    key: KEY_TYPES,
                    expected: "array of i32",
                })
            }
        },
    };
    let bytes: usize = tokens.iter().map(String::len).sum();
    let mut texts = StrTable::with_capacity(n, bytes);
    for (i, t) in tokens.iter().enumerate() {
        let pushed = if t.is_empty() {
            texts.push(format!("[EMPTY_{i}]").as_bytes())
        } else {
            texts.push(t.as_bytes())
        };
        let (id, prev) = pushed.map_err(|_| TokenizerError::TooLarge)?;
        if let Some(first) = prev {
            // llama.cpp asserts on this too.
            return Err(TokenizerError::DuplicateToken {
                first,
                second: id,
                text: t.clone(),
            });
        }
    }
    Ok(Vocab::new(texts, scores[..n].to_vec(), attrs))
}

/// Special ids from metadata: a default out of range is dropped, a key out
/// of range is ignored (llama.cpp warns and keeps the default).
fn read_special_ids(g: &Gguf, ids: &mut SpecialIds, n: usize) {
    fn read(g: &Gguf, key: &str, slot: &mut Option<u32>, n: usize) {
        if slot.is_some_and(|id| id as usize >= n) {
            *slot = None;
        }
        if let Some(v) = g.get_u64(key) {
            if (v as usize) < n {
                *slot = Some(v as u32);
            }
        }
    }
    let slots: [(&str, &mut Option<u32>); 14] = [
        ("tokenizer.ggml.bos_token_id", &mut ids.bos),
        ("tokenizer.ggml.eos_token_id", &mut ids.eos),
        ("tokenizer.ggml.eot_token_id", &mut ids.eot),
        ("tokenizer.ggml.eom_token_id", &mut ids.eom),
        ("tokenizer.ggml.unknown_token_id", &mut ids.unk),
        ("tokenizer.ggml.seperator_token_id", &mut ids.sep),
        ("tokenizer.ggml.padding_token_id", &mut ids.pad),
        ("tokenizer.ggml.mask_token_id", &mut ids.mask),
        ("tokenizer.ggml.fim_pre_token_id", &mut ids.fim_pre),
        ("tokenizer.ggml.fim_suf_token_id", &mut ids.fim_suf),
        ("tokenizer.ggml.fim_mid_token_id", &mut ids.fim_mid),
        ("tokenizer.ggml.fim_pad_token_id", &mut ids.fim_pad),
        ("tokenizer.ggml.fim_rep_token_id", &mut ids.fim_rep),
        ("tokenizer.ggml.fim_sep_token_id", &mut ids.fim_sep),
    ];
    for (key, slot) in slots {
        read(g, key, slot, n);
    }
    // Deprecated names of the first three FIM keys, read after them.
    read(g, "tokenizer.ggml.prefix_token_id", &mut ids.fim_pre, n);
    read(g, "tokenizer.ggml.suffix_token_id", &mut ids.fim_suf, n);
    read(g, "tokenizer.ggml.middle_token_id", &mut ids.fim_mid, n);
}

/// llama.cpp's text-based rules: find end-of-turn and FIM tokens the
/// metadata did not name, mark "unused" control tokens, and build the
/// end-of-generation set. Returns that set, sorted.
///
/// llama.cpp walks an unordered map here, so when several candidate texts
/// exist it picks one in hash order; we take the lowest id.
fn detect_special_by_text(vocab: &mut Vocab, ids: &mut SpecialIds) -> Vec<u32> {
    let n = vocab.len() as u32;
    let find = |vocab: &Vocab, texts: &[&str]| -> Option<u32> {
        texts.iter().filter_map(|t| vocab.find(t.as_bytes())).min()
    };
    let mark_control = |vocab: &mut Vocab, id: u32| {
        let a = vocab.attr(id);
        vocab.set_attr(id, TokenAttr(a.0 | TokenAttr::CONTROL));
    };
    for (slot, texts) in [
        (&mut ids.eot, EOT_TEXTS),
        (&mut ids.eom, EOM_TEXTS),
        (&mut ids.fim_pre, FIM_PRE_TEXTS),
        (&mut ids.fim_suf, FIM_SUF_TEXTS),
        (&mut ids.fim_mid, FIM_MID_TEXTS),
        (&mut ids.fim_pad, FIM_PAD_TEXTS),
        (&mut ids.fim_rep, FIM_REP_TEXTS),
        (&mut ids.fim_sep, FIM_SEP_TEXTS),
    ] {
        if slot.is_none() {
            if let Some(id) = find(vocab, texts) {
                *slot = Some(id);
                mark_control(vocab, id);
            }
        }
    }

    let unused = memchr::memmem::Finder::new(b"unused");
    for id in 0..n {
        let a = vocab.attr(id);
        if a.has(TokenAttr::CONTROL)
            && !a.has(TokenAttr::UNUSED)
            && unused.find(vocab.text(id)).is_some()
        {
            vocab.set_attr(id, TokenAttr(a.0 | TokenAttr::UNUSED));
        }
    }

    let mut eog: Vec<u32> = [ids.fim_pad, ids.fim_rep, ids.fim_sep]
        .into_iter()
        .flatten()
        .collect();
    for t in EOG_TEXTS {
        if let Some(id) = vocab.find(t.as_bytes()) {
            eog.push(id);
            mark_control(vocab, id);
        }
    }
    // gpt-oss: these always render.
    for t in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
        if let Some(id) = vocab.find(t.as_bytes()) {
            vocab.set_attr(id, TokenAttr(TokenAttr::USER_DEFINED));
        }
    }
    eog.extend([ids.eos, ids.eot, ids.eom].into_iter().flatten());
    eog.sort_unstable();
    eog.dedup();

    let has = |eog: &[u32], vocab: &Vocab, t: &str| -> Option<u32> {
        eog.iter()
            .copied()
            .find(|&id| vocab.text(id) == t.as_bytes())
    };
    // o200k_harmony and solar-open: "<|end|>" is not the end there.
    let end = has(&eog, vocab, "<|end|>");
    let ret = has(&eog, vocab, "<|return|>").is_some();
    let call = has(&eog, vocab, "<|call|>").is_some() || has(&eog, vocab, "<|calls|>").is_some();
    let flush = has(&eog, vocab, "<|flush|>").is_some();
    if let Some(end) = end {
        if call && (ret || flush) {
            eog.retain(|&x| x != end);
            vocab.set_attr(end, TokenAttr(TokenAttr::USER_DEFINED));
        }
    }
    // gemma4 and plamo have a normal "</s>".
    let normal_s = has(&eog, vocab, "<|tool_response>").is_some()
        || has(&eog, vocab, "<|plamo:eos|>").is_some();
    if let (true, Some(s)) = (normal_s, has(&eog, vocab, "</s>")) {
        eog.retain(|&x| x != s);
        vocab.set_attr(s, TokenAttr(TokenAttr::NORMAL));
    }
    eog
}

/// Strip attributes that llama.cpp sets by model name.
fn apply_model_quirks(g: &Gguf, vocab: &mut Vocab, pre_name: &str) {
    let name = g.get_str("general.name").unwrap_or("").to_lowercase();
    let arch = g.architecture().unwrap_or("");
    let set = |vocab: &mut Vocab, text: &str, bit: u16, on: bool| {
        if let Some(id) = vocab.find(text.as_bytes()) {
            let a = vocab.attr(id).0;
            vocab.set_attr(id, TokenAttr(if on { a | bit } else { a & !bit }));
        }
    };
    if ["jina-v2-de", "jina-v2-es", "jina-v2-code"]
        .iter()
        .any(|p| pre_name.contains(p))
        || ["nomic-bert-moe", "jina-bert-v3"]
            .iter()
            .any(|a| arch.contains(a))
    {
        set(vocab, "<mask>", TokenAttr::LSTRIP, true);
    } else if name.contains("phi-3") || name.contains("phi3") {
        let special = TokenAttr::CONTROL | TokenAttr::USER_DEFINED | TokenAttr::UNKNOWN;
        for id in 0..vocab.len() as u32 {
            let a = vocab.attr(id);
            if a.has(special) {
                vocab.set_attr(id, TokenAttr(a.0 | TokenAttr::RSTRIP));
            }
        }
        set(vocab, "</s>", TokenAttr::RSTRIP, true);
        for t in ["<unk>", "<s>", "<|endoftext|>"] {
            set(vocab, t, TokenAttr::RSTRIP, false);
        }
    } else if name.contains("modern-bert") {
        set(vocab, "[MASK]", TokenAttr::LSTRIP, true);
    }
}

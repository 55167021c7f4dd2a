//! The tokenizer against llama.cpp on the real models: the reference JSON,
//! the generated corpus in tests/data/tokenizer-cases.json (llama.cpp's own
//! outputs, see gen_tokenizer_cases.py), round trips, streaming, templates
//! and speed.

use std::collections::BTreeMap;
use std::time::Instant;

use llorchd::gguf::{GgufFile, GgufWriter, Value};
use llorchd::model::chat_template::{ChatMessage, ChatTemplate, TemplateSource};
use llorchd::model::tokenizer::{StreamDecoder, Tokenizer};
use llorchd::testing::{llamacpp_reference, real_model, RealModel};

fn load(m: RealModel) -> (GgufFile, Tokenizer) {
    let f = GgufFile::open(&real_model(m)).expect("open model");
    let t = Tokenizer::from_gguf(&f.header).expect("tokenizer");
    (f, t)
}

fn model_by_key(key: &str) -> RealModel {
    match key {
        "smollm2" => RealModel::Smollm2,
        "gemma3" => RealModel::Gemma3,
        k => panic!("unknown model key {k}"),
    }
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn cases() -> serde_json::Value {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/tokenizer-cases.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).expect("read cases")).expect("cases json")
}

/// Check every case; report all mismatches at once.
fn check_cases(
    name: &str,
    tok: &Tokenizer,
    texts: &[String],
    cases: &[serde_json::Value],
    add_special_default: bool,
) {
    let mut bad = Vec::new();
    for c in cases {
        let text = &texts[c["t"].as_u64().unwrap() as usize];
        let add_special = c
            .get("add_special")
            .and_then(|v| v.as_bool())
            .unwrap_or(add_special_default);
        let parse_special = c
            .get("parse_special")
            .and_then(|v| v.as_bool())
            .unwrap_or(true);
        let want = ids(&c["ids"]);
        let got = tok.encode(text, add_special, parse_special);
        if got != want {
            bad.push(format!("{text:?} (add_special {add_special}, parse_special {parse_special}):\n  llama.cpp {want:?}\n  ours      {got:?}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{name}: {} of {} cases differ:\n{}",
        bad.len(),
        cases.len(),
        bad.join("\n")
    );
}

#[test]
fn reference_json_ids_match() {
    let r = llamacpp_reference();
    for m in [RealModel::Smollm2, RealModel::Gemma3] {
        let (_f, tok) = load(m);
        let key = m.reference_key();
        let mut n = 0;
        for c in r["tokenizer"][key].as_array().unwrap() {
            let text = c["text"].as_str().unwrap();
            assert_eq!(
                tok.encode(text, true, true),
                ids(&c["ids"]),
                "{key}: {text:?}"
            );
            n += 1;
        }
        for c in r["generation"][key].as_array().unwrap() {
            let text = c["prompt"].as_str().unwrap();
            assert_eq!(
                tok.encode(text, true, true),
                ids(&c["prompt_ids"]),
                "{key}: {text:?}"
            );
            n += 1;
        }
        assert!(n >= 8, "{key}: only {n} reference strings");
    }
}

#[test]
fn corpus_matches_llama_cpp() {
    let data = cases();
    let texts: Vec<String> = serde_json::from_value(data["texts"].clone()).unwrap();
    assert!(texts.len() > 300, "corpus has {} texts", texts.len());
    for (key, m) in data["models"].as_object().unwrap() {
        let (_f, tok) = load(model_by_key(key));
        check_cases(key, &tok, &texts, m["cases"].as_array().unwrap(), true);
        let eog: Vec<u32> = ids(&m["eog"]);
        assert_eq!(tok.eog_ids(), &eog[..], "{key}: end-of-generation set");
    }
}

#[test]
fn pieces_match_llama_cpp() {
    let data = cases();
    for (key, m) in data["models"].as_object().unwrap() {
        let (_f, tok) = load(model_by_key(key));
        let pieces = m["pieces"].as_object().unwrap();
        assert!(pieces.len() > 500, "{key}: {} pieces", pieces.len());
        for (id, hex) in pieces {
            let id: u32 = id.parse().unwrap();
            let want = hex::decode(hex.as_str().unwrap()).unwrap();
            assert_eq!(tok.piece(id, true), &want[..], "{key}: piece of {id}");
        }
    }
}

/// The real model's metadata with some keys replaced, as a vocab-only GGUF.
fn variant(m: RealModel, set: &serde_json::Map<String, serde_json::Value>) -> Tokenizer {
    let f = GgufFile::open(&real_model(m)).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in &f.header.metadata {
        w.set(k, v.clone());
    }
    for (k, v) in set {
        let v = match v {
            serde_json::Value::String(s) => Value::String(s.clone()),
            serde_json::Value::Bool(b) => Value::Bool(*b),
            other => panic!("unsupported override {other}"),
        };
        w.set(k, v);
    }
    let g = llorchd::gguf::Gguf::parse(&w.to_bytes()).unwrap();
    Tokenizer::from_gguf(&g).unwrap_or_else(|e| panic!("variant {set:?}: {e}"))
}

#[test]
fn pre_tokenizer_variants_match_llama_cpp() {
    let data = cases();
    let texts: Vec<String> = serde_json::from_value(data["texts"].clone()).unwrap();
    let variants = data["variants"].as_array().unwrap();
    assert!(variants.len() >= 20);
    for v in variants {
        let set = v["set"].as_object().unwrap();
        let tok = variant(model_by_key(v["base"].as_str().unwrap()), set);
        let name = format!("{} {:?}", v["base"], set);
        check_cases(
            &name,
            &tok,
            &texts,
            v["cases"].as_array().unwrap(),
            v["add_special"].as_bool().unwrap(),
        );
    }
}

/// Our detokenization of llama.cpp's ids reproduces the text wherever
/// llama.cpp's own pieces do (for these two models: always).
#[test]
fn round_trips() {
    let data = cases();
    let texts: Vec<String> = serde_json::from_value(data["texts"].clone()).unwrap();
    for (key, m) in data["models"].as_object().unwrap() {
        let (_f, tok) = load(model_by_key(key));
        let pieces = m["pieces"].as_object().unwrap();
        let mut n = 0;
        for c in m["cases"].as_array().unwrap() {
            if c.get("parse_special").is_some() || c.get("add_special").is_some() {
                continue;
            }
            let text = &texts[c["t"].as_u64().unwrap() as usize];
            let mut want = ids(&c["ids"]);
            if tok.add_bos() && want.first() == tok.bos().as_ref() {
                want.remove(0);
            }
            let Some(llama): Option<Vec<u8>> = want
                .iter()
                .map(|id| {
                    pieces
                        .get(&id.to_string())
                        .map(|h| hex::decode(h.as_str().unwrap()).unwrap())
                })
                .collect::<Option<Vec<_>>>()
                .map(|v| v.concat())
            else {
                continue;
            };
            assert_eq!(
                llama,
                text.as_bytes(),
                "{key}: llama.cpp does not round-trip {text:?}"
            );
            assert_eq!(
                tok.decode_bytes(&want, true),
                text.as_bytes(),
                "{key}: {text:?}"
            );
            // Without special-token parsing, plain decode gives the text back.
            let plain = tok.encode(text, false, false);
            assert_eq!(tok.decode(&plain), *text, "{key}: {text:?}");
            n += 1;
        }
        assert!(n > 300, "{key}: {n} round trips");
    }
}

#[test]
fn streaming_yields_valid_chunks_that_add_up() {
    let data = cases();
    let texts: Vec<String> = serde_json::from_value(data["texts"].clone()).unwrap();
    for m in [RealModel::Smollm2, RealModel::Gemma3] {
        let (_f, tok) = load(m);
        let mut held_back = 0;
        for text in &texts {
            let ids = tok.encode(text, false, true);
            let mut d = StreamDecoder::new(&tok);
            let mut out = String::new();
            for &id in &ids {
                let chunk = d.push(id);
                if chunk.is_empty() && !tok.token_to_piece(id).is_empty() {
                    held_back += 1;
                }
                out += &chunk;
            }
            out += &d.finish();
            assert_eq!(out, tok.decode(&ids), "{:?}: {text:?}", m);
            assert!(
                !out.contains('\u{FFFD}') || text.contains('\u{FFFD}'),
                "{text:?}"
            );
        }
        // Emoji and CJK split across byte tokens did occur.
        assert!(held_back > 10, "{m:?}: only {held_back} partial characters");
    }
}

#[test]
fn emoji_split_across_byte_tokens_streams_whole() {
    let (_f, tok) = load(RealModel::Smollm2);
    let ids = tok.encode("🚀🔥 中文", false, false);
    let mut d = StreamDecoder::new(&tok);
    let chunks: Vec<String> = ids
        .iter()
        .map(|&id| d.push(id))
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(chunks.concat() + &d.finish(), "🚀🔥 中文");
    assert!(
        chunks.len() < ids.len(),
        "some tokens were partial characters"
    );
    for c in &chunks {
        assert!(!c.contains('\u{FFFD}'), "{chunks:?}");
    }
}

#[test]
fn special_tokens_and_eog() {
    let (_f, smol) = load(RealModel::Smollm2);
    assert_eq!(smol.n_vocab(), 49152);
    assert!(!smol.add_bos());
    assert_eq!((smol.bos(), smol.eos()), (Some(1), Some(2)));
    let im_end = smol.token_id("<|im_end|>").unwrap();
    assert!(smol.is_eog(im_end) && smol.is_eog(0));
    assert!(!smol.is_eog(1));
    assert_eq!(
        smol.encode("<|im_start|>user\nhi<|im_end|>", false, true),
        [1, 4093, 198, 6004, 2]
    );

    let (_f, gemma) = load(RealModel::Gemma3);
    assert_eq!(gemma.n_vocab(), 262144);
    assert!(gemma.add_bos());
    assert_eq!((gemma.bos(), gemma.eos()), (Some(2), Some(1)));
    let eot = gemma.token_id("<end_of_turn>").unwrap();
    assert!(gemma.is_eog(eot) && gemma.is_eog(1));
    assert_eq!(gemma.token_to_piece(eot), b"");
    assert_eq!(gemma.piece(eot, true), b"<end_of_turn>");
}

#[test]
fn chat_templates_render_the_real_formats() {
    let msgs = [
        ChatMessage::new("system", "You are terse."),
        ChatMessage::new("user", "Hi there"),
        ChatMessage::new("assistant", "Hello."),
        ChatMessage::new("user", "What is 2+2?"),
    ];

    let (f, smol) = load(RealModel::Smollm2);
    let t = ChatTemplate::from_gguf(&f.header, &smol).unwrap();
    assert_eq!(t.source(), TemplateSource::Model);
    let prompt = t.render(&msgs, true).unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n\
         <|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n\
         <|im_start|>assistant\n"
    );
    // Without a system message SmolLM2's template adds its own.
    let p = t.render(&msgs[1..2], false).unwrap();
    assert!(
        p.starts_with("<|im_start|>system\nYou are a helpful AI assistant named SmolLM"),
        "{p}"
    );
    let ids = smol.encode(&prompt, true, true);
    assert_eq!(
        ids.iter().filter(|&&i| i == 1).count(),
        5,
        "five <|im_start|> tokens"
    );

    let (f, gemma) = load(RealModel::Gemma3);
    let t = ChatTemplate::from_gguf(&f.header, &gemma).unwrap();
    // This GGUF has no template: the built-in Gemma 3 one is used.
    assert_eq!(t.source(), TemplateSource::BuiltIn);
    let prompt = t.render(&msgs, true).unwrap();
    assert_eq!(
        prompt,
        "<start_of_turn>user\nYou are terse.\n\nHi there<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n\
         <start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n"
    );
    // The template's "<bos>" was dropped because encode adds BOS: one BOS.
    let ids = gemma.encode(&prompt, true, true);
    assert_eq!(ids.iter().filter(|&&i| i == 2).count(), 1);
    assert_eq!(ids[0], 2);
    let sot = gemma.token_id("<start_of_turn>").unwrap();
    assert_eq!(ids[1], sot);
}

#[test]
fn loading_and_tokenizing_are_fast() {
    let mut report = BTreeMap::new();
    let text: String = {
        let r = cases();
        let texts: Vec<String> = serde_json::from_value(r["texts"].clone()).unwrap();
        let mut s = String::new();
        let mut i = 0;
        while s.len() < 10 * 1024 {
            s += &texts[i % texts.len()];
            s.push(' ');
            i += 7;
        }
        s
    };
    for m in [RealModel::Smollm2, RealModel::Gemma3] {
        let f = GgufFile::open(&real_model(m)).unwrap();
        let t0 = Instant::now();
        let tok = Tokenizer::from_gguf(&f.header).unwrap();
        let load = t0.elapsed();
        let t0 = Instant::now();
        let mut n = 0;
        let rounds = 20;
        for _ in 0..rounds {
            n += tok.encode(&text, true, true).len();
        }
        let secs = t0.elapsed().as_secs_f64();
        let mbps = (text.len() * rounds) as f64 / secs / 1e6;
        report.insert(
            format!("{m:?}"),
            format!(
                "load {:.1} ms, {:.1} MiB heap; encode {} bytes → {} tokens at {:.2} MB/s",
                load.as_secs_f64() * 1e3,
                tok.heap_bytes() as f64 / (1 << 20) as f64,
                text.len(),
                n / rounds,
                mbps
            ),
        );
        // Generous bounds: this machine is shared; the report has the numbers.
        assert!(load.as_millis() < 1000, "{m:?}: load took {load:?}");
        assert!(mbps > 0.5, "{m:?}: {mbps} MB/s");
    }
    eprintln!("tokenizer speed: {report:#?}");
}

//! The `models` and `check-config` subcommands, run as the real binary.

mod common;

use common::{path_str, Env, BIN};
use llorchd::testing::{real_model, RealModel};
use serde_json::Value;

#[test]
fn version_and_help_on_every_subcommand() {
    let env = Env::new();
    let r = env.run(&["--version"]);
    assert_eq!(r.code, 0);
    assert_eq!(
        r.stdout.trim(),
        format!("llorchd {}", env!("CARGO_PKG_VERSION"))
    );
    for args in [
        &["--help"][..],
        &["check-config", "--help"],
        &["models", "--help"],
        &["models", "inspect", "--help"],
        &["models", "stage", "--help"],
        &["models", "list", "--help"],
        &["models", "verify", "--help"],
        &["models", "retire", "--help"],
        &["models", "activate", "--help"],
        &["models", "remove", "--help"],
        &["models", "synth", "--help"],
    ] {
        let r = env.run(args);
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        assert!(
            r.stdout.contains("Usage: llorchd"),
            "{args:?}: {}",
            r.stdout
        );
    }
    // A usage error exits 2.
    assert_eq!(env.run(&["models", "frobnicate"]).code, 2);
    assert_eq!(env.run(&["models", "stage"]).code, 2);
}

fn inspect_json(env: &Env, m: RealModel) -> Value {
    let p = real_model(m);
    let r = env.run(&["models", "inspect", "--json", path_str(&p)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    serde_json::from_str(&r.stdout).unwrap()
}

fn types(v: &Value) -> Vec<String> {
    let mut t: Vec<String> = v["tensor_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap().to_string())
        .collect();
    t.sort();
    t
}

#[test]
fn inspect_smollm2_agrees_with_the_brief() {
    let v = inspect_json(&Env::new(), RealModel::Smollm2);
    assert_eq!(v["architecture"], "llama");
    assert_eq!(v["block_count"], 30);
    assert_eq!(v["embedding_length"], 576);
    assert_eq!(v["head_count"], 9);
    assert_eq!(v["head_count_kv"], 3);
    assert_eq!(v["vocab_size"], 49152);
    assert_eq!(v["tokenizer_model"], "gpt2");
    assert_eq!(v["tokenizer_pre"], "smollm");
    assert_eq!(v["add_bos_token"], false);
    assert_eq!(v["file_bytes"], 98_362_432u64);
    assert_eq!(types(&v), ["F32", "Q4_1", "Q8_0"]);
    assert_eq!(v["tensor_count"], 272);
    assert_eq!(v["context_length"], 8192);
    assert_eq!(v["quantization"], "Q4_1 (210), F32 (61), Q8_0 (1)");
}

#[test]
fn inspect_gemma3_agrees_with_the_brief() {
    let v = inspect_json(&Env::new(), RealModel::Gemma3);
    assert_eq!(v["architecture"], "gemma3");
    assert_eq!(v["block_count"], 18);
    assert_eq!(v["key_length"], 256);
    assert_eq!(v["head_count"], 4);
    assert_eq!(v["head_count_kv"], 1);
    assert_eq!(v["sliding_window"], 512);
    assert_eq!(v["vocab_size"], 262_144);
    assert_eq!(v["tokenizer_model"], "llama");
    assert_eq!(v["add_bos_token"], true);
    assert_eq!(v["file_bytes"], 253_113_024u64);
    assert_eq!(types(&v), ["F32", "Q4_K", "Q5_0", "Q6_K", "Q8_0"]);
}

#[test]
fn inspect_text_names_the_essentials() {
    let env = Env::new();
    let p = real_model(RealModel::Smollm2);
    let r = env.run(&["models", "inspect", path_str(&p)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for want in [
        "architecture    llama",
        "parameters      134.5M",
        "context length  8192",
        "layers          30",
        "heads           9 (kv 3)",
        "vocab size      49152",
        "tokenizer       gpt2 (pre smollm), add_bos false",
        "tensors         272: Q4_1 (210), F32 (61), Q8_0 (1)",
    ] {
        assert!(r.stdout.contains(want), "missing {want:?} in\n{}", r.stdout);
    }
}

#[test]
fn inspect_of_a_corrupt_file_is_one_clear_error() {
    let env = Env::new();
    let mut bytes = std::fs::read(env.synth("m.gguf", 1)).unwrap();
    bytes.truncate(bytes.len() / 2);
    let p = env.tmp.path().join("cut.gguf");
    std::fs::write(&p, &bytes).unwrap();
    let r = env.run(&["models", "inspect", path_str(&p)]);
    assert_eq!(r.code, 1);
    r.assert_one_line_error();
    assert!(r.stderr.contains("corrupt or incomplete"), "{}", r.stderr);
    let r = env.run(&["models", "inspect", "/no/such/file.gguf"]);
    assert_eq!(r.code, 1);
    r.assert_one_line_error();
}

#[test]
fn staging_smollm2_records_its_sha256() {
    let env = Env::new();
    let p = real_model(RealModel::Smollm2);
    let r = env.run(&["models", "stage", path_str(&p), "--id", "smollm2"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let list = env.list();
    let e = &list[0];
    assert_eq!(e["id"], "smollm2");
    assert_eq!(e["sha256"], RealModel::Smollm2.sha256());
    assert_eq!(e["bytes"], 98_362_432u64);
    assert_eq!(e["architecture"], "llama");
    assert_eq!(e["state"], "Active");
    assert_eq!(e["source"], path_str(&p));
    assert_eq!(env.model_files(), ["smollm2.gguf"]);
    let r = env.run(&["models", "verify", "smollm2"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains(RealModel::Smollm2.sha256()));
}

#[test]
fn a_wrong_sha256_is_refused_and_the_catalog_is_unchanged() {
    let env = Env::new();
    let a = env.synth("a.gguf", 1);
    let b = env.synth("b.gguf", 2);
    assert_eq!(env.run(&["models", "stage", path_str(&a)]).code, 0);
    let before = env.list();
    let files_before = env.model_files();
    let wrong = "ab".repeat(32);
    let r = env.run(&["models", "stage", path_str(&b), "--sha256", &wrong]);
    assert_eq!(r.code, 1);
    r.assert_one_line_error();
    assert!(r.stderr.contains("sha256 mismatch"), "{}", r.stderr);
    assert_eq!(env.list(), before);
    assert_eq!(env.model_files(), files_before);
    // A malformed digest is a usage error.
    let r = env.run(&["models", "stage", path_str(&b), "--sha256", "xyz"]);
    assert_eq!(r.code, 2);
    assert_eq!(env.list(), before);
}

#[test]
fn path_traversal_ids_are_refused() {
    let env = Env::new();
    let a = env.synth("a.gguf", 1);
    for id in [
        "../escape",
        "..",
        "a/b",
        "/etc/passwd",
        ".x",
        &"a".repeat(65),
    ] {
        let r = env.run(&["models", "stage", path_str(&a), "--id", id]);
        assert_eq!(r.code, 2, "{id}: {}", r.stderr);
        r.assert_one_line_error();
        assert!(r.stderr.contains("invalid model id"), "{}", r.stderr);
        let r = env.run(&["models", "verify", id]);
        assert_ne!(r.code, 0, "{id}");
    }
    assert_eq!(env.list(), serde_json::json!([]));
    assert!(env.model_files().is_empty());
    assert!(!env.tmp.path().join("escape.gguf").exists());
    assert!(!env.store().join("escape.gguf").exists());
}

#[test]
fn verify_detects_a_file_modified_after_staging() {
    let env = Env::new();
    let a = env.synth("a.gguf", 3);
    assert_eq!(
        env.run(&["models", "stage", path_str(&a), "--id", "m"])
            .code,
        0
    );
    assert_eq!(env.run(&["models", "verify", "m"]).code, 0);
    let staged = env.models_dir().join("m.gguf");
    let mut bytes = std::fs::read(&staged).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&staged, &bytes).unwrap();
    let r = env.run(&["models", "verify", "m"]);
    assert_eq!(r.code, 1);
    r.assert_one_line_error();
    assert!(r.stderr.contains("sha256 changed"), "{}", r.stderr);
}

#[test]
fn retire_activate_and_remove() {
    let env = Env::new();
    let a = env.synth("a.gguf", 4);
    assert_eq!(
        env.run(&["models", "stage", path_str(&a), "--id", "m"])
            .code,
        0
    );
    let r = env.run(&["models", "retire", "m"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(env.list()[0]["state"], "Retired");
    let r = env.run(&["models", "list"]);
    assert!(
        r.stdout.lines().nth(1).unwrap().contains("Retired"),
        "{}",
        r.stdout
    );
    assert_eq!(env.run(&["models", "activate", "m"]).code, 0);
    assert_eq!(env.list()[0]["state"], "Active");
    assert_eq!(env.model_files(), ["m.gguf"]);
    let r = env.run(&["models", "remove", "m"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(env.model_files().is_empty());
    assert_eq!(env.list(), serde_json::json!([]));
    let r = env.run(&["models", "remove", "m"]);
    assert_eq!(r.code, 2);
    r.assert_one_line_error();
}

#[test]
fn the_store_comes_from_the_config_file_or_llorch_config() {
    let env = Env::new();
    let store = env.tmp.path().join("from-config");
    let cfg = env.tmp.path().join("c.toml");
    std::fs::write(&cfg, format!("[store]\ndir = {:?}\n", path_str(&store))).unwrap();
    let a = env.synth("a.gguf", 5);
    let mut c = std::process::Command::new(BIN);
    c.args([
        "models",
        "stage",
        path_str(&a),
        "--id",
        "viaflag",
        "--config",
        path_str(&cfg),
    ])
    .env_remove("LLORCH_STORE_DIR")
    .env_remove("LLORCH_CONFIG");
    assert!(c.status().unwrap().success());
    assert!(store.join("models/viaflag.gguf").is_file());
    let out = std::process::Command::new(BIN)
        .args(["models", "list", "--json"])
        .env_remove("LLORCH_STORE_DIR")
        .env("LLORCH_CONFIG", &cfg)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["id"], "viaflag");
}

#[test]
fn check_config_accepts_valid_and_names_key_and_line_otherwise() {
    let env = Env::new();
    let write = |name: &str, text: &str| {
        let p = env.tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let ok = write(
        "ok.toml",
        "profile = \"home\"\n[server]\nbind = \"127.0.0.1:8080\"\n[store]\ndir = \"/var/lib/llorchd\"\n[[pools]]\nid = \"default\"\nmodel = \"smollm2\"\nslots = 4\n",
    );
    let r = env.run(&["check-config", path_str(&ok)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("ok"), "{}", r.stdout);
    assert_eq!(
        env.run(&["check-config", path_str(&write("empty.toml", ""))])
            .code,
        0
    );

    let cases = [
        (
            "unknown.toml",
            "[server]\nbind = \"127.0.0.1:1\"\nbnid = 3\n",
            "bnid",
            "line 3",
        ),
        (
            "type.toml",
            "[[pools]]\nid = \"a\"\nmodel = \"m\"\nslots = \"four\"\n",
            "slots",
            "line 4",
        ),
        (
            "range.toml",
            "[[pools]]\nid = \"a\"\nmodel = \"m\"\nslots = 0\n",
            "pools[0].slots",
            "line 4",
        ),
        (
            "id.toml",
            "\n[[pools]]\nid = \"a\"\nmodel = \"../m\"\n",
            "pools[0].model",
            "line 4",
        ),
        ("role.toml", "profile = \"cloud\"\n", "role", ""),
        ("syntax.toml", "[server\n", "", "line 1"),
    ];
    for (name, text, key, line) in cases {
        let r = env.run(&["check-config", path_str(&write(name, text))]);
        assert_eq!(r.code, 2, "{name}: {}", r.stderr);
        r.assert_one_line_error();
        assert!(r.stderr.contains(key), "{name}: {}", r.stderr);
        assert!(r.stderr.contains(line), "{name}: {}", r.stderr);
    }
    let r = env.run(&["check-config", "/no/such/config.toml"]);
    assert_ne!(r.code, 0);
    r.assert_one_line_error();
}

#[test]
fn synth_writes_a_model_that_stages() {
    let env = Env::new();
    let out = env.tmp.path().join("q.gguf");
    let r = env.run(&[
        "models",
        "synth",
        "--arch",
        "qwen2",
        "--type",
        "Q4_K",
        "--embd-type",
        "F16",
        "--layers",
        "3",
        "--out",
        path_str(&out),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = env.run(&["models", "inspect", "--json", path_str(&out)]);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["architecture"], "qwen2");
    assert_eq!(v["block_count"], 3);
    assert_eq!(types(&v), ["F16", "F32", "Q4_K"]);
    assert_eq!(env.run(&["models", "stage", path_str(&out)]).code, 0);
    assert_eq!(env.list()[0]["id"], "q");
    let r = env.run(&[
        "models",
        "synth",
        "--dim",
        "96",
        "--type",
        "Q4_K",
        "--out",
        path_str(&out),
    ]);
    assert_eq!(r.code, 2);
    r.assert_one_line_error();
}

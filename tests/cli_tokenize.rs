//! `llorchd tokenize` as a user runs it: the built binary, real models.

use std::process::Command;

use llorchd::testing::{real_model, RealModel};

fn tokenize(m: RealModel, extra: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_llorchd"))
        .arg("tokenize")
        .arg("--model")
        .arg(real_model(m))
        .args(extra)
        .output()
        .expect("run llorchd");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn prints_ids_like_llama_tokenize() {
    // Outputs of `llama-tokenize --ids -m MODEL -p TEXT`.
    let (ok, out, err) = tokenize(RealModel::Smollm2, &["--text", "Hello, world!"]);
    assert!(ok, "{err}");
    assert_eq!(out, "[19556, 28, 905, 17]\n");
    let (ok, out, err) = tokenize(RealModel::Gemma3, &["--text", "Hello, world!"]);
    assert!(ok, "{err}");
    assert_eq!(out, "[2, 9259, 236764, 1902, 236888]\n");
    // Escapes are processed and special tokens parsed, as llama-tokenize does.
    let (_, out, _) = tokenize(
        RealModel::Smollm2,
        &["--text", r"<|im_start|>user\nhi<|im_end|>"],
    );
    assert_eq!(out, "[1, 4093, 198, 6004, 2]\n");
    let (_, out, _) = tokenize(RealModel::Gemma3, &["--text", "hi", "--no-bos"]);
    assert_eq!(out, "[2202]\n");
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let out = Command::new(env!("CARGO_BIN_EXE_llorchd"))
        .args(["tokenize", "--model", "/nonexistent.gguf", "--text", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent.gguf"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

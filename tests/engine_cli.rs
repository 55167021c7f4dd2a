//! `llorchd generate` and `llorchd bench` as a user runs them: the real
//! binary on the real models.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use llorchd::testing::{llamacpp_reference, real_model, RealModel};

fn llorchd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_llorchd"))
}

#[test]
fn generate_prints_only_the_greedy_continuation() {
    let model = real_model(RealModel::Smollm2);
    let reference = llamacpp_reference();
    let case = &reference["generation"]["smollm2"][0];
    let prompt = case["prompt"].as_str().unwrap();
    let expected = case["greedy_text_32"]
        .as_str()
        .unwrap()
        .strip_prefix(prompt)
        .unwrap();
    let out = llorchd()
        .args(["generate", "--model"])
        .arg(&model)
        .args([
            "--prompt",
            prompt,
            "--max-tokens",
            "12",
            "--temperature",
            "0",
            "--threads",
            "2",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    // The output ends with one newline after the generated text.
    let text = text.strip_suffix('\n').unwrap();
    assert!(!text.is_empty());
    assert!(
        expected.starts_with(text),
        "got {text:?}, llama.cpp {expected:?}"
    );
}

#[test]
fn generate_with_seed_is_reproducible_and_chat_works() {
    let model = real_model(RealModel::Smollm2);
    let run = |seed: &str| {
        let out = llorchd()
            .args(["generate", "--chat", "-m"])
            .arg(&model)
            .args([
                "-p",
                "Name a colour.",
                "-n",
                "10",
                "--temperature",
                "1.0",
                "--seed",
                seed,
                "-t",
                "2",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let a = run("7");
    assert_eq!(a, run("7"));
    assert!(!a.trim().is_empty());
}

#[test]
fn rss_while_generating_stays_within_file_plus_kv_plus_64mib() {
    for m in [RealModel::Smollm2, RealModel::Gemma3] {
        let model = real_model(m);
        let file_bytes = std::fs::metadata(&model).unwrap().len();
        let mut child = llorchd()
            .args(["generate", "-m"])
            .arg(&model)
            .args([
                "-p",
                "Once upon a time",
                "-n",
                "48",
                "--temperature",
                "0",
                "-t",
                "2",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let status_path = format!("/proc/{}/status", child.id());
        let mut peak_kib = 0u64;
        let t0 = Instant::now();
        loop {
            if let Ok(s) = std::fs::read_to_string(&status_path) {
                // VmHWM: the peak resident set so far.
                if let Some(kib) = s
                    .lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    peak_kib = peak_kib.max(kib);
                }
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(300),
                "generate did not finish"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(child.wait().unwrap().success());
        // KV for the run's context (prompt + 48 tokens, at most 64 here):
        // layers x 2 (K, V) x kv_dim x 2 bytes per position.
        let kv_bytes: u64 = match m {
            RealModel::Smollm2 => 30 * 2 * 192 * 2 * 64,
            RealModel::Gemma3 => 18 * 2 * 256 * 2 * 64,
        };
        let limit = file_bytes + kv_bytes + 64 * 1024 * 1024;
        let peak = peak_kib * 1024;
        eprintln!(
            "{m:?}: peak RSS {} MiB, file {} MiB, limit {} MiB",
            peak >> 20,
            file_bytes >> 20,
            limit >> 20
        );
        assert!(peak > 0, "no RSS sample");
        assert!(peak <= limit, "{m:?}: peak RSS {peak} exceeds {limit}");
    }
}

#[test]
fn bench_json_reports_rates() {
    let model = real_model(RealModel::Smollm2);
    let out = llorchd()
        .args(["bench", "-m"])
        .arg(&model)
        .args([
            "-p",
            "16",
            "-n",
            "4",
            "-r",
            "1",
            "--concurrent",
            "2",
            "--json",
            "-t",
            "2",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in ["pp_tps", "tg_tps", "concurrent_tg_tps"] {
        assert!(v[k].as_f64().is_some_and(|x| x > 0.0), "{k} in {v}");
    }
    assert_eq!(v["pp_tokens"], 16);
    assert_eq!(v["tg_tokens"], 4);
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    // A file that is not GGUF.
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"definitely not a model").unwrap();
    // A truncated copy of a real model.
    let real = std::fs::read(real_model(RealModel::Smollm2)).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &real[..real.len() / 2]).unwrap();
    for (path, needle) in [
        (dir.path().join("missing.gguf"), "cannot open"),
        (junk, "not a GGUF"),
        (cut, "outside the data section"),
    ] {
        let out = llorchd()
            .args(["generate", "-m"])
            .arg(&path)
            .args(["-p", "hi", "-n", "2"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", path.display());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{}: {err}", path.display());
        assert!(!err.contains("panicked"), "{err}");
    }
    // A prompt plus max tokens beyond the context asked for.
    let out = llorchd()
        .args(["generate", "-m"])
        .arg(real_model(RealModel::Smollm2))
        .args(["-p", "hello there", "-n", "100", "--ctx", "16"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exceed the context"));
}

/// `llorchd generate ... | head -c 20`: the reader going away ends the run
/// quietly, with exit 0 and no error message.
#[test]
fn generate_into_a_closed_pipe_stops_quietly() {
    let mut child = llorchd()
        .args(["generate", "--chat", "-m"])
        .arg(real_model(RealModel::Smollm2))
        .args(["--prompt", "Write a long story.", "--max-tokens", "200"])
        .args(["--temperature", "0", "--threads", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 8];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    drop(stdout);
    let t0 = Instant::now();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("error"), "{stderr}");
    assert!(t0.elapsed() < Duration::from_secs(30));
}

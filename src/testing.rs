//! Test support shared by unit and integration tests: where the real test
//! models are. Not used by the server itself.

use std::path::PathBuf;

/// The real models of BRIEF section 7, fetched by `ci/fetch-models.sh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RealModel {
    Smollm2,
    Gemma3,
}

impl RealModel {
    pub fn file_name(self) -> &'static str {
        match self {
            RealModel::Smollm2 => "SmolLM2-135M-Instruct.Q4_1.gguf",
            RealModel::Gemma3 => "gemma-3-270m-q4_k_m.gguf",
        }
    }

    pub fn sha256(self) -> &'static str {
        match self {
            RealModel::Smollm2 => {
                "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
            }
            RealModel::Gemma3 => "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        }
    }

    /// Key in `../shared/testdata/llamacpp-reference.json`.
    pub fn reference_key(self) -> &'static str {
        match self {
            RealModel::Smollm2 => "smollm2",
            RealModel::Gemma3 => "gemma3",
        }
    }
}

/// `$LLORCH_MODEL_CACHE`, default `~/.cache/llorchd/models`.
pub fn model_cache_dir() -> PathBuf {
    std::env::var_os("LLORCH_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".cache/llorchd/models")
        })
}

/// Path of a real model. Panics with the command to fetch it when missing:
/// the suite needs the real models (ci/test.sh fetches them).
pub fn real_model(m: RealModel) -> PathBuf {
    let p = model_cache_dir().join(m.file_name());
    assert!(
        p.is_file(),
        "real test model {} missing: run ci/fetch-models.sh (cache: $LLORCH_MODEL_CACHE)",
        p.display()
    );
    p
}

/// `../shared/testdata/llamacpp-reference.json`, parsed.
pub fn llamacpp_reference() -> serde_json::Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/testdata/llamacpp-reference.json");
    let text =
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
    serde_json::from_str(&text).expect("reference json")
}

/// promtool's lint complaints about names that BRIEF section 5 fixes; any
/// other complaint is a defect.
pub const PROMTOOL_ACCEPTED_LINT: &[(&str, &str)] = &[
    (
        "orchd_pool_health_check_duration_ms",
        "metric names should not contain abbreviated units",
    ),
    (
        "pool_slots_total",
        "non-counter metrics should not have \"_total\" suffix",
    ),
];

/// Pipes a scrape through `promtool check metrics` (on PATH; ci/test.sh
/// installs it). Ok when it parses and promtool's only complaints are
/// [`PROMTOOL_ACCEPTED_LINT`]; otherwise the report.
pub fn promtool_check_metrics(scrape: &str) -> Result<(), String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!("promtool: {e} (install Debian's prometheus package; ci/test.sh does)")
        })?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = {
        let text = scrape.to_string();
        std::thread::spawn(move || stdin.write_all(text.as_bytes()))
    };
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let _ = writer.join();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Exit 3 means lint findings only; anything else non-zero is a parse error.
    if !matches!(out.status.code(), Some(0) | Some(3)) {
        return Err(format!("promtool failed ({}):\n{report}", out.status));
    }
    for line in report.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let accepted = PROMTOOL_ACCEPTED_LINT
            .iter()
            .any(|(name, msg)| line == format!("{name} {msg}"));
        if !accepted {
            return Err(format!("promtool check metrics: {line}"));
        }
    }
    Ok(())
}

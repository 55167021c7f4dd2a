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

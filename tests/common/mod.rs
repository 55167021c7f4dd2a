//! Helpers for tests that spawn the real `llorchd` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_llorchd");

/// A store directory and the environment that points the binary at it.
pub struct Env {
    pub tmp: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    pub fn store(&self) -> PathBuf {
        self.tmp.path().join("store")
    }

    pub fn models_dir(&self) -> PathBuf {
        self.store().join("models")
    }

    /// `llorchd ARGS` with only this test's environment: the store in the
    /// temp dir, no config from the caller's environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env_remove("LLORCH_CONFIG")
            .env_remove("RUST_LOG")
            .env("LLORCH_STORE_DIR", self.store());
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.cmd(args).output().expect("spawn llorchd"))
    }

    /// Names in the store's models folder, sorted.
    pub fn model_files(&self) -> Vec<String> {
        let mut v: Vec<String> = match std::fs::read_dir(self.models_dir()) {
            Ok(d) => d
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect(),
            Err(_) => Vec::new(),
        };
        v.sort();
        v
    }

    /// `models list --json`, parsed.
    pub fn list(&self) -> serde_json::Value {
        let r = self.run(&["models", "list", "--json"]);
        assert_eq!(r.code, 0, "list failed: {}", r.stderr);
        serde_json::from_str(&r.stdout).unwrap()
    }

    /// Write a small synthetic model and return its path.
    pub fn synth(&self, name: &str, seed: u64) -> PathBuf {
        let p = self.tmp.path().join(name);
        let mut spec =
            llorchd::model::synth::SynthSpec::tiny(llorchd::model::synth::SynthArch::Llama);
        spec.seed = seed;
        llorchd::model::synth::write_synthetic_model(&spec, &p).unwrap();
        p
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Errors are one line on stderr.
    pub fn assert_one_line_error(&self) {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "stderr is not one line: {:?}", self.stderr);
        assert!(
            lines[0].starts_with("llorchd: error: "),
            "{:?}",
            self.stderr
        );
    }
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

//! A `kill -9` in the middle of staging, then a restart: no catalog entry,
//! no half-written file taken for a model, and staging again succeeds.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{path_str, Env};
use llorchd::testing::{real_model, RealModel};

/// The temp file of a stage in progress, if it holds some but at most half
/// of the bytes.
fn partial_temp_file(env: &Env, total: u64) -> Option<String> {
    for e in std::fs::read_dir(env.models_dir()).ok()? {
        let e = e.ok()?;
        let name = e.file_name().into_string().ok()?;
        let len = e.metadata().ok()?.len();
        if name.starts_with(".staging-") && len > 0 && len <= total / 2 {
            return Some(name);
        }
    }
    None
}

#[test]
fn kill_9_mid_stage_then_restart() {
    let env = Env::new();
    // The Gemma3 file (253 MB) takes long enough to copy to catch mid-way.
    let src = real_model(RealModel::Gemma3);
    let total = std::fs::metadata(&src).unwrap().len();
    // Create the store so its folder exists before the stage starts.
    assert_eq!(env.run(&["models", "list"]).code, 0);

    for attempt in 0..5 {
        let mut child = env
            .cmd(&["models", "stage", path_str(&src), "--id", "gemma"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let caught = loop {
            if let Some(name) = partial_temp_file(&env, total) {
                child.kill().unwrap(); // SIGKILL
                break Some(name);
            }
            if child.try_wait().unwrap().is_some() {
                break None;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "stage neither progressed nor ended"
            );
            std::thread::sleep(Duration::from_micros(200));
        };
        child.wait().unwrap();
        let Some(temp) = caught else {
            // It finished before we looked: undo and try again.
            assert_eq!(env.run(&["models", "remove", "gemma"]).code, 0);
            continue;
        };

        eprintln!("killed staging on attempt {attempt} with {temp} partly written");

        // What the crash left: a partial temp file, nothing named like a model.
        let files = env.model_files();
        assert!(files.contains(&temp), "{files:?}");
        assert!(files.iter().all(|f| !f.ends_with(".gguf")), "{files:?}");

        // Restart: the catalog is empty and the leftover is swept.
        assert_eq!(env.list(), serde_json::json!([]));
        assert!(env.model_files().is_empty(), "{:?}", env.model_files());

        // Staging again succeeds and records the right digest.
        let r = env.run(&["models", "stage", path_str(&src), "--id", "gemma"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let list = env.list();
        assert_eq!(list[0]["sha256"], RealModel::Gemma3.sha256());
        assert_eq!(list[0]["bytes"], total);
        assert_eq!(env.model_files(), ["gemma.gguf"]);
        assert_eq!(env.run(&["models", "verify", "gemma"]).code, 0);
        return;
    }
    panic!("the stage always finished before it could be killed mid-copy");
}

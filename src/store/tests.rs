//! Catalog tests on small synthetic GGUF files in temp dirs.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, TableDefinition};
use sha2::{Digest, Sha256};

use super::schema::{v1, META, SCHEMA_VERSION};
use super::*;
use crate::gguf::{GgmlType, GgufWriter};

fn tiny_model(arch: &str, seed: u8) -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.set_str("general.architecture", arch)
        .set_u32(&format!("{arch}.context_length"), 256);
    w.add_tensor(
        "token_embd.weight",
        &[32, 4],
        GgmlType::F32,
        vec![seed; 512],
    );
    w.add_tensor("output_norm.weight", &[32], GgmlType::Q8_0, vec![seed; 34]);
    w.to_bytes()
}

fn write_src(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap();
    p
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn no_progress(_: u64, _: u64) {}

/// Names in the models folder, sorted.
fn models_dir_listing(store: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(store.join(MODELS_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn stage_records_everything_and_copies_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = tiny_model("llama", 1);
    let src = write_src(tmp.path(), "Tiny-Model.Q8_0.gguf", &bytes);
    let cat = Catalog::open(&tmp.path().join("store")).unwrap();
    let calls = std::cell::Cell::new(0u32);
    let last = std::cell::Cell::new((0u64, 0u64));
    let progress = |d: u64, t: u64| {
        calls.set(calls.get() + 1);
        last.set((d, t));
    };
    let e = cat
        .stage(
            &src,
            None,
            Some(&sha(&bytes).to_uppercase()),
            "/from/here",
            &progress,
        )
        .unwrap();
    assert_eq!(e.id, "tiny-model.q8_0");
    assert_eq!(e.file_name, "tiny-model.q8_0.gguf");
    assert_eq!(e.sha256, sha(&bytes));
    assert_eq!(e.bytes, bytes.len() as u64);
    assert_eq!(e.architecture, "llama");
    assert_eq!(e.quantization, "F32 (1), Q8_0 (1)");
    assert_eq!(e.context_length, Some(256));
    assert_eq!(e.parameter_count, 128 + 32);
    assert_eq!(e.state, ModelState::Active);
    assert_eq!(e.source, "/from/here");
    assert!(e.staged_at_ms > 1_700_000_000_000);
    assert!(calls.get() >= 2);
    assert_eq!(last.get(), (bytes.len() as u64, bytes.len() as u64));
    assert_eq!(fs::read(cat.model_path(&e)).unwrap(), bytes);
    assert_eq!(cat.get(&e.id).unwrap(), Some(e.clone()));
    assert_eq!(cat.list().unwrap(), vec![e.clone()]);
    assert_eq!(models_dir_listing(cat.dir()), vec!["tiny-model.q8_0.gguf"]);

    // The entry survives a reopen.
    drop(cat);
    let cat = Catalog::open(&tmp.path().join("store")).unwrap();
    assert_eq!(cat.get(&e.id).unwrap(), Some(e));
}

#[test]
fn wrong_sha256_is_refused_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = tiny_model("llama", 2);
    let src = write_src(tmp.path(), "m.gguf", &bytes);
    let cat = Catalog::open(&tmp.path().join("s")).unwrap();
    let wrong = "0".repeat(64);
    let err = cat
        .stage(&src, Some("m"), Some(&wrong), "x", &no_progress)
        .unwrap_err();
    match &err {
        StoreError::Sha256Mismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, &wrong);
            assert_eq!(actual, &sha(&bytes));
        }
        e => panic!("unexpected {e}"),
    }
    assert!(err.to_string().contains("nothing was staged"));
    assert!(cat.list().unwrap().is_empty());
    assert!(
        models_dir_listing(cat.dir()).is_empty(),
        "{:?}",
        models_dir_listing(cat.dir())
    );
    // A malformed digest is refused before anything is read.
    for bad in ["abc", &"g".repeat(64), &"0".repeat(65)] {
        assert!(matches!(
            cat.stage(&src, Some("m"), Some(bad), "x", &no_progress),
            Err(StoreError::InvalidSha256(_))
        ));
    }
}

#[test]
fn path_traversal_and_bad_ids_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = write_src(tmp.path(), "m.gguf", &tiny_model("llama", 3));
    let cat = Catalog::open(&tmp.path().join("s")).unwrap();
    let long = "a".repeat(65);
    for bad in [
        "../evil",
        "..",
        "a/b",
        "/abs",
        "a\\b",
        ".hidden",
        "",
        long.as_str(),
        "sp ace",
    ] {
        let e = cat
            .stage(&src, Some(bad), None, "x", &no_progress)
            .unwrap_err();
        assert!(matches!(e, StoreError::InvalidId { .. }), "{bad:?}: {e}");
    }
    assert!(cat.list().unwrap().is_empty());
    assert!(models_dir_listing(cat.dir()).is_empty());
    assert!(!tmp.path().join("evil.gguf").exists());
}

#[test]
fn derived_ids_are_valid() {
    for (name, id) in [
        (
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "smollm2-135m-instruct.q4_1",
        ),
        ("gemma-3-270m-q4_k_m.GGUF", "gemma-3-270m-q4_k_m"),
        ("..weird name (1).gguf", "weird-name--1-"),
        (".gguf", "model"),
        ("", "model"),
    ] {
        assert_eq!(derive_model_id(name), id);
        crate::config::validate_id(id).unwrap();
    }
    let long = format!("{}.gguf", "x".repeat(100));
    assert_eq!(derive_model_id(&long).len(), 64);
}

#[test]
fn not_a_gguf_model_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cat = Catalog::open(&tmp.path().join("s")).unwrap();
    let text = write_src(tmp.path(), "notes.gguf", b"hello, not a model");
    let e = cat
        .stage(&text, Some("t"), None, "x", &no_progress)
        .unwrap_err();
    assert!(matches!(e, StoreError::InvalidModel { .. }), "{e}");
    assert!(e.to_string().contains("bad magic"), "{e}");

    let mut truncated = tiny_model("llama", 4);
    truncated.truncate(truncated.len() - 10);
    let p = write_src(tmp.path(), "cut.gguf", &truncated);
    let e = cat
        .stage(&p, Some("c"), None, "x", &no_progress)
        .unwrap_err();
    assert!(e.to_string().contains("corrupt or incomplete"), "{e}");

    let mut w = GgufWriter::new();
    w.add_tensor("t", &[32], GgmlType::F32, vec![0; 128]);
    let p = write_src(tmp.path(), "noarch.gguf", &w.to_bytes());
    let e = cat
        .stage(&p, Some("n"), None, "x", &no_progress)
        .unwrap_err();
    assert!(e.to_string().contains("general.architecture"), "{e}");

    assert!(cat.list().unwrap().is_empty());
    assert!(models_dir_listing(cat.dir()).is_empty());
    let e = cat
        .stage(
            &tmp.path().join("missing.gguf"),
            None,
            None,
            "x",
            &no_progress,
        )
        .unwrap_err();
    assert!(matches!(e, StoreError::Io { op: "open", .. }), "{e}");
}

#[test]
fn duplicate_id_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let a = write_src(tmp.path(), "a.gguf", &tiny_model("llama", 5));
    let b = write_src(tmp.path(), "b.gguf", &tiny_model("qwen2", 6));
    let cat = Catalog::open(&tmp.path().join("s")).unwrap();
    let first = cat.stage(&a, Some("m"), None, "a", &no_progress).unwrap();
    let e = cat
        .stage(&b, Some("m"), None, "b", &no_progress)
        .unwrap_err();
    assert!(matches!(e, StoreError::AlreadyExists(_)), "{e}");
    assert_eq!(cat.list().unwrap(), vec![first.clone()]);
    assert_eq!(
        fs::read(cat.model_path(&first)).unwrap(),
        tiny_model("llama", 5)
    );
}

#[test]
fn verify_detects_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = tiny_model("llama", 7);
    let src = write_src(tmp.path(), "m.gguf", &bytes);
    let cat = Catalog::open(&tmp.path().join("s")).unwrap();
    let e = cat.stage(&src, Some("m"), None, "x", &no_progress).unwrap();
    assert_eq!(cat.verify("m").unwrap(), VerifyOutcome::Ok);

    let path = cat.model_path(&e);
    let mut changed = bytes.clone();
    *changed.last_mut().unwrap() ^= 1;
    fs::write(&path, &changed).unwrap();
    match cat.verify("m").unwrap() {
        VerifyOutcome::DigestMismatch { expected, actual } => {
            assert_eq!(expected, e.sha256);
            assert_eq!(actual, sha(&changed));
        }
        o => panic!("{o:?}"),
    }
    fs::write(&path, &bytes[..100]).unwrap();
    assert_eq!(
        cat.verify("m").unwrap(),
        VerifyOutcome::SizeMismatch {
            expected: bytes.len() as u64,
            actual: 100
        }
    );
    fs::remove_file(&path).unwrap();
    assert_eq!(cat.verify("m").unwrap(), VerifyOutcome::Missing);
    assert!(matches!(cat.verify("nope"), Err(StoreError::NotFound(_))));
}

#[test]
fn retire_and_remove() {
    let tmp = tempfile::tempdir().unwrap();
    let src = write_src(tmp.path(), "m.gguf", &tiny_model("llama", 8));
    let cat = Catalog::open(&tmp.path().join("s")).unwrap();
    let e = cat.stage(&src, Some("m"), None, "x", &no_progress).unwrap();
    let r = cat.set_state("m", ModelState::Retired).unwrap();
    assert_eq!(r.state, ModelState::Retired);
    assert_eq!(cat.get("m").unwrap().unwrap().state, ModelState::Retired);
    assert_eq!(
        cat.set_state("m", ModelState::Active).unwrap().state,
        ModelState::Active
    );
    assert!(matches!(
        cat.set_state("x", ModelState::Retired),
        Err(StoreError::NotFound(_))
    ));

    let path = cat.model_path(&e);
    assert!(path.exists());
    let removed = cat.remove("m").unwrap();
    assert_eq!(removed.id, "m");
    assert!(!path.exists());
    assert!(cat.get("m").unwrap().is_none());
    assert!(matches!(cat.remove("m"), Err(StoreError::NotFound(_))));
    // The id is free again.
    cat.stage(&src, Some("m"), None, "x", &no_progress).unwrap();
}

#[test]
fn open_sweeps_what_a_crash_left() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("s");
    let src = write_src(tmp.path(), "m.gguf", &tiny_model("llama", 9));
    {
        let cat = Catalog::open(&store).unwrap();
        cat.stage(&src, Some("kept"), None, "x", &no_progress)
            .unwrap();
    }
    let models = store.join(MODELS_DIR);
    // A half-copied temp file, and a renamed file whose commit never ran.
    fs::write(models.join(".staging-half-123-0.tmp"), b"partial").unwrap();
    fs::write(models.join("orphan.gguf"), tiny_model("llama", 10)).unwrap();
    fs::write(models.join("README"), b"not ours to judge").unwrap();
    let cat = Catalog::open(&store).unwrap();
    assert_eq!(models_dir_listing(&store), vec!["README", "kept.gguf"]);
    assert_eq!(cat.list().unwrap().len(), 1);
    cat.stage(&src, Some("orphan"), None, "x", &no_progress)
        .unwrap();
}

#[test]
fn a_second_open_of_the_same_store_is_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let _cat = Catalog::open(tmp.path()).unwrap();
    let e = Catalog::open(tmp.path()).unwrap_err();
    assert!(matches!(e, StoreError::InUse { .. }), "{e}");
    assert!(
        e.to_string().contains("in use by another llorchd process"),
        "{e}"
    );
}

#[test]
fn catalog_is_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Catalog>();

    let tmp = tempfile::tempdir().unwrap();
    let cat = Arc::new(Catalog::open(&tmp.path().join("s")).unwrap());
    let srcs: Vec<PathBuf> = (0..4)
        .map(|i| {
            write_src(
                tmp.path(),
                &format!("m{i}.gguf"),
                &tiny_model("llama", i as u8),
            )
        })
        .collect();
    // Four threads stage four models, and all race for one more id.
    let handles: Vec<_> = srcs
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, src)| {
            let cat = Arc::clone(&cat);
            std::thread::spawn(move || {
                cat.stage(&src, Some(&format!("m{i}")), None, "x", &no_progress)
                    .unwrap();
                cat.stage(&src, Some("contended"), None, &format!("{i}"), &no_progress)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let won: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
    assert_eq!(won.len(), 1, "{results:?}");
    for r in &results {
        if let Err(e) = r {
            assert!(
                matches!(
                    e,
                    StoreError::AlreadyExists(_) | StoreError::StagingInProgress(_)
                ),
                "{e}"
            );
        }
    }
    let winner = won[0].as_ref().unwrap();
    assert_eq!(cat.verify("contended").unwrap(), VerifyOutcome::Ok);
    assert_eq!(cat.list().unwrap().len(), 5);
    assert_eq!(
        fs::read(cat.model_path(winner)).unwrap(),
        fs::read(&srcs[winner.source.parse::<usize>().unwrap()]).unwrap()
    );
    assert_eq!(models_dir_listing(cat.dir()).len(), 5);
}

/// Build a schema-1 database as the first development builds wrote it.
fn write_v1_database(store: &Path, entries: &[v1::Entry]) {
    fs::create_dir_all(store.join(MODELS_DIR)).unwrap();
    let db = Database::create(store.join(DB_FILE)).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut meta = txn.open_table(META).unwrap();
        meta.insert("schema_version", 1u64).unwrap();
        let mut t = txn.open_table(v1::MODELS).unwrap();
        for e in entries {
            t.insert(e.id.as_str(), serde_json::to_string(e).unwrap().as_str())
                .unwrap();
        }
    }
    txn.commit().unwrap();
}

#[test]
fn schema_1_databases_are_migrated() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path();
    let bytes = tiny_model("llama", 11);
    fs::create_dir_all(store.join(MODELS_DIR)).unwrap();
    fs::write(store.join(MODELS_DIR).join("old.gguf"), &bytes).unwrap();
    write_v1_database(
        store,
        &[
            v1::Entry {
                id: "old".into(),
                file: "old.gguf".into(),
                sha256: sha(&bytes),
                bytes: bytes.len() as u64,
                arch: "llama".into(),
                quant: "F32 (1), Q8_0 (1)".into(),
                ctx: Some(256),
                params: 160,
                retired: true,
                staged_at: 1_700_000_000,
            },
            v1::Entry {
                id: "gone".into(),
                file: "gone.gguf".into(),
                sha256: "0".repeat(64),
                bytes: 1,
                arch: "qwen2".into(),
                quant: "Q4_0 (1)".into(),
                ctx: None,
                params: 32,
                retired: false,
                staged_at: 5,
            },
        ],
    );
    let cat = Catalog::open(store).unwrap();
    let old = cat.get("old").unwrap().unwrap();
    assert_eq!(old.file_name, "old.gguf");
    assert_eq!(old.state, ModelState::Retired);
    assert_eq!(old.staged_at_ms, 1_700_000_000_000);
    assert_eq!(old.context_length, Some(256));
    assert!(old.source.contains("before schema 2"));
    assert_eq!(cat.verify("old").unwrap(), VerifyOutcome::Ok);
    assert_eq!(cat.get("gone").unwrap().unwrap().state, ModelState::Active);
    assert_eq!(cat.verify("gone").unwrap(), VerifyOutcome::Missing);
    drop(cat);

    // The old table is gone and the version is current.
    let db = Database::create(store.join(DB_FILE)).unwrap();
    let r = db.begin_read().unwrap();
    let meta = r.open_table(META).unwrap();
    assert_eq!(
        meta.get("schema_version").unwrap().unwrap().value(),
        SCHEMA_VERSION
    );
    assert!(r.open_table(v1::MODELS).is_err());
}

#[test]
fn a_corrupt_schema_1_entry_aborts_the_migration_and_keeps_the_old_data() {
    let tmp = tempfile::tempdir().unwrap();
    write_v1_database(tmp.path(), &[]);
    {
        let db = Database::create(tmp.path().join(DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(v1::MODELS)
            .unwrap()
            .insert("bad", "{not json")
            .unwrap();
        txn.commit().unwrap();
    }
    let e = Catalog::open(tmp.path()).unwrap_err();
    assert!(matches!(e, StoreError::CorruptEntry { .. }), "{e}");
    let db = Database::create(tmp.path().join(DB_FILE)).unwrap();
    let r = db.begin_read().unwrap();
    assert_eq!(
        r.open_table(META)
            .unwrap()
            .get("schema_version")
            .unwrap()
            .unwrap()
            .value(),
        1
    );
}

#[test]
fn newer_schema_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let db = Database::create(tmp.path().join(DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", SCHEMA_VERSION + 1)
            .unwrap();
        txn.commit().unwrap();
    }
    let e = Catalog::open(tmp.path()).unwrap_err();
    assert!(
        matches!(e, StoreError::SchemaTooNew { found, .. } if found == SCHEMA_VERSION + 1),
        "{e}"
    );
    assert!(e.to_string().contains("upgrade llorchd"), "{e}");
}

#[test]
fn a_foreign_redb_file_is_not_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let db = Database::create(tmp.path().join(DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        const OTHER: TableDefinition<&str, &str> = TableDefinition::new("someone_elses");
        txn.open_table(OTHER).unwrap().insert("k", "v").unwrap();
        txn.commit().unwrap();
    }
    let e = Catalog::open(tmp.path()).unwrap_err();
    assert!(matches!(e, StoreError::NotACatalog { .. }), "{e}");
}

#[test]
fn a_file_that_is_not_redb_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join(DB_FILE), vec![0x42u8; 4096]).unwrap();
    let e = Catalog::open(tmp.path()).unwrap_err();
    assert!(matches!(e, StoreError::Database { .. }), "{e}");
}

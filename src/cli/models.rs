//! `llorchd models ...`: inspect GGUF files; stage, list, verify, retire,
//! activate and remove models in the store; write synthetic models.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use llorchd::gguf::{GgufFile, GgufSummary, Value};
use llorchd::store::{Catalog, CatalogEntry, ModelState, StoreError, VerifyOutcome};

use super::{synth, usage, Context, Run};

#[derive(Debug, Args)]
pub struct Models {
    #[command(subcommand)]
    command: ModelsCommand,
}

#[derive(Debug, Subcommand)]
enum ModelsCommand {
    /// Show what a GGUF file holds: architecture, shape, tensor types, tokenizer.
    Inspect(Inspect),
    /// Copy a GGUF file into the model store (hashing it) and record it in the catalog.
    Stage(Stage),
    /// List the models in the catalog.
    List(List),
    /// Re-hash a staged model and compare it with the recorded sha256.
    Verify(IdArg),
    /// Mark a model Retired: kept on disk, but not loaded by new pools.
    Retire(IdArg),
    /// Mark a retired model Active again.
    Activate(IdArg),
    /// Remove a model from the catalog and delete its file.
    Remove(IdArg),
    /// Print the path of a staged model's file.
    Path(IdArg),
    /// Write a synthetic model GGUF (random weights) of any shape and tensor type.
    Synth(synth::Synth),
}

impl Run for Models {
    fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        match self.command {
            ModelsCommand::Inspect(c) => c.run(ctx),
            ModelsCommand::Stage(c) => c.run(ctx),
            ModelsCommand::List(c) => c.run(ctx),
            ModelsCommand::Verify(c) => verify(ctx, &c.id),
            ModelsCommand::Retire(c) => set_state(ctx, &c.id, ModelState::Retired),
            ModelsCommand::Activate(c) => set_state(ctx, &c.id, ModelState::Active),
            ModelsCommand::Remove(c) => remove(ctx, &c.id),
            ModelsCommand::Path(c) => path(ctx, &c.id),
            ModelsCommand::Synth(c) => c.run(ctx),
        }
    }
}

#[derive(Debug, Args)]
struct IdArg {
    /// Catalog id of the model.
    id: String,
}

#[derive(Debug, Args)]
struct Inspect {
    /// A GGUF file.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Also list every metadata key (arrays summarised).
    #[arg(long)]
    metadata: bool,
    /// Also list every tensor: name, type, shape, offset.
    #[arg(long)]
    tensors: bool,
}

#[derive(Debug, Args)]
struct Stage {
    /// The GGUF file to stage.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Catalog id (letters, digits, '.', '_', '-'; at most 64). Default:
    /// derived from the file name.
    #[arg(long)]
    id: Option<String>,
    /// Expected sha256 (hex); a mismatch aborts and stages nothing.
    #[arg(long, value_name = "HEX")]
    sha256: Option<String>,
}

#[derive(Debug, Args)]
struct List {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Store errors the caller fixes (exit 2) apart from runtime failures (1).
fn store_error(e: StoreError) -> anyhow::Error {
    match e {
        StoreError::InvalidId { .. }
        | StoreError::InvalidSha256(_)
        | StoreError::NotFound(_)
        | StoreError::AlreadyExists(_) => usage(e.to_string()),
        e => e.into(),
    }
}

fn open_catalog(ctx: &Context) -> anyhow::Result<Catalog> {
    let cfg = ctx.load_config()?;
    Catalog::open(&cfg.store.dir).map_err(store_error)
}

/// A byte progress bar on stderr when it is a terminal; nothing otherwise.
fn progress_bar(label: &str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = ProgressBar::new(0);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    pb.set_message(label.to_string());
    Some(pb)
}

fn human_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

fn human_bytes(n: u64) -> String {
    indicatif::BinaryBytes(n).to_string()
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".to_string(), T::to_string)
}

impl Run for Inspect {
    fn run(self, _ctx: &Context) -> anyhow::Result<ExitCode> {
        let g = GgufFile::open(&self.file)?;
        let s = GgufSummary::of(&g.header);
        if self.json {
            let mut v = serde_json::to_value(&s)?;
            let obj = v.as_object_mut().expect("a struct serialises to an object");
            obj.insert("file".into(), self.file.display().to_string().into());
            obj.insert("quantization".into(), s.quantization().into());
            if self.metadata {
                let meta: serde_json::Map<_, _> = g
                    .header
                    .metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), metadata_json(v)))
                    .collect();
                obj.insert("metadata".into(), meta.into());
            }
            if self.tensors {
                let t: Vec<serde_json::Value> = g
                    .header
                    .tensors
                    .iter()
                    .map(|t| {
                        serde_json::json!({
                            "name": t.name, "type": t.ty.name(), "dims": t.dims,
                            "offset": t.offset, "bytes": t.size,
                        })
                    })
                    .collect();
                obj.insert("tensors".into(), t.into());
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(ExitCode::SUCCESS);
        }
        print_summary(&self.file, &s);
        if self.metadata {
            println!("metadata:");
            for (k, v) in &g.header.metadata {
                println!("  {k} = {}", v.summary());
            }
        }
        if self.tensors {
            println!("tensors:");
            for t in &g.header.tensors {
                println!(
                    "  {:<32} {:<6} {:?} @{} ({} bytes)",
                    t.name,
                    t.ty.name(),
                    t.dims,
                    t.offset,
                    t.size
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Metadata as JSON: scalars in full, long arrays as type and length.
fn metadata_json(v: &Value) -> serde_json::Value {
    match v {
        Value::String(s) => s.clone().into(),
        Value::Bool(b) => (*b).into(),
        Value::Array(_) => v.summary().into(),
        v => match (v.as_i64(), v.as_u64(), v.as_f64()) {
            (Some(i), _, _) => i.into(),
            (None, Some(u), _) => u.into(),
            (_, _, Some(f)) => f.into(),
            _ => v.summary().into(),
        },
    }
}

fn print_summary(file: &Path, s: &GgufSummary) {
    let row = |k: &str, v: String| println!("{k:<16}{v}");
    row(
        "file",
        format!(
            "{} ({} bytes, GGUF v{})",
            file.display(),
            s.file_bytes,
            s.version
        ),
    );
    row("architecture", opt(&s.architecture));
    if let Some(n) = &s.name {
        row("name", n.clone());
    }
    row("file type", opt(&s.file_type));
    row(
        "parameters",
        format!("{} ({})", human_count(s.parameter_count), s.parameter_count),
    );
    row("context length", opt(&s.context_length));
    row("layers", opt(&s.block_count));
    row("embedding", opt(&s.embedding_length));
    row("feed forward", opt(&s.feed_forward_length));
    row(
        "heads",
        format!("{} (kv {})", opt(&s.head_count), opt(&s.head_count_kv)),
    );
    if s.key_length.is_some() || s.value_length.is_some() {
        row(
            "head dim",
            format!("k {} v {}", opt(&s.key_length), opt(&s.value_length)),
        );
    }
    if let Some(w) = s.sliding_window {
        row("sliding window", w.to_string());
    }
    row("vocab size", opt(&s.vocab_size));
    row(
        "tokenizer",
        format!(
            "{} (pre {}), add_bos {}",
            opt(&s.tokenizer_model),
            opt(&s.tokenizer_pre),
            opt(&s.add_bos_token)
        ),
    );
    row(
        "chat template",
        if s.has_chat_template { "yes" } else { "no" }.into(),
    );
    row(
        "tensors",
        format!("{}: {}", s.tensor_count, s.quantization()),
    );
    let unsupported = s.unsupported_types();
    if !unsupported.is_empty() {
        row("unsupported", unsupported.join(", "));
    }
}

impl Run for Stage {
    fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let cat = open_catalog(ctx)?;
        let source = std::path::absolute(&self.file).unwrap_or_else(|_| self.file.clone());
        let pb = progress_bar("staging");
        let progress = |done: u64, total: u64| {
            if let Some(pb) = &pb {
                pb.set_length(total);
                pb.set_position(done);
            }
        };
        let result = cat.stage(
            &self.file,
            self.id.as_deref(),
            self.sha256.as_deref(),
            &source.display().to_string(),
            &progress,
        );
        if let Some(pb) = &pb {
            pb.finish_and_clear();
        }
        let e = result.map_err(store_error)?;
        println!(
            "staged {} ({}, {}, {} bytes, sha256 {}) as {}",
            e.id,
            e.architecture,
            e.quantization,
            e.bytes,
            e.sha256,
            cat.model_path(&e).display()
        );
        Ok(ExitCode::SUCCESS)
    }
}

fn format_time(ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

impl Run for List {
    fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let cat = open_catalog(ctx)?;
        let entries = cat.list().map_err(store_error)?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&entries)?);
            return Ok(ExitCode::SUCCESS);
        }
        print_table(&entries);
        Ok(ExitCode::SUCCESS)
    }
}

fn print_table(entries: &[CatalogEntry]) {
    let header = [
        "ID",
        "STATE",
        "ARCH",
        "PARAMS",
        "CTX",
        "SIZE",
        "SHA256",
        "STAGED",
        "QUANTIZATION",
    ];
    let rows: Vec<[String; 9]> = entries
        .iter()
        .map(|e| {
            [
                e.id.clone(),
                e.state.to_string(),
                e.architecture.clone(),
                human_count(e.parameter_count),
                opt(&e.context_length),
                human_bytes(e.bytes),
                e.sha256.chars().take(12).collect(),
                format_time(e.staged_at_ms),
                e.quantization.clone(),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn verify(ctx: &Context, id: &str) -> anyhow::Result<ExitCode> {
    let cat = open_catalog(ctx)?;
    let pb = progress_bar("verifying");
    let progress = |done: u64, total: u64| {
        if let Some(pb) = &pb {
            pb.set_length(total);
            pb.set_position(done);
        }
    };
    let outcome = cat.verify_with_progress(id, &progress);
    if let Some(pb) = &pb {
        pb.finish_and_clear();
    }
    match outcome.map_err(store_error)? {
        VerifyOutcome::Ok => {
            let e = cat.get(id)?.context("entry vanished during verify")?;
            println!("{id}: ok (sha256 {})", e.sha256);
            Ok(ExitCode::SUCCESS)
        }
        bad => Err(anyhow::anyhow!("{id}: verification failed: {bad}")),
    }
}

fn set_state(ctx: &Context, id: &str, state: ModelState) -> anyhow::Result<ExitCode> {
    let cat = open_catalog(ctx)?;
    let e = cat.set_state(id, state).map_err(store_error)?;
    println!("{}: {}", e.id, e.state);
    Ok(ExitCode::SUCCESS)
}

fn path(ctx: &Context, id: &str) -> anyhow::Result<ExitCode> {
    let cat = open_catalog(ctx)?;
    let e = cat
        .get(id)
        .map_err(store_error)?
        .ok_or_else(|| anyhow::anyhow!("no model {id:?} in the catalog"))?;
    println!("{}", cat.model_path(&e).display());
    Ok(ExitCode::SUCCESS)
}

fn remove(ctx: &Context, id: &str) -> anyhow::Result<ExitCode> {
    let cat = open_catalog(ctx)?;
    let e = cat.remove(id).map_err(store_error)?;
    println!("removed {} ({})", e.id, cat.model_path(&e).display());
    Ok(ExitCode::SUCCESS)
}

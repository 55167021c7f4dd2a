//! The Nix packaging and the NixOS module, checked where nixpkgs cannot be
//! fetched (docs/NIXOS.md "What is tested where"):
//!
//! - every `.nix` file parses (`nix-instantiate --parse`);
//! - the builtins-only harness `nixos-module/eval-unit.nix` evaluates the
//!   module for a home box, a cloud worker, a control plane, the VM tests'
//!   nodes and configurations the module must refuse;
//! - each rendered unit passes `systemd-analyze verify` (no warning about it)
//!   and `systemd-analyze security` with ExecStart on this build's binary;
//! - each rendered TOML passes `llorchd check-config`, as does the build-time
//!   check the module runs;
//! - the model-staging script and `nix run`'s script work on a real store.
//!
//! Needs nix-instantiate (Debian's nix-bin), systemd-analyze, jq and
//! shellcheck; ci/test.sh installs them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use llorchd::config::{Config, FullQueuePolicy, Profile, Role};
use serde_json::Value;
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_llorchd");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh directory for one test, under cargo's tmp dir (kept after the
/// run for a look at the rendered files).
fn work_dir(test: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("nix_module")
        .join(test);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The absolute path of a tool, or a panic that says how to get it.
fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found on PATH: ci/test.sh installs it \
                 (apt-get install nix-bin systemd jq shellcheck)"
            )
        })
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A command with only PATH and HOME, so no LLORCH_* or seed variable of
/// the test's environment reaches llorchd.
fn clean(program: impl AsRef<std::ffi::OsStr>, home: &Path) -> Command {
    let mut c = Command::new(program);
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home);
    c
}

/// `llorchd models synth` output (a few hundred KiB) and its sha256.
fn synth_model(path: &Path, seed: u64) -> String {
    let out = run(Command::new(BIN)
        .args(["models", "synth", "--seed", &seed.to_string(), "--out"])
        .arg(path));
    assert!(out.status.success(), "synth: {}", text(&out.stderr));
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// Evaluates nixos-module/eval-unit.nix. `dir/pkg/bin/llorchd` links to the
/// binary under test, so the units' ExecStart runs this build.
fn evaluate(dir: &Path, model_file: &Path, model_sha256: Option<&str>) -> Value {
    let bin = dir.join("pkg/bin");
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join("llorchd");
    if !link.exists() {
        std::os::unix::fs::symlink(BIN, &link).unwrap();
    }
    let jq_prefix = tool("jq").parent().unwrap().parent().unwrap().to_path_buf();
    let mut cmd = Command::new(tool("nix-instantiate"));
    cmd.args(["--eval", "--strict", "--json"])
        .arg(repo().join("nixos-module/eval-unit.nix"))
        .arg("--argstr")
        .arg("dir")
        .arg(dir)
        .arg("--argstr")
        .arg("llorchdPrefix")
        .arg(dir.join("pkg"))
        .arg("--argstr")
        .arg("modelFile")
        .arg(model_file)
        .arg("--argstr")
        .arg("jqPrefix")
        .arg(&jq_prefix)
        // Debian's nix.conf names a build group that need not exist; an
        // evaluation builds nothing.
        .env("NIX_CONFIG", "build-users-group =");
    if let Some(sha) = model_sha256 {
        cmd.args(["--argstr", "modelSha256", sha]);
    }
    let out = run(&mut cmd);
    assert!(
        out.status.success(),
        "eval-unit.nix failed: {}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("eval-unit.nix prints JSON")
}

/// Writes the files a rendered unit refers to (config, checked config,
/// staging script) where the unit expects them.
fn write_files(render: &Value) {
    for f in render["files"].as_array().unwrap() {
        let path = Path::new(f["path"].as_str().unwrap());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, f["text"].as_str().unwrap()).unwrap();
        if f["executable"].as_bool().unwrap() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
}

fn str_list(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// Every `Key=value` line of the unit with this key.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}=");
    unit.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(str::to_string)
        .collect()
}

fn unit_value(unit: &str, key: &str) -> Option<String> {
    let v = unit_values(unit, key);
    assert!(v.len() <= 1, "{key} set {} times", v.len());
    v.into_iter().next()
}

fn seconds(v: &str) -> u64 {
    v.strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not N s: {v}"))
}

/// Writes the unit and checks it with systemd-analyze (verify: no warning
/// that names it; security: exposure at most 2.0), the TOML with
/// `llorchd check-config`, and runs the build-time config check.
fn check_rendered(dir: &Path, name: &str, render: &Value) -> Config {
    write_files(render);
    let unit = render["unit"].as_str().unwrap();
    let unit_dir = dir.join("units").join(name);
    std::fs::create_dir_all(&unit_dir).unwrap();
    let unit_path = unit_dir.join("llorchd.service");
    std::fs::write(&unit_path, unit).unwrap();

    let out = run(Command::new(tool("systemd-analyze"))
        .args(["verify", "--man=no"])
        .arg(&unit_path));
    let stderr = text(&out.stderr);
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("llorchd")).collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "{name}: systemd-analyze verify: {stderr}\n{unit}"
    );
    let out = run(Command::new(tool("systemd-analyze"))
        .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
        .arg(&unit_path));
    assert!(
        out.status.success(),
        "{name}: exposure above 2.0: {}",
        text(&out.stdout)
    );

    let config = PathBuf::from(
        unit_value(unit, "ExecStart")
            .unwrap()
            .rsplit(' ')
            .next()
            .unwrap(),
    );
    let out = run(clean(BIN, dir).arg("check-config").arg(&config));
    assert!(
        out.status.success(),
        "{name}: check-config {}: {}\n{}",
        config.display(),
        text(&out.stderr),
        std::fs::read_to_string(&config).unwrap_or_default()
    );

    // The derivation that checks the config at build time, as its builder
    // would run it: the service's environment, $out to create.
    if let Some(script) = render["checkScript"].as_str() {
        let out_link = unit_dir.join("checked.toml");
        let mut cmd = clean("bash", dir);
        cmd.args(["-euc", script]).env("out", &out_link);
        for (k, v) in render["checkEnv"].as_object().unwrap() {
            cmd.env(k, v.as_str().unwrap());
        }
        let out = run(&mut cmd);
        assert!(
            out.status.success(),
            "{name}: build-time check: {}",
            text(&out.stderr)
        );
        assert!(out_link.symlink_metadata().is_ok(), "{name}: no $out");
    }

    Config::load_with_env(Some(config.as_path()), &|_| None).unwrap()
}

#[test]
fn every_nix_file_parses() {
    fn walk(d: &Path, found: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                if !matches!(name.as_str(), "target" | ".git" | "corpus" | "artifacts") {
                    walk(&p, found);
                }
            } else if name.ends_with(".nix") {
                found.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&repo(), &mut files);
    for must in [
        "flake.nix",
        "nix/package.nix",
        "nixos-module/default.nix",
        "nixos-module/render.nix",
        "nixos-module/stubs.nix",
        "nixos-module/eval-unit.nix",
        "nixos-module/test.nix",
    ] {
        assert!(files.contains(&repo().join(must)), "{must} not found");
    }
    for f in &files {
        let out = run(Command::new(tool("nix-instantiate"))
            .arg("--parse")
            .arg(f)
            .env("NIX_CONFIG", "build-users-group ="));
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            text(&out.stderr)
        );
    }
}

#[test]
fn module_renders_units_systemd_and_llorchd_accept() {
    let dir = work_dir("render");
    let model = dir.join("tiny.gguf");
    let sha = synth_model(&model, 1);
    let v = evaluate(&dir, &model, Some(&sha));
    let pkg_exe = dir.join("pkg/bin/llorchd").display().to_string();

    for (name, s) in v["scenarios"].as_object().unwrap() {
        assert_eq!(
            str_list(&s["failedAssertions"]),
            Vec::<String>::new(),
            "{name}"
        );
        assert_eq!(str_list(&s["warnings"]), Vec::<String>::new(), "{name}");
        let r = &s["render"];
        assert_eq!(r["configRoundTrips"], true, "{name}: TOML writer");
        assert_eq!(r["moduleUsesRender"], true, "{name}");
        let cfg = check_rendered(&dir, name, r);
        let unit = r["unit"].as_str().unwrap();

        let checked = dir.join(name).join("llorchd-checked.toml");
        assert_eq!(
            unit_value(unit, "ExecStart").unwrap(),
            format!("{pkg_exe} serve --config {}", checked.display()),
            "{name}"
        );
        assert_eq!(r["etcConfig"], checked.display().to_string());
        for (k, want) in [
            ("Type", "notify"),
            ("NotifyAccess", "main"),
            ("DynamicUser", "true"),
            ("StateDirectory", "llorchd"),
            ("Restart", "on-failure"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "true"),
            ("PrivateTmp", "true"),
            ("NoNewPrivileges", "true"),
            ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
            ("MemoryDenyWriteExecute", "true"),
            ("LockPersonality", "true"),
        ] {
            assert_eq!(unit_value(unit, k).as_deref(), Some(want), "{name}: {k}");
        }
        assert_eq!(
            unit_values(unit, "SystemCallFilter"),
            ["@system-service", "~@privileged"],
            "{name}"
        );
        let stop = seconds(&unit_value(unit, "TimeoutStopSec").unwrap());
        assert!(
            stop * 1000 > cfg.server.shutdown_grace_ms,
            "{name}: TimeoutStopSec {stop}s within the shutdown grace"
        );
        assert_eq!(cfg.store.dir, PathBuf::from("/var/lib/llorchd"), "{name}");

        let ports: Vec<u64> = r["firewall"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_u64().unwrap())
            .collect();
        match name.as_str() {
            "home" => {
                assert_eq!(cfg.profile, Profile::Home);
                assert_eq!(cfg.pools.len(), 1);
                assert_eq!(cfg.pools[0].model, "tiny");
                assert_eq!(cfg.server.bind.to_string(), "127.0.0.1:8080");
                assert_eq!(
                    cfg.server.metrics_bind.unwrap().to_string(),
                    "127.0.0.1:9464"
                );
                assert_eq!(unit_value(unit, "WatchdogSec").as_deref(), Some("30s"));
                assert_eq!(
                    unit_value(unit, "CapabilityBoundingSet").as_deref(),
                    Some("")
                );
                assert_eq!(unit_value(unit, "AmbientCapabilities"), None);
                assert_eq!(unit_value(unit, "After").as_deref(), Some("network.target"));
                assert!(unit_values(unit, "LoadCredential").is_empty());
                assert!(unit_value(unit, "ExecStartPre").is_some());
                assert!(ports.is_empty(), "{ports:?}");
            }
            "worker" => {
                assert_eq!(
                    (cfg.profile, cfg.role),
                    (Profile::Cloud, Some(Role::Worker))
                );
                assert_eq!(
                    cfg.cloud.node_id.as_deref(),
                    Some("gpu-1"),
                    "hostName default"
                );
                assert_eq!(cfg.cloud.control_urls.len(), 2);
                assert_eq!(
                    cfg.tls.key.as_deref(),
                    Some(Path::new("/run/credentials/llorchd.service/tls-key"))
                );
                assert_eq!(
                    unit_values(unit, "LoadCredential"),
                    [
                        "llorch-api-token:/run/keys/llorch-api-token",
                        "tls-ca:/var/lib/llorch-tls/ca.crt",
                        "tls-cert:/var/lib/llorch-tls/gpu-1.crt",
                        "tls-key:/var/lib/llorch-tls/gpu-1.key",
                    ]
                );
                assert_eq!(unit_values(unit, "Environment"), ["\"RUST_BACKTRACE=1\""]);
                assert_eq!(
                    unit_value(unit, "Wants").as_deref(),
                    Some("network-online.target")
                );
                assert_eq!(ports, [8081, 9464]);
            }
            "control" => {
                assert_eq!(
                    (cfg.profile, cfg.role),
                    (Profile::Cloud, Some(Role::Control))
                );
                assert!(cfg.pools.is_empty());
                assert!(cfg.tls.require_client_cert);
                assert_eq!(cfg.admission.full_policy, FullQueuePolicy::DropLru);
                assert_eq!(cfg.server.bind.to_string(), "[::]:443");
                // Port 443: the one capability, and no user namespace.
                assert_eq!(
                    unit_value(unit, "AmbientCapabilities").as_deref(),
                    Some("CAP_NET_BIND_SERVICE")
                );
                assert_eq!(
                    unit_value(unit, "CapabilityBoundingSet").as_deref(),
                    Some("CAP_NET_BIND_SERVICE")
                );
                assert_eq!(unit_value(unit, "PrivateUsers").as_deref(), Some("false"));
                assert_eq!(unit_value(unit, "WatchdogSec"), None, "watchdogSec = null");
                assert_eq!(unit_value(unit, "TimeoutStopSec").as_deref(), Some("45s"));
                assert!(unit_value(unit, "ExecStartPre").is_none());
                assert_eq!(ports, [443]);
            }
            other => panic!("unexpected scenario {other}"),
        }
    }
}

#[test]
fn vm_test_nodes_render_valid_units_and_configs() {
    let dir = work_dir("vm");
    let model = dir.join("tiny.gguf");
    synth_model(&model, 1);
    let v = evaluate(&dir, &model, None);
    let nodes = v["flake"]["vmNodes"].as_object().unwrap();
    let mut names: Vec<&String> = nodes.keys().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "nixos-cloud-control",
            "nixos-cloud-worker1",
            "nixos-cloud-worker2",
            "nixos-home-machine"
        ]
    );
    for (name, n) in nodes {
        assert_eq!(
            str_list(&n["failedAssertions"]),
            Vec::<String>::new(),
            "{name}"
        );
        let cfg = check_rendered(&dir, name, n);
        if name.contains("worker") {
            assert_eq!(cfg.cloud.control_urls, ["http://control:8080"]);
            assert_eq!(
                cfg.cloud.node_id.as_deref(),
                name.strip_prefix("nixos-cloud-")
            );
        }
    }
    let scripts = &v["flake"]["testScripts"];
    let cloud = scripts["nixos-cloud"].as_str().unwrap();
    for want in [
        "/v2/nodes",
        "401",
        "\"worker1\", \"worker2\"",
        "systemctl stop llorchd",
    ] {
        assert!(cloud.contains(want), "cloud VM test lacks {want}");
    }
    let home = scripts["nixos-home"].as_str().unwrap();
    for want in ["/readyz", "/metrics", "LLORCH_", "already staged"] {
        assert!(home.contains(want), "home VM test lacks {want}");
    }
}

#[test]
fn module_refuses_bad_configurations_by_name() {
    let dir = work_dir("refused");
    let v = evaluate(&dir, &dir.join("none.gguf"), None);
    let refused = &v["refused"];
    let cases: [(&str, &[&str]); 2] = [
        (
            "cloud-without-role",
            &[
                "needs services.llorchd.role",
                "apiTokenFile is in the Nix store",
            ],
        ),
        (
            "worker-incomplete",
            &[
                "at least one settings.cloud.control_urls",
                "set services.llorchd.apiTokenFile",
                "set both cert and key",
                "metricsPort (with metricsAddress) or settings.server.metrics_bind, not both",
                "each id may appear once",
            ],
        ),
    ];
    for (case, wants) in cases {
        let got = str_list(&refused[case]["failedAssertions"]);
        assert_eq!(got.len(), wants.len(), "{case}: {got:#?}");
        for w in wants {
            assert!(
                got.iter().any(|m| m.contains(w)),
                "{case}: no {w:?} in {got:#?}"
            );
        }
    }
}

/// The catalog of a store, as `llorchd models list --json` prints it.
fn catalog(store: &Path) -> Vec<Value> {
    let out = run(clean(BIN, store)
        .args(["models", "list", "--json"])
        .env("LLORCH_STORE_DIR", store));
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

/// Runs a home scenario's ExecStartPre against `store`.
fn stage(script: &str, store: &Path) -> Output {
    run(clean(script, store).env("LLORCH_STORE_DIR", store))
}

#[test]
fn model_staging_is_idempotent_and_refuses_another_digest() {
    let dir = work_dir("staging");
    let (a, b) = (dir.join("a.gguf"), dir.join("b.gguf"));
    let (sha_a, sha_b) = (synth_model(&a, 1), synth_model(&b, 2));
    assert_ne!(sha_a, sha_b);
    let script_for = |sub: &str, file: &Path, sha: &str| -> String {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).unwrap();
        let v = evaluate(&d, file, Some(sha));
        let r = &v["scenarios"]["home"]["render"];
        write_files(r);
        unit_value(r["unit"].as_str().unwrap(), "ExecStartPre").unwrap()
    };
    let script_a = script_for("a", &a, &sha_a.to_uppercase());
    let out = run(Command::new(tool("shellcheck")).arg(&script_a));
    assert!(out.status.success(), "shellcheck: {}", text(&out.stdout));

    let store = dir.join("store");
    let out = stage(&script_a, &store);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("staged tiny"),
        "{}",
        text(&out.stdout)
    );
    let first = catalog(&store);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["id"], "tiny");
    assert_eq!(first[0]["sha256"], sha_a.as_str());

    // Again: nothing copied or re-hashed.
    let out = stage(&script_a, &store);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("model tiny already staged"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(catalog(&store), first);

    // The same id declared with another file and digest: the start fails,
    // the staged model stays.
    let script_b = script_for("b", &b, &sha_b);
    let out = stage(&script_b, &store);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("staged with sha256 {sha_a}")) && err.contains(&sha_b),
        "{err}"
    );
    assert_eq!(catalog(&store), first);

    // A digest that the file does not have: nothing staged.
    let fresh = dir.join("store-mismatch");
    let script_ab = script_for("ab", &a, &sha_b);
    let out = stage(&script_ab, &fresh);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(catalog(&fresh).is_empty());

    // A file the service cannot read: a message naming it.
    let gone = dir.join("gone.gguf");
    let script_gone = script_for("gone", &gone, &sha_a);
    let out = stage(&script_gone, &dir.join("store-gone"));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!("cannot read {}", gone.display())),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn nix_run_script_stages_once_and_writes_a_valid_home_config() {
    let dir = work_dir("home_app");
    let script = repo().join("nix/llorchd-home.sh");
    let out = run(Command::new(tool("shellcheck")).arg(&script));
    assert!(out.status.success(), "shellcheck: {}", text(&out.stdout));

    let model = dir.join("Tiny Model.v1.gguf");
    let sha = synth_model(&model, 3);
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(BIN, bin.join("llorchd")).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let xdg = dir.join("xdg");
    let home = |args: &[&Path]| -> Output {
        let mut c = clean("bash", &dir);
        c.arg(&script)
            .arg("--dry-run")
            .args(args)
            .env("PATH", &path)
            .env("XDG_DATA_HOME", &xdg);
        run(&mut c)
    };
    let store = xdg.join("llorchd/store");
    let config = xdg.join("llorchd/home.toml");

    let out = home(&[model.as_path()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("model = \"Tiny-Model.v1\""),
        "{}",
        text(&out.stdout)
    );
    let staged = catalog(&store);
    assert_eq!(staged.len(), 1);
    assert_eq!(staged[0]["id"], "Tiny-Model.v1");
    assert_eq!(staged[0]["sha256"], sha.as_str());
    let cfg = Config::load_with_env(Some(config.as_path()), &|_| None).unwrap();
    assert_eq!(cfg.profile, Profile::Home);
    assert_eq!(cfg.store.dir, store);
    assert_eq!(cfg.pools[0].model, "Tiny-Model.v1");

    // Later runs: the remembered model, no second copy.
    for args in [&[][..], &[model.as_path()][..]] {
        let out = home(args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("model = \"Tiny-Model.v1\""));
        assert_eq!(catalog(&store), staged);
    }

    let missing = dir.join("missing.gguf");
    let out = home(&[missing.as_path()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no such file"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn flake_outputs_and_lock() {
    let dir = work_dir("flake");
    let v = evaluate(&dir, &dir.join("none.gguf"), None);
    let f = &v["flake"];
    assert_eq!(
        str_list(&f["packages"]),
        ["default", "llorchd", "llorchd-home"]
    );
    assert_eq!(str_list(&f["devShells"]), ["default"]);
    assert_eq!(
        str_list(&f["checks"]),
        ["nixos-cloud", "nixos-home", "package"]
    );
    assert_eq!(f["moduleIsAFunction"], true);
    assert_eq!(f["app"]["type"], "app");
    assert!(f["app"]["program"]
        .as_str()
        .unwrap()
        .ends_with("/llorchd-home/bin/llorchd-home"));

    let p = &f["package"];
    assert_eq!(p["pname"], "llorchd");
    assert_eq!(p["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(p["mainProgram"], "llorchd");
    assert_eq!(
        p["cargoLock"],
        repo().join("Cargo.lock").display().to_string()
    );
    assert_eq!(p["srcRoot"], repo().display().to_string());
    assert_eq!(str_list(&p["srcMissing"]), Vec::<String>::new());
    let rustflags = p["rustflags"].as_str().unwrap();
    assert!(rustflags.contains("+crt-static") && rustflags.contains("relocation-model=static"));

    let app = &f["homeApp"];
    assert_eq!(app["name"], "llorchd-home");
    assert_eq!(
        app["text"].as_str().unwrap(),
        std::fs::read_to_string(repo().join("nix/llorchd-home.sh")).unwrap()
    );
    assert!(str_list(&app["runtimeInputs"]).contains(&"llorchd".to_string()));

    // flake.lock pins the input flake.nix names, in the format Nix writes.
    let url = f["nixpkgsUrl"].as_str().unwrap();
    let (owner_repo, reference) = url
        .strip_prefix("github:")
        .and_then(|u| u.rsplit_once('/'))
        .unwrap();
    let lock: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("flake.lock")).unwrap()).unwrap();
    assert_eq!(lock["version"], 7);
    assert_eq!(lock["root"], "root");
    assert_eq!(lock["nodes"]["root"]["inputs"]["nixpkgs"], "nixpkgs");
    let n = &lock["nodes"]["nixpkgs"];
    assert_eq!(n["original"]["type"], "github");
    assert_eq!(
        format!(
            "{}/{}",
            n["original"]["owner"].as_str().unwrap(),
            n["original"]["repo"].as_str().unwrap()
        ),
        owner_repo
    );
    assert_eq!(n["original"]["ref"], reference);
    let rev = n["locked"]["rev"].as_str().unwrap();
    assert!(
        rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit()),
        "{rev}"
    );
    let nar = n["locked"]["narHash"].as_str().unwrap();
    assert!(
        nar.starts_with("sha256-") && nar.len() == 51 && nar.ends_with('='),
        "{nar}"
    );
    assert!(n["locked"]["lastModified"].as_u64().unwrap() > 1_700_000_000);
}

#[test]
fn docs_describe_every_module_option() {
    let dir = work_dir("docs");
    let v = evaluate(&dir, &dir.join("none.gguf"), None);
    let doc = std::fs::read_to_string(repo().join("docs/NIXOS.md")).unwrap();
    let options = str_list(&v["options"]);
    assert!(options.len() > 40, "{options:?}");
    let missing: Vec<&String> = options
        .iter()
        .filter(|o| !doc.contains(&format!("`{o}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/NIXOS.md does not describe {missing:?}"
    );
}

/// One HTTP/1.0 GET on loopback: the status code and the body.
fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The home unit run as systemd runs it: ExecStartPre, then ExecStart with
/// a notify socket and a watchdog, then SIGTERM. Needs the `serve`
/// subcommand; a build without it says so and checks nothing more.
#[test]
fn home_unit_starts_notifies_and_stops_like_systemd_expects() {
    let has_serve = run(Command::new(BIN).args(["serve", "--help"]))
        .status
        .success();
    if !has_serve {
        eprintln!("skipped: this llorchd has no `serve` subcommand yet");
        return;
    }
    use std::os::unix::net::UnixDatagram;
    use std::time::{Duration, Instant};

    let dir = work_dir("systemd_run");
    let model = dir.join("tiny.gguf");
    let sha = synth_model(&model, 1);
    let v = evaluate(&dir, &model, Some(&sha));
    let r = &v["scenarios"]["home"]["render"];
    write_files(r);
    let unit = r["unit"].as_str().unwrap();
    let (api, metrics) = (free_port(), free_port());
    let store = dir.join("store");
    let env = |c: &mut Command| {
        c.env("LLORCH_STORE_DIR", &store)
            .env("LLORCH_BIND", format!("127.0.0.1:{api}"))
            .env("LLORCH_METRICS_BIND", format!("127.0.0.1:{metrics}"));
    };

    let mut pre = clean(unit_value(unit, "ExecStartPre").unwrap(), &dir);
    env(&mut pre);
    let out = run(&mut pre);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let exec_start = unit_value(unit, "ExecStart").unwrap();
    let argv: Vec<&str> = exec_start.split(' ').collect();
    let mut start = clean(argv[0], &dir);
    start
        .args(&argv[1..])
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "2000000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    env(&mut start);
    let mut child = start.spawn().unwrap();
    let recv = || {
        let mut buf = [0u8; 4096];
        let n = notify.recv(&mut buf).expect("a notification within 30 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut seen = Vec::new();
    while !seen.iter().any(|m: &String| m.contains("WATCHDOG=1")) {
        seen.push(recv());
    }
    let ready = seen.iter().position(|m| m.lines().any(|l| l == "READY=1"));
    assert!(
        ready.is_some(),
        "no READY=1 before the first WATCHDOG=1: {seen:?}"
    );

    assert_eq!(http_get(api, "/readyz").0, 200);
    let (status, body) = http_get(metrics, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("pool_ready{pool_id=\"default\"} 1"), "{body}");

    let stop_limit = Duration::from_secs(seconds(&unit_value(unit, "TimeoutStopSec").unwrap()));
    let t = Instant::now();
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < stop_limit,
            "still running after TimeoutStopSec"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    let mut rest = Vec::new();
    notify
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while let Ok(n) = notify.recv(&mut buf) {
        rest.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(rest.iter().any(|m| m.contains("STOPPING=1")), "{rest:?}");

    // The next start stages nothing.
    let mut pre = clean(unit_value(unit, "ExecStartPre").unwrap(), &dir);
    env(&mut pre);
    let out = run(&mut pre);
    assert!(
        text(&out.stdout).contains("already staged"),
        "{}",
        text(&out.stdout)
    );
}

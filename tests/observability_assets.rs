//! Checks the operator assets against the real tools and against the metric
//! table: `promtool check rules`, `promtool test rules`, `promtool check
//! metrics` on a scrape rendered by our recorder, and that every PromQL
//! expression in the alert rules, the dashboard and the runbook uses only
//! metrics llorchd exports.
//!
//! Needs `promtool` (Debian package `prometheus`); `ci/test.sh` installs it.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use llorchd::telemetry::metrics::{self, MetricKind, ProcessRole, ALL};
use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// The promtool binary, or a failure that says how to install it.
fn promtool() -> &'static str {
    let ok = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "promtool not found on PATH. Install it with \
         `apt-get update && apt-get install -y --no-install-recommends prometheus` \
         (Debian's prometheus package ships promtool); ci/test.sh does this in CI."
    );
    "promtool"
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("spawn");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

// ---------------------------------------------------------------------------
// PromQL: extract metric names from an expression.

mod promql {
    /// Aggregations, functions, and Grafana's `label_values`-free set of
    /// PromQL calls we accept. An identifier followed by `(` must be one.
    const FUNCTIONS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
        "abs",
        "absent",
        "absent_over_time",
        "ceil",
        "changes",
        "clamp",
        "clamp_max",
        "clamp_min",
        "day_of_month",
        "day_of_week",
        "day_of_year",
        "days_in_month",
        "delta",
        "deriv",
        "exp",
        "floor",
        "histogram_avg",
        "histogram_count",
        "histogram_fraction",
        "histogram_quantile",
        "histogram_stddev",
        "histogram_stdvar",
        "histogram_sum",
        "holt_winters",
        "hour",
        "idelta",
        "increase",
        "irate",
        "label_join",
        "label_replace",
        "ln",
        "log2",
        "log10",
        "minute",
        "month",
        "predict_linear",
        "rate",
        "resets",
        "round",
        "scalar",
        "sgn",
        "sort",
        "sort_desc",
        "sqrt",
        "time",
        "timestamp",
        "vector",
        "year",
        "avg_over_time",
        "min_over_time",
        "max_over_time",
        "sum_over_time",
        "count_over_time",
        "quantile_over_time",
        "stddev_over_time",
        "stdvar_over_time",
        "last_over_time",
        "present_over_time",
        "acos",
        "acosh",
        "asin",
        "asinh",
        "atan",
        "atanh",
        "cos",
        "cosh",
        "sin",
        "sinh",
        "tan",
        "tanh",
        "deg",
        "rad",
        "pi",
        "start",
        "end",
    ];
    /// Keywords that take a parenthesised label list.
    const LABEL_LIST: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: &[&str] = &[
        "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
    ];

    /// Metric names referenced by `expr`, in order of appearance.
    pub fn metric_names(expr: &str) -> Result<Vec<String>, String> {
        let b: Vec<char> = expr.chars().collect();
        let mut i = 0;
        let mut names = Vec::new();
        let peek_paren = |mut j: usize| {
            while j < b.len() && b[j].is_whitespace() {
                j += 1;
            }
            (j < b.len() && b[j] == '(').then_some(j)
        };
        while i < b.len() {
            let c = b[i];
            if c.is_whitespace() {
                i += 1;
            } else if c == '#' {
                while i < b.len() && b[i] != '\n' {
                    i += 1;
                }
            } else if c == '"' || c == '\'' || c == '`' {
                i = skip_string(&b, i)?;
            } else if c == '{' {
                i = skip_group(&b, i, '{', '}')?;
            } else if c == '[' {
                i = skip_group(&b, i, '[', ']')?;
            } else if c == '$' {
                // A Grafana variable: $name, $__name or ${name}.
                i += 1;
                if i < b.len() && b[i] == '{' {
                    i = skip_group(&b, i, '{', '}')?;
                } else {
                    while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                        i += 1;
                    }
                }
            } else if c.is_ascii_digit()
                || (c == '.' && b.get(i + 1).is_some_and(char::is_ascii_digit))
            {
                // A number or duration: 0.95, 1e-3, 0x1f, 5m, 1h30m.
                let start = i;
                while i < b.len() {
                    let d = b[i];
                    let exponent_sign = (d == '+' || d == '-')
                        && matches!(b[i - 1], 'e' | 'E')
                        && b[start..i - 1]
                            .iter()
                            .all(|x| x.is_ascii_digit() || *x == '.');
                    if d.is_ascii_alphanumeric() || d == '.' || exponent_sign {
                        i += 1;
                    } else {
                        break;
                    }
                }
            } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '_' || b[i] == ':') {
                    i += 1;
                }
                let word: String = b[start..i].iter().collect();
                let lower = word.to_ascii_lowercase();
                if LABEL_LIST.contains(&lower.as_str()) {
                    if let Some(j) = peek_paren(i) {
                        i = skip_group(&b, j, '(', ')')?;
                    }
                } else if KEYWORDS.contains(&lower.as_str()) {
                } else if peek_paren(i).is_some() || next_word_is_grouping(&b, i) {
                    if !FUNCTIONS.contains(&word.as_str()) {
                        return Err(format!("unknown function {word}() in {expr}"));
                    }
                } else {
                    names.push(word);
                }
            } else {
                i += 1;
            }
        }
        Ok(names)
    }

    /// `sum by (x) (...)`: an aggregation followed by its grouping clause.
    fn next_word_is_grouping(b: &[char], mut j: usize) -> bool {
        while j < b.len() && b[j].is_whitespace() {
            j += 1;
        }
        let start = j;
        while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == '_') {
            j += 1;
        }
        let w: String = b[start..j].iter().collect::<String>().to_ascii_lowercase();
        w == "by" || w == "without"
    }

    fn skip_string(b: &[char], start: usize) -> Result<usize, String> {
        let q = b[start];
        let mut i = start + 1;
        while i < b.len() {
            if b[i] == '\\' && q != '`' {
                i += 2;
            } else if b[i] == q {
                return Ok(i + 1);
            } else {
                i += 1;
            }
        }
        Err(format!("unterminated string at {start}"))
    }

    fn skip_group(b: &[char], start: usize, open: char, close: char) -> Result<usize, String> {
        let mut depth = 0;
        let mut i = start;
        while i < b.len() {
            let c = b[i];
            if c == '"' || c == '\'' || c == '`' {
                i = skip_string(b, i)?;
                continue;
            }
            if c == open {
                depth += 1;
            } else if c == close {
                depth -= 1;
                if depth == 0 {
                    return Ok(i + 1);
                }
            }
            i += 1;
        }
        Err(format!("unbalanced {open}{close} at {start}"))
    }
}

#[test]
fn promql_extractor_handles_the_tricky_parts() {
    let n = |e: &str| promql::metric_names(e).unwrap();
    assert_eq!(
        n(r#"histogram_quantile(0.95, sum by (job, le) (rate(foo_bucket{a="x}y",b=~"$v"}[5m])))"#),
        ["foo_bucket"]
    );
    assert_eq!(
        n("sum(rate(a_total[$__rate_interval])) by (node_id) / on (instance) group_left(pool_id) b"),
        ["a_total", "b"]
    );
    assert_eq!(n("sum by (a) (x) + max without (b) (y)"), ["x", "y"]);
    assert!(
        promql::metric_names("summ by (a) (x)").is_err(),
        "unknown aggregation"
    );
    assert_eq!(
        n("x > bool 1e-3 and y offset 5m or z unless w"),
        ["x", "y", "z", "w"]
    );
    assert_eq!(
        n("sum without (state) (orchd_nodes) # comment mentioning fake_metric"),
        ["orchd_nodes"]
    );
    assert_eq!(n(r#"label_replace(m, "dst", "$1", "src", "(.*)")"#), ["m"]);
    assert_eq!(n("rate(m[5m:1m]) @ end()"), ["m"]);
    assert_eq!(n("clamp_min(x, 0.5) * 100"), ["x"]);
    assert!(
        promql::metric_names("rat(x[5m])").is_err(),
        "unknown function"
    );
    assert!(promql::metric_names("x{a=\"b\"").is_err(), "unbalanced");
}

/// Metric names in `exprs` that llorchd does not export (histogram series
/// suffixes allowed).
fn unknown_metrics<'a>(exprs: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut bad = BTreeSet::new();
    for e in exprs {
        for name in promql::metric_names(e).unwrap_or_else(|err| panic!("{err}")) {
            if !is_exported(&name) {
                bad.insert(format!("{name} (in {e})"));
            }
        }
    }
    bad.into_iter().collect()
}

fn is_exported(name: &str) -> bool {
    if metrics::find(name).is_some() {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|s| {
        name.strip_suffix(s)
            .and_then(metrics::find)
            .is_some_and(|d| d.kind == MetricKind::Histogram)
    })
}

/// Parses every expression with promtool (as recording rules).
fn promtool_parses(exprs: &[String]) {
    let dir = tempfile::tempdir().unwrap();
    let mut y = String::from("groups:\n  - name: parse\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        // A JSON string is a valid YAML double-quoted scalar.
        y.push_str(&format!(
            "      - record: check:expr_{i}\n        expr: {}\n",
            serde_json::to_string(e).unwrap()
        ));
    }
    let f = dir.path().join("exprs.yml");
    std::fs::write(&f, y).unwrap();
    let (ok, out) = run(Command::new(promtool()).arg("check").arg("rules").arg(&f));
    assert!(ok, "promtool rejects an expression:\n{out}\n{exprs:#?}");
}

// ---------------------------------------------------------------------------
// Alert rules.

const ALERTS: &str = "ci/alerts/llorchd.yml";
const RUNBOOK: &str = "docs/runbooks/incidents.md";
const REQUIRED_ALERTS: &[&str] = &[
    "NoNodesOnline",
    "LowNodeAvailability",
    "NoPoolsAvailable",
    "NodeHeartbeatStalled",
    "HighHealthCheckLatency",
    "HighQueueDepth",
    "HighRejectionRate",
    "SlowTimeToFirstToken",
    "WorkerLostErrors",
    "VramPressure",
    "PoolNotReady",
    "HighTaskFailureRate",
];

fn yaml(rel: &str) -> Yaml {
    serde_yaml_ng::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// (alert name, rule) for every alerting rule.
fn alert_rules() -> Vec<(String, Yaml)> {
    let doc = yaml(ALERTS);
    let mut out = Vec::new();
    for g in doc["groups"].as_sequence().expect("groups") {
        for r in g["rules"].as_sequence().expect("rules") {
            let name = r["alert"]
                .as_str()
                .expect("only alerting rules here")
                .to_string();
            out.push((name, r.clone()));
        }
    }
    out
}

#[test]
fn alert_rules_pass_promtool_check() {
    let (ok, out) = run(Command::new(promtool())
        .args(["check", "rules"])
        .arg(repo().join(ALERTS)));
    assert!(ok, "{out}");
}

#[test]
fn alert_rule_unit_tests_pass() {
    let dir = repo().join("ci/alerts");
    let mut tests: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("_test.yml"))
        .collect();
    tests.sort();
    assert!(!tests.is_empty(), "no ci/alerts/*_test.yml");
    let (ok, out) = run(Command::new(promtool())
        .args(["test", "rules"])
        .args(&tests));
    assert!(ok, "{out}");
}

#[test]
fn every_alert_is_complete_and_has_a_runbook_section() {
    let runbook = read(RUNBOOK);
    let anchors: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_lowercase().replace(' ', "-"))
        .collect();
    let rules = alert_rules();
    let names: BTreeSet<&str> = rules.iter().map(|(n, _)| n.as_str()).collect();
    for want in REQUIRED_ALERTS {
        assert!(names.contains(want), "alert {want} missing from {ALERTS}");
    }
    assert_eq!(names.len(), rules.len(), "duplicate alert names");
    for (name, r) in &rules {
        let sev = r["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["critical", "warning", "info"].contains(&sev),
            "{name}: severity {sev:?}"
        );
        for k in ["summary", "description"] {
            assert!(
                r["annotations"][k]
                    .as_str()
                    .is_some_and(|s| !s.trim().is_empty()),
                "{name}: no {k}"
            );
        }
        let url = r["annotations"]["runbook_url"].as_str().unwrap_or_default();
        let anchor = name.to_lowercase();
        assert_eq!(url, format!("{RUNBOOK}#{anchor}"), "{name}: runbook_url");
        assert!(
            anchors.contains(&anchor),
            "{RUNBOOK} has no section ## {name}"
        );
        let section = runbook
            .split("\n## ")
            .find(|s| s.starts_with(&format!("{name}\n")))
            .unwrap();
        for needle in [
            "**Meaning.**",
            "**Confirm.**",
            "**Act.**",
            "```promql",
            "journalctl -u llorchd",
        ] {
            assert!(
                section.contains(needle),
                "{RUNBOOK} ## {name} lacks {needle}"
            );
        }
    }
}

#[test]
fn every_alert_has_a_unit_test_that_fires_and_resolves() {
    let doc = yaml("ci/alerts/llorchd_test.yml");
    let mut seen: HashMap<String, (Vec<u64>, Vec<u64>)> = HashMap::new();
    let minutes = |v: &Yaml| -> u64 {
        let s = v.as_str().expect("eval_time");
        s.strip_suffix('m')
            .and_then(|m| m.parse().ok())
            .expect("eval_time in minutes")
    };
    for t in doc["tests"].as_sequence().unwrap() {
        for a in t["alert_rule_test"].as_sequence().unwrap() {
            let name = a["alertname"].as_str().unwrap().to_string();
            let at = minutes(&a["eval_time"]);
            let fired = a["exp_alerts"].as_sequence().is_some_and(|s| !s.is_empty());
            let e = seen.entry(name).or_default();
            if fired {
                e.0.push(at)
            } else {
                e.1.push(at)
            }
        }
    }
    for (name, _) in alert_rules() {
        let (fired, quiet) = seen.get(&name).cloned().unwrap_or_default();
        assert!(!fired.is_empty(), "no unit test where {name} fires");
        let first = fired.iter().min().unwrap();
        assert!(
            quiet.iter().any(|q| q > first),
            "no unit test where {name} resolves after firing"
        );
    }
}

#[test]
fn alert_expressions_use_only_exported_metrics() {
    let exprs: Vec<String> = alert_rules()
        .iter()
        .map(|(_, r)| r["expr"].as_str().expect("expr").to_string())
        .collect();
    let bad = unknown_metrics(exprs.iter().map(String::as_str));
    assert!(
        bad.is_empty(),
        "alert rules use metrics llorchd does not export:\n{bad:#?}"
    );
}

// ---------------------------------------------------------------------------
// Dashboard.

const DASHBOARD: &str = "ci/dashboards/llorchd.json";

fn dashboard() -> Json {
    serde_json::from_str(&read(DASHBOARD)).expect("dashboard is JSON")
}

/// (panel title, expr) for every query of every panel, rows included.
fn dashboard_queries(d: &Json) -> Vec<(String, String)> {
    fn walk(panels: &Json, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or_default().to_string();
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push((
                    title.clone(),
                    t["expr"].as_str().unwrap_or_default().to_string(),
                ));
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&d["panels"], &mut out);
    out
}

/// Grafana variables replaced by values that keep the PromQL valid.
fn substitute_variables(d: &Json, expr: &str) -> String {
    let mut e = expr
        .replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h");
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap();
        e = e
            .replace(&format!("${{{name}}}"), ".*")
            .replace(&format!("${name}"), ".*");
    }
    e
}

#[test]
fn dashboard_is_an_importable_grafana_dashboard() {
    let d = dashboard();
    assert!(
        d["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion"
    );
    let input = d["__inputs"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == "DS_PROMETHEUS"))
        .expect("a DS_PROMETHEUS datasource input");
    assert_eq!(input["pluginId"], "prometheus");
    let mut ids = BTreeSet::new();
    for p in d["panels"].as_array().unwrap() {
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate panel id"
        );
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().unwrap_or_default();
        assert_eq!(
            p["datasource"]["uid"], "${DS_PROMETHEUS}",
            "{title}: datasource"
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no queries");
        for t in targets {
            assert_eq!(
                t["datasource"]["uid"], "${DS_PROMETHEUS}",
                "{title}: target datasource"
            );
            assert!(
                t["expr"].as_str().is_some_and(|e| !e.is_empty()),
                "{title}: empty expr"
            );
        }
    }
    let titles: Vec<&str> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["title"].as_str())
        .collect();
    for want in [
        "Nodes online",
        "Pool availability",
        "Node registrations",
        "Heartbeat success per node",
        "Pool health-check latency",
        "Queue depth",
        "Time to first token p50/p95",
        "Tokens/s",
        "Task outcomes",
        "Task placement by node",
        "Pool slots",
        "KV-cache usage",
        "VRAM used",
    ] {
        assert!(titles.contains(&want), "dashboard lacks panel {want:?}");
    }
    // TTFT shows both quantiles computed from the histogram buckets.
    let ttft: Vec<String> = dashboard_queries(&d)
        .into_iter()
        .filter(|(t, _)| t == "Time to first token p50/p95")
        .map(|(_, e)| e)
        .collect();
    for q in ["histogram_quantile(0.5,", "histogram_quantile(0.95,"] {
        assert!(
            ttft.iter()
                .any(|e| e.contains(q) && e.contains("orchd_time_to_first_token_seconds_bucket")),
            "TTFT panel lacks {q}"
        );
    }
}

#[test]
fn dashboard_queries_parse_and_use_only_exported_metrics() {
    let d = dashboard();
    let exprs: Vec<String> = dashboard_queries(&d).into_iter().map(|(_, e)| e).collect();
    let mut bad = unknown_metrics(exprs.iter().map(String::as_str));
    // Template variable queries: label_values(<selector>, <label>).
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        let q = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap_or_default();
        if let Some(inner) = q
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
        {
            let selector = inner.rsplit_once(',').map_or(inner, |(s, _)| s);
            bad.extend(unknown_metrics([selector]));
        }
    }
    assert!(
        bad.is_empty(),
        "dashboard uses metrics llorchd does not export:\n{bad:#?}"
    );
    let substituted: Vec<String> = exprs.iter().map(|e| substitute_variables(&d, e)).collect();
    promtool_parses(&substituted);
}

#[test]
fn dashboard_shows_every_exported_metric() {
    let d = dashboard();
    let mut used = BTreeSet::new();
    for (_, e) in dashboard_queries(&d) {
        for n in promql::metric_names(&e).unwrap() {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s).filter(|b| metrics::find(b).is_some()))
                .unwrap_or(&n)
                .to_string();
            used.insert(base);
        }
    }
    let missing: Vec<&str> = ALL
        .iter()
        .map(|m| m.name)
        .filter(|n| !used.contains(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics not on the dashboard: {missing:?}"
    );
}

// ---------------------------------------------------------------------------
// Runbook queries.

#[test]
fn runbook_queries_parse_and_use_only_exported_metrics() {
    let text = read(RUNBOOK);
    let mut exprs = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        match (inside, line.trim()) {
            (false, "```promql") => inside = true,
            (true, "```") => inside = false,
            (true, l) if !l.is_empty() => exprs.push(l.to_string()),
            _ => {}
        }
    }
    assert!(exprs.len() >= 15, "expected PromQL blocks in {RUNBOOK}");
    let bad = unknown_metrics(exprs.iter().map(String::as_str));
    assert!(
        bad.is_empty(),
        "runbook uses metrics llorchd does not export:\n{bad:#?}"
    );
    promtool_parses(&exprs);
}

// ---------------------------------------------------------------------------
// A real scrape through `promtool check metrics`.

fn scrape_with_one_of_each(role: ProcessRole) -> String {
    let recorder = metrics::build_recorder(role).unwrap();
    let handle = recorder.handle();
    ::metrics::with_local_recorder(&recorder, || {
        for d in ALL.iter().filter(|d| d.exported_by(role)) {
            let labels: Vec<(&'static str, String)> =
                d.labels.iter().map(|l| (*l, format!("{l}-1"))).collect();
            match d.kind {
                MetricKind::Counter => ::metrics::counter!(d.name, &labels).increment(2),
                MetricKind::Gauge => ::metrics::gauge!(d.name, &labels).set(1.0),
                MetricKind::Histogram => {
                    ::metrics::histogram!(d.name, &labels).record(d.buckets[1])
                }
            }
        }
    });
    handle.render()
}

#[test]
fn scrapes_pass_promtool_check_metrics() {
    for role in ProcessRole::ALL {
        let text = scrape_with_one_of_each(role);
        for d in ALL.iter().filter(|d| d.exported_by(role)) {
            let kind = match d.kind {
                MetricKind::Counter => "counter",
                MetricKind::Gauge => "gauge",
                MetricKind::Histogram => "histogram",
            };
            assert!(
                text.contains(&format!("# TYPE {} {kind}\n", d.name)),
                "{role:?} scrape lacks {} as a {kind}:\n{text}",
                d.name
            );
            assert!(
                text.contains(&format!("# HELP {} ", d.name)),
                "{} has no HELP",
                d.name
            );
        }
        if let Err(e) = llorchd::testing::promtool_check_metrics(&text) {
            panic!("{role:?}: {e}\n{text}");
        }
    }
}

#[test]
fn recorded_values_show_up_in_the_scrape() {
    let recorder = metrics::build_recorder(ProcessRole::Home).unwrap();
    ::metrics::with_local_recorder(&recorder, || {
        for _ in 0..3 {
            ::metrics::counter!(metrics::ADMISSION_ENQUEUED_TOTAL).increment(1);
        }
        ::metrics::counter!(metrics::TASKS_FINISHED_TOTAL, metrics::label::OUTCOME => metrics::outcome::OK).increment(2);
        ::metrics::gauge!(metrics::POOL_SLOTS_FREE, metrics::label::POOL_ID => "p0").set(4.0);
    });
    let text = recorder.handle().render();
    assert!(
        text.lines()
            .any(|l| l == "orchd_admission_enqueued_total 3"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == "orchd_tasks_finished_total{outcome=\"ok\"} 2"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == "pool_slots_free{pool_id=\"p0\"} 4"),
        "{text}"
    );
}

#[test]
fn ci_installs_promtool() {
    let script = read("ci/test.sh");
    assert!(
        script.contains("command -v promtool"),
        "ci/test.sh must install promtool"
    );
    assert!(Path::new(&repo().join(ALERTS)).exists());
}

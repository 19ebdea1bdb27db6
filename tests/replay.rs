//! `replay`: golden summaries of captures shaped like the agents controller's objects
//! (`tests/fixtures/domain-examples`, both input forms), the spans they export, and the promise that a replay
//! exports exactly the spans the live run exported.

mod support;

use std::path::{Path, PathBuf};

use support::{exporter, otlp, spans};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/domain-examples");

fn fixture_files() -> Vec<String> {
    ["agentruns.json", "jobs.json", "pods.json"].iter().map(|f| format!("{FIXTURES}/{f}")).collect()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("agentrun-replay-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn replay(args: &[&str], endpoint: Option<String>) -> (String, String) {
    let mut cmd = exporter();
    cmd.arg("replay").args(args);
    match endpoint {
        Some(e) => {
            cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", e).env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        }
        None => cmd.env("OTEL_TRACES_EXPORTER", "none"),
    };
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "replay failed: {stderr}");
    (stdout, stderr)
}

/// Compares with a golden file; `UPDATE_GOLDENS=1 cargo test --test replay` rewrites it instead (review the
/// diff before committing).
fn golden(name: &str, actual: &str) {
    let path = format!("{FIXTURES}/{name}");
    if std::env::var_os("UPDATE_GOLDENS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    assert_eq!(actual, std::fs::read_to_string(&path).unwrap(), "{path} (UPDATE_GOLDENS=1 to rewrite)");
}

#[test]
fn golden_summary_of_kubectl_watch_output() {
    let files = fixture_files();
    let args: Vec<&str> = files.iter().map(String::as_str).collect();
    let (table, _) = replay(&args, None);
    golden("summary.txt", &table);
    let mut json_args = vec!["--format", "json"];
    json_args.extend(&args);
    let (json, _) = replay(&json_args, None);
    golden("summary.jsonl", &json);
}

/// The same events as JSON Lines with `observedAt`: the same summary.
#[test]
fn golden_summary_of_json_lines() {
    let dir = scratch("jsonl");
    let mut lines = Vec::new();
    for f in fixture_files() {
        let text = std::fs::read_to_string(f).unwrap();
        let stream = serde_json::Deserializer::from_str(&text).into_iter::<serde_json::Value>();
        for v in stream {
            lines.push(v.unwrap());
        }
    }
    lines.sort_by_key(|v| {
        v["object"]["metadata"]["resourceVersion"].as_str().unwrap().parse::<u64>().unwrap()
    });
    // observedAt: one second after each object's latest change is a fair stand-in for a watch's delay.
    let body: String = lines
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let mut v = v.clone();
            v["observedAt"] =
                serde_json::Value::String(format!("2026-08-20T14:{:02}:{:02}Z", i / 60, i % 60));
            format!("{v}\n")
        })
        .collect();
    let path = dir.join("capture.jsonl");
    std::fs::write(&path, body).unwrap();
    let (json, _) = replay(&["--format", "json", path.to_str().unwrap()], None);
    // Collection and margins come from the objects' own times, so they do not move with observedAt.
    golden("summary.jsonl", &json);
}

#[tokio::test(flavor = "multi_thread")]
async fn domain_examples_export_well_formed_traces_without_secrets() {
    let received = otlp::Received::default();
    let addr = otlp::http(received.clone()).await;
    let files = fixture_files();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = files.iter().map(String::as_str).collect();
        replay(&args, Some(format!("http://{addr}")));
    })
    .await
    .unwrap();
    let spans = spans::flatten(&received.traces.lock().unwrap());
    assert_eq!(spans::check_traces(&spans), Ok(2));
    let text = format!("{spans:?}");
    for secret in ["s3cr3t", "do-not-export", "gpt-5.6", "proompteng/lab", "/workspace"] {
        assert!(!text.contains(secret), "{secret} leaked into a span");
    }
    let ttl = spans
        .iter()
        .find(|s| s.name == "job.ttl" && s.attrs["k8s.job.name"] == "codex-run-demo-job")
        .unwrap();
    // Job finished 12:07:43 (Complete), the TTL controller deleted it at 12:17:43.
    assert_eq!(ttl.start_ns, 1_787_227_663_000_000_000);
    assert_eq!(ttl.end_ns, 1_787_228_263_000_000_000);
    assert_eq!(ttl.attrs["agentrun.job.ttl_applied"], "after_collection");
    assert_eq!(ttl.attrs["agentrun.job.deleted_before_collection"], "false");
    let root = spans
        .iter()
        .find(|s| s.name == "agentrun" && s.attrs["agentrun.name"] == "codex-run-sample")
        .unwrap();
    assert_eq!(root.status, 2);
    assert_eq!(root.attrs["agentrun.reason"], "WorkflowJobMissing");
    assert_eq!(root.events, vec![("agentrun.job_missing".to_string(), 1_787_233_270_866_000_000)]);
}

#[test]
fn malformed_events_are_reported_with_file_and_line_and_skipped() {
    let dir = scratch("bad");
    let good = std::fs::read_to_string(format!("{FIXTURES}/agentruns.json")).unwrap();
    let path = dir.join("agentruns.json");
    std::fs::write(&path, format!("{{\n    \"type\": \"ADDED\",\n    broken\n}}\n{good}")).unwrap();
    let mut args = vec![path.to_str().unwrap().to_string()];
    args.extend(fixture_files().into_iter().skip(1));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (table, stderr) = replay(&args, None);
    assert!(stderr.contains(&format!("{}:1: not JSON", path.display())), "{stderr}");
    assert_eq!(table, std::fs::read_to_string(format!("{FIXTURES}/summary.txt")).unwrap());
}

async fn demo_recorded(dir: &Path) -> Vec<spans::FlatSpan> {
    let received = otlp::Received::default();
    let addr = otlp::http(received.clone()).await;
    let capture = dir.join("capture.jsonl");
    let metrics = format!("127.0.0.1:{}", support::free_port());
    let out = tokio::task::spawn_blocking(move || {
        exporter()
            .args([
                "demo",
                "--runs",
                "12",
                "--speed",
                "400",
                "--seed",
                "11",
                "--metrics-addr",
                &metrics,
                "--record",
            ])
            .arg(capture)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"))
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success());
    spans::flatten(&received.traces.lock().unwrap())
}

async fn replayed(files: Vec<PathBuf>) -> Vec<spans::FlatSpan> {
    let received = otlp::Received::default();
    let addr = otlp::http(received.clone()).await;
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = files.iter().map(|p| p.to_str().unwrap()).collect();
        replay(&args, Some(format!("http://{addr}")));
    })
    .await
    .unwrap();
    spans::flatten(&received.traces.lock().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_exports_the_same_spans_as_the_live_run() {
    let dir = scratch("live");
    let live = demo_recorded(&dir).await;
    assert_eq!(spans::check_traces(&live), Ok(12));

    let from_jsonl = replayed(vec![dir.join("capture.jsonl")]).await;
    assert!(from_jsonl == live, "JSON Lines replay: {}", spans::diff(&live, &from_jsonl));

    // The same events as kubectl's pretty watch output, one file per kind, without observedAt.
    let text = std::fs::read_to_string(dir.join("capture.jsonl")).unwrap();
    let mut per_kind: std::collections::BTreeMap<String, String> = Default::default();
    for line in text.lines() {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        v.as_object_mut().unwrap().remove("observedAt");
        let kind = v["object"]["kind"].as_str().unwrap().to_lowercase();
        let entry = per_kind.entry(kind).or_default();
        entry.push_str(&serde_json::to_string_pretty(&v).unwrap());
        entry.push('\n');
    }
    let mut files = Vec::new();
    for (kind, body) in per_kind {
        let p = dir.join(format!("{kind}s.json"));
        std::fs::write(&p, body).unwrap();
        files.push(p);
    }
    let from_kubectl = replayed(files).await;
    assert!(from_kubectl == live, "kubectl-form replay: {}", spans::diff(&live, &from_kubectl));
}

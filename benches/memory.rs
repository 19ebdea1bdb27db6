//! Resident memory of the real `watch` binary with 1,000 AgentRuns tracked (each with its running Job and
//! Pod, as full objects with managedFields, env and annotations), served by the fake API server. Prints the
//! baseline, the figure with the runs, and the cost per run. Run with `cargo bench --bench memory`.

#[allow(dead_code)]
#[path = "../tests/support/fake_apiserver.rs"]
mod fake_apiserver;

use std::time::Duration;

use fake_apiserver::FakeApi;
use serde_json::{Value, json};

const RUNS: &str = "/apis/agents.proompteng.ai/v1alpha1/namespaces/agents/agentruns";
const JOBS: &str = "/apis/batch/v1/namespaces/agents/jobs";
const PODS: &str = "/api/v1/namespaces/agents/pods";

fn managed_fields() -> Value {
    json!([{"manager": "agents-controller", "operation": "Update", "apiVersion": "v1", "time": "2026-08-20T12:00:01Z",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {"f:agents.proompteng.ai/agent-run": {}, "f:agents.proompteng.ai/agent": {}}},
            "f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"agent-runner\"}": {"f:env": {}, "f:image": {}, "f:resources": {}}}}}}}},
           {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "batch/v1", "time": "2026-08-20T12:00:02Z",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:active": {}, "f:ready": {}, "f:startTime": {}, "f:uncountedTerminatedPods": {}}}, "subresource": "status"}])
}

fn env() -> Value {
    json!([{"name": "AGENT_RUN_SPEC", "value": "/workspace/run.json"}, {"name": "AGENT_RUNNER_SPEC_PATH", "value": "/workspace/agent-runner.json"},
           {"name": "CODEX_HOME", "value": "/root/.codex"}, {"name": "CODEX_AUTH", "value": "/root/.codex/auth.json"},
           {"name": "CODEX_SYSTEM_PROMPT_EXPECTED_HASH", "value": "a41c5e0b9d8f7e6d5c4b3a29180f7e6d5c4b3a2918f0e1d2c3b4a59687766554"}])
}

fn objects(n: usize) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let mut runs = Vec::new();
    let mut jobs = Vec::new();
    let mut pods = Vec::new();
    for i in 0..n {
        let run = format!("codex-run-{i:05}");
        let run_uid = format!("6f1c2a9e-3b7d-4c1e-9a55-{i:012}");
        let job_uid = format!("9b3e7f42-1c6a-4d8e-b2f0-{i:012}");
        let pod_uid = format!("2d4f6a8c-0e1a-4b3c-9d5e-{i:012}");
        let labels = json!({"agents.proompteng.ai/agent-run": run, "agents.proompteng.ai/agent": "codex-agent",
                            "agents.proompteng.ai/provider": "codex", "agents.proompteng.ai/implementation": "codex-impl-sample"});
        runs.push(json!({"apiVersion": "agents.proompteng.ai/v1alpha1", "kind": "AgentRun",
            "metadata": {"name": run, "namespace": "agents", "uid": run_uid, "resourceVersion": "100", "generation": 1,
                         "creationTimestamp": "2026-08-20T12:00:00Z", "finalizers": ["agents.proompteng.ai/runtime-cleanup"],
                         "managedFields": managed_fields(),
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "x".repeat(1500)}},
            "spec": {"agentRef": {"name": "codex-agent"}, "implementationSpecRef": {"name": "codex-impl-sample"},
                     "runtime": {"type": "job", "config": {"serviceAccountName": "agents-sa", "backoffLimit": 0, "ttlSecondsAfterFinished": 600}},
                     "ttlSecondsAfterFinished": 86400, "parameters": {"repository": "proompteng/lab", "base": "main", "head": format!("codex/{i}")}},
            "status": {"phase": "Running", "startedAt": "2026-08-20T12:00:01.412Z", "updatedAt": "2026-08-20T12:00:02.208Z",
                       "runtimeRef": {"type": "job", "name": format!("{run}-job"), "namespace": "agents", "uid": job_uid, "jobObservedAt": "2026-08-20T12:00:02.205Z"},
                       "conditions": [{"type": "Accepted", "status": "True", "reason": "Submitted", "message": "", "lastTransitionTime": "2026-08-20T12:00:01.411Z"},
                                      {"type": "InProgress", "status": "True", "reason": "Running", "message": "", "lastTransitionTime": "2026-08-20T12:00:01.411Z"}]}}));
        jobs.push(json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": format!("{run}-job"), "namespace": "agents", "uid": job_uid, "resourceVersion": "101",
                         "creationTimestamp": "2026-08-20T12:00:01Z", "labels": labels, "managedFields": managed_fields(),
                         "ownerReferences": [{"apiVersion": "agents.proompteng.ai/v1alpha1", "kind": "AgentRun", "name": run, "uid": run_uid}]},
            "spec": {"backoffLimit": 0, "template": {"spec": {"containers": [{"name": "agent-runner", "image": "runner:1", "env": env()}]}}},
            "status": {"active": 1, "ready": 1, "startTime": "2026-08-20T12:00:01Z"}}));
        pods.push(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{run}-job-7xq2m"), "namespace": "agents", "uid": pod_uid, "resourceVersion": "102",
                         "creationTimestamp": "2026-08-20T12:00:01Z", "labels": labels, "managedFields": managed_fields(),
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": format!("{run}-job"), "uid": job_uid, "controller": true, "blockOwnerDeletion": true}],
                         "finalizers": ["batch.kubernetes.io/job-tracking"]},
            "spec": {"nodeName": "worker-3", "containers": [{"name": "agent-runner", "image": "runner:1", "env": env()}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "agent-runner", "ready": true, "state": {"running": {"startedAt": "2026-08-20T12:00:09Z"}}}]}}));
    }
    (runs, jobs, pods)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn measure(rt: &tokio::runtime::Runtime, n: usize) -> (u64, String) {
    let api = FakeApi::default();
    let (runs, jobs, pods) = objects(n);
    let addr = rt.block_on(async {
        api.set(RUNS, runs, 200, vec![]);
        api.set(JOBS, jobs, 200, vec![]);
        api.set(PODS, pods, 200, vec![]);
        api.start().await
    });
    let dir = std::env::temp_dir().join(format!("agentrun-mem-{}-{n}", std::process::id()));
    let kubeconfig = fake_apiserver::kubeconfig(addr, &dir, "agents");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_agentrun-lifecycle-exporter"))
        .args(["watch", "--metrics-addr", &metrics_addr])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "warn")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .spawn()
        .unwrap();
    let want = format!("agentrun_exporter_tracked_objects{{resource=\"agentruns\"}} {n}");
    let mut tracked = String::new();
    for _ in 0..300 {
        std::thread::sleep(Duration::from_millis(100));
        if let Ok(body) = get(&metrics_addr, "/metrics")
            && body.contains(&want)
        {
            tracked = body
                .lines()
                .filter(|l| l.starts_with("agentrun_exporter_tracked_objects"))
                .collect::<Vec<_>>()
                .join(", ");
            break;
        }
    }
    // Let the relist's transient buffers be released and the allocator settle.
    std::thread::sleep(Duration::from_secs(2));
    let rss = rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    (rss, tracked)
}

fn get(addr: &str, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    Ok(buf)
}

/// The engine's own state per run, in this process: AgentRun, Job and Pod applied, nothing else retained.
fn engine_per_run(n: usize) -> f64 {
    use agentrun_lifecycle_exporter::{
        engine::{Tracker, TrackerConfig, Ts},
        source::{Change, Observation},
        upstream::{self, RunSpec, UpstreamConfig, objects::Object},
    };
    let t0 = Ts(1_787_227_200_000);
    let before = rss_kib(std::process::id());
    let mut tracker = Tracker::new(TrackerConfig::default());
    for i in 0..n {
        let spec =
            RunSpec::job("agents", &format!("codex-run-{i:05}"), &format!("6f1c2a9e-3b7d-4c1e-9a55-{i:012}"));
        let mut run = upstream::agentrun(&spec, t0);
        let mut job = upstream::job(&run, &format!("9b3e7f42-1c6a-4d8e-b2f0-{i:012}"), None, None, t0);
        upstream::submitted(&mut run, &job, t0);
        upstream::job_started(&mut job, t0);
        let pod = upstream::pod(&job, "7xq2m", &format!("2d4f6a8c-0e1a-4b3c-9d5e-{i:012}"), "worker-3", t0);
        for o in [Object::AgentRun(run), Object::Job(job), Object::Pod(pod)] {
            let obs = Observation { at: t0, change: Change::Upsert(o) };
            if let Some(input) = upstream::input(&obs, &UpstreamConfig::default()) {
                tracker.apply(input);
            }
        }
    }
    let after = rss_kib(std::process::id());
    assert_eq!(tracker.gauges(t0).tracked_jobs, n);
    (after.saturating_sub(before)) as f64 / n as f64
}

fn main() {
    println!(
        "engine state, 10000 runs applied in-process: {:.2} KiB per run (AgentRun + Job + Pod)",
        engine_per_run(10_000)
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (base, _) = measure(&rt, 0);
    println!("watch, 0 runs tracked: VmRSS {base} KiB");
    for n in [1_000, 10_000] {
        let (rss, tracked) = measure(&rt, n);
        println!("watch, {n} runs tracked ({tracked}): VmRSS {rss} KiB");
        println!(
            "  per tracked run (AgentRun + Job + Pod): {:.2} KiB above the baseline",
            (rss.saturating_sub(base)) as f64 / n as f64
        );
    }
}

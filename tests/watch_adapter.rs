//! The watch adapter against a fake API server speaking real list/watch HTTP: initial lists, watch events,
//! a bookmark that moves the resume point, a 410 Expired that forces a relist, a Job that vanished during
//! the gap, and a malformed object that is counted and skipped without stalling the watch.

mod support;

use std::{sync::Arc, time::Duration};

use agentrun_lifecycle_exporter::{
    engine::{Fact, Kind, Tracker, TrackerConfig, Ts},
    sink::{metrics::LifecycleMetrics, spans::SpanStats},
    source::kube::{Readiness, WatchScope, spawn_watches},
    source::{Change, Observation},
    upstream::{self, UpstreamConfig},
};
use serde_json::{Value, json};
use support::fake_apiserver::{FakeApi, WatchEnd, WatchScript, bookmark, client, event};
use tokio::sync::mpsc;

const RUNS: &str = "/apis/agents.proompteng.ai/v1alpha1/namespaces/agents/agentruns";
const JOBS: &str = "/apis/batch/v1/namespaces/agents/jobs";
const PODS: &str = "/api/v1/namespaces/agents/pods";

fn run() -> Value {
    json!({
        "apiVersion": "agents.proompteng.ai/v1alpha1", "kind": "AgentRun",
        "metadata": {"name": "r", "namespace": "agents", "uid": "run-uid", "resourceVersion": "5", "creationTimestamp": "2026-08-20T12:00:00Z"},
        "spec": {"agentRef": {"name": "a"}, "runtime": {"type": "job"}},
        "status": {"phase": "Running", "updatedAt": "2026-08-20T12:00:01.500Z",
                   "runtimeRef": {"type": "job", "name": "r-job", "uid": "job-a"}}
    })
}

fn job(name: &str, uid: &str, rv: u64, extra_status: Value) -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": "agents", "uid": uid, "resourceVersion": rv.to_string(),
                     "creationTimestamp": "2026-08-20T12:00:01Z",
                     "labels": {"agents.proompteng.ai/agent-run": "r"},
                     "ownerReferences": [{"apiVersion": "agents.proompteng.ai/v1alpha1", "kind": "AgentRun", "name": "r", "uid": "run-uid"}]},
        "spec": {"ttlSecondsAfterFinished": 30},
        "status": extra_status
    })
}

fn finished() -> Value {
    json!({"startTime": "2026-08-20T12:00:01Z",
           "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": "2026-08-20T12:01:00Z"}]})
}

fn describe(o: &Observation) -> String {
    match &o.change {
        Change::Upsert(obj) => {
            format!("upsert {:?} {}", obj.kind(), obj.metadata().uid.as_deref().unwrap_or(""))
        }
        Change::Delete(obj) => {
            format!("delete {:?} {}", obj.kind(), obj.metadata().uid.as_deref().unwrap_or(""))
        }
        Change::RelistBegin { kind, .. } => format!("relist {kind:?}"),
        Change::RelistEnd { kind, .. } => format!("relisted {kind:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_watches_bookmarks_and_relists_after_410() {
    let api = FakeApi::default();
    api.set(RUNS, vec![run()], 10, vec![]);
    api.set(PODS, vec![], 10, vec![]);
    let malformed = json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "bad", "namespace": "agents", "uid": "job-bad", "resourceVersion": "9"},
        "status": {"startTime": "not a time"}});
    api.set(
        JOBS,
        vec![job("r-job", "job-a", 8, finished()), malformed],
        10,
        vec![
            // Watch 1: a new Job, a bookmark, then the server ends the watch (timeout).
            WatchScript {
                events: vec![
                    event("ADDED", job("other-job", "job-b", 15, json!({}))),
                    bookmark("batch/v1", "Job", 20),
                ],
                end: WatchEnd::Close,
            },
            // Watch 2 (resumed from the bookmark): the history is gone.
            WatchScript { events: vec![], end: WatchEnd::Expired },
        ],
    );
    let addr = api.start().await;
    // The relist after the 410 no longer has job-a: it was deleted while the watch was down.
    let api2 = api.clone();

    let registry_meter = opentelemetry::global::meter("test");
    let metrics = Arc::new(LifecycleMetrics::new(&registry_meter, Arc::new(SpanStats::default())));
    let ready = Readiness::new(3);
    let (tx, mut rx) = mpsc::channel(1024);
    let scope = WatchScope {
        namespaces: vec!["agents".into()],
        job_selector: "agents.proompteng.ai/agent-run".into(),
    };
    let tasks = spawn_watches(client(addr), &scope, tx, metrics, ready.clone());

    let mut jobs = Vec::new();
    let mut all = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut relists = 0;
    while relists < 2 {
        let obs = tokio::time::timeout_at(deadline, rx.recv()).await.expect("observations in time").unwrap();
        if matches!(obs.change, Change::RelistEnd { kind: Kind::Job, .. }) {
            relists += 1;
            if relists == 1 {
                api2.update(JOBS, |c| {
                    c.items = vec![job("other-job", "job-b", 15, json!({}))];
                    c.resource_version = 30;
                });
            }
        }
        let is_job = match &obs.change {
            Change::Upsert(o) | Change::Delete(o) => o.kind() == Kind::Job,
            Change::RelistBegin { kind, .. } | Change::RelistEnd { kind, .. } => *kind == Kind::Job,
        };
        if is_job {
            jobs.push(describe(&obs));
        }
        all.push(obs);
    }
    for t in tasks {
        t.abort();
    }
    assert!(ready.is_ready());
    assert_eq!(
        jobs,
        vec![
            // Announced before any watch starts, then begun again by the watcher's own first list.
            "relist Job",
            "relist Job",
            "upsert Job job-a",
            "relisted Job",
            "upsert Job job-b",
            "relist Job",
            "upsert Job job-b",
            "relisted Job"
        ],
        "the malformed Job is skipped and the watch goes on"
    );
    let watches = api.requests_to(JOBS).into_iter().filter(|r| r.contains("watch=true")).collect::<Vec<_>>();
    assert!(watches[0].contains("resourceVersion=10"), "{watches:?}");
    assert!(watches[1].contains("resourceVersion=20"), "resumes from the bookmark: {watches:?}");
    assert!(
        watches.iter().all(|w| w.contains("labelSelector=agents.proompteng.ai%2Fagent-run")),
        "{watches:?}"
    );

    // The tracker finds job-a gone in the relist, time unknown, before any collection.
    let mut tracker = Tracker::new(TrackerConfig { settle_ms: 0, ..TrackerConfig::default() });
    let mut facts = Vec::new();
    for mut obs in all {
        obs.at = Ts(1_787_227_300_000);
        if let Some(input) = upstream::input(&obs, &UpstreamConfig::default()) {
            facts.extend(tracker.apply(input));
        }
    }
    facts.extend(tracker.flush());
    let gone: Vec<_> = facts
        .iter()
        .filter_map(|e| match &e.fact {
            Fact::JobGone { job, before_collection, deleted, .. } => {
                Some((job.uid.to_string(), *before_collection, deleted.source))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        gone,
        vec![("job-a".into(), true, agentrun_lifecycle_exporter::engine::TimeSource::UnknownGap)]
    );
}

#[test]
fn watch_binary_becomes_ready_and_counts_events() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = FakeApi::default();
    let addr = rt.block_on(async {
        api.set(RUNS, vec![run()], 10, vec![]);
        api.set(JOBS, vec![job("r-job", "job-a", 8, finished())], 10, vec![]);
        api.set(PODS, vec![], 10, vec![]);
        api.start().await
    });
    let dir = std::env::temp_dir().join(format!("agentrun-watch-{}", std::process::id()));
    let kubeconfig = support::fake_apiserver::kubeconfig(addr, &dir, "agents");
    let metrics_addr = format!("127.0.0.1:{}", support::free_port());
    let mut child = support::exporter()
        .args(["watch", "--metrics-addr", &metrics_addr])
        .env("KUBECONFIG", &kubeconfig)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut body = String::new();
    for _ in 0..100 {
        if let Ok((200, _)) = support::http_get(&metrics_addr, "/readyz") {
            body = support::http_get(&metrics_addr, "/metrics").unwrap().1;
            if body.contains("agentrun_job_awaiting_collection{namespace=\"agents\"} 1") {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        body.contains("agentrun_exporter_watch_events_total{resource=\"jobs\",type=\"relisted\"} 1"),
        "{body}"
    );
    assert!(body.contains("agentrun_exporter_watch_errors_total{resource=\"pods\"} 0"), "{body}");
    assert!(body.contains("agentrun_job_awaiting_collection{namespace=\"agents\"} 1"), "{body}");
    // The default namespace is the kubeconfig context's.
    assert!(api.requests.lock().unwrap().iter().any(|r| r.starts_with(JOBS)));
}

/// `record` writes what the watches see as JSON Lines with `observedAt`, narrowed (no env values), and
/// `replay` reads it back.
#[test]
fn record_writes_what_replay_reads() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = FakeApi::default();
    let mut leaky = job("r-job", "job-a", 8, finished());
    leaky["spec"]["template"] = json!({"spec": {"containers": [{"name": "agent-runner", "env": [{"name": "TOKEN", "value": "s3cr3t"}]}]}});
    let mut collected = run();
    collected["status"]["phase"] = json!("Succeeded");
    collected["status"]["updatedAt"] = json!("2026-08-20T12:01:02.250Z");
    collected["status"]["conditions"] = json!([{"type": "Succeeded", "status": "True", "reason": "Completed", "lastTransitionTime": "2026-08-20T12:01:02.249Z"}]);
    let addr = rt.block_on(async {
        api.set(RUNS, vec![collected], 10, vec![]);
        api.set(JOBS, vec![leaky], 10, vec![]);
        api.set(PODS, vec![], 10, vec![]);
        api.start().await
    });
    let dir = std::env::temp_dir().join(format!("agentrun-record-{}", std::process::id()));
    let kubeconfig = support::fake_apiserver::kubeconfig(addr, &dir, "agents");
    let out = dir.join("capture.jsonl");
    let mut child = support::exporter()
        .args(["record", "--out"])
        .arg(&out)
        .env("KUBECONFIG", &kubeconfig)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(100));
        if std::fs::read_to_string(&out).unwrap_or_default().lines().count() >= 2 {
            break;
        }
    }
    let _ = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "record exits 0 on SIGTERM: {status}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert!(v["observedAt"].as_str().is_some_and(|t| t.ends_with('Z')), "{line}");
        assert!(v["type"] == "MODIFIED" && v["object"]["kind"].is_string(), "{line}");
    }
    assert!(!text.contains("s3cr3t"));
    let replayed = support::exporter()
        .args(["replay", "--format", "json"])
        .arg(&out)
        .env("OTEL_TRACES_EXPORTER", "none")
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&replayed.stdout);
    assert!(replayed.status.success());
    assert!(
        summary.contains(r#""name":"r","uid":"run-uid","runtime":"job","outcome":"succeeded""#),
        "{summary}"
    );
}

//! The objects the sidecar benchmarks serve: full AgentRuns, Jobs and Pods as the API server returns them
//! (managedFields, env, a last-applied annotation), one running Job and Pod per run, and the watch events
//! that finish a run.

use agentrun_lifecycle_exporter::{
    engine::Ts,
    upstream::{self, objects},
};
use serde_json::{Value, json};

pub const RUNS: &str = "/apis/agents.proompteng.ai/v1alpha1/namespaces/agents/agentruns";
pub const JOBS: &str = "/apis/batch/v1/namespaces/agents/jobs";
pub const PODS: &str = "/api/v1/namespaces/agents/pods";

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

/// The AgentRun, its running Job and its running Pod, for run number `i`.
pub fn run_objects(i: usize) -> [Value; 3] {
    let run = format!("codex-run-{i:05}");
    let run_uid = format!("6f1c2a9e-3b7d-4c1e-9a55-{i:012}");
    let job_uid = format!("9b3e7f42-1c6a-4d8e-b2f0-{i:012}");
    let pod_uid = format!("2d4f6a8c-0e1a-4b3c-9d5e-{i:012}");
    let labels = json!({"agents.proompteng.ai/agent-run": run, "agents.proompteng.ai/agent": "codex-agent",
                        "agents.proompteng.ai/provider": "codex", "agents.proompteng.ai/implementation": "codex-impl-sample"});
    let run_obj = json!({"apiVersion": "agents.proompteng.ai/v1alpha1", "kind": "AgentRun",
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
                                  {"type": "InProgress", "status": "True", "reason": "Running", "message": "", "lastTransitionTime": "2026-08-20T12:00:01.411Z"}]}});
    let job_obj = json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": format!("{run}-job"), "namespace": "agents", "uid": job_uid, "resourceVersion": "101",
                     "creationTimestamp": "2026-08-20T12:00:01Z", "labels": labels, "managedFields": managed_fields(),
                     "ownerReferences": [{"apiVersion": "agents.proompteng.ai/v1alpha1", "kind": "AgentRun", "name": run, "uid": run_uid}]},
        "spec": {"backoffLimit": 0, "template": {"spec": {"containers": [{"name": "agent-runner", "image": "runner:1", "env": env()}]}}},
        "status": {"active": 1, "ready": 1, "startTime": "2026-08-20T12:00:01Z"}});
    let pod_obj = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{run}-job-7xq2m"), "namespace": "agents", "uid": pod_uid, "resourceVersion": "102",
                     "creationTimestamp": "2026-08-20T12:00:01Z", "labels": labels, "managedFields": managed_fields(),
                     "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": format!("{run}-job"), "uid": job_uid, "controller": true, "blockOwnerDeletion": true}],
                     "finalizers": ["batch.kubernetes.io/job-tracking"]},
        "spec": {"nodeName": "worker-3", "containers": [{"name": "agent-runner", "image": "runner:1", "env": env()}]},
        "status": {"phase": "Running", "containerStatuses": [{"name": "agent-runner", "ready": true, "state": {"running": {"startedAt": "2026-08-20T12:00:09Z"}}}]}});
    [run_obj, job_obj, pod_obj]
}

pub fn objects(n: usize) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let (mut runs, mut jobs, mut pods) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let [r, j, p] = run_objects(i);
        runs.push(r);
        jobs.push(j);
        pods.push(p);
    }
    (runs, jobs, pods)
}

/// The same objects serialized, for the fake API server's `set_raw`.
pub fn objects_raw(n: usize) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (mut runs, mut jobs, mut pods) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let [r, j, p] = run_objects(i);
        runs.push(r.to_string());
        jobs.push(j.to_string());
        pods.push(p.to_string());
    }
    (runs, jobs, pods)
}

/// The three MODIFIED events that finish run `i` as the cluster writes them: its Pod terminates, its Job
/// completes, and the controller marks the AgentRun succeeded. Each is the full object with its status
/// written by the upstream shapes. Returns (collection, event).
pub fn finish_events(i: usize) -> [(&'static str, Value); 3] {
    let [mut run, mut job, mut pod] = run_objects(i);
    let at = Ts(1_787_227_260_000);
    let mut p: objects::Pod = serde_json::from_value(pod.clone()).expect("pod projection");
    let mut j: objects::Job = serde_json::from_value(job.clone()).expect("job projection");
    let mut r: objects::AgentRun = serde_json::from_value(run.clone()).expect("run projection");
    upstream::pod_terminated(&mut p, 0, at);
    upstream::job_finished(&mut j, false, at);
    upstream::collected_job_runtime(&mut r, &j, at);
    pod["status"] = serde_json::to_value(&p.status).unwrap();
    job["status"] = serde_json::to_value(&j.status).unwrap();
    run["status"] = serde_json::to_value(&r.status).unwrap();
    for o in [&mut pod, &mut job, &mut run] {
        o["metadata"]["resourceVersion"] = json!("200");
    }
    let ev = |o: Value| json!({"type": "MODIFIED", "object": o});
    [(PODS, ev(pod)), (JOBS, ev(job)), (RUNS, ev(run))]
}

//! End-to-end scenarios against the real Kubernetes control plane (etcd, kube-apiserver, the real Job,
//! TTL-after-finished and garbage-collector controllers, kube-scheduler, kwok as the node), with the exporter
//! sending traces to a real Jaeger and scraped by a real Prometheus that evaluates the alert rules. Jaeger and
//! Prometheus are queried only through their HTTP APIs.
//!
//! These tests need the test bed and are run by `tests/e2e/run.sh` (`cargo test --test e2e -- --ignored`);
//! without it they fail, saying so.

mod support;

use std::{collections::BTreeSet, process::Command, time::Duration};

use agentrun_lifecycle_exporter::engine::facts::Runtime;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use support::{
    spans::{FlatSpan, check_traces, names},
    standin::{self, Attempt, Plan, StandIn, TtlStyle},
    testbed::{Bed, JobLog, job_facts, watch_jobs},
};

async fn setup(ns: &str) -> (Bed, Client, JobLog, tokio::task::JoinHandle<()>) {
    let bed = Bed::from_env();
    let client = Client::try_default().await.expect("the test bed's KUBECONFIG");
    standin::wait_crd(&client).await.unwrap();
    standin::create_namespace(&client, ns).await.unwrap();
    let (log, task) = watch_jobs(client.clone(), ns);
    (bed, client, log, task)
}

async fn wait_gone(log: &JobLog, job: &str) {
    for _ in 0..240 {
        if job_facts(log, job).gone {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the TTL controller never deleted {job}");
}

fn span<'a>(spans: &'a [FlatSpan], name: &str, job: Option<&str>) -> &'a FlatSpan {
    spans
        .iter()
        .find(|s| {
            s.name == name && job.is_none_or(|j| s.attrs.get("k8s.job.name").map(String::as_str) == Some(j))
        })
        .unwrap_or_else(|| panic!("no {name} span for {job:?}"))
}

fn ns_of(t_ms: i64) -> u64 {
    t_ms as u64 * 1_000_000
}

fn has_all(spans: &[FlatSpan], wanted: &[&str]) -> bool {
    let have = names(spans);
    wanted.iter().all(|w| have.contains(*w))
}

/// Scenario 1: `job` runtime, success, TTL patched on after collection; the real TTL controller deletes the
/// Job and `job.ttl` ends at that deletion.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the end-to-end test bed: run tests/e2e/run.sh"]
async fn s1_job_runtime_success_ttl_after_collection() {
    let ns = "e2e-s1-job";
    let (bed, client, log, watch) = setup(ns).await;
    let plan = Plan {
        name: "codex-run-demo".into(),
        runtime: Runtime::Job,
        steps: vec![vec![Attempt { run_seconds: 3.0, exit_code: 0 }]],
        ttl: TtlStyle::AfterCollection(8),
        collect_delay: Duration::from_millis(1500),
    };
    let outcome = StandIn::new(client, ns).run(&plan).await.unwrap();
    assert_eq!(outcome.phase, "Succeeded");
    let job = &outcome.jobs[0];
    assert_eq!(job, "codex-run-demo-job");
    wait_gone(&log, job).await;

    let wanted = ["agentrun", "job.submit", "job.pending", "job.run", "pod.run", "job.collect", "job.ttl"];
    let spans = bed.wait_trace(&outcome.uid, "the whole lifecycle", |s| has_all(s, &wanted)).await;
    assert_eq!(check_traces(&spans), Ok(1));
    assert_eq!(names(&spans), wanted.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>());
    let facts = job_facts(&log, job);
    let root = span(&spans, "agentrun", None);
    assert_eq!(root.attrs["agentrun.name"], "codex-run-demo");
    assert_eq!(root.attrs["agentrun.phase"], "Succeeded");
    assert_eq!(root.attrs["k8s.namespace.name"], ns);
    assert_eq!(root.status, 1);
    let run = span(&spans, "job.run", Some(job));
    assert_eq!(run.attrs["k8s.job.uid"], facts.uid);
    assert_eq!(run.parent, root.span_id);
    assert_eq!(run.end_ns, ns_of(facts.finished.unwrap().0), "job.run ends at the Complete condition");
    let ttl = span(&spans, "job.ttl", Some(job));
    assert_eq!(ttl.end_ns, ns_of(facts.deletion.unwrap().0), "job.ttl ends at the TTL controller's deletion");
    assert_eq!(ttl.start_ns, run.end_ns);
    assert_eq!(ttl.attrs["agentrun.job.ttl_seconds"], "8");
    assert_eq!(ttl.attrs["agentrun.job.ttl_applied"], "after_collection");
    assert_eq!(ttl.attrs["agentrun.job.deleted_before_collection"], "false");
    assert_eq!(facts.ttl_at_creation, Some(false), "created without a TTL, as the current controller does");
    let collect = span(&spans, "job.collect", Some(job));
    let delay: f64 = collect.attrs["agentrun.job.collection_delay_seconds"].parse().unwrap();
    assert!((1.0..8.0).contains(&delay), "{delay}");
    let pod = span(&spans, "pod.run", None);
    assert_eq!(pod.parent, run.span_id);
    assert_eq!(pod.attrs["k8s.node.name"], "testbed-kwok-node");

    let q = |m: &str, extra: &str| format!("sum({m}{{namespace=\"{ns}\"{extra}}})");
    bed.wait_prom(&q("agentrun_job_collection_delay_seconds_count", ",outcome=\"succeeded\""), |v| v >= 1.0)
        .await;
    let margin = bed
        .wait_prom(&q("agentrun_job_ttl_margin_seconds_sum", ",ttl_applied=\"after_collection\""), |v| {
            v != 0.0
        })
        .await;
    assert!((0.0..8.0).contains(&margin), "TTL margin {margin}");
    bed.wait_prom(&q("agentrun_job_ttl_deletion_lag_seconds_count", ""), |v| v >= 1.0).await;
    bed.wait_prom(&q("agentrun_runs_total", ",outcome=\"succeeded\""), |v| v == 1.0).await;
    bed.wait_prom(&q("agentrun_job_deleted_before_collection_total", ""), |v| v == 0.0).await;
    watch.abort();
}

/// Scenario 2: `workflow` runtime, two steps, the second retried once.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the end-to-end test bed: run tests/e2e/run.sh"]
async fn s2_workflow_with_a_retried_step() {
    let ns = "e2e-s2-workflow";
    let (bed, client, log, watch) = setup(ns).await;
    let plan = Plan {
        name: "codex-run-sample".into(),
        runtime: Runtime::Workflow,
        steps: vec![
            vec![Attempt { run_seconds: 2.0, exit_code: 0 }],
            vec![Attempt { run_seconds: 2.0, exit_code: 1 }, Attempt { run_seconds: 2.0, exit_code: 0 }],
        ],
        ttl: TtlStyle::AfterCollection(6),
        collect_delay: Duration::from_millis(1000),
    };
    let outcome = StandIn::new(client, ns).run(&plan).await.unwrap();
    assert_eq!(outcome.phase, "Succeeded");
    assert_eq!(
        outcome.jobs,
        vec![
            "codex-run-sample-step-1-attempt-1",
            "codex-run-sample-step-2-attempt-1",
            "codex-run-sample-step-2-attempt-2"
        ]
    );
    for job in &outcome.jobs {
        wait_gone(&log, job).await;
    }
    let spans = bed
        .wait_trace(&outcome.uid, "every Job's deletion", |s| {
            s.iter().filter(|x| x.name == "job.ttl").count() == 3
                && has_all(s, &["agentrun", "workflow.step"])
        })
        .await;
    assert_eq!(check_traces(&spans), Ok(1));
    let steps: Vec<&FlatSpan> = spans.iter().filter(|s| s.name == "workflow.step").collect();
    assert_eq!(steps.len(), 2);
    let step2 = steps.iter().find(|s| s.attrs["agentrun.step.index"] == "2").unwrap();
    assert_eq!(step2.attrs["agentrun.step"], "implement");
    for job in &outcome.jobs {
        let submit = span(&spans, "job.submit", Some(job));
        let run = span(&spans, "job.run", Some(job));
        assert!(steps.iter().any(|s| s.span_id == submit.parent), "{job}: job.* hang under their step");
        assert_eq!(run.end_ns, ns_of(job_facts(&log, job).finished.unwrap().0));
        assert_eq!(
            span(&spans, "job.ttl", Some(job)).end_ns,
            ns_of(job_facts(&log, job).deletion.unwrap().0)
        );
    }
    let failed = span(&spans, "job.run", Some("codex-run-sample-step-2-attempt-1"));
    assert_eq!(failed.status, 2);
    assert_eq!(failed.attrs["agentrun.attempt"], "1");
    assert_eq!(failed.attrs["agentrun.job.condition_reason"], "BackoffLimitExceeded");
    // Upstream creates step 2's Job before the write that collects step 1: its submit starts at step 1's end.
    let next = span(&spans, "job.submit", Some("codex-run-sample-step-2-attempt-1"));
    let step1_run = span(&spans, "job.run", Some("codex-run-sample-step-1-attempt-1"));
    assert_eq!(next.start_ns, step1_run.end_ns, "step 2's submit starts when step 1's Job finished");
    assert!(step2.start_ns <= next.start_ns, "the step span holds its submit");
    let retried = span(&spans, "job.submit", Some("codex-run-sample-step-2-attempt-2"));
    assert_eq!(retried.attrs["agentrun.attempt"], "2");
    let retry_collect = span(&spans, "job.collect", Some("codex-run-sample-step-2-attempt-1"));
    assert_eq!(retried.start_ns, retry_collect.end_ns, "attempt 2's submit starts at the Retrying write");
    assert_eq!(retry_collect.attrs["agentrun.job.outcome"], "failed");

    let q =
        format!("sum(agentrun_runs_total{{namespace=\"{ns}\",runtime=\"workflow\",outcome=\"succeeded\"}})");
    bed.wait_prom(&q, |v| v == 1.0).await;
    let q = format!(
        "sum(agentrun_job_collection_delay_seconds_count{{namespace=\"{ns}\",runtime=\"workflow\"}})"
    );
    bed.wait_prom(&q, |v| v == 3.0).await;
    let q = format!("sum(agentrun_job_phase_duration_seconds_count{{namespace=\"{ns}\",phase=\"run\"}})");
    bed.wait_prom(&q, |v| v == 3.0).await;
    watch.abort();
}

/// Scenario 3: a failing Job (the Pod exits 1, `backoffLimit: 0`).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the end-to-end test bed: run tests/e2e/run.sh"]
async fn s3_failing_job() {
    let ns = "e2e-s3-failure";
    let (bed, client, log, watch) = setup(ns).await;
    let plan = Plan {
        name: "codex-run-fails".into(),
        runtime: Runtime::Job,
        steps: vec![vec![Attempt { run_seconds: 2.0, exit_code: 1 }]],
        ttl: TtlStyle::AfterCollection(6),
        collect_delay: Duration::from_millis(1000),
    };
    let outcome = StandIn::new(client, ns).run(&plan).await.unwrap();
    assert_eq!((outcome.phase.as_str(), outcome.reason.as_deref()), ("Failed", Some("RunnerFailed")));
    wait_gone(&log, &outcome.jobs[0]).await;
    let spans = bed
        .wait_trace(&outcome.uid, "the failed run", |s| has_all(s, &["agentrun", "job.ttl", "pod.run"]))
        .await;
    assert_eq!(check_traces(&spans), Ok(1));
    let root = span(&spans, "agentrun", None);
    assert_eq!((root.status, root.attrs["agentrun.reason"].as_str()), (2, "RunnerFailed"));
    let run = span(&spans, "job.run", None);
    assert_eq!(run.status, 2);
    assert_eq!(run.attrs["agentrun.job.outcome"], "failed");
    let pod = span(&spans, "pod.run", None);
    assert_eq!((pod.status, pod.attrs["agentrun.container.exit_code"].as_str()), (2, "1"));
    assert_eq!(span(&spans, "job.collect", None).attrs["agentrun.job.outcome"], "failed");
    bed.wait_prom(&format!("sum(agentrun_runs_total{{namespace=\"{ns}\",outcome=\"failed\"}})"), |v| {
        v == 1.0
    })
    .await;
    bed.wait_prom(
        &format!("sum(agentrun_job_collection_delay_seconds_count{{namespace=\"{ns}\",outcome=\"failed\"}})"),
        |v| v == 1.0,
    )
    .await;
    watch.abort();
}

/// Scenario 4, the incident this exporter exists for: a TTL set at creation shorter than the collection delay. The
/// real TTL controller deletes the Job first, the stand-in writes `WorkflowJobMissing`; the exporter counts a
/// deletion before collection, the span shows it, the margin is negative, and the real Prometheus fires the
/// margin and deleted-before-collection alerts.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the end-to-end test bed: run tests/e2e/run.sh"]
async fn s4_ttl_shorter_than_collection_deletes_the_job_first() {
    let ns = "e2e-s4-incident";
    let (bed, client, log, watch) = setup(ns).await;
    let plan = Plan {
        name: "codex-run-incident".into(),
        runtime: Runtime::Workflow,
        steps: vec![vec![Attempt { run_seconds: 2.0, exit_code: 0 }]],
        ttl: TtlStyle::AtCreation(6),
        collect_delay: Duration::from_secs(14),
    };
    let alerts = {
        let bed = Bed::from_env();
        let ns = ns.to_string();
        tokio::spawn(async move {
            let mut seen = BTreeSet::new();
            for _ in 0..160 {
                for (name, labels, annotations) in bed.firing_alerts().await {
                    if labels.get("namespace") == Some(&ns) {
                        assert!(
                            annotations.contains_key("runbook_url")
                                && annotations.contains_key("description")
                        );
                        seen.insert(format!(
                            "{name}/{}",
                            labels.get("severity").cloned().unwrap_or_default()
                        ));
                    }
                }
                if seen.contains("AgentRunJobDeletedBeforeCollection/critical") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            seen
        })
    };
    let outcome = StandIn::new(client, ns).run(&plan).await.unwrap();
    assert_eq!((outcome.phase.as_str(), outcome.reason.as_deref()), ("Failed", Some("WorkflowJobMissing")));
    let job = &outcome.jobs[0];
    let facts = job_facts(&log, job);
    assert!(facts.gone && facts.ttl_at_creation == Some(true), "{facts:?}");

    let spans = bed
        .wait_trace(&outcome.uid, "the deletion before collection", |s| {
            has_all(s, &["agentrun", "workflow.step", "job.ttl", "job.collect"])
        })
        .await;
    assert_eq!(check_traces(&spans), Ok(1));
    let ttl = span(&spans, "job.ttl", Some(job));
    assert_eq!(ttl.attrs["agentrun.job.deleted_before_collection"], "true");
    assert_eq!(ttl.attrs["agentrun.job.ttl_applied"], "at_creation");
    assert_eq!(ttl.status, 2);
    assert_eq!(ttl.end_ns, ns_of(facts.deletion.unwrap().0));
    assert!(ttl.events.iter().any(|(e, t)| e == "job.deleted_before_collection" && *t == ttl.end_ns));
    let collect = span(&spans, "job.collect", Some(job));
    assert_eq!(collect.attrs["agentrun.job.outcome"], "missing");
    let margin: f64 = collect.attrs["agentrun.job.ttl_margin_seconds"].parse().unwrap();
    assert!(margin < 0.0, "margin {margin}");
    let root = span(&spans, "agentrun", None);
    assert_eq!(root.attrs["agentrun.reason"], "WorkflowJobMissing");
    assert!(root.events.iter().any(|(e, _)| e == "agentrun.job_missing"));
    let step = span(&spans, "workflow.step", None);
    assert_eq!(step.status, 2);

    let q = |m: &str, extra: &str| format!("sum({m}{{namespace=\"{ns}\"{extra}}})");
    bed.wait_prom(&q("agentrun_job_deleted_before_collection_total", ""), |v| v == 1.0).await;
    bed.wait_prom(&q("agentrun_job_ttl_margin_exceeded_total", ",ttl_applied=\"at_creation\""), |v| v == 1.0)
        .await;
    bed.wait_prom(&q("agentrun_job_missing_total", ",reason=\"WorkflowJobMissing\""), |v| v == 1.0).await;
    let sum = bed.wait_prom(&q("agentrun_job_ttl_margin_seconds_sum", ""), |v| v != 0.0).await;
    assert!(sum < 0.0, "margin sum {sum}");
    let seen = alerts.await.unwrap();
    assert!(seen.contains("AgentRunJobTTLMarginLow/critical"), "firing: {seen:?}");
    assert!(seen.contains("AgentRunJobDeletedBeforeCollection/critical"), "firing: {seen:?}");
    watch.abort();
}

/// Scenario 5: the exporter restarts in the middle of a run; the run's trace is still one trace with every
/// span.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the end-to-end test bed: run tests/e2e/run.sh"]
async fn s5_exporter_restart_mid_run() {
    let ns = "e2e-s5-restart";
    let (bed, client, log, watch) = setup(ns).await;
    let plan = Plan {
        name: "codex-run-restart".into(),
        runtime: Runtime::Job,
        steps: vec![vec![Attempt { run_seconds: 8.0, exit_code: 0 }]],
        ttl: TtlStyle::AfterCollection(8),
        collect_delay: Duration::from_millis(1500),
    };
    let run = {
        let client = client.clone();
        let plan = plan.clone();
        tokio::spawn(async move { StandIn::new(client, ns).run(&plan).await.unwrap() })
    };
    // Stop it while the Pod runs, start it again (over OTLP/HTTP this time) after the Job finished and was
    // collected.
    for _ in 0..100 {
        if log.lock().unwrap().values().any(|j| !j.uid.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::task::block_in_place(|| bed.exporter(&["stop"]));
    let outcome = run.await.unwrap();
    assert_eq!(outcome.phase, "Succeeded");
    tokio::task::block_in_place(|| bed.exporter(&["start", "http/protobuf"]));
    let job = &outcome.jobs[0];
    wait_gone(&log, job).await;
    let wanted = ["agentrun", "job.submit", "job.pending", "job.run", "pod.run", "job.collect", "job.ttl"];
    let spans = bed.wait_trace(&outcome.uid, "every span after the restart", |s| has_all(s, &wanted)).await;
    // Spans the first process had sent are sent again with the same ids and content; any copy Jaeger keeps
    // must be identical.
    let mut by_id: std::collections::BTreeMap<&str, &FlatSpan> = Default::default();
    for s in &spans {
        if let Some(previous) = by_id.insert(&s.span_id, s) {
            assert_eq!(previous, s, "two different spans with one id");
        }
    }
    let unique: Vec<FlatSpan> = by_id.values().map(|s| (*s).clone()).collect();
    assert_eq!(check_traces(&unique), Ok(1), "still one trace");
    assert_eq!(names(&unique), wanted.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>());
    assert_eq!(unique.len(), wanted.len(), "one span of each, whatever the restart re-sent");
    let facts = job_facts(&log, job);
    assert_eq!(span(&unique, "job.ttl", Some(job)).end_ns, ns_of(facts.deletion.unwrap().0));
    watch.abort();
}

/// The controller's writes (creations, status phases per step, TTL patches) in etcd's order, from a `record` of
/// `plan` run by the stand-in in namespace `ns`.
async fn stand_in_writes(client: Client, ns: &str, plan: &Plan) -> Vec<String> {
    let capture = std::env::temp_dir().join(format!("agentrun-e2e-{ns}-{}.jsonl", std::process::id()));
    let mut record = std::process::Command::new(env!("CARGO_BIN_EXE_agentrun-lifecycle-exporter"))
        .args(["record", "--namespaces", ns, "--out"])
        .arg(&capture)
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("start record");
    // The watches start from empty lists; give them time to be established before the first write.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let outcome = StandIn::new(client, ns).run(plan).await.unwrap();
    assert_eq!(outcome.phase, "Succeeded");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = std::process::Command::new("kill").arg("-INT").arg(record.id().to_string()).status();
    assert!(record.wait().unwrap().success(), "record exits cleanly on SIGINT");
    let writes = support::writes::write_sequence_of_file(&capture.to_string_lossy());
    let _ = std::fs::remove_file(&capture);
    writes
}

fn recorded_writes(scenario: &str) -> Vec<String> {
    let path = format!("{}/tests/fixtures/upstream/{scenario}.jsonl", env!("CARGO_MANIFEST_DIR"));
    support::writes::write_sequence_of_file(&path)
}

/// Scenario 6: the stand-in writes what the real controller wrote in its recordings (`tests/fixtures/upstream`),
/// in the same order: a job run, and a workflow of three steps (each next step's Job before the one status
/// write that collects the step before it, TTL patches after that write). The rest of the suite relies on it.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the end-to-end test bed: run tests/e2e/run.sh"]
async fn s6_stand_in_writes_like_the_real_controller() {
    for (scenario, runtime, steps) in
        [("job-success", Runtime::Job, 1), ("workflow-three-steps", Runtime::Workflow, 3)]
    {
        let ns = format!("e2e-s6-{scenario}");
        let (_bed, client, _log, watch) = setup(&ns).await;
        let plan = Plan {
            name: scenario.into(),
            runtime,
            steps: vec![vec![Attempt { run_seconds: 2.0, exit_code: 0 }]; steps],
            ttl: TtlStyle::AfterCollection(30),
            collect_delay: Duration::from_millis(300),
        };
        let writes = stand_in_writes(client, &ns, &plan).await;
        assert_eq!(
            writes,
            recorded_writes(scenario),
            "{scenario}: the stand-in's writes vs the real controller's"
        );
        watch.abort();
    }
}

/// A run's trace after a fault: every span of every Job (submit, pending, run, pod, collect, TTL), a step span
/// per step, one root; copies re-sent after a restart identical to the first; one trace.
async fn assert_whole_trace(bed: &Bed, log: &JobLog, uid: &str, jobs: &[String], steps: usize) {
    for job in jobs {
        wait_gone(log, job).await;
    }
    let per_job = ["job.submit", "job.pending", "job.run", "pod.run", "job.collect", "job.ttl"];
    let complete = |s: &[FlatSpan]| {
        let unique: BTreeSet<&str> = s.iter().map(|x| x.span_id.as_str()).collect();
        unique.len() == 1 + steps + per_job.len() * jobs.len()
    };
    let spans = bed.wait_trace(uid, "every span of the run", complete).await;
    let mut by_id: std::collections::BTreeMap<&str, &FlatSpan> = Default::default();
    for s in &spans {
        if let Some(previous) = by_id.insert(&s.span_id, s) {
            assert_eq!(previous, s, "two different spans with one id");
        }
    }
    let unique: Vec<FlatSpan> = by_id.values().map(|s| (*s).clone()).collect();
    assert_eq!(check_traces(&unique), Ok(1), "one trace, every child inside its parent");
    for job in jobs {
        for name in per_job {
            span(&unique, name, Some(job));
        }
    }
    assert_eq!(unique.iter().filter(|s| s.name == "workflow.step").count(), steps);
    assert_eq!(unique.iter().filter(|s| s.name == "agentrun").count(), 1);
}

fn fault(what: &str) {
    let state = std::env::var("TESTBED_STATE_DIR").expect("the test bed's env");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/testbed/fault.sh");
    let status = std::process::Command::new(script).args([state.as_str(), what]).status().expect("fault.sh");
    assert!(status.success(), "fault.sh {what} failed");
}

async fn wait_jobs(log: &JobLog, n: usize) {
    for _ in 0..200 {
        if log.lock().unwrap().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("fewer than {n} Jobs appeared");
}

fn spawn_run(client: &Client, ns: &'static str, plan: Plan) -> tokio::task::JoinHandle<standin::Outcome> {
    let client = client.clone();
    tokio::spawn(async move { StandIn::new(client, ns).run(&plan).await.unwrap() })
}

fn two_step_plan(name: &str, run_seconds: f64) -> Plan {
    Plan {
        name: name.into(),
        runtime: Runtime::Workflow,
        steps: vec![vec![Attempt { run_seconds, exit_code: 0 }]; 2],
        ttl: TtlStyle::AfterCollection(6),
        collect_delay: Duration::from_millis(500),
    }
}

/// Scenario 7: kube-apiserver restarts in the middle of runs, once as is (the watches resume where they
/// were) and once after etcd was compacted (they resume with `410 Gone` and relist). Nothing is lost: every
/// run has one whole trace, and the counters count each run once.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the end-to-end test bed: run tests/e2e/run.sh"]
async fn s7_apiserver_restart_and_etcd_compaction_mid_run() {
    let ns = "e2e-s7-apiserver";
    let (bed, client, log, watch) = setup(ns).await;
    let job_plan = Plan {
        name: "codex-run-restarts".into(),
        runtime: Runtime::Job,
        steps: vec![vec![Attempt { run_seconds: 25.0, exit_code: 0 }]],
        ttl: TtlStyle::AfterCollection(6),
        collect_delay: Duration::from_millis(500),
    };
    let job_run = spawn_run(&client, ns, job_plan);
    let wf_run = spawn_run(&client, ns, two_step_plan("codex-wf-restarts", 10.0));
    wait_jobs(&log, 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| fault("restart-apiserver"));
    let relisted = "sum(agentrun_exporter_watch_events_total{type=\"relisted\"})";
    // Whatever the first restart caused has been scraped before the baseline is read.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = bed.prom(relisted).await.first().map_or(0.0, |(_, v)| *v);
    // Step 2's Job exists by now or soon: compact, then restart, while it runs.
    wait_jobs(&log, 3).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| {
        fault("compact-etcd");
        fault("restart-apiserver");
    });
    let (job_outcome, wf_outcome) = (job_run.await.unwrap(), wf_run.await.unwrap());
    assert_eq!((job_outcome.phase.as_str(), wf_outcome.phase.as_str()), ("Succeeded", "Succeeded"));
    bed.wait_prom(relisted, |v| v > before).await;
    assert_whole_trace(&bed, &log, &job_outcome.uid, &job_outcome.jobs, 0).await;
    assert_whole_trace(&bed, &log, &wf_outcome.uid, &wf_outcome.jobs, 2).await;
    let runs = format!("sum(agentrun_runs_total{{namespace=\"{ns}\",outcome=\"succeeded\"}})");
    bed.wait_prom(&runs, |v| v == 2.0).await;
    let collected = format!("sum(agentrun_job_collection_delay_seconds_count{{namespace=\"{ns}\"}})");
    bed.wait_prom(&collected, |v| v == 3.0).await;
    watch.abort();
}

/// Scenario 8: the exporter reaches the API server through a proxy that cuts every connection five times
/// while a workflow runs; its watches reconnect and nothing is lost.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the end-to-end test bed: run tests/e2e/run.sh"]
async fn s8_watch_connections_cut_by_a_proxy() {
    let ns = "e2e-s8-proxy";
    let (bed, client, log, watch) = setup(ns).await;
    let url = std::env::var("TESTBED_APISERVER_URL").unwrap();
    let target: std::net::SocketAddr = url.trim_start_matches("https://").parse().unwrap();
    let proxy = support::proxy::Proxy::start(target).await;
    let kubeconfig = std::fs::read_to_string(std::env::var("KUBECONFIG").unwrap()).unwrap();
    let proxied = std::env::temp_dir().join(format!("agentrun-e2e-proxy-{}.kubeconfig", std::process::id()));
    std::fs::write(&proxied, kubeconfig.replace(&url, &format!("https://{}", proxy.addr))).unwrap();
    let restart = |kubeconfig: Option<&std::path::Path>| {
        let mut cmd =
            std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/exporter.sh"));
        cmd.args(["start", "grpc"]).env("EXPORTER_BIN", env!("CARGO_BIN_EXE_agentrun-lifecycle-exporter"));
        match kubeconfig {
            Some(k) => cmd.env("EXPORTER_KUBECONFIG", k),
            None => cmd.env_remove("EXPORTER_KUBECONFIG"),
        };
        assert!(cmd.status().unwrap().success(), "exporter.sh start");
    };
    tokio::task::block_in_place(|| restart(Some(&proxied)));
    let run = spawn_run(&client, ns, two_step_plan("codex-wf-cuts", 6.0));
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        proxy.cut();
    }
    let outcome = run.await.unwrap();
    assert_eq!(outcome.phase, "Succeeded");
    assert_whole_trace(&bed, &log, &outcome.uid, &outcome.jobs, 2).await;
    let runs = format!("sum(agentrun_runs_total{{namespace=\"{ns}\",outcome=\"succeeded\"}})");
    bed.wait_prom(&runs, |v| v == 1.0).await;
    tokio::task::block_in_place(|| restart(None));
    let _ = std::fs::remove_file(&proxied);
    watch.abort();
}

/// Scenario 9: the exporter is killed (SIGKILL: no flush) while a run is in flight and started again: the
/// new process rebuilds its state from the objects and sends every span, with the same ids and content.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the end-to-end test bed: run tests/e2e/run.sh"]
async fn s9_exporter_killed_mid_run() {
    let ns = "e2e-s9-sigkill";
    let (bed, client, log, watch) = setup(ns).await;
    let run = spawn_run(&client, ns, two_step_plan("codex-wf-sigkill", 5.0));
    wait_jobs(&log, 2).await;
    tokio::task::block_in_place(|| bed.exporter(&["kill"]));
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| bed.exporter(&["start", "grpc"]));
    let outcome = run.await.unwrap();
    assert_eq!(outcome.phase, "Succeeded");
    assert_whole_trace(&bed, &log, &outcome.uid, &outcome.jobs, 2).await;
    // Counted once, by the process that saw it finish.
    let runs = format!("sum(agentrun_runs_total{{namespace=\"{ns}\",outcome=\"succeeded\"}})");
    bed.wait_prom(&runs, |v| v == 1.0).await;
    watch.abort();
}

/// One of two exporters following the controller's Lease, as the sidecars of two controller replicas are:
/// a host process with its pod's identity in the environment the chart gives it.
struct Sidecar {
    child: std::process::Child,
    addr: String,
}

impl Sidecar {
    fn start(pod: &str, ns: &str) -> Sidecar {
        let port = support::free_port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(format!(
            "{}/logs/s11-{pod}.log",
            std::env::var("TESTBED_STATE_DIR").unwrap()
        ))
        .unwrap();
        let child = support::exporter()
            .args([
                "watch",
                "--namespaces",
                ns,
                "--metrics-addr",
                &addr,
                "--settle",
                "3s",
                "--ttl-grace",
                "20s",
            ])
            .env("HOSTNAME", format!("agents-{pod}"))
            .env("AGENTS_POD_UID", format!("uid-{pod}"))
            .env("AGENTS_POD_NAMESPACE", ns)
            .env("OTEL_SERVICE_NAME", format!("e2e-s11-{pod}"))
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", std::env::var("JAEGER_OTLP_GRPC_ENDPOINT").unwrap())
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
            .env("OTEL_METRICS_EXPORTER", "none")
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the exporter");
        Sidecar { child, addr }
    }

    /// The sum of a metric's series in this exporter's /metrics (None when it does not answer).
    fn metric(&self, name: &str, filter: &str) -> Option<f64> {
        let (_, body) = support::http_get(&self.addr, "/metrics").ok()?;
        Some(
            body.lines()
                .filter(|l| {
                    l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(filter)
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum(),
        )
    }

    async fn wait_leader(&self, leads: bool) {
        for _ in 0..200 {
            if self.metric("agentrun_exporter_leader", "") == Some(if leads { 1.0 } else { 0.0 }) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the exporter on {} never showed leader={leads}", self.addr);
    }

    fn terminate(&self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
    }

    async fn wait_exit(&mut self, within: Duration) -> bool {
        let started = std::time::Instant::now();
        while started.elapsed() < within {
            if self.child.try_wait().unwrap().is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Holds, renews or releases the controller's Lease as upstream's leader election writes it.
async fn set_holder(leases: &Api<Lease>, holder: &str) {
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let spec = LeaseSpec {
        holder_identity: Some(holder.into()),
        lease_duration_seconds: Some(30),
        renew_time: Some(now.clone()),
        acquire_time: Some(now),
        ..LeaseSpec::default()
    };
    let lease = Lease {
        metadata: ObjectMeta { name: Some("agents-controller-leader".into()), ..ObjectMeta::default() },
        spec: Some(spec),
    };
    let patch = Patch::Apply(&lease);
    leases.patch("agents-controller-leader", &PatchParams::apply("e2e-s11").force(), &patch).await.unwrap();
}

/// A span's content, without who sent it.
fn content(s: &FlatSpan) -> FlatSpan {
    FlatSpan { service: String::new(), ..s.clone() }
}

/// Scenario 11: two exporters follow the controller's Lease. While one pod's controller holds it, only its
/// exporter exports and counts. That controller stops (it releases the Lease, as upstream does on SIGTERM)
/// in the middle of runs, nobody leads for a few seconds, then the other pod's controller takes the Lease:
/// its exporter sends what happened since the release. Every run has exactly one complete trace across the
/// two, equal to what the bed's own exporter sent; a span sent by both is identical; the counters of the two
/// add up to the runs. Then the new leader is stopped while it holds the Lease: it keeps exporting until the
/// Lease moves.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the end-to-end test bed: run tests/e2e/run.sh"]
async fn s11_two_exporters_follow_the_controller_lease() {
    let ns = "e2e-s11-leader";
    let (bed, client, log, watch) = setup(ns).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    set_holder(&leases, "agents-a_uid-a").await;
    let mut a = Sidecar::start("a", ns);
    let mut b = Sidecar::start("b", ns);
    a.wait_leader(true).await;
    b.wait_leader(false).await;

    let mut runs = Vec::new();
    for i in 0..4u32 {
        let plan = if i % 2 == 0 {
            Plan {
                name: format!("codex-lease-{i}"),
                runtime: Runtime::Job,
                steps: vec![vec![Attempt { run_seconds: 4.0 + 2.0 * f64::from(i), exit_code: 0 }]],
                ttl: TtlStyle::AfterCollection(5),
                collect_delay: Duration::from_millis(500),
            }
        } else {
            two_step_plan(&format!("codex-lease-{i}"), 3.0 + f64::from(i))
        };
        runs.push(spawn_run(&client, ns, plan));
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    wait_jobs(&log, 5).await;

    // Pod a's controller stops: it releases the Lease; its exporter stops exporting and counting.
    set_holder(&leases, "").await;
    a.wait_leader(false).await;
    let a_runs = a.metric("agentrun_runs_total", &format!("namespace=\"{ns}\"")).unwrap();
    let a_spans = a.metric("agentrun_exporter_spans_exported_total", "").unwrap();
    a.terminate();
    assert!(a.wait_exit(Duration::from_secs(20)).await, "a standby stops at once");
    // Nobody leads: what happens now is the next leader's to send.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let failover = std::time::Instant::now();
    set_holder(&leases, "agents-b_uid-b").await;
    b.wait_leader(true).await;
    println!("s11: Lease to pod b → its exporter leads in {:?}", failover.elapsed());

    let mut outcomes = Vec::new();
    for run in runs {
        outcomes.push(run.await.unwrap());
    }
    for outcome in &outcomes {
        assert_eq!(outcome.phase, "Succeeded");
        for job in &outcome.jobs {
            wait_gone(&log, job).await;
        }
        let per_job = 6;
        let steps = if outcome.jobs.len() > 1 { outcome.jobs.len() } else { 0 };
        let expected = 1 + steps + per_job * outcome.jobs.len();
        let followers = |s: &FlatSpan| s.service.starts_with("e2e-s11-");
        let spans = bed
            .wait_trace(&outcome.uid, "every span from the two exporters and the bed's own", |s| {
                let ids = |f: &dyn Fn(&FlatSpan) -> bool| {
                    s.iter().filter(|x| f(x)).map(|x| x.span_id.clone()).collect::<BTreeSet<_>>().len()
                };
                ids(&followers) == expected && ids(&|x| !followers(x)) == expected
            })
            .await;
        let mut by_id: std::collections::BTreeMap<String, FlatSpan> = Default::default();
        for s in spans.iter().filter(|s| followers(s)) {
            if let Some(previous) = by_id.insert(s.span_id.clone(), content(s)) {
                assert_eq!(previous, content(s), "{}: a span sent by both exporters differs", outcome.uid);
            }
        }
        let reference: std::collections::BTreeMap<String, FlatSpan> =
            spans.iter().filter(|s| !followers(s)).map(|s| (s.span_id.clone(), content(s))).collect();
        assert_eq!(by_id, reference, "{}: the two exporters' trace vs the bed's own exporter's", outcome.uid);
    }
    // Counted once, by one of the two.
    let total = outcomes.len() as f64;
    let mut b_runs = 0.0;
    for _ in 0..100 {
        b_runs = b.metric("agentrun_runs_total", &format!("namespace=\"{ns}\"")).unwrap();
        if a_runs + b_runs >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    b_runs = b.metric("agentrun_runs_total", &format!("namespace=\"{ns}\"")).unwrap_or(b_runs);
    println!("s11: runs counted by a {a_runs}, by b {b_runs}; spans exported by a {a_spans}");
    assert_eq!(a_runs + b_runs, total, "each run counted by exactly one exporter");
    assert!(a_runs < total && b_runs < total, "both exporters led while runs finished");

    // Pod b's controller gets SIGTERM while holding the Lease: its exporter keeps exporting until the Lease
    // moves, then stops.
    b.terminate();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(b.child.try_wait().unwrap().is_none(), "the leader waits for the Lease to be handed over");
    assert_eq!(b.metric("agentrun_exporter_leader", ""), Some(1.0));
    set_holder(&leases, "").await;
    assert!(b.wait_exit(Duration::from_secs(20)).await, "the leader stops once the Lease moved");
    watch.abort();
}

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
    // Step 2's submit starts at the write that collected step 1 (which every later status keeps).
    let next = span(&spans, "job.submit", Some("codex-run-sample-step-2-attempt-1"));
    let step1_collect = span(&spans, "job.collect", Some("codex-run-sample-step-1-attempt-1"));
    assert_eq!(next.start_ns, step1_collect.end_ns, "step 2's submit starts when step 1 was collected");
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

/// The stand-in controller program (`cargo build --example standin-controller`, which tests/e2e/run.sh does):
/// `STANDIN_CONTROLLER_BIN`, else the example beside this test binary.
fn standin_controller_bin() -> std::path::PathBuf {
    if let Ok(path) = std::env::var("STANDIN_CONTROLLER_BIN") {
        return path.into();
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(|deps| deps.parent()).unwrap().join("examples/standin-controller");
    assert!(bin.exists(), "{} is missing: cargo build --example standin-controller", bin.display());
    bin
}

/// One replica of the stand-in controller as a host process, as the chart would run it in a pod named
/// `pod` (HOSTNAME and AGENTS_POD_UID make upstream's identity); its log goes to `log`.
fn start_controller(pod: &str, ns: &str, log: &std::path::Path) -> std::process::Child {
    let mut cmd = std::process::Command::new(standin_controller_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("AGENTS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOSTNAME", pod)
        .env("AGENTS_POD_UID", format!("uid-{pod}"))
        .env("AGENTS_POD_NAMESPACE", ns)
        .env("AGENTS_CONTROLLER_NAMESPACES", ns)
        .env("PORT", support::free_port().to_string())
        // The election's ticks at debug: the test times its SIGTERM by them.
        .env("RUST_LOG", "info,standin_controller::leader=debug")
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start the stand-in controller")
}

fn signal(child: &std::process::Child, sig: &str) {
    let status =
        std::process::Command::new("kill").arg(format!("-{sig}")).arg(child.id().to_string()).status();
    assert!(status.unwrap().success(), "kill -{sig}");
}

/// The log lines of a controller that contain `what`, with their timestamps (the first field).
fn log_times(log: &std::path::Path, what: &str) -> Vec<(jiff::Timestamp, String)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(what))
        .filter_map(|l| Some((l.split_whitespace().next()?.parse().ok()?, l.to_string())))
        .collect()
}

fn lease_holder(lease: &k8s_openapi::api::coordination::v1::Lease) -> String {
    lease.spec.as_ref().and_then(|s| s.holder_identity.clone()).unwrap_or_default()
}

/// Scenario 10: two replicas of the stand-in controller (tests/standin/controller.rs) under upstream's leader
/// election, several runs of both runtimes in flight, the leader SIGTERMed in the middle. It releases the
/// Lease, the other replica takes it within the retry period and continues every run from the objects: every
/// run ends as it should, each Job is created once and TTL-patched, and each run's writes are, in order, the
/// ones the in-process driver makes for the same plan (run at the same time in another namespace).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the end-to-end test bed: run tests/e2e/run.sh"]
async fn s10_standin_controllers_follow_the_lease() {
    use k8s_openapi::api::coordination::v1::Lease;
    let ns = "e2e-s10-controllers";
    let reference_ns = "e2e-s10-driver";
    let (_bed, client, log, watch) = setup(ns).await;
    standin::create_namespace(&client, reference_ns).await.unwrap();
    let dir = std::env::temp_dir().join(format!("agentrun-e2e-s10-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let capture = dir.join("writes.jsonl");
    let mut record = std::process::Command::new(support::BIN)
        .args(["record", "--namespaces", &format!("{ns},{reference_ns}"), "--out"])
        .arg(&capture)
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("start record");

    let leases: kube::Api<Lease> = kube::Api::namespaced(client.clone(), ns);
    let leases = &leases;
    let holder = move || async move {
        leases.get_opt("agents-controller-leader").await.unwrap().map(|l| lease_holder(&l))
    };
    let (log_a, log_b) = (dir.join("controller-a.log"), dir.join("controller-b.log"));
    let mut a = start_controller("agents-controllers-a", ns, &log_a);
    for _ in 0..100 {
        if holder().await.as_deref() == Some("agents-controllers-a_uid-agents-controllers-a") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(holder().await.as_deref(), Some("agents-controllers-a_uid-agents-controllers-a"));
    let mut b = start_controller("agents-controllers-b", ns, &log_b);
    // b's first tick finds a's Lease held; record's watches are established.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(holder().await.as_deref(), Some("agents-controllers-a_uid-agents-controllers-a"));

    let ok = |s: f64| Attempt { run_seconds: s, exit_code: 0 };
    let plan = |name: &str, runtime, steps| Plan {
        name: name.into(),
        runtime,
        steps,
        ttl: TtlStyle::AfterCollection(30),
        collect_delay: Duration::from_millis(1000),
    };
    let plans = vec![
        plan("ctl-job-ok", Runtime::Job, vec![vec![ok(12.0)]]),
        plan("ctl-job-fails", Runtime::Job, vec![vec![Attempt { run_seconds: 5.0, exit_code: 1 }]]),
        plan("ctl-wf-three", Runtime::Workflow, vec![vec![ok(4.0)]; 3]),
        plan(
            "ctl-wf-retry",
            Runtime::Workflow,
            vec![vec![ok(3.0)], vec![Attempt { run_seconds: 3.0, exit_code: 1 }, ok(3.0)]],
        ),
    ];
    let reference: Vec<_> = plans.iter().map(|p| spawn_run(&client, reference_ns, p.clone())).collect();
    let controlled = StandIn::new(client.clone(), ns);
    for p in &plans {
        controlled.create_run(p, true).await.unwrap();
    }

    // SIGTERM the leader once the three-step workflow's second Job exists: every run is in flight then.
    for _ in 0..300 {
        if log.lock().unwrap().contains_key("ctl-wf-three-step-2-attempt-1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        log.lock().unwrap().contains_key("ctl-wf-three-step-2-attempt-1"),
        "the leader never got that far"
    );
    // Right after the follower's tick: its next one, a retry period later, is the first that can take the
    // Lease, so the takeover shows the longest wait upstream's election allows after a release.
    let ticks = log_times(&log_b, "lease tick").len();
    for _ in 0..400 {
        if log_times(&log_b, "lease tick").len() > ticks {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let jobs_before = log.lock().unwrap().len();
    let sigterm = jiff::Timestamp::now();
    signal(&a, "TERM");
    let exited = tokio::task::block_in_place(|| a.wait().unwrap());
    assert!(exited.success(), "the old leader exits cleanly on SIGTERM: {exited}");
    let mut taken = None;
    for _ in 0..200 {
        if holder().await.as_deref() == Some("agents-controllers-b_uid-agents-controllers-b") {
            taken = Some(jiff::Timestamp::now());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let taken = taken.expect("the other replica never took the Lease");

    // Every run ends, as the driver's run of the same plan does.
    let runs = controlled.runs();
    let mut phases = std::collections::BTreeMap::new();
    for _ in 0..600 {
        phases.clear();
        for p in &plans {
            let run = runs.get(&p.name).await.unwrap();
            let phase = run.data["status"]["phase"].as_str().unwrap_or_default().to_string();
            phases.insert(p.name.clone(), phase);
        }
        if phases.values().all(|p| p == "Succeeded" || p == "Failed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut outcomes = std::collections::BTreeMap::new();
    for (p, handle) in plans.iter().zip(reference) {
        outcomes.insert(p.name.clone(), handle.await.unwrap());
    }
    for p in &plans {
        assert_eq!(phases[&p.name], outcomes[&p.name].phase, "{}: phase", p.name);
    }
    assert_eq!(phases["ctl-job-fails"], "Failed");
    assert_eq!(phases.values().filter(|p| *p == "Succeeded").count(), 3, "{phases:?}");

    // Each Job once, each TTL-patched after its collection; the runs' writes in the driver's order.
    tokio::time::sleep(Duration::from_secs(2)).await;
    signal(&b, "TERM");
    assert!(tokio::task::block_in_place(|| b.wait().unwrap()).success());
    assert_eq!(holder().await.as_deref(), Some(""), "released on SIGTERM");
    signal(&record, "INT");
    assert!(tokio::task::block_in_place(|| record.wait().unwrap()).success());
    let observations =
        agentrun_lifecycle_exporter::source::replay::read_files(&[&capture]).unwrap().observations;
    for p in &plans {
        let expected_jobs = &outcomes[&p.name].jobs;
        for job in expected_jobs {
            let facts = job_facts(&log, job);
            assert_eq!(facts.uids.len(), 1, "{job} created once: {facts:?}");
            assert_eq!((facts.ttl_at_creation, facts.ttl), (Some(false), Some(30)), "{job}: TTL patched on");
        }
        let controller_jobs: BTreeSet<String> =
            log.lock().unwrap().keys().filter(|j| j.starts_with(&format!("{}-", p.name))).cloned().collect();
        assert_eq!(controller_jobs, expected_jobs.iter().cloned().collect(), "{}: Jobs", p.name);
        let written = support::writes::write_sequence_of_run(&observations, ns, &p.name);
        let driven = support::writes::write_sequence_of_run(&observations, reference_ns, &p.name);
        assert!(!driven.is_empty());
        assert_eq!(written, driven, "{}: the controllers' writes vs the driver's", p.name);
    }

    for (who, path) in [("a", &log_a), ("b", &log_b)] {
        let lines = log_times(path, "");
        for (_, line) in
            lines.iter().filter(|(_, l)| ["write", "transition", "released"].iter().any(|w| l.contains(w)))
        {
            eprintln!("controller {who}: {line}");
        }
    }
    // Failover: a released at SIGTERM; b took the Lease at its next tick (within the retry period, 5 s) and
    // wrote soon after.
    let released =
        log_times(&log_a, "released lease").first().map(|(t, _)| *t).expect("a released the Lease");
    let leader_b = log_times(&log_b, "transition: leader").first().map(|(t, _)| *t).expect("b became leader");
    let first_write = log_times(&log_b, "write").first().map(|(t, _)| *t).expect("b wrote");
    let secs = |from: jiff::Timestamp, to: jiff::Timestamp| {
        (to.as_millisecond() - from.as_millisecond()) as f64 / 1e3
    };
    eprintln!(
        "s10 failover: SIGTERM → released {:.3} s, → b leader {:.3} s, → b's first write {:.3} s \
         (Lease seen taken by the test after {:.3} s); Jobs existing at SIGTERM: {jobs_before}",
        secs(sigterm, released),
        secs(sigterm, leader_b),
        secs(sigterm, first_write),
        secs(sigterm, taken),
    );
    assert!(secs(sigterm, released) < 1.0, "released promptly");
    assert!(secs(released, leader_b) <= 5.0 + 1.0, "taken over within the retry period after the release");
    assert!(secs(released, leader_b) >= 3.0, "not before the follower's next tick");
    assert!(log_times(&log_a, "transition: leader").len() == 1 && log_times(&log_b, "write").len() > 1);
    let _ = std::fs::remove_dir_all(&dir);
    watch.abort();
}

/// The real node's variables and the images the suite imported there (tests/e2e/run.sh), or a loud failure.
struct RealNode {
    name: String,
    kubelet_url: String,
    targets_dir: String,
    jaeger_for_pods: String,
    exporter_image: (String, String),
    standin_image: (String, String),
}

impl RealNode {
    fn from_env() -> RealNode {
        let var = |k: &str| {
            std::env::var(k).unwrap_or_else(|_| {
                panic!("{k} is not set: scenario 12 needs the test bed's real node and the images tests/e2e/run.sh imports")
            })
        };
        let image = |k: &str| {
            let reference = var(k);
            let (repo, tag) = reference.rsplit_once(':').unwrap_or_else(|| panic!("{k}={reference}: no tag"));
            (repo.to_string(), tag.to_string())
        };
        RealNode {
            name: var("REAL_NODE_NAME"),
            kubelet_url: var("REAL_NODE_KUBELET_URL"),
            targets_dir: var("REAL_NODE_PROMETHEUS_TARGETS_DIR"),
            jaeger_for_pods: var("JAEGER_OTLP_GRPC_FOR_PODS"),
            exporter_image: image("E2E_EXPORTER_IMAGE"),
            standin_image: image("E2E_STANDIN_IMAGE"),
        }
    }
}

fn run_cmd(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn kubectl(args: &[&str]) -> String {
    run_cmd(&std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()), args)
}

/// `kubectl apply` of a manifest given as text.
fn kubectl_apply(manifest: &str) {
    let mut child = Command::new(std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()))
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(manifest.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "kubectl apply failed:\n{manifest}");
}

/// An API request with a ServiceAccount's token, as the apiserver answers it: the HTTP status.
fn api_status(server: &str, token: &str, method: &str, path: &str, body: Option<&str>) -> u16 {
    let ca = std::env::var("TESTBED_CA_FILE").expect("TESTBED_CA_FILE");
    let mut args = vec![
        "-sS".to_string(),
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{http_code}".into(),
        "--cacert".into(),
        ca,
        "-H".into(),
        format!("Authorization: Bearer {token}"),
        "-X".into(),
        method.into(),
    ];
    if let Some(b) = body {
        let content_type =
            if method == "PATCH" { "application/merge-patch+json" } else { "application/json" };
        args.extend(["-H".into(), format!("Content-Type: {content_type}"), "--data".into(), b.into()]);
    }
    args.push(format!("{server}{path}"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_cmd("curl", &args).trim().parse().unwrap()
}

/// The controllers Deployment's pods on the real node: (name, uid, pod IP, ready).
fn controller_pods(ns: &str, node: &str) -> Vec<(String, String, String, bool)> {
    let out = kubectl(&["-n", ns, "get", "pods", "-l", "app.kubernetes.io/instance=agents", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["spec"]["nodeName"] == node && p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let ready = p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p["metadata"]["uid"].as_str().unwrap().to_string(),
                p["status"]["podIP"].as_str().unwrap_or_default().to_string(),
                ready,
            )
        })
        .collect()
}

/// A metric's sum over its series in a sidecar's /metrics, read from the host at the pod IP.
fn pod_metric(ip: &str, name: &str, filter: &str) -> Option<f64> {
    let (_, body) = support::http_get(&format!("{ip}:9464"), "/metrics").ok()?;
    Some(
        body.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(filter))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

fn holder_of_lease_in(ns: &str) -> String {
    kubectl(&["-n", ns, "get", "lease", "agents-controller-leader", "-o", "jsonpath={.spec.holderIdentity}"])
}

/// Scenario 12: the chart installed, not just rendered, on the real node. The reduced agents chart with
/// `controllers.lifecycleExporter.enabled` and 2 controller replicas goes into a namespace that enforces the
/// `restricted` Pod Security Standard; the controller container is the stand-in (its image, upstream's leader
/// election), the sidecar the exporter's image, with the chart's ServiceAccount through in-cluster
/// configuration. The sidecars become ready; the apiserver refuses their ServiceAccount Secrets, ConfigMaps and
/// every write; Prometheus scrapes both pods. Runs are traced end to end from inside the pods; the leader pod is
/// deleted in the middle of runs: every run still has exactly one complete trace, equal to the bed's own
/// exporter's, no span reaches Jaeger from the two sidecars with different content, and the counters summed
/// over the pods equal the runs.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the end-to-end test bed with its real node: run tests/e2e/run.sh"]
async fn s12_chart_installed_on_the_real_node() {
    // The chart in a namespace that enforces `restricted`; the runs (whose Job pods are not restricted) in
    // another one the controller watches, as upstream's AGENTS_CONTROLLER_NAMESPACES allows.
    let ns = "e2e-s12-chart";
    let runs_ns = "e2e-s12-runs";
    let node = RealNode::from_env();
    let (bed, client, log, watch) = setup(runs_ns).await;
    standin::create_namespace(&client, ns).await.unwrap();
    kubectl(&["label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted", "--overwrite"]);

    // The stand-in controller writes with its own ServiceAccount (a kubeconfig in a Secret): the pod's
    // ServiceAccount, which the sidecar uses, has only what the exporter's chart grants.
    kubectl_apply(&format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: standin-controller, namespace: {ns}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: standin-controller, namespace: {runs_ns}}}
rules:
  - {{apiGroups: [agents.proompteng.ai], resources: [agentruns, agentruns/status], verbs: [get, list, watch, update, patch]}}
  - {{apiGroups: [batch], resources: [jobs], verbs: [get, list, watch, create, patch, delete]}}
  - {{apiGroups: [""], resources: [pods], verbs: [get, list, watch]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: standin-controller, namespace: {runs_ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: standin-controller}}
subjects: [{{kind: ServiceAccount, name: standin-controller, namespace: {ns}}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: standin-controller, namespace: {ns}}}
rules:
  - {{apiGroups: [coordination.k8s.io], resources: [leases], verbs: [get, list, watch, create, update, patch]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: standin-controller, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: standin-controller}}
subjects: [{{kind: ServiceAccount, name: standin-controller, namespace: {ns}}}]
"#
    ));
    let token = kubectl(&["-n", ns, "create", "token", "standin-controller", "--duration", "2h"]);
    let cluster_ip =
        kubectl(&["-n", "default", "get", "svc", "kubernetes", "-o", "jsonpath={.spec.clusterIP}"]);
    let ca = run_cmd("base64", &["-w0", &std::env::var("TESTBED_CA_FILE").unwrap()]);
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters: [{{name: bed, cluster: {{server: 'https://{cluster_ip}:443', certificate-authority-data: {}}}}}]\nusers: [{{name: standin, user: {{token: {}}}}}]\ncontexts: [{{name: bed, context: {{cluster: bed, user: standin, namespace: {ns}}}}}]\ncurrent-context: bed\n",
        ca.trim(),
        token.trim()
    );
    let dir = std::path::PathBuf::from(format!("{}/s12", std::env::var("TESTBED_STATE_DIR").unwrap()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("kubeconfig"), kubeconfig).unwrap();
    kubectl(&[
        "-n",
        ns,
        "create",
        "secret",
        "generic",
        "standin-kubeconfig",
        &format!("--from-file=kubeconfig={}", dir.join("kubeconfig").display()),
    ]);

    // The reduced agents chart with this chart vendored, as the integration guide says.
    let chart = dir.join("agents");
    let root = env!("CARGO_MANIFEST_DIR");
    run_cmd("cp", &["-r", &format!("{root}/deploy/testdata/controllers-chart"), chart.to_str().unwrap()]);
    std::fs::create_dir_all(chart.join("charts")).unwrap();
    run_cmd(
        "cp",
        &[
            "-r",
            &format!("{root}/deploy/chart"),
            chart.join("charts/agentrun-lifecycle-exporter").to_str().unwrap(),
        ],
    );
    let values = format!(
        r#"serviceAccount: {{create: true, name: agents-sa}}
# The control plane's Deployment is not under test (and has no image here).
replicaCount: 0
controllers:
  enabled: true
  replicaCount: 2
  image: {{repository: "{sr}", tag: "{st}", pullPolicy: Never}}
  env:
    vars: {{KUBECONFIG: /var/run/standin/kubeconfig, RUST_LOG: info}}
  lifecycleExporter:
    enabled: true
    image: {{repository: "{er}", tag: "{et}", pullPolicy: Never}}
    otel: {{endpoint: "{jaeger}", protocol: grpc, serviceName: e2e-s12-sidecar}}
    extraArgs: ["--settle", "3s", "--ttl-grace", "20s"]
controller:
  namespaces: [{runs_ns}]
nodeSelector: {{agentrun.test/real-node: "true"}}
tolerations: [{{key: agentrun.test/real-node, operator: Equal, value: "true", effect: NoSchedule}}]
securityContext: {{runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: {{type: RuntimeDefault}}}}
containerSecurityContext: {{allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {{drop: [ALL]}}}}
extraVolumes: [{{name: standin-kubeconfig, volume: {{secret: {{secretName: standin-kubeconfig}}}}}}]
extraVolumeMounts: [{{name: standin-kubeconfig, mountPath: /var/run/standin}}]
agentrun-lifecycle-exporter:
  rbac: {{serviceAccountName: agents-sa}}
  exporter: {{namespaces: [{runs_ns}]}}
"#,
        sr = node.standin_image.0,
        st = node.standin_image.1,
        er = node.exporter_image.0,
        et = node.exporter_image.1,
        jaeger = node.jaeger_for_pods,
    );
    std::fs::write(dir.join("values.yaml"), values).unwrap();
    let helm = std::env::var("HELM").expect("HELM (the test bed's helm)");
    let installed = std::time::Instant::now();
    run_cmd(
        &helm,
        &[
            "install",
            "agents",
            chart.to_str().unwrap(),
            "-n",
            ns,
            "-f",
            dir.join("values.yaml").to_str().unwrap(),
            "--wait",
            "--timeout",
            "3m",
        ],
    );
    let pods = controller_pods(ns, &node.name);
    assert_eq!(pods.len(), 2, "two controller pods on the real node: {pods:?}");
    assert!(pods.iter().all(|p| p.3), "both pods ready (both containers' probes pass)");
    for (name, ..) in &pods {
        let times = kubectl(&[
            "-n",
            ns,
            "get",
            "pod",
            name,
            "-o",
            r#"jsonpath={.metadata.creationTimestamp} {.status.conditions[?(@.type=="Ready")].lastTransitionTime}"#,
        ]);
        println!(
            "s12: pod {name}: created → ready {times} (helm install --wait took {:?})",
            installed.elapsed()
        );
    }
    let targets = format!("{}/{ns}.json", node.targets_dir);
    let write_targets = |pods: &[(String, String, String, bool)]| {
        let t: Vec<_> = pods
            .iter()
            .map(|p| serde_json::json!({"targets": [format!("{}:9464", p.2)], "labels": {"pod": p.0}}))
            .collect();
        std::fs::write(format!("{targets}.tmp"), serde_json::to_string(&t).unwrap()).unwrap();
        std::fs::rename(format!("{targets}.tmp"), &targets).unwrap();
    };
    write_targets(&pods);

    // RBAC as the apiserver enforces it, with the sidecar's ServiceAccount.
    let server = kubectl(&["config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"]);
    let sa = kubectl(&["-n", ns, "create", "token", "agents-sa", "--duration", "10m"]);
    let sa = sa.trim();
    let runs_path = format!("/apis/agents.proompteng.ai/v1alpha1/namespaces/{runs_ns}/agentruns");
    let lease_path = format!("/apis/coordination.k8s.io/v1/namespaces/{ns}/leases");
    for (method, path, body, want) in [
        ("GET", format!("/api/v1/namespaces/{ns}/secrets"), None, 403),
        ("GET", format!("/api/v1/namespaces/{ns}/configmaps"), None, 403),
        ("GET", format!("/api/v1/namespaces/{runs_ns}/secrets"), None, 403),
        ("GET", format!("/api/v1/namespaces/{runs_ns}/configmaps"), None, 403),
        ("GET", format!("/api/v1/namespaces/{ns}/secrets/standin-kubeconfig"), None, 403),
        (
            "POST",
            format!("/apis/batch/v1/namespaces/{runs_ns}/jobs"),
            Some(r#"{"metadata":{"name":"x"}}"#),
            403,
        ),
        ("PATCH", format!("{runs_path}/x/status"), Some(r#"{"status":{}}"#), 403),
        ("POST", runs_path.clone(), Some(r#"{"metadata":{"name":"x"}}"#), 403),
        ("DELETE", format!("/api/v1/namespaces/{ns}/pods/{}", pods[0].0), None, 403),
        (
            "PATCH",
            format!("{lease_path}/agents-controller-leader"),
            Some(r#"{"spec":{"holderIdentity":""}}"#),
            403,
        ),
        ("GET", lease_path.clone(), None, 403),
        ("GET", runs_path.clone(), None, 200),
        ("GET", format!("/apis/batch/v1/namespaces/{runs_ns}/jobs"), None, 200),
        ("GET", format!("/api/v1/namespaces/{runs_ns}/pods"), None, 200),
        ("GET", format!("{lease_path}/agents-controller-leader"), None, 200),
        ("GET", format!("{lease_path}?fieldSelector=metadata.name%3Dagents-controller-leader"), None, 200),
    ] {
        assert_eq!(
            api_status(&server, sa, method, &path, body),
            want,
            "{method} {path} as the sidecar's ServiceAccount"
        );
    }
    println!(
        "s12: the sidecar's ServiceAccount: 403 on Secrets, ConfigMaps, writes and other Leases; 200 on its reads"
    );

    // Who leads: the pod whose controller holds the Lease; its sidecar says 1, the other 0.
    let mut holder = String::new();
    for _ in 0..100 {
        holder = holder_of_lease_in(ns);
        if !holder.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let leader = pods
        .iter()
        .find(|p| holder == format!("{}_{}", p.0, p.1))
        .unwrap_or_else(|| panic!("Lease held by {holder:?}"))
        .clone();
    let standby = pods.iter().find(|p| p.0 != leader.0).unwrap().clone();
    for _ in 0..100 {
        if pod_metric(&leader.2, "agentrun_exporter_leader", "") == Some(1.0)
            && pod_metric(&standby.2, "agentrun_exporter_leader", "") == Some(0.0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        pod_metric(&leader.2, "agentrun_exporter_leader", ""),
        Some(1.0),
        "the leader pod's sidecar leads"
    );
    assert_eq!(pod_metric(&standby.2, "agentrun_exporter_leader", ""), Some(0.0), "the other is a standby");
    bed.wait_prom(&format!("sum(up{{job=\"real-node-pods\",pod=~\"{}|{}\"}})", leader.0, standby.0), |v| {
        v == 2.0
    })
    .await;

    // Runs, traced from inside the pods: two finish under the first leader, three are in flight when its pod
    // is deleted.
    let standin = StandIn::new(client.clone(), runs_ns);
    let plan = |name: &str, runtime: Runtime, seconds: f64| Plan {
        name: name.into(),
        runtime,
        steps: if runtime == Runtime::Job {
            vec![vec![Attempt { run_seconds: seconds, exit_code: 0 }]]
        } else {
            vec![vec![Attempt { run_seconds: seconds, exit_code: 0 }]; 2]
        },
        ttl: TtlStyle::AfterCollection(5),
        collect_delay: Duration::from_millis(500),
    };
    let first = [plan("codex-chart-a", Runtime::Job, 2.0), plan("codex-chart-b", Runtime::Workflow, 2.0)];
    let second = [
        plan("codex-chart-c", Runtime::Job, 25.0),
        plan("codex-chart-d", Runtime::Workflow, 10.0),
        plan("codex-chart-e", Runtime::Job, 15.0),
    ];
    let mut uids = Vec::new();
    for p in &first {
        uids.push(standin.create_run(p, true).await.unwrap().metadata.uid.unwrap());
    }
    let runs_of = |pod: &(String, String, String, bool)| {
        pod_metric(&pod.2, "agentrun_runs_total", &format!("namespace=\"{runs_ns}\""))
    };
    for _ in 0..300 {
        if runs_of(&leader) == Some(2.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(runs_of(&leader), Some(2.0), "the first leader counted the first two runs");
    bed.wait_prom(
        &format!("sum(agentrun_runs_total{{job=\"real-node-pods\",namespace=\"{runs_ns}\"}})"),
        |v| v == 2.0,
    )
    .await;
    for p in &second {
        uids.push(standin.create_run(p, true).await.unwrap().metadata.uid.unwrap());
    }
    wait_jobs(&log, 2 + 2 + 3).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Failover: the leader pod is deleted (its controller releases the Lease on SIGTERM). The Lease goes to the
    // other replica, or to the pod that replaces the deleted one, whichever controller tries first.
    let deleted = std::time::Instant::now();
    let old_holder = format!("{}_{}", leader.0, leader.1);
    kubectl(&["-n", ns, "delete", "pod", &leader.0, "--wait=false"]);
    let (mut moved, mut leads, mut exporting) = (None, None, None);
    let mut new_leader: Option<(String, String, String, bool)> = None;
    let mut spans_before = 0.0;
    while deleted.elapsed() < Duration::from_secs(90) && exporting.is_none() {
        let holder = holder_of_lease_in(ns);
        if new_leader.is_none() && !holder.is_empty() && holder != old_holder {
            let pods = controller_pods(ns, &node.name);
            if let Some(p) =
                pods.iter().find(|p| holder == format!("{}_{}", p.0, p.1)).filter(|p| !p.2.is_empty())
            {
                moved = Some((
                    deleted.elapsed(),
                    if p.0 == standby.0 { "the other replica" } else { "the new pod" },
                ));
                spans_before = pod_metric(&p.2, "agentrun_exporter_spans_exported_total", "").unwrap_or(0.0);
                new_leader = Some(p.clone());
                write_targets(&[leader.clone(), standby.clone(), p.clone()]);
            }
        }
        if let Some(p) = &new_leader {
            if leads.is_none() && pod_metric(&p.2, "agentrun_exporter_leader", "") == Some(1.0) {
                leads = Some(deleted.elapsed());
            }
            if leads.is_some()
                && pod_metric(&p.2, "agentrun_exporter_spans_exported_total", "").unwrap_or(0.0)
                    > spans_before
            {
                exporting = Some(deleted.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "s12: failover: leader pod deleted → Lease to {moved:?} → its sidecar leads {leads:?} → exports its first span {exporting:?}"
    );
    assert!(exporting.is_some(), "the new leader exports");

    // Every run ends; every trace whole, from the sidecars, equal to the bed's own exporter's.
    for (i, uid) in uids.iter().enumerate() {
        let name = if i < 2 { &first[i].name } else { &second[i - 2].name };
        let runtime = if i < 2 { first[i].runtime } else { second[i - 2].runtime };
        let jobs = if runtime == Runtime::Job { 1 } else { 2 };
        for _ in 0..600 {
            let phase = kubectl(&["-n", runs_ns, "get", "agentrun", name, "-o", "jsonpath={.status.phase}"]);
            if phase == "Succeeded" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let expected = 1 + if jobs > 1 { jobs } else { 0 } + 6 * jobs;
        let sidecar = |s: &FlatSpan| s.service == "e2e-s12-sidecar";
        let spans = bed
            .wait_trace(uid, "every span from the sidecars and the bed's own exporter", |s| {
                let ids = |f: &dyn Fn(&FlatSpan) -> bool| {
                    s.iter().filter(|x| f(x)).map(|x| x.span_id.clone()).collect::<BTreeSet<_>>().len()
                };
                ids(&sidecar) == expected && ids(&|x| x.service == "agentrun-lifecycle-exporter") == expected
            })
            .await;
        let reference: std::collections::BTreeMap<String, FlatSpan> = spans
            .iter()
            .filter(|s| s.service == "agentrun-lifecycle-exporter")
            .map(|s| (s.span_id.clone(), content(s)))
            .collect();
        // Every span of the reference trace came from the sidecars with the same content at least once.
        let copies: BTreeSet<(String, FlatSpan)> =
            spans.iter().filter(|s| sidecar(s)).map(|s| (s.span_id.clone(), content(s))).collect();
        for (id, span) in &reference {
            assert!(
                copies.contains(&(id.clone(), span.clone())),
                "{name}: the sidecars never sent {span:?} as the bed's exporter did; what they sent of it: {:#?}",
                copies.iter().filter(|(i, _)| i == id).map(|(_, s)| s).collect::<Vec<_>>()
            );
        }
        // And no copy from a sidecar differs: the pod that takes the Lease mid-run finds the same span times in
        // what it lists as the pods that watched the runs from the start (tests/restart.rs is the same property
        // over every cut of the recordings).
        let differing: Vec<&(String, FlatSpan)> =
            copies.iter().filter(|(id, span)| reference.get(id) != Some(span)).collect();
        assert!(
            differing.is_empty(),
            "{name}: {} span copy(ies) from a sidecar differ from the reference: {differing:#?}",
            differing.len()
        );
        let unique: Vec<FlatSpan> = reference.into_values().collect();
        assert_eq!(check_traces(&unique), Ok(1), "{name}: one trace, every child inside its parent");
    }
    // Counted once over the pods, the deleted one included (its last scrape).
    let these_pods =
        [&leader, &standby].into_iter().chain(new_leader.as_ref()).map(|p| p.0.as_str()).collect::<Vec<_>>();
    let counted = format!(
        "sum(max_over_time(agentrun_runs_total{{job=\"real-node-pods\",namespace=\"{runs_ns}\",pod=~\"{}\"}}[30m]))",
        these_pods.join("|")
    );
    let total = (first.len() + second.len()) as f64;
    bed.wait_prom(&counted, |v| v == total).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(bed.prom(&counted).await.first().map(|r| r.1), Some(total), "each run counted by one sidecar");

    // The sidecar's memory in its pod, from the kubelet.
    let ca = std::env::var("TESTBED_CA_FILE").unwrap();
    let cert = std::env::var("TESTBED_ADMIN_CERT_FILE").unwrap();
    let key = std::env::var("TESTBED_ADMIN_KEY_FILE").unwrap();
    let summary = run_cmd(
        "curl",
        &[
            "-fsS",
            "--cacert",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
            &format!("{}/stats/summary", node.kubelet_url),
        ],
    );
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    for pod in summary["pods"].as_array().unwrap().iter().filter(|p| p["podRef"]["namespace"] == ns) {
        for c in pod["containers"].as_array().unwrap() {
            println!(
                "s12: memory: pod {} container {}: working set {} KiB",
                pod["podRef"]["name"].as_str().unwrap(),
                c["name"].as_str().unwrap(),
                c["memory"]["workingSetBytes"].as_u64().unwrap_or(0) / 1024
            );
        }
    }

    run_cmd(&helm, &["uninstall", "agents", "-n", ns, "--wait", "--timeout", "2m"]);
    let _ = std::fs::remove_file(&targets);
    kubectl(&["delete", "namespace", ns, runs_ns, "--wait=true", "--timeout=120s"]);
    watch.abort();
}

//! End-to-end scenarios against the real Kubernetes control plane (etcd, kube-apiserver, the real Job,
//! TTL-after-finished and garbage-collector controllers, kube-scheduler, kwok as the node), with the exporter
//! sending traces to a real Jaeger and scraped by a real Prometheus that evaluates the alert rules. Jaeger and
//! Prometheus are queried only through their HTTP APIs.
//!
//! These tests need the test bed and are run by `tests/e2e/run.sh` (`cargo test --test e2e -- --ignored`);
//! without it they fail, saying so.

mod support;

use std::{collections::BTreeSet, time::Duration};

use agentrun_lifecycle_exporter::engine::facts::Runtime;
use kube::Client;
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

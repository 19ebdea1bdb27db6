//! Each test names the upstream behaviour it reproduces (paths in proompteng/lab
//! `services/agents/src/server/agents-controller/`).

use serde_json::json;

use super::*;

#[test]
fn job_ttl_override_is_read_with_parse_float_floored_and_clamped_like_job_runtime_ts() {
    // resolveRunnerJobTtlSeconds → parseOptionalNumber → normalizeRunnerJobTtlSeconds (job-runtime.ts)
    let ttl = |v: Value| planned_job_ttl(Some(&v), 600);
    assert_eq!(ttl(json!(600)), Some(600));
    assert_eq!(ttl(json!("45s")), Some(45), "parseFloat reads the numeric prefix");
    assert_eq!(ttl(json!(" 86400 ")), Some(86_400));
    assert_eq!(ttl(json!(45.9)), Some(45), "floored");
    assert_eq!(ttl(json!(0.5)), Some(30), "0 < v < 1 floors to 0, then the minimum applies");
    assert_eq!(ttl(json!(10)), Some(30));
    assert_eq!(ttl(json!(10_000_000)), Some(604_800));
    assert_eq!(ttl(json!("1e3")), Some(1000));
    assert_eq!(ttl(json!(0)), None, "≤ 0: no TTL patch at all");
    assert_eq!(ttl(json!("-5")), None);
    assert_eq!(ttl(json!(true)), Some(600), "not a number: the controller default");
    assert_eq!(ttl(json!("soon")), Some(600));
    assert_eq!(ttl(json!("")), Some(600));
    assert_eq!(ttl(json!({"seconds": 5})), Some(600));
    assert_eq!(ttl(json!("Infinity")), Some(600), "not finite: absent");
    assert_eq!(planned_job_ttl(None, 86_400), Some(86_400));
}

#[test]
fn parse_float_matches_javascript() {
    assert_eq!(parse_float("  12.5abc"), Some(12.5));
    assert_eq!(parse_float(".5"), Some(0.5));
    assert_eq!(parse_float("5."), Some(5.0));
    assert_eq!(parse_float("-3e2x"), Some(-300.0));
    assert_eq!(parse_float("1e"), Some(1.0));
    assert_eq!(parse_float("e5"), None);
    assert_eq!(parse_float("."), None);
    assert_eq!(parse_float("-Infinityx"), Some(f64::NEG_INFINITY));
    assert_eq!(parse_float("0x10"), Some(0.0));
}

#[test]
fn default_job_ttl_env_is_read_with_parse_int_and_raised_to_thirty_like_runtime_config_ts() {
    // resolveAgentRunnerDefaultsConfig: max(30, parsePositiveInt(env, 600)), then clamped to 7 d.
    assert_eq!(controller_job_ttl(None), 600);
    assert_eq!(controller_job_ttl(Some("")), 600);
    assert_eq!(controller_job_ttl(Some("86400")), 86_400);
    assert_eq!(controller_job_ttl(Some("45.9")), 45, "parseInt stops at the dot");
    assert_eq!(controller_job_ttl(Some("120s")), 120);
    assert_eq!(controller_job_ttl(Some("0")), 30, "0 becomes 30, not disabled");
    assert_eq!(controller_job_ttl(Some("-1")), 600, "negative: the default");
    assert_eq!(controller_job_ttl(Some("soon")), 600);
    assert_eq!(controller_job_ttl(Some("99999999999999999999999")), 604_800);
}

#[test]
fn retention_follows_get_agent_run_retention_decision_and_the_retain_annotation() {
    let cfg =
        UpstreamConfig { default_retention: Some(2_592_000), zero_ttl_retention: None, ..Default::default() };
    assert_eq!(retention(Some(&json!(3600)), false, &cfg), Some(3600));
    assert_eq!(retention(Some(&json!(0)), false, &cfg), None, "0: the zero-TTL maximum, 0 = forever");
    let zero = UpstreamConfig { zero_ttl_retention: Some(604_800), ..cfg.clone() };
    assert_eq!(retention(Some(&json!(0)), false, &zero), Some(604_800));
    assert_eq!(retention(None, false, &cfg), Some(2_592_000));
    assert_eq!(retention(Some(&json!(-5)), false, &cfg), Some(2_592_000), "negative: the default");
    assert_eq!(retention(Some(&json!(3600)), true, &cfg), None, "retained runs are never deleted");
    let ann = |v: &str| BTreeMap::from([(objects::ANNOTATION_RETAIN.to_owned(), v.to_owned())]);
    for yes in ["true", "1", "yes", "Y", "on", "keep", " Forever "] {
        assert!(is_retained(Some(&ann(yes))), "{yes}");
    }
    for no in ["false", "0", "", "later"] {
        assert!(!is_retained(Some(&ann(no))), "{no}");
    }
    assert!(!is_retained(None));
}

#[test]
fn step_messages_are_read_with_the_phase_they_are_written_with() {
    // workflow-reconciler.ts: a missing Job → Retrying "Job missing; retrying"; the next attempt's writes
    // copy the message forward, so it is still there when the step succeeds.
    use StepPhase::*;
    assert_eq!(step_consumption(Retrying, Some("Job missing; retrying")), Some(Consumption::Missing));
    assert_eq!(step_consumption(Succeeded, Some("Job missing; retrying")), Some(Consumption::Collected));
    assert_eq!(step_consumption(Running, Some("Job missing; retrying")), None);
    assert_eq!(step_consumption(Failed, Some("Job missing")), Some(Consumption::Missing));
    assert_eq!(step_consumption(Failed, Some("workflow step plan failed")), Some(Consumption::Collected));
    // A timed-out step moves on while its Job still runs; the Job is never read or TTL-patched.
    assert_eq!(step_consumption(Retrying, Some("Step timed out; retrying")), Some(Consumption::Abandoned));
    assert_eq!(step_consumption(Failed, Some("Step timed out")), Some(Consumption::Abandoned));
    assert_eq!(step_consumption(Retrying, Some("Step failed; retrying")), Some(Consumption::Collected));
    assert_eq!(step_consumption(Failed, Some("Job reference missing")), None);
}

#[test]
fn hashed_job_names_keep_their_step_from_labels_but_not_their_attempt() {
    // makeName (run-utils.ts): names over 63 characters become 54 characters + "-" + 8 hex of a sha1.
    let hashed = format!("{}-{}", "a".repeat(54), "0123abcd");
    assert!(is_hashed_name(&hashed));
    let labels = BTreeMap::from([(objects::LABEL_STEP_INDEX.to_owned(), "2".to_owned())]);
    assert_eq!(
        step_position(&hashed, &labels),
        Some(StepPosition { index: 2, iteration: None, attempt: None })
    );
    let plain = "run-step-2-iter-3-attempt-4";
    assert!(!is_hashed_name(plain));
    assert_eq!(
        step_position(plain, &BTreeMap::new()),
        Some(StepPosition { index: 2, iteration: Some(3), attempt: Some(4) })
    );
    assert_eq!(step_position("run-job", &BTreeMap::new()), None);
}

#[test]
fn a_retried_loop_iteration_is_consumed_only_in_the_write_where_its_step_is_retrying() {
    // workflow-reconciler.ts: a retried iteration stays Running with the retry message, and keeps it after the
    // next attempt starts (upsertWorkflowLoopIteration with message undefined).
    let run = |step_phase: &str, job: &str| -> AgentRun {
        serde_json::from_value(json!({
            "metadata": {"name": "r", "namespace": "agents", "uid": "u"},
            "spec": {"runtime": {"type": "workflow"}},
            "status": {"phase": "Running", "workflow": {"steps": [{
                "name": "loop", "phase": step_phase, "attempt": 1, "message": "Step failed; retrying",
                "jobRef": {"name": job},
                "loop": {"iterations": [{"index": 1, "phase": "Running", "attempts": 1,
                    "message": "Step failed; retrying", "jobRef": {"name": job}}]}}]}}
        }))
        .unwrap()
    };
    let cfg = UpstreamConfig::default();
    let retrying = run_update(&run("Retrying", "r-step-1-iter-1-attempt-1"), false, &cfg).unwrap();
    assert_eq!(retrying.status.steps[0].iterations[0].consumption, Some(Consumption::Collected));
    let next = run_update(&run("Running", "r-step-1-iter-1-attempt-2"), false, &cfg).unwrap();
    assert_eq!(next.status.steps[0].iterations[0].consumption, None);
    assert!(next.status.steps[0].iterations[0].running);
}

#[test]
fn a_wrong_typed_ttl_does_not_make_the_run_malformed() {
    let o = objects::Object::from_json(json!({
        "apiVersion": "agents.proompteng.ai/v1alpha1", "kind": "AgentRun",
        "metadata": {"name": "r", "namespace": "agents", "uid": "u",
            "annotations": {"agents.proompteng.ai/retain": "true", "other": "x"}},
        "spec": {"runtime": {"type": "job", "config": {"ttlSecondsAfterFinished": true}}, "ttlSecondsAfterFinished": 60}
    }))
    .unwrap();
    let objects::Object::AgentRun(r) = &o else { panic!("{o:?}") };
    assert_eq!(
        r.metadata.annotations.as_ref().map(|a| a.len()),
        Some(1),
        "only the retain annotation is kept"
    );
    let u = run_update(r, false, &UpstreamConfig::default()).unwrap();
    assert_eq!(u.job_ttl, Some(600));
    assert_eq!(u.retention, None, "retained");
}

#[test]
fn runs_of_runtimes_without_jobs_and_templates_are_not_the_engines_business() {
    let run = |runtime: &str, phase: &str| -> AgentRun {
        serde_json::from_value(json!({
            "metadata": {"name": "r", "namespace": "agents", "uid": "u"},
            "spec": {"runtime": {"type": runtime}}, "status": {"phase": phase}
        }))
        .unwrap()
    };
    let cfg = UpstreamConfig::default();
    assert!(run_update(&run("temporal", "Running"), false, &cfg).is_none());
    assert!(run_update(&run("custom", "Running"), false, &cfg).is_none());
    assert!(run_update(&run("job", "Template"), false, &cfg).is_none());
    assert!(run_update(&run("job", "Running"), false, &cfg).is_some());
}

#[test]
fn retention_env_is_read_with_parse_int_like_runtime_config_ts() {
    // Helm prints 2592000 as 2.592e+06 when it is quoted without `| int`: the controller then keeps runs 2 s.
    assert_eq!(retention_env(None), Some(2_592_000));
    assert_eq!(retention_env(Some(" ")), Some(2_592_000));
    assert_eq!(retention_env(Some("604800")), Some(604_800));
    assert_eq!(retention_env(Some("2.592e+06")), Some(2));
    assert_eq!(retention_env(Some("0")), None, "0 disables retention");
    assert_eq!(retention_env(Some("-5")), None, "parsePositiveInt falls back to 0");
    assert_eq!(retention_env(Some("soon")), None);
    assert_eq!(zero_ttl_retention_env(None), None);
    assert_eq!(zero_ttl_retention_env(Some("604800")), Some(604_800));
    assert_eq!(zero_ttl_retention_env(Some("x")), None);
}

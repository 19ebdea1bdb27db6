//! Objects shaped exactly as the agents controller, the Kubernetes Job and TTL controllers and the kubelet
//! write them: names, labels, owner references, status fields, condition order, and the order of the writes
//! (docs/design.md, "The upstream boundary"). The demo simulator builds its cluster from these, and the
//! engine's tests build their fixtures from them.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::{
    objects::{self, *},
    time as k8s_time,
};
use crate::engine::{Ts, facts::Runtime};

/// What a user applies.
#[derive(Clone, Debug)]
pub struct RunSpec {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub runtime: Runtime,
    pub agent: String,
    pub provider: String,
    /// `spec.runtime.config.ttlSecondsAfterFinished` (the Job TTL override).
    pub job_ttl: Option<i64>,
    /// `spec.ttlSecondsAfterFinished` (the AgentRun's own retention).
    pub retention: Option<i64>,
    /// Workflow step names.
    pub steps: Vec<String>,
}

impl RunSpec {
    pub fn job(namespace: &str, name: &str, uid: &str) -> Self {
        RunSpec {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
            runtime: Runtime::Job,
            agent: "codex-agent".into(),
            provider: "codex".into(),
            job_ttl: None,
            retention: None,
            steps: Vec::new(),
        }
    }

    pub fn workflow(namespace: &str, name: &str, uid: &str, steps: &[&str]) -> Self {
        RunSpec {
            runtime: Runtime::Workflow,
            steps: steps.iter().map(|s| s.to_string()).collect(),
            ..RunSpec::job(namespace, name, uid)
        }
    }
}

fn meta(namespace: &str, name: &str, uid: &str, created: Ts) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        uid: Some(uid.into()),
        creation_timestamp: Some(k8s_time(truncate(created))),
        ..ObjectMeta::default()
    }
}

/// Kubernetes metadata and Job/Pod status times have whole seconds.
pub fn truncate(t: Ts) -> Ts {
    Ts(t.0.div_euclid(1000) * 1000)
}

fn cond(type_: &str, reason: &str, at: Ts) -> Condition {
    Condition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        last_transition_time: Some(at),
    }
}

/// `makeName` (`job-runtime.ts`): lower-case, each run of characters outside `[a-z0-9-]` becomes one `-`,
/// trimmed of `-`; over 63 characters, the first 54 + `-` + 8 hex characters of the sha1 of the whole name.
pub fn job_name(run: &str, suffix: &str) -> String {
    let mut normalized = String::with_capacity(run.len());
    for c in run.to_lowercase().chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
            normalized.push(c);
        } else if !normalized.ends_with('-') || normalized.is_empty() {
            normalized.push('-');
        }
    }
    let combined = format!("{normalized}-{suffix}").trim_matches('-').to_owned();
    if combined.len() <= 63 {
        return combined;
    }
    let hash = sha1_smol::Sha1::from(combined.as_bytes()).digest().to_string();
    format!("{}-{}", &combined[..54], &hash[..8])
}

pub fn agentrun(spec: &RunSpec, created: Ts) -> AgentRun {
    let mut m = meta(&spec.namespace, &spec.name, &spec.uid, created);
    m.finalizers = Some(vec!["agents.proompteng.ai/runtime-cleanup".into()]);
    m.generation = Some(1);
    AgentRun {
        metadata: m,
        spec: AgentRunSpec {
            agent_ref: Some(NameRef { name: spec.agent.clone() }),
            runtime: Some(RuntimeSpec {
                type_: spec.runtime.as_str().into(),
                config: Some(RuntimeConfig {
                    ttl_seconds_after_finished: spec.job_ttl.map(serde_json::Value::from),
                }),
            }),
            ttl_seconds_after_finished: spec.retention.map(serde_json::Value::from),
        },
        status: None,
    }
}

fn status(run: &mut AgentRun) -> &mut AgentRunStatus {
    run.status.get_or_insert_with(AgentRunStatus::default)
}

fn upsert_condition(st: &mut AgentRunStatus, c: Condition) {
    match st.conditions.iter_mut().find(|x| x.type_ == c.type_) {
        Some(existing) if existing.status == c.status && existing.reason == c.reason => {}
        Some(existing) => *existing = c,
        None => st.conditions.push(c),
    }
}

/// The status write right after the Job (job runtime) or the first step's Job (workflow) was created.
pub fn submitted(run: &mut AgentRun, job: &Job, at: Ts) {
    let runtime = run.spec.runtime.as_ref().map(|r| r.type_.clone()).unwrap_or_default();
    let st = status(run);
    st.phase = Some("Running".into());
    st.started_at = Some(at);
    st.updated_at = Some(at);
    upsert_condition(st, cond("Accepted", "Submitted", at));
    upsert_condition(st, cond("InProgress", "Running", at));
    if runtime == "job" {
        st.runtime_ref = Some(RuntimeRef {
            type_: "job".into(),
            name: job.metadata.name.clone(),
            uid: job.metadata.uid.clone(),
            job_observed_at: None,
        });
    }
}

/// The job runtime's collecting write: terminal phase from the Job's outcome.
pub fn collected_job_runtime(run: &mut AgentRun, job: &Job, at: Ts) {
    let failed = job.status.conditions.iter().any(|c| c.type_ == "Failed" && c.is_true());
    let st = status(run);
    st.updated_at = Some(at);
    if failed {
        st.phase = Some("Failed".into());
        st.reason = Some("RunnerFailed".into());
        st.finished_at = Some(at);
        upsert_condition(st, cond("Failed", "RunnerFailed", at));
    } else {
        st.phase = Some("Succeeded".into());
        st.started_at = job.status.start_time;
        st.finished_at = job.status.completion_time.or(Some(at));
        upsert_condition(st, cond("Succeeded", "Completed", at));
    }
}

/// The job runtime's write when the Job was not found (`JobMissing`).
pub fn job_missing(run: &mut AgentRun, at: Ts) {
    let st = status(run);
    st.phase = Some("Failed".into());
    st.reason = Some("JobMissing".into());
    st.finished_at = Some(at);
    st.updated_at = Some(at);
    upsert_condition(st, cond("Warning", "JobMissing", at));
    upsert_condition(st, cond("Failed", "JobMissing", at));
}

fn step_mut<'a>(run: &'a mut AgentRun, index: u32, name: &str) -> &'a mut StepStatus {
    let wf = status(run)
        .workflow
        .get_or_insert_with(|| WorkflowStatus { phase: Some("Running".into()), steps: Vec::new() });
    while wf.steps.len() < index as usize {
        wf.steps.push(StepStatus {
            name: String::new(),
            phase: Some("Pending".into()),
            ..StepStatus::default()
        });
    }
    let step = &mut wf.steps[index as usize - 1];
    step.name = name.into();
    step
}

/// The workflow's first status lists every step, Pending (`workflow-reconciler.ts` writes the whole list).
pub fn workflow_pending(run: &mut AgentRun, steps: &[&str]) {
    for (i, name) in steps.iter().enumerate() {
        step_mut(run, i as u32 + 1, name);
    }
}

/// A workflow step attempt started: its Job exists and the step is Running.
pub fn step_running(run: &mut AgentRun, index: u32, name: &str, attempt: u32, job: &Job, at: Ts) {
    {
        let st = status(run);
        st.phase = Some("Running".into());
        st.updated_at = Some(at);
        if st.started_at.is_none() {
            st.started_at = Some(at);
        }
        upsert_condition(st, cond("Accepted", "Submitted", at));
        upsert_condition(st, cond("InProgress", "Running", at));
    }
    let step = step_mut(run, index, name);
    step.phase = Some("Running".into());
    step.attempt = Some(attempt.into());
    // The message of an earlier transition ("Job missing; retrying") stays: upstream never clears it.
    step.started_at = Some(at);
    step.finished_at = None;
    step.last_transition_time = Some(at);
    step.job_ref = Some(JobRef { name: job.metadata.name.clone(), uid: job.metadata.uid.clone() });
    let st = status(run);
    st.runtime_ref = Some(RuntimeRef {
        type_: "workflow".into(),
        name: job.metadata.name.clone(),
        uid: job.metadata.uid.clone(),
        job_observed_at: None,
    });
}

/// A workflow step attempt consumed: Succeeded, Failed, or Retrying when attempts are left.
pub fn step_collected(run: &mut AgentRun, index: u32, name: &str, job: &Job, retrying: bool, at: Ts) {
    let failed = job.status.conditions.iter().any(|c| c.type_ == "Failed" && c.is_true());
    status(run).updated_at = Some(at);
    let step = step_mut(run, index, name);
    step.phase = Some(
        if !failed {
            "Succeeded"
        } else if retrying {
            "Retrying"
        } else {
            "Failed"
        }
        .into(),
    );
    if failed {
        step.finished_at = Some(at);
    } else {
        step.finished_at = job.status.completion_time.or(Some(at));
        step.started_at = job.status.start_time;
    }
    step.last_transition_time = Some(at);
}

/// The workflow's write when a step's Job was not found: Retrying if attempts are left, else Failed.
pub fn step_job_missing(run: &mut AgentRun, index: u32, name: &str, retrying: bool, at: Ts) {
    {
        let st = status(run);
        st.updated_at = Some(at);
        upsert_condition(st, cond("Warning", "WorkflowJobMissing", at));
    }
    let step = step_mut(run, index, name);
    step.phase = Some(if retrying { "Retrying" } else { "Failed" }.into());
    step.message = Some(if retrying { "Job missing; retrying" } else { "Job missing" }.into());
    step.finished_at = Some(at);
    step.last_transition_time = Some(at);
    if !retrying {
        let st = status(run);
        st.phase = Some("Failed".into());
        st.reason = Some("WorkflowJobMissing".into());
        st.finished_at = Some(at);
        if let Some(wf) = st.workflow.as_mut() {
            wf.phase = Some("Failed".into());
        }
        upsert_condition(st, cond("Failed", "WorkflowJobMissing", at));
    }
}

/// A step ran past `timeoutSeconds` while its Job had not finished: Retrying (attempts left) or Failed; the
/// Job is left running, never read and never TTL-patched.
pub fn step_timed_out(run: &mut AgentRun, index: u32, name: &str, retrying: bool, at: Ts) {
    status(run).updated_at = Some(at);
    let step = step_mut(run, index, name);
    step.phase = Some(if retrying { "Retrying" } else { "Failed" }.into());
    step.message = Some(if retrying { "Step timed out; retrying" } else { "Step timed out" }.into());
    step.last_transition_time = Some(at);
    if !retrying {
        let st = status(run);
        st.phase = Some("Failed".into());
        st.reason = Some("WorkflowStepTimedOut".into());
        st.finished_at = Some(at);
        upsert_condition(st, cond("Failed", "WorkflowStepTimedOut", at));
    }
}

/// The workflow reached its end: all steps Succeeded, or one Failed.
pub fn workflow_finished(run: &mut AgentRun, failed: bool, at: Ts) {
    let st = status(run);
    st.updated_at = Some(at);
    st.finished_at = Some(at);
    if let Some(wf) = st.workflow.as_mut() {
        wf.phase = Some(if failed { "Failed" } else { "Succeeded" }.into());
    }
    if failed {
        st.phase = Some("Failed".into());
        st.reason = Some("WorkflowStepFailed".into());
        upsert_condition(st, cond("Failed", "WorkflowStepFailed", at));
    } else {
        st.phase = Some("Succeeded".into());
        upsert_condition(st, cond("Succeeded", "Completed", at));
    }
}

/// Where a Job sits in a workflow.
#[derive(Clone, Debug)]
pub struct StepRef {
    pub index: u32,
    pub name: String,
    pub attempt: u32,
}

/// The Job `submitJobRun` creates (plus what the API server adds). `ttl` is set only by older controllers and
/// other producers ("TTL at creation").
pub fn job(run: &AgentRun, uid: &str, step: Option<&StepRef>, ttl: Option<i64>, created: Ts) -> Job {
    let run_name = run.metadata.name.clone().unwrap_or_default();
    let ns = run.metadata.namespace.clone().unwrap_or_default();
    let name = match step {
        None => job_name(&run_name, "job"),
        Some(s) => job_name(&run_name, &format!("step-{}-attempt-{}", s.index, s.attempt)),
    };
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_AGENT_RUN.to_string(), run_name.clone());
    if let Some(agent) = run.spec.agent_ref.as_ref() {
        labels.insert(LABEL_AGENT.to_string(), agent.name.clone());
    }
    labels.insert(LABEL_PROVIDER.to_string(), "codex".into());
    if let Some(s) = step {
        labels.insert(LABEL_STEP.to_string(), s.name.clone());
        labels.insert(LABEL_STEP_INDEX.to_string(), s.index.to_string());
    }
    let mut m = meta(&ns, &name, uid, created);
    m.generation = Some(1);
    m.labels = Some(labels);
    m.owner_references = Some(vec![OwnerReference {
        api_version: AGENTRUN_API_VERSION.into(),
        kind: "AgentRun".into(),
        name: run_name,
        uid: run.metadata.uid.clone().unwrap_or_default(),
        ..OwnerReference::default()
    }]);
    Job { metadata: m, spec: JobSpec { ttl_seconds_after_finished: ttl }, status: JobStatus::default() }
}

/// The Job controller created the Pod.
pub fn job_started(job: &mut Job, at: Ts) {
    job.status.start_time = Some(truncate(at));
}

/// The Job controller's terminal conditions (interim `SuccessCriteriaMet`/`FailureTarget` first).
pub fn job_finished(job: &mut Job, failed: bool, at: Ts) {
    let at = truncate(at);
    if failed {
        job.status.failed = Some(1);
        job.status.conditions.push(cond("FailureTarget", "BackoffLimitExceeded", at));
        job.status.conditions.push(cond("Failed", "BackoffLimitExceeded", at));
    } else {
        job.status.succeeded = Some(1);
        job.status.completion_time = Some(at);
        job.status.conditions.push(cond("SuccessCriteriaMet", "CompletionsReached", at));
        job.status.conditions.push(cond("Complete", "CompletionsReached", at));
    }
}

/// The controller's TTL patch after collecting: a spec change, so the API server bumps the generation.
pub fn job_ttl_patched(job: &mut Job, ttl: i64) {
    job.spec.ttl_seconds_after_finished = Some(ttl);
    bump_generation(job);
}

fn bump_generation(job: &mut Job) {
    job.metadata.generation = Some(job.metadata.generation.unwrap_or(1) + 1);
}

/// The TTL-after-finished controller's foreground deletion: a deletionTimestamp and the finalizer first.
pub fn job_deleting(job: &mut Job, at: Ts) {
    job.metadata.deletion_timestamp = Some(k8s_time(truncate(at)));
    bump_generation(job);
    job.metadata.finalizers = Some(vec!["foregroundDeletion".into()]);
}

pub fn pod(job: &Job, suffix: &str, uid: &str, node: &str, created: Ts) -> Pod {
    let job_name = job.metadata.name.clone().unwrap_or_default();
    let job_uid = job.metadata.uid.clone().unwrap_or_default();
    let mut labels = job.metadata.labels.clone().unwrap_or_default();
    labels.insert(objects::LABEL_JOB_NAME.into(), job_name.clone());
    labels.insert(objects::LABEL_CONTROLLER_UID.into(), job_uid.clone());
    let mut m = meta(
        job.metadata.namespace.as_deref().unwrap_or_default(),
        &format!("{job_name}-{suffix}"),
        uid,
        created,
    );
    m.labels = Some(labels);
    m.owner_references = Some(vec![OwnerReference {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name: job_name,
        uid: job_uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    m.finalizers = Some(vec!["batch.kubernetes.io/job-tracking".into()]);
    Pod {
        metadata: m,
        spec: PodSpec { node_name: Some(node.into()) },
        status: PodStatus { phase: Some("Pending".into()), container_statuses: Vec::new() },
    }
}

pub fn pod_running(pod: &mut Pod) {
    pod.status.phase = Some("Running".into());
}

pub fn pod_terminated(pod: &mut Pod, exit_code: i64, at: Ts) {
    pod.status.phase = Some(if exit_code == 0 { "Succeeded" } else { "Failed" }.into());
    pod.status.container_statuses = vec![ContainerStatus {
        name: RUNNER_CONTAINER.into(),
        state: Some(ContainerState {
            terminated: Some(ContainerTerminated {
                exit_code,
                reason: Some(if exit_code == 0 { "Completed" } else { "Error" }.into()),
                started_at: None,
                finished_at: Some(truncate(at)),
            }),
        }),
    }];
}

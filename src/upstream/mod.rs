//! The upstream boundary: the one place that knows how the agents controller (proompteng/lab,
//! `services/agents/src/server/agents-controller/`), the Kubernetes Job and TTL controllers and the kubelet
//! write AgentRuns, Jobs and Pods. Sources decode watch events into the projections of [`objects`]; this
//! module turns each into an engine update with named fields ([`crate::engine::model`]), so every upstream
//! quirk (step messages, hashed Job names, how TTLs and retention are parsed, the retain annotation) lives
//! here, each with a test that names the upstream behaviour it reproduces. [`shapes`] builds objects the
//! way upstream writes them, for the demo, the stand-in and the tests.

pub mod lease;
pub mod objects;
pub mod shapes;

pub use shapes::*;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde_json::Value;

use crate::{
    engine::{
        Input, Ts, Update,
        facts::{RunOutcome, Runtime},
        model::*,
    },
    source::{Change, Observation},
};
use objects::{AgentRun, Condition, Job, Pod};

/// Upstream clamps the Job TTL it patches to this range (`job-runtime.ts`, `normalizeRunnerJobTtlSeconds`).
pub const CONTROLLER_TTL_MIN: i64 = 30;
pub const CONTROLLER_TTL_MAX: i64 = 604_800;
/// The controller's default when `AGENTS_AGENT_RUNNER_JOB_TTL_SECONDS` is unset or unparseable.
pub const CONTROLLER_TTL_DEFAULT: i64 = 600;

/// The controller settings the exporter must know to read a run the way the controller does.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamConfig {
    /// The TTL the controller patches onto Jobs of runs that set none (see [`controller_job_ttl`]).
    pub default_job_ttl: i64,
    /// `AGENTS_CONTROLLER_AGENTRUN_RETENTION_SECONDS`: retention of runs without `spec.ttlSecondsAfterFinished`
    /// (`None` when disabled).
    pub default_retention: Option<i64>,
    /// `AGENTS_CONTROLLER_AGENTRUN_RETENTION_ZERO_TTL_MAX_SECONDS`: retention of runs with
    /// `spec.ttlSecondsAfterFinished: 0` (`None`: kept forever).
    pub zero_ttl_retention: Option<i64>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            default_job_ttl: CONTROLLER_TTL_DEFAULT,
            default_retention: Some(30 * 86_400),
            zero_ttl_retention: None,
        }
    }
}

/// One observation, in the engine's terms. `None` for objects that are not the engine's business (runs of
/// the `temporal` and `custom` runtimes, templates, Jobs of no AgentRun, Pods of no Job) or lack identity.
pub fn input(obs: &Observation, cfg: &UpstreamConfig) -> Option<Input> {
    let update = match &obs.change {
        Change::Upsert(o) => object_update(o, false, cfg)?,
        Change::Delete(o) => object_update(o, true, cfg)?,
        Change::RelistBegin { kind, namespace } => {
            Update::RelistBegin { kind: *kind, namespace: namespace.clone() }
        }
        Change::RelistEnd { kind, namespace } => {
            Update::RelistEnd { kind: *kind, namespace: namespace.clone() }
        }
    };
    Some(Input { at: obs.at, update })
}

fn object_update(o: &objects::Object, gone: bool, cfg: &UpstreamConfig) -> Option<Update> {
    match o {
        objects::Object::AgentRun(r) => run_update(r, gone, cfg).map(Update::Run),
        objects::Object::Job(j) => job_update(j, gone).map(Update::Job),
        objects::Object::Pod(p) => pod_update(p, gone).map(Update::Pod),
    }
}

pub fn ts(t: &Time) -> Ts {
    Ts::from_timestamp(t.0)
}

pub fn time(t: Ts) -> Time {
    Time(t.to_timestamp())
}

fn object_id(meta: &ObjectMeta) -> Option<ObjectId> {
    Some(ObjectId {
        namespace: meta.namespace.clone().filter(|s| !s.is_empty())?,
        name: meta.name.clone().filter(|s| !s.is_empty())?,
        uid: meta.uid.clone().filter(|s| !s.is_empty())?,
    })
}

// ---------------------------------------------------------------------------------------------------------
// Numbers as the controller parses them
// ---------------------------------------------------------------------------------------------------------

/// JavaScript's `Number.parseFloat`: the longest numeric prefix after leading white space (`"45s"` → 45,
/// `"1e3"` → 1000, `"Infinity"` → ∞), else NaN (`None`).
pub fn parse_float(s: &str) -> Option<f64> {
    let s = s.trim_start();
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    if s[i..].starts_with("Infinity") {
        return Some(if b.first() == Some(&b'-') { f64::NEG_INFINITY } else { f64::INFINITY });
    }
    let digits = |i: &mut usize| {
        let from = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - from
    };
    let mut mantissa = digits(&mut i);
    if i < b.len() && b[i] == b'.' {
        let mut j = i + 1;
        let frac = digits(&mut j);
        if mantissa + frac > 0 {
            mantissa += frac;
            i = j;
        }
    }
    if mantissa == 0 {
        return None;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
            j += 1;
        }
        if digits(&mut j) > 0 {
            i = j;
        }
    }
    s[..i].parse::<f64>().ok()
}

/// `parseOptionalNumber` (`job-runtime.ts`): a finite number, or a non-blank string read with `parseFloat`;
/// anything else (booleans, objects, `"soon"`) is absent.
pub fn parse_optional_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64().filter(|f| f.is_finite()),
        Value::String(s) if !s.trim().is_empty() => parse_float(s).filter(|f| f.is_finite()),
        _ => None,
    }
}

/// `normalizeRunnerJobTtlSeconds` (`job-runtime.ts`): ≤ 0 → no TTL patch; else floored and clamped to
/// [30 s, 7 d].
fn normalize_job_ttl(v: f64) -> Option<i64> {
    if !v.is_finite() || v <= 0.0 {
        return None;
    }
    Some((v.floor().min(CONTROLLER_TTL_MAX as f64) as i64).clamp(CONTROLLER_TTL_MIN, CONTROLLER_TTL_MAX))
}

/// The Job TTL the controller patches on after collection (`resolveRunnerJobTtlSeconds`): the run's
/// `runtime.config.ttlSecondsAfterFinished` when it parses as a number, else the controller default.
pub fn planned_job_ttl(config_value: Option<&Value>, default_job_ttl: i64) -> Option<i64> {
    match config_value.and_then(parse_optional_number) {
        Some(v) => normalize_job_ttl(v),
        None => normalize_job_ttl(default_job_ttl as f64),
    }
}

/// The default Job TTL from the value of `AGENTS_AGENT_RUNNER_JOB_TTL_SECONDS`, exactly as
/// `runtime-config.ts` reads it (`parsePositiveInt` → `parseInt`, negative or unparseable → 600, then
/// `max(30, …)`) and `job-runtime.ts` clamps it (≤ 7 d).
pub fn controller_job_ttl(env_value: Option<&str>) -> i64 {
    let parsed = env_value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .and_then(parse_int)
        .filter(|v| *v >= 0)
        .unwrap_or(CONTROLLER_TTL_DEFAULT);
    parsed.clamp(CONTROLLER_TTL_MIN, CONTROLLER_TTL_MAX)
}

/// `AGENTS_CONTROLLER_AGENTRUN_RETENTION_SECONDS` as `runtime-config.ts` and `index.ts` read it: unset or
/// blank → 30 days; otherwise `parseInt` (`"2.592e+06"` → 2), and anything not a non-negative number → 0,
/// which disables retention (`None`).
pub fn retention_env(value: Option<&str>) -> Option<i64> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Some(30 * 86_400),
        Some(v) => parse_int(v).filter(|n| *n > 0),
    }
}

/// `AGENTS_CONTROLLER_AGENTRUN_RETENTION_ZERO_TTL_MAX_SECONDS`: `max(0, parsePositiveInt(v, 0))`; 0 keeps
/// runs with `spec.ttlSecondsAfterFinished: 0` forever (`None`).
pub fn zero_ttl_retention_env(value: Option<&str>) -> Option<i64> {
    value.map(str::trim).and_then(parse_int).filter(|n| *n > 0)
}

/// JavaScript's `Number.parseInt(s, 10)`, saturated to i64.
fn parse_int(s: &str) -> Option<i64> {
    let s = s.trim_start();
    let (neg, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let digits: &str = &rest[..rest.bytes().take_while(u8::is_ascii_digit).count()];
    if digits.is_empty() {
        return None;
    }
    let v = digits.bytes().fold(0i64, |acc, d| acc.saturating_mul(10).saturating_add((d - b'0') as i64));
    Some(if neg { -v } else { v })
}

/// `isAgentRunRetainAnnotated` (`index.ts`).
pub fn is_retained(annotations: Option<&BTreeMap<String, String>>) -> bool {
    let value = annotations.and_then(|a| a.get(objects::ANNOTATION_RETAIN));
    value.is_some_and(|v| {
        matches!(v.trim().to_lowercase().as_str(), "1" | "true" | "yes" | "y" | "on" | "keep" | "forever")
    })
}

/// `resolveAgentRunRetentionSeconds` and `getAgentRunRetentionDecision` (`index.ts`): how long a finished
/// run is kept (`None`: forever).
pub fn retention(spec_value: Option<&Value>, retained: bool, cfg: &UpstreamConfig) -> Option<i64> {
    if retained {
        return None;
    }
    let window = match spec_value.and_then(parse_optional_number) {
        Some(v) if v > 0.0 => Some(v.floor().min(i64::MAX as f64) as i64),
        Some(0.0) => cfg.zero_ttl_retention,
        _ => cfg.default_retention,
    };
    window.filter(|w| *w > 0)
}

// ---------------------------------------------------------------------------------------------------------
// AgentRuns
// ---------------------------------------------------------------------------------------------------------

/// Step messages the workflow reconciler writes (`workflow-reconciler.ts`).
const MSG_JOB_MISSING: &str = "Job missing";
const MSG_JOB_MISSING_RETRYING: &str = "Job missing; retrying";
const MSG_TIMED_OUT: &str = "Step timed out";
const MSG_TIMED_OUT_RETRYING: &str = "Step timed out; retrying";
const MSG_NO_JOB_REFERENCE: &str = "Job reference missing";

fn step_phase(phase: Option<&str>) -> StepPhase {
    match phase {
        Some("Pending") => StepPhase::Pending,
        Some("Running") => StepPhase::Running,
        Some("Retrying") => StepPhase::Retrying,
        Some("Succeeded") => StepPhase::Succeeded,
        Some("Failed") => StepPhase::Failed,
        _ => StepPhase::Other,
    }
}

/// What the write that put a step in `phase` did with its Job, from the message that write set.
///
/// Upstream sets the message only on some transitions and copies it forward on every other write, so a message stays
/// after the transition that wrote it: `Job missing; retrying` is still there when the next attempt
/// succeeds. A message is therefore read only with the phase it is written with: `Retrying` and `Failed`
/// always come with their own message; `Succeeded` never writes one.
pub fn step_consumption(phase: StepPhase, message: Option<&str>) -> Option<Consumption> {
    let message = message.unwrap_or_default();
    match phase {
        StepPhase::Succeeded => Some(Consumption::Collected),
        StepPhase::Retrying => Some(match message {
            MSG_JOB_MISSING_RETRYING => Consumption::Missing,
            MSG_TIMED_OUT_RETRYING => Consumption::Abandoned,
            _ => Consumption::Collected,
        }),
        StepPhase::Failed => match message {
            MSG_JOB_MISSING => Some(Consumption::Missing),
            MSG_TIMED_OUT => Some(Consumption::Abandoned),
            MSG_NO_JOB_REFERENCE => None,
            _ => Some(Consumption::Collected),
        },
        StepPhase::Pending | StepPhase::Running | StepPhase::Other => None,
    }
}

fn terminal_outcome(phase: Option<&str>) -> Option<RunOutcome> {
    match phase? {
        "Succeeded" => Some(RunOutcome::Succeeded),
        "Failed" => Some(RunOutcome::Failed),
        "Cancelled" => Some(RunOutcome::Cancelled),
        _ => None,
    }
}

fn is_missing_reason(reason: &str) -> bool {
    reason == "JobMissing" || reason == "WorkflowJobMissing"
}

fn condition_time(conditions: &[Condition], type_: &str) -> Option<Ts> {
    conditions.iter().find(|c| c.type_ == type_ && c.is_true()).and_then(|c| c.last_transition_time)
}

fn small(v: Option<i64>) -> Option<u32> {
    v.and_then(|v| u32::try_from(v).ok())
}

pub fn run_update(o: &AgentRun, gone: bool, cfg: &UpstreamConfig) -> Option<RunUpdate> {
    let meta = &o.metadata;
    let id = object_id(meta)?;
    let runtime = match o.spec.runtime.as_ref().map(|r| r.type_.as_str()) {
        Some("job") => Runtime::Job,
        Some("workflow") => Runtime::Workflow,
        // temporal and custom runtimes create no Jobs.
        _ => return None,
    };
    let status = o.status.clone().unwrap_or_default();
    if status.phase.as_deref() == Some("Template") {
        return None;
    }
    let ttl_value = o
        .spec
        .runtime
        .as_ref()
        .and_then(|r| r.config.as_ref())
        .and_then(|c| c.ttl_seconds_after_finished.as_ref());
    let retained = is_retained(meta.annotations.as_ref());
    let outcome = terminal_outcome(status.phase.as_deref());
    let missing = status
        .conditions
        .iter()
        .filter(|c| c.is_true())
        .filter_map(|c| {
            let reason = c.reason.as_deref().filter(|r| is_missing_reason(r))?;
            Some((reason.to_owned(), c.last_transition_time.or(status.updated_at)?))
        })
        .collect();
    let job = status
        .runtime_ref
        .as_ref()
        .filter(|r| runtime == Runtime::Job && (r.type_ == "job" || r.type_.is_empty()))
        .and_then(|r| r.name.clone());
    let steps_in = status.workflow.as_ref().map(|w| w.steps.as_slice()).unwrap_or_default();
    let mut steps = Vec::with_capacity(steps_in.len());
    for (i, s) in steps_in.iter().enumerate() {
        let phase = step_phase(s.phase.as_deref());
        let job = s.job_ref.as_ref().and_then(|r| r.name.clone()).filter(|n| !n.is_empty());
        let consumption = job.as_ref().and_then(|_| step_consumption(phase, s.message.as_deref()));
        let iterations = s
            .loop_
            .as_ref()
            .map(|l| l.iterations.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|it| {
                let job = it.job_ref.as_ref().and_then(|r| r.name.clone()).filter(|n| !n.is_empty());
                let it_phase = step_phase(it.phase.as_deref());
                // A retried iteration stays Running with the retry message; only the write in which the step
                // itself is Retrying with the same Job consumed it (the message stays after that write).
                let consumption = match it_phase {
                    StepPhase::Running
                        if phase == StepPhase::Retrying
                            && job.is_some()
                            && job == s.job_ref.as_ref().and_then(|r| r.name.clone()) =>
                    {
                        step_consumption(StepPhase::Retrying, it.message.as_deref())
                    }
                    StepPhase::Succeeded | StepPhase::Failed => {
                        step_consumption(it_phase, it.message.as_deref())
                    }
                    _ => None,
                };
                IterationStatus {
                    index: small(Some(it.index)).unwrap_or(0),
                    attempt: small(it.attempts),
                    finished_at: it.finished_at,
                    job,
                    consumption,
                    running: matches!(it_phase, StepPhase::Running | StepPhase::Pending)
                        && consumption.is_none(),
                }
            })
            .collect();
        steps.push(StepStatus {
            index: i as u32 + 1,
            name: s.name.clone(),
            phase,
            attempt: small(s.attempt),
            started_at: s.started_at,
            transition_at: s.last_transition_time.or(s.finished_at),
            job,
            consumption,
            failed_missing: phase == StepPhase::Failed && s.message.as_deref() == Some(MSG_JOB_MISSING),
            retried_missing: s.message.as_deref() == Some(MSG_JOB_MISSING_RETRYING),
            iterations,
        });
    }
    Some(RunUpdate {
        gone,
        created: meta.creation_timestamp.as_ref().map(ts),
        deleting: meta.deletion_timestamp.as_ref().map(ts),
        runtime,
        agent: o.spec.agent_ref.as_ref().map(|a| a.name.clone()).filter(|a| !a.is_empty()),
        job_ttl: planned_job_ttl(ttl_value, cfg.default_job_ttl),
        retention: retention(o.spec.ttl_seconds_after_finished.as_ref(), retained, cfg),
        status: RunStatus {
            has_phase: status.phase.is_some(),
            outcome,
            reason: status.reason.clone(),
            updated_at: status.updated_at,
            terminal_at: outcome.and_then(|o| condition_time(&status.conditions, o.phase())),
            job,
            missing,
            steps,
        },
        id,
    })
}

// ---------------------------------------------------------------------------------------------------------
// Jobs
// ---------------------------------------------------------------------------------------------------------

/// `makeName` (`run-utils.ts`) cuts names over 63 characters to 54 + `-` + 8 hex characters of a sha1.
pub fn is_hashed_name(name: &str) -> bool {
    name.len() == 63 && name.as_bytes()[54] == b'-' && name[55..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Step index, loop iteration and attempt of a workflow Job: the index and iteration from the labels
/// (`agents.proompteng.ai/step-index`, `step-iteration`), or the name suffix `-step-<i>[-iter-<k>]-attempt-<n>`;
/// the attempt from the suffix only. Jobs carry no attempt label, so a hashed name leaves it unknown.
pub fn step_position(name: &str, labels: &BTreeMap<String, String>) -> Option<StepPosition> {
    let label_index = labels.get(objects::LABEL_STEP_INDEX).and_then(|v| v.parse::<u32>().ok());
    let label_iter = labels.get(objects::LABEL_STEP_ITERATION).and_then(|v| v.parse::<u32>().ok());
    let suffix = if is_hashed_name(name) { None } else { parse_step_suffix(name) };
    let index = label_index.or(suffix.map(|s| s.0))?;
    Some(StepPosition {
        index,
        iteration: label_iter.or(suffix.and_then(|s| s.1)),
        attempt: suffix.map(|s| s.2),
    })
}

fn parse_step_suffix(name: &str) -> Option<(u32, Option<u32>, u32)> {
    let (head, attempt) = name.rsplit_once("-attempt-")?;
    let attempt = attempt.parse().ok()?;
    let (head, iteration) = match head.rsplit_once("-iter-") {
        Some((h, k)) => (h, Some(k.parse().ok()?)),
        None => (head, None),
    };
    let (_, index) = head.rsplit_once("-step-")?;
    Some((index.parse().ok()?, iteration, attempt))
}

/// The Job controller's verdict: a true `Complete` or `Failed` condition (its transition time is the TTL
/// controller's reference), else `completionTime`.
fn job_finish(o: &Job) -> Option<JobFinish> {
    let cond =
        o.status.conditions.iter().find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.is_true());
    if let Some(c) = cond {
        let at = c.last_transition_time.or(o.status.completion_time)?;
        let failed = c.type_ == "Failed";
        return Some(JobFinish { at, failed, reason: if failed { c.reason.clone() } else { None } });
    }
    o.status.completion_time.map(|at| JobFinish { at, failed: false, reason: None })
}

pub fn job_update(o: &Job, gone: bool) -> Option<JobUpdate> {
    let meta = &o.metadata;
    let id = object_id(meta)?;
    let empty = BTreeMap::new();
    let labels = meta.labels.as_ref().unwrap_or(&empty);
    let owner = objects::agentrun_owner(meta);
    let run_name = owner
        .map(|o| o.name.clone())
        .or_else(|| labels.get(objects::LABEL_AGENT_RUN).cloned())
        .filter(|n| !n.is_empty())?;
    let step = step_position(&id.name, labels);
    Some(JobUpdate {
        gone,
        run: RunLink { uid: owner.map(|o| o.uid.clone()).filter(|u| !u.is_empty()), name: run_name },
        step_name: step.and_then(|_| labels.get(objects::LABEL_STEP).cloned()),
        step,
        provider: labels.get(objects::LABEL_PROVIDER).cloned(),
        agent: labels.get(objects::LABEL_AGENT).cloned(),
        created: meta.creation_timestamp.as_ref().map(ts),
        started: o.status.start_time,
        finish: job_finish(o),
        // The API server keeps TTLs in int32; a negative one is rejected there.
        ttl: o.spec.ttl_seconds_after_finished.filter(|t| *t >= 0),
        ttl_patched: o
            .spec
            .ttl_seconds_after_finished
            .and(meta.generation)
            .map(|g| g - i64::from(meta.deletion_timestamp.is_some()) > 1),
        deleting: meta.deletion_timestamp.as_ref().map(ts),
        id,
    })
}

// ---------------------------------------------------------------------------------------------------------
// Pods
// ---------------------------------------------------------------------------------------------------------

pub fn pod_update(o: &Pod, gone: bool) -> Option<PodUpdate> {
    let meta = &o.metadata;
    let id = object_id(meta)?;
    let job_uid = meta
        .owner_references
        .as_ref()
        .and_then(|refs| refs.iter().find(|r| r.kind == "Job" && r.controller == Some(true)))
        .map(|r| r.uid.clone())
        .or_else(|| meta.labels.as_ref().and_then(|l| l.get(objects::LABEL_CONTROLLER_UID).cloned()))
        .filter(|u| !u.is_empty())?;
    let statuses = &o.status.container_statuses;
    // The controller reads the runner's status from the `agent-runner` container (`runner-status.ts`).
    let runner = statuses.iter().find(|c| c.name == objects::RUNNER_CONTAINER).or_else(|| statuses.first());
    let terminated = runner
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .map(|t| PodTermination { at: t.finished_at, exit_code: t.exit_code, reason: t.reason.clone() });
    Some(PodUpdate {
        gone,
        job_uid,
        node: o.spec.node_name.clone(),
        created: meta.creation_timestamp.as_ref().map(ts),
        terminated,
        deleting: meta.deletion_timestamp.as_ref().map(ts),
        id,
    })
}

#[cfg(test)]
mod tests;

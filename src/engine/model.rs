//! What the engine is told: one update of an AgentRun, a Job or a Pod, in the engine's own terms. The
//! upstream boundary (`crate::upstream`) builds these from the watched objects and is the only place that
//! knows how the agents controller, the Job controller and the kubelet write them; the engine sees no
//! Kubernetes type.

use super::{
    facts::{RunOutcome, Runtime},
    time::Ts,
};

/// The kinds the engine understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    AgentRun,
    Job,
    Pod,
}

impl Kind {
    /// The resource name, as in `agentrun_exporter_*{resource=...}`.
    pub fn resource(self) -> &'static str {
        match self {
            Kind::AgentRun => "agentruns",
            Kind::Job => "jobs",
            Kind::Pod => "pods",
        }
    }

    pub const ALL: [Kind; 3] = [Kind::AgentRun, Kind::Job, Kind::Pod];
}

/// An update and when it was observed.
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    pub at: Ts,
    pub update: Update,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Update {
    Run(RunUpdate),
    Job(JobUpdate),
    Pod(PodUpdate),
    /// A (re)list of `kind` in `namespace` (all namespaces when `None`) starts; the objects follow.
    RelistBegin {
        kind: Kind,
        namespace: Option<String>,
    },
    /// The list is complete: every tracked object of that scope it did not contain vanished during the gap.
    RelistEnd {
        kind: Kind,
        namespace: Option<String>,
    },
}

/// Namespace, name and uid of an object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectId {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// An AgentRun whose runtime creates Jobs.
#[derive(Clone, Debug, PartialEq)]
pub struct RunUpdate {
    pub id: ObjectId,
    /// The object is gone (a DELETED event).
    pub gone: bool,
    pub created: Option<Ts>,
    /// `metadata.deletionTimestamp`: the run is being deleted (cancel, retention).
    pub deleting: Option<Ts>,
    pub runtime: Runtime,
    pub agent: Option<String>,
    /// The TTL the controller will patch onto the run's Jobs after collection (`None`: no TTL at all).
    pub job_ttl: Option<i64>,
    /// How long the finished run is kept (`None`: forever).
    pub retention: Option<i64>,
    pub status: RunStatus,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunStatus {
    /// The controller has written a phase.
    pub has_phase: bool,
    pub outcome: Option<RunOutcome>,
    pub reason: Option<String>,
    /// `updatedAt`: the time of the write that produced this status.
    pub updated_at: Option<Ts>,
    /// When the terminal condition (Succeeded/Failed/Cancelled) became true.
    pub terminal_at: Option<Ts>,
    /// Job runtime: the Job the status names.
    pub job: Option<String>,
    /// Conditions saying that a Job was found missing, and since when.
    pub missing: Vec<(String, Ts)>,
    /// Workflow runtime: the steps, in order (index from 1).
    pub steps: Vec<StepStatus>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepPhase {
    Pending,
    Running,
    Retrying,
    Succeeded,
    Failed,
    Other,
}

/// What the write that moved a step (or loop iteration) out of `Running` did with its Job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consumption {
    /// Read the finished Job and recorded its outcome.
    Collected,
    /// Found the Job gone.
    Missing,
    /// Stopped waiting for it (the step timed out): the Job is never read, nor TTL-patched.
    Abandoned,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StepStatus {
    pub index: u32,
    pub name: String,
    pub phase: StepPhase,
    pub attempt: Option<u32>,
    pub started_at: Option<Ts>,
    /// When the step last changed phase.
    pub transition_at: Option<Ts>,
    /// The Job of the current attempt.
    pub job: Option<String>,
    /// Set when the step left `Running` in this status: what it did with `job`.
    pub consumption: Option<Consumption>,
    /// The step failed because its Job was missing.
    pub failed_missing: bool,
    /// An attempt's Job was found missing and the step retried: upstream leaves that message on the step.
    pub retried_missing: bool,
    pub iterations: Vec<IterationStatus>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct IterationStatus {
    pub index: u32,
    pub attempt: Option<u32>,
    pub finished_at: Option<Ts>,
    pub job: Option<String>,
    /// `Running` iterations: `None`; finished ones: what the write did with `job`.
    pub consumption: Option<Consumption>,
    pub running: bool,
}

/// The AgentRun a Job belongs to: its uid (owner reference) when known, and its name (label).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunLink {
    pub uid: Option<String>,
    pub name: String,
}

/// Where a workflow Job sits: step index (from 1), loop iteration, attempt. The attempt is `None` when the
/// Job's name does not tell it (hashed long names); the run's status then does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepPosition {
    pub index: u32,
    pub iteration: Option<u32>,
    pub attempt: Option<u32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct JobUpdate {
    pub id: ObjectId,
    pub gone: bool,
    pub run: RunLink,
    pub step: Option<StepPosition>,
    pub step_name: Option<String>,
    pub provider: Option<String>,
    pub agent: Option<String>,
    pub created: Option<Ts>,
    pub started: Option<Ts>,
    pub finish: Option<JobFinish>,
    pub ttl: Option<i64>,
    /// With a TTL: whether it was patched on after creation, which is what the current controller does once it
    /// has collected the Job (the spec changed: `metadata.generation` above 1, not counting the deletion's own
    /// bump). `None` when the generation is unknown.
    pub ttl_patched: Option<bool>,
    pub deleting: Option<Ts>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct JobFinish {
    pub at: Ts,
    pub failed: bool,
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PodUpdate {
    pub id: ObjectId,
    pub gone: bool,
    /// The uid of the Job that owns the Pod.
    pub job_uid: String,
    pub node: Option<String>,
    pub created: Option<Ts>,
    pub terminated: Option<PodTermination>,
    pub deleting: Option<Ts>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PodTermination {
    /// `None` when the kubelet did not say; the engine uses the observation time.
    pub at: Option<Ts>,
    pub exit_code: i64,
    pub reason: Option<String>,
}

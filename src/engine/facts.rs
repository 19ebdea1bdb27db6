//! Lifecycle facts: what the tracker concluded, with object-derived times. Spans and metrics are both
//! projections of these, so they cannot disagree.

use std::sync::Arc;

use super::time::{Stamp, Ts};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Runtime {
    Job,
    Workflow,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Job => "job",
            Runtime::Workflow => "workflow",
        }
    }
}

/// Identity and bounded context of an AgentRun, shared by all facts about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunInfo {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    pub uid: Arc<str>,
    pub runtime: Runtime,
    pub agent: Option<Arc<str>>,
    pub provider: Option<Arc<str>>,
}

/// Where a Job sits in a workflow run.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StepKey {
    /// 1-based step index.
    pub index: u32,
    /// Loop iteration, for loop steps.
    pub iteration: Option<u32>,
    pub attempt: u32,
}

impl StepKey {
    /// The first Job of a workflow.
    pub fn first() -> Self {
        StepKey { index: 1, iteration: None, attempt: 1 }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobInfo {
    pub name: Arc<str>,
    pub uid: Arc<str>,
    pub step: Option<StepKey>,
    pub step_name: Option<Arc<str>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub name: Arc<str>,
    pub uid: Arc<str>,
    pub node: Option<Arc<str>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TtlApplied {
    AtCreation,
    AfterCollection,
}

impl TtlApplied {
    pub fn as_str(self) -> &'static str {
        match self {
            TtlApplied::AtCreation => "at_creation",
            TtlApplied::AfterCollection => "after_collection",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ttl {
    pub seconds: i64,
    pub applied: TtlApplied,
}

/// What the consuming status write made of the Job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CollectOutcome {
    Succeeded,
    Failed,
    /// The write found the Job gone (`JobMissing` / `WorkflowJobMissing`).
    Missing,
    /// The step timed out and moved on without reading the Job; nobody will collect it or patch its TTL.
    Abandoned,
}

impl CollectOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CollectOutcome::Succeeded => "succeeded",
            CollectOutcome::Failed => "failed",
            CollectOutcome::Missing => "missing",
            CollectOutcome::Abandoned => "abandoned",
        }
    }
}

/// Who deleted a Job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeletionCause {
    /// The TTL-after-finished controller: the Job had finished, had a TTL, and went at `finish + TTL`.
    Ttl,
    /// The agents controller, because the AgentRun was deleted (a cancel, or retention of a finished run).
    WithRun,
    /// Anyone else.
    Other,
}

impl DeletionCause {
    pub fn as_str(self) -> &'static str {
        match self {
            DeletionCause::Ttl => "ttl",
            DeletionCause::WithRun => "with_run",
            DeletionCause::Other => "other",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Submit,
    Pending,
    Run,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Submit => "submit",
            Phase::Pending => "pending",
            Phase::Run => "run",
        }
    }

    pub fn span_name(self) -> &'static str {
        match self {
            Phase::Submit => "job.submit",
            Phase::Pending => "job.pending",
            Phase::Run => "job.run",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    Succeeded,
    Failed,
    Cancelled,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Succeeded => "succeeded",
            RunOutcome::Failed => "failed",
            RunOutcome::Cancelled => "cancelled",
        }
    }

    pub fn phase(self) -> &'static str {
        match self {
            RunOutcome::Succeeded => "Succeeded",
            RunOutcome::Failed => "Failed",
            RunOutcome::Cancelled => "Cancelled",
        }
    }
}

/// A `JobMissing` / `WorkflowJobMissing` condition, at its own time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingEvent {
    pub at: Ts,
    pub reason: Arc<str>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Fact {
    /// A `namespace`/`runtime` pair was seen for the first time: counters start at zero for it.
    SeriesSeen { namespace: Arc<str>, runtime: Runtime },
    /// `job.submit`, `job.pending` or `job.run` (the latter for a Job that finished).
    JobPhase {
        run: Arc<RunInfo>,
        job: Arc<JobInfo>,
        phase: Phase,
        start: Stamp,
        end: Stamp,
        /// `job.run` only: the Job's Failed condition reason, when it failed.
        failure: Option<Option<Arc<str>>>,
    },
    /// `pod.run`: a Pod's container terminated, or the Pod went away first.
    PodRan {
        run: Arc<RunInfo>,
        job: Arc<JobInfo>,
        pod: PodInfo,
        start: Stamp,
        end: Stamp,
        exit_code: Option<i64>,
        reason: Option<Arc<str>>,
    },
    /// `job.collect`: the status write that consumed the finished Job.
    JobCollected {
        run: Arc<RunInfo>,
        job: Arc<JobInfo>,
        finished: Stamp,
        collected: Stamp,
        outcome: CollectOutcome,
        /// TTL in force when the span is emitted, and the margin if both are known.
        ttl: Option<Ttl>,
    },
    /// TTL minus collection delay, once per Job, as soon as both are known.
    TtlMargin {
        run: Arc<RunInfo>,
        job: Arc<JobInfo>,
        ttl: Ttl,
        margin_seconds: f64,
        /// Count this Job in `agentrun_job_ttl_margin_exceeded_total` (once per Job).
        exceeded: bool,
    },
    /// The Job is gone (or being deleted); settled whether it was collected first.
    JobGone {
        run: Arc<RunInfo>,
        job: Arc<JobInfo>,
        /// Job start, for a Job that never finished (its `job.run` then ends here).
        started: Option<Stamp>,
        finished: Option<Stamp>,
        deleted: Stamp,
        ttl: Option<Ttl>,
        /// TTL minus collection delay, when the collection (or the write that found it missing) is known.
        margin_seconds: Option<f64>,
        /// Not collected first. With `cause` other than [`DeletionCause::WithRun`] that is an incident;
        /// deleted with its run it is a cancel or retention.
        before_collection: bool,
        cause: DeletionCause,
        /// The run had finished when it was deleted (retention) rather than running (a cancel).
        run_finished: bool,
        /// Count this Job in `agentrun_job_ttl_margin_exceeded_total` (once per Job).
        exceeded: bool,
    },
    /// `workflow.step`: a step reached Succeeded or Failed.
    StepFinished {
        run: Arc<RunInfo>,
        index: u32,
        name: Arc<str>,
        start: Stamp,
        end: Stamp,
        failed: bool,
        missing: Vec<MissingEvent>,
    },
    /// `agentrun`: the run is terminal, or was deleted before it finished.
    RunFinished {
        run: Arc<RunInfo>,
        start: Stamp,
        end: Stamp,
        outcome: Option<RunOutcome>,
        reason: Option<Arc<str>>,
        missing: Vec<MissingEvent>,
    },
    /// Every span of the run has been emitted; nothing more will come for its trace.
    RunComplete { run: Arc<RunInfo> },
}

/// A fact plus what to do with it. Facts that lie before the process started (found in the first list after
/// a restart) are exported as spans but not counted, so a restart never inflates a rate; runs that finished
/// before the backfill window export no spans.
#[derive(Clone, Debug, PartialEq)]
pub struct Emitted {
    pub fact: Fact,
    pub counted: bool,
    pub exported: bool,
}

impl Fact {
    pub fn run(&self) -> Option<&Arc<RunInfo>> {
        match self {
            Fact::SeriesSeen { .. } => None,
            Fact::JobPhase { run, .. }
            | Fact::PodRan { run, .. }
            | Fact::JobCollected { run, .. }
            | Fact::TtlMargin { run, .. }
            | Fact::JobGone { run, .. }
            | Fact::StepFinished { run, .. }
            | Fact::RunFinished { run, .. }
            | Fact::RunComplete { run } => Some(run),
        }
    }
}

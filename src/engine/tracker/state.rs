//! What the tracker remembers of each object: one named struct per piece of state.

use std::sync::Arc;

use super::super::{
    facts::{JobInfo, MissingEvent, PodInfo, RunInfo, RunOutcome, StepKey, Ttl},
    model::Consumption as ConsumptionKind,
    time::{Stamp, Ts},
};
use super::{gauges::JobGauge, small::Small};

/// A status write that consumed a Job (collected it, found it missing, or gave up on it).
#[derive(Clone, Debug)]
pub(super) struct Consumption {
    /// [`name_key`](super::super::ids::name_key) of the Job's name.
    pub job: u64,
    pub at: Stamp,
    pub kind: ConsumptionKind,
    /// When the exporter saw that write (the TTL patch that follows it is waited for from here).
    pub seen_at: Ts,
}

impl Consumption {
    pub fn missing(&self) -> bool {
        self.kind == ConsumptionKind::Missing
    }
}

/// The first status write that named a Job as the current one of its step (or of the run).
#[derive(Clone, Debug)]
pub(super) struct Reference {
    pub job: u64,
    /// The step attempt the write gave it.
    pub attempt: Option<u32>,
}

/// A Job of the run, in workflow order, kept after the Job itself is forgotten.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct HistoryEntry {
    pub step: Option<StepKey>,
    pub job: u64,
    pub finished: Option<Ts>,
}

/// The run's terminal write.
#[derive(Clone, Debug)]
pub(super) struct RunTerminal {
    pub outcome: RunOutcome,
    pub at: Stamp,
    pub reason: Option<Arc<str>>,
    /// When the terminal write was observed.
    pub seen_at: Ts,
}

/// A step's terminal write.
#[derive(Clone, Copy, Debug)]
pub(super) struct StepTerminal {
    pub at: Stamp,
    pub failed: bool,
}

#[derive(Clone, Debug)]
pub(super) struct Step {
    pub index: u32,
    pub name: Arc<str>,
    pub first_started: Option<Ts>,
    pub terminal: Option<StepTerminal>,
    pub missing: Vec<MissingEvent>,
    pub emitted: bool,
    /// Where the emitted `workflow.step` span starts: no later Job of the step may start before it.
    pub span_start: Option<Ts>,
}

#[derive(Debug)]
pub(super) struct Run {
    pub info: Arc<RunInfo>,
    pub created: Stamp,
    pub deleted: Option<Stamp>,
    pub gone: bool,
    pub retention: Option<i64>,
    /// The TTL the controller will patch onto the run's Jobs (`None`: none).
    pub job_ttl: Option<i64>,
    pub seen_nonterminal: bool,
    /// Jobs the status named (running or consumed), with the attempt it gave them.
    pub referenced: Small<Reference>,
    /// Boxed: set only at the end of the run's life.
    pub terminal: Option<Box<RunTerminal>>,
    pub missing: Vec<MissingEvent>,
    /// A `Vec`, not a [`Small`]: a Job is consumed at the end of the run's life, and a `Small` of one would
    /// make every run larger for the sake of that short time.
    pub consumed: Vec<Consumption>,
    pub steps: Vec<Step>,
    pub history: Small<HistoryEntry>,
    /// Uids of the run's Jobs.
    pub jobs: Small<Arc<str>>,
    pub root_emitted: bool,
    /// When the root span was emitted (the run's lifecycle may complete a settle time after it).
    pub root_emitted_at: Option<Ts>,
    /// Outside the backfill window: facts are counted when new, never exported.
    pub export: bool,
    /// The retention this run contributes to its namespace's gauge.
    pub retention_counted: Option<i64>,
}

impl Run {
    pub fn new(info: Arc<RunInfo>, created: Stamp, export: bool) -> Self {
        Run {
            info,
            created,
            deleted: None,
            gone: false,
            retention: None,
            job_ttl: None,
            seen_nonterminal: false,
            referenced: Small::default(),
            terminal: None,
            missing: Vec::new(),
            consumed: Vec::new(),
            steps: Vec::new(),
            history: Small::default(),
            jobs: Small::default(),
            root_emitted: false,
            root_emitted_at: None,
            export,
            retention_counted: None,
        }
    }

    pub fn consumption_of(&self, job: u64) -> Option<&Consumption> {
        self.consumed.iter().find(|c| c.job == job)
    }

    pub fn reference_of(&self, job: u64) -> Option<&Reference> {
        self.referenced.iter().find(|r| r.job == job)
    }

    /// Records (or moves, when its attempt became known) a Job in the run's workflow order.
    pub fn remember_job(&mut self, step: Option<StepKey>, job: u64, finished: Option<Ts>) {
        match self.history.iter_mut().find(|e| e.job == job) {
            Some(e) => {
                e.step = step;
                e.finished = e.finished.or(finished);
            }
            None => self.history.push(HistoryEntry { step, job, finished }),
        }
        self.history.sort();
    }

    /// A Job the status says was consumed, in the workflow order, when its own object was not seen: a process
    /// started after the TTL controller deleted it still finds the write that consumed it. Not its finish: the
    /// status's `finishedAt` is that write's time upstream.
    pub fn remember_consumed_job(&mut self, step: StepKey, job: u64) {
        if !self.history.iter().any(|e| e.job == job) {
            self.history.push(HistoryEntry { step: Some(step), job, finished: None });
            self.history.sort();
        }
    }

    /// The run takes the provider and agent its Jobs are labelled with, when it has none yet.
    pub fn take_labels(&mut self, labels: RunLabels) {
        let RunLabels { provider, agent } = labels;
        if self.info.provider.is_none() && provider.is_some() || self.info.agent.is_none() && agent.is_some()
        {
            let mut info = (*self.info).clone();
            info.provider = info.provider.or(provider);
            info.agent = info.agent.or(agent);
            self.info = Arc::new(info);
        }
    }
}

/// Which facts of a Job were emitted.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Flags(u16);

impl Flags {
    pub const SUBMIT: u16 = 1;
    pub const PENDING: u16 = 2;
    pub const RUN: u16 = 4;
    pub const COLLECT: u16 = 8;
    pub const MARGIN: u16 = 16;
    pub const GONE: u16 = 32;
    pub const EXCEEDED: u16 = 64;

    pub fn has(self, f: u16) -> bool {
        self.0 & f != 0
    }

    pub fn set(&mut self, f: u16) {
        self.0 |= f;
    }
}

#[derive(Clone, Debug)]
pub(super) struct Finish {
    pub at: Ts,
    pub failed: bool,
    pub reason: Option<Arc<str>>,
}

/// Provider and agent, as a Job's labels carry them.
#[derive(Clone, Debug, Default)]
pub(super) struct RunLabels {
    pub provider: Option<Arc<str>>,
    pub agent: Option<Arc<str>>,
}

/// The Job's lifecycle points after clamping, remembered so later spans chain onto earlier ones.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Clamped {
    pub created: Option<Stamp>,
    pub started: Option<Stamp>,
    pub finished: Option<Stamp>,
}

#[derive(Debug)]
pub(super) struct JobTrack {
    pub info: Arc<JobInfo>,
    /// The owning AgentRun: its uid (ownerReference) and name (label).
    pub run_uid: Option<Arc<str>>,
    pub run_name: Arc<str>,
    pub created: Option<Ts>,
    pub started: Option<Ts>,
    /// Boxed, like the other facts of a Job's end: a running Job has none of them.
    pub finish: Option<Box<Finish>>,
    pub ttl: Option<Ttl>,
    pub seen_without_ttl: bool,
    /// First seen already finished and with a TTL (after a restart): whether the current controller patched
    /// it on after collection is known once the consuming write is.
    pub ttl_found_on_finished: bool,
    /// The attempt is not in the Job's name (hashed): it comes from the run's status.
    pub attempt_unknown: bool,
    pub first_seen: Ts,
    pub deletion: Option<Box<Deletion>>,
    pub gone: bool,
    pub emitted: Flags,
    pub submit_start: Option<Ts>,
    pub clamped: Clamped,
    pub pods: Small<Arc<str>>,
    /// The Job's provider and agent labels, held only until its run is known and takes them.
    pub labels: Option<Box<RunLabels>>,
    /// What the Job contributes to its namespace's gauges.
    pub gauge: JobGauge,
}

impl JobTrack {
    /// A hashed Job name learnt its attempt.
    pub fn set_attempt(&mut self, attempt: u32) {
        let mut info = (*self.info).clone();
        if let Some(step) = info.step.as_mut() {
            step.attempt = attempt;
        }
        self.info = Arc::new(info);
        self.attempt_unknown = false;
    }
}

/// A Job's deletion: when it was deleted, and when the exporter noticed.
#[derive(Clone, Copy, Debug)]
pub(super) struct Deletion {
    pub at: Stamp,
    pub noticed: Ts,
}

/// How a Pod's runner container ended.
#[derive(Clone, Debug)]
pub(super) struct Termination {
    pub at: Ts,
    pub exit_code: i64,
    pub reason: Option<Arc<str>>,
}

#[derive(Debug)]
pub(super) struct PodTrack {
    pub info: PodInfo,
    pub job_uid: Arc<str>,
    pub created: Option<Ts>,
    /// Boxed: set only at the end of the Pod's life.
    pub terminated: Option<Box<Termination>>,
    pub deleted: Option<Stamp>,
    pub emitted: bool,
}

/// A run whose lifecycle is complete, kept so late events neither re-create it nor re-emit its spans: while
/// its AgentRun exists (it still counts for the retention gauge), or, once deleted, among the namespace's
/// most recent deleted runs (a lagging watch may still deliver an event of it, however late).
#[derive(Debug)]
pub(super) struct DoneRun {
    pub retention: Option<i64>,
}

/// Pushes without the default growth to four elements: a run's Job is consumed once.
pub(super) fn push_small<T>(v: &mut Vec<T>, x: T) {
    if v.len() == v.capacity() {
        v.reserve_exact(1);
    }
    v.push(x);
}

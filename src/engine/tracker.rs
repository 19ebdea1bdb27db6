//! The tracker joins AgentRun ↔ Job ↔ Pod, keeps a compact state of each, and turns state changes into
//! lifecycle facts. It is pure: observations in, facts out, no clock of its own (`now` comes with each
//! observation and each tick), so every case is a plain unit test.
//!
//! Evaluation is level-triggered, like a controller's reconcile: an observation only updates state and marks
//! the run dirty; `evaluate` then emits every fact whose inputs are now known and that was not emitted yet.
//! That makes the result independent of the order in which the three watches deliver their events.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use super::{
    facts::*,
    ids::name_key,
    model::{
        Consumption as ConsumptionKind, Input, JobUpdate, Kind, PodUpdate, RunStatus, RunUpdate, StepPhase,
        StepPosition, Update,
    },
    time::{Stamp, TimeSource, Ts},
};

/// Kubernetes timestamps are whole seconds: a deletion up to this much before `finish + TTL` still counts as
/// the TTL controller's, and a Job deleted up to this much before its run's deletion was deleted with it.
const TTL_DEADLINE_TOLERANCE_MS: i64 = 1000;

#[derive(Clone, Debug)]
pub struct TrackerConfig {
    /// The TTL the controller patches onto Jobs when a run sets none: the gauge's value for a namespace with
    /// no live Job.
    pub default_job_ttl: i64,
    /// How long a verdict waits for a late event from another watch (a Job deletion for the AgentRun write
    /// that consumed it; a collection for the TTL patch that follows it).
    pub settle_ms: i64,
    /// How long after collection a Job may go without a TTL before it counts in `agentrun_jobs_without_ttl`.
    pub ttl_grace_ms: i64,
    /// Facts that lie before this time are exported as spans but not counted in metrics.
    pub count_since: Ts,
    /// Runs found already finished longer than this before `count_since` export no spans at all.
    pub backfill_window_ms: Option<i64>,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            default_job_ttl: crate::upstream::CONTROLLER_TTL_DEFAULT,
            settle_ms: 10_000,
            ttl_grace_ms: 300_000,
            count_since: Ts(i64::MIN),
            backfill_window_ms: None,
        }
    }
}

/// Live values for the gauges, computed on demand.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LiveGauges {
    pub namespaces: BTreeMap<Arc<str>, NamespaceGauges>,
    pub tracked_runs: usize,
    pub tracked_jobs: usize,
    pub tracked_pods: usize,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct NamespaceGauges {
    pub awaiting_collection: u64,
    pub awaiting_collection_max_age: f64,
    pub ttl_margin_remaining: Option<f64>,
    pub job_ttl: Option<(i64, i64)>,
    pub retention: Option<(i64, i64)>,
    pub jobs_without_ttl: u64,
}

/// A status write that consumed a Job (collected it, found it missing, or gave up on it).
#[derive(Clone, Debug)]
struct Consumption {
    /// [`name_key`] of the Job's name.
    job: u64,
    at: Stamp,
    kind: ConsumptionKind,
    seen_at: Ts,
}

impl Consumption {
    fn missing(&self) -> bool {
        self.kind == ConsumptionKind::Missing
    }
}

/// The first status write that named a Job as the current one of its step (or the run).
#[derive(Clone, Debug)]
struct Reference {
    job: u64,
    /// `updatedAt` of that write.
    at: Option<Ts>,
    /// The step attempt the write gave it.
    attempt: Option<u32>,
}

/// A Job of the run, in workflow order, kept after the Job itself is forgotten.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct HistoryEntry {
    step: Option<StepKey>,
    job: u64,
    finished: Option<Ts>,
}

#[derive(Clone, Debug)]
struct Step {
    index: u32,
    name: Arc<str>,
    first_started: Option<Ts>,
    terminal: Option<(Stamp, bool)>,
    missing: Vec<MissingEvent>,
    emitted: bool,
}

#[derive(Debug)]
struct Run {
    info: Arc<RunInfo>,
    created: Stamp,
    deleted: Option<Stamp>,
    gone: bool,
    retention: Option<i64>,
    /// The TTL the controller will patch onto the run's Jobs (`None`: none).
    job_ttl: Option<i64>,
    seen_nonterminal: bool,
    /// Jobs the status named as running, so a later consumption of them is a transition we saw.
    referenced: Vec<Reference>,
    terminal: Option<(RunOutcome, Stamp, Option<Arc<str>>)>,
    missing: Vec<MissingEvent>,
    consumed: Vec<Consumption>,
    steps: Vec<Step>,
    history: Vec<HistoryEntry>,
    jobs: Vec<Arc<str>>,
    root_emitted: bool,
    export: bool,
}

#[derive(Clone, Copy, Debug, Default)]
struct Flags(u16);

impl Flags {
    const SUBMIT: u16 = 1;
    const PENDING: u16 = 2;
    const RUN: u16 = 4;
    const COLLECT: u16 = 8;
    const MARGIN: u16 = 16;
    const GONE: u16 = 32;
    const EXCEEDED: u16 = 64;

    fn has(self, f: u16) -> bool {
        self.0 & f != 0
    }

    fn set(&mut self, f: u16) {
        self.0 |= f;
    }
}

#[derive(Clone, Debug)]
struct Finish {
    at: Ts,
    failed: bool,
    reason: Option<Arc<str>>,
}

#[derive(Debug)]
struct JobTrack {
    info: Arc<JobInfo>,
    namespace: Arc<str>,
    /// The owning AgentRun: its uid (ownerReference) and name (label).
    run_uid: Option<Arc<str>>,
    run_name: Arc<str>,
    created: Option<Ts>,
    started: Option<Ts>,
    finish: Option<Finish>,
    ttl: Option<Ttl>,
    seen_without_ttl: bool,
    /// The attempt is not in the Job's name (hashed): it comes from the run's status.
    attempt_unknown: bool,
    first_seen: Ts,
    deletion: Option<Stamp>,
    deletion_noticed: Option<Ts>,
    gone: bool,
    emitted: Flags,
    submit_start: Option<Ts>,
    clamped: Clamped,
    pods: Vec<Arc<str>>,
    /// The Job's provider and agent labels, held only until its run is known and takes them.
    labels: Option<Box<RunLabels>>,
}

/// Provider and agent, as the Job labels carry them.
type RunLabels = (Option<Arc<str>>, Option<Arc<str>>);

/// The Job's lifecycle points after clamping, remembered so later spans chain onto earlier ones.
#[derive(Clone, Copy, Debug, Default)]
struct Clamped {
    created: Option<Stamp>,
    started: Option<Stamp>,
    finished: Option<Stamp>,
}

#[derive(Debug)]
struct PodTrack {
    info: PodInfo,
    job_uid: Arc<str>,
    created: Option<Ts>,
    terminated: Option<(Ts, i64, Option<Arc<str>>)>,
    deleted: Option<Stamp>,
    emitted: bool,
}

/// A finished run whose lifecycle is complete, kept while its AgentRun exists so late events neither re-create
/// it nor re-emit its spans; it also still counts for the retention gauge.
#[derive(Debug)]
struct DoneRun {
    namespace: Arc<str>,
    retention: Option<i64>,
}

/// How a Job names its AgentRun: by uid (owner reference) or by namespace and name (label).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum RunKey {
    Uid(Arc<str>),
    Name(Arc<str>, Arc<str>),
}

/// A relist in progress: the kind, and its namespace (all when `None`).
type RelistScope = (Kind, Option<Arc<str>>);

#[derive(Debug, Default)]
pub struct Tracker {
    cfg: TrackerConfig,
    now: Ts,
    namespaces: HashSet<Arc<str>>,
    strings: HashSet<Arc<str>>,
    series_seen: HashSet<(Arc<str>, Runtime)>,
    // Boxed values: a table runs at 45–90 % load, so large inline entries would waste a third of it.
    runs: HashMap<Arc<str>, Box<Run>>,
    run_by_name: HashMap<(Arc<str>, Arc<str>), Arc<str>>,
    done: HashMap<Arc<str>, DoneRun>,
    jobs: HashMap<Arc<str>, Box<JobTrack>>,
    pods: HashMap<Arc<str>, Box<PodTrack>>,
    /// Jobs whose AgentRun is not known yet.
    waiting_jobs: HashMap<RunKey, Vec<Arc<str>>>,
    /// Pods whose Job is not known yet, by Job uid.
    waiting_pods: HashMap<Arc<str>, Vec<Arc<str>>>,
    relists: HashMap<RelistScope, HashSet<Arc<str>>>,
    /// Runs to evaluate again at a time (a verdict waiting to settle).
    timers: BTreeMap<Ts, Vec<Arc<str>>>,
    out: Vec<Emitted>,
}

impl Tracker {
    pub fn new(cfg: TrackerConfig) -> Self {
        Tracker { cfg, ..Tracker::default() }
    }

    pub fn now(&self) -> Ts {
        self.now
    }

    /// Applies one update and returns the facts it made known.
    pub fn apply(&mut self, input: Input) -> Vec<Emitted> {
        self.advance(input.at);
        let dirty = match input.update {
            Update::Run(o) => self.upsert_run(&o),
            Update::Job(o) => self.upsert_job(&o),
            Update::Pod(o) => self.upsert_pod(&o),
            Update::RelistBegin { kind, namespace } => {
                let scope = namespace.map(|n| self.intern(&n));
                self.relists.insert((kind, scope), HashSet::new());
                None
            }
            Update::RelistEnd { kind, namespace } => {
                let scope = namespace.map(|n| self.intern(&n));
                self.relist_end(kind, scope);
                None
            }
        };
        if let Some(run_uid) = dirty {
            self.evaluate(&run_uid);
        }
        std::mem::take(&mut self.out)
    }

    /// Advances time to `now` and returns the facts whose wait has elapsed.
    pub fn tick(&mut self, now: Ts) -> Vec<Emitted> {
        self.advance(now);
        std::mem::take(&mut self.out)
    }

    /// Settles every pending verdict as if all waits had elapsed (end of a replay or a demo).
    pub fn flush(&mut self) -> Vec<Emitted> {
        let far = self.timers.keys().next_back().copied().unwrap_or(self.now).max(self.now);
        self.tick(far.add_millis(1))
    }

    fn advance(&mut self, now: Ts) {
        if now > self.now {
            self.now = now;
        }
        while let Some(entry) = self.timers.first_entry() {
            if *entry.key() > self.now {
                break;
            }
            for uid in entry.remove() {
                self.evaluate(&uid);
            }
        }
    }

    fn wake_at(&mut self, at: Ts, run_uid: &str) {
        let list = self.timers.entry(at).or_default();
        if !list.iter().any(|u| &**u == run_uid) {
            list.push(run_uid.into());
        }
    }

    fn intern(&mut self, ns: &str) -> Arc<str> {
        shared_in(&mut self.namespaces, ns)
    }

    fn note_relist(&mut self, kind: Kind, namespace: &Arc<str>, uid: &str) {
        for ((k, scope), seen) in self.relists.iter_mut() {
            if *k == kind && scope.as_ref().is_none_or(|s| s == namespace) {
                seen.insert(uid.into());
            }
        }
    }

    fn relist_end(&mut self, kind: Kind, scope: Option<Arc<str>>) {
        let Some(seen) = self.relists.remove(&(kind, scope.clone())) else {
            return;
        };
        let in_scope = |ns: &Arc<str>| scope.as_ref().is_none_or(|s| s == ns);
        let now = self.now;
        let gap = Stamp { at: now, source: TimeSource::UnknownGap, clamped: false };
        let mut dirty = Vec::new();
        match kind {
            Kind::AgentRun => {
                let vanished: Vec<Arc<str>> = self
                    .runs
                    .iter()
                    .filter(|(uid, r)| in_scope(&r.info.namespace) && !r.gone && !seen.contains(*uid))
                    .map(|(uid, _)| uid.clone())
                    .collect();
                for uid in vanished {
                    if let Some(run) = self.runs.get_mut(&uid) {
                        run.gone = true;
                        run.deleted.get_or_insert(gap);
                        dirty.push(uid);
                    }
                }
                self.done.retain(|uid, d| !in_scope(&d.namespace) || seen.contains(uid));
            }
            Kind::Job => {
                let vanished: Vec<Arc<str>> = self
                    .jobs
                    .iter()
                    .filter(|(uid, j)| in_scope(&j.namespace) && !j.gone && !seen.contains(*uid))
                    .map(|(uid, _)| uid.clone())
                    .collect();
                for uid in vanished {
                    if let Some(job) = self.jobs.get_mut(&uid) {
                        job.gone = true;
                        job.deletion.get_or_insert(gap);
                        job.deletion_noticed.get_or_insert(now);
                        if let Some(run) = self.run_uid_of_job(&uid) {
                            dirty.push(run);
                        }
                    }
                }
            }
            Kind::Pod => {
                let vanished: Vec<Arc<str>> = self
                    .pods
                    .iter()
                    .filter(|(uid, _)| !seen.contains(*uid))
                    .filter(|(_, p)| {
                        self.jobs.get(&p.job_uid).is_none_or(|j| in_scope(&j.namespace))
                            && p.deleted.is_none()
                    })
                    .map(|(uid, _)| uid.clone())
                    .collect();
                for uid in vanished {
                    if let Some(pod) = self.pods.get_mut(&uid) {
                        pod.deleted = Some(gap);
                        let job_uid = pod.job_uid.clone();
                        if let Some(run) = self.run_uid_of_job(&job_uid) {
                            dirty.push(run);
                        }
                    }
                }
            }
        }
        if matches!(kind, Kind::Job | Kind::Pod) {
            // Runs that waited for this list to complete.
            dirty.extend(
                self.runs
                    .iter()
                    .filter(|(_, r)| r.root_emitted && in_scope(&r.info.namespace))
                    .map(|(u, _)| u.clone()),
            );
        }
        dirty.sort();
        dirty.dedup();
        for uid in dirty {
            self.evaluate(&uid);
        }
    }

    /// A shared copy of a low-cardinality string (agent, provider, step, node, reason names).
    fn shared(&mut self, s: &str) -> Arc<str> {
        shared_in(&mut self.strings, s)
    }

    fn run_uid_of_job(&self, job_uid: &str) -> Option<Arc<str>> {
        let job = self.jobs.get(job_uid)?;
        self.resolve_run(job.run_uid.as_deref(), &job.namespace, &job.run_name)
    }

    fn resolve_run(&self, uid: Option<&str>, namespace: &Arc<str>, name: &str) -> Option<Arc<str>> {
        if let Some(uid) = uid {
            return self.runs.get_key_value(uid).map(|(k, _)| k.clone());
        }
        self.run_by_name.get(&(namespace.clone(), name.into())).cloned()
    }

    // ---------------------------------------------------------------------------------------------------
    // AgentRuns
    // ---------------------------------------------------------------------------------------------------

    fn upsert_run(&mut self, o: &RunUpdate) -> Option<Arc<str>> {
        let (uid, name) = (o.id.uid.as_str(), o.id.name.as_str());
        let namespace = self.intern(&o.id.namespace);
        self.note_relist(Kind::AgentRun, &namespace, uid);
        if let Some(done) = self.done.get_mut(uid) {
            if o.gone {
                self.done.remove(uid);
            } else {
                done.retention = o.retention;
            }
            return None;
        }
        let now = self.now;
        if !self.runs.contains_key(uid) {
            let agent = o.agent.as_deref().map(|a| self.shared(a));
            let info = Arc::new(RunInfo {
                namespace: namespace.clone(),
                name: name.into(),
                uid: uid.into(),
                runtime: o.runtime,
                agent,
                provider: None,
            });
            let terminal_before = o.status.outcome.and(o.status.terminal_at.or(o.status.updated_at));
            let export = match (self.cfg.backfill_window_ms, terminal_before) {
                (Some(window), Some(t)) => t.0 >= self.cfg.count_since.0.saturating_sub(window),
                _ => true,
            };
            let run = Run {
                info,
                created: o.created.map(Stamp::object).unwrap_or(Stamp::observed(now)),
                deleted: None,
                gone: false,
                retention: None,
                job_ttl: None,
                seen_nonterminal: false,
                referenced: Vec::new(),
                terminal: None,
                missing: Vec::new(),
                consumed: Vec::new(),
                steps: Vec::new(),
                history: Vec::new(),
                jobs: Vec::new(),
                root_emitted: false,
                export,
            };
            let (key, name_key) = (run.info.uid.clone(), run.info.name.clone());
            self.run_by_name.insert((namespace.clone(), name_key), key.clone());
            self.runs.insert(key, Box::new(run));
            if self.series_seen.insert((namespace.clone(), o.runtime)) {
                self.out.push(Emitted {
                    fact: Fact::SeriesSeen { namespace: namespace.clone(), runtime: o.runtime },
                    counted: true,
                    exported: false,
                });
            }
            self.adopt_jobs(uid, &namespace, name);
        }
        let run = self.runs.get_mut(uid)?;
        run.retention = o.retention;
        run.job_ttl = o.job_ttl;
        if let Some(t) = o.deleting {
            run.deleted.get_or_insert(Stamp::object(t));
        }
        if o.gone {
            run.gone = true;
            run.deleted.get_or_insert(Stamp::observed(now));
        }
        apply_run_status(run, &o.status, now);
        let attempts: Vec<(u64, u32)> =
            run.referenced.iter().filter_map(|r| Some((r.job, r.attempt?))).collect();
        let jobs = run.jobs.clone();
        // Jobs whose names do not tell their attempt (hashed) learn it from the status that names them.
        for job_uid in jobs {
            let Some(job) = self.jobs.get_mut(&job_uid) else { continue };
            if !job.attempt_unknown {
                continue;
            }
            let key = name_key(&job.info.name);
            if let Some((_, attempt)) = attempts.iter().find(|(k, _)| *k == key) {
                set_attempt(job, *attempt);
                let entry = (job.info.step.clone(), key);
                if let Some(run) = self.runs.get_mut(uid) {
                    remember_job(run, entry.0, key, job.finish.as_ref().map(|f| f.at));
                }
            }
        }
        Some(uid.into())
    }

    fn adopt_jobs(&mut self, run_uid: &str, namespace: &Arc<str>, run_name: &str) {
        let mut waiting = self.waiting_jobs.remove(&RunKey::Uid(run_uid.into())).unwrap_or_default();
        waiting.extend(
            self.waiting_jobs.remove(&RunKey::Name(namespace.clone(), run_name.into())).unwrap_or_default(),
        );
        let mut adopted: Vec<(HistoryEntry, Arc<str>)> = Vec::new();
        let mut labels = Vec::new();
        for uid in waiting {
            if let Some(job) = self.jobs.get_mut(&uid) {
                let entry = HistoryEntry {
                    step: job.info.step.clone(),
                    job: name_key(&job.info.name),
                    finished: job.finish.as_ref().map(|f| f.at),
                };
                adopted.push((entry, job.info.uid.clone()));
                labels.extend(job.labels.take());
            }
        }
        adopted.sort();
        if let Some(run) = self.runs.get_mut(run_uid) {
            for l in labels {
                take_labels(run, *l);
            }
            for (entry, uid) in adopted {
                if !run.jobs.contains(&uid) {
                    push_small(&mut run.jobs, uid);
                }
                remember_job(run, entry.step, entry.job, entry.finished);
            }
        }
    }

    // ---------------------------------------------------------------------------------------------------
    // Jobs
    // ---------------------------------------------------------------------------------------------------

    fn upsert_job(&mut self, o: &JobUpdate) -> Option<Arc<str>> {
        let (uid, name) = (o.id.uid.as_str(), o.id.name.as_str());
        let namespace = self.intern(&o.id.namespace);
        self.note_relist(Kind::Job, &namespace, uid);
        let now = self.now;
        if !self.jobs.contains_key(uid) {
            if o.gone {
                return None;
            }
            let step = o.step.map(|p| step_key(p, 0));
            let step_name = step.as_ref().and(o.step_name.as_deref()).map(|s| self.shared(s));
            let provider = o.provider.as_deref().map(|s| self.shared(s));
            let agent = o.agent.as_deref().map(|s| self.shared(s));
            let owner_uid = o.run.uid.as_deref();
            let owner_run = owner_uid.and_then(|u| self.runs.get(u));
            let run_uid =
                owner_uid.map(|u| owner_run.map(|r| r.info.uid.clone()).unwrap_or_else(|| u.into()));
            let run_name_shared =
                owner_run.map(|r| r.info.name.clone()).unwrap_or_else(|| o.run.name.as_str().into());
            let uid_shared: Arc<str> = Arc::from(uid);
            let info = Arc::new(JobInfo { name: name.into(), uid: uid_shared.clone(), step_name, step });
            self.jobs.insert(
                uid_shared.clone(),
                Box::new(JobTrack {
                    info,
                    namespace: namespace.clone(),
                    run_uid,
                    run_name: run_name_shared,
                    created: None,
                    started: None,
                    finish: None,
                    ttl: None,
                    seen_without_ttl: false,
                    attempt_unknown: o.step.is_some_and(|p| p.attempt.is_none()),
                    first_seen: now,
                    deletion: None,
                    deletion_noticed: None,
                    gone: false,
                    emitted: Flags::default(),
                    submit_start: None,
                    clamped: Clamped::default(),
                    pods: self.waiting_pods.remove(uid).unwrap_or_default(),
                    labels: None,
                }),
            );
            match self.resolve_run(owner_uid, &namespace, &o.run.name) {
                Some(run_uid) => {
                    if let Some(run) = self.runs.get_mut(&run_uid) {
                        let job = self.jobs.get_mut(uid)?;
                        take_labels(run, (provider, agent));
                        push_small(&mut run.jobs, job.info.uid.clone());
                        // A hashed name's attempt may already be in the status.
                        if job.attempt_unknown
                            && let Some(a) = run
                                .referenced
                                .iter()
                                .find(|r| r.job == name_key(name))
                                .and_then(|r| r.attempt)
                        {
                            set_attempt(job, a);
                        }
                        remember_job(run, job.info.step.clone(), name_key(name), None);
                    }
                }
                None => {
                    let key = match owner_uid {
                        Some(u) => RunKey::Uid(u.into()),
                        None => RunKey::Name(namespace.clone(), o.run.name.as_str().into()),
                    };
                    self.waiting_jobs.entry(key).or_default().push(uid_shared);
                    if let Some(job) = self.jobs.get_mut(uid) {
                        job.labels = Some(Box::new((provider, agent)));
                    }
                }
            }
        }
        let run_uid = self.run_uid_of_job(uid);
        let consumed = run_uid
            .as_ref()
            .and_then(|r| self.runs.get(r))
            .is_some_and(|r| r.consumed.iter().any(|c| c.job == name_key(name) && !c.missing()));
        let job = self.jobs.get_mut(uid)?;
        job.created = job.created.or(o.created);
        if let Some(start) = o.started {
            job.started.get_or_insert(start);
        }
        let newly_finished = job.finish.is_none() && o.finish.is_some();
        if job.finish.is_none() {
            job.finish = o.finish.as_ref().map(|f| Finish {
                at: f.at,
                failed: f.failed,
                reason: f.reason.as_deref().map(Into::into),
            });
        }
        match (o.ttl, job.ttl) {
            (Some(secs), None) => {
                let applied = if job.seen_without_ttl && job.finish.is_some() {
                    TtlApplied::AfterCollection
                } else if !job.seen_without_ttl && job.finish.is_some() && consumed {
                    // First seen already finished and collected: the current controller patched it.
                    TtlApplied::AfterCollection
                } else {
                    TtlApplied::AtCreation
                };
                job.ttl = Some(Ttl { seconds: secs, applied });
            }
            (Some(secs), Some(ttl)) => job.ttl = Some(Ttl { seconds: secs, ..ttl }),
            (None, _) => job.seen_without_ttl = true,
        }
        if let Some(t) = o.deleting {
            job.deletion.get_or_insert(Stamp::object(t));
            job.deletion_noticed.get_or_insert(now);
        }
        if o.gone {
            job.gone = true;
            job.deletion.get_or_insert(Stamp::observed(now));
            job.deletion_noticed.get_or_insert(now);
        }
        if newly_finished
            && let (Some(run_uid), Some(fin)) = (run_uid.as_ref(), job.finish.as_ref().map(|f| f.at))
        {
            let (step, key) = (job.info.step.clone(), name_key(name));
            if let Some(run) = self.runs.get_mut(run_uid) {
                remember_job(run, step, key, Some(fin));
            }
        }
        run_uid
    }

    // ---------------------------------------------------------------------------------------------------
    // Pods
    // ---------------------------------------------------------------------------------------------------

    fn upsert_pod(&mut self, o: &PodUpdate) -> Option<Arc<str>> {
        let (uid, name) = (o.id.uid.as_str(), o.id.name.as_str());
        let job_uid = o.job_uid.as_str();
        let namespace = self.intern(&o.id.namespace);
        self.note_relist(Kind::Pod, &namespace, uid);
        let now = self.now;
        if !self.pods.contains_key(uid) {
            if o.gone {
                return None;
            }
            let uid_shared: Arc<str> = Arc::from(uid);
            let job_shared =
                self.jobs.get_key_value(job_uid).map(|(k, _)| k.clone()).unwrap_or_else(|| job_uid.into());
            self.pods.insert(
                uid_shared.clone(),
                Box::new(PodTrack {
                    info: PodInfo { name: name.into(), uid: uid_shared.clone(), node: None },
                    job_uid: job_shared,
                    created: None,
                    terminated: None,
                    deleted: None,
                    emitted: false,
                }),
            );
            match self.jobs.get_mut(job_uid) {
                Some(job) => push_small(&mut job.pods, uid_shared),
                None => self.waiting_pods.entry(job_uid.into()).or_default().push(uid_shared),
            }
        }
        let node = match o.node.as_deref() {
            Some(n) if self.pods.get(uid).is_some_and(|p| p.info.node.is_none()) => Some(self.shared(n)),
            _ => None,
        };
        let pod = self.pods.get_mut(uid)?;
        pod.created = pod.created.or(o.created);
        if pod.info.node.is_none() {
            pod.info.node = node;
        }
        if pod.terminated.is_none()
            && let Some(t) = &o.terminated
        {
            pod.terminated = Some((t.at.unwrap_or(now), t.exit_code, t.reason.as_deref().map(Into::into)));
        }
        if let Some(t) = o.deleting {
            pod.deleted.get_or_insert(Stamp::object(t));
        }
        if o.gone {
            pod.deleted.get_or_insert(Stamp::observed(now));
        }
        self.run_uid_of_job(job_uid)
    }

    // ---------------------------------------------------------------------------------------------------
    // Evaluation
    // ---------------------------------------------------------------------------------------------------

    fn push(&mut self, exported: bool, at: Ts, fact: Fact) {
        let counted = at >= self.cfg.count_since;
        // A run outside the backfill window exports no spans; its facts still count when they are new.
        if exported || counted {
            self.out.push(Emitted { fact, counted, exported });
        }
    }

    fn evaluate(&mut self, run_uid: &str) {
        let Some(run) = self.runs.get(run_uid) else { return };
        let job_uids = run.jobs.clone();
        for job_uid in &job_uids {
            self.evaluate_job(run_uid, job_uid);
        }
        self.evaluate_steps(run_uid);
        self.evaluate_root(run_uid);
        self.evaluate_complete(run_uid);
    }

    fn evaluate_job(&mut self, run_uid: &str, job_uid: &str) {
        let now = self.now;
        let settle = self.cfg.settle_ms;
        let Some(run) = self.runs.get(run_uid) else { return };
        let Some(job) = self.jobs.get(job_uid) else { return };
        let export = run.export;
        let info = run.info.clone();
        let key = name_key(&job.info.name);
        let consumption = run.consumed.iter().find(|c| c.job == key).cloned();
        let reference = run.referenced.iter().find(|r| r.job == key).cloned();
        let run_created = run.created.at;
        let run_deleted = run.deleted;
        let run_finished = run.terminal.is_some();
        let planned_ttl = run.job_ttl;
        // A workflow Job after the first is created before the status write that names it (and that collects
        // the Job before it): its submit span waits for that write, which also gives a hashed name its attempt.
        let awaits_status = reference.is_none()
            && now < job.first_seen.add_millis(settle)
            && (job.attempt_unknown || job.info.step.as_ref().is_some_and(|k| k > &StepKey::first()));
        let fallback_attempt = (job.attempt_unknown && !awaits_status).then(|| {
            let k = job.info.step.clone().unwrap_or_else(StepKey::first);
            1 + run
                .jobs
                .iter()
                .filter_map(|u| self.jobs.get(u))
                .filter(|j| j.info.uid != job.info.uid && j.created < job.created)
                .filter(|j| {
                    j.info.step.as_ref().is_some_and(|s| (s.index, s.iteration) == (k.index, k.iteration))
                })
                .count() as u32
        });
        let mut facts: Vec<(Ts, Fact)> = Vec::new();
        let mut wake: Option<Ts> = None;
        if awaits_status && !job.emitted.has(Flags::SUBMIT) {
            wake = Some(job.first_seen.add_millis(settle));
        }
        let submit_start = {
            let Some(job) = self.jobs.get_mut(job_uid) else { return };
            if let Some(a) = fallback_attempt {
                set_attempt(job, a);
            }
            let Some(run) = self.runs.get_mut(run_uid) else { return };
            if fallback_attempt.is_some() {
                remember_job(run, job.info.step.clone(), key, job.finish.as_ref().map(|f| f.at));
            }
            submit_start_of(run, job, reference.as_ref().and_then(|r| r.at))
        };
        let Some(job) = self.jobs.get_mut(job_uid) else {
            return;
        };
        let jinfo = job.info.clone();

        // job.submit: run/step start → Job created.
        if !job.emitted.has(Flags::SUBMIT)
            && !awaits_status
            && let Some(created) = job.created
        {
            let start = Stamp::object(submit_start.unwrap_or(run_created)).not_before(run_created);
            let end = Stamp::object(created).not_before(start.at);
            job.submit_start = Some(start.at);
            job.clamped.created = Some(end);
            job.emitted.set(Flags::SUBMIT);
            facts.push((
                end.at,
                Fact::JobPhase {
                    run: info.clone(),
                    job: jinfo.clone(),
                    phase: Phase::Submit,
                    start,
                    end,
                    failure: None,
                },
            ));
        }
        // job.pending: created → started.
        if job.emitted.has(Flags::SUBMIT)
            && !job.emitted.has(Flags::PENDING)
            && let (Some(created), Some(started)) = (job.clamped.created, job.started)
        {
            let end = Stamp::object(started).not_before(created.at);
            job.clamped.started = Some(end);
            job.emitted.set(Flags::PENDING);
            facts.push((
                end.at,
                Fact::JobPhase {
                    run: info.clone(),
                    job: jinfo.clone(),
                    phase: Phase::Pending,
                    start: Stamp { clamped: false, ..created },
                    end,
                    failure: None,
                },
            ));
        }
        // job.run: started → Complete/Failed.
        if job.emitted.has(Flags::SUBMIT)
            && !job.emitted.has(Flags::RUN)
            && let (Some(started), Some(finish)) =
                (job.clamped.started.or(job.clamped.created), job.finish.as_ref())
        {
            let end = Stamp::object(finish.at).not_before(started.at);
            job.clamped.finished = Some(end);
            job.emitted.set(Flags::RUN);
            facts.push((
                end.at,
                Fact::JobPhase {
                    run: info.clone(),
                    job: jinfo.clone(),
                    phase: Phase::Run,
                    start: Stamp { clamped: false, ..started },
                    end,
                    failure: finish.failed.then(|| finish.reason.clone()),
                },
            ));
        }
        let finished = job.clamped.finished;
        let collected_ok = consumption.as_ref().is_some_and(|c| !c.missing())
            || job.ttl.is_some_and(|t| t.applied == TtlApplied::AfterCollection);
        // A timed-out step gave up on its Job: nothing will read it, so there is no collection to time.
        if job.emitted.has(Flags::SUBMIT)
            && !job.emitted.has(Flags::COLLECT)
            && let Some(c) = consumption.as_ref().filter(|c| c.kind == ConsumptionKind::Abandoned)
        {
            let floor = job.clamped.created.map(|c| c.at).unwrap_or(run_created);
            let at = c.at.not_before(floor);
            job.emitted.set(Flags::COLLECT);
            job.emitted.set(Flags::MARGIN);
            facts.push((
                at.at,
                Fact::JobCollected {
                    run: info.clone(),
                    job: jinfo.clone(),
                    finished: Stamp { clamped: false, ..at },
                    collected: at,
                    outcome: CollectOutcome::Abandoned,
                    ttl: job.ttl,
                },
            ));
        }
        // job.collect: finished → the consuming write; waits briefly for the TTL patch that follows it.
        if job.emitted.has(Flags::RUN)
            && !job.emitted.has(Flags::COLLECT)
            && let (Some(fin), Some(c)) = (finished, consumption.as_ref())
        {
            let ttl_expected = job.ttl.is_none()
                && planned_ttl.is_some()
                && c.kind == ConsumptionKind::Collected
                && !job.gone;
            let wait_until = c.seen_at.add_millis(settle);
            if ttl_expected && now < wait_until {
                wake = Some(wait_until);
            } else {
                let collected = c.at.not_before(fin.at);
                let outcome = if c.missing() {
                    CollectOutcome::Missing
                } else if job.finish.as_ref().is_some_and(|f| f.failed) {
                    CollectOutcome::Failed
                } else {
                    CollectOutcome::Succeeded
                };
                job.emitted.set(Flags::COLLECT);
                facts.push((
                    collected.at,
                    Fact::JobCollected {
                        run: info.clone(),
                        job: jinfo.clone(),
                        finished: Stamp { clamped: false, ..fin },
                        collected,
                        outcome,
                        ttl: job.ttl,
                    },
                ));
            }
        }
        // TTL margin, once both the TTL and the collection (or the write that found the Job missing) are known.
        if !job.emitted.has(Flags::MARGIN)
            && let (Some(fin), Some(c), Some(ttl)) = (finished, consumption.as_ref(), job.ttl)
        {
            let delay = c.at.not_before(fin.at).at.secs_since(fin.at);
            let margin_seconds = ttl.seconds as f64 - delay;
            job.emitted.set(Flags::MARGIN);
            let exceeded = margin_seconds < 0.0 && !job.emitted.has(Flags::EXCEEDED);
            if exceeded {
                job.emitted.set(Flags::EXCEEDED);
            }
            facts.push((
                c.at.at.max(fin.at),
                Fact::TtlMargin { run: info.clone(), job: jinfo.clone(), ttl, margin_seconds, exceeded },
            ));
        }
        // Deletion: settle whether the Job was collected first.
        if !job.emitted.has(Flags::GONE)
            && let Some(deleted) = job.deletion
        {
            let noticed = job.deletion_noticed.unwrap_or(now);
            let wait_until = noticed.add_millis(settle);
            // The collection, or the deletion of the run that took the Job with it, may come a little later on
            // the AgentRun watch.
            let must_wait = !collected_ok && run_deleted.is_none() && now < wait_until;
            if must_wait {
                wake = Some(wake.map_or(wait_until, |w| w.min(wait_until)));
            } else {
                let floor =
                    finished.map(|f| f.at).or(job.clamped.started.map(|s| s.at)).unwrap_or(run_created);
                let deleted = deleted.not_before(floor);
                let by_ttl = match (finished, job.ttl) {
                    (Some(f), Some(t)) => {
                        deleted.at.0 >= f.at.add_secs(t.seconds).0 - TTL_DEADLINE_TOLERANCE_MS
                            && deleted.source != TimeSource::UnknownGap
                            || deleted.source == TimeSource::UnknownGap
                                && deleted.at >= f.at.add_secs(t.seconds)
                    }
                    _ => false,
                };
                let with_run = run_deleted
                    .is_some_and(|r| r.at.0 <= deleted.at.0.saturating_add(TTL_DEADLINE_TOLERANCE_MS));
                let cause = if by_ttl {
                    DeletionCause::Ttl
                } else if with_run {
                    DeletionCause::WithRun
                } else {
                    DeletionCause::Other
                };
                let before_collection = !collected_ok;
                let exceeded = before_collection && by_ttl && !job.emitted.has(Flags::EXCEEDED);
                if exceeded {
                    job.emitted.set(Flags::EXCEEDED);
                }
                job.emitted.set(Flags::GONE);
                facts.push((
                    deleted.at,
                    Fact::JobGone {
                        run: info.clone(),
                        job: jinfo.clone(),
                        started: job.clamped.started.or(job.clamped.created),
                        finished: finished.map(|f| Stamp { clamped: false, ..f }),
                        deleted,
                        ttl: job.ttl,
                        margin_seconds: match (finished, consumption.as_ref(), job.ttl) {
                            (Some(f), Some(c), Some(t)) => {
                                Some(t.seconds as f64 - c.at.not_before(f.at).at.secs_since(f.at))
                            }
                            _ => None,
                        },
                        before_collection,
                        cause,
                        run_finished,
                        exceeded,
                    },
                ));
            }
        }
        let pods = job.pods.clone();
        let job_started = job.clamped.started.or(job.clamped.created);
        for (at, fact) in facts {
            self.push(export, at, fact);
        }
        if let Some(at) = wake {
            self.wake_at(at, run_uid);
        }
        // pod.run: Pod created → container terminated (or the Pod went away first).
        for pod_uid in pods {
            let Some(pod) = self.pods.get_mut(&pod_uid) else {
                continue;
            };
            if pod.emitted {
                continue;
            }
            let Some(floor) = job_started else { continue };
            let end_raw = match (&pod.terminated, pod.deleted) {
                (Some((at, _, _)), _) => Stamp::object(*at),
                (None, Some(d)) => d,
                (None, None) => continue,
            };
            let start = Stamp::object(pod.created.unwrap_or(floor.at)).not_before(floor.at);
            let end = end_raw.not_before(start.at);
            pod.emitted = true;
            let fact = Fact::PodRan {
                run: info.clone(),
                job: jinfo.clone(),
                pod: pod.info.clone(),
                start,
                end,
                exit_code: pod.terminated.as_ref().map(|t| t.1),
                reason: pod.terminated.as_ref().and_then(|t| t.2.clone()),
            };
            self.push(export, end.at, fact);
        }
    }

    fn evaluate_steps(&mut self, run_uid: &str) {
        let Some(run) = self.runs.get(run_uid) else { return };
        if run.info.runtime != Runtime::Workflow {
            return;
        }
        let mut facts = Vec::new();
        let submit_starts: Vec<(u32, Ts)> = run
            .jobs
            .iter()
            .filter_map(|u| self.jobs.get(u))
            .filter_map(|j| Some((j.info.step.as_ref()?.index, j.submit_start?)))
            .collect();
        let created = run.created.at;
        let info = run.info.clone();
        let export = run.export;
        let Some(run) = self.runs.get_mut(run_uid) else {
            return;
        };
        for step in run.steps.iter_mut().filter(|s| !s.emitted) {
            let Some((end_raw, failed)) = step.terminal else {
                continue;
            };
            let first_job = submit_starts.iter().filter(|(i, _)| *i == step.index).map(|(_, t)| *t).min();
            let start_at = match (step.first_started, first_job) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).unwrap_or(end_raw.at),
            };
            let start = Stamp::object(start_at).not_before(created);
            let end = end_raw.not_before(start.at);
            step.emitted = true;
            facts.push((
                end.at,
                Fact::StepFinished {
                    run: info.clone(),
                    index: step.index,
                    name: step.name.clone(),
                    start,
                    end,
                    failed,
                    missing: step.missing.clone(),
                },
            ));
        }
        for (at, fact) in facts {
            self.push(export, at, fact);
        }
    }

    fn evaluate_root(&mut self, run_uid: &str) {
        let Some(run) = self.runs.get_mut(run_uid) else {
            return;
        };
        if run.root_emitted {
            return;
        }
        let (outcome, end, reason) = match (&run.terminal, run.deleted) {
            (Some((outcome, at, reason)), _) => (Some(*outcome), *at, reason.clone()),
            (None, Some(deleted)) => (None, deleted, None),
            (None, None) => return,
        };
        run.root_emitted = true;
        let start = run.created;
        let end = end.not_before(start.at);
        let fact = Fact::RunFinished {
            run: run.info.clone(),
            start,
            end,
            outcome,
            reason,
            missing: run.missing.clone(),
        };
        let export = run.export;
        self.push(export, end.at, fact);
    }

    fn evaluate_complete(&mut self, run_uid: &str) {
        let Some(run) = self.runs.get(run_uid) else { return };
        if !run.root_emitted {
            return;
        }
        // While its namespace's Jobs or Pods are being (re)listed, more of the run's objects may still come.
        let listing = self.relists.keys().any(|(kind, scope)| {
            matches!(kind, Kind::Job | Kind::Pod) && scope.as_ref().is_none_or(|s| *s == run.info.namespace)
        });
        if listing {
            return;
        }
        let jobs_done = run.jobs.iter().all(|u| {
            self.jobs.get(u).is_none_or(|j| {
                j.emitted.has(Flags::GONE)
                    && j.pods.iter().all(|p| self.pods.get(p).is_none_or(|p| p.emitted))
            })
        });
        let steps_done = run.steps.iter().all(|s| s.emitted || s.terminal.is_none());
        if !jobs_done || !steps_done {
            return;
        }
        let Some(run) = self.runs.remove(run_uid) else {
            return;
        };
        for job_uid in &run.jobs {
            if let Some(job) = self.jobs.remove(job_uid) {
                for p in job.pods {
                    self.pods.remove(&p);
                }
            }
        }
        self.run_by_name.remove(&(run.info.namespace.clone(), run.info.name.clone()));
        if !run.gone {
            self.done.insert(
                run_uid.into(),
                DoneRun { namespace: run.info.namespace.clone(), retention: run.retention },
            );
        }
        let at = self.now;
        self.push(run.export, at.max(self.cfg.count_since), Fact::RunComplete { run: run.info });
    }

    /// Forgets Jobs and Pods that are gone and fully reported, when their run is unknown (not ours, or deleted
    /// before this process started): they would otherwise be held forever.
    fn sweep_orphans(&mut self) {
        let orphan_jobs: Vec<Arc<str>> = self
            .jobs
            .iter()
            .filter(|(uid, j)| j.gone && self.run_uid_of_job(uid).is_none())
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in orphan_jobs {
            if let Some(job) = self.jobs.remove(&uid) {
                for p in job.pods {
                    self.pods.remove(&p);
                }
            }
        }
        self.pods.retain(|_, p| p.deleted.is_none() || self.jobs.contains_key(&p.job_uid));
        let (jobs, pods) = (&self.jobs, &self.pods);
        self.waiting_jobs.retain(|_, uids| {
            uids.retain(|u| jobs.contains_key(u));
            !uids.is_empty()
        });
        self.waiting_pods.retain(|_, uids| {
            uids.retain(|u| pods.contains_key(u));
            !uids.is_empty()
        });
    }

    /// Gauge values at `now`.
    pub fn gauges(&mut self, now: Ts) -> LiveGauges {
        self.sweep_orphans();
        let mut g = LiveGauges {
            tracked_runs: self.runs.len() + self.done.len(),
            tracked_jobs: self.jobs.len(),
            tracked_pods: self.pods.len(),
            ..LiveGauges::default()
        };
        for ns in &self.namespaces {
            if self.series_seen.iter().any(|(n, _)| n == ns) {
                g.namespaces.entry(ns.clone()).or_default();
            }
        }
        let minmax =
            |cur: Option<(i64, i64)>, v: i64| Some(cur.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))));
        for run in self.runs.values() {
            let entry = g.namespaces.entry(run.info.namespace.clone()).or_default();
            if !run.gone
                && let Some(r) = run.retention
            {
                entry.retention = minmax(entry.retention, r);
            }
        }
        for done in self.done.values() {
            if let Some(r) = done.retention {
                let entry = g.namespaces.entry(done.namespace.clone()).or_default();
                entry.retention = minmax(entry.retention, r);
            }
        }
        for job in self.jobs.values() {
            let Some(run_uid) = self.run_uid_of_job(&job.info.uid) else {
                continue;
            };
            let Some(run) = self.runs.get(&run_uid) else {
                continue;
            };
            let entry = g.namespaces.entry(job.namespace.clone()).or_default();
            if job.deletion.is_some() {
                continue;
            }
            let effective_ttl = job.ttl.map(|t| t.seconds).or(run.job_ttl);
            if let Some(t) = effective_ttl {
                entry.job_ttl = minmax(entry.job_ttl, t);
            }
            let Some(finish) = &job.finish else { continue };
            let consumption = run.consumed.iter().find(|c| c.job == name_key(&job.info.name));
            match consumption {
                Some(c)
                    if c.kind == ConsumptionKind::Collected
                        && job.ttl.is_none()
                        && run.job_ttl.is_some()
                        && now.0 - c.at.at.0 > self.cfg.ttl_grace_ms =>
                {
                    entry.jobs_without_ttl += 1;
                }
                Some(_) => {}
                None if run.terminal.is_none() && !run.gone => {
                    entry.awaiting_collection += 1;
                    let age = now.secs_since(finish.at).max(0.0);
                    entry.awaiting_collection_max_age = entry.awaiting_collection_max_age.max(age);
                    if let Some(t) = effective_ttl {
                        let remaining = finish.at.add_secs(t).secs_since(now);
                        entry.ttl_margin_remaining =
                            Some(entry.ttl_margin_remaining.map_or(remaining, |r: f64| r.min(remaining)));
                    }
                }
                None => {}
            }
        }
        // With no live Job, the TTL in force is the one the next Job will get: the controller's default.
        for ns in g.namespaces.values_mut() {
            if ns.job_ttl.is_none() {
                ns.job_ttl = Some((self.cfg.default_job_ttl, self.cfg.default_job_ttl));
            }
        }
        g
    }
}

/// The set's copy of `s`, added if missing, so equal strings share one allocation.
fn shared_in(set: &mut HashSet<Arc<str>>, s: &str) -> Arc<str> {
    if let Some(existing) = set.get(s) {
        return existing.clone();
    }
    let arc: Arc<str> = Arc::from(s);
    set.insert(arc.clone());
    arc
}

/// Pushes without the default growth to four elements: most runs have one Job and a Job one Pod.
fn push_small<T>(v: &mut Vec<T>, x: T) {
    if v.len() == v.capacity() {
        v.reserve_exact(1);
    }
    v.push(x);
}

/// The run takes the provider and agent its Jobs are labelled with, when it has none yet.
fn take_labels(run: &mut Run, (provider, agent): RunLabels) {
    if run.info.provider.is_none() && provider.is_some() || run.info.agent.is_none() && agent.is_some() {
        let mut info = (*run.info).clone();
        info.provider = info.provider.or(provider);
        info.agent = info.agent.or(agent);
        run.info = Arc::new(info);
    }
}

/// Records (or moves, when its attempt became known) a Job in the run's workflow order.
fn remember_job(run: &mut Run, step: Option<StepKey>, job: u64, finished: Option<Ts>) {
    match run.history.iter_mut().find(|e| e.job == job) {
        Some(e) => {
            e.step = step;
            e.finished = e.finished.or(finished);
        }
        None => push_small(&mut run.history, HistoryEntry { step, job, finished }),
    }
    run.history.sort();
}

fn step_key(p: StepPosition, unknown_attempt: u32) -> StepKey {
    StepKey { index: p.index, iteration: p.iteration, attempt: p.attempt.unwrap_or(unknown_attempt) }
}

/// A hashed Job name learnt its attempt.
fn set_attempt(job: &mut JobTrack, attempt: u32) {
    let mut info = (*job.info).clone();
    if let Some(step) = info.step.as_mut() {
        step.attempt = attempt;
    }
    job.info = Arc::new(info);
    job.attempt_unknown = false;
}

/// Where the submit phase of a Job starts. Job runtime, and a workflow's first Job: the run's creation.
/// Later workflow Jobs: the status write that consumed the Job before it (a retry, the next loop iteration:
/// the controller creates the Job in a later reconcile), unless that same write also names this Job — the
/// controller creates the next step's Job first and writes both in one status — then the previous Job's
/// finish, which is what that reconcile reacted to.
fn submit_start_of(run: &Run, job: &JobTrack, referenced_at: Option<Ts>) -> Option<Ts> {
    let Some(key) = &job.info.step else {
        return Some(run.created.at);
    };
    let this = name_key(&job.info.name);
    let previous =
        run.history.iter().rev().find(|e| e.job != this && e.step.as_ref().is_some_and(|k| k < key));
    let Some(previous) = previous else {
        return Some(run.created.at);
    };
    let consumed = run.consumed.iter().find(|c| c.job == previous.job).map(|c| c.at.at);
    let start = match (consumed, referenced_at) {
        (Some(c), Some(r)) if c < r => Some(c),
        (Some(c), None) if job.created.is_some_and(|created| c <= created) => Some(c),
        (c, _) => previous.finished.or(c),
    };
    start.or(Some(run.created.at))
}

/// Folds one AgentRun status into the run: consumptions of Jobs, references to running ones, step progress,
/// terminal state, missing-Job conditions.
fn apply_run_status(run: &mut Run, status: &RunStatus, now: Ts) {
    let updated = status.updated_at;
    let reason: Option<Arc<str>> = status.reason.as_deref().map(Into::into);

    for (reason, at) in &status.missing {
        let reason: Arc<str> = reason.as_str().into();
        match run.missing.iter_mut().find(|m| m.reason == reason) {
            Some(m) => m.at = m.at.min(*at),
            None => run.missing.push(MissingEvent { at: *at, reason }),
        }
    }

    // The time of a consuming write: `updatedAt` of the event that showed the transition, else `fallback`.
    let write_time = |saw_transition: bool, fallback: Option<Ts>| -> Stamp {
        match (saw_transition, updated, fallback) {
            (true, Some(u), _) => Stamp::object(u),
            (_, _, Some(f)) => Stamp::object(f),
            (_, Some(u), None) => Stamp::object(u),
            (_, None, None) => Stamp::observed(now),
        }
    };
    let saw = |run: &Run, job: u64| run.referenced.iter().any(|r| r.job == job);

    let mut consumptions: Vec<(u64, Stamp, ConsumptionKind)> = Vec::new();
    let mut references: Vec<(u64, Option<u32>)> = Vec::new();
    if let Some(name) = status.job.as_deref() {
        let job = name_key(name);
        match status.outcome {
            Some(_) => {
                let kind = if reason.as_deref() == Some("JobMissing") {
                    ConsumptionKind::Missing
                } else {
                    ConsumptionKind::Collected
                };
                consumptions.push((job, write_time(saw(run, job), status.terminal_at), kind));
            }
            None => references.push((job, None)),
        }
    }
    for s in &status.steps {
        let step = match run.steps.iter_mut().position(|st| st.index == s.index) {
            Some(i) => &mut run.steps[i],
            None => {
                run.steps.push(Step {
                    index: s.index,
                    name: s.name.as_str().into(),
                    first_started: None,
                    terminal: None,
                    missing: Vec::new(),
                    emitted: false,
                });
                run.steps.last_mut().expect("just pushed")
            }
        };
        if let Some(t) = s.started_at {
            step.first_started = Some(step.first_started.map_or(t, |f| f.min(t)));
        }
        if let Some(name) = s.job.as_deref() {
            let job = name_key(name);
            match s.consumption {
                Some(kind) => {
                    let at = write_time(run.referenced.iter().any(|r| r.job == job), s.transition_at);
                    consumptions.push((job, at, kind));
                }
                None if matches!(s.phase, StepPhase::Running | StepPhase::Pending) => {
                    references.push((job, s.attempt))
                }
                None => {}
            }
        }
        for it in &s.iterations {
            let Some(name) = it.job.as_deref() else { continue };
            let job = name_key(name);
            match it.consumption {
                Some(kind) => {
                    let at = write_time(run.referenced.iter().any(|r| r.job == job), it.finished_at);
                    consumptions.push((job, at, kind));
                }
                None if it.running => references.push((job, it.attempt)),
                None => {}
            }
        }
        let Some(step) = run.steps.iter_mut().find(|st| st.index == s.index) else { continue };
        if matches!(s.phase, StepPhase::Succeeded | StepPhase::Failed) && step.terminal.is_none() {
            step.terminal =
                Some((write_time(run.seen_nonterminal, s.transition_at), s.phase == StepPhase::Failed));
        }
        let missing = s.failed_missing || s.consumption == Some(ConsumptionKind::Missing);
        if missing && step.missing.is_empty() {
            let at = status
                .missing
                .iter()
                .find(|(r, _)| r == "WorkflowJobMissing")
                .map(|(_, at)| *at)
                .or(s.transition_at)
                .unwrap_or(now);
            step.missing.push(MissingEvent { at, reason: "WorkflowJobMissing".into() });
        }
    }
    for (job, at, kind) in consumptions {
        if !run.consumed.iter().any(|c| c.job == job) {
            push_small(&mut run.consumed, Consumption { job, at, kind, seen_at: now });
        }
    }
    for (job, attempt) in references {
        match run.referenced.iter_mut().find(|r| r.job == job) {
            Some(r) => r.attempt = r.attempt.or(attempt),
            None => push_small(&mut run.referenced, Reference { job, at: updated, attempt }),
        }
    }
    match status.outcome {
        Some(o) if run.terminal.is_none() => {
            let at = write_time(run.seen_nonterminal, status.terminal_at);
            run.terminal = Some((o, at, reason));
        }
        Some(_) => {}
        None => {
            if status.has_phase {
                run.seen_nonterminal = true;
            }
        }
    }
}

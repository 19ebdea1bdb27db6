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
    objects::{self, AgentRun, Condition, Job, Kind, Object, Pod},
    time::{Stamp, TimeSource, Ts},
};

/// Upstream clamps the Job TTL it patches to this range (`job-runtime.ts`).
pub const CONTROLLER_TTL_MIN: i64 = 30;
pub const CONTROLLER_TTL_MAX: i64 = 604_800;
/// The controller's default when `AGENTS_AGENT_RUNNER_JOB_TTL_SECONDS` is unset or unparseable.
pub const CONTROLLER_TTL_DEFAULT: i64 = 600;
/// Kubernetes timestamps are whole seconds: a deletion up to this much before `finish + TTL` still counts as
/// the TTL controller's.
const TTL_DEADLINE_TOLERANCE_MS: i64 = 1000;

/// The Job TTL the agents controller applies, from the value of `AGENTS_AGENT_RUNNER_JOB_TTL_SECONDS`
/// exactly as `runtime-config.ts` reads it: unset, negative or unparseable → 600, below 30 → 30, then
/// clamped to [30 s, 7 d].
pub fn controller_job_ttl(env_value: Option<&str>) -> i64 {
    let parsed = env_value.and_then(|v| v.trim().parse::<f64>().ok()).filter(|v| v.is_finite() && *v >= 0.0);
    let secs = parsed.map(|v| v.trunc() as i64).unwrap_or(CONTROLLER_TTL_DEFAULT);
    secs.clamp(CONTROLLER_TTL_MIN, CONTROLLER_TTL_MAX)
}

#[derive(Clone, Debug)]
pub struct TrackerConfig {
    /// The TTL the controller patches onto Jobs of runs that set none (see [`controller_job_ttl`]).
    pub default_job_ttl: i64,
    /// `AGENTS_CONTROLLER_AGENTRUN_RETENTION_SECONDS`: retention of runs without `spec.ttlSecondsAfterFinished`
    /// (`None` when disabled).
    pub default_retention: Option<i64>,
    /// `AGENTS_CONTROLLER_AGENTRUN_RETENTION_ZERO_TTL_MAX_SECONDS`: retention of runs with
    /// `spec.ttlSecondsAfterFinished: 0` (`None`: kept forever).
    pub zero_ttl_retention: Option<i64>,
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
            default_job_ttl: CONTROLLER_TTL_DEFAULT,
            default_retention: Some(30 * 86_400),
            zero_ttl_retention: None,
            settle_ms: 10_000,
            ttl_grace_ms: 300_000,
            count_since: Ts(i64::MIN),
            backfill_window_ms: None,
        }
    }
}

/// One change the sources saw.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    Upsert(Object),
    Delete(Object),
    /// A (re)list of `kind` in `namespace` (all namespaces when `None`) starts; the objects follow as upserts.
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

/// A change and when it was observed.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub at: Ts,
    pub change: Change,
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

/// How the controller will treat the Job TTL of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TtlRule {
    /// The run overrides it (already clamped).
    Seconds(i64),
    /// `runtime.config.ttlSecondsAfterFinished <= 0`: no TTL is patched; Jobs live until the run is deleted.
    Disabled,
    /// The controller default.
    Default,
}

#[derive(Clone, Debug)]
struct Consumption {
    /// [`name_key`] of the Job's name.
    job: u64,
    at: Stamp,
    missing: bool,
    seen_at: Ts,
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
    ttl_rule: TtlRule,
    seen_nonterminal: bool,
    /// Keys of the Job names the status referenced as running, so a later consumption of them is a transition
    /// we saw.
    referenced_running: Vec<u64>,
    terminal: Option<(RunOutcome, Stamp, Option<Arc<str>>)>,
    missing: Vec<MissingEvent>,
    consumed: Vec<Consumption>,
    steps: Vec<Step>,
    /// Every Job of the run seen so far, in sequence order, kept after the Job is forgotten.
    history: Vec<(Option<StepKey>, u64)>,
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
    /// Jobs whose AgentRun is not known yet, by `uid:<run uid>` or `name:<namespace>/<run name>`.
    waiting_jobs: HashMap<String, Vec<Arc<str>>>,
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

    /// Applies one observation and returns the facts it made known.
    pub fn apply(&mut self, obs: Observation) -> Vec<Emitted> {
        self.advance(obs.at);
        let dirty = match obs.change {
            Change::Upsert(Object::AgentRun(o)) => self.upsert_run(&o, false),
            Change::Delete(Object::AgentRun(o)) => self.upsert_run(&o, true),
            Change::Upsert(Object::Job(o)) => self.upsert_job(&o, false),
            Change::Delete(Object::Job(o)) => self.upsert_job(&o, true),
            Change::Upsert(Object::Pod(o)) => self.upsert_pod(&o, false),
            Change::Delete(Object::Pod(o)) => self.upsert_pod(&o, true),
            Change::RelistBegin { kind, namespace } => {
                let scope = namespace.map(|n| self.intern(&n));
                self.relists.insert((kind, scope), HashSet::new());
                None
            }
            Change::RelistEnd { kind, namespace } => {
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

    fn upsert_run(&mut self, o: &AgentRun, deleted: bool) -> Option<Arc<str>> {
        let meta = &o.metadata;
        let (Some(uid), Some(name), Some(ns)) =
            (meta.uid.as_deref(), meta.name.as_deref(), meta.namespace.as_deref())
        else {
            return None;
        };
        let namespace = self.intern(ns);
        self.note_relist(Kind::AgentRun, &namespace, uid);
        if let Some(done) = self.done.get_mut(uid) {
            if deleted {
                self.done.remove(uid);
            } else {
                done.retention = retention_of(&self.cfg, o);
            }
            return None;
        }
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
        let now = self.now;
        let created = meta.creation_timestamp.as_ref().map(Ts::from_time);
        if !self.runs.contains_key(uid) {
            let agent = o
                .spec
                .agent_ref
                .as_ref()
                .map(|a| a.name.clone())
                .filter(|a| !a.is_empty())
                .map(|a| self.shared(&a));
            let info = Arc::new(RunInfo {
                namespace: namespace.clone(),
                name: name.into(),
                uid: uid.into(),
                runtime,
                agent,
                provider: None,
            });
            let terminal_before = terminal_time_hint(o);
            let export = match (self.cfg.backfill_window_ms, terminal_before) {
                (Some(window), Some(t)) => t.0 >= self.cfg.count_since.0.saturating_sub(window),
                _ => true,
            };
            let run = Run {
                info,
                created: created.map(Stamp::object).unwrap_or(Stamp::observed(now)),
                deleted: None,
                gone: false,
                retention: None,
                ttl_rule: TtlRule::Default,
                seen_nonterminal: false,
                referenced_running: Vec::new(),
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
            if self.series_seen.insert((namespace.clone(), runtime)) {
                self.out.push(Emitted {
                    fact: Fact::SeriesSeen { namespace: namespace.clone(), runtime },
                    counted: true,
                    exported: false,
                });
            }
            self.adopt_jobs(uid, &namespace, name);
        }
        let retention = retention_of(&self.cfg, o);
        let ttl_rule = ttl_rule_of(o);
        let run = self.runs.get_mut(uid)?;
        run.retention = retention;
        run.ttl_rule = ttl_rule;
        if let Some(t) = &meta.deletion_timestamp {
            run.deleted.get_or_insert(Stamp::object(Ts::from_time(t)));
        }
        if deleted {
            run.gone = true;
            run.deleted.get_or_insert(Stamp::observed(now));
        }
        apply_run_status(run, &status, now);
        Some(uid.into())
    }

    fn adopt_jobs(&mut self, run_uid: &str, namespace: &Arc<str>, run_name: &str) {
        let mut waiting = self.waiting_jobs.remove(&format!("uid:{run_uid}")).unwrap_or_default();
        waiting.extend(self.waiting_jobs.remove(&format!("name:{namespace}/{run_name}")).unwrap_or_default());
        let mut adopted: Vec<(Option<StepKey>, Arc<str>, Arc<str>)> = Vec::new();
        let mut labels = Vec::new();
        for uid in waiting {
            if let Some(job) = self.jobs.get_mut(&uid) {
                adopted.push((job.info.step.clone(), job.info.name.clone(), job.info.uid.clone()));
                labels.extend(job.labels.take());
            }
        }
        adopted.sort();
        if let Some(run) = self.runs.get_mut(run_uid) {
            for l in labels {
                take_labels(run, *l);
            }
            for (step, name, uid) in adopted {
                if !run.jobs.contains(&uid) {
                    push_small(&mut run.jobs, uid);
                }
                remember_job(run, step, &name);
            }
        }
    }

    // ---------------------------------------------------------------------------------------------------
    // Jobs
    // ---------------------------------------------------------------------------------------------------

    fn upsert_job(&mut self, o: &Job, deleted: bool) -> Option<Arc<str>> {
        let meta = &o.metadata;
        let (Some(uid), Some(name), Some(ns)) =
            (meta.uid.as_deref(), meta.name.as_deref(), meta.namespace.as_deref())
        else {
            return None;
        };
        let labels = meta.labels.clone().unwrap_or_default();
        let owner = objects::agentrun_owner(meta);
        let run_name = owner
            .map(|o| o.name.as_str())
            .or_else(|| labels.get(objects::LABEL_AGENT_RUN).map(String::as_str))
            .unwrap_or_default();
        if run_name.is_empty() {
            return None;
        }
        let namespace = self.intern(ns);
        self.note_relist(Kind::Job, &namespace, uid);
        let now = self.now;
        if !self.jobs.contains_key(uid) {
            if deleted {
                return None;
            }
            let step = step_key(name, &labels);
            let step_name =
                step.as_ref().and_then(|_| labels.get(objects::LABEL_STEP)).map(|s| self.shared(s));
            let provider = labels.get(objects::LABEL_PROVIDER).map(|s| self.shared(s));
            let agent = labels.get(objects::LABEL_AGENT).map(|s| self.shared(s));
            let owner_run = owner.and_then(|o| self.runs.get(o.uid.as_str()));
            let run_uid =
                owner.map(|o| owner_run.map(|r| r.info.uid.clone()).unwrap_or_else(|| o.uid.as_str().into()));
            let run_name_shared = owner_run.map(|r| r.info.name.clone()).unwrap_or_else(|| run_name.into());
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
            match self.resolve_run(owner.map(|o| o.uid.as_str()), &namespace, run_name) {
                Some(run_uid) => {
                    let info = self.jobs[uid].info.clone();
                    if let Some(run) = self.runs.get_mut(&run_uid) {
                        take_labels(run, (provider, agent));
                        push_small(&mut run.jobs, info.uid.clone());
                        remember_job(run, info.step.clone(), &info.name);
                    }
                }
                None => {
                    let key = match owner {
                        Some(o) => format!("uid:{}", o.uid),
                        None => format!("name:{namespace}/{run_name}"),
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
            .is_some_and(|r| r.consumed.iter().any(|c| c.job == name_key(name) && !c.missing));
        let job = self.jobs.get_mut(uid)?;
        job.created = job.created.or(meta.creation_timestamp.as_ref().map(Ts::from_time));
        if let Some(start) = &o.status.start_time {
            job.started.get_or_insert(*start);
        }
        if job.finish.is_none() {
            job.finish = finish_of(o);
        }
        match (o.spec.ttl_seconds_after_finished, job.ttl) {
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
        if let Some(t) = &meta.deletion_timestamp {
            job.deletion.get_or_insert(Stamp::object(Ts::from_time(t)));
            job.deletion_noticed.get_or_insert(now);
        }
        if deleted {
            job.gone = true;
            job.deletion.get_or_insert(Stamp::observed(now));
            job.deletion_noticed.get_or_insert(now);
        }
        run_uid
    }

    // ---------------------------------------------------------------------------------------------------
    // Pods
    // ---------------------------------------------------------------------------------------------------

    fn upsert_pod(&mut self, o: &Pod, deleted: bool) -> Option<Arc<str>> {
        let meta = &o.metadata;
        let (Some(uid), Some(name), Some(ns)) =
            (meta.uid.as_deref(), meta.name.as_deref(), meta.namespace.as_deref())
        else {
            return None;
        };
        let job_uid = meta
            .owner_references
            .as_ref()
            .and_then(|refs| refs.iter().find(|r| r.kind == "Job" && r.controller == Some(true)))
            .map(|r| r.uid.clone())
            .or_else(|| meta.labels.as_ref().and_then(|l| l.get(objects::LABEL_CONTROLLER_UID).cloned()));
        let job_uid = job_uid?;
        let namespace = self.intern(ns);
        self.note_relist(Kind::Pod, &namespace, uid);
        let now = self.now;
        if !self.pods.contains_key(uid) {
            if deleted {
                return None;
            }
            let uid_shared: Arc<str> = Arc::from(uid);
            let job_shared = self
                .jobs
                .get_key_value(job_uid.as_str())
                .map(|(k, _)| k.clone())
                .unwrap_or_else(|| job_uid.as_str().into());
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
            match self.jobs.get_mut(job_uid.as_str()) {
                Some(job) => push_small(&mut job.pods, uid_shared),
                None => self.waiting_pods.entry(job_uid.as_str().into()).or_default().push(uid_shared),
            }
        }
        let node = match o.spec.node_name.as_deref() {
            Some(n) if self.pods.get(uid).is_some_and(|p| p.info.node.is_none()) => Some(self.shared(n)),
            _ => None,
        };
        let pod = self.pods.get_mut(uid)?;
        pod.created = pod.created.or(meta.creation_timestamp.as_ref().map(Ts::from_time));
        if pod.info.node.is_none() {
            pod.info.node = node;
        }
        if pod.terminated.is_none() {
            let statuses = &o.status.container_statuses;
            let runner =
                statuses.iter().find(|c| c.name == objects::RUNNER_CONTAINER).or_else(|| statuses.first());
            if let Some(t) = runner.and_then(|c| c.state.as_ref()).and_then(|s| s.terminated.as_ref()) {
                let at = t.finished_at.unwrap_or(now);
                pod.terminated = Some((at, t.exit_code, t.reason.as_deref().map(Into::into)));
            }
        }
        if let Some(t) = &meta.deletion_timestamp {
            pod.deleted.get_or_insert(Stamp::object(Ts::from_time(t)));
        }
        if deleted {
            pod.deleted.get_or_insert(Stamp::observed(now));
        }
        self.run_uid_of_job(&job_uid)
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
        let jinfo = job.info.clone();
        let consumption = run.consumed.iter().find(|c| c.job == name_key(&jinfo.name)).cloned();
        let submit_start = submit_start_of(run, job);
        let run_created = run.created.at;
        let ttl_rule = run.ttl_rule;
        let mut facts: Vec<(Ts, Fact)> = Vec::new();
        let mut wake: Option<Ts> = None;
        let Some(job) = self.jobs.get_mut(job_uid) else {
            return;
        };

        // job.submit: run/step start → Job created.
        if !job.emitted.has(Flags::SUBMIT)
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
        let collected_ok = consumption.as_ref().is_some_and(|c| !c.missing)
            || job.ttl.is_some_and(|t| t.applied == TtlApplied::AfterCollection);
        // job.collect: finished → the consuming write; waits briefly for the TTL patch that follows it.
        if job.emitted.has(Flags::RUN)
            && !job.emitted.has(Flags::COLLECT)
            && let (Some(fin), Some(c)) = (finished, consumption.as_ref())
        {
            let ttl_expected = job.ttl.is_none() && ttl_rule != TtlRule::Disabled && !c.missing && !job.gone;
            let wait_until = c.seen_at.add_millis(settle);
            if ttl_expected && now < wait_until {
                wake = Some(wait_until);
            } else {
                let collected = c.at.not_before(fin.at);
                let outcome = if c.missing {
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
            let must_wait = finished.is_some() && !collected_ok && now < wait_until;
            if must_wait {
                wake = Some(wake.map_or(wait_until, |w| w.min(wait_until)));
            } else if finished.is_some() || job.finish.is_none() {
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
                        by_ttl,
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
            let effective_ttl = job.ttl.map(|t| t.seconds).or(match run.ttl_rule {
                TtlRule::Seconds(s) => Some(s),
                TtlRule::Default => Some(self.cfg.default_job_ttl),
                TtlRule::Disabled => None,
            });
            if let Some(t) = effective_ttl {
                entry.job_ttl = minmax(entry.job_ttl, t);
            }
            let Some(finish) = &job.finish else { continue };
            let consumption = run.consumed.iter().find(|c| c.job == name_key(&job.info.name));
            match consumption {
                Some(c)
                    if !c.missing
                        && job.ttl.is_none()
                        && run.ttl_rule != TtlRule::Disabled
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

fn remember_job(run: &mut Run, step: Option<StepKey>, name: &str) {
    let key = name_key(name);
    if !run.history.iter().any(|(_, n)| *n == key) {
        push_small(&mut run.history, (step, key));
        run.history.sort();
    }
}

/// Where the submit phase of a Job starts: job runtime → the run's creation; workflow → the collection of the
/// Job before it in the run (previous attempt or step), else the step's own start, else the run's creation.
fn submit_start_of(run: &Run, job: &JobTrack) -> Option<Ts> {
    let Some(key) = &job.info.step else {
        return Some(run.created.at);
    };
    let previous = run.history.iter().rev().find(|(k, _)| k.as_ref().is_some_and(|k| k < key));
    if let Some((_, name)) = previous
        && let Some(c) = run.consumed.iter().find(|c| c.job == *name)
    {
        return Some(c.at.at);
    }
    let step = run.steps.iter().find(|s| s.index == key.index).and_then(|s| s.first_started);
    if key.index == 1 && key.attempt <= 1 && key.iteration.unwrap_or(0) <= 1 {
        return Some(run.created.at);
    }
    step.or(Some(run.created.at))
}

/// Step index, loop iteration and attempt of a workflow Job: from its labels and the name suffix
/// `-step-<i>[-iter-<k>]-attempt-<n>` (names over 63 characters are hashed upstream; then the labels alone).
fn step_key(name: &str, labels: &BTreeMap<String, String>) -> Option<StepKey> {
    let label_index = labels.get(objects::LABEL_STEP_INDEX).and_then(|v| v.parse::<u32>().ok());
    let label_iter = labels.get(objects::LABEL_STEP_ITERATION).and_then(|v| v.parse::<u32>().ok());
    let suffix = parse_step_suffix(name);
    let index = label_index.or(suffix.map(|s| s.0))?;
    Some(StepKey {
        index,
        iteration: label_iter.or(suffix.and_then(|s| s.1)),
        attempt: suffix.map(|s| s.2).unwrap_or(1),
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

fn finish_of(o: &Job) -> Option<Finish> {
    let cond =
        o.status.conditions.iter().find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.is_true());
    if let Some(c) = cond {
        let at = c.last_transition_time.or(o.status.completion_time)?;
        return Some(Finish {
            at,
            failed: c.type_ == "Failed",
            reason: (c.type_ == "Failed").then(|| c.reason.as_deref().map(Into::into)).flatten(),
        });
    }
    o.status.completion_time.as_ref().map(|t| Finish { at: *t, failed: false, reason: None })
}

fn retention_of(cfg: &TrackerConfig, o: &AgentRun) -> Option<i64> {
    match o.spec.ttl_seconds_after_finished {
        Some(s) if s > 0 => Some(s),
        Some(_) => cfg.zero_ttl_retention,
        None => cfg.default_retention,
    }
}

fn ttl_rule_of(o: &AgentRun) -> TtlRule {
    let value = o
        .spec
        .runtime
        .as_ref()
        .and_then(|r| r.config.as_ref())
        .and_then(|c| c.ttl_seconds_after_finished.as_ref())
        .and_then(|v| v.as_i64());
    match value {
        Some(v) if v <= 0 => TtlRule::Disabled,
        Some(v) => TtlRule::Seconds(v.clamp(CONTROLLER_TTL_MIN, CONTROLLER_TTL_MAX)),
        None => TtlRule::Default,
    }
}

fn terminal_phase(phase: Option<&str>) -> Option<RunOutcome> {
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

/// When a run first seen already terminal finished, for the backfill window.
fn terminal_time_hint(o: &AgentRun) -> Option<Ts> {
    let status = o.status.as_ref()?;
    let outcome = terminal_phase(status.phase.as_deref())?;
    condition_time(&status.conditions, outcome.phase()).or(status.updated_at).or(status.finished_at)
}

/// Folds one AgentRun status into the run: consumptions of Jobs, step progress, terminal state, missing-Job
/// conditions.
fn apply_run_status(run: &mut Run, status: &objects::AgentRunStatus, now: Ts) {
    let updated = status.updated_at;
    let outcome = terminal_phase(status.phase.as_deref());
    let reason: Option<Arc<str>> = status.reason.as_deref().map(Into::into);

    for c in &status.conditions {
        if c.is_true() && c.reason.as_deref().is_some_and(is_missing_reason) {
            let at = c.last_transition_time.or(updated).unwrap_or(now);
            let reason: Arc<str> = c.reason.as_deref().unwrap_or_default().into();
            match run.missing.iter_mut().find(|m| m.reason == reason) {
                Some(m) => m.at = m.at.min(at),
                None => run.missing.push(MissingEvent { at, reason }),
            }
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

    let mut consumptions: Vec<(u64, Stamp, bool)> = Vec::new();
    let mut running_refs: Vec<u64> = Vec::new();
    match run.info.runtime {
        Runtime::Job => {
            let job_name = status
                .runtime_ref
                .as_ref()
                .filter(|r| r.type_ == "job" || r.type_.is_empty())
                .and_then(|r| r.name.as_deref());
            if let Some(name) = job_name {
                match outcome {
                    Some(o) => {
                        let saw = run.referenced_running.contains(&name_key(name));
                        let at = write_time(saw, condition_time(&status.conditions, o.phase()));
                        let missing = reason.as_deref() == Some("JobMissing");
                        consumptions.push((name_key(name), at, missing));
                    }
                    None => running_refs.push(name_key(name)),
                }
            }
        }
        Runtime::Workflow => {
            let steps = status.workflow.as_ref().map(|w| w.steps.as_slice()).unwrap_or_default();
            let missing_msgs: Vec<&Condition> = status
                .conditions
                .iter()
                .filter(|c| c.is_true() && c.reason.as_deref() == Some("WorkflowJobMissing"))
                .collect();
            for (i, s) in steps.iter().enumerate() {
                let index = i as u32 + 1;
                let phase = s.phase.as_deref().unwrap_or_default();
                let step = match run.steps.iter_mut().find(|st| st.index == index) {
                    Some(st) => st,
                    None => {
                        run.steps.push(Step {
                            index,
                            name: s.name.as_str().into(),
                            first_started: None,
                            terminal: None,
                            missing: Vec::new(),
                            emitted: false,
                        });
                        run.steps.last_mut().expect("just pushed")
                    }
                };
                if let Some(t) = &s.started_at {
                    let t = *t;
                    step.first_started = Some(step.first_started.map_or(t, |f| f.min(t)));
                }
                let job_missing = s.message.as_deref().is_some_and(|m| m.starts_with("Job missing"));
                let step_time = s.last_transition_time.or(s.finished_at);
                let job_name = s.job_ref.as_ref().and_then(|r| r.name.as_deref());
                if let Some(name) = job_name {
                    match phase {
                        "Succeeded" | "Failed" | "Retrying" => {
                            let saw = run.referenced_running.contains(&name_key(name));
                            consumptions.push((name_key(name), write_time(saw, step_time), job_missing));
                        }
                        "Running" | "Pending" => running_refs.push(name_key(name)),
                        _ => {}
                    }
                }
                for it in s.loop_.as_ref().map(|l| l.iterations.as_slice()).unwrap_or_default() {
                    let Some(name) = it.job_ref.as_ref().and_then(|r| r.name.as_deref()) else {
                        continue;
                    };
                    match it.phase.as_deref() {
                        Some("Succeeded" | "Failed" | "Retrying") => {
                            let saw = run.referenced_running.contains(&name_key(name));
                            let fallback = it.finished_at;
                            let missing = it.message.as_deref().is_some_and(|m| m.starts_with("Job missing"));
                            consumptions.push((name_key(name), write_time(saw, fallback), missing));
                        }
                        Some("Running" | "Pending") => running_refs.push(name_key(name)),
                        _ => {}
                    }
                }
                if matches!(phase, "Succeeded" | "Failed") && step.terminal.is_none() {
                    let saw = run.seen_nonterminal;
                    step.terminal = Some((write_time(saw, step_time), phase == "Failed"));
                }
                if job_missing {
                    for c in &missing_msgs {
                        let at = c.last_transition_time.or(step_time).unwrap_or(now);
                        if step.missing.is_empty() {
                            step.missing.push(MissingEvent { at, reason: "WorkflowJobMissing".into() });
                        }
                    }
                    if step.missing.is_empty() {
                        let at = step_time.unwrap_or(now);
                        step.missing.push(MissingEvent { at, reason: "WorkflowJobMissing".into() });
                    }
                }
            }
        }
    }
    for (job, at, missing) in consumptions {
        if !run.consumed.iter().any(|c| c.job == job) {
            push_small(&mut run.consumed, Consumption { job, at, missing, seen_at: now });
        }
    }
    for name in running_refs {
        if !run.referenced_running.contains(&name) {
            push_small(&mut run.referenced_running, name);
        }
    }
    match outcome {
        Some(o) if run.terminal.is_none() => {
            let at = write_time(run.seen_nonterminal, condition_time(&status.conditions, o.phase()));
            run.terminal = Some((o, at, reason));
        }
        Some(_) => {}
        None => {
            if status.phase.is_some() {
                run.seen_nonterminal = true;
            }
        }
    }
}

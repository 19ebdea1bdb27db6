//! The tracker's state, indexed by namespace: each namespace holds its runs (which own their Jobs, which own
//! their Pods), the runs that are done, and the Jobs and Pods still waiting for their owner. Each kind has its
//! `apply` (an upsert, or the final state of a deleted object) and its `reset` (the end of a relist).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
};

use super::{Ctx, Strings, gauges::GaugeIndex, small::Small, state::*};
use crate::engine::{
    facts::{Fact, JobInfo, PodInfo, RunInfo, Ttl, TtlApplied},
    ids::name_key,
    model::{JobUpdate, PodUpdate, RunUpdate, StepPosition},
    time::{Stamp, Ts},
};

/// How a Job names its AgentRun: by uid (owner reference) or by name (label).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum RunKey {
    Uid(Arc<str>),
    Name(Arc<str>),
}

#[derive(Debug)]
pub(super) struct Namespace {
    pub name: Arc<str>,
    // Boxed values: a table runs at 45–90 % load, so large inline entries would waste a third of it.
    pub runs: HashMap<Arc<str>, Box<Run>>,
    pub run_by_name: HashMap<Arc<str>, Arc<str>>,
    pub done: HashMap<Arc<str>, DoneRun>,
    pub jobs: HashMap<Arc<str>, Box<JobTrack>>,
    pub pods: HashMap<Arc<str>, Box<PodTrack>>,
    /// Jobs whose AgentRun is not known yet.
    pub waiting_jobs: HashMap<RunKey, Vec<Arc<str>>>,
    /// Pods whose Job is not known yet, by Job uid.
    pub waiting_pods: HashMap<Arc<str>, Vec<Arc<str>>>,
    pub gauges: GaugeIndex,
    /// Jobs or Pods without an owner came or went: look for orphans to forget.
    pub orphans_dirty: bool,
    /// When a list of the namespace's Jobs last completed: a Job it did not contain does not exist.
    pub jobs_listed_at: Option<Ts>,
    /// Tombstones of deleted runs, oldest first; at most [`DELETED_TOMBSTONES`], and a relist clears them.
    pub deleted: VecDeque<Arc<str>>,
}

/// Deleted runs remembered per namespace so that a late event cannot give one a second life: bounded by count,
/// not time, so no lag of a watch (or jump of the clock) can outlast it.
const DELETED_TOMBSTONES: usize = 4096;

fn step_key(p: StepPosition, unknown_attempt: u32) -> crate::engine::facts::StepKey {
    crate::engine::facts::StepKey {
        index: p.index,
        iteration: p.iteration,
        attempt: p.attempt.unwrap_or(unknown_attempt),
    }
}

impl Namespace {
    pub fn new(name: Arc<str>) -> Self {
        Namespace {
            name,
            runs: HashMap::new(),
            run_by_name: HashMap::new(),
            done: HashMap::new(),
            jobs: HashMap::new(),
            pods: HashMap::new(),
            waiting_jobs: HashMap::new(),
            waiting_pods: HashMap::new(),
            gauges: GaugeIndex::default(),
            orphans_dirty: false,
            jobs_listed_at: None,
            deleted: VecDeque::new(),
        }
    }

    pub fn run_of_job(&self, job_uid: &str) -> Option<Arc<str>> {
        let job = self.jobs.get(job_uid)?;
        self.resolve_run(job.run_uid.as_deref(), &job.run_name)
    }

    pub fn resolve_run(&self, uid: Option<&str>, name: &str) -> Option<Arc<str>> {
        if let Some(uid) = uid {
            return self.runs.get_key_value(uid).map(|(k, _)| k.clone());
        }
        self.run_by_name.get(name).cloned()
    }

    // ---------------------------------------------------------------------------------------------------
    // AgentRuns
    // ---------------------------------------------------------------------------------------------------

    /// Applies an AgentRun; returns the run to evaluate, and whether it is new.
    pub fn apply_run(&mut self, o: &RunUpdate, ctx: &mut Ctx) -> Option<(Arc<str>, bool)> {
        let uid = o.id.uid.as_str();
        if let Some(done) = self.done.get_mut(uid) {
            let old = done.retention;
            let new = if o.gone { None } else { o.retention };
            done.retention = new;
            self.gauges.replace_retention(old, new);
            if o.gone && !self.deleted.iter().any(|d| &**d == uid) {
                self.remember_deleted(uid.into());
            }
            return None;
        }
        let now = ctx.now;
        let new = !self.runs.contains_key(uid);
        if new {
            let info = Arc::new(RunInfo {
                namespace: self.name.clone(),
                name: o.id.name.as_str().into(),
                uid: uid.into(),
                runtime: o.runtime,
                agent: o.agent.as_deref().map(|a| ctx.strings.shared(a)),
                provider: None,
            });
            let terminal_before = o.status.outcome.and(o.status.terminal_at.or(o.status.updated_at));
            let export = match (ctx.cfg.backfill_window_ms, terminal_before) {
                (Some(window), Some(t)) => t.0 >= ctx.cfg.count_since.0.saturating_sub(window),
                _ => true,
            };
            let created = o.created.map(Stamp::object).unwrap_or(Stamp::observed(now));
            let run = Run::new(info, created, export);
            self.run_by_name.insert(run.info.name.clone(), run.info.uid.clone());
            self.runs.insert(run.info.uid.clone(), Box::new(run));
            self.adopt_jobs(uid, &o.id.name);
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
        super::status::apply(run, &o.status, now);
        // Jobs whose names do not tell their attempt (hashed) learn it from the status that names them.
        let attempts: Vec<(u64, u32)> =
            run.referenced.iter().filter_map(|r| Some((r.job, r.attempt?))).collect();
        let jobs: Vec<Arc<str>> = run.jobs.to_vec();
        for job_uid in jobs {
            let Some(job) = self.jobs.get_mut(&job_uid) else { continue };
            let key = name_key(&job.info.name);
            if let (true, Some((_, attempt))) =
                (job.attempt_unknown, attempts.iter().find(|(k, _)| *k == key))
            {
                job.set_attempt(*attempt);
                let (step, finished) = (job.info.step.clone(), job.finish.as_ref().map(|f| f.at));
                if let Some(run) = self.runs.get_mut(uid) {
                    run.remember_job(step, key, finished);
                }
            }
        }
        Some((uid.into(), new))
    }

    fn adopt_jobs(&mut self, run_uid: &str, run_name: &str) {
        let mut waiting = self.waiting_jobs.remove(&RunKey::Uid(run_uid.into())).unwrap_or_default();
        waiting.extend(self.waiting_jobs.remove(&RunKey::Name(run_name.into())).unwrap_or_default());
        let mut adopted: Vec<(HistoryEntry, Arc<str>)> = Vec::new();
        let mut labels = Vec::new();
        let shared = self.runs.get(run_uid).map(|r| (r.info.uid.clone(), r.info.name.clone()));
        for uid in waiting {
            if let Some(job) = self.jobs.get_mut(&uid) {
                // The run's own copies of its uid and name, instead of the Job's, which are then freed.
                if let Some((shared_uid, shared_name)) = &shared {
                    if job.run_uid.as_deref() == Some(&**shared_uid) {
                        job.run_uid = Some(shared_uid.clone());
                    }
                    if *job.run_name == **shared_name {
                        job.run_name = shared_name.clone();
                    }
                }
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
                run.take_labels(*l);
            }
            for (entry, uid) in adopted {
                if !run.jobs.contains(&uid) {
                    run.jobs.push(uid);
                }
                run.remember_job(entry.step, entry.job, entry.finished);
            }
        }
    }

    /// The end of an AgentRun relist: runs it did not contain were deleted during the gap.
    pub fn reset_runs(&mut self, seen: &HashSet<Arc<str>>, gap: Stamp) -> Vec<Arc<str>> {
        let mut dirty = Vec::new();
        for (uid, run) in self.runs.iter_mut() {
            if !run.gone && !seen.contains(uid) {
                run.gone = true;
                run.deleted.get_or_insert(gap);
                dirty.push(uid.clone());
            }
        }
        let gauges = &mut self.gauges;
        self.done.retain(|uid, d| {
            let keep = seen.contains(uid);
            if !keep {
                gauges.replace_retention(d.retention, None);
            }
            keep
        });
        let done = &self.done;
        self.deleted.retain(|uid| done.contains_key(uid));
        dirty
    }

    // ---------------------------------------------------------------------------------------------------
    // Jobs
    // ---------------------------------------------------------------------------------------------------

    /// Applies a Job; returns its run, when known.
    pub fn apply_job(&mut self, o: &JobUpdate, ctx: &mut Ctx) -> Option<Arc<str>> {
        let (uid, name) = (o.id.uid.as_str(), o.id.name.as_str());
        let now = ctx.now;
        if !self.jobs.contains_key(uid) {
            if o.gone {
                return None;
            }
            self.track_job(o, ctx);
        }
        let run_uid = self.run_of_job(uid);
        let consumed = run_uid
            .as_ref()
            .and_then(|r| self.runs.get(r))
            .and_then(|r| r.consumption_of(name_key(name)))
            .is_some_and(|c| !c.missing());
        let job = self.jobs.get_mut(uid)?;
        job.created = job.created.or(o.created);
        if let Some(start) = o.started {
            job.started.get_or_insert(start);
        }
        let newly_finished = job.finish.is_none() && o.finish.is_some();
        if job.finish.is_none() {
            job.finish = o.finish.as_ref().map(|f| {
                Box::new(Finish {
                    at: f.at,
                    failed: f.failed,
                    reason: f.reason.as_deref().map(|r| ctx.strings.shared(r)),
                })
            });
        }
        match (o.ttl, job.ttl) {
            (Some(secs), None) => {
                let finished = job.finish.is_some();
                // The generation says whether the TTL came later, whatever this process saw of the Job before.
                job.ttl_found_on_finished = o.ttl_patched.is_none() && finished && !job.seen_without_ttl;
                let applied = match o.ttl_patched {
                    Some(true) if finished => TtlApplied::AfterCollection,
                    Some(_) => TtlApplied::AtCreation,
                    // Patched onto a finished Job (or first seen finished and collected): the current controller.
                    None if finished && (job.seen_without_ttl || consumed) => TtlApplied::AfterCollection,
                    None => TtlApplied::AtCreation,
                };
                job.ttl = Some(Ttl { seconds: secs, applied });
            }
            (Some(secs), Some(ttl)) => job.ttl = Some(Ttl { seconds: secs, ..ttl }),
            (None, _) => job.seen_without_ttl = true,
        }
        if let Some(t) = o.deleting {
            job.deletion.get_or_insert_with(|| Box::new(Deletion { at: Stamp::object(t), noticed: now }));
        }
        if o.gone {
            job.gone = true;
            job.deletion.get_or_insert_with(|| Box::new(Deletion { at: Stamp::observed(now), noticed: now }));
        }
        if newly_finished && let Some(run_uid) = run_uid.as_ref() {
            let (step, key, fin) = (job.info.step.clone(), name_key(name), job.finish.as_ref().map(|f| f.at));
            if let Some(run) = self.runs.get_mut(run_uid) {
                run.remember_job(step, key, fin);
            }
        }
        self.orphans_dirty |= run_uid.is_none();
        run_uid
    }

    /// Starts tracking a Job, under its run or waiting for it.
    fn track_job(&mut self, o: &JobUpdate, ctx: &mut Ctx) {
        let (uid, name) = (o.id.uid.as_str(), o.id.name.as_str());
        let step = o.step.map(|p| step_key(p, 0));
        let step_name = step.as_ref().and(o.step_name.as_deref()).map(|s| ctx.strings.shared(s));
        let labels = RunLabels {
            provider: o.provider.as_deref().map(|s| ctx.strings.shared(s)),
            agent: o.agent.as_deref().map(|s| ctx.strings.shared(s)),
        };
        let owner_uid = o.run.uid.as_deref();
        let owner_run = owner_uid.and_then(|u| self.runs.get(u));
        let run_uid = owner_uid.map(|u| owner_run.map(|r| r.info.uid.clone()).unwrap_or_else(|| u.into()));
        let run_name = owner_run.map(|r| r.info.name.clone()).unwrap_or_else(|| o.run.name.as_str().into());
        let uid_shared: Arc<str> = Arc::from(uid);
        let mut job = Box::new(JobTrack {
            info: Arc::new(JobInfo { name: name.into(), uid: uid_shared.clone(), step_name, step }),
            run_uid,
            run_name,
            created: None,
            started: None,
            finish: None,
            ttl: None,
            seen_without_ttl: false,
            ttl_found_on_finished: false,
            attempt_unknown: o.step.is_some_and(|p| p.attempt.is_none()),
            first_seen: ctx.now,
            deletion: None,
            gone: false,
            emitted: Flags::default(),
            submit_start: None,
            clamped: Clamped::default(),
            pods: self.waiting_pods.remove(uid).map(Small::from).unwrap_or_default(),
            labels: None,
            gauge: Default::default(),
        });
        // Pods that came first share the Job's uid instead of their own copy of it.
        for pod_uid in job.pods.iter() {
            if let Some(pod) = self.pods.get_mut(pod_uid)
                && *pod.job_uid == *uid_shared
            {
                pod.job_uid = uid_shared.clone();
            }
        }
        match self.resolve_run(owner_uid, &o.run.name).and_then(|r| self.runs.get_mut(&r)) {
            Some(run) => {
                run.take_labels(labels);
                run.jobs.push(uid_shared.clone());
                // A hashed name's attempt may already be in the status.
                if job.attempt_unknown
                    && let Some(a) = run.reference_of(name_key(name)).and_then(|r| r.attempt)
                {
                    job.set_attempt(a);
                }
                run.remember_job(job.info.step.clone(), name_key(name), None);
            }
            None => {
                let key = match owner_uid {
                    Some(u) => RunKey::Uid(u.into()),
                    None => RunKey::Name(o.run.name.as_str().into()),
                };
                self.waiting_jobs.entry(key).or_default().push(uid_shared.clone());
                job.labels = Some(Box::new(labels));
            }
        }
        self.jobs.insert(uid_shared, job);
    }

    /// The end of a Job relist: Jobs it did not contain vanished during the gap.
    pub fn reset_jobs(&mut self, seen: &HashSet<Arc<str>>, gap: Stamp) -> Vec<Arc<str>> {
        let vanished: Vec<Arc<str>> = self
            .jobs
            .iter()
            .filter(|(uid, j)| !j.gone && !seen.contains(*uid))
            .map(|(uid, _)| uid.clone())
            .collect();
        let mut dirty = Vec::new();
        self.orphans_dirty = true;
        self.jobs_listed_at = Some(gap.at);
        for uid in vanished {
            if let Some(job) = self.jobs.get_mut(&uid) {
                job.gone = true;
                job.deletion.get_or_insert_with(|| Box::new(Deletion { at: gap, noticed: gap.at }));
            }
            dirty.extend(self.run_of_job(&uid));
        }
        dirty
    }

    // ---------------------------------------------------------------------------------------------------
    // Pods
    // ---------------------------------------------------------------------------------------------------

    /// Applies a Pod; returns its run, when known.
    pub fn apply_pod(&mut self, o: &PodUpdate, ctx: &mut Ctx) -> Option<Arc<str>> {
        let (uid, name) = (o.id.uid.as_str(), o.id.name.as_str());
        let job_uid = o.job_uid.as_str();
        let now = ctx.now;
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
                Some(job) => job.pods.push(uid_shared),
                None => self.waiting_pods.entry(job_uid.into()).or_default().push(uid_shared),
            }
        }
        let pod = self.pods.get_mut(uid)?;
        if pod.info.node.is_none() {
            pod.info.node = o.node.as_deref().map(|n| ctx.strings.shared(n));
        }
        pod.created = pod.created.or(o.created);
        if pod.terminated.is_none()
            && let Some(t) = &o.terminated
        {
            pod.terminated = Some(Box::new(Termination {
                at: t.at.unwrap_or(now),
                exit_code: t.exit_code,
                reason: t.reason.as_deref().map(|r| ctx.strings.shared(r)),
            }));
        }
        if let Some(t) = o.deleting {
            pod.deleted.get_or_insert(Stamp::object(t));
        }
        if o.gone {
            pod.deleted.get_or_insert(Stamp::observed(now));
        }
        let run = self.run_of_job(job_uid);
        self.orphans_dirty |= run.is_none();
        run
    }

    /// The end of a Pod relist: Pods it did not contain vanished during the gap.
    pub fn reset_pods(&mut self, seen: &HashSet<Arc<str>>, gap: Stamp) -> Vec<Arc<str>> {
        let vanished: Vec<Arc<str>> = self
            .pods
            .iter()
            .filter(|(uid, p)| !seen.contains(*uid) && p.deleted.is_none())
            .map(|(uid, _)| uid.clone())
            .collect();
        let mut dirty = Vec::new();
        self.orphans_dirty = true;
        for uid in vanished {
            let Some(pod) = self.pods.get_mut(&uid) else { continue };
            pod.deleted = Some(gap);
            let job_uid = pod.job_uid.clone();
            dirty.extend(self.run_of_job(&job_uid));
        }
        dirty
    }

    // ---------------------------------------------------------------------------------------------------
    // Forgetting
    // ---------------------------------------------------------------------------------------------------

    /// Forgets a run whose lifecycle is complete, with its Jobs and Pods; keeps a tombstone while the AgentRun
    /// exists.
    pub fn forget_run(&mut self, run_uid: &str) -> Option<Box<Run>> {
        let run = self.runs.remove(run_uid)?;
        for job_uid in &run.jobs {
            self.forget_job(job_uid);
        }
        self.run_by_name.remove(&run.info.name);
        self.gauges.replace_retention(run.retention_counted, None);
        if run.gone {
            self.done.insert(run.info.uid.clone(), DoneRun { retention: None });
            self.remember_deleted(run.info.uid.clone());
        } else {
            self.done.insert(run.info.uid.clone(), DoneRun { retention: run.retention });
            self.gauges.replace_retention(None, run.retention);
        }
        Some(run)
    }

    fn remember_deleted(&mut self, uid: Arc<str>) {
        self.deleted.push_back(uid);
        if self.deleted.len() > DELETED_TOMBSTONES
            && let Some(oldest) = self.deleted.pop_front()
        {
            self.done.remove(&oldest);
        }
    }

    fn forget_job(&mut self, job_uid: &str) {
        if let Some(job) = self.jobs.remove(job_uid) {
            self.drop_job_gauge(&job);
            for p in &job.pods {
                self.pods.remove(p);
            }
        }
    }

    /// Forgets Jobs and Pods that are gone and fully reported, when their run is unknown (not ours, or deleted
    /// before this process started): they would otherwise be held forever.
    pub fn sweep_orphans(&mut self) {
        if !std::mem::take(&mut self.orphans_dirty) {
            return;
        }
        let orphan_jobs: Vec<Arc<str>> = self
            .jobs
            .iter()
            .filter(|(uid, j)| j.gone && self.run_of_job(uid).is_none())
            .map(|(u, _)| u.clone())
            .collect();
        for uid in orphan_jobs {
            self.forget_job(&uid);
        }
        let jobs = &self.jobs;
        self.pods.retain(|_, p| p.deleted.is_none() || jobs.contains_key(&p.job_uid));
        let pods = &self.pods;
        self.waiting_jobs.retain(|_, uids| {
            uids.retain(|u| jobs.contains_key(u));
            !uids.is_empty()
        });
        self.waiting_pods.retain(|_, uids| {
            uids.retain(|u| pods.contains_key(u));
            !uids.is_empty()
        });
    }
}

/// Facts of one run are pushed through here: a run outside the backfill window exports no spans; its facts still
/// count when they are new.
pub(super) fn push(ctx: &mut Ctx, exported: bool, at: Ts, fact: Fact) {
    let counted = at >= ctx.cfg.count_since;
    if exported || counted {
        ctx.out.push(crate::engine::Emitted { fact, counted, exported });
    }
}

impl Strings {
    /// A shared copy of a low-cardinality string (agent, provider, step, node, reason names).
    pub fn shared(&mut self, s: &str) -> Arc<str> {
        if let Some(existing) = self.0.get(s) {
            return existing.clone();
        }
        let arc: Arc<str> = Arc::from(s);
        self.0.insert(arc.clone());
        arc
    }
}

//! Evaluation: each fact has its own small function that emits it once its inputs are known. A run is
//! evaluated after every update that touched it and when one of its deadlines falls due.

use std::sync::Arc;

use super::{Ctx, index::Namespace, index::push, state::*};
use crate::engine::{
    facts::*,
    ids::name_key,
    model::Consumption as ConsumptionKind,
    time::{Stamp, TimeSource, Ts},
};

/// Kubernetes timestamps are whole seconds: a deletion up to this much before `finish + TTL` still counts as
/// the TTL controller's, and a Job deleted up to this much before its run's deletion was deleted with it.
const TTL_DEADLINE_TOLERANCE_MS: i64 = 1000;

/// What a Job's facts need to know about its run.
struct RunView {
    info: Arc<RunInfo>,
    created: Ts,
    deleted: Option<Stamp>,
    finished: bool,
    job_ttl: Option<i64>,
    consumption: Option<Consumption>,
    submit_start: Option<Ts>,
    /// The start of the Job's `workflow.step` span, when it was already emitted.
    step_start: Option<Ts>,
    /// The submit waits for the status write that names the Job.
    awaits_status: bool,
}

/// A fact's verdict: emitted now, or to be looked at again at a time.
enum Verdict {
    Emit(Ts, Fact),
    WaitUntil(Ts),
    Nothing,
}

impl Namespace {
    pub fn evaluate(&mut self, run_uid: &str, ctx: &mut Ctx, listing: bool) {
        let Some(run) = self.runs.get(run_uid) else { return };
        let jobs: Vec<Arc<str>> = run.jobs.to_vec();
        for job_uid in jobs {
            self.evaluate_job(run_uid, &job_uid, ctx);
        }
        // Step and root spans carry what the run's Jobs tell (the provider, the steps' first submits): while its
        // namespace's Jobs or Pods are being listed, they wait for the list to end.
        if !listing {
            self.evaluate_steps(run_uid, ctx);
            self.evaluate_root(run_uid, ctx);
        }
        if let Some(run) = self.runs.get(run_uid) {
            let jobs: Vec<Arc<str>> = run.jobs.to_vec();
            for job_uid in jobs {
                self.refresh_job_gauge(&job_uid, ctx.cfg);
            }
            self.refresh_run_gauge(run_uid);
        }
        if !listing {
            self.evaluate_complete(run_uid, ctx);
        }
    }

    /// A workflow Job after the first is created before the status write that names it (and that collects the
    /// Job before it): its submit waits for that write, which also gives a hashed name its attempt. After the
    /// settle time it gives up, and a hashed name counts its attempt among the step's Jobs by creation.
    fn run_view(&mut self, run_uid: &str, job_uid: &str, ctx: &Ctx) -> Option<RunView> {
        let run = self.runs.get(run_uid)?;
        let job = self.jobs.get(job_uid)?;
        let key = name_key(&job.info.name);
        let reference = run.reference_of(key).cloned();
        // The Job before it, not yet known to be consumed: the write that consumed it decides where this submit
        // starts, and its event may come after this Job's.
        let previous_pending = previous_of(run, job).is_some_and(|p| run.consumption_of(p.job).is_none());
        let awaits_status = reference.is_none()
            && run.consumption_of(key).is_none()
            && ctx.now < job.first_seen.add_millis(ctx.cfg.settle_ms)
            && (job.attempt_unknown || previous_pending);
        let fallback_attempt = (job.attempt_unknown && !awaits_status).then(|| {
            let k = job.info.step.clone().unwrap_or_else(StepKey::first);
            let earlier = run
                .jobs
                .iter()
                .filter_map(|u| self.jobs.get(u))
                .filter(|j| j.info.uid != job.info.uid && j.created < job.created)
                .filter(|j| {
                    j.info.step.as_ref().is_some_and(|s| (s.index, s.iteration) == (k.index, k.iteration))
                })
                .count();
            1 + earlier as u32
        });
        let job = self.jobs.get_mut(job_uid)?;
        let run = self.runs.get_mut(run_uid)?;
        if let Some(a) = fallback_attempt {
            job.set_attempt(a);
            run.remember_job(job.info.step.clone(), key, job.finish.as_ref().map(|f| f.at));
        }
        let step_start = job
            .info
            .step
            .as_ref()
            .and_then(|k| run.steps.iter().find(|s| s.index == k.index))
            .and_then(|s| s.span_start);
        Some(RunView {
            step_start,
            info: run.info.clone(),
            created: run.created.at,
            deleted: run.deleted,
            finished: run.terminal.is_some(),
            job_ttl: run.job_ttl,
            consumption: run.consumption_of(key).cloned(),
            submit_start: submit_start_of(run, job),
            awaits_status,
        })
    }

    fn evaluate_job(&mut self, run_uid: &str, job_uid: &str, ctx: &mut Ctx) {
        let Some(export) = self.runs.get(run_uid).map(|r| r.export) else { return };
        let Some(view) = self.run_view(run_uid, job_uid, ctx) else { return };
        let Some(job) = self.jobs.get_mut(job_uid) else { return };
        // A TTL found on a finished Job (the lists after a restart come in any order) was patched on after
        // collection when a write collected it: decided here, whichever list came first.
        if job.ttl_found_on_finished
            && let (Some(ttl), Some(c)) = (job.ttl.as_mut(), view.consumption.as_ref())
            && !c.missing()
        {
            ttl.applied = TtlApplied::AfterCollection;
        }
        let mut wake: Option<Ts> = None;
        let mut wait = |t: Ts| wake = Some(wake.map_or(t, |w: Ts| w.min(t)));
        if view.awaits_status && !job.emitted.has(Flags::SUBMIT) {
            wait(job.first_seen.add_millis(ctx.cfg.settle_ms));
        }
        let mut facts: Vec<(Ts, Fact)> = Vec::new();
        facts.extend(submit(job, &view, ctx.cfg.count_since));
        facts.extend(pending(job, &view));
        facts.extend(ran(job, &view));
        facts.extend(abandoned(job, &view));
        for verdict in [collected(job, &view, ctx), margin(job, &view), gone(job, &view, ctx)] {
            match verdict {
                Verdict::Emit(at, fact) => facts.push((at, fact)),
                Verdict::WaitUntil(t) => wait(t),
                Verdict::Nothing => {}
            }
        }
        let pods = job.pods.to_vec();
        // Pods start inside the Job's `job.run`, whose start is fixed once it has a start time, or once the span
        // was emitted without one (finished or deleted first).
        let job_started = if job.emitted.has(Flags::PENDING) {
            job.clamped.started
        } else if job.emitted.has(Flags::RUN) || job.emitted.has(Flags::GONE) {
            job.clamped.created
        } else {
            None
        };
        let jinfo = job.info.clone();
        for (at, fact) in facts {
            push(ctx, export, at, fact);
        }
        if let Some(at) = wake {
            ctx.deadlines.schedule(at, &(self.name.clone(), run_uid.into()));
        }
        for pod_uid in pods {
            if let Some(pod) = self.pods.get_mut(&pod_uid)
                && let Some((at, fact)) = pod_ran(pod, &view.info, &jinfo, job_started)
            {
                push(ctx, export, at, fact);
            }
        }
    }

    fn evaluate_steps(&mut self, run_uid: &str, ctx: &mut Ctx) {
        let Some(run) = self.runs.get(run_uid) else { return };
        if run.info.runtime != Runtime::Workflow {
            return;
        }
        let submit_starts: Vec<(u32, Ts)> = run
            .jobs
            .iter()
            .filter_map(|u| self.jobs.get(u))
            // A step holds its Jobs' submits and their creations (which a submit raised to a later write does not
            // move).
            .filter_map(|j| {
                let start = match (j.submit_start, j.created) {
                    (Some(s), Some(c)) => s.min(c),
                    (s, c) => s.or(c)?,
                };
                Some((j.info.step.as_ref()?.index, start))
            })
            .collect();
        let steps_with_jobs: Vec<u32> = run
            .jobs
            .iter()
            .filter_map(|u| self.jobs.get(u))
            .filter_map(|j| Some(j.info.step.as_ref()?.index))
            .collect();
        let Some(run) = self.runs.get_mut(run_uid) else { return };
        // Steps whose first Job this process knows (seen, or named by the status): where they start is known.
        let first_known: Vec<u32> = run
            .history
            .iter()
            .filter_map(|e| e.step.as_ref())
            .filter(|k| k.attempt == 1 && k.iteration.unwrap_or(1) <= 1)
            .map(|k| k.index)
            .collect();
        let (info, created, export) = (run.info.clone(), run.created.at, run.export);
        // Found already finished (after a restart): a step none of whose Jobs is left cannot start where the
        // process that saw them started it; that one sent it, and a different copy must not follow.
        let found_finished = !run.seen_nonterminal;
        for step in run.steps.iter_mut().filter(|s| !s.emitted) {
            let Some(terminal) = step.terminal else { continue };
            // A step starts at its first Job's submit; its own `startedAt` (rewritten by each attempt and on
            // success) only when no Job of it was seen.
            let first_job = submit_starts.iter().filter(|(i, _)| *i == step.index).map(|(_, t)| *t).min();
            if found_finished && !steps_with_jobs.contains(&step.index) {
                step.emitted = true;
                continue;
            }
            // The run's first step starts with the run, whichever of its attempts this process saw.
            let known_start = if step.index == 1 {
                Some(created)
            } else {
                first_job.filter(|_| first_known.contains(&step.index))
            };
            // Ended before this process started and its first Job gone: the process that saw it sent the span,
            // from where that Job started, which this one cannot know.
            if known_start.is_none() && terminal.at.at < ctx.cfg.count_since {
                step.emitted = true;
                continue;
            }
            let start_at = known_start.or(first_job).or(step.first_started).unwrap_or(terminal.at.at);
            let start = Stamp::object(start_at).not_before(created);
            let end = terminal.at.not_before(start.at);
            step.emitted = true;
            step.span_start = Some(start.at);
            let fact = Fact::StepFinished {
                run: info.clone(),
                index: step.index,
                name: step.name.clone(),
                start,
                end,
                failed: terminal.failed,
                missing: step.missing.clone(),
            };
            push(ctx, export, end.at, fact);
        }
    }

    /// `agentrun`: at the terminal write, or the deletion of a run that never finished.
    fn evaluate_root(&mut self, run_uid: &str, ctx: &mut Ctx) {
        let Some(run) = self.runs.get_mut(run_uid) else { return };
        if run.root_emitted {
            return;
        }
        let (outcome, end, reason) = match (&run.terminal, run.deleted) {
            (Some(t), _) => (Some(t.outcome), t.at, t.reason.clone()),
            (None, Some(deleted)) => (None, deleted, None),
            (None, None) => return,
        };
        run.root_emitted = true;
        run.root_emitted_at = Some(ctx.now);
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
        push(ctx, export, end.at, fact);
    }

    /// Forgets a run once every span of it was emitted.
    fn evaluate_complete(&mut self, run_uid: &str, ctx: &mut Ctx) {
        let Some(run) = self.runs.get(run_uid) else { return };
        if !run.root_emitted {
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
        // The status named Jobs not seen yet (their watch lags): wait a settle time for them, unless a Job list
        // completed since, which shows they are gone.
        // (The root may have waited for the Pod list after the Job list ended: the terminal write is what counts.)
        let since = run.terminal.as_ref().map(|t| t.seen_at).or(run.root_emitted_at);
        let listed_since = self.jobs_listed_at.is_some_and(|t| Some(t) >= since);
        let unseen = !listed_since
            && run
                .referenced
                .iter()
                .map(|r| r.job)
                .chain(run.consumed.iter().map(|c| c.job))
                .any(|job| !run.history.iter().any(|e| e.job == job));
        let wait_until = run.root_emitted_at.unwrap_or(ctx.now).add_millis(ctx.cfg.settle_ms);
        if unseen && ctx.now < wait_until {
            ctx.deadlines.schedule(wait_until, &(self.name.clone(), run_uid.into()));
            return;
        }
        let Some(run) = self.forget_run(run_uid) else { return };
        let at = ctx.now.max(ctx.cfg.count_since);
        push(ctx, run.export, at, Fact::RunComplete { run: run.info.clone() });
    }
}

/// `job.submit`: run/step start → Job created.
fn submit(job: &mut JobTrack, run: &RunView, count_since: Ts) -> Option<(Ts, Fact)> {
    if job.emitted.has(Flags::SUBMIT) || run.awaits_status {
        return None;
    }
    let created = job.created?;
    let submit_start = match run.submit_start {
        Some(t) => t,
        // Where its submit started went with the Job before it. Created before this process started, the process
        // that saw that Job sent the span; a guess here would be a second, different copy. Created since, this
        // process is the only one to send it: from the run's creation, the best it knows.
        None if created < count_since => {
            job.emitted.set(Flags::SUBMIT);
            job.clamped.created = Some(Stamp::object(created));
            return None;
        }
        None => run.created,
    };
    // A Job seen after its step's span went out stays inside it.
    let floor = run.step_start.map_or(run.created, |s| s.max(run.created));
    let start = Stamp::object(submit_start).not_before(floor);
    let end = Stamp::object(created).not_before(start.at);
    job.submit_start = Some(start.at);
    // A submit start later than the second-truncated creation raises this span's end only: the Job's later phases
    // start from its own creation, so they do not depend on what the process saw before the Job.
    job.clamped.created = Some(Stamp::object(created).not_before(floor));
    job.emitted.set(Flags::SUBMIT);
    let fact = Fact::JobPhase {
        run: run.info.clone(),
        job: job.info.clone(),
        phase: Phase::Submit,
        start,
        end,
        failure: None,
    };
    Some((end.at, fact))
}

/// `job.pending`: created → started.
fn pending(job: &mut JobTrack, run: &RunView) -> Option<(Ts, Fact)> {
    if !job.emitted.has(Flags::SUBMIT) || job.emitted.has(Flags::PENDING) {
        return None;
    }
    let (created, started) = (job.clamped.created?, job.started?);
    let end = Stamp::object(started).not_before(created.at);
    job.clamped.started = Some(end);
    job.emitted.set(Flags::PENDING);
    let start = Stamp { clamped: false, ..created };
    let fact = Fact::JobPhase {
        run: run.info.clone(),
        job: job.info.clone(),
        phase: Phase::Pending,
        start,
        end,
        failure: None,
    };
    Some((end.at, fact))
}

/// `job.run`: started → Complete/Failed.
fn ran(job: &mut JobTrack, run: &RunView) -> Option<(Ts, Fact)> {
    if !job.emitted.has(Flags::SUBMIT) || job.emitted.has(Flags::RUN) {
        return None;
    }
    let started = job.clamped.started.or(job.clamped.created)?;
    let finish = job.finish.as_ref()?;
    let end = Stamp::object(finish.at).not_before(started.at);
    let failure = finish.failed.then(|| finish.reason.clone());
    job.clamped.finished = Some(end);
    job.emitted.set(Flags::RUN);
    let start = Stamp { clamped: false, ..started };
    let fact = Fact::JobPhase {
        run: run.info.clone(),
        job: job.info.clone(),
        phase: Phase::Run,
        start,
        end,
        failure,
    };
    Some((end.at, fact))
}

/// A timed-out step gave up on its Job: nothing will read it, so there is no collection to time; a zero-length
/// `job.collect` at that write says so.
fn abandoned(job: &mut JobTrack, run: &RunView) -> Option<(Ts, Fact)> {
    if !job.emitted.has(Flags::SUBMIT) || job.emitted.has(Flags::COLLECT) {
        return None;
    }
    let c = run.consumption.as_ref().filter(|c| c.kind == ConsumptionKind::Abandoned)?;
    let floor = job.clamped.created.map(|c| c.at).unwrap_or(run.created);
    let at = c.at.not_before(floor);
    job.emitted.set(Flags::COLLECT);
    job.emitted.set(Flags::MARGIN);
    let fact = Fact::JobCollected {
        run: run.info.clone(),
        job: job.info.clone(),
        finished: Stamp { clamped: false, ..at },
        collected: at,
        outcome: CollectOutcome::Abandoned,
        ttl: job.ttl,
    };
    Some((at.at, fact))
}

/// `job.collect`: finished → the consuming write; waits briefly for the TTL patch that follows it.
fn collected(job: &mut JobTrack, run: &RunView, ctx: &Ctx) -> Verdict {
    if !job.emitted.has(Flags::RUN) || job.emitted.has(Flags::COLLECT) {
        return Verdict::Nothing;
    }
    let (Some(fin), Some(c)) = (job.clamped.finished, run.consumption.as_ref()) else {
        return Verdict::Nothing;
    };
    let ttl_expected =
        job.ttl.is_none() && run.job_ttl.is_some() && c.kind == ConsumptionKind::Collected && !job.gone;
    let wait_until = c.seen_at.add_millis(ctx.cfg.settle_ms);
    if ttl_expected && ctx.now < wait_until {
        return Verdict::WaitUntil(wait_until);
    }
    let collected = c.at.not_before(fin.at);
    let outcome = if c.missing() {
        CollectOutcome::Missing
    } else if job.finish.as_ref().is_some_and(|f| f.failed) {
        CollectOutcome::Failed
    } else {
        CollectOutcome::Succeeded
    };
    job.emitted.set(Flags::COLLECT);
    let fact = Fact::JobCollected {
        run: run.info.clone(),
        job: job.info.clone(),
        finished: Stamp { clamped: false, ..fin },
        collected,
        outcome,
        ttl: job.ttl,
    };
    Verdict::Emit(collected.at, fact)
}

/// TTL minus collection delay, once both the TTL and the collection (or the write that found the Job missing)
/// are known.
fn margin(job: &mut JobTrack, run: &RunView) -> Verdict {
    if job.emitted.has(Flags::MARGIN) {
        return Verdict::Nothing;
    }
    let (Some(fin), Some(c), Some(ttl)) = (job.clamped.finished, run.consumption.as_ref(), job.ttl) else {
        return Verdict::Nothing;
    };
    let margin_seconds = ttl.seconds as f64 - c.at.not_before(fin.at).at.secs_since(fin.at);
    job.emitted.set(Flags::MARGIN);
    // A write that found the Job missing says it was deleted before collection: its `job.ttl` verdict counts
    // it (when the TTL did it), whichever of the two facts comes first.
    let exceeded = margin_seconds < 0.0 && !c.missing() && !job.emitted.has(Flags::EXCEEDED);
    if exceeded {
        job.emitted.set(Flags::EXCEEDED);
    }
    let fact =
        Fact::TtlMargin { run: run.info.clone(), job: job.info.clone(), ttl, margin_seconds, exceeded };
    Verdict::Emit(c.at.at.max(fin.at), fact)
}

/// The Job is gone: who deleted it, and was it collected first. The collection, or the deletion of the run that
/// took the Job with it, may come a little later on the AgentRun watch: an uncollected Job waits `settle`.
fn gone(job: &mut JobTrack, run: &RunView, ctx: &Ctx) -> Verdict {
    if job.emitted.has(Flags::GONE) {
        return Verdict::Nothing;
    }
    let Some(deletion) = job.deletion.as_deref().copied() else { return Verdict::Nothing };
    let deleted = deletion.at;
    let finished = job.clamped.finished;
    let collected_ok = run.consumption.as_ref().is_some_and(|c| !c.missing())
        || job.ttl.is_some_and(|t| t.applied == TtlApplied::AfterCollection);
    let wait_until = deletion.noticed.add_millis(ctx.cfg.settle_ms);
    // Also for the consuming write a TTL patch proves (its margin goes on this fact): it may still be on its way.
    let consumption_pending = run.consumption.is_none() && finished.is_some();
    if (!collected_ok || consumption_pending) && run.deleted.is_none() && ctx.now < wait_until {
        return Verdict::WaitUntil(wait_until);
    }
    let floor = finished.map(|f| f.at).or(job.clamped.started.map(|s| s.at)).unwrap_or(run.created);
    let deleted = deleted.not_before(floor);
    let by_ttl = match (finished, job.ttl) {
        (Some(f), Some(t)) if deleted.source == TimeSource::UnknownGap => {
            deleted.at >= f.at.add_secs(t.seconds)
        }
        (Some(f), Some(t)) => deleted.at.0 >= f.at.add_secs(t.seconds).0 - TTL_DEADLINE_TOLERANCE_MS,
        _ => false,
    };
    let with_run =
        run.deleted.is_some_and(|r| r.at.0 <= deleted.at.0.saturating_add(TTL_DEADLINE_TOLERANCE_MS));
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
    // Deleted before collection, the margin is known only when (if ever) the controller finds it missing: it
    // goes on that fact, not on this one, so this fact does not depend on which came first.
    let margin_seconds = match (finished, run.consumption.as_ref(), job.ttl) {
        (Some(f), Some(c), Some(t)) if !before_collection => {
            Some(t.seconds as f64 - c.at.not_before(f.at).at.secs_since(f.at))
        }
        _ => None,
    };
    let fact = Fact::JobGone {
        run: run.info.clone(),
        job: job.info.clone(),
        started: job.clamped.started.or(job.clamped.created),
        finished: finished.map(|f| Stamp { clamped: false, ..f }),
        deleted,
        ttl: job.ttl,
        margin_seconds,
        before_collection,
        cause,
        // Only a deletion with the run tells a cancel from retention.
        run_finished: cause == DeletionCause::WithRun && run.finished,
        exceeded,
    };
    Verdict::Emit(deleted.at, fact)
}

/// `pod.run`: Pod created → container terminated (or the Pod went away first).
fn pod_ran(
    pod: &mut PodTrack,
    run: &Arc<RunInfo>,
    job: &Arc<JobInfo>,
    job_started: Option<Stamp>,
) -> Option<(Ts, Fact)> {
    if pod.emitted {
        return None;
    }
    let floor = job_started?;
    let end_raw = match (&pod.terminated, pod.deleted) {
        (Some(t), _) => Stamp::object(t.at),
        (None, Some(d)) => d,
        (None, None) => return None,
    };
    let start = Stamp::object(pod.created.unwrap_or(floor.at)).not_before(floor.at);
    let end = end_raw.not_before(start.at);
    pod.emitted = true;
    let fact = Fact::PodRan {
        run: run.clone(),
        job: job.clone(),
        pod: pod.info.clone(),
        start,
        end,
        exit_code: pod.terminated.as_ref().map(|t| t.exit_code),
        reason: pod.terminated.as_ref().and_then(|t| t.reason.clone()),
    };
    Some((end.at, fact))
}

/// The run's Job just before this one in workflow order.
fn previous_of<'r>(run: &'r Run, job: &JobTrack) -> Option<&'r HistoryEntry> {
    let key = job.info.step.as_ref()?;
    let this = name_key(&job.info.name);
    run.history.iter().rev().find(|e| e.job != this && e.step.as_ref().is_some_and(|k| k < key))
}

/// Where the submit phase of a Job starts. Job runtime, and a workflow's first Job: the run's creation. Later
/// workflow Jobs: the status write that consumed the Job before it. `None` when what decides it is gone. Only what
/// the objects still carry decides it, so a process that starts mid-run finds the same start as one that watched
/// it all, or none.
fn submit_start_of(run: &Run, job: &JobTrack) -> Option<Ts> {
    let Some(key) = &job.info.step else {
        return Some(run.created.at);
    };
    let Some(previous) = previous_of(run, job) else {
        // A later Job whose predecessor this process never knew (deleted, and the status no longer names it).
        let first = key.index == 1 && key.attempt == 1 && key.iteration.unwrap_or(1) <= 1;
        return first.then_some(run.created.at);
    };
    let consumed = run.consumption_of(previous.job).map(|c| c.at.at);
    // A retry or a later loop iteration follows a Job of its own step: when the one found is of an earlier step,
    // the Job in between is gone and unnamed, and the start unknown.
    let retry = previous.step.as_ref().is_some_and(|p| (p.index, p.iteration) == (key.index, key.iteration));
    let same_step = previous.step.as_ref().is_some_and(|p| p.index == key.index);
    if (key.attempt > 1 && !retry) || (key.iteration.unwrap_or(1) > 1 && !same_step) {
        return None;
    }
    // The write that consumed the Job before it: the status keeps it as long as it names that Job. (Upstream
    // creates the next step's Job just before that write; the wait between the Job's finish and that write is
    // the previous job.collect.) Without it, the previous Job's finish, while that Job is known.
    match consumed {
        Some(c) => Some(c),
        None if retry => None,
        None => previous.finished,
    }
}

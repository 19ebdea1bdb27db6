//! Folding an AgentRun status into the run: which Jobs it consumed (and how), which it names as running, step
//! progress, the terminal state, missing-Job conditions.

use std::sync::Arc;

use super::state::*;
use crate::engine::{
    facts::{MissingEvent, StepKey},
    ids::name_key,
    model::{Consumption as ConsumptionKind, RunStatus, StepPhase},
    time::{Stamp, Ts},
};

/// Folds one AgentRun status into the run: consumptions of Jobs, references to running ones, step progress,
/// terminal state, missing-Job conditions.
pub(super) fn apply(run: &mut Run, status: &RunStatus, now: Ts) {
    let updated = status.updated_at;
    let reason: Option<Arc<str>> = status.reason.as_deref().map(Into::into);

    for (reason, at) in &status.missing {
        let reason: Arc<str> = reason.as_str().into();
        match run.missing.iter_mut().find(|m| m.reason == reason) {
            Some(m) => m.at = m.at.min(*at),
            None => run.missing.push(MissingEvent { at: *at, reason }),
        }
    }

    // The time of a consuming write: the step's, iteration's or condition's own transition time (an iteration's
    // `finishedAt` is its write's time upstream), which every later status still carries, so a process started
    // later finds the same time; else `updatedAt`; else when it was seen.
    let transition = |own: Option<Ts>| -> Stamp {
        match (own, updated) {
            (Some(t), _) => Stamp::object(t),
            (None, Some(u)) => Stamp::object(u),
            (None, None) => Stamp::observed(now),
        }
    };
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
                consumptions.push((job, transition(status.terminal_at), kind));
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
                    span_start: None,
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
                    consumptions.push((job, transition(s.transition_at), kind));
                    // The attempt, for a Job whose hashed name does not tell it.
                    references.push((job, s.attempt));
                    if s.iterations.is_empty() {
                        let key =
                            StepKey { index: s.index, iteration: None, attempt: s.attempt.unwrap_or(1) };
                        run.remember_consumed_job(key, job);
                    }
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
                    consumptions.push((job, transition(it.finished_at), kind));
                    references.push((job, it.attempt));
                    let key = StepKey {
                        index: s.index,
                        iteration: Some(it.index),
                        attempt: it.attempt.unwrap_or(1),
                    };
                    run.remember_consumed_job(key, job);
                }
                None if it.running => references.push((job, it.attempt)),
                None => {}
            }
        }
        let Some(step) = run.steps.iter_mut().find(|st| st.index == s.index) else { continue };
        if matches!(s.phase, StepPhase::Succeeded | StepPhase::Failed) && step.terminal.is_none() {
            step.terminal =
                Some(StepTerminal { at: transition(s.transition_at), failed: s.phase == StepPhase::Failed });
        }
        let missing =
            s.failed_missing || s.retried_missing || s.consumption == Some(ConsumptionKind::Missing);
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
            None => run.referenced.push(Reference { job, attempt }),
        }
    }
    match status.outcome {
        Some(o) if run.terminal.is_none() => {
            let at = transition(status.terminal_at);
            run.terminal = Some(Box::new(RunTerminal { outcome: o, at, reason, seen_at: now }));
        }
        Some(_) => {}
        None => {
            if status.has_phase {
                run.seen_nonterminal = true;
            }
        }
    }
}

//! Tracker scenarios, built from upstream-shaped objects (`upstream::shapes`): both runtimes, both TTL styles,
//! failure, JobMissing, WorkflowJobMissing, deletion before collection, relist gaps, restarts, event order.

use super::{facts::*, model::Kind, time::*, tracker::*};
use crate::{
    source::{Change, Observation},
    upstream::{self, RunSpec, StepRef, UpstreamConfig, objects::*},
};

const T0: i64 = 1_787_227_200_000; // 2026-08-20T12:00:00Z

fn t(secs: f64) -> Ts {
    Ts(T0 + (secs * 1000.0).round() as i64)
}

struct Harness {
    tracker: Tracker,
    upstream: UpstreamConfig,
    out: Vec<Emitted>,
}

impl Harness {
    fn new() -> Self {
        Self::with(TrackerConfig { settle_ms: 5_000, ..TrackerConfig::default() })
    }

    /// The controller's default TTL is the same on both sides of the boundary.
    fn with(cfg: TrackerConfig) -> Self {
        let upstream = UpstreamConfig { default_job_ttl: cfg.default_job_ttl, ..UpstreamConfig::default() };
        Harness { tracker: Tracker::new(cfg), upstream, out: Vec::new() }
    }

    fn up(&mut self, at: f64, o: impl Into<Object>) {
        self.change(at, Change::Upsert(o.into()));
    }

    fn del(&mut self, at: f64, o: impl Into<Object>) {
        self.change(at, Change::Delete(o.into()));
    }

    /// Through the upstream boundary, as every source does.
    fn change(&mut self, at: f64, change: Change) {
        if let Some(input) = upstream::input(&Observation { at: t(at), change }, &self.upstream) {
            let facts = self.tracker.apply(input);
            self.out.extend(facts);
        }
    }

    fn tick(&mut self, at: f64) {
        let facts = self.tracker.tick(t(at));
        self.out.extend(facts);
    }

    fn facts(&self) -> impl Iterator<Item = &Fact> {
        self.out.iter().map(|e| &e.fact)
    }

    fn phases(&self, job: &str) -> Vec<(Phase, Ts, Ts)> {
        self.facts()
            .filter_map(|f| match f {
                Fact::JobPhase { job: j, phase, start, end, .. } if &*j.name == job => {
                    Some((*phase, start.at, end.at))
                }
                _ => None,
            })
            .collect()
    }

    fn collected(&self, job: &str) -> Vec<(Ts, Ts, CollectOutcome, Option<Ttl>)> {
        self.facts()
            .filter_map(|f| match f {
                Fact::JobCollected { job: j, finished, collected, outcome, ttl, .. } if &*j.name == job => {
                    Some((finished.at, collected.at, *outcome, *ttl))
                }
                _ => None,
            })
            .collect()
    }

    fn margins(&self, job: &str) -> Vec<(f64, TtlApplied, bool)> {
        self.facts()
            .filter_map(|f| match f {
                Fact::TtlMargin { job: j, margin_seconds, ttl, exceeded, .. } if &*j.name == job => {
                    Some((*margin_seconds, ttl.applied, *exceeded))
                }
                _ => None,
            })
            .collect()
    }

    fn gone(&self, job: &str) -> Vec<&Fact> {
        self.facts().filter(|f| matches!(f, Fact::JobGone { job: j, .. } if &*j.name == job)).collect()
    }

    fn roots(&self) -> Vec<&Fact> {
        self.facts().filter(|f| matches!(f, Fact::RunFinished { .. })).collect()
    }

    fn count(&self, pred: impl Fn(&Fact) -> bool) -> usize {
        self.facts().filter(|f| pred(f)).count()
    }
}

impl From<AgentRun> for Object {
    fn from(o: AgentRun) -> Self {
        Object::AgentRun(o)
    }
}
impl From<Job> for Object {
    fn from(o: Job) -> Self {
        Object::Job(o)
    }
}
impl From<Pod> for Object {
    fn from(o: Pod) -> Self {
        Object::Pod(o)
    }
}

/// The whole life of a `job`-runtime run in the current style: created without TTL, collected 1.1 s after
/// it finished, TTL 600 patched on right after, deleted by the TTL controller 600 s after finishing.
fn job_runtime_success(h: &mut Harness) {
    let spec = RunSpec { job_ttl: Some(600), ..RunSpec::job("agents", "codex-run-demo", "run-1") };
    let mut run = upstream::agentrun(&spec, t(0.0));
    h.up(0.0, run.clone());
    let mut job = upstream::job(&run, "job-1", None, None, t(1.0));
    h.up(1.2, job.clone());
    upstream::submitted(&mut run, &job, t(1.412));
    h.up(1.42, run.clone());
    upstream::job_started(&mut job, t(1.0));
    h.up(1.5, job.clone());
    let mut pod = upstream::pod(&job, "7xq2m", "pod-1", "node-3", t(1.0));
    h.up(1.6, pod.clone());
    upstream::pod_running(&mut pod);
    h.up(9.0, pod.clone());
    upstream::pod_terminated(&mut pod, 0, t(461.0));
    h.up(461.2, pod.clone());
    upstream::job_finished(&mut job, false, t(463.0));
    h.up(463.1, job.clone());
    upstream::collected_job_runtime(&mut run, &job, t(464.131));
    h.up(464.14, run.clone());
    upstream::job_ttl_patched(&mut job, 600);
    h.up(464.2, job.clone());
    upstream::job_deleting(&mut job, t(1063.0));
    h.up(1063.1, job.clone());
    h.del(1064.0, pod);
    h.del(1064.5, job);
}

#[test]
fn job_runtime_success_with_ttl_patched_after_collection() {
    let mut h = Harness::new();
    job_runtime_success(&mut h);

    let name = "codex-run-demo-job";
    assert_eq!(
        h.phases(name),
        vec![
            (Phase::Submit, t(0.0), t(1.0)),
            (Phase::Pending, t(1.0), t(1.0)),
            (Phase::Run, t(1.0), t(463.0))
        ]
    );
    let collected = h.collected(name);
    assert_eq!(collected.len(), 1);
    let (finished, at, outcome, ttl) = collected[0];
    assert_eq!((finished, at, outcome), (t(463.0), t(464.131), CollectOutcome::Succeeded));
    assert_eq!(
        ttl,
        Some(Ttl { seconds: 600, applied: TtlApplied::AfterCollection }),
        "job.collect waits for the TTL patch"
    );
    let margins = h.margins(name);
    assert_eq!(margins.len(), 1);
    assert!((margins[0].0 - (600.0 - 1.131)).abs() < 1e-9, "{margins:?}");
    assert_eq!(margins[0].1, TtlApplied::AfterCollection);
    assert!(!margins[0].2);

    let gone = h.gone(name);
    assert_eq!(gone.len(), 1);
    match gone[0] {
        Fact::JobGone { deleted, before_collection, cause, exceeded, finished, .. } => {
            assert_eq!(deleted.at, t(1063.0));
            assert_eq!(deleted.source, TimeSource::Object);
            assert_eq!(finished.map(|f| f.at), Some(t(463.0)));
            assert!(!before_collection);
            assert_eq!(*cause, DeletionCause::Ttl);
            assert!(!exceeded);
        }
        _ => unreachable!(),
    }
    match h.roots()[..] {
        [Fact::RunFinished { start, end, outcome, reason, missing, .. }] => {
            assert_eq!((start.at, end.at), (t(0.0), t(464.131)));
            assert_eq!(*outcome, Some(RunOutcome::Succeeded));
            assert_eq!(*reason, None);
            assert!(missing.is_empty());
        }
        ref other => panic!("{other:?}"),
    }
    let pods: Vec<_> = h
        .facts()
        .filter_map(|f| match f {
            Fact::PodRan { pod, start, end, exit_code, .. } => {
                Some((pod.name.clone(), start.at, end.at, *exit_code))
            }
            _ => None,
        })
        .collect();
    assert_eq!(pods, vec![("codex-run-demo-job-7xq2m".into(), t(1.0), t(461.0), Some(0))]);
    assert_eq!(h.count(|f| matches!(f, Fact::RunComplete { .. })), 1);
    assert!(h.out.iter().all(|e| e.counted));
    // Forgotten once complete: nothing is held but the finished run's tombstone.
    let g = h.tracker.gauges(t(1065.0));
    assert_eq!((g.tracked_runs, g.tracked_jobs, g.tracked_pods), (1, 0, 0));
}

#[test]
fn same_facts_whatever_the_order_of_the_three_watches() {
    let mut a = Harness::new();
    job_runtime_success(&mut a);
    // The Job and Pod watches deliver everything first, the AgentRun watch last.
    let spec = RunSpec { job_ttl: Some(600), ..RunSpec::job("agents", "codex-run-demo", "run-1") };
    let mut b = Harness::new();
    let mut run = upstream::agentrun(&spec, t(0.0));
    let mut job = upstream::job(&run, "job-1", None, None, t(1.0));
    b.up(1.2, job.clone());
    upstream::job_started(&mut job, t(1.0));
    b.up(1.5, job.clone());
    let mut pod = upstream::pod(&job, "7xq2m", "pod-1", "node-3", t(1.0));
    upstream::pod_terminated(&mut pod, 0, t(461.0));
    b.up(461.2, pod.clone());
    upstream::job_finished(&mut job, false, t(463.0));
    b.up(463.1, job.clone());
    b.up(463.2, run.clone());
    upstream::submitted(&mut run, &job, t(1.412));
    b.up(463.3, run.clone());
    upstream::collected_job_runtime(&mut run, &job, t(464.131));
    b.up(464.14, run.clone());
    upstream::job_ttl_patched(&mut job, 600);
    b.up(464.2, job.clone());
    upstream::job_deleting(&mut job, t(1063.0));
    b.up(1063.1, job.clone());
    b.del(1064.0, pod);
    b.del(1064.5, job);

    let spans = |h: &Harness| {
        let mut v: Vec<String> =
            h.facts().filter(|f| !matches!(f, Fact::SeriesSeen { .. })).map(|f| format!("{f:?}")).collect();
        v.sort();
        v
    };
    assert_eq!(spans(&a), spans(&b));
}

#[test]
fn failed_job_is_collected_as_failed() {
    let mut h = Harness::new();
    let spec = RunSpec::job("agents", "r", "run-f");
    let mut run = upstream::agentrun(&spec, t(0.0));
    h.up(0.0, run.clone());
    let mut job = upstream::job(&run, "job-f", None, None, t(1.0));
    h.up(1.0, job.clone());
    upstream::submitted(&mut run, &job, t(1.4));
    h.up(1.4, run.clone());
    upstream::job_started(&mut job, t(1.0));
    upstream::job_finished(&mut job, true, t(318.0));
    h.up(318.1, job.clone());
    upstream::collected_job_runtime(&mut run, &job, t(319.6));
    h.up(319.6, run.clone());
    upstream::job_ttl_patched(&mut job, 600);
    h.up(319.7, job.clone());

    let run_phase = h
        .facts()
        .find_map(|f| match f {
            Fact::JobPhase { phase: Phase::Run, failure, .. } => Some(failure.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(run_phase, Some(Some("BackoffLimitExceeded".into())));
    assert_eq!(h.collected("r-job")[0].2, CollectOutcome::Failed);
    match h.roots()[..] {
        [Fact::RunFinished { outcome, reason, .. }] => {
            assert_eq!(*outcome, Some(RunOutcome::Failed));
            assert_eq!(reason.as_deref(), Some("RunnerFailed"));
        }
        ref other => panic!("{other:?}"),
    }
}

/// The incident this exporter exists for, job runtime: TTL set at creation (older controllers) shorter than the
/// collection delay, so the TTL controller deletes the Job first and the run ends `JobMissing`.
#[test]
fn ttl_at_creation_shorter_than_collection_deletes_before_collection() {
    let mut h = Harness::new();
    let spec = RunSpec::job("agents", "r", "run-m");
    let mut run = upstream::agentrun(&spec, t(0.0));
    h.up(0.0, run.clone());
    let mut job = upstream::job(&run, "job-m", None, Some(30), t(1.0));
    h.up(1.0, job.clone());
    upstream::submitted(&mut run, &job, t(1.4));
    h.up(1.4, run.clone());
    upstream::job_started(&mut job, t(1.0));
    upstream::job_finished(&mut job, false, t(100.0));
    h.up(100.1, job.clone());

    let g = h.tracker.gauges(t(110.0));
    let ns = &g.namespaces["agents"];
    assert_eq!(ns.awaiting_collection, 1);
    assert_eq!(ns.awaiting_collection_max_age, 10.0);
    assert_eq!(ns.ttl_margin_remaining, Some(20.0));

    upstream::job_deleting(&mut job, t(130.0));
    h.up(130.2, job.clone());
    assert!(h.gone("r-job").is_empty(), "the verdict waits for a late AgentRun event");
    h.del(131.0, job.clone());
    h.tick(136.0);
    match h.gone("r-job")[..] {
        [Fact::JobGone { before_collection, cause, exceeded, deleted, ttl, .. }] => {
            assert!(*before_collection);
            assert_eq!(*cause, DeletionCause::Ttl);
            assert!(*exceeded);
            assert_eq!(deleted.at, t(130.0));
            assert_eq!(*ttl, Some(Ttl { seconds: 30, applied: TtlApplied::AtCreation }));
        }
        ref other => panic!("{other:?}"),
    }
    // The controller notices 40 s after the finish.
    upstream::job_missing(&mut run, t(140.5));
    h.up(140.5, run.clone());
    let (_, at, outcome, _) = h.collected("r-job")[0];
    assert_eq!((at, outcome), (t(140.5), CollectOutcome::Missing));
    let margins = h.margins("r-job");
    assert_eq!(margins.len(), 1);
    assert!((margins[0].0 - (30.0 - 40.5)).abs() < 1e-9);
    assert_eq!(margins[0].1, TtlApplied::AtCreation);
    assert!(!margins[0].2, "already counted as exceeded at deletion");
    match h.roots()[..] {
        [Fact::RunFinished { outcome, reason, missing, end, .. }] => {
            assert_eq!(*outcome, Some(RunOutcome::Failed));
            assert_eq!(reason.as_deref(), Some("JobMissing"));
            assert_eq!(missing, &vec![MissingEvent { at: t(140.5), reason: "JobMissing".into() }]);
            assert_eq!(end.at, t(140.5));
        }
        ref other => panic!("{other:?}"),
    }
    assert_eq!(h.count(|f| matches!(f, Fact::RunComplete { .. })), 1);
}

/// A Job deletion seen before the AgentRun event of the write that had already collected it is not a
/// deletion before collection.
#[test]
fn late_agentrun_event_within_settle_time_still_counts_as_collected() {
    let mut h = Harness::new();
    let spec = RunSpec::job("agents", "r", "run-l");
    let mut run = upstream::agentrun(&spec, t(0.0));
    h.up(0.0, run.clone());
    let mut job = upstream::job(&run, "job-l", None, Some(5), t(1.0));
    h.up(1.0, job.clone());
    upstream::submitted(&mut run, &job, t(1.4));
    h.up(1.4, run.clone());
    upstream::job_started(&mut job, t(1.0));
    upstream::job_finished(&mut job, false, t(10.0));
    h.up(10.1, job.clone());
    upstream::job_deleting(&mut job, t(15.0));
    h.up(15.1, job.clone());
    upstream::collected_job_runtime(&mut run, &job, t(14.8));
    h.up(16.0, run.clone());
    h.tick(30.0);
    match h.gone("r-job")[..] {
        [Fact::JobGone { before_collection, .. }] => assert!(!*before_collection),
        ref other => panic!("{other:?}"),
    }
}

/// Workflow, two steps; step 2 fails on attempt 1 and is retried; TTL patched after each collection.
#[test]
fn workflow_with_a_retried_step() {
    let mut h = Harness::new();
    let spec = RunSpec::workflow("agents", "wf", "run-w", &["plan", "implement"]);
    let mut run = upstream::agentrun(&spec, t(0.0));
    h.up(0.0, run.clone());

    let s1 = StepRef { index: 1, name: "plan".into(), attempt: 1 };
    let mut j1 = upstream::job(&run, "j1", Some(&s1), None, t(1.0));
    h.up(1.0, j1.clone());
    upstream::step_running(&mut run, 1, "plan", 1, &j1, t(1.1));
    h.up(1.1, run.clone());
    upstream::job_started(&mut j1, t(1.0));
    upstream::job_finished(&mut j1, false, t(60.0));
    h.up(60.0, j1.clone());
    upstream::step_collected(&mut run, 1, "plan", &j1, false, t(62.0));
    h.up(62.0, run.clone());
    upstream::job_ttl_patched(&mut j1, 600);
    h.up(62.1, j1.clone());

    let s2a1 = StepRef { index: 2, name: "implement".into(), attempt: 1 };
    let mut j2 = upstream::job(&run, "j2", Some(&s2a1), None, t(63.0));
    h.up(63.0, j2.clone());
    upstream::step_running(&mut run, 2, "implement", 1, &j2, t(63.2));
    h.up(63.2, run.clone());
    upstream::job_started(&mut j2, t(63.0));
    upstream::job_finished(&mut j2, true, t(90.0));
    h.up(90.0, j2.clone());
    upstream::step_collected(&mut run, 2, "implement", &j2, true, t(91.0));
    h.up(91.0, run.clone());
    upstream::job_ttl_patched(&mut j2, 600);
    h.up(91.1, j2.clone());

    let s2a2 = StepRef { attempt: 2, ..s2a1 };
    let mut j3 = upstream::job(&run, "j3", Some(&s2a2), None, t(101.0));
    h.up(101.0, j3.clone());
    upstream::step_running(&mut run, 2, "implement", 2, &j3, t(101.3));
    h.up(101.3, run.clone());
    upstream::job_started(&mut j3, t(101.0));
    upstream::job_finished(&mut j3, false, t(200.0));
    h.up(200.0, j3.clone());
    upstream::step_collected(&mut run, 2, "implement", &j3, false, t(201.0));
    upstream::workflow_finished(&mut run, false, t(201.0));
    h.up(201.0, run.clone());
    upstream::job_ttl_patched(&mut j3, 600);
    h.up(201.1, j3.clone());

    // Attempt 2's submit phase starts at the Retrying write that consumed attempt 1 (it includes the backoff).
    assert_eq!(h.phases("wf-step-2-attempt-2")[0], (Phase::Submit, t(91.0), t(101.0)));
    // Step 2 attempt 1 starts when step 1 was collected.
    assert_eq!(h.phases("wf-step-2-attempt-1")[0], (Phase::Submit, t(62.0), t(63.0)));
    assert_eq!(h.collected("wf-step-2-attempt-1")[0].2, CollectOutcome::Failed);
    assert_eq!(h.collected("wf-step-2-attempt-2")[0].1, t(201.0));
    let steps: Vec<_> = h
        .facts()
        .filter_map(|f| match f {
            Fact::StepFinished { index, name, start, end, failed, .. } => {
                Some((*index, name.to_string(), start.at, end.at, *failed))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        steps,
        vec![(1, "plan".into(), t(0.0), t(62.0), false), (2, "implement".into(), t(62.0), t(201.0), false)]
    );
    match h.roots()[..] {
        [Fact::RunFinished { end, outcome, .. }] => {
            assert_eq!(end.at, t(201.0));
            assert_eq!(*outcome, Some(RunOutcome::Succeeded));
        }
        ref other => panic!("{other:?}"),
    }
    let keys: Vec<_> = h
        .facts()
        .filter_map(|f| match f {
            Fact::JobPhase { job, phase: Phase::Submit, .. } => job.step.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(
        keys,
        vec![
            StepKey { index: 1, iteration: None, attempt: 1 },
            StepKey { index: 2, iteration: None, attempt: 1 },
            StepKey { index: 2, iteration: None, attempt: 2 }
        ]
    );
}

/// Workflow incident: step 2's Job (TTL at creation) is deleted before collection; WorkflowJobMissing.
#[test]
fn workflow_job_missing() {
    let mut h = Harness::new();
    let spec = RunSpec::workflow("agents", "wf", "run-wm", &["plan", "implement"]);
    let mut run = upstream::agentrun(&spec, t(0.0));
    h.up(0.0, run.clone());
    let s2 = StepRef { index: 2, name: "implement".into(), attempt: 1 };
    let mut j = upstream::job(&run, "jm", Some(&s2), Some(60), t(10.0));
    h.up(10.0, j.clone());
    upstream::step_running(&mut run, 2, "implement", 1, &j, t(10.3));
    h.up(10.3, run.clone());
    upstream::job_started(&mut j, t(10.0));
    upstream::job_finished(&mut j, false, t(100.0));
    h.up(100.0, j.clone());
    upstream::job_deleting(&mut j, t(160.0));
    h.up(160.1, j.clone());
    h.del(160.5, j.clone());
    upstream::step_job_missing(&mut run, 2, "implement", false, t(161.0));
    h.up(161.0, run.clone());
    h.tick(170.0);

    match h.gone("wf-step-2-attempt-1")[..] {
        [Fact::JobGone { before_collection, cause, exceeded, .. }] => {
            // Deleted by its TTL before collection: counted as exceeded here, whichever fact came first; the
            // negative margin of the WorkflowJobMissing write is recorded but not counted twice.
            assert_eq!((*before_collection, *cause, *exceeded), (true, DeletionCause::Ttl, true));
        }
        ref other => panic!("{other:?}"),
    }
    assert_eq!(h.collected("wf-step-2-attempt-1")[0].2, CollectOutcome::Missing);
    let (margin, _, exceeded) = h.margins("wf-step-2-attempt-1")[0];
    assert!((margin - (60.0 - 61.0)).abs() < 1e-9);
    assert!(!exceeded);
    let step_missing = h.facts().find_map(|f| match f {
        Fact::StepFinished { index: 2, failed, missing, .. } => Some((*failed, missing.clone())),
        _ => None,
    });
    assert_eq!(
        step_missing,
        Some((true, vec![MissingEvent { at: t(161.0), reason: "WorkflowJobMissing".into() }]))
    );
    match h.roots()[..] {
        [Fact::RunFinished { reason, missing, .. }] => {
            assert_eq!(reason.as_deref(), Some("WorkflowJobMissing"));
            assert_eq!(missing.len(), 1);
        }
        ref other => panic!("{other:?}"),
    }
}

/// A Job deleted by hand while running: deleted before collection, its `job.run` ends at the deletion.
#[test]
fn unfinished_job_deleted_counts_as_deleted_before_collection() {
    let mut h = Harness::new();
    let spec = RunSpec::job("agents", "r", "run-u");
    let mut run = upstream::agentrun(&spec, t(0.0));
    h.up(0.0, run.clone());
    let mut job = upstream::job(&run, "job-u", None, None, t(1.0));
    upstream::job_started(&mut job, t(2.0));
    h.up(2.0, job.clone());
    upstream::submitted(&mut run, &job, t(1.4));
    h.up(2.1, run.clone());
    h.del(50.0, job);
    assert!(h.gone("r-job").is_empty(), "waits for a deletion of the run that would explain it");
    h.tick(60.0);
    match h.gone("r-job")[..] {
        [Fact::JobGone { before_collection, cause, exceeded, finished, started, deleted, .. }] => {
            assert!(*before_collection);
            assert!(*cause == DeletionCause::Other && !*exceeded);
            assert!(finished.is_none());
            assert_eq!(started.map(|s| s.at), Some(t(2.0)));
            assert_eq!((deleted.at, deleted.source), (t(50.0), TimeSource::Observed));
        }
        ref other => panic!("{other:?}"),
    }
}

/// The Job vanished while the watch was down: the relist that follows detects it, time unknown.
#[test]
fn relist_gap_detects_a_vanished_job() {
    let mut h = Harness::new();
    let spec = RunSpec::job("agents", "r", "run-g");
    let mut run = upstream::agentrun(&spec, t(0.0));
    h.up(0.0, run.clone());
    let mut job = upstream::job(&run, "job-g", None, Some(30), t(1.0));
    upstream::job_started(&mut job, t(1.0));
    h.up(1.0, job.clone());
    upstream::submitted(&mut run, &job, t(1.4));
    h.up(1.4, run.clone());
    upstream::job_finished(&mut job, false, t(20.0));
    h.up(20.0, job.clone());
    // 410 Gone; the relist no longer contains the Job.
    h.change(200.0, Change::RelistBegin { kind: Kind::Job, namespace: Some("agents".into()) });
    h.change(200.1, Change::RelistEnd { kind: Kind::Job, namespace: Some("agents".into()) });
    h.tick(210.0);
    match h.gone("r-job")[..] {
        [Fact::JobGone { before_collection, deleted, cause, .. }] => {
            assert!(*before_collection);
            assert_eq!(*cause, DeletionCause::Ttl, "deleted some time after finish + TTL");
            assert_eq!((deleted.at, deleted.source), (t(200.1), TimeSource::UnknownGap));
        }
        ref other => panic!("{other:?}"),
    }
    // A relist that still contains the object changes nothing.
    let mut other = Harness::new();
    other.up(0.0, run.clone());
    other.up(1.0, job.clone());
    other.change(5.0, Change::RelistBegin { kind: Kind::Job, namespace: None });
    other.up(5.1, job.clone());
    other.change(5.2, Change::RelistEnd { kind: Kind::Job, namespace: None });
    other.tick(100.0);
    assert!(other.gone("r-job").is_empty());
}

/// After a restart, what already happened is exported again (same ids downstream) but not counted.
#[test]
fn restart_exports_history_as_spans_but_does_not_count_it() {
    let mut h =
        Harness::with(TrackerConfig { count_since: t(300.0), settle_ms: 5_000, ..TrackerConfig::default() });
    let spec = RunSpec::job("agents", "r", "run-r");
    let mut run = upstream::agentrun(&spec, t(0.0));
    let mut job = upstream::job(&run, "job-r", None, None, t(1.0));
    upstream::submitted(&mut run, &job, t(1.4));
    upstream::job_started(&mut job, t(1.0));
    // The first list after the restart at t=300.
    h.change(300.0, Change::RelistBegin { kind: Kind::AgentRun, namespace: None });
    h.up(300.0, run.clone());
    h.change(300.0, Change::RelistEnd { kind: Kind::AgentRun, namespace: None });
    h.up(300.1, job.clone());
    upstream::job_finished(&mut job, false, t(400.0));
    h.up(400.0, job.clone());
    let submit =
        h.out.iter().find(|e| matches!(e.fact, Fact::JobPhase { phase: Phase::Submit, .. })).unwrap();
    assert!(submit.exported && !submit.counted);
    let run_phase =
        h.out.iter().find(|e| matches!(e.fact, Fact::JobPhase { phase: Phase::Run, .. })).unwrap();
    assert!(run_phase.exported && run_phase.counted);
}

#[test]
fn backfill_window_exports_nothing_for_long_finished_runs() {
    let cfg = TrackerConfig {
        count_since: t(100_000.0),
        backfill_window_ms: Some(3_600_000),
        ..TrackerConfig::default()
    };
    let mut h = Harness::with(cfg);
    let spec = RunSpec::job("agents", "old", "run-old");
    let mut run = upstream::agentrun(&spec, t(0.0));
    let mut job = upstream::job(&run, "job-old", None, None, t(1.0));
    upstream::submitted(&mut run, &job, t(1.4));
    upstream::job_started(&mut job, t(1.0));
    upstream::job_finished(&mut job, false, t(50.0));
    upstream::collected_job_runtime(&mut run, &job, t(51.0));
    h.up(100_000.0, run);
    h.up(100_000.0, job);
    assert!(h.out.iter().all(|e| !e.exported));
    assert!(
        h.out
            .iter()
            .filter(|e| !matches!(e.fact, Fact::SeriesSeen { .. } | Fact::RunComplete { .. }))
            .all(|e| !e.counted)
    );
}

#[test]
fn collected_job_without_ttl_shows_after_the_grace_period() {
    let cfg = TrackerConfig { ttl_grace_ms: 60_000, settle_ms: 5_000, ..TrackerConfig::default() };
    let mut h = Harness::with(cfg);
    let spec = RunSpec::job("agents", "r", "run-n");
    let mut run = upstream::agentrun(&spec, t(0.0));
    h.up(0.0, run.clone());
    let mut job = upstream::job(&run, "job-n", None, None, t(1.0));
    upstream::job_started(&mut job, t(1.0));
    upstream::job_finished(&mut job, false, t(10.0));
    h.up(10.0, job.clone());
    upstream::submitted(&mut run, &job, t(1.4));
    upstream::collected_job_runtime(&mut run, &job, t(11.0));
    h.up(11.0, run);
    assert_eq!(h.tracker.gauges(t(60.0)).namespaces["agents"].jobs_without_ttl, 0);
    assert_eq!(h.tracker.gauges(t(72.0)).namespaces["agents"].jobs_without_ttl, 1);
    h.tick(20.0);
    assert_eq!(h.collected("r-job")[0].3, None, "job.collect was emitted after the settle wait, without TTL");
}

#[test]
fn gauges_use_the_ttl_the_controller_will_patch() {
    let cfg = TrackerConfig { default_job_ttl: 86_400, ..TrackerConfig::default() };
    let mut h = Harness::with(cfg);
    let spec = RunSpec { retention: Some(604_800), ..RunSpec::job("agents", "a", "run-a") };
    let run = upstream::agentrun(&spec, t(0.0));
    h.up(0.0, run.clone());
    let mut job = upstream::job(&run, "job-a", None, None, t(1.0));
    upstream::job_started(&mut job, t(1.0));
    upstream::job_finished(&mut job, false, t(100.0));
    h.up(100.0, job);
    let spec_b = RunSpec { job_ttl: Some(10), ..RunSpec::job("agents", "b", "run-b") };
    h.up(0.0, upstream::agentrun(&spec_b, t(0.0)));
    let g = h.tracker.gauges(t(200.0));
    let ns = &g.namespaces["agents"];
    // Run b's override of 10 s is raised to the controller's floor of 30 s.
    assert_eq!(ns.job_ttl, Some((86_400, 86_400)));
    assert_eq!(ns.ttl_margin_remaining, Some(86_400.0 - 100.0));
    assert_eq!(ns.retention, Some((604_800, 2_592_000)));
}

#[test]
fn foreign_and_unlabelled_objects_are_ignored() {
    let mut h = Harness::new();
    let mut job = Job::default();
    job.metadata.name = Some("tool-job".into());
    job.metadata.namespace = Some("agents".into());
    job.metadata.uid = Some("x".into());
    h.up(0.0, job);
    let spec = RunSpec { runtime: Runtime::Job, ..RunSpec::job("agents", "t", "run-t") };
    let mut temporal = upstream::agentrun(&spec, t(0.0));
    temporal.spec.runtime.as_mut().unwrap().type_ = "temporal".into();
    h.up(0.0, temporal);
    assert!(h.out.is_empty());
    assert_eq!(h.tracker.gauges(t(1.0)).tracked_jobs, 0);
}

#[test]
fn clamping_keeps_children_inside_parents() {
    // Job timestamps (whole seconds) before the AgentRun's millisecond status times.
    let mut h = Harness::new();
    let spec = RunSpec::job("agents", "c", "run-c");
    let mut run = upstream::agentrun(&spec, t(5.0));
    h.up(5.0, run.clone());
    // A clock-skewed Job created "before" the run.
    let mut job = upstream::job(&run, "job-c", None, None, t(4.0));
    upstream::job_started(&mut job, t(3.0));
    h.up(5.5, job.clone());
    upstream::submitted(&mut run, &job, t(5.2));
    h.up(5.6, run.clone());
    let p = h.phases("c-job");
    assert_eq!(p[0], (Phase::Submit, t(5.0), t(5.0)));
    assert_eq!(p[1], (Phase::Pending, t(5.0), t(5.0)));
    let clamped = h.facts().any(|f| matches!(f, Fact::JobPhase { end, .. } if end.clamped));
    assert!(clamped);
}

#[test]
fn step_keys_parse_from_names_and_labels() {
    let mut h = Harness::new();
    let spec = RunSpec::workflow("agents", "loop-run", "run-lp", &["iterate"]);
    let run = upstream::agentrun(&spec, t(0.0));
    h.up(0.0, run.clone());
    let mut job = upstream::job(
        &run,
        "jl",
        Some(&StepRef { index: 1, name: "iterate".into(), attempt: 1 }),
        None,
        t(1.0),
    );
    job.metadata.name = Some("loop-run-step-1-iter-3-attempt-2".into());
    job.metadata.labels.as_mut().unwrap().insert(LABEL_STEP_ITERATION.into(), "3".into());
    h.up(1.0, job);
    // Not the run's first Job: its submit waits for the status write that names it, then gives up.
    h.tick(20.0);
    let key = h.facts().find_map(|f| match f {
        Fact::JobPhase { job, .. } => job.step.clone(),
        _ => None,
    });
    assert_eq!(key, Some(StepKey { index: 1, iteration: Some(3), attempt: 2 }));
}

/// After a restart the lists arrive in any order: a run found terminal before the Job list must wait for it,
/// or its Job's spans would never be sent.
#[test]
fn terminal_run_listed_before_its_jobs_waits_for_the_job_list() {
    let mut h =
        Harness::with(TrackerConfig { count_since: t(100.0), settle_ms: 5_000, ..TrackerConfig::default() });
    let spec = RunSpec { job_ttl: Some(600), ..RunSpec::job("agents", "r", "run-o") };
    let mut run = upstream::agentrun(&spec, t(0.0));
    let mut job = upstream::job(&run, "job-o", None, None, t(1.0));
    upstream::submitted(&mut run, &job, t(1.4));
    upstream::job_started(&mut job, t(1.0));
    upstream::job_finished(&mut job, false, t(50.0));
    upstream::collected_job_runtime(&mut run, &job, t(51.0));
    upstream::job_ttl_patched(&mut job, 600);
    for kind in [Kind::Job, Kind::Pod] {
        h.change(100.0, Change::RelistBegin { kind, namespace: Some("agents".into()) });
    }
    h.change(100.0, Change::RelistBegin { kind: Kind::AgentRun, namespace: Some("agents".into()) });
    h.up(100.1, run);
    h.change(100.2, Change::RelistEnd { kind: Kind::AgentRun, namespace: Some("agents".into()) });
    assert_eq!(
        h.count(|f| matches!(f, Fact::RunComplete { .. })),
        0,
        "not complete before its Jobs are listed"
    );
    h.up(100.3, job.clone());
    h.change(100.4, Change::RelistEnd { kind: Kind::Job, namespace: Some("agents".into()) });
    h.change(100.5, Change::RelistEnd { kind: Kind::Pod, namespace: Some("agents".into()) });
    assert_eq!(h.phases("r-job").len(), 3, "the Job's phases are exported");
    upstream::job_deleting(&mut job, t(650.0));
    h.up(650.1, job.clone());
    h.del(651.0, job);
    h.tick(660.0);
    assert_eq!(h.gone("r-job").len(), 1);
    assert_eq!(h.count(|f| matches!(f, Fact::RunComplete { .. })), 1);
}

/// A terminal run whose Jobs are long gone completes once the Job and Pod lists show nothing of them.
#[test]
fn terminal_run_without_jobs_completes_after_the_lists() {
    let mut h = Harness::new();
    let spec = RunSpec::job("agents", "r", "run-p");
    let mut run = upstream::agentrun(&spec, t(0.0));
    let job = upstream::job(&run, "job-p", None, None, t(1.0));
    upstream::submitted(&mut run, &job, t(1.4));
    upstream::collected_job_runtime(&mut run, &job, t(51.0));
    for kind in [Kind::Job, Kind::Pod] {
        h.change(100.0, Change::RelistBegin { kind, namespace: None });
    }
    h.up(100.1, run);
    assert_eq!(h.count(|f| matches!(f, Fact::RunComplete { .. })), 0);
    h.change(100.2, Change::RelistEnd { kind: Kind::Job, namespace: None });
    h.change(100.3, Change::RelistEnd { kind: Kind::Pod, namespace: None });
    assert_eq!(h.count(|f| matches!(f, Fact::RunComplete { .. })), 1);
}

/// A workflow step's Job: created, started, and (optionally) finished.
fn step_job(run: &AgentRun, uid: &str, index: u32, attempt: u32, created: f64) -> Job {
    let step = StepRef { index, name: format!("s{index}"), attempt };
    let mut job = upstream::job(run, uid, Some(&step), None, t(created));
    upstream::job_started(&mut job, t(created));
    job
}

/// `Job missing; retrying` stays on the step after the retry (the controller copies it forward): the next attempt that succeeds is
/// collected, not missing, and its TTL deletion is not a deletion before collection.
#[test]
fn sticky_job_missing_message_does_not_mark_the_next_attempt_missing() {
    let mut h = Harness::new();
    let spec = RunSpec {
        job_ttl: Some(0),
        retention: Some(0),
        ..RunSpec::workflow("agents", "w", "run-w", &["s1"])
    };
    let mut run = upstream::agentrun(&spec, t(0.0));
    h.up(0.0, run.clone());
    let j1 = step_job(&run, "j1", 1, 1, 1.0);
    h.up(1.0, j1.clone());
    upstream::step_running(&mut run, 1, "s1", 1, &j1, t(1.1));
    h.up(1.2, run.clone());
    h.del(5.0, j1);
    upstream::step_job_missing(&mut run, 1, "s1", true, t(6.0));
    h.up(6.0, run.clone());
    let mut j2 = step_job(&run, "j2", 1, 2, 7.0);
    h.up(7.0, j2.clone());
    upstream::step_running(&mut run, 1, "s1", 2, &j2, t(7.1));
    h.up(7.2, run.clone());
    upstream::job_finished(&mut j2, false, t(20.0));
    h.up(20.0, j2.clone());
    upstream::step_collected(&mut run, 1, "s1", &j2, false, t(21.0));
    upstream::workflow_finished(&mut run, false, t(21.0));
    h.up(21.0, run.clone());
    let message = run.status.as_ref().unwrap().workflow.as_ref().unwrap().steps[0].message.clone();
    assert_eq!(message.as_deref(), Some("Job missing; retrying"), "the shapes keep the message, as upstream");
    h.tick(40.0);
    assert!(h.collected("w-step-1-attempt-1").is_empty(), "it never finished: nothing to collect");
    assert!(matches!(
        h.gone("w-step-1-attempt-1")[..],
        [Fact::JobGone { before_collection: true, cause: DeletionCause::Other, .. }]
    ));
    assert_eq!(h.collected("w-step-1-attempt-2")[0].2, CollectOutcome::Succeeded);
    // runtime.config.ttlSecondsAfterFinished: 0 → no TTL; the Job goes when the run is deleted.
    run.metadata.deletion_timestamp = Some(upstream::time(t(100.0)));
    h.up(100.0, run.clone());
    h.del(100.5, j2);
    h.tick(120.0);
    match h.gone("w-step-1-attempt-2")[..] {
        [Fact::JobGone { before_collection, cause, .. }] => {
            assert!(!*before_collection);
            assert_eq!(*cause, DeletionCause::WithRun);
        }
        ref other => panic!("{other:?}"),
    }
}

/// Upstream creates the next step's Job, then writes the status that collects the previous step and starts
/// this one: the submit span starts at that write, which every later status keeps (the previous Job's finish goes
/// with that Job; the wait between the two is the previous job.collect); the step span holds it and the Job's
/// creation, a second-truncated time just before.
#[test]
fn next_step_job_created_before_the_collecting_write() {
    let mut h = Harness::new();
    let spec = RunSpec::workflow("agents", "w", "run-w", &["s1", "s2"]);
    let mut run = upstream::agentrun(&spec, t(0.0));
    h.up(0.0, run.clone());
    let mut j1 = step_job(&run, "j1", 1, 1, 1.0);
    h.up(1.0, j1.clone());
    upstream::step_running(&mut run, 1, "s1", 1, &j1, t(1.2));
    h.up(1.3, run.clone());
    upstream::job_finished(&mut j1, false, t(10.0));
    h.up(10.0, j1.clone());
    let mut j2 = step_job(&run, "j2", 2, 1, 11.0);
    h.up(11.1, j2.clone());
    assert!(h.phases("w-step-2-attempt-1").is_empty(), "waits for the write that names it");
    upstream::step_collected(&mut run, 1, "s1", &j1, false, t(11.5));
    upstream::step_running(&mut run, 2, "s2", 1, &j2, t(11.5));
    h.up(11.6, run.clone());
    upstream::job_ttl_patched(&mut j1, 600);
    h.up(11.7, j1);
    let submit = h.phases("w-step-2-attempt-1")[0];
    assert_eq!(submit, (Phase::Submit, t(11.5), t(11.5)));
    upstream::job_finished(&mut j2, false, t(30.0));
    h.up(30.0, j2.clone());
    upstream::step_collected(&mut run, 2, "s2", &j2, false, t(31.0));
    upstream::workflow_finished(&mut run, false, t(31.0));
    h.up(31.0, run);
    let step2 = h.facts().find_map(|f| match f {
        Fact::StepFinished { index: 2, start, .. } => Some(start.at),
        _ => None,
    });
    assert_eq!(step2, Some(t(11.0)));
    assert_eq!(h.collected("w-step-1-attempt-1")[0].1, t(11.5));
}

/// Names over 63 characters are hashed and Jobs carry no attempt label: the attempt comes from the status
/// that names the Job.
#[test]
fn hashed_job_names_take_their_attempt_from_the_status() {
    let mut h = Harness::new();
    let name = "orchestration-spawned-run-with-a-rather-long-name-0001";
    let spec = RunSpec::workflow("agents", name, "run-long", &["s1"]);
    let mut run = upstream::agentrun(&spec, t(0.0));
    h.up(0.0, run.clone());
    let j1 = step_job(&run, "j1", 1, 1, 1.0);
    assert!(upstream::is_hashed_name(j1.metadata.name.as_deref().unwrap()), "{:?}", j1.metadata.name);
    h.up(1.0, j1.clone());
    upstream::step_running(&mut run, 1, "s1", 1, &j1, t(1.1));
    h.up(1.2, run.clone());
    h.del(5.0, j1);
    upstream::step_job_missing(&mut run, 1, "s1", true, t(6.0));
    h.up(6.0, run.clone());
    let j2 = step_job(&run, "j2", 1, 2, 7.0);
    h.up(7.0, j2.clone());
    upstream::step_running(&mut run, 1, "s1", 2, &j2, t(7.1));
    h.up(7.2, run.clone());
    let attempts: Vec<(String, u32, Ts)> = h
        .facts()
        .filter_map(|f| match f {
            Fact::JobPhase { job, phase: Phase::Submit, start, .. } => {
                Some((job.uid.to_string(), job.step.as_ref()?.attempt, start.at))
            }
            _ => None,
        })
        .collect();
    assert_eq!(attempts, vec![("j1".into(), 1, t(0.0)), ("j2".into(), 2, t(6.0))]);
}

/// A step that times out goes Retrying while its Job still runs; upstream never reads or TTL-patches that Job.
#[test]
fn timed_out_step_abandons_its_job() {
    let mut h = Harness::new();
    let spec = RunSpec::workflow("agents", "w", "run-w", &["s1"]);
    let mut run = upstream::agentrun(&spec, t(0.0));
    h.up(0.0, run.clone());
    let mut j1 = step_job(&run, "j1", 1, 1, 1.0);
    h.up(1.0, j1.clone());
    upstream::step_running(&mut run, 1, "s1", 1, &j1, t(1.1));
    h.up(1.2, run.clone());
    upstream::step_timed_out(&mut run, 1, "s1", true, t(20.0));
    h.up(20.0, run.clone());
    upstream::job_finished(&mut j1, false, t(40.0));
    h.up(40.0, j1.clone());
    assert_eq!(h.collected("w-step-1-attempt-1"), vec![(t(20.0), t(20.0), CollectOutcome::Abandoned, None)]);
    assert!(h.margins("w-step-1-attempt-1").is_empty());
    let g = h.tracker.gauges(t(2000.0));
    assert_eq!(g.namespaces["agents"].awaiting_collection, 0);
    assert_eq!(g.namespaces["agents"].jobs_without_ttl, 0);
}

/// Deleting a running AgentRun deletes its Job (Background propagation): a cancel, not an incident, even
/// when the Job's DELETED event comes before the AgentRun's deletionTimestamp on the other watch.
#[test]
fn cancel_deletes_the_job_with_its_run() {
    for run_event_first in [true, false] {
        let mut h = Harness::new();
        let spec = RunSpec::job("agents", "r", "run-c");
        let mut run = upstream::agentrun(&spec, t(0.0));
        h.up(0.0, run.clone());
        let job = step_job_runtime(&mut h, &mut run);
        run.metadata.deletion_timestamp = Some(upstream::time(t(30.0)));
        if run_event_first {
            h.up(30.1, run.clone());
            h.del(30.2, job);
        } else {
            h.del(30.2, job);
            h.up(32.0, run.clone());
        }
        h.del(30.3, run);
        h.tick(50.0);
        match h.gone("r-job")[..] {
            [Fact::JobGone { before_collection, cause, run_finished, .. }] => {
                assert!(*before_collection);
                assert_eq!((*cause, *run_finished), (DeletionCause::WithRun, false), "{run_event_first}");
            }
            ref other => panic!("{other:?}"),
        }
    }
}

fn step_job_runtime(h: &mut Harness, run: &mut AgentRun) -> Job {
    let mut job = upstream::job(run, "job-c", None, None, t(1.0));
    upstream::job_started(&mut job, t(1.0));
    h.up(1.0, job.clone());
    upstream::submitted(run, &job, t(1.2));
    h.up(1.3, run.clone());
    job
}

/// Retention deletes a finished run and its Job with it: counted as retention, not as an incident.
#[test]
fn retention_deletes_the_collected_job_with_its_run() {
    let mut h = Harness::new();
    let spec = RunSpec { retention: Some(60), ..RunSpec::job("agents", "r", "run-c") };
    let mut run = upstream::agentrun(&spec, t(0.0));
    h.up(0.0, run.clone());
    let mut job = step_job_runtime(&mut h, &mut run);
    upstream::job_finished(&mut job, false, t(10.0));
    h.up(10.0, job.clone());
    upstream::collected_job_runtime(&mut run, &job, t(11.0));
    h.up(11.0, run.clone());
    upstream::job_ttl_patched(&mut job, 600);
    h.up(11.1, job.clone());
    run.metadata.deletion_timestamp = Some(upstream::time(t(71.0)));
    h.up(71.0, run.clone());
    h.del(71.1, job);
    h.tick(100.0);
    match h.gone("r-job")[..] {
        [Fact::JobGone { before_collection, cause, run_finished, .. }] => {
            assert!(!*before_collection);
            assert_eq!((*cause, *run_finished), (DeletionCause::WithRun, true));
        }
        ref other => panic!("{other:?}"),
    }
}

/// The gauges are kept up to date as objects change; at every second of a demo they equal what walking every
/// tracked object gives.
#[test]
fn incremental_gauges_equal_a_full_walk_at_every_tick() {
    use crate::source::demo::{DemoConfig, Simulator};
    let mut sim = Simulator::new(DemoConfig {
        runs: Some(60),
        seed: 11,
        arrival_secs: 5.0,
        start: Ts(1_787_227_200_000),
    });
    let mut h =
        Harness::with(TrackerConfig { settle_ms: 5_000, ttl_grace_ms: 20_000, ..TrackerConfig::default() });
    let mut checked = 0;
    let mut next_tick = Ts(1_787_227_200_000);
    while let Some(at) = sim.next_at() {
        while next_tick < at {
            h.tracker.tick(next_tick);
            let live = h.tracker.gauges(next_tick);
            assert_eq!(live.namespaces, h.tracker.gauges_by_walking(next_tick), "at {next_tick}");
            checked +=
                live.namespaces.values().map(|g| g.awaiting_collection + g.jobs_without_ttl).sum::<u64>();
            next_tick = next_tick.add_millis(1000);
        }
        for obs in sim.step() {
            if let Some(input) = upstream::input(&obs, &h.upstream) {
                h.tracker.apply(input);
            }
        }
    }
    assert!(checked > 0, "the demo had Jobs awaiting collection or without TTL at some tick");
}

/// The AgentRun watch can be a whole run ahead of the Job watch: a run that ended `JobMissing` waits a settle
/// time for the Job its status named, so the Job's spans are not lost.
#[test]
fn a_run_waits_for_the_jobs_its_status_named() {
    let mut h = Harness::new();
    let spec = RunSpec::job("agents", "r", "run-ahead");
    let mut run = upstream::agentrun(&spec, t(0.0));
    h.up(0.0, run.clone());
    let mut job = upstream::job(&run, "job-ahead", None, None, t(1.0));
    upstream::job_started(&mut job, t(1.0));
    upstream::submitted(&mut run, &job, t(1.2));
    h.up(1.3, run.clone());
    upstream::job_missing(&mut run, t(20.0));
    h.up(20.0, run.clone());
    assert_eq!(h.count(|f| matches!(f, Fact::RunComplete { .. })), 0, "waits for the Job it named");
    h.up(21.0, job.clone());
    h.del(21.5, job);
    h.tick(40.0);
    assert!(h.phases("r-job").iter().any(|p| p.0 == Phase::Submit), "the Job's submit span is there");
    assert_eq!(h.gone("r-job").len(), 1);
    assert_eq!(h.count(|f| matches!(f, Fact::RunComplete { .. })), 1);
}

/// After a restart the Job list can come before the AgentRun list: a TTL found on a finished, collected Job is
/// the one patched on after collection, whichever list came first (the spans must match the first process's).
#[test]
fn ttl_style_does_not_depend_on_which_list_came_first() {
    for job_first in [true, false] {
        let mut h = Harness::new();
        let spec = RunSpec::job("agents", "r", "run-l");
        let mut run = upstream::agentrun(&spec, t(0.0));
        let mut job = upstream::job(&run, "job-l", None, None, t(1.0));
        upstream::job_started(&mut job, t(1.0));
        upstream::submitted(&mut run, &job, t(1.2));
        upstream::job_finished(&mut job, false, t(10.0));
        upstream::collected_job_runtime(&mut run, &job, t(11.0));
        upstream::job_ttl_patched(&mut job, 600);
        if job_first {
            h.up(100.0, job.clone());
            h.up(100.1, run.clone());
        } else {
            h.up(100.0, run.clone());
            h.up(100.1, job.clone());
        }
        h.tick(200.0);
        let ttl = h.collected("r-job")[0].3.expect("a TTL");
        assert_eq!(ttl.applied, TtlApplied::AfterCollection, "job list first: {job_first}");
    }
}

/// A two-step workflow, finished at 41 s, and its two Jobs as they were when it finished.
fn finished_two_step_workflow(uid: &str) -> (AgentRun, Job, Job) {
    let spec = RunSpec::workflow("agents", "wf", uid, &["plan", "implement"]);
    let mut run = upstream::agentrun(&spec, t(0.0));
    upstream::workflow_pending(&mut run, &["plan", "implement"]);
    let mut j1 = step_job(&run, "j1", 1, 1, 1.0);
    upstream::step_running(&mut run, 1, "plan", 1, &j1, t(1.1));
    upstream::job_finished(&mut j1, false, t(20.0));
    let mut j2 = step_job(&run, "j2", 2, 1, 20.5);
    upstream::step_collected(&mut run, 1, "plan", &j1, false, t(21.0));
    upstream::step_running(&mut run, 2, "implement", 1, &j2, t(21.0));
    upstream::job_finished(&mut j2, false, t(40.0));
    upstream::step_collected(&mut run, 2, "implement", &j2, false, t(41.0));
    upstream::workflow_finished(&mut run, false, t(41.0));
    (run, j1, j2)
}

/// After a restart the three lists arrive in any order: the step and root spans of a finished run wait for the
/// Job list, so they carry the provider its Jobs are labelled with and the steps start at their Jobs' submits,
/// whichever list came first.
#[test]
fn step_and_root_spans_do_not_depend_on_which_list_came_first() {
    let mut seen = Vec::new();
    for job_first in [true, false] {
        let mut h = Harness::with(TrackerConfig { count_since: t(500.0), ..TrackerConfig::default() });
        let (run, j1, j2) = finished_two_step_workflow("run-q");
        for kind in [Kind::Job, Kind::Pod] {
            h.change(500.0, Change::RelistBegin { kind, namespace: None });
        }
        if job_first {
            h.up(500.1, j1.clone());
            h.up(500.2, j2.clone());
            h.up(500.3, run.clone());
        } else {
            h.up(500.1, run.clone());
            h.up(500.2, j1.clone());
            h.up(500.3, j2.clone());
        }
        h.change(500.4, Change::RelistEnd { kind: Kind::Job, namespace: None });
        h.change(500.5, Change::RelistEnd { kind: Kind::Pod, namespace: None });
        h.tick(600.0);
        let spans: Vec<(String, Option<std::sync::Arc<str>>, Ts, Ts)> = h
            .facts()
            .filter_map(|f| match f {
                Fact::StepFinished { run, name, start, end, .. } => {
                    Some((name.to_string(), run.provider.clone(), start.at, end.at))
                }
                Fact::RunFinished { run, start, end, .. } => {
                    Some(("agentrun".into(), run.provider.clone(), start.at, end.at))
                }
                _ => None,
            })
            .collect();
        assert_eq!(spans.len(), 3, "two steps and the root, job list first: {job_first}");
        assert!(
            spans.iter().all(|s| s.1.as_deref() == Some("codex")),
            "job list first: {job_first}: {spans:?}"
        );
        seen.push(spans);
    }
    assert_eq!(seen[0], seen[1], "the same spans whichever list came first");
}

/// A workflow run found already finished with its Jobs gone (an exporter started after them): its steps cannot
/// start where the process that saw the Jobs started them, so they are not sent again; the root is.
#[test]
fn steps_of_a_run_found_finished_without_its_jobs_are_not_sent_again() {
    let mut h = Harness::with(TrackerConfig { count_since: t(500.0), ..TrackerConfig::default() });
    let (run, _, _) = finished_two_step_workflow("run-r");
    for kind in [Kind::Job, Kind::Pod] {
        h.change(500.0, Change::RelistBegin { kind, namespace: None });
    }
    h.up(500.1, run);
    h.change(500.2, Change::RelistEnd { kind: Kind::Job, namespace: None });
    h.change(500.3, Change::RelistEnd { kind: Kind::Pod, namespace: None });
    h.tick(600.0);
    assert_eq!(h.count(|f| matches!(f, Fact::StepFinished { .. })), 0);
    assert_eq!(h.roots().len(), 1);
}

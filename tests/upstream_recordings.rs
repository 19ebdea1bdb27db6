//! The real agents controller, recorded: every `tests/fixtures/upstream/<scenario>.jsonl` (made by
//! `tests/upstream/record.sh` against the real controller on the test bed) is replayed through the upstream
//! boundary and the engine, and must produce the verdicts of its `<scenario>.expect.json`, which were written
//! from what the controller did (its log, the objects' history), not from what the exporter said.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use agentrun_lifecycle_exporter::{
    engine::{
        Emitted, Fact, Tracker, TrackerConfig, Ts,
        facts::{CollectOutcome, DeletionCause, RunOutcome},
    },
    source::replay,
    upstream::{self, UpstreamConfig},
};
use serde::Deserialize;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/upstream");
/// The scenarios the contract needs at the least (issue: job success, failure, JobMissing, workflow, retry
/// after a missing Job, timeout, cancel, retention, the incident…). Fewer recordings fail the test.
const MIN_SCENARIOS: usize = 12;

#[derive(Debug, Deserialize)]
struct Expect {
    scenario: String,
    #[serde(default)]
    upstream_commit: String,
    runs: Vec<ExpectRun>,
}

#[derive(Debug, Deserialize)]
struct ExpectRun {
    namespace: String,
    name: String,
    outcome: String,
    reason: Option<String>,
    #[serde(default)]
    steps: Vec<ExpectStep>,
    #[serde(default)]
    jobs: Vec<ExpectJob>,
}

#[derive(Debug, Deserialize)]
struct ExpectStep {
    index: u32,
    started_at: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ExpectJob {
    name: String,
    step: Option<u32>,
    iteration: Option<u32>,
    attempt: Option<u32>,
    collected: bool,
    collect_outcome: Option<String>,
    deleted: Option<String>,
    deleted_before_collection: bool,
    ttl: Option<i64>,
    margin_sign: Option<String>,
}

/// What the exporter concluded about one Job, from its facts.
#[derive(Debug, Default)]
struct JobVerdict {
    step: Option<(u32, Option<u32>, u32)>,
    collect_outcome: Option<CollectOutcome>,
    gone: Option<(DeletionCause, bool)>,
    ttl: Option<i64>,
    margin: Option<f64>,
}

#[derive(Debug, Default)]
struct RunVerdict {
    outcome: Option<Option<RunOutcome>>,
    reason: Option<String>,
    steps: BTreeMap<u32, Ts>,
    jobs: BTreeMap<String, JobVerdict>,
}

fn replay_file(path: &Path) -> BTreeMap<(String, String), RunVerdict> {
    let capture = replay::read_files(&[path]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(capture.skipped.is_empty(), "{}: lines skipped: {:?}", path.display(), capture.skipped);
    assert!(!capture.observations.is_empty(), "{}: no events", path.display());
    // The settings the recordings were made with (tests/upstream/record.sh).
    let cfg = UpstreamConfig { default_job_ttl: 30, ..UpstreamConfig::default() };
    let mut tracker = Tracker::new(TrackerConfig { default_job_ttl: 30, ..TrackerConfig::default() });
    let mut facts: Vec<Emitted> = Vec::new();
    for obs in &capture.observations {
        facts.extend(tracker.tick(obs.at));
        if let Some(input) = upstream::input(obs, &cfg) {
            facts.extend(tracker.apply(input));
        }
    }
    facts.extend(tracker.flush());
    let mut runs: BTreeMap<(String, String), RunVerdict> = BTreeMap::new();
    for e in &facts {
        let Some(run) = e.fact.run() else { continue };
        let v = runs.entry((run.namespace.to_string(), run.name.to_string())).or_default();
        let job_entry = |v: &mut RunVerdict, name: &str, step: Option<(u32, Option<u32>, u32)>| {
            let j = v.jobs.entry(name.to_owned()).or_default();
            if step.is_some() {
                j.step = step;
            }
        };
        let key = |job: &agentrun_lifecycle_exporter::engine::facts::JobInfo| {
            job.step.as_ref().map(|k| (k.index, k.iteration, k.attempt))
        };
        match &e.fact {
            Fact::JobPhase { job, .. } | Fact::PodRan { job, .. } => job_entry(v, &job.name, key(job)),
            Fact::JobCollected { job, outcome, ttl, .. } => {
                job_entry(v, &job.name, key(job));
                let j = v.jobs.get_mut(&*job.name).expect("just added");
                j.collect_outcome = Some(*outcome);
                j.ttl = ttl.map(|t| t.seconds).or(j.ttl);
            }
            Fact::TtlMargin { job, ttl, margin_seconds, .. } => {
                job_entry(v, &job.name, None);
                let j = v.jobs.get_mut(&*job.name).expect("just added");
                j.ttl = Some(ttl.seconds);
                j.margin = Some(*margin_seconds);
            }
            Fact::JobGone { job, ttl, before_collection, cause, .. } => {
                job_entry(v, &job.name, key(job));
                let j = v.jobs.get_mut(&*job.name).expect("just added");
                j.gone = Some((*cause, *before_collection));
                j.ttl = ttl.map(|t| t.seconds).or(j.ttl);
            }
            Fact::StepFinished { index, start, .. } => {
                v.steps.insert(*index, start.at);
            }
            Fact::RunFinished { outcome, reason, .. } => {
                v.outcome = Some(*outcome);
                v.reason = reason.as_deref().map(Into::into);
            }
            _ => {}
        }
    }
    runs
}

fn outcome_name(o: Option<Option<RunOutcome>>) -> &'static str {
    match o {
        None => "running",
        Some(None) => "deleted",
        Some(Some(o)) => o.as_str(),
    }
}

/// Every difference between the expected verdicts and the exporter's, one line each.
fn differences(expect: &Expect, got: &BTreeMap<(String, String), RunVerdict>) -> Vec<String> {
    let mut diffs = Vec::new();
    let diff = |diffs: &mut Vec<String>, what: String, want: String, have: String| {
        if want != have {
            diffs.push(format!("{}: {what}: expected {want}, exporter says {have}", expect.scenario));
        }
    };
    for run in &expect.runs {
        let Some(v) = got.get(&(run.namespace.clone(), run.name.clone())) else {
            diffs.push(format!(
                "{}: run {}/{}: the exporter reported nothing",
                expect.scenario, run.namespace, run.name
            ));
            continue;
        };
        let r = format!("run {}", run.name);
        diff(&mut diffs, format!("{r} outcome"), run.outcome.to_lowercase(), outcome_name(v.outcome).into());
        if v.outcome.is_some() {
            diff(&mut diffs, format!("{r} reason"), format!("{:?}", run.reason), format!("{:?}", v.reason));
        }
        for step in &run.steps {
            let (Some(want), Some(have)) =
                (step.started_at.as_deref().and_then(Ts::parse), v.steps.get(&step.index))
            else {
                continue;
            };
            // The step span holds its first submit, which begins when the controller reacted to the previous
            // Job (at most a few seconds before it wrote the step's startedAt), never at the run's creation.
            let lead = want.secs_since(*have);
            if !(0.0..=5.0).contains(&lead) {
                diffs.push(format!(
                    "{}: {r} step {} starts {lead:.3} s before its startedAt {want} (expected 0–5 s)",
                    expect.scenario, step.index
                ));
            }
        }
        for job in &run.jobs {
            let j = format!("{r} job {}", job.name);
            let Some(have) = v.jobs.get(&job.name) else {
                diffs.push(format!("{}: {j}: the exporter reported nothing", expect.scenario));
                continue;
            };
            if let Some(step) = job.step {
                let want = Some((step, job.iteration, job.attempt.unwrap_or(1)));
                diff(
                    &mut diffs,
                    format!("{j} step/iteration/attempt"),
                    format!("{want:?}"),
                    format!("{:?}", have.step),
                );
            }
            let outcome = have.collect_outcome.map(|o| o.as_str().to_owned());
            // A Job found missing before it ever finished has no collection span; the write that found it gone
            // shows as its deletion before collection.
            let missing_unfinished = job.collect_outcome.as_deref() == Some("missing")
                && outcome.is_none()
                && have.gone.is_some_and(|g| g.1);
            // Collected: a status write consumed the Job (read its result, or found it gone); not a timeout.
            let collected = missing_unfinished
                || matches!(
                    have.collect_outcome,
                    Some(CollectOutcome::Succeeded | CollectOutcome::Failed | CollectOutcome::Missing)
                );
            diff(&mut diffs, format!("{j} collected"), job.collected.to_string(), collected.to_string());
            if !missing_unfinished {
                diff(
                    &mut diffs,
                    format!("{j} collect outcome"),
                    format!("{:?}", job.collect_outcome),
                    format!("{outcome:?}"),
                );
            }
            let cause = have.gone.map(|g| g.0.as_str().to_owned());
            diff(&mut diffs, format!("{j} deleted by"), format!("{:?}", job.deleted), format!("{cause:?}"));
            let before = have.gone.is_some_and(|g| g.1);
            diff(
                &mut diffs,
                format!("{j} deleted before collection"),
                job.deleted_before_collection.to_string(),
                before.to_string(),
            );
            if job.ttl.is_some() || have.ttl.is_some() {
                diff(&mut diffs, format!("{j} ttl"), format!("{:?}", job.ttl), format!("{:?}", have.ttl));
            }
            let sign = have.margin.map(|m| if m < 0.0 { "negative" } else { "positive" }.to_owned());
            diff(
                &mut diffs,
                format!("{j} margin sign"),
                format!("{:?}", job.margin_sign),
                format!("{sign:?}"),
            );
        }
    }
    diffs
}

fn scenarios() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(FIXTURES)
        .unwrap_or_else(|e| panic!("{FIXTURES}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".expect.json"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_recording_of_the_real_controller_replays_with_its_expected_verdicts() {
    let expects = scenarios();
    assert!(
        expects.len() >= MIN_SCENARIOS,
        "only {} recordings in {FIXTURES}; the contract needs at least {MIN_SCENARIOS} (tests/upstream/record.sh)",
        expects.len()
    );
    let mut all = Vec::new();
    for path in &expects {
        let expect: Expect = serde_json::from_str(&std::fs::read_to_string(path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!expect.upstream_commit.is_empty(), "{}: no upstream commit", path.display());
        let capture = path.to_string_lossy().replace(".expect.json", ".jsonl");
        let got = replay_file(Path::new(&capture));
        all.extend(differences(&expect, &got));
    }
    assert!(all.is_empty(), "{} differences from the real controller:\n{}", all.len(), all.join("\n"));
}

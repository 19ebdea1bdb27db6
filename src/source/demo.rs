//! The demo's embedded cluster: a discrete-event simulation of the agents controller, the Job controller,
//! the kubelet and the TTL-after-finished controller, writing objects shaped as they write them
//! (see [`crate::upstream`]). It produces the same observations a watch would, with simulated times.
//!
//! The mix: `job` and `workflow` runs; successes and failures; retried steps; Jobs with the TTL patched on
//! after collection (the current controller); and Jobs created with a TTL shorter than their collection delay
//! (older controllers), which the TTL controller deletes first, so the run ends `JobMissing` or
//! `WorkflowJobMissing`.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
};

use crate::{
    engine::{Ts, facts::Runtime},
    source::{Change, Observation},
    upstream::{
        self, RunSpec, StepRef,
        objects::{AgentRun, Job, Object, Pod},
    },
};

/// A small deterministic PRNG (xorshift64*), so a seed reproduces a demo exactly.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * (hi - lo)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.range(0.0, 1.0) < p
    }

    pub fn uuid(&mut self) -> String {
        let a = self.next_u64();
        let b = self.next_u64();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0x0fff,
            (b >> 48) & 0x3fff | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }
}

/// How one run will go.
#[derive(Clone, Debug)]
struct Plan {
    /// Per step (one step for the job runtime): whether each attempt fails.
    steps: Vec<Vec<bool>>,
    /// Seconds each attempt's container runs.
    run_secs: f64,
    /// TTL set at creation (older controllers); `None`: patched on after collection.
    ttl_at_creation: Option<i64>,
    /// TTL the controller patches after collecting.
    ttl: i64,
    /// Job finished → the controller collects it.
    collect_delay: f64,
}

#[derive(Debug)]
struct SimRun {
    run: AgentRun,
    runtime: Runtime,
    plan: Plan,
    step: usize,
    attempt: usize,
    job: Option<Job>,
    pod: Option<Pod>,
    job_gone: bool,
    done: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    NewRun,
    CreateJob(usize),
    StartJob(usize),
    PodRunning(usize),
    ContainerDone(usize),
    JobFinished(usize),
    Collect(usize),
    PatchTtl(usize),
    /// The TTL controller deletes this Job (by uid: the run may have moved on to another one).
    TtlDelete(usize, String),
    PodGone(usize),
    JobGone(usize),
}

pub struct DemoConfig {
    /// Stop creating runs after this many (`None`: forever).
    pub runs: Option<u64>,
    pub seed: u64,
    /// Simulated seconds between two new runs.
    pub arrival_secs: f64,
    pub start: Ts,
}

pub struct Simulator {
    cfg: DemoConfig,
    rng: Rng,
    queue: BinaryHeap<Reverse<(Ts, u64, Action)>>,
    seq: u64,
    runs: HashMap<usize, SimRun>,
    created: u64,
    /// Ids for Jobs a workflow moved on from (they live until their TTL on a side track).
    retired: usize,
    revision: u64,
    now: Ts,
}

const NAMESPACES: [&str; 2] = ["agents", "synthesis"];
const STEPS: [&str; 2] = ["plan", "implement"];
const NODES: [&str; 3] = ["worker-1", "worker-2", "worker-3"];

impl Simulator {
    pub fn new(cfg: DemoConfig) -> Self {
        let mut sim = Simulator {
            rng: Rng::new(cfg.seed),
            queue: BinaryHeap::new(),
            seq: 0,
            runs: HashMap::new(),
            created: 0,
            retired: 1 << 40,
            revision: 1000,
            now: cfg.start,
            cfg,
        };
        let start = sim.now;
        sim.schedule(start, Action::NewRun);
        sim
    }

    /// How long, in simulated seconds, a demo of `runs` runs lasts at most (for back-dating its clock).
    pub fn expected_span_secs(runs: u64, arrival_secs: f64) -> f64 {
        runs as f64 * arrival_secs + 400.0
    }

    fn schedule(&mut self, at: Ts, action: Action) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, action)));
    }

    fn after(&mut self, secs: f64, action: Action) {
        let at = self.now.add_millis((secs * 1000.0) as i64);
        self.schedule(at, action);
    }

    /// When the next simulated change happens.
    pub fn next_at(&self) -> Option<Ts> {
        self.queue.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Runs created so far.
    pub fn created(&self) -> u64 {
        self.created
    }

    /// Carries out the next simulated action and returns what a watch would have seen.
    pub fn step(&mut self) -> Vec<Observation> {
        let Some(Reverse((at, _, action))) = self.queue.pop() else {
            return Vec::new();
        };
        self.now = self.now.max(at);
        let mut out = Vec::new();
        self.act(action, &mut out);
        out
    }

    fn plan(&mut self, runtime: Runtime) -> Plan {
        let r = self.rng.range(0.0, 1.0);
        let steps = match runtime {
            Runtime::Job => 1,
            Runtime::Workflow => STEPS.len(),
        };
        let mut plan = Plan {
            steps: vec![vec![false]; steps],
            run_secs: self.rng.range(20.0, 90.0),
            ttl_at_creation: None,
            ttl: [60, 90, 120][(self.rng.next_u64() % 3) as usize],
            collect_delay: self.rng.range(0.3, 3.0),
        };
        if r < 0.15 {
            // Older controller: TTL at creation, shorter than a slow collection.
            plan.ttl_at_creation = Some(30);
            plan.collect_delay = self.rng.range(40.0, 60.0);
        } else if r < 0.30 {
            // Older controller, collected in time.
            plan.ttl_at_creation = Some(plan.ttl);
        } else if r < 0.45 {
            // The last step fails for good.
            *plan.steps.last_mut().expect("at least one step") = vec![true];
        } else if r < 0.60 && steps > 1 {
            // The last step fails once and is retried.
            *plan.steps.last_mut().expect("at least one step") = vec![true, false];
        }
        plan
    }

    fn emit(&mut self, out: &mut Vec<Observation>, change: Change) {
        let at = self.now;
        self.emit_at(out, at, change);
    }

    /// Every write gets the next `resourceVersion`, as etcd's revision would give it.
    fn emit_at(&mut self, out: &mut Vec<Observation>, at: Ts, mut change: Change) {
        self.revision += 1;
        if let Change::Upsert(o) | Change::Delete(o) = &mut change {
            let meta = match o {
                Object::AgentRun(o) => &mut o.metadata,
                Object::Job(o) => &mut o.metadata,
                Object::Pod(o) => &mut o.metadata,
            };
            meta.resource_version = Some(self.revision.to_string());
        }
        out.push(Observation { at, change });
    }

    fn act(&mut self, action: Action, out: &mut Vec<Observation>) {
        match action {
            Action::NewRun => {
                if self.cfg.runs.is_some_and(|n| self.created >= n) {
                    return;
                }
                let id = self.created as usize;
                self.created += 1;
                let runtime = if self.rng.chance(0.5) { Runtime::Job } else { Runtime::Workflow };
                let ns = NAMESPACES[(self.rng.next_u64() % NAMESPACES.len() as u64) as usize];
                let name = format!("demo-{}-{id:04}", runtime.as_str());
                let uid = self.rng.uuid();
                let plan = self.plan(runtime);
                let mut spec = match runtime {
                    Runtime::Job => RunSpec::job(ns, &name, &uid),
                    Runtime::Workflow => RunSpec::workflow(ns, &name, &uid, &STEPS),
                };
                spec.job_ttl = Some(plan.ttl);
                spec.retention = Some(604_800);
                let run = upstream::agentrun(&spec, self.now);
                self.emit(out, Change::Upsert(Object::AgentRun(run.clone())));
                self.runs.insert(
                    id,
                    SimRun {
                        run,
                        runtime,
                        plan,
                        step: 0,
                        attempt: 0,
                        job: None,
                        pod: None,
                        job_gone: false,
                        done: false,
                    },
                );
                let delay = self.rng.range(0.5, 2.0);
                self.after(delay, Action::CreateJob(id));
                let next = self.cfg.arrival_secs * self.rng.range(0.5, 1.5);
                self.after(next, Action::NewRun);
            }
            Action::CreateJob(id) => {
                let uid = self.rng.uuid();
                let now = self.now;
                let Some(r) = self.runs.get_mut(&id) else { return };
                let step = (r.runtime == Runtime::Workflow).then(|| StepRef {
                    index: r.step as u32 + 1,
                    name: STEPS[r.step].into(),
                    attempt: r.attempt as u32 + 1,
                });
                let job = upstream::job(&r.run, &uid, step.as_ref(), r.plan.ttl_at_creation, now);
                // The status write that follows the create.
                let written = now.add_millis(300);
                match &step {
                    None => upstream::submitted(&mut r.run, &job, written),
                    Some(s) => {
                        if r.run.status.as_ref().is_none_or(|st| st.workflow.is_none()) {
                            upstream::workflow_pending(&mut r.run, &STEPS);
                        }
                        upstream::step_running(&mut r.run, s.index, &s.name, s.attempt, &job, written)
                    }
                }
                r.job = Some(job.clone());
                r.job_gone = false;
                let run = r.run.clone();
                self.emit(out, Change::Upsert(Object::Job(job)));
                self.emit_at(out, written, Change::Upsert(Object::AgentRun(run)));
                self.after(0.5, Action::StartJob(id));
            }
            Action::StartJob(id) => {
                let uid = self.rng.uuid();
                let suffix: String =
                    self.rng.uuid().chars().filter(|c| c.is_ascii_alphanumeric()).take(5).collect();
                let node = NODES[(self.rng.next_u64() % NODES.len() as u64) as usize];
                let now = self.now;
                let Some(r) = self.runs.get_mut(&id) else { return };
                let Some(job) = r.job.as_mut() else { return };
                upstream::job_started(job, now);
                let pod = upstream::pod(job, &suffix, &uid, node, now);
                r.pod = Some(pod.clone());
                let job = job.clone();
                self.emit(out, Change::Upsert(Object::Job(job)));
                self.emit(out, Change::Upsert(Object::Pod(pod)));
                let pull = self.rng.range(1.0, 4.0);
                self.after(pull, Action::PodRunning(id));
            }
            Action::PodRunning(id) => {
                let Some(r) = self.runs.get_mut(&id) else { return };
                let Some(pod) = r.pod.as_mut() else { return };
                upstream::pod_running(pod);
                let (pod, secs) = (pod.clone(), r.plan.run_secs);
                self.emit(out, Change::Upsert(Object::Pod(pod)));
                self.after(secs, Action::ContainerDone(id));
            }
            Action::ContainerDone(id) => {
                let now = self.now;
                let Some(r) = self.runs.get_mut(&id) else { return };
                let fails = r.plan.steps[r.step].get(r.attempt).copied().unwrap_or(false);
                let Some(pod) = r.pod.as_mut() else { return };
                upstream::pod_terminated(pod, if fails { 1 } else { 0 }, now);
                let pod = pod.clone();
                self.emit(out, Change::Upsert(Object::Pod(pod)));
                self.after(1.0, Action::JobFinished(id));
            }
            Action::JobFinished(id) => {
                let now = self.now;
                let Some(r) = self.runs.get_mut(&id) else { return };
                let fails = r.plan.steps[r.step].get(r.attempt).copied().unwrap_or(false);
                let Some(job) = r.job.as_mut() else { return };
                upstream::job_finished(job, fails, now);
                let (job, delay, ttl) = (job.clone(), r.plan.collect_delay, r.plan.ttl_at_creation);
                let uid = job.metadata.uid.clone().unwrap_or_default();
                self.emit(out, Change::Upsert(Object::Job(job)));
                if let Some(ttl) = ttl {
                    let lag = self.rng.range(0.2, 1.0);
                    self.after(ttl as f64 + lag, Action::TtlDelete(id, uid));
                }
                self.after(delay, Action::Collect(id));
            }
            Action::Collect(id) => self.collect(id, out),
            Action::PatchTtl(id) => {
                let Some(r) = self.runs.get_mut(&id) else { return };
                if r.job_gone {
                    return;
                }
                let ttl = r.plan.ttl;
                let Some(job) = r.job.as_mut() else { return };
                upstream::job_ttl_patched(job, ttl);
                let finished = finished_at(job).unwrap_or(self.now);
                let job = job.clone();
                let uid = job.metadata.uid.clone().unwrap_or_default();
                self.emit(out, Change::Upsert(Object::Job(job)));
                let due = finished.add_secs(ttl).max(self.now);
                let lag = self.rng.range(0.2, 1.0);
                let at = due.add_millis((lag * 1000.0) as i64);
                self.schedule(at, Action::TtlDelete(id, uid));
            }
            Action::TtlDelete(id, uid) => {
                let now = self.now;
                let Some(r) = self.runs.get_mut(&id) else { return };
                let Some(job) = r.job.as_mut() else { return };
                if job.metadata.deletion_timestamp.is_some()
                    || job.metadata.uid.as_deref() != Some(uid.as_str())
                {
                    return;
                }
                upstream::job_deleting(job, now);
                let job = job.clone();
                self.emit(out, Change::Upsert(Object::Job(job)));
                self.after(0.3, Action::PodGone(id));
            }
            Action::PodGone(id) => {
                let Some(r) = self.runs.get_mut(&id) else { return };
                if let Some(pod) = r.pod.take() {
                    self.emit(out, Change::Delete(Object::Pod(pod)));
                }
                self.after(0.3, Action::JobGone(id));
            }
            Action::JobGone(id) => {
                let Some(r) = self.runs.get_mut(&id) else { return };
                r.job_gone = true;
                let job = r.job.take();
                let done = r.done;
                if let Some(job) = job {
                    self.emit(out, Change::Delete(Object::Job(job)));
                }
                if done {
                    self.runs.remove(&id);
                }
            }
        }
    }

    /// The controller's reconcile after a Job finished: consume it (or find it missing), write the status,
    /// patch the TTL, and move the workflow on.
    fn collect(&mut self, id: usize, out: &mut Vec<Observation>) {
        let now = self.now;
        let Some(r) = self.runs.get_mut(&id) else { return };
        let Some(job) = r.job.clone() else {
            // Deleted before collection.
            match r.runtime {
                Runtime::Job => upstream::job_missing(&mut r.run, now),
                Runtime::Workflow => {
                    upstream::step_job_missing(&mut r.run, r.step as u32 + 1, STEPS[r.step], false, now)
                }
            }
            r.done = true;
            let run = r.run.clone();
            self.runs.remove(&id);
            self.emit(out, Change::Upsert(Object::AgentRun(run)));
            return;
        };
        let failed = r.plan.steps[r.step].get(r.attempt).copied().unwrap_or(false);
        let attempts = r.plan.steps[r.step].len();
        let mut next = None;
        let mut next_step_job = None;
        match r.runtime {
            Runtime::Job => {
                upstream::collected_job_runtime(&mut r.run, &job, now);
                r.done = true;
            }
            Runtime::Workflow => {
                let retry = failed && r.attempt + 1 < attempts;
                let moves_on = !failed && r.step + 1 < STEPS.len();
                if !moves_on {
                    upstream::step_collected(&mut r.run, r.step as u32 + 1, STEPS[r.step], &job, retry, now);
                }
                if retry {
                    r.attempt += 1;
                    next = Some(5.0);
                } else if failed || r.step + 1 == STEPS.len() {
                    upstream::workflow_finished(&mut r.run, failed, now);
                    r.done = true;
                } else {
                    // Upstream creates the next step's Job in the same reconcile, before the one status
                    // write that collects this step and starts the next (workflow-reconciler.ts).
                    r.step += 1;
                    r.attempt = 0;
                    next_step_job = Some(self.rng.uuid());
                }
            }
        }
        let patch = r.plan.ttl_at_creation.is_none();
        let mut written = now;
        if let Some(uid) = next_step_job {
            let Some(r) = self.runs.get_mut(&id) else { return };
            written = now.add_millis(300);
            let step = StepRef { index: r.step as u32 + 1, name: STEPS[r.step].into(), attempt: 1 };
            let next_job = upstream::job(&r.run, &uid, Some(&step), r.plan.ttl_at_creation, now);
            upstream::step_collected(&mut r.run, step.index - 1, STEPS[r.step - 1], &job, false, written);
            upstream::step_running(&mut r.run, step.index, &step.name, 1, &next_job, written);
            let old = r.job.replace(next_job.clone());
            let pod = r.pod.take();
            let (ttl, run) = (r.plan.ttl, r.run.clone());
            self.emit(out, Change::Upsert(Object::Job(next_job)));
            self.emit_at(out, written, Change::Upsert(Object::AgentRun(run)));
            // The TTL patch of the collected Job follows the status write.
            self.retire(old, pod, patch, ttl, 0.35);
            self.after(0.5, Action::StartJob(id));
            return;
        }
        let Some(r) = self.runs.get_mut(&id) else { return };
        let run = r.run.clone();
        self.emit_at(out, written, Change::Upsert(Object::AgentRun(run)));
        if patch {
            self.after(0.05, Action::PatchTtl(id));
        }
        if let Some(delay) = next {
            // The old Job lives on until its TTL; the retry's Job comes in a later reconcile.
            let old = self.runs.get_mut(&id).and_then(|r| r.job.take());
            let pod = self.runs.get_mut(&id).and_then(|r| r.pod.take());
            let ttl = self.runs.get(&id).map_or(90, |r| r.plan.ttl);
            self.retire(old, pod, patch, ttl, 0.05);
            self.after(delay, Action::CreateJob(id));
        }
    }

    /// A workflow moved on from `job`: its TTL deletion happens on a side track.
    fn retire(&mut self, job: Option<Job>, pod: Option<Pod>, patch: bool, ttl: i64, patch_after: f64) {
        let Some(job) = job else { return };
        self.retired += 1;
        let id = self.retired;
        let ttl = job.spec.ttl_seconds_after_finished.unwrap_or(ttl);
        let finished = finished_at(&job).unwrap_or(self.now);
        let job_uid = job.metadata.uid.clone().unwrap_or_default();
        let side = SimRun {
            run: AgentRun::default(),
            runtime: Runtime::Job,
            plan: Plan {
                steps: vec![vec![false]],
                run_secs: 0.0,
                ttl_at_creation: None,
                ttl,
                collect_delay: 0.0,
            },
            step: 0,
            attempt: 0,
            job: Some(job),
            pod,
            job_gone: false,
            done: true,
        };
        self.runs.insert(id, side);
        if patch {
            self.after(patch_after, Action::PatchTtl(id));
        } else {
            let due = finished.add_secs(ttl).max(self.now).add_millis(500);
            self.schedule(due, Action::TtlDelete(id, job_uid));
        }
    }
}

/// When the Job controller marked the Job finished: the TTL clock's reference.
fn finished_at(job: &Job) -> Option<Ts> {
    job.status
        .conditions
        .iter()
        .find(|c| c.type_ == "Complete" || c.type_ == "Failed")
        .and_then(|c| c.last_transition_time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Fact, Tracker, TrackerConfig};

    #[test]
    fn a_demo_of_forty_runs_covers_every_case_and_completes() {
        let mut sim = Simulator::new(DemoConfig {
            runs: Some(40),
            seed: 7,
            arrival_secs: 10.0,
            start: Ts(1_787_227_200_000),
        });
        let mut tracker = Tracker::new(TrackerConfig { settle_ms: 5_000, ..TrackerConfig::default() });
        let mut facts = Vec::new();
        while sim.next_at().is_some() {
            for obs in sim.step() {
                if let Some(input) = crate::upstream::input(&obs, &Default::default()) {
                    facts.extend(tracker.apply(input));
                }
            }
        }
        facts.extend(tracker.flush());
        let complete = facts.iter().filter(|e| matches!(e.fact, Fact::RunComplete { .. })).count();
        assert_eq!(complete, 40);
        let reasons: Vec<String> = facts
            .iter()
            .filter_map(|e| match &e.fact {
                Fact::RunFinished { reason, outcome, .. } => {
                    Some(format!("{:?}/{}", outcome, reason.as_deref().unwrap_or("-")))
                }
                _ => None,
            })
            .collect();
        for wanted in [
            "Some(Succeeded)/-",
            "Some(Failed)/JobMissing",
            "Some(Failed)/WorkflowJobMissing",
            "Some(Failed)/RunnerFailed",
        ] {
            assert!(reasons.iter().any(|r| r == wanted), "{wanted} missing from {reasons:?}");
        }
        assert!(facts.iter().any(|e| matches!(e.fact, Fact::JobGone { before_collection: true, .. })));
        assert!(facts.iter().any(|e| matches!(&e.fact, Fact::TtlMargin { ttl, .. } if ttl.applied == crate::engine::facts::TtlApplied::AfterCollection)));
        let g = tracker.gauges(tracker.now());
        assert_eq!((g.tracked_jobs, g.tracked_pods), (0, 0), "everything forgotten at the end");
    }
}

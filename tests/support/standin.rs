//! A stand-in for the agents controller, for the end-to-end tests (the real one, TypeScript on Bun, is recorded
//! by `tests/upstream/record.sh` for development; CI replays those recordings). It does what the controller
//! does to Jobs and nothing else:
//!
//! - creates the Job of a run (`<run>-job`) or of each workflow step attempt (`<run>-step-<i>-attempt-<n>`)
//!   with the upstream labels and owner reference, `backoffLimit: 0` and, in the older style, a TTL;
//! - writes the AgentRun status as upstream does (JSON merge patch on `/status`, `updatedAt`, `runtimeRef`,
//!   `workflow.steps[]`, conditions), using the same shapes as the demo simulator (`upstream.rs`);
//! - collects a finished Job after a configurable delay: reads it, writes the terminal (or step) status, then
//!   merge-patches `ttlSecondsAfterFinished` onto it (current style); if the Job is gone by then, writes
//!   `JobMissing` / `WorkflowJobMissing` exactly as upstream does;
//! - in the order upstream writes (recorded in `tests/fixtures/upstream`): a step that succeeded with steps
//!   left is written in the same status that starts the next step, after that step's Job was created, and
//!   its TTL patch follows that write; a retry's Job comes in a later reconcile.
//!
//! The kwok fake node runs each Pod for the time and with the exit code given by pod annotations.
//!
//! Two users: [`StandIn::run`], the in-process driver the scenarios call (it plays one run from start to end),
//! and the level-based stand-in controller process (`tests/standin/controller.rs`), which reads the plan from
//! the AgentRun's annotations ([`Plan::from_annotations`]). Both make every write through the functions here
//! ([`StandIn::create_job`], [`StandIn::write_status`], [`StandIn::patch_ttl`]) and change the status through
//! [`apply_start`] and [`apply_collect`], so their writes are the same.

use std::{collections::BTreeMap, time::Duration};

use agentrun_lifecycle_exporter::{
    engine::{Ts, facts::Runtime},
    upstream::objects,
    upstream::{self, RunSpec, StepRef},
};
use k8s_openapi::api::{batch::v1::Job, core::v1::Namespace};
use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams, PostParams},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::{Value, json};

pub fn agentrun_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("agents.proompteng.ai", "v1alpha1", "AgentRun"),
        "agentruns",
    )
}

/// Waits until the AgentRun CRD (tests/e2e/agentrun-crd.yaml, applied by tests/e2e/run.sh) is served.
pub async fn wait_crd(client: &Client) -> anyhow::Result<()> {
    let runs: Api<DynamicObject> = Api::all_with(client.clone(), &agentrun_resource());
    for _ in 0..100 {
        if runs.list(&Default::default()).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("the AgentRun CRD is not served; tests/e2e/run.sh applies it")
}

pub async fn create_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    namespaces.create(&PostParams::default(), &ns).await?;
    // The service-account controller creates `default`; Pods need it (ServiceAccount admission).
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), name);
    for _ in 0..100 {
        if sas.get_opt("default").await?.is_some() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("no default ServiceAccount in {name}")
}

/// One Job attempt: how long its Pod runs and how it exits.
#[derive(Clone, Copy, Debug)]
pub struct Attempt {
    pub run_seconds: f64,
    pub exit_code: i32,
}

#[derive(Clone, Copy, Debug)]
pub enum TtlStyle {
    /// The current controller: no TTL at creation, patched on right after collection.
    AfterCollection(i64),
    /// Older controllers and other producers: set at creation.
    AtCreation(i64),
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub name: String,
    pub runtime: Runtime,
    /// Per step, its attempts in order (one step for the job runtime).
    pub steps: Vec<Vec<Attempt>>,
    pub ttl: TtlStyle,
    /// Job finished → the stand-in collects it.
    pub collect_delay: Duration,
}

/// The AgentRun annotations the stand-in controller reads its plan from (the driver passes the plan in).
pub const ANNOTATION_STEPS: &str = "e2e.agentrun.dev/steps";
pub const ANNOTATION_TTL: &str = "e2e.agentrun.dev/ttl";
pub const ANNOTATION_COLLECT_DELAY: &str = "e2e.agentrun.dev/collect-delay-ms";

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("annotation {0} is missing")]
    Missing(&'static str),
    #[error("annotation {0} is malformed: {1:?}")]
    Malformed(&'static str, String),
    #[error("runtime {0:?} is neither job nor workflow")]
    Runtime(String),
}

impl Plan {
    /// The plan as annotations: `steps` is `<seconds>:<exit code>` per attempt, attempts separated by `,`,
    /// steps by `;` (`3:0` a job that succeeds after 3 s; `2:0;2:1,2:0` a workflow whose second step fails
    /// once); `ttl` is `after-collection=<s>` or `at-creation=<s>`; `collect-delay-ms` is milliseconds.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let steps = self
            .steps
            .iter()
            .map(|attempts| {
                attempts
                    .iter()
                    .map(|a| format!("{}:{}", a.run_seconds, a.exit_code))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect::<Vec<_>>()
            .join(";");
        let ttl = match self.ttl {
            TtlStyle::AfterCollection(t) => format!("after-collection={t}"),
            TtlStyle::AtCreation(t) => format!("at-creation={t}"),
        };
        BTreeMap::from([
            (ANNOTATION_STEPS.to_string(), steps),
            (ANNOTATION_TTL.to_string(), ttl),
            (ANNOTATION_COLLECT_DELAY.to_string(), self.collect_delay.as_millis().to_string()),
        ])
    }

    /// The plan of a run from its name, `spec.runtime.type` and annotations (the inverse of [`Plan::annotations`]).
    pub fn from_annotations(
        name: &str,
        runtime: &str,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Plan, PlanError> {
        let get = |k: &'static str| annotations.get(k).map(|v| v.trim()).ok_or(PlanError::Missing(k));
        let bad = |k: &'static str, v: &str| PlanError::Malformed(k, v.to_string());
        let runtime = match runtime {
            "job" => Runtime::Job,
            "workflow" => Runtime::Workflow,
            other => return Err(PlanError::Runtime(other.to_string())),
        };
        let raw = get(ANNOTATION_STEPS)?;
        let steps = raw
            .split(';')
            .map(|step| {
                step.split(',')
                    .map(|a| {
                        let (secs, code) = a.trim().split_once(':')?;
                        Some(Attempt { run_seconds: secs.parse().ok()?, exit_code: code.parse().ok()? })
                    })
                    .collect::<Option<Vec<_>>>()
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad(ANNOTATION_STEPS, raw))?;
        let steps_ok = match runtime {
            Runtime::Job => steps.len() == 1 && steps[0].len() == 1,
            Runtime::Workflow => (1..=STEP_NAMES.len()).contains(&steps.len()),
        };
        if !steps_ok {
            return Err(bad(ANNOTATION_STEPS, raw));
        }
        let raw = get(ANNOTATION_TTL)?;
        let ttl = match raw.split_once('=') {
            Some(("after-collection", t)) => t.parse().ok().map(TtlStyle::AfterCollection),
            Some(("at-creation", t)) => t.parse().ok().map(TtlStyle::AtCreation),
            _ => None,
        }
        .ok_or_else(|| bad(ANNOTATION_TTL, raw))?;
        let raw = get(ANNOTATION_COLLECT_DELAY)?;
        let collect_delay =
            Duration::from_millis(raw.parse().map_err(|_| bad(ANNOTATION_COLLECT_DELAY, raw))?);
        Ok(Plan { name: name.to_string(), runtime, steps, ttl, collect_delay })
    }

    pub fn step_names(&self) -> &'static [&'static str] {
        match self.runtime {
            Runtime::Workflow => &STEP_NAMES[..self.steps.len()],
            _ => &[],
        }
    }

    /// Step `i` (0-based), attempt `n` (0-based) of a workflow; `None` for the job runtime.
    pub fn step_ref(&self, i: usize, n: usize) -> Option<StepRef> {
        (self.runtime == Runtime::Workflow).then(|| StepRef {
            index: i as u32 + 1,
            name: STEP_NAMES[i].into(),
            attempt: n as u32 + 1,
        })
    }
}

/// What a collecting reconcile found and wrote into the model.
#[derive(Clone, Debug, PartialEq)]
pub enum Collected {
    /// The Job was gone: `JobMissing` / `WorkflowJobMissing` (the run is failed).
    Missing,
    /// A workflow step succeeded with steps left: written with the next step's start, after its Job exists.
    Carried,
    /// Written now, the TTL patch follows; `retry` when the step goes `Retrying`.
    Written { failed: bool, retry: bool },
}

/// The status of the write that follows a Job's creation: the step it follows collected (when one succeeded
/// with steps left), then the run (job) or step (workflow) Running with the Job.
pub fn apply_start(
    model: &mut objects::AgentRun,
    step: Option<&StepRef>,
    job: &objects::Job,
    carried: Option<&(StepRef, objects::Job)>,
    now: Ts,
) {
    if let Some((prev, finished)) = carried {
        upstream::step_collected(model, prev.index, &prev.name, finished, false, now);
    }
    match step {
        None => upstream::submitted(model, job, now),
        Some(s) => upstream::step_running(model, s.index, &s.name, s.attempt, job, now),
    }
}

/// The status of a finished Job's collection (`found`: the Job as read then, `None` if it was gone).
pub fn apply_collect(
    model: &mut objects::AgentRun,
    step: Option<&StepRef>,
    found: Option<&objects::Job>,
    attempts_left: bool,
    last_step: bool,
    now: Ts,
) -> Collected {
    let Some(finished) = found else {
        match step {
            None => upstream::job_missing(model, now),
            Some(s) => upstream::step_job_missing(model, s.index, &s.name, false, now),
        }
        return Collected::Missing;
    };
    let failed = is_failed(finished);
    let retry = failed && attempts_left;
    match step {
        None => upstream::collected_job_runtime(model, finished, now),
        Some(_) if !failed && !last_step => return Collected::Carried,
        Some(s) => {
            upstream::step_collected(model, s.index, &s.name, finished, retry, now);
            if !retry {
                upstream::workflow_finished(model, failed, now);
            }
        }
    }
    Collected::Written { failed, retry }
}

pub fn is_failed(job: &objects::Job) -> bool {
    job.status.conditions.iter().any(|c| c.type_ == "Failed" && c.is_true())
}

/// What the stand-in did, for the assertions.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub uid: String,
    pub jobs: Vec<String>,
    pub phase: String,
    pub reason: Option<String>,
}

pub struct StandIn {
    client: Client,
    ns: String,
}

pub const STEP_NAMES: [&str; 4] = ["plan", "implement", "review", "ship"];

impl StandIn {
    pub fn new(client: Client, ns: &str) -> Self {
        StandIn { client, ns: ns.to_string() }
    }

    pub fn runs(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.ns, &agentrun_resource())
    }

    pub fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Creates the AgentRun of a plan as a user would apply it; with `annotated`, the plan goes on it as
    /// annotations for the stand-in controller. Returns the run as the writes build on it.
    pub async fn create_run(&self, plan: &Plan, annotated: bool) -> anyhow::Result<objects::AgentRun> {
        let spec = RunSpec {
            job_ttl: match plan.ttl {
                TtlStyle::AfterCollection(t) | TtlStyle::AtCreation(t) => Some(t),
            },
            ..match plan.runtime {
                Runtime::Job => RunSpec::job(&self.ns, &plan.name, ""),
                Runtime::Workflow => RunSpec::workflow(&self.ns, &plan.name, "", plan.step_names()),
            }
        };
        let mut model = upstream::agentrun(&spec, Ts::now());
        let mut obj = serde_json::to_value(&model)?;
        obj["apiVersion"] = json!(objects::AGENTRUN_API_VERSION);
        obj["kind"] = json!("AgentRun");
        obj["metadata"] = json!({"name": plan.name, "namespace": self.ns});
        if annotated {
            obj["metadata"]["annotations"] = json!(plan.annotations());
        }
        if plan.runtime == Runtime::Workflow {
            obj["spec"]["workflow"] =
                json!({"steps": plan.step_names().iter().map(|s| json!({"name": s})).collect::<Vec<_>>()});
        }
        let created: DynamicObject =
            self.runs().create(&PostParams::default(), &serde_json::from_value(obj)?).await?;
        model.metadata.uid = created.metadata.uid.clone();
        model.metadata.creation_timestamp = created.metadata.creation_timestamp.clone();
        Ok(model)
    }

    /// Runs the whole plan as the controller would, and returns when the run is terminal and its last TTL
    /// patch is done.
    pub async fn run(&self, plan: &Plan) -> anyhow::Result<Outcome> {
        let mut model = self.create_run(plan, false).await?;
        let mut outcome =
            Outcome { uid: model.metadata.uid.clone().unwrap_or_default(), ..Outcome::default() };

        // A step that succeeded with steps left: collected in the reconcile that creates the next step's
        // Job, written in one status after that Job exists, TTL-patched after the write (as upstream does).
        let mut carried: Option<(StepRef, objects::Job)> = None;
        if plan.runtime == Runtime::Workflow {
            upstream::workflow_pending(&mut model, plan.step_names());
        }
        'steps: for (i, attempts) in plan.steps.iter().enumerate() {
            for (n, attempt) in attempts.iter().enumerate() {
                let step = plan.step_ref(i, n);
                let job = self.create_job(&model, step.as_ref(), *attempt, plan.ttl).await?;
                let job_name = job.metadata.name.clone().unwrap_or_default();
                outcome.jobs.push(job_name.clone());
                apply_start(&mut model, step.as_ref(), &projection(&job)?, carried.as_ref(), Ts::now());
                self.write_status(&model).await?;
                if let Some((_, finished)) = carried.take() {
                    self.patch_ttl(&finished, plan.ttl).await?;
                }
                self.wait_finished(&job_name).await?;
                tokio::time::sleep(plan.collect_delay).await;
                let found = self.read_job(&job_name).await?.map(|j| projection(&j)).transpose()?;
                let last_step = i + 1 == plan.steps.len();
                let attempts_left = n + 1 < attempts.len();
                match apply_collect(
                    &mut model,
                    step.as_ref(),
                    found.as_ref(),
                    attempts_left,
                    last_step,
                    Ts::now(),
                ) {
                    Collected::Missing => {
                        self.write_status(&model).await?;
                        break 'steps;
                    }
                    Collected::Carried => {
                        carried = step.zip(found);
                        break;
                    }
                    Collected::Written { failed, retry } => {
                        self.write_status(&model).await?;
                        if let Some(finished) = &found {
                            self.patch_ttl(finished, plan.ttl).await?;
                        }
                        if failed && !retry {
                            break 'steps;
                        }
                        if !failed {
                            break;
                        }
                    }
                }
            }
        }
        let status = model.status.clone().unwrap_or_default();
        outcome.phase = status.phase.unwrap_or_default();
        outcome.reason = status.reason;
        Ok(outcome)
    }

    /// A Job as it is now, through API server restarts (`None`: it is gone).
    pub async fn read_job(&self, name: &str) -> anyhow::Result<Option<Job>> {
        Self::retry("Job read", || async { Ok(self.jobs().get_opt(name).await?) }).await
    }

    /// Creates the Job of a run (or of a step attempt); one that exists already is returned as it is.
    pub async fn create_job(
        &self,
        run: &objects::AgentRun,
        step: Option<&StepRef>,
        attempt: Attempt,
        ttl: TtlStyle,
    ) -> anyhow::Result<Job> {
        let at_creation = match ttl {
            TtlStyle::AtCreation(t) => Some(t),
            TtlStyle::AfterCollection(_) => None,
        };
        let shaped = upstream::job(run, "", step, at_creation, Ts::now());
        let labels = shaped.metadata.labels.clone().unwrap_or_default();
        let mut body = json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": shaped.metadata.name, "namespace": self.ns, "labels": labels,
                         "ownerReferences": shaped.metadata.owner_references},
            "spec": {"backoffLimit": 0,
                     "template": {"metadata": {"labels": labels,
                                               "annotations": {"e2e.agentrun.dev/run-seconds": attempt.run_seconds.to_string(),
                                                               "e2e.agentrun.dev/exit-code": attempt.exit_code.to_string()}},
                                  "spec": {"restartPolicy": "Never",
                                           "containers": [{"name": "agent-runner", "image": "agent-runner:e2e",
                                                           "command": ["/usr/local/bin/agent-runner"],
                                                           "terminationMessagePath": "/workspace/.agent/status.json",
                                                           "terminationMessagePolicy": "File"}]}}}
        });
        if let Some(t) = at_creation {
            body["spec"]["ttlSecondsAfterFinished"] = json!(t);
        }
        let job: Job = serde_json::from_value(body)?;
        let name = job.metadata.name.clone().unwrap_or_default();
        Self::retry("Job create", || async {
            match self.jobs().create(&PostParams::default(), &job).await {
                Ok(j) => Ok(j),
                // A create that went through before a connection was cut.
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(self.jobs().get(&name).await?),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    /// Retries a call through API server restarts and cut connections, as a controller's client would.
    pub async fn retry<T, F, Fut>(what: &str, mut call: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<T>>,
    {
        let mut last = None;
        for _ in 0..120 {
            match call().await {
                Ok(v) => return Ok(v),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(last
            .unwrap_or_else(|| anyhow::anyhow!("no attempt"))
            .context(format!("{what}: gave up after 60 s")))
    }

    /// The current controller's TTL patch, after the status write that collected the Job.
    pub async fn patch_ttl(&self, job: &objects::Job, ttl: TtlStyle) -> anyhow::Result<()> {
        if let TtlStyle::AfterCollection(ttl) = ttl {
            let name = job.metadata.name.clone().unwrap_or_default();
            let patch = json!({"spec": {"ttlSecondsAfterFinished": ttl}});
            let params = PatchParams::default();
            Self::retry("TTL patch", || async {
                Ok(self.jobs().patch(&name, &params, &Patch::Merge(&patch)).await?)
            })
            .await?;
        }
        Ok(())
    }

    pub async fn write_status(&self, run: &objects::AgentRun) -> anyhow::Result<()> {
        let name = run.metadata.name.clone().unwrap_or_default();
        let patch = json!({"status": run.status});
        let params = PatchParams { field_manager: Some("agents-status".into()), ..PatchParams::default() };
        Self::retry("status write", || async {
            Ok(self.runs().patch_status(&name, &params, &Patch::Merge(&patch)).await?)
        })
        .await?;
        Ok(())
    }

    async fn wait_finished(&self, job: &str) -> anyhow::Result<()> {
        for _ in 0..600 {
            // Errors (an API server restarting) are waited out like an unfinished Job.
            if let Ok(found) = self.jobs().get_opt(job).await
                && let Some(j) = found
            {
                let done = j.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| {
                    cs.iter().any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
                });
                if done {
                    return Ok(());
                }
            } else if let Ok(None) = self.jobs().get_opt(job).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        anyhow::bail!("Job {job} did not finish in time")
    }
}

/// The engine's projection of a typed Job (the upstream-shape helpers read it).
pub fn projection(job: &Job) -> anyhow::Result<objects::Job> {
    let value: Value = serde_json::to_value(job)?;
    Ok(serde_json::from_value(value)?)
}

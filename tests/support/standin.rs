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

use std::time::Duration;

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

const STEP_NAMES: [&str; 4] = ["plan", "implement", "review", "ship"];

impl StandIn {
    pub fn new(client: Client, ns: &str) -> Self {
        StandIn { client, ns: ns.to_string() }
    }

    fn runs(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.ns, &agentrun_resource())
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Runs the whole plan as the controller would, and returns when the run is terminal and its last TTL
    /// patch is done.
    pub async fn run(&self, plan: &Plan) -> anyhow::Result<Outcome> {
        let spec = RunSpec {
            job_ttl: match plan.ttl {
                TtlStyle::AfterCollection(t) | TtlStyle::AtCreation(t) => Some(t),
            },
            ..match plan.runtime {
                Runtime::Job => RunSpec::job(&self.ns, &plan.name, ""),
                Runtime::Workflow => {
                    RunSpec::workflow(&self.ns, &plan.name, "", &STEP_NAMES[..plan.steps.len()])
                }
            }
        };
        let mut model = upstream::agentrun(&spec, Ts::now());
        let mut obj = serde_json::to_value(&model)?;
        obj["apiVersion"] = json!(objects::AGENTRUN_API_VERSION);
        obj["kind"] = json!("AgentRun");
        obj["metadata"] = json!({"name": plan.name, "namespace": self.ns});
        if plan.runtime == Runtime::Workflow {
            obj["spec"]["workflow"] = json!({"steps": STEP_NAMES[..plan.steps.len()].iter().map(|s| json!({"name": s})).collect::<Vec<_>>()});
        }
        let created: DynamicObject =
            self.runs().create(&PostParams::default(), &serde_json::from_value(obj)?).await?;
        model.metadata.uid = created.metadata.uid.clone();
        model.metadata.creation_timestamp = created.metadata.creation_timestamp.clone();
        let mut outcome =
            Outcome { uid: created.metadata.uid.clone().unwrap_or_default(), ..Outcome::default() };

        // A step that succeeded with steps left: collected in the reconcile that creates the next step's
        // Job, written in one status after that Job exists, TTL-patched after the write (as upstream does).
        let mut carried: Option<(StepRef, objects::Job)> = None;
        if plan.runtime == Runtime::Workflow {
            upstream::workflow_pending(&mut model, &STEP_NAMES[..plan.steps.len()]);
        }
        'steps: for (i, attempts) in plan.steps.iter().enumerate() {
            for (n, attempt) in attempts.iter().enumerate() {
                let step = (plan.runtime == Runtime::Workflow).then(|| StepRef {
                    index: i as u32 + 1,
                    name: STEP_NAMES[i].into(),
                    attempt: n as u32 + 1,
                });
                let job = self.create_job(&model, step.as_ref(), *attempt, plan.ttl).await?;
                let job_name = job.metadata.name.clone().unwrap_or_default();
                outcome.jobs.push(job_name.clone());
                let as_projection = projection(&job)?;
                let now = Ts::now();
                if let Some((prev, finished)) = &carried {
                    upstream::step_collected(&mut model, prev.index, &prev.name, finished, false, now);
                }
                match &step {
                    None => upstream::submitted(&mut model, &as_projection, now),
                    Some(s) => {
                        upstream::step_running(&mut model, s.index, &s.name, s.attempt, &as_projection, now)
                    }
                }
                self.write_status(&model).await?;
                if let Some((_, finished)) = carried.take() {
                    self.patch_ttl(&finished, plan.ttl).await?;
                }
                self.wait_finished(&job_name).await?;
                tokio::time::sleep(plan.collect_delay).await;
                let found =
                    Self::retry("Job read", || async { Ok(self.jobs().get_opt(&job_name).await?) }).await?;
                let Some(job) = found else {
                    // The Job went before it was collected.
                    match &step {
                        None => upstream::job_missing(&mut model, Ts::now()),
                        Some(s) => upstream::step_job_missing(&mut model, s.index, &s.name, false, Ts::now()),
                    }
                    self.write_status(&model).await?;
                    break 'steps;
                };
                let finished = projection(&job)?;
                let failed = finished.status.conditions.iter().any(|c| c.type_ == "Failed" && c.is_true());
                let retry = failed && n + 1 < attempts.len();
                let last_step = i + 1 == plan.steps.len();
                match &step {
                    None => upstream::collected_job_runtime(&mut model, &finished, Ts::now()),
                    Some(s) if !failed && !last_step => {
                        carried = Some((s.clone(), finished));
                        break;
                    }
                    Some(s) => {
                        upstream::step_collected(&mut model, s.index, &s.name, &finished, retry, Ts::now());
                        if !retry {
                            upstream::workflow_finished(&mut model, failed, Ts::now());
                        }
                    }
                }
                self.write_status(&model).await?;
                self.patch_ttl(&finished, plan.ttl).await?;
                if failed && !retry {
                    break 'steps;
                }
                if !failed {
                    break;
                }
            }
        }
        let status = model.status.clone().unwrap_or_default();
        outcome.phase = status.phase.unwrap_or_default();
        outcome.reason = status.reason;
        Ok(outcome)
    }

    async fn create_job(
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
    async fn retry<T, F, Fut>(what: &str, mut call: F) -> anyhow::Result<T>
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
    async fn patch_ttl(&self, job: &objects::Job, ttl: TtlStyle) -> anyhow::Result<()> {
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

    async fn write_status(&self, run: &objects::AgentRun) -> anyhow::Result<()> {
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
fn projection(job: &Job) -> anyhow::Result<objects::Job> {
    let value: Value = serde_json::to_value(job)?;
    Ok(serde_json::from_value(value)?)
}

//! `standin-controller`: the agents controller's stand-in as a process, for a test bed or a cluster (the
//! chart's controller container), beside the exporter. It does to AgentRuns and Jobs what the in-process
//! driver of the end-to-end tests does (`tests/support/standin.rs`, whose write functions it calls), but as a
//! controller: level-based, from what is in the API server, under upstream's leader election (`leader.rs`).
//!
//! What it reconciles: the AgentRuns of the `job` and `workflow` runtimes in `AGENTS_CONTROLLER_NAMESPACES`
//! (comma-separated as the chart sets it, or a JSON array, as upstream reads it; unset: the Lease's namespace)
//! that carry a plan in annotations:
//!
//! | annotation | value |
//! |---|---|
//! | `e2e.agentrun.dev/steps` | per attempt `<run seconds>:<exit code>`, attempts of a step separated by `,`, steps by `;` (`3:0`: a Job that succeeds after 3 s; `2:0;2:1,2:0`: a workflow whose second step fails once, then succeeds). The job runtime takes exactly one attempt, a workflow 1–4 steps (named plan, implement, review, ship, as `spec.workflow.steps`) |
//! | `e2e.agentrun.dev/ttl` | `after-collection=<s>` (the current controller: merge-patched on after the collecting write) or `at-creation=<s>` (older producers) |
//! | `e2e.agentrun.dev/collect-delay-ms` | how long after seeing a Job finished it is collected |
//!
//! The runtime is `spec.runtime.type`. Runs without the annotations are left alone. The Job's Pod gets
//! `e2e.agentrun.dev/run-seconds` and `e2e.agentrun.dev/exit-code` for the kwok node to play it.
//!
//! Each reconcile reads the AgentRun and its Jobs afresh (never from a cache: a write of ours must be seen by
//! the next reconcile) and takes one step from there, so a new leader continues any run where the old one
//! left it:
//!
//! - the Job the status points at next (`<run>-job`, `<run>-step-<i>-attempt-<n>`) is created unless it exists,
//!   then the status that starts it is written;
//! - a Job the status shows running is waited for; once finished (or gone) and `collect-delay` has passed since
//!   this process first saw it so, it is read and the collecting status written, then its TTL patched; a step
//!   that succeeded with steps left is written together with the next step's start, after that step's Job is
//!   created; a `Retrying` step gets its next attempt's Job in the following reconcile;
//! - a Job the status has already collected and that has no TTL yet (a leader stopped between the write and the
//!   patch) gets its TTL patch.
//!
//! The collect delay runs from when *this* process first saw the Job finished, so after a failover the new leader
//! waits it again for Jobs that finished in the gap. A Job that a leader created just before it stopped, and
//! that finished and was TTL-deleted before the next leader wrote the status starting it, would be created again
//! (only possible with `at-creation` TTLs shorter than the failover gap).
//!
//! The write order is the driver's, and so the real controller's (`tests/fixtures/upstream`). Only the leader
//! reconciles: on losing the Lease, or on SIGTERM/SIGINT, the controllers stop where they are (the next leader
//! picks up from the objects), and on a signal the Lease is released (see `leader.rs` for what of upstream's
//! election is reproduced). `GET /health` and `/ready` answer 200 on `PORT` (else `AGENTS_PORT`, else 3000) for
//! the chart's probes. Logs go to stderr (`RUST_LOG`, default `info`); each write is logged as `write`.
#![forbid(unsafe_code)]

mod leader;
#[allow(dead_code)]
#[path = "../support/standin.rs"]
mod standin;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use agentrun_lifecycle_exporter::{
    engine::{Ts, facts::Runtime},
    upstream::{self, StepRef, objects},
};
use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::{
    Client, ResourceExt,
    api::{DynamicObject, ListParams},
    runtime::{Controller, controller::Action, watcher},
};
use standin::{Attempt, Collected, Plan, StandIn, TtlStyle, apply_collect, apply_start, projection};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::watch,
};
use tracing::{info, warn};

/// How often a run waiting on a Job is looked at again (the driver polls as often).
const POLL: Duration = Duration::from_millis(200);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let settings = leader::Settings::from_env(|k| std::env::var(k).ok());
    let namespaces = match std::env::var("AGENTS_CONTROLLER_NAMESPACES") {
        Ok(raw) => parse_namespaces(&raw)?,
        Err(_) => vec![settings.lease_namespace.clone()],
    };
    let port = std::env::var("PORT")
        .ok()
        .or_else(|| std::env::var("AGENTS_PORT").ok())
        .and_then(|p| p.trim().parse::<u16>().ok())
        .unwrap_or(3000);
    let listener =
        tokio::net::TcpListener::bind(("0.0.0.0", port)).await.context("binding the probe port")?;
    tokio::spawn(serve_probes(listener));
    let client = Client::try_default().await.context("connecting to the Kubernetes API")?;
    info!(
        identity = settings.identity,
        namespaces = namespaces.join(","),
        elects = settings.elects(),
        "standin-controller starting"
    );

    let (leading_tx, leading) = watch::channel(!settings.elects());
    let mut election = leader::Election::new(client.clone(), settings.clone());
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let work = reconcile_while_leading(client, namespaces, leading);
    let why = if settings.elects() {
        tokio::select! {
            _ = election.run(leading_tx) => unreachable!("the election loop never ends"),
            r = work => return r,
            _ = terminate.recv() => "terminating",
            _ = tokio::signal::ctrl_c() => "interrupt",
        }
    } else {
        tokio::select! {
            r = work => return r,
            _ = terminate.recv() => "terminating",
            _ = tokio::signal::ctrl_c() => "interrupt",
        }
    };
    // The select dropped the controllers and the election loop: nothing reconciles any more.
    if settings.elects() {
        election.release(why).await;
    }
    info!("standin-controller stopped ({why})");
    Ok(())
}

/// `AGENTS_CONTROLLER_NAMESPACES` as upstream reads it (`namespace-scope.ts`): a JSON array of strings when it
/// starts with `[`, else comma-separated; set but empty is an error. (Upstream's `*` needs cluster scope;
/// the stand-in watches named namespaces only.)
fn parse_namespaces(raw: &str) -> anyhow::Result<Vec<String>> {
    let raw = raw.trim();
    anyhow::ensure!(!raw.is_empty(), "AGENTS_CONTROLLER_NAMESPACES is set but empty");
    let listed: Vec<String> = if raw.starts_with('[') {
        serde_json::from_str(raw).context("AGENTS_CONTROLLER_NAMESPACES must be a JSON array of strings")?
    } else {
        raw.split(',').map(str::to_string).collect()
    };
    let mut namespaces: Vec<String> = Vec::new();
    for n in listed.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        anyhow::ensure!(n != "*", "AGENTS_CONTROLLER_NAMESPACES: the stand-in watches named namespaces only");
        if !namespaces.iter().any(|m| m == n) {
            namespaces.push(n.to_string());
        }
    }
    anyhow::ensure!(!namespaces.is_empty(), "AGENTS_CONTROLLER_NAMESPACES names no namespace");
    Ok(namespaces)
}

/// Runs the controllers while `leading` says so, stopping them when it turns false.
async fn reconcile_while_leading(
    client: Client,
    namespaces: Vec<String>,
    mut leading: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let ctx = Arc::new(Ctx { client: client.clone(), finished_seen: Mutex::default() });
    loop {
        leading.wait_for(|l| *l).await?;
        info!("reconciling");
        let controllers = futures::future::join_all(namespaces.iter().map(|ns| controller(ctx.clone(), ns)));
        tokio::select! {
            _ = controllers => anyhow::bail!("the controllers stopped"),
            r = leading.wait_for(|l| !*l) => { r?; }
        }
        info!("not reconciling");
        ctx.finished_seen.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

struct Ctx {
    client: Client,
    /// When this process first saw a Job finished or gone (namespace/name): the collect delay runs from there.
    finished_seen: Mutex<HashMap<String, Instant>>,
}

impl Ctx {
    fn seen(&self, key: &str) -> Instant {
        *self
            .finished_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_string())
            .or_insert_with(Instant::now)
    }

    fn forget(&self, key: &str) {
        self.finished_seen.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
struct ReconcileError(anyhow::Error);

async fn controller(ctx: Arc<Ctx>, ns: &str) {
    let resource = standin::agentrun_resource();
    let runs = kube::Api::<DynamicObject>::namespaced_with(ctx.client.clone(), ns, &resource);
    let jobs = kube::Api::<Job>::namespaced(ctx.client.clone(), ns);
    Controller::new_with(runs, watcher::Config::default(), resource)
        .owns(jobs, watcher::Config::default().labels(objects::LABEL_AGENT_RUN))
        .run(
            |run, ctx| async move { reconcile(&run, &ctx).await.map_err(ReconcileError) },
            |_, e, _| {
                warn!("reconcile failed: {e}");
                Action::requeue(Duration::from_secs(1))
            },
            ctx,
        )
        .for_each(|_| async {})
        .await;
}

fn is_finished(job: &Job) -> bool {
    job.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| {
        cs.iter().any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
    })
}

fn terminal(phase: Option<&str>) -> bool {
    matches!(phase, Some("Succeeded" | "Failed" | "Cancelled"))
}

/// Whether the status has collected `job` already (so its TTL patch is due).
fn collected(plan: &Plan, run: &objects::AgentRun, job: &Job) -> bool {
    let status = run.status.clone().unwrap_or_default();
    if plan.runtime == Runtime::Job {
        return terminal(status.phase.as_deref());
    }
    let labels = job.metadata.labels.clone().unwrap_or_default();
    let Some(pos) = upstream::step_position(&job.name_any(), &labels) else { return false };
    let step = (pos.index as usize).checked_sub(1).and_then(|i| status.workflow.as_ref()?.steps.get(i));
    let (Some(attempt), Some(step)) = (pos.attempt, step) else {
        return false;
    };
    let at = i64::from(attempt);
    match step.phase.as_deref() {
        Some("Succeeded" | "Failed" | "Retrying") => at <= step.attempt.unwrap_or(0),
        Some("Running") => at < step.attempt.unwrap_or(0),
        _ => false,
    }
}

async fn reconcile(run: &DynamicObject, ctx: &Ctx) -> anyhow::Result<Action> {
    let ns = run.namespace().unwrap_or_default();
    let name = run.name_any();
    let standin = StandIn::new(ctx.client.clone(), &ns);
    let Some(fresh) = standin.runs().get_opt(&name).await? else { return Ok(Action::await_change()) };
    let annotations: BTreeMap<String, String> = fresh.annotations().clone();
    if fresh.metadata.deletion_timestamp.is_some() || !annotations.contains_key(standin::ANNOTATION_STEPS) {
        return Ok(Action::await_change());
    }
    let runtime = fresh.data["spec"]["runtime"]["type"].as_str().unwrap_or_default();
    let plan = match Plan::from_annotations(&name, runtime, &annotations) {
        Ok(plan) => plan,
        Err(e) => {
            warn!(run = name, "not reconciled: {e}");
            return Ok(Action::await_change());
        }
    };
    let mut model: objects::AgentRun = serde_json::from_value(serde_json::to_value(&fresh)?)?;
    let uid = model.metadata.uid.clone().unwrap_or_default();
    let selector = format!("{}={name}", objects::LABEL_AGENT_RUN);
    let jobs: BTreeMap<String, Job> = standin
        .jobs()
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .filter(|j| objects::agentrun_owner(&j.metadata).is_some_and(|o| o.uid == uid))
        .map(|j| (j.name_any(), j))
        .collect();

    // TTL patches a leader that stopped between a collecting write and its patch did not make.
    if let TtlStyle::AfterCollection(_) = plan.ttl {
        for job in jobs.values() {
            let no_ttl = job.spec.as_ref().is_none_or(|s| s.ttl_seconds_after_finished.is_none());
            if no_ttl && is_finished(job) && collected(&plan, &model, job) {
                info!(run = name, job = job.name_any(), "write: TTL patch left by an earlier leader");
                standin.patch_ttl(&projection(job)?, plan.ttl).await?;
            }
        }
    }
    let status = model.status.clone().unwrap_or_default();
    if terminal(status.phase.as_deref()) {
        return Ok(Action::await_change());
    }
    let r = Reconcile { ctx, standin: &standin, plan: &plan, jobs: &jobs, ns: &ns };

    if plan.runtime == Runtime::Job {
        return match status.runtime_ref.as_ref().and_then(|r| r.name.clone()) {
            None => r.start(&mut model, None, None).await,
            Some(job) => r.collect_when_due(&mut model, None, &job, false, true).await,
        };
    }
    let Some(workflow) = status.workflow.as_ref() else {
        upstream::workflow_pending(&mut model, plan.step_names());
        return r.start(&mut model, plan.step_ref(0, 0), None).await;
    };
    let Some(i) = workflow.steps.iter().position(|s| s.phase.as_deref() != Some("Succeeded")) else {
        return Ok(Action::await_change());
    };
    if i >= plan.steps.len() {
        // The status has more steps than the plan (its annotations were edited): nothing to play.
        warn!(run = name, "step {} is not in the plan: left alone", i + 1);
        return Ok(Action::await_change());
    }
    let step = &workflow.steps[i];
    let attempt = step.attempt.unwrap_or(0).max(0) as usize;
    let attempts = plan.steps.get(i).map_or(0, Vec::len);
    match step.phase.as_deref() {
        Some("Running") => {
            let job = step.job_ref.as_ref().and_then(|j| j.name.clone()).unwrap_or_default();
            let here = plan.step_ref(i, attempt.saturating_sub(1));
            let last = i + 1 == plan.steps.len();
            r.collect_when_due(&mut model, here, &job, attempt < attempts, last).await
        }
        Some("Retrying") if attempt < attempts => r.start(&mut model, plan.step_ref(i, attempt), None).await,
        Some("Pending") | None => r.start(&mut model, plan.step_ref(i, 0), None).await,
        other => {
            warn!(
                run = name,
                "step {} is {other:?} with {attempt} of {attempts} attempts: left alone",
                i + 1
            );
            Ok(Action::await_change())
        }
    }
}

/// One reconcile of one run, with what it read.
struct Reconcile<'a> {
    ctx: &'a Ctx,
    standin: &'a StandIn,
    plan: &'a Plan,
    jobs: &'a BTreeMap<String, Job>,
    ns: &'a str,
}

impl Reconcile<'_> {
    fn attempt(&self, step: Option<&StepRef>) -> Attempt {
        let (i, n) = step.map_or((0, 0), |s| (s.index as usize - 1, s.attempt as usize - 1));
        self.plan.steps[i][n]
    }

    /// Creates the Job at `step` unless it exists, then writes the status that starts it (collecting
    /// `carried`, the step before it, in the same write), then patches `carried`'s TTL.
    async fn start(
        &self,
        model: &mut objects::AgentRun,
        step: Option<StepRef>,
        carried: Option<(StepRef, objects::Job)>,
    ) -> anyhow::Result<Action> {
        let run = model.metadata.name.clone().unwrap_or_default();
        let name = upstream::job(model, "", step.as_ref(), None, Ts::now()).metadata.name.unwrap_or_default();
        let job = match self.jobs.get(&name) {
            Some(existing) => existing.clone(),
            None => {
                let job = self
                    .standin
                    .create_job(model, step.as_ref(), self.attempt(step.as_ref()), self.plan.ttl)
                    .await?;
                info!(run, job = name, "write: Job created");
                job
            }
        };
        apply_start(model, step.as_ref(), &projection(&job)?, carried.as_ref(), Ts::now());
        self.standin.write_status(model).await?;
        info!(run, job = name, "write: status, Job started");
        if let Some((_, finished)) = &carried {
            self.patch_ttl(&run, finished).await?;
        }
        Ok(Action::requeue(POLL))
    }

    async fn patch_ttl(&self, run: &str, job: &objects::Job) -> anyhow::Result<()> {
        if let TtlStyle::AfterCollection(_) = self.plan.ttl {
            self.standin.patch_ttl(job, self.plan.ttl).await?;
            info!(run, job = job.metadata.name.as_deref().unwrap_or_default(), "write: TTL patch");
        }
        Ok(())
    }

    /// Collects the Job `name` at `step` once it finished (or went) and the collect delay passed.
    async fn collect_when_due(
        &self,
        model: &mut objects::AgentRun,
        step: Option<StepRef>,
        name: &str,
        attempts_left: bool,
        last_step: bool,
    ) -> anyhow::Result<Action> {
        let key = format!("{}/{name}", self.ns);
        if self.jobs.get(name).is_some_and(|j| !is_finished(j)) {
            return Ok(Action::requeue(POLL));
        }
        let due = self.ctx.seen(&key) + self.plan.collect_delay;
        let now = Instant::now();
        if now < due {
            return Ok(Action::requeue(due - now));
        }
        let run = model.metadata.name.clone().unwrap_or_default();
        let found = self.standin.read_job(name).await?.map(|j| projection(&j)).transpose()?;
        let outcome =
            apply_collect(model, step.as_ref(), found.as_ref(), attempts_left, last_step, Ts::now());
        let action = match outcome {
            Collected::Missing => {
                self.standin.write_status(model).await?;
                info!(run, job = name, "write: status, Job missing");
                Action::await_change()
            }
            Collected::Written { .. } => {
                self.standin.write_status(model).await?;
                info!(run, job = name, "write: status, Job collected");
                if let Some(finished) = &found {
                    self.patch_ttl(&run, finished).await?;
                }
                Action::requeue(POLL)
            }
            Collected::Carried => {
                let next = step.as_ref().map(|s| s.index as usize);
                let next = next.and_then(|i| self.plan.step_ref(i, 0));
                self.start(model, next, step.zip(found)).await?
            }
        };
        self.ctx.forget(&key);
        Ok(action)
    }
}

/// `GET /health` and `/ready` → 200, anything else 404: enough for the chart's probes.
async fn serve_probes(listener: tokio::net::TcpListener) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await.ok()?.ok()?;
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let (status, body) = match path {
                "/health" | "/ready" | "/healthz" | "/readyz" => ("200 OK", "ok\n"),
                _ => ("404 Not Found", "not found\n"),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(response.as_bytes()).await.ok()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_as_upstream_reads_them() {
        assert_eq!(parse_namespaces(" agents, synthesis ,agents").unwrap(), ["agents", "synthesis"]);
        assert_eq!(parse_namespaces(r#"["a", "b"]"#).unwrap(), ["a", "b"]);
        assert!(parse_namespaces("  ").is_err());
        assert!(parse_namespaces("[1]").is_err());
        assert!(parse_namespaces("*").is_err());
    }

    #[test]
    fn plans_round_trip_through_annotations() {
        let plan = Plan {
            name: "r".into(),
            runtime: Runtime::Workflow,
            steps: vec![
                vec![Attempt { run_seconds: 2.5, exit_code: 0 }],
                vec![Attempt { run_seconds: 2.0, exit_code: 1 }, Attempt { run_seconds: 2.0, exit_code: 0 }],
            ],
            ttl: TtlStyle::AfterCollection(30),
            collect_delay: Duration::from_millis(750),
        };
        let back = Plan::from_annotations("r", "workflow", &plan.annotations()).unwrap();
        assert_eq!(format!("{back:?}"), format!("{plan:?}"));
        let mut bad = plan.annotations();
        bad.insert(standin::ANNOTATION_TTL.into(), "soon".into());
        assert!(Plan::from_annotations("r", "workflow", &bad).is_err());
        assert!(
            Plan::from_annotations("r", "job", &plan.annotations()).is_err(),
            "a job run has one attempt"
        );
        assert!(Plan::from_annotations("r", "temporal", &plan.annotations()).is_err());
    }
}

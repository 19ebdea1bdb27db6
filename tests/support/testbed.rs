//! The end-to-end test bed as the tests see it: the env file `tests/e2e/testbed/up.sh` writes, the exporter
//! process under test, and the HTTP APIs of Jaeger and Prometheus (queried as a user's tools would).

use std::{
    collections::BTreeMap,
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::TryStreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::{Api, Client, runtime::watcher};
use serde_json::Value;

use super::spans::FlatSpan;

pub struct Bed {
    pub jaeger_query: String,
    pub prometheus: String,
    http: reqwest::Client,
}

impl Bed {
    /// The test bed from the environment, or a loud failure: these tests run only through tests/e2e/run.sh.
    pub fn from_env() -> Bed {
        let var = |k: &str| {
            std::env::var(k).unwrap_or_else(|_| {
                panic!("{k} is not set: the end-to-end tests need the test bed; run tests/e2e/run.sh")
            })
        };
        Bed {
            jaeger_query: var("JAEGER_QUERY_URL"),
            prometheus: var("PROMETHEUS_URL"),
            http: reqwest::Client::new(),
        }
    }

    /// Stops or starts the exporter under test through `tests/e2e/exporter.sh` (`["stop"]`,
    /// `["start", "http/protobuf"]`).
    pub fn exporter(&self, args: &[&str]) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/exporter.sh");
        let status = Command::new(script)
            .args(args)
            .env("EXPORTER_BIN", env!("CARGO_BIN_EXE_agentrun-lifecycle-exporter"))
            .status()
            .expect("run tests/e2e/exporter.sh");
        assert!(status.success(), "exporter.sh {args:?} failed");
    }

    /// The trace of an AgentRun as Jaeger's HTTP API returns it, flattened.
    pub async fn jaeger_trace(&self, run_uid: &str) -> Vec<FlatSpan> {
        let trace = format!("{:032x}", agentrun_lifecycle_exporter::engine::ids::trace_id(run_uid));
        let url = format!("{}/api/traces/{trace}", self.jaeger_query);
        let Ok(resp) = self.http.get(&url).send().await else { return Vec::new() };
        let Ok(body) = resp.json::<Value>().await else { return Vec::new() };
        flatten_jaeger(&body)
    }

    /// Polls Jaeger until `done` holds for the trace (or a timeout), and returns the spans.
    pub async fn wait_trace(
        &self,
        run_uid: &str,
        what: &str,
        done: impl Fn(&[FlatSpan]) -> bool,
    ) -> Vec<FlatSpan> {
        let mut spans = Vec::new();
        for _ in 0..120 {
            spans = self.jaeger_trace(run_uid).await;
            if done(&spans) {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("Jaeger never showed {what}; last: {:?}", spans.iter().map(|s| &s.name).collect::<Vec<_>>());
    }

    /// An instant query through Prometheus' HTTP API: (labels, value) per series.
    pub async fn prom(&self, query: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let url = format!("{}/api/v1/query", self.prometheus);
        let body: Value =
            self.http.get(&url).query(&[("query", query)]).send().await.unwrap().json().await.unwrap();
        assert_eq!(body["status"], "success", "{query}: {body}");
        body["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                let value = r["value"][1].as_str().unwrap().parse().unwrap();
                (labels, value)
            })
            .collect()
    }

    /// Polls a query until it returns a series whose value satisfies `ok`.
    pub async fn wait_prom(&self, query: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let mut last = Vec::new();
        for _ in 0..90 {
            last = self.prom(query).await;
            if let Some((_, v)) = last.iter().find(|(_, v)| ok(*v)) {
                return *v;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("Prometheus never returned a matching value for {query}; last: {last:?}");
    }

    /// Alerts Prometheus has firing, as (name, labels, annotations).
    pub async fn firing_alerts(&self) -> Vec<(String, BTreeMap<String, String>, BTreeMap<String, String>)> {
        let body: Value = self
            .http
            .get(format!("{}/api/v1/alerts", self.prometheus))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let map = |v: &Value| -> BTreeMap<String, String> {
            v.as_object()
                .map(|o| {
                    o.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect()
                })
                .unwrap_or_default()
        };
        body["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["state"] == "firing")
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap_or_default().to_string(),
                    map(&a["labels"]),
                    map(&a["annotations"]),
                )
            })
            .collect()
    }
}

/// Jaeger's `/api/traces/{id}` JSON → the flat spans the OTLP tests use.
pub fn flatten_jaeger(body: &Value) -> Vec<FlatSpan> {
    let mut out = Vec::new();
    for trace in body["data"].as_array().into_iter().flatten() {
        for s in trace["spans"].as_array().into_iter().flatten() {
            let process = s["processID"].as_str().unwrap_or_default();
            let service = trace["processes"][process]["serviceName"].as_str().unwrap_or_default().to_string();
            let tags: BTreeMap<String, String> = s["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    let v = &t["value"];
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (t["key"].as_str().unwrap_or_default().to_string(), v)
                })
                .collect();
            let parent = s["references"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["refType"] == "CHILD_OF")
                .and_then(|r| r["spanID"].as_str())
                .unwrap_or("")
                .to_string();
            let start_us = s["startTime"].as_u64().unwrap_or(0);
            let status = match tags.get("otel.status_code").map(String::as_str) {
                Some("ERROR") => 2,
                Some("OK") => 1,
                _ => 0,
            };
            let attrs = tags
                .into_iter()
                // Jaeger's own tags (status, kind, its `@jaeger@warnings`) are not the exporter's attributes.
                .filter(|(k, _)| {
                    !k.starts_with("otel.")
                        && !k.starts_with('@')
                        && k != "span.kind"
                        && k != "error"
                        && !k.starts_with("internal.")
                })
                .collect();
            out.push(FlatSpan {
                trace_id: s["traceID"].as_str().unwrap_or_default().to_string(),
                span_id: s["spanID"].as_str().unwrap_or_default().to_string(),
                parent,
                name: s["operationName"].as_str().unwrap_or_default().to_string(),
                start_ns: start_us * 1000,
                end_ns: (start_us + s["duration"].as_u64().unwrap_or(0)) * 1000,
                attrs,
                status,
                events: s["logs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|l| {
                        let name = l["fields"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .find(|f| f["key"] == "event")
                            .and_then(|f| f["value"].as_str())
                            .unwrap_or_default()
                            .to_string();
                        (name, l["timestamp"].as_u64().unwrap_or(0) * 1000)
                    })
                    .collect(),
                service,
            });
        }
    }
    out.sort();
    out
}

/// What the real cluster did to each Job, seen through a watch: finish and deletion times, TTL.
#[derive(Clone, Debug, Default)]
pub struct JobFacts {
    pub uid: String,
    /// Every uid seen under this name: more than one means the Job was created again.
    pub uids: std::collections::BTreeSet<String>,
    pub finished: Option<Ts>,
    pub deletion: Option<Ts>,
    pub gone: bool,
    pub ttl: Option<i32>,
    pub ttl_at_creation: Option<bool>,
}

use agentrun_lifecycle_exporter::engine::Ts;

pub type JobLog = Arc<Mutex<BTreeMap<String, JobFacts>>>;

/// Watches the namespace's Jobs and records what happens to them.
pub fn watch_jobs(client: Client, namespace: &str) -> (JobLog, tokio::task::JoinHandle<()>) {
    let log: JobLog = Arc::default();
    let api: Api<Job> = Api::namespaced(client, namespace);
    let l = log.clone();
    let task = tokio::spawn(async move {
        let mut stream = Box::pin(watcher::watcher(api, watcher::Config::default()));
        loop {
            let event = match stream.try_next().await {
                Ok(Some(event)) => event,
                Ok(None) => break,
                // An API server restart or a cut connection: the watcher resumes on the next poll.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let (job, gone) = match event {
                watcher::Event::Apply(j) | watcher::Event::InitApply(j) => (j, false),
                watcher::Event::Delete(j) => (j, true),
                _ => continue,
            };
            let name = job.metadata.name.clone().unwrap_or_default();
            let mut map = l.lock().unwrap();
            let first = !map.contains_key(&name);
            let f = map.entry(name).or_default();
            f.uid = job.metadata.uid.clone().unwrap_or_default();
            f.uids.insert(f.uid.clone());
            let ttl = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished);
            if first {
                f.ttl_at_creation = Some(ttl.is_some());
            }
            f.ttl = ttl.or(f.ttl);
            if let Some(t) = &job.metadata.deletion_timestamp {
                f.deletion.get_or_insert(agentrun_lifecycle_exporter::upstream::ts(t));
            }
            if let Some(cs) = job.status.as_ref().and_then(|s| s.conditions.as_ref()) {
                for c in cs {
                    if (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True" {
                        f.finished =
                            c.last_transition_time.as_ref().map(agentrun_lifecycle_exporter::upstream::ts);
                    }
                }
            }
            f.gone |= gone;
        }
    });
    (log, task)
}

pub fn job_facts(log: &JobLog, name: &str) -> JobFacts {
    log.lock().unwrap().get(name).cloned().unwrap_or_default()
}

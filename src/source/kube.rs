//! Kubernetes watches → observations. One kube-rs watcher per kind and namespace, over the narrow
//! projections of [`crate::upstream::objects`], each wrapped in `DeserializeGuard` so a malformed object is
//! logged, counted and skipped instead of stalling the watch. Watch errors (410 Gone included) are retried
//! with backoff; the watcher then relists, and the relist markers let the tracker find what vanished during
//! the gap.

use std::{
    borrow::Cow,
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use futures::{StreamExt, TryStreamExt as _};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{
    Api, Client, Resource,
    core::{DeserializeGuard, NamespaceResourceScope},
    runtime::{
        WatchStreamExt,
        watcher::{self, Event},
    },
};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::{
    engine::{Kind, Ts, ids::name_key},
    sink::metrics::{LifecycleMetrics, WatchEventType},
    source::{Change, Observation},
    upstream::objects::{AgentRun, Job, Object, Pod},
};

macro_rules! projection_resource {
    ($ty:ty, $kind:literal, $group:literal, $version:literal, $plural:literal) => {
        impl Resource for $ty {
            type DynamicType = ();
            type Scope = NamespaceResourceScope;

            fn kind(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($kind)
            }

            fn group(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($group)
            }

            fn version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($version)
            }

            fn plural(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($plural)
            }

            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

projection_resource!(AgentRun, "AgentRun", "agents.proompteng.ai", "v1alpha1", "agentruns");
projection_resource!(Job, "Job", "batch", "v1", "jobs");
projection_resource!(Pod, "Pod", "", "v1", "pods");

/// Objects per list page. Each page is decoded whole (and buffered once more to tell malformed objects
/// apart), so the page size sets the transient memory of a relist; 100 keeps it to a few MiB where the
/// default of 500 costs tens of MiB, for a handful more requests.
const LIST_PAGE_SIZE: u32 = 100;

/// What to watch.
#[derive(Clone, Debug)]
pub struct WatchScope {
    /// Namespaces to watch; empty means all namespaces.
    pub namespaces: Vec<String>,
    /// Label selector for Jobs and their Pods.
    pub job_selector: String,
}

/// Ready once the first list of every watch has been applied.
#[derive(Debug, Default)]
pub struct Readiness {
    pending: AtomicUsize,
}

impl Readiness {
    pub fn new(watches: usize) -> Arc<Self> {
        Arc::new(Readiness { pending: AtomicUsize::new(watches) })
    }

    pub fn is_ready(&self) -> bool {
        self.pending.load(Ordering::Acquire) == 0
    }

    fn first_list_done(&self) {
        let _ = self.pending.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

impl WatchScope {
    pub fn watch_count(&self) -> usize {
        3 * self.namespaces.len().max(1)
    }
}

/// Starts every watch; observations go to `tx`. Returns the task handles.
pub fn spawn_watches(
    client: Client,
    scope: &WatchScope,
    tx: mpsc::Sender<Observation>,
    metrics: Arc<LifecycleMetrics>,
    ready: Arc<Readiness>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let namespaces: Vec<Option<String>> = if scope.namespaces.is_empty() {
        vec![None]
    } else {
        scope.namespaces.iter().cloned().map(Some).collect()
    };
    // Announce the Job and Pod lists before any watch runs: a run found finished in the AgentRun list must wait
    // for them (its Jobs may still come), whichever list the API server answers first.
    for ns in &namespaces {
        for kind in [Kind::Job, Kind::Pod] {
            let _ = tx.try_send(Observation {
                at: Ts::now(),
                change: Change::RelistBegin { kind, namespace: ns.clone() },
            });
        }
    }
    let mut tasks = Vec::new();
    for ns in namespaces {
        let runs = watcher::Config::default().page_size(LIST_PAGE_SIZE);
        let jobs = watcher::Config::default().page_size(LIST_PAGE_SIZE).labels(&scope.job_selector);
        let pods = watcher::Config::default().page_size(LIST_PAGE_SIZE).labels(&scope.job_selector);
        let ctx = || (tx.clone(), metrics.clone(), ready.clone());
        let (t, m, r) = ctx();
        tasks.push(tokio::spawn(watch_kind::<AgentRun>(
            api(&client, &ns),
            runs,
            Kind::AgentRun,
            ns.clone(),
            t,
            m,
            r,
        )));
        let (t, m, r) = ctx();
        tasks.push(tokio::spawn(watch_kind::<Job>(api(&client, &ns), jobs, Kind::Job, ns.clone(), t, m, r)));
        let (t, m, r) = ctx();
        tasks.push(tokio::spawn(watch_kind::<Pod>(api(&client, &ns), pods, Kind::Pod, ns.clone(), t, m, r)));
    }
    tasks
}

fn api<K>(client: &Client, ns: &Option<String>) -> Api<DeserializeGuard<K>>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Converts the projection into the engine's object.
pub trait IntoObject {
    fn into_object(self) -> Object;
}

impl IntoObject for AgentRun {
    fn into_object(self) -> Object {
        Object::AgentRun(self).slimmed()
    }
}

impl IntoObject for Job {
    fn into_object(self) -> Object {
        Object::Job(self).slimmed()
    }
}

impl IntoObject for Pod {
    fn into_object(self) -> Object {
        Object::Pod(self).slimmed()
    }
}

/// Maps one watcher event to observations, counting and skipping malformed objects.
pub struct EventMapper {
    kind: Kind,
    namespace: Option<String>,
    /// Keys of the uids seen on this watch, to tell `added` from `modified`.
    seen: HashSet<u64>,
    relisting: Option<HashSet<u64>>,
}

impl EventMapper {
    pub fn new(kind: Kind, namespace: Option<String>) -> Self {
        EventMapper { kind, namespace, seen: HashSet::new(), relisting: None }
    }

    /// Returns the observations and the counted event types.
    pub fn map<K>(
        &mut self,
        event: Event<DeserializeGuard<K>>,
        at: Ts,
    ) -> (Vec<Observation>, Vec<WatchEventType>)
    where
        K: IntoObject,
    {
        let mut out = Vec::new();
        let mut counted = Vec::new();
        let object = |guard: DeserializeGuard<K>, counted: &mut Vec<WatchEventType>| -> Option<Object> {
            match guard.0 {
                Ok(k) => Some(k.into_object()),
                Err(invalid) => {
                    warn!(
                        resource = self.kind.resource(),
                        namespace = invalid.metadata.namespace.as_deref().unwrap_or(""),
                        name = invalid.metadata.name.as_deref().unwrap_or(""),
                        error = %invalid.error,
                        "skipping malformed object"
                    );
                    counted.push(WatchEventType::Malformed);
                    None
                }
            }
        };
        match event {
            Event::Init => {
                self.relisting = Some(HashSet::new());
                out.push(Observation {
                    at,
                    change: Change::RelistBegin { kind: self.kind, namespace: self.namespace.clone() },
                });
            }
            Event::InitApply(guard) => {
                if let Some(o) = object(guard, &mut counted) {
                    if let (Some(uid), Some(set)) = (o.metadata().uid.as_deref(), self.relisting.as_mut()) {
                        set.insert(name_key(uid));
                    }
                    counted.push(WatchEventType::Relisted);
                    out.push(Observation { at, change: Change::Upsert(o) });
                }
            }
            Event::InitDone => {
                if let Some(set) = self.relisting.take() {
                    self.seen = set;
                }
                out.push(Observation {
                    at,
                    change: Change::RelistEnd { kind: self.kind, namespace: self.namespace.clone() },
                });
            }
            Event::Apply(guard) => {
                if let Some(o) = object(guard, &mut counted) {
                    let added = self.seen.insert(name_key(o.metadata().uid.as_deref().unwrap_or_default()));
                    counted.push(if added { WatchEventType::Added } else { WatchEventType::Modified });
                    out.push(Observation { at, change: Change::Upsert(o) });
                }
            }
            Event::Delete(guard) => {
                if let Some(o) = object(guard, &mut counted) {
                    if let Some(uid) = o.metadata().uid.as_deref() {
                        self.seen.remove(&name_key(uid));
                    }
                    counted.push(WatchEventType::Deleted);
                    out.push(Observation { at, change: Change::Delete(o) });
                }
            }
        }
        (out, counted)
    }
}

async fn watch_kind<K>(
    api: Api<DeserializeGuard<K>>,
    config: watcher::Config,
    kind: Kind,
    namespace: Option<String>,
    tx: mpsc::Sender<Observation>,
    metrics: Arc<LifecycleMetrics>,
    ready: Arc<Readiness>,
) where
    K: Resource<DynamicType = ()>
        + DeserializeOwned
        + Clone
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
        + IntoObject,
{
    let mut mapper = EventMapper::new(kind, namespace.clone());
    let mut first_list = true;
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    loop {
        match stream.try_next().await {
            Ok(Some(event)) => {
                let done = matches!(event, Event::InitDone);
                let (observations, counted) = mapper.map(event, Ts::now());
                for t in counted {
                    metrics.watch_event(kind, t);
                }
                for obs in observations {
                    if tx.send(obs).await.is_err() {
                        return;
                    }
                }
                if done && first_list {
                    first_list = false;
                    ready.first_list_done();
                    debug!(
                        resource = kind.resource(),
                        namespace = namespace.as_deref().unwrap_or("*"),
                        "first list applied"
                    );
                }
            }
            Ok(None) => return,
            Err(e) => {
                metrics.watch_error(kind);
                warn!(resource = kind.resource(), namespace = namespace.as_deref().unwrap_or("*"), error = %e, "watch failed; retrying with backoff");
            }
        }
    }
}

//! Kubernetes watches → observations. One kube-rs watcher per kind and namespace, over the narrow
//! projections of [`crate::upstream::objects`], each decoded through [`Guarded`] so a malformed object is
//! logged, counted and skipped instead of stalling the watch. Watch errors (410 Gone included) are retried
//! with backoff; the watcher then relists, and the relist markers let the tracker find what vanished during
//! the gap.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use futures::{StreamExt, TryStreamExt as _};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::{
    Api, Client, Resource,
    core::NamespaceResourceScope,
    runtime::{
        WatchStreamExt,
        watcher::{self, Event},
    },
};
use serde::{
    Deserialize, Deserializer,
    de::{IgnoredAny, MapAccess, Visitor},
};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::{
    engine::{Kind, Ts, ids::name_key},
    sink::metrics::{LifecycleMetrics, WatchEventType},
    source::{Change, Observation},
    upstream::objects::{
        ANNOTATION_RETAIN, AgentRun, AgentRunSpec, AgentRunStatus, Job, JobSpec, JobStatus, Object, Pod,
        PodSpec, PodStatus,
    },
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

/// A projection decoded straight from the raw JSON of one list item or watch event, or why it could not be.
///
/// kube's `DeserializeGuard` buffers each object as a generic value tree, clones it and decodes from the
/// clone; this takes the object's raw text instead and decodes the projection from it, skipping what the
/// projection does not read (managedFields, annotations) without building anything for it. Only a malformed
/// object is parsed twice, to name it and to find the failing field.
#[derive(Clone, Debug)]
pub struct Guarded<K>(pub Result<K, Malformed>);

/// An object that did not decode: what identifies it, and where it failed. Never holds any of its values.
#[derive(Clone, Debug, Default)]
pub struct Malformed {
    /// Name and namespace, when the metadata itself decodes.
    pub metadata: ObjectMeta,
    /// Where decoding failed, as a field path (`status.startTime`).
    pub path: String,
    /// The decoder's message with every quoted value left out.
    pub error: String,
}

impl<'de, K: Projection> Deserialize<'de> for Guarded<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // kube-client parses with serde_json, which hands the item over as text; an error here (not JSON at
        // all) fails the whole page or event, as it would for any other type.
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Ok(Guarded(K::decode(raw.get()).map_err(|_| Malformed::of::<K>(raw.get()))))
    }
}

impl Malformed {
    /// Decodes again, tracking the field path, and the identity alone; only runs for malformed objects.
    fn of<K: Projection>(raw: &str) -> Malformed {
        #[derive(Deserialize, Default)]
        struct Identity {
            #[serde(default)]
            metadata: IdentityMeta,
        }
        #[derive(Deserialize, Default)]
        struct IdentityMeta {
            name: Option<String>,
            namespace: Option<String>,
        }
        let identity = serde_json::from_str::<Identity>(raw).unwrap_or_default().metadata;
        let (path, error) = match K::decode_tracked(raw) {
            Err(e) => (e.path().to_string(), redact(&e.into_inner().to_string())),
            Ok(_) => (String::new(), "decodes only when tracked".into()),
        };
        Malformed {
            metadata: ObjectMeta {
                name: identity.name,
                namespace: identity.namespace,
                ..ObjectMeta::default()
            },
            path,
            error,
        }
    }
}

/// Drops quoted (`"…"`) and backquoted (`` `…` ``) parts of a serde message: that is where serde and our
/// own decoders put the offending value.
fn redact(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    match (escaped, c) {
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        _ => escaped = false,
                    }
                }
                out.push_str("\"…\"");
            }
            '`' => {
                chars.by_ref().find(|&c| c == '`');
                out.push_str("`…`");
            }
            c => out.push(c),
        }
    }
    out
}

impl<K: Resource> Resource for Guarded<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        self.0.as_ref().map_or_else(|m| &m.metadata, K::meta)
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.0.as_mut().map_or_else(|m| &mut m.metadata, K::meta_mut)
    }
}

/// A projection as it is decoded off the wire: only the metadata fields `slim_meta` keeps are built, and
/// the annotations are narrowed to the retain annotation while they are read.
pub trait Projection: Sized {
    fn decode(raw: &str) -> Result<Self, serde_json::Error>;
    /// The same decode with the failing field's path, for the malformed branch.
    fn decode_tracked(raw: &str) -> Result<Self, serde_path_to_error::Error<serde_json::Error>>;
}

/// The wire shape shared by the three projections.
#[derive(Deserialize)]
struct Wire<S, T> {
    #[serde(default)]
    metadata: WireMeta,
    #[serde(default)]
    spec: S,
    #[serde(default)]
    status: T,
}

/// The part of `ObjectMeta` that `slim_meta` keeps; the rest (managedFields above all) is skipped unread.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    generation: Option<i64>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<Time>,
    labels: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "retain_annotation")]
    annotations: Option<BTreeMap<String, String>>,
    owner_references: Option<Vec<OwnerReference>>,
    finalizers: Option<Vec<String>>,
}

impl From<WireMeta> for ObjectMeta {
    fn from(m: WireMeta) -> ObjectMeta {
        ObjectMeta {
            name: m.name,
            namespace: m.namespace,
            uid: m.uid,
            resource_version: m.resource_version,
            generation: m.generation,
            creation_timestamp: m.creation_timestamp,
            deletion_timestamp: m.deletion_timestamp,
            labels: m.labels,
            annotations: m.annotations,
            owner_references: m.owner_references,
            finalizers: m.finalizers,
            ..ObjectMeta::default()
        }
    }
}

/// Reads the annotations keeping only [`ANNOTATION_RETAIN`]: the others (last-applied configurations run to
/// kilobytes) are skipped without being copied.
fn retain_annotation<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    struct Retain;
    impl<'de> Visitor<'de> for Retain {
        type Value = Option<BTreeMap<String, String>>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of annotations")
        }

        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut kept = BTreeMap::new();
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                if key == ANNOTATION_RETAIN {
                    kept.insert(key.into_owned(), map.next_value::<String>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(Some(kept))
        }
    }
    d.deserialize_option(Retain)
}

macro_rules! projection {
    ($ty:ident, $spec:ty, $status:ty) => {
        impl Projection for $ty {
            fn decode(raw: &str) -> Result<Self, serde_json::Error> {
                serde_json::from_str::<Wire<$spec, $status>>(raw).map(Into::into)
            }

            fn decode_tracked(raw: &str) -> Result<Self, serde_path_to_error::Error<serde_json::Error>> {
                let mut de = serde_json::Deserializer::from_str(raw);
                serde_path_to_error::deserialize::<_, Wire<$spec, $status>>(&mut de).map(Into::into)
            }
        }

        impl From<Wire<$spec, $status>> for $ty {
            fn from(w: Wire<$spec, $status>) -> $ty {
                $ty { metadata: w.metadata.into(), spec: w.spec, status: w.status }
            }
        }
    };
}

projection!(AgentRun, AgentRunSpec, Option<AgentRunStatus>);
projection!(Job, JobSpec, JobStatus);
projection!(Pod, PodSpec, PodStatus);

/// Objects per list page. A page is held as text while its items are decoded. Measured with the sidecar
/// benchmark (10,000 runs, full objects): resident memory per tracked run 2.25 KiB at 10, 2.28 at 25, 2.56 at
/// 50 and 2.52 at 100, relist CPU the same within noise. The difference is allocator holes (each page body is
/// one buffer grown by doubling, freed among the engine's state); smaller pages than 25 only add requests.
const LIST_PAGE_SIZE: u32 = 25;

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

fn api<K>(client: &Client, ns: &Option<String>) -> Api<Guarded<K>>
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
    pub fn map<K>(&mut self, event: Event<Guarded<K>>, at: Ts) -> (Vec<Observation>, Vec<WatchEventType>)
    where
        K: IntoObject,
    {
        let mut out = Vec::new();
        let mut counted = Vec::new();
        let object = |guard: Guarded<K>, counted: &mut Vec<WatchEventType>| -> Option<Object> {
            match guard.0 {
                Ok(k) => Some(k.into_object()),
                Err(invalid) => {
                    warn!(
                        resource = self.kind.resource(),
                        namespace = invalid.metadata.namespace.as_deref().unwrap_or(""),
                        name = invalid.metadata.name.as_deref().unwrap_or(""),
                        path = %invalid.path,
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
    api: Api<Guarded<K>>,
    config: watcher::Config,
    kind: Kind,
    namespace: Option<String>,
    tx: mpsc::Sender<Observation>,
    metrics: Arc<LifecycleMetrics>,
    ready: Arc<Readiness>,
) where
    K: Resource<DynamicType = ()> + Projection + Clone + std::fmt::Debug + Send + Sync + 'static + IntoObject,
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

#[cfg(test)]
mod tests {
    use kube::core::{ObjectList, WatchEvent};
    use serde_json::json;

    use super::*;

    fn job() -> serde_json::Value {
        json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "r-job", "namespace": "agents", "uid": "job-a", "resourceVersion": "8",
                         "creationTimestamp": "2026-08-20T12:00:01Z",
                         "labels": {"agents.proompteng.ai/agent-run": "r", "app": "x"},
                         "annotations": {"agents.proompteng.ai/retain": "true", "big": "x"},
                         "managedFields": [{"manager": "m", "fieldsV1": {"f:status": {}}}],
                         "ownerReferences": [{"apiVersion": "agents.proompteng.ai/v1alpha1", "kind": "AgentRun", "name": "r", "uid": "run-uid"}]},
            "spec": {"ttlSecondsAfterFinished": 30, "template": {"spec": {"containers": []}}},
            "status": {"startTime": "2026-08-20T12:00:01Z", "succeeded": 1}})
    }

    #[test]
    fn decodes_what_the_projection_decodes_once_slimmed() {
        let text = json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": [job()]}).to_string();
        let list: ObjectList<Guarded<Job>> = serde_json::from_str(&text).unwrap();
        let got = list.items.into_iter().next().unwrap().0.unwrap().into_object();
        let want = serde_json::from_value::<Job>(job()).unwrap().into_object();
        assert_eq!(got, want);
        let Object::Job(j) = got else { panic!() };
        assert_eq!(j.metadata.annotations.unwrap().len(), 1, "only the retain annotation is kept");
        // What is skipped unread cannot make the object malformed.
        let mut odd = job();
        odd["metadata"]["annotations"]["n"] = json!(5);
        odd["metadata"]["managedFields"] = json!("not a list");
        assert!(serde_json::from_str::<Guarded<Job>>(&odd.to_string()).unwrap().0.is_ok());
    }

    #[test]
    fn a_watch_event_decodes_straight_from_its_line() {
        let line = format!(r#"{{"type":"MODIFIED","object":{}}}"#, job());
        let WatchEvent::Modified(g) = serde_json::from_str::<WatchEvent<Guarded<Job>>>(&line).unwrap() else {
            panic!()
        };
        assert_eq!(g.0.unwrap().metadata.uid.as_deref(), Some("job-a"));
    }

    #[test]
    fn a_malformed_object_keeps_its_name_and_the_failing_path_but_no_value() {
        let mut bad = job();
        bad["status"]["startTime"] = json!("s3cr3t-not-a-time");
        let text =
            json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": [bad, job()]}).to_string();
        let list: ObjectList<Guarded<Job>> = serde_json::from_str(&text).unwrap();
        let m = list.items[0].0.as_ref().unwrap_err();
        assert_eq!(m.metadata.name.as_deref(), Some("r-job"));
        assert_eq!(m.metadata.namespace.as_deref(), Some("agents"));
        assert_eq!(m.path, "status.startTime");
        assert!(!m.error.contains("s3cr3t"), "{}", m.error);
        assert!(m.error.contains("RFC 3339"), "{}", m.error);
        assert!(list.items[1].0.is_ok(), "the next item still decodes");
        let mut wrong_type = job();
        wrong_type["spec"]["ttlSecondsAfterFinished"] = json!("s3cr3t");
        let g: Guarded<Job> = serde_json::from_str(&wrong_type.to_string()).unwrap();
        let m = g.0.unwrap_err();
        assert_eq!(m.path, "spec.ttlSecondsAfterFinished");
        assert!(!m.error.contains("s3cr3t"), "{}", m.error);
    }

    #[test]
    fn redact_drops_quoted_and_backquoted_values() {
        assert_eq!(
            redact(r#"invalid type: string "a \"b\" c", expected i64 at line 1 column 9"#),
            r#"invalid type: string "…", expected i64 at line 1 column 9"#
        );
        assert_eq!(
            redact("invalid value: integer `-5`, expected u32"),
            "invalid value: integer `…`, expected u32"
        );
    }
}

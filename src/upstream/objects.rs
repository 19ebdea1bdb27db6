//! Narrow projections of the three watched kinds: only the fields the engine reads. Watch events, replay files
//! and the demo simulator all decode into these, so nothing downstream holds a full Kubernetes object, its
//! managedFields, annotations, env values or termination messages.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::{Deserialize, Serialize};

use crate::engine::{Kind, Ts};

pub const AGENTS_GROUP: &str = "agents.proompteng.ai";
pub const AGENTRUN_API_VERSION: &str = "agents.proompteng.ai/v1alpha1";
pub const LABEL_AGENT_RUN: &str = "agents.proompteng.ai/agent-run";
pub const LABEL_AGENT: &str = "agents.proompteng.ai/agent";
pub const LABEL_PROVIDER: &str = "agents.proompteng.ai/provider";
pub const LABEL_STEP: &str = "agents.proompteng.ai/step";
pub const LABEL_STEP_INDEX: &str = "agents.proompteng.ai/step-index";
pub const LABEL_STEP_ITERATION: &str = "agents.proompteng.ai/step-iteration";
pub const LABEL_JOB_NAME: &str = "batch.kubernetes.io/job-name";
pub const LABEL_CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
/// The container the agents controller creates and reads the runner status from.
pub const RUNNER_CONTAINER: &str = "agent-runner";

/// One watched object, projected. Objects are transient (one per event, dropped once applied), so the
/// variants are not boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    AgentRun(AgentRun),
    Job(Job),
    Pod(Pod),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::AgentRun(_) => Kind::AgentRun,
            Object::Job(_) => Kind::Job,
            Object::Pod(_) => Kind::Pod,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::AgentRun(o) => &o.metadata,
            Object::Job(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
        }
    }

    /// Decodes one object by its `kind`, keeping only the projected fields.
    pub fn from_json(value: serde_json::Value) -> Result<Object, ObjectError> {
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or_default().to_owned();
        let object = match kind.as_str() {
            "AgentRun" => Object::AgentRun(serde_json::from_value(value)?),
            "Job" => Object::Job(serde_json::from_value(value)?),
            "Pod" => Object::Pod(serde_json::from_value(value)?),
            "" => return Err(ObjectError::NoKind),
            other => return Err(ObjectError::UnknownKind(other.to_owned())),
        };
        Ok(object.slimmed())
    }

    /// The object as JSON, with `apiVersion` and `kind`, as `record` writes it.
    pub fn to_json(&self) -> serde_json::Value {
        let (api_version, kind, value) = match self {
            Object::AgentRun(o) => (AGENTRUN_API_VERSION, "AgentRun", serde_json::to_value(o)),
            Object::Job(o) => ("batch/v1", "Job", serde_json::to_value(o)),
            Object::Pod(o) => ("v1", "Pod", serde_json::to_value(o)),
        };
        // Serializing these plain structs cannot fail.
        let mut value = value.unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.insert("apiVersion".into(), api_version.into());
            map.insert("kind".into(), kind.into());
        }
        value
    }

    /// Drops every metadata field the engine does not read (managedFields, annotations, unrelated labels).
    pub fn slimmed(self) -> Object {
        match self {
            Object::AgentRun(mut o) => {
                o.metadata = slim_meta(o.metadata);
                Object::AgentRun(o)
            }
            Object::Job(mut o) => {
                o.metadata = slim_meta(o.metadata);
                Object::Job(o)
            }
            Object::Pod(mut o) => {
                o.metadata = slim_meta(o.metadata);
                Object::Pod(o)
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("object has no kind")]
    NoKind,
    #[error("unsupported kind {0:?} (expected AgentRun, Job or Pod)")]
    UnknownKind(String),
    #[error("malformed object: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// Exempts a run from retention (`index.ts`).
pub const ANNOTATION_RETAIN: &str = "agents.proompteng.ai/retain";

fn keep_label(key: &str) -> bool {
    key.starts_with("agents.proompteng.ai/")
        || key == LABEL_JOB_NAME
        || key == "job-name"
        || key == LABEL_CONTROLLER_UID
}

/// Keeps identity, times, owners, finalizers, our labels and the retain annotation; drops the rest.
pub fn slim_meta(meta: ObjectMeta) -> ObjectMeta {
    let labels = meta
        .labels
        .map(|l| l.into_iter().filter(|(k, _)| keep_label(k)).collect::<BTreeMap<_, _>>())
        .filter(|l| !l.is_empty());
    let annotations = meta
        .annotations
        .map(|a| a.into_iter().filter(|(k, _)| k == ANNOTATION_RETAIN).collect::<BTreeMap<_, _>>())
        .filter(|a| !a.is_empty());
    ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resource_version: meta.resource_version,
        generation: meta.generation,
        creation_timestamp: meta.creation_timestamp,
        deletion_timestamp: meta.deletion_timestamp,
        labels,
        annotations,
        owner_references: meta.owner_references,
        finalizers: meta.finalizers,
        ..ObjectMeta::default()
    }
}

/// The AgentRun's owner reference on a Job (there is no `controller: true` on it upstream).
pub fn agentrun_owner(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|o| o.kind == "AgentRun" && o.api_version.starts_with(AGENTS_GROUP))
}

// ---------------------------------------------------------------------------------------------------------
// AgentRun
// ---------------------------------------------------------------------------------------------------------

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct AgentRun {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: AgentRunSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AgentRunStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRunSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_ref: Option<NameRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeSpec>,
    /// The AgentRun's own retention (not the Job TTL); any JSON, read as upstream reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct NameRef {
    #[serde(default)]
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct RuntimeSpec {
    #[serde(default, rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<RuntimeConfig>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    /// The Job TTL override. The field is free-form upstream (any JSON), so it is kept as it is and read the
    /// way the controller reads it ([`super::job_ttl_override`]); a value of the wrong type never makes the
    /// whole run malformed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRunStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Ts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Ts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Ts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_ref: Option<RuntimeRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<WorkflowStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeRef {
    #[serde(default, rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_observed_at: Option<Ts>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct WorkflowStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepStatus {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i64>,
    /// Upstream messages are fixed strings ("Job missing", "Job missing; retrying", …); kept to tell a step
    /// that consumed a missing Job, never exported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Ts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Ts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Ts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_observed_at: Option<Ts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_ref: Option<JobRef>,
    #[serde(default, rename = "loop", skip_serializing_if = "Option::is_none")]
    pub loop_: Option<LoopStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct JobRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct LoopStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub iterations: Vec<IterationStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IterationStatus {
    #[serde(default)]
    pub index: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Ts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Ts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_ref: Option<JobRef>,
}

/// A `metav1.Condition` (AgentRun) or `JobCondition`; the message is never kept.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(default, rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Ts>,
}

impl Condition {
    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

// ---------------------------------------------------------------------------------------------------------
// Job
// ---------------------------------------------------------------------------------------------------------

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Job {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: JobSpec,
    #[serde(default)]
    pub status: JobStatus,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Ts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Ts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

// ---------------------------------------------------------------------------------------------------------
// Pod
// ---------------------------------------------------------------------------------------------------------

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Pod {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpec,
    #[serde(default)]
    pub status: PodStatus,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_statuses: Vec<ContainerStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct ContainerStatus {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ContainerState>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct ContainerState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminated: Option<ContainerTerminated>,
}

/// `state.terminated` without `message`: the runner's status JSON is never read or kept.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerTerminated {
    #[serde(default)]
    pub exit_code: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Ts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Ts>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_a_pod_without_keeping_the_termination_message_or_env() {
        let pod = Object::from_json(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "agents", "uid": "u",
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{secret}"},
                "managedFields": [{"manager": "kubelet"}],
                "labels": {"agents.proompteng.ai/agent-run": "r", "team": "x"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "agent-runner", "env": [{"name": "TOKEN", "value": "s3cr3t"}]}]},
            "status": {"phase": "Succeeded", "containerStatuses": [{"name": "agent-runner",
                "state": {"terminated": {"exitCode": 0, "reason": "Completed", "message": "{\"prompt\":\"p\"}",
                "finishedAt": "2026-08-20T12:07:41Z"}}}]}
        }))
        .unwrap();
        let text = pod.to_json().to_string();
        assert!(!text.contains("s3cr3t"));
        assert!(!text.contains("prompt"));
        assert!(!text.contains("last-applied"));
        assert!(!text.contains("managedFields"));
        assert!(!text.contains("team"));
        assert!(text.contains("agents.proompteng.ai/agent-run"));
        assert!(text.contains("\"kind\":\"Pod\""));
    }

    #[test]
    fn rejects_unknown_kinds_and_bad_fields_with_a_clear_error() {
        let err = Object::from_json(json!({"kind": "ConfigMap"})).unwrap_err();
        assert_eq!(err.to_string(), "unsupported kind \"ConfigMap\" (expected AgentRun, Job or Pod)");
        let err =
            Object::from_json(json!({"kind": "Job", "status": {"startTime": "not a time"}})).unwrap_err();
        assert!(err.to_string().starts_with("malformed object:"), "{err}");
    }
}

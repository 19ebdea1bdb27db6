//! Where observations come from: Kubernetes watches, the demo simulator, replay files.

pub mod demo;
pub mod kube;
pub mod lease;
pub mod replay;

use crate::{engine::Kind, engine::Ts, upstream::objects::Object};

/// One change a source saw, with the object as the cluster wrote it (projected).
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    Upsert(Object),
    Delete(Object),
    /// A (re)list of `kind` in `namespace` (all namespaces when `None`) starts; the objects follow as upserts.
    RelistBegin {
        kind: Kind,
        namespace: Option<String>,
    },
    /// The list is complete: every tracked object of that scope it did not contain vanished during the gap.
    RelistEnd {
        kind: Kind,
        namespace: Option<String>,
    },
}

/// A change and when it was observed.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub at: Ts,
    pub change: Change,
}

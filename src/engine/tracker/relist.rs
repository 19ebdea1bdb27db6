//! Relists in progress. A (re)list after `410 Gone`, a watch restart or start-up is a reset of one kind in one
//! namespace (or all): the objects it contains are applied as usual, and when it ends, every tracked object of
//! that kind and scope it did not contain vanished during the gap.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use super::super::model::Kind;

/// A relist's kind and scope (all namespaces when `None`).
type Scope = (Kind, Option<Arc<str>>);

#[derive(Debug, Default)]
pub(super) struct Relists {
    /// Per relist in progress: the uids it contained so far.
    open: HashMap<Scope, HashSet<Arc<str>>>,
}

impl Relists {
    pub fn begin(&mut self, kind: Kind, scope: Option<Arc<str>>) {
        self.open.insert((kind, scope), HashSet::new());
    }

    /// Whether a relist of `kind` whose scope holds `namespace` is open.
    pub fn open(&self, kind: Kind, namespace: &Arc<str>) -> bool {
        !self.open.is_empty()
            && self.open.keys().any(|(k, scope)| *k == kind && scope.as_ref().is_none_or(|s| s == namespace))
    }

    /// An object of `kind` in `namespace` was listed (or watched) while a relist of its scope is open.
    pub fn note(&mut self, kind: Kind, namespace: &Arc<str>, uid: Arc<str>) {
        for ((k, scope), seen) in self.open.iter_mut() {
            if *k == kind && scope.as_ref().is_none_or(|s| s == namespace) {
                seen.insert(uid.clone());
            }
        }
    }

    /// The relist ended: what it contained (`None` if it was not open).
    pub fn end(&mut self, kind: Kind, scope: &Option<Arc<str>>) -> Option<HashSet<Arc<str>>> {
        self.open.remove(&(kind, scope.clone()))
    }

    /// Jobs or Pods of `namespace` are being listed: more of a run's objects may still come.
    pub fn listing_jobs_or_pods(&self, namespace: &Arc<str>) -> bool {
        self.open.keys().any(|(kind, scope)| {
            matches!(kind, Kind::Job | Kind::Pod) && scope.as_ref().is_none_or(|s| s == namespace)
        })
    }
}

//! The controller's Lease, watched by name: the one object the sidecar reads besides AgentRuns, Jobs and
//! Pods (`get`/`list`/`watch` on `leases` with `resourceNames`, which a `metadata.name` field selector
//! satisfies).

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};
use tokio::sync::mpsc;
use tracing::warn;

use crate::{leader::LeaseState, upstream::lease::holder};

/// Sends the Lease's state after each list and on every change, until `tx` closes.
pub fn spawn_lease_watch(
    client: Client,
    namespace: &str,
    name: &str,
    tx: mpsc::Sender<LeaseState>,
) -> tokio::task::JoinHandle<()> {
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let (namespace, name) = (namespace.to_string(), name.to_string());
    tokio::spawn(async move {
        let mut events = watcher(api, config).default_backoff().boxed();
        let mut listed: Option<LeaseState> = None;
        while let Some(event) = events.next().await {
            let state = match event {
                Ok(watcher::Event::Init) => {
                    listed = Some(LeaseState::Absent);
                    None
                }
                Ok(watcher::Event::InitApply(lease)) => {
                    listed = Some(LeaseState::Held(holder(&lease)));
                    None
                }
                Ok(watcher::Event::InitDone) => listed.take(),
                Ok(watcher::Event::Apply(lease)) => Some(LeaseState::Held(holder(&lease))),
                Ok(watcher::Event::Delete(_)) => Some(LeaseState::Absent),
                Err(e) => {
                    warn!(%namespace, lease = %name, error = %e, "watching the controller's Lease");
                    None
                }
            };
            if let Some(state) = state
                && tx.send(state).await.is_err()
            {
                return;
            }
        }
    })
}

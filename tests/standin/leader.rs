//! Leader election the way the agents controller does it (proompteng/lab `services/agents/src/server/`:
//! `leader-election.ts`, `leader-election-config.ts`, `runtime-env.ts`, and `kube-types.ts` for how the Lease
//! is written). Reproduced, quirks included:
//!
//! - settings: `AGENTS_LEADER_ELECTION_ENABLED` (`1 true yes y on enabled` / `0 false no n off disabled`,
//!   anything else the default, true); `_LEASE_NAME` (default `agents-controller-leader`); `_LEASE_NAMESPACE`,
//!   else `AGENTS_POD_NAMESPACE`, else `POD_NAMESPACE`, else `default`; `_LEASE_DURATION_SECONDS`,
//!   `_RENEW_DEADLINE_SECONDS`, `_RETRY_PERIOD_SECONDS` (30, 20, 5) read with `parseInt`, below 1 → the default;
//!   retry ≥ renew deadline resets both to 20/5, renew deadline ≥ duration resets all three to 30/20/5. Values
//!   are trimmed and blank counts as unset;
//! - election is required only outside a test environment (`NODE_ENV=test`, `VITEST*` set) when a controller
//!   workload is on (`AGENTS_CONTROLLER_ENABLED`, `AGENTS_ORCHESTRATION_CONTROLLER_ENABLED`,
//!   `AGENTS_SUPPORTING_CONTROLLER_ENABLED`, `AGENTS_PRIMITIVES_RECONCILER`, each true by default); disabled or
//!   not required → always the leader, no Lease;
//! - identity `<HOSTNAME>_<AGENTS_POD_UID>` (the chart sets `AGENTS_POD_UID` from `metadata.uid`; Kubernetes
//!   sets `HOSTNAME` to the pod name); no uid → `<HOSTNAME>_<random uuid>`; no `HOSTNAME` → `unknown_<uuid>`;
//! - a tick every retry period: read the Lease; none → create one (holder self, `acquireTime` = `renewTime`
//!   = now, `leaseTransitions` 0); acquire or renew when the holder is empty, self, or the Lease is expired
//!   (no `renewTime`, or older than *our* duration + 2 s: the Lease's own `leaseDurationSeconds` is not read);
//!   else follower. Acquire/renew keeps `acquireTime` when set (so it is the first holder's), sets
//!   `renewTime`, our duration, and counts a transition only when taking over from another non-empty holder
//!   (a takeover after a release is not counted);
//! - every write goes through upstream's `apply`: read the Lease's *current* `resourceVersion`, then replace
//!   with it (create when absent). So the replace conflicts only with a write between that read and the
//!   replace, not with one since the tick's read: two replicas that both find an expired Lease can both
//!   succeed, the later one holding it; the other finds out at its next tick;
//! - a `409 Conflict` → follower without an error; any other failure → follower with it, at once. The renew
//!   deadline check after each tick is kept, but as upstream's it never fires: a tick that leaves us leader has
//!   just renewed (the deadline is not a grace period for failed renewals);
//! - SIGTERM/SIGINT: stop ticking, follower (controllers stop), then best effort: if we hold the Lease,
//!   replace it with `holderIdentity: ""` and `renewTime` = now, so another replica takes it at its next tick
//!   instead of after expiry.

use std::time::Duration;

use agentrun_lifecycle_exporter::upstream::lease::{self, boolean as parse_bool, holder, normalized};

use jiff::Timestamp;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{
    Api, Client,
    api::{PostParams, ResourceExt},
};
use tokio::sync::watch;
use tracing::{debug, info, warn};

const DEFAULT_DURATION: i64 = 30;
const DEFAULT_RENEW_DEADLINE: i64 = 20;
const DEFAULT_RETRY_PERIOD: i64 = 5;
const EXPIRY_SAFETY_MARGIN_MS: i64 = 2_000;

#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub enabled: bool,
    pub required: bool,
    pub lease_name: String,
    pub lease_namespace: String,
    pub lease_duration_seconds: i64,
    pub renew_deadline_seconds: i64,
    pub retry_period_seconds: i64,
    pub identity: String,
}

/// `parsePositiveIntEnv`: `Number.parseInt(v, 10)`, below 1 or not a number → the fallback.
fn parse_positive_int(value: Option<String>, fallback: i64) -> i64 {
    let Some(v) = value else { return fallback };
    let (neg, rest) = match v.as_bytes().first() {
        Some(b'-') => (true, &v[1..]),
        Some(b'+') => (false, &v[1..]),
        _ => (false, v.as_str()),
    };
    let digits = &rest[..rest.bytes().take_while(u8::is_ascii_digit).count()];
    match digits.parse::<i64>() {
        Ok(n) if !neg && n >= 1 => n,
        _ => fallback,
    }
}

fn random_uuid() -> String {
    // The kernel's generator; a process has no other source of randomness here without a new dependency.
    std::fs::read_to_string("/proc/sys/kernel/random/uuid").map(|s| s.trim().to_string()).unwrap_or_else(
        |_| {
            let nanos =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            format!("{:x}-{:x}", nanos.as_nanos(), std::process::id())
        },
    )
}

impl Settings {
    /// `resolveLeaderElectionSettings` plus `resolveIdentity`, from an environment lookup.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Settings {
        let mut duration = parse_positive_int(
            normalized(&env, "AGENTS_LEADER_ELECTION_LEASE_DURATION_SECONDS"),
            DEFAULT_DURATION,
        );
        let mut renew = parse_positive_int(
            normalized(&env, "AGENTS_LEADER_ELECTION_RENEW_DEADLINE_SECONDS"),
            DEFAULT_RENEW_DEADLINE,
        );
        let mut retry = parse_positive_int(
            normalized(&env, "AGENTS_LEADER_ELECTION_RETRY_PERIOD_SECONDS"),
            DEFAULT_RETRY_PERIOD,
        );
        if retry >= renew {
            (renew, retry) = (DEFAULT_RENEW_DEADLINE, DEFAULT_RETRY_PERIOD);
        }
        if renew >= duration {
            (duration, renew, retry) = (DEFAULT_DURATION, DEFAULT_RENEW_DEADLINE, DEFAULT_RETRY_PERIOD);
        }
        // `isRuntimeTestEnv` reads these raw: any non-empty value counts.
        let set = |k: &str| env(k).is_some_and(|v| !v.is_empty());
        let test_env = env("NODE_ENV").as_deref() == Some("test")
            || set("VITEST")
            || set("VITEST_POOL_ID")
            || set("VITEST_WORKER_ID");
        let workload = [
            "AGENTS_CONTROLLER_ENABLED",
            "AGENTS_ORCHESTRATION_CONTROLLER_ENABLED",
            "AGENTS_SUPPORTING_CONTROLLER_ENABLED",
            "AGENTS_PRIMITIVES_RECONCILER",
        ]
        .iter()
        .any(|k| parse_bool(normalized(&env, k), true));
        // Where and under which identity: read as the exporter's sidecar reads them, so the two agree.
        let election = lease::leader_election(&|k| match k {
            "AGENTS_LEADER_ELECTION_ENABLED" => None,
            _ => env(k),
        })
        .expect("enabled when the variable is unset");
        let identity = election.identity.unwrap_or_else(|| {
            format!("{}_{}", normalized(&env, "HOSTNAME").unwrap_or_else(|| "unknown".into()), random_uuid())
        });
        Settings {
            enabled: parse_bool(normalized(&env, "AGENTS_LEADER_ELECTION_ENABLED"), true),
            required: !test_env && workload,
            lease_name: election.name,
            lease_namespace: election.namespace,
            lease_duration_seconds: duration,
            renew_deadline_seconds: renew,
            retry_period_seconds: retry,
            identity,
        }
    }

    /// Whether this replica must hold the Lease to reconcile (else it always leads).
    pub fn elects(&self) -> bool {
        self.enabled && self.required
    }
}

fn micro(t: Timestamp) -> MicroTime {
    MicroTime(t)
}

/// `isLeaseExpired`: no renew time, or older than our duration plus the safety margin.
pub fn expired(lease: &Lease, now: Timestamp, duration_seconds: i64) -> bool {
    match lease.spec.as_ref().and_then(|s| s.renew_time.as_ref()) {
        None => true,
        Some(renew) => {
            now.as_millisecond() - renew.0.as_millisecond()
                > duration_seconds * 1000 + EXPIRY_SAFETY_MARGIN_MS
        }
    }
}

pub struct Election {
    api: Api<Lease>,
    settings: Settings,
    is_leader: bool,
    last_success: Option<Timestamp>,
}

impl Election {
    pub fn new(client: Client, settings: Settings) -> Election {
        Election {
            api: Api::namespaced(client, &settings.lease_namespace),
            settings,
            is_leader: false,
            last_success: None,
        }
    }

    fn set_leader(&mut self, leader: bool, error: Option<&str>) {
        if self.is_leader != leader {
            let s = &self.settings;
            let suffix = error.map(|e| format!(" ({e})")).unwrap_or_default();
            info!(
                "leader election transition: {} lease={}/{} identity={}{suffix}",
                if leader { "leader" } else { "follower" },
                s.lease_namespace,
                s.lease_name,
                s.identity
            );
        } else if let Some(e) = error {
            warn!("leader election: {e}");
        }
        self.is_leader = leader;
    }

    /// Upstream's `apply`: replace with the current `resourceVersion` read just now, or create.
    async fn apply(&self, mut lease: Lease) -> Result<Lease, kube::Error> {
        let name = self.settings.lease_name.clone();
        match self.api.get_opt(&name).await? {
            Some(current) => {
                lease.metadata.resource_version = current.resource_version();
                self.api.replace(&name, &PostParams::default(), &lease).await
            }
            None => self.api.create(&PostParams::default(), &lease).await,
        }
    }

    fn new_lease(&self, now: Timestamp) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(self.settings.lease_name.clone()),
                namespace: Some(self.settings.lease_namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.settings.identity.clone()),
                lease_duration_seconds: Some(self.settings.lease_duration_seconds as i32),
                acquire_time: Some(micro(now)),
                renew_time: Some(micro(now)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        }
    }

    /// `updateLeaseForAcquireOrRenew`.
    fn acquired(&self, mut lease: Lease, now: Timestamp) -> Lease {
        let previous = holder(&lease);
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let transitions = spec.lease_transitions.unwrap_or(0).max(0);
        spec.lease_transitions = Some(if previous.is_empty() || previous == self.settings.identity {
            transitions
        } else {
            transitions + 1
        });
        spec.holder_identity = Some(self.settings.identity.clone());
        spec.lease_duration_seconds = Some(self.settings.lease_duration_seconds as i32);
        spec.renew_time = Some(micro(now));
        if spec.acquire_time.is_none() {
            spec.acquire_time = Some(micro(now));
        }
        lease
    }

    /// One tick of the loop; returns whether we lead after it.
    pub async fn tick(&mut self) -> bool {
        let now = Timestamp::now();
        let outcome: Result<(bool, Option<String>), kube::Error> = async {
            let mut lease = self.api.get_opt(&self.settings.lease_name).await?;
            if lease.is_none() {
                lease = match self.apply(self.new_lease(now)).await {
                    Ok(l) => Some(l),
                    Err(kube::Error::Api(e)) if e.reason == "AlreadyExists" => {
                        self.api.get_opt(&self.settings.lease_name).await?
                    }
                    Err(e) => return Err(e),
                };
            }
            let Some(lease) = lease else {
                return Ok((false, Some("lease missing after read/create".to_string())));
            };
            let held_by = holder(&lease);
            let can_acquire = held_by.is_empty()
                || held_by == self.settings.identity
                || expired(&lease, now, self.settings.lease_duration_seconds);
            if !can_acquire {
                return Ok((false, None));
            }
            self.apply(self.acquired(lease, now)).await?;
            self.last_success = Some(now);
            Ok((true, None))
        }
        .await;
        match outcome {
            Ok((leader, error)) => self.set_leader(leader, error.as_deref()),
            Err(kube::Error::Api(e)) if e.code == 409 && e.reason == "Conflict" => {
                self.set_leader(false, None)
            }
            Err(e) => self.set_leader(false, Some(&e.to_string())),
        }
        debug!(leader = self.is_leader, "lease tick");
        let deadline_ms = self.settings.renew_deadline_seconds * 1000;
        if self.is_leader
            && let Some(last) = self.last_success
            && now.as_millisecond() - last.as_millisecond() > deadline_ms
        {
            let why = format!("renew deadline exceeded ({}s)", self.settings.renew_deadline_seconds);
            self.set_leader(false, Some(&why));
        }
        self.is_leader
    }

    /// Ticks every retry period, publishing whether we lead; runs until dropped.
    pub async fn run(&mut self, leading: watch::Sender<bool>) {
        loop {
            let leader = self.tick().await;
            leading.send_if_modified(|l| std::mem::replace(l, leader) != leader);
            tokio::time::sleep(Duration::from_secs(self.settings.retry_period_seconds as u64)).await;
        }
    }

    /// On SIGTERM/SIGINT, after the controllers stopped: `tryRelease`, best effort.
    pub async fn release(&mut self, why: &str) {
        self.set_leader(false, Some(why));
        let Ok(Some(mut lease)) = self.api.get_opt(&self.settings.lease_name).await else { return };
        if holder(&lease) != self.settings.identity {
            return;
        }
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = Some(String::new());
        spec.lease_duration_seconds = Some(self.settings.lease_duration_seconds as i32);
        spec.renew_time = Some(micro(Timestamp::now()));
        match self.apply(lease).await {
            Ok(_) => info!("released lease {}/{}", self.settings.lease_namespace, self.settings.lease_name),
            Err(e) => warn!("could not release the lease: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        let env: std::collections::BTreeMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_env(|k| env.get(k).cloned())
    }

    #[test]
    fn defaults_identity_and_validation_as_upstream() {
        let s = settings(&[
            ("HOSTNAME", "agents-controllers-0"),
            ("AGENTS_POD_UID", "u1"),
            ("POD_NAMESPACE", "a"),
        ]);
        assert_eq!(s.identity, "agents-controllers-0_u1");
        assert_eq!((s.lease_name.as_str(), s.lease_namespace.as_str()), ("agents-controller-leader", "a"));
        assert_eq!((s.lease_duration_seconds, s.renew_deadline_seconds, s.retry_period_seconds), (30, 20, 5));
        assert!(s.elects());
        // parseInt reads a prefix; retry ≥ renew resets both; renew ≥ duration resets all three.
        let s = settings(&[("AGENTS_LEADER_ELECTION_RETRY_PERIOD_SECONDS", "2s")]);
        assert_eq!(s.retry_period_seconds, 2);
        let s = settings(&[("AGENTS_LEADER_ELECTION_RETRY_PERIOD_SECONDS", "25")]);
        assert_eq!((s.renew_deadline_seconds, s.retry_period_seconds), (20, 5));
        let s = settings(&[
            ("AGENTS_LEADER_ELECTION_LEASE_DURATION_SECONDS", "10"),
            ("AGENTS_LEADER_ELECTION_RETRY_PERIOD_SECONDS", "1"),
        ]);
        assert_eq!((s.lease_duration_seconds, s.renew_deadline_seconds, s.retry_period_seconds), (30, 20, 5));
        let s = settings(&[("AGENTS_LEADER_ELECTION_LEASE_DURATION_SECONDS", "0")]);
        assert_eq!(s.lease_duration_seconds, 30);
        // No uid: a random suffix; the lease namespace from its own variable first.
        let s = settings(&[("HOSTNAME", "p"), ("AGENTS_LEADER_ELECTION_LEASE_NAMESPACE", " x ")]);
        assert!(s.identity.starts_with("p_") && s.identity.len() > 10, "{}", s.identity);
        assert_eq!(s.lease_namespace, "x");
        assert!(!settings(&[("AGENTS_LEADER_ELECTION_ENABLED", "off")]).elects());
        assert!(settings(&[("AGENTS_LEADER_ELECTION_ENABLED", "maybe")]).elects());
        assert!(!settings(&[("NODE_ENV", "test")]).elects());
        let all_off = [
            ("AGENTS_CONTROLLER_ENABLED", "0"),
            ("AGENTS_ORCHESTRATION_CONTROLLER_ENABLED", "0"),
            ("AGENTS_SUPPORTING_CONTROLLER_ENABLED", "0"),
            ("AGENTS_PRIMITIVES_RECONCILER", "0"),
        ];
        assert!(!settings(&all_off).elects());
    }

    #[test]
    fn expiry_has_a_two_second_margin_and_ignores_the_lease_duration() {
        let renew = Timestamp::from_second(1_000).unwrap();
        let lease = Lease {
            spec: Some(LeaseSpec {
                renew_time: Some(MicroTime(renew)),
                lease_duration_seconds: Some(1),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        };
        assert!(!expired(&lease, Timestamp::from_second(1_032).unwrap(), 30));
        assert!(expired(&lease, Timestamp::from_millisecond(1_032_001).unwrap(), 30));
        assert!(expired(&Lease::default(), renew, 30));
    }
}

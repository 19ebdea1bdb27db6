//! How the controller elects its leader (`services/agents/src/server/leader-election.ts`,
//! `leader-election-config.ts`, `runtime-env.ts`): the sidecar reads the same environment (the chart gives it
//! the controller's) to find the Lease and the identity the controller of its own pod holds it under.

use k8s_openapi::api::coordination::v1::Lease;

/// The Lease the controller elects its leader on, and this pod's holder identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderElection {
    pub namespace: String,
    pub name: String,
    /// `<pod name>_<pod uid>`; `None` when the controller would hold the Lease under a random identity (no
    /// pod uid in its environment), which the sidecar cannot know.
    pub identity: Option<String>,
}

pub const DEFAULT_LEASE_NAME: &str = "agents-controller-leader";

/// `readAgentsEnv` (`normalizeEnvValue`): trimmed, empty is unset.
pub fn normalized(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    env(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// `parseBooleanEnv`: the words upstream accepts, anything else is the fallback.
pub fn boolean(value: Option<String>, fallback: bool) -> bool {
    match value.map(|v| v.to_lowercase()).as_deref() {
        Some("1" | "true" | "yes" | "y" | "on" | "enabled") => true,
        Some("0" | "false" | "no" | "n" | "off" | "disabled") => false,
        _ => fallback,
    }
}

/// The controller's leader election as its environment configures it; `None` when it is off (the controller
/// then always leads, and so does its sidecar).
pub fn leader_election(env: &dyn Fn(&str) -> Option<String>) -> Option<LeaderElection> {
    if !boolean(normalized(env, "AGENTS_LEADER_ELECTION_ENABLED"), true) {
        return None;
    }
    let pod_namespace = normalized(env, "AGENTS_POD_NAMESPACE")
        .or_else(|| normalized(env, "POD_NAMESPACE"))
        .unwrap_or_else(|| "default".into());
    let pod_name = normalized(env, "HOSTNAME").unwrap_or_else(|| "unknown".into());
    Some(LeaderElection {
        namespace: normalized(env, "AGENTS_LEADER_ELECTION_LEASE_NAMESPACE").unwrap_or(pod_namespace),
        name: normalized(env, "AGENTS_LEADER_ELECTION_LEASE_NAME")
            .unwrap_or_else(|| DEFAULT_LEASE_NAME.into()),
        identity: normalized(env, "AGENTS_POD_UID").map(|uid| format!("{pod_name}_{uid}")),
    })
}

/// The holder identity, trimmed; empty when the Lease was released.
pub fn holder(lease: &Lease) -> String {
    lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()).unwrap_or("").trim().to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn election(vars: &[(&str, &str)]) -> Option<LeaderElection> {
        let vars: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        leader_election(&move |name| vars.get(name).cloned())
    }

    #[test]
    fn identity_is_hostname_and_pod_uid_and_the_lease_is_in_the_pod_namespace() {
        let e = election(&[
            ("HOSTNAME", "agents-7d9-abc"),
            ("AGENTS_POD_UID", " 1234 "),
            ("AGENTS_POD_NAMESPACE", "agents"),
        ])
        .unwrap();
        assert_eq!(
            e,
            LeaderElection {
                namespace: "agents".into(),
                name: "agents-controller-leader".into(),
                identity: Some("agents-7d9-abc_1234".into()),
            }
        );
    }

    #[test]
    fn overrides_and_fallbacks_as_upstream_reads_them() {
        let e = election(&[
            ("AGENTS_LEADER_ELECTION_LEASE_NAME", "other"),
            ("AGENTS_LEADER_ELECTION_LEASE_NAMESPACE", "leases"),
            ("POD_NAMESPACE", "ignored"),
            ("AGENTS_POD_UID", "u"),
        ])
        .unwrap();
        assert_eq!((e.namespace.as_str(), e.name.as_str()), ("leases", "other"));
        assert_eq!(e.identity.as_deref(), Some("unknown_u"), "no HOSTNAME: upstream says `unknown`");
        assert_eq!(election(&[("POD_NAMESPACE", "p")]).unwrap().namespace, "p");
        assert_eq!(election(&[]).unwrap().namespace, "default");
        assert_eq!(election(&[("AGENTS_POD_UID", "  ")]).unwrap().identity, None, "a random identity");
    }

    #[test]
    fn enabled_reads_upstream_boolean_words_and_falls_back_to_on() {
        for off in ["false", "0", "No", " off ", "disabled", "n"] {
            assert_eq!(election(&[("AGENTS_LEADER_ELECTION_ENABLED", off)]), None, "{off}");
        }
        for on in ["true", "yes", "", "maybe", "2"] {
            assert!(election(&[("AGENTS_LEADER_ELECTION_ENABLED", on)]).is_some(), "{on}");
        }
    }
}

//! Following the controller's leader. With two controller replicas there are two sidecars; only the one whose
//! pod holds the controller's Lease exports spans and counts lifecycle events. The other computes the same
//! facts from its own watches and holds back those the leader may not have sent, so that when the Lease
//! moves to its pod it sends them: from the last moment another holder was seen alive (its last renewal, or
//! its release) on, and the spans (not the counts) of a short overlap before it. Pure: lease observations and
//! facts in, facts to dispatch out.

use std::collections::VecDeque;

use crate::engine::{Emitted, Fact, Ts};

/// Facts held at most while nobody leads (a Lease released and not taken): past it the oldest go.
pub const MAX_HELD: usize = 200_000;
/// The two sidecars see the Lease and the objects through separate watches, so around a handover one may
/// emit a fact just before it sees the Lease change and the other just after. The spans of this much before
/// the handover are sent again (identical, ids included), not counted again.
pub const OVERLAP_MS: i64 = 10_000;

/// The controller's Lease as last observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// The Lease was not listed yet.
    Unknown,
    /// There is no Lease (one replica, or leader election off): this sidecar leads.
    Absent,
    /// The Lease exists; its holder identity (empty when released).
    Held(String),
}

#[derive(Debug)]
pub struct Follower {
    identity: String,
    lease: LeaseState,
    /// Facts observed from this time on may not have been sent by another leader.
    unsent_since: Ts,
    held: VecDeque<(Ts, Emitted)>,
    /// Held facts dropped over [`MAX_HELD`].
    dropped: u64,
    /// The last identity seen holding the Lease.
    last_holder: Option<String>,
    /// After the Lease went to a third pod: until then, spans are passed on as well (see [`Follower::observe`]).
    handing_on_until: Option<Ts>,
}

impl Follower {
    /// `identity`: the controller's holder identity for this pod (`<pod name>_<pod uid>`).
    pub fn new(identity: String, started: Ts) -> Self {
        Follower {
            identity,
            lease: LeaseState::Unknown,
            unsent_since: started,
            held: VecDeque::new(),
            dropped: 0,
            last_holder: None,
            handing_on_until: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn leads(&self) -> bool {
        match &self.lease {
            LeaseState::Unknown => false,
            LeaseState::Absent => true,
            LeaseState::Held(holder) => *holder == self.identity,
        }
    }

    /// This pod holds the Lease (and will hand it over when it stops).
    pub fn holds(&self) -> bool {
        matches!(&self.lease, LeaseState::Held(h) if *h == self.identity)
    }

    /// Facts held back, and dropped because too many were.
    pub fn held(&self) -> (usize, u64) {
        (self.held.len(), self.dropped)
    }

    /// The facts to dispatch now: all of them when leading, else only those that count nothing (a
    /// namespace's first series, created at zero on every replica).
    pub fn gate(&mut self, now: Ts, facts: Vec<Emitted>) -> Vec<Emitted> {
        if self.leads() {
            return facts;
        }
        let mut pass = Vec::new();
        let handing_on = self.handing_on_until.is_some_and(|until| now < until);
        for e in facts {
            if matches!(e.fact, Fact::SeriesSeen { .. }) {
                pass.push(e);
                continue;
            }
            if handing_on {
                pass.push(Emitted { counted: false, ..e });
                continue;
            }
            if self.held.len() >= MAX_HELD {
                self.held.pop_front();
                self.dropped += 1;
            }
            self.held.push_back((now, e));
        }
        pass
    }

    /// A new observation of the Lease. Returns the held facts to send when this sidecar takes over.
    pub fn observe(&mut self, now: Ts, lease: LeaseState) -> Vec<Emitted> {
        let led = self.leads();
        let lease = match lease {
            LeaseState::Held(h) => LeaseState::Held(h.trim().to_string()),
            other => other,
        };
        // Up to now, this sidecar was sending when it led; another holder was alive and sending when it
        // renews or releases the Lease (an update by someone else than this pod). A takeover by this pod
        // proves nothing about the old holder, which may have died at its last renewal.
        let prev_other_holder =
            matches!(&self.lease, LeaseState::Held(h) if !h.is_empty() && *h != self.identity);
        let others_update = match &lease {
            LeaseState::Held(h) => *h != self.identity && (!h.is_empty() || prev_other_holder),
            _ => false,
        };
        // The Lease went to another pod than the one that held it: that pod may have started after what this
        // one holds (the pod that replaces a deleted leader), so this one sends the spans of it, identical to any
        // copy the new holder sends; the counts are the new holder's.
        let mut handed_on = Vec::new();
        if let LeaseState::Held(h) = &lease
            && !led
            && !h.is_empty()
            && *h != self.identity
            && self.last_holder.as_ref().is_some_and(|last| last != h)
        {
            let since = self.unsent_since.add_millis(-OVERLAP_MS);
            handed_on = self
                .held
                .iter()
                .filter(|(at, _)| *at >= since)
                .map(|(_, e)| Emitted { counted: false, ..e.clone() })
                .collect();
            // What this pod sees next may be of objects the new holder never saw (a Job deleted as that pod
            // listed): their spans go too, for the overlap.
            self.handing_on_until = Some(now.add_millis(OVERLAP_MS));
        }
        if let LeaseState::Held(h) = &lease
            && !h.is_empty()
        {
            self.last_holder = Some(h.clone());
        }
        if led || others_update {
            self.unsent_since = self.unsent_since.max(now);
        }
        self.lease = lease;
        let since = self.unsent_since;
        if self.leads() && !led {
            let held = std::mem::take(&mut self.held);
            return held
                .into_iter()
                .filter(|(at, _)| *at >= since.add_millis(-OVERLAP_MS))
                .map(|(at, e)| if at < since { Emitted { counted: false, ..e } } else { e })
                .collect();
        }
        // Facts another holder has sent are not needed any more.
        while self.held.front().is_some_and(|(at, _)| *at < since.add_millis(-OVERLAP_MS)) {
            self.held.pop_front();
        }
        handed_on
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::facts::{RunInfo, Runtime};

    const US: &str = "agents-b_uid-b";
    const THEM: &str = "agents-a_uid-a";

    fn fact(n: u32) -> Emitted {
        let run = Arc::new(RunInfo {
            namespace: "agents".into(),
            name: format!("r{n}").into(),
            uid: format!("u{n}").into(),
            runtime: Runtime::Job,
            agent: None,
            provider: None,
        });
        Emitted { fact: Fact::RunComplete { run }, counted: true, exported: true }
    }

    fn names(facts: &[Emitted]) -> Vec<String> {
        facts.iter().filter_map(|e| e.fact.run()).map(|r| r.name.to_string()).collect()
    }

    fn held(s: &str) -> LeaseState {
        LeaseState::Held(s.into())
    }

    fn sec(s: i64) -> Ts {
        Ts(s * 1000)
    }

    fn counted(facts: &[Emitted]) -> Vec<bool> {
        facts.iter().map(|e| e.counted).collect()
    }

    #[test]
    fn the_holder_sends_at_once_and_the_standby_holds_back() {
        let mut us = Follower::new(US.into(), sec(0));
        assert!(us.observe(sec(1), held(US)).is_empty());
        assert_eq!(names(&us.gate(sec(2), vec![fact(1)])), ["r1"]);
        let mut them = Follower::new(THEM.into(), sec(0));
        them.observe(sec(1), held(US));
        assert!(them.gate(sec(2), vec![fact(1)]).is_empty());
        assert_eq!(them.held().0, 1);
        // The holder's renewals show it was alive and sending; what came before the overlap is let go.
        them.observe(sec(5), held(US));
        assert_eq!(them.held().0, 1);
        them.observe(sec(100), held(US));
        assert_eq!(them.held().0, 0);
    }

    #[test]
    fn after_a_release_the_next_holder_sends_what_came_since_the_release() {
        let mut us = Follower::new(US.into(), sec(0));
        us.observe(sec(100), held(THEM));
        us.gate(sec(150), vec![fact(1)]);
        us.gate(sec(195), vec![fact(2)]);
        us.observe(sec(200), held(""));
        us.gate(sec(250), vec![fact(3)]);
        us.observe(sec(300), held(""));
        us.gate(sec(350), vec![fact(4)]);
        assert!(!us.leads());
        let sent = us.observe(sec(400), held(US));
        assert_eq!(names(&sent), ["r2", "r3", "r4"]);
        assert_eq!(counted(&sent), [false, true, true], "the overlap before the release: spans only");
        assert!(us.leads());
        assert_eq!(names(&us.gate(sec(450), vec![fact(5)])), ["r5"]);
    }

    #[test]
    fn after_an_expiry_the_next_holder_sends_what_came_since_the_last_renewal() {
        let mut us = Follower::new(US.into(), sec(0));
        us.observe(sec(100), held(THEM));
        us.gate(sec(150), vec![fact(1)]);
        us.observe(sec(200), held(THEM));
        // The holder died at about 201 s; its Lease expires and this pod takes it.
        us.gate(sec(210), vec![fact(2)]);
        us.gate(sec(230), vec![fact(3)]);
        let sent = us.observe(sec(240), held(US));
        assert_eq!(names(&sent), ["r2", "r3"]);
        assert_eq!(counted(&sent), [true, true]);
    }

    #[test]
    fn without_a_lease_the_sidecar_leads_and_sends_what_it_held_before_it_knew() {
        let mut us = Follower::new(US.into(), sec(0));
        assert!(us.gate(sec(1), vec![fact(1)]).is_empty(), "the Lease is not known yet");
        assert_eq!(names(&us.observe(sec(2), LeaseState::Absent)), ["r1"]);
        assert_eq!(names(&us.gate(sec(3), vec![fact(2)])), ["r2"]);
    }

    #[test]
    fn a_leader_that_loses_the_lease_holds_back_from_then_on() {
        let mut us = Follower::new(US.into(), sec(0));
        us.observe(sec(1), held(US));
        us.observe(sec(100), held(THEM));
        assert!(us.gate(sec(200), vec![fact(1)]).is_empty());
        us.observe(sec(300), held(""));
        us.gate(sec(400), vec![fact(2)]);
        assert_eq!(names(&us.observe(sec(500), held(US))), ["r2"]);
    }

    #[test]
    fn when_the_lease_goes_to_a_third_pod_the_standby_sends_the_spans_of_the_gap() {
        let mut us = Follower::new(US.into(), sec(0));
        us.observe(sec(100), held(THEM));
        us.gate(sec(150), vec![fact(1)]);
        us.observe(sec(200), held(""));
        us.gate(sec(205), vec![fact(2)]);
        // The pod that replaced the old leader takes the Lease; it started after fact 2.
        let sent = us.observe(sec(210), held("agents-c_uid-c"));
        assert_eq!(names(&sent), ["r2"]);
        assert_eq!(counted(&sent), [false], "spans only: the counts are the new holder's");
        assert!(!us.leads());
        assert!(us.observe(sec(215), held("agents-c_uid-c")).is_empty(), "a renewal sends nothing");
        // What it sees in the overlap after the handover goes too (its object may have gone before the new
        // holder listed), spans only; after the overlap, nothing.
        let passed = us.gate(sec(216), vec![fact(3)]);
        assert_eq!((names(&passed), counted(&passed)), (vec!["r3".to_string()], vec![false]));
        assert!(us.gate(sec(221), vec![fact(4)]).is_empty());
    }

    #[test]
    fn first_series_pass_on_a_standby_and_held_facts_are_bounded() {
        let mut us = Follower::new(US.into(), Ts(0));
        us.observe(Ts(1), held(THEM));
        us.observe(Ts(2), held(""));
        let series = Emitted {
            fact: Fact::SeriesSeen { namespace: "agents".into(), runtime: Runtime::Job },
            counted: true,
            exported: false,
        };
        assert_eq!(us.gate(Ts(2), vec![series]).len(), 1);
        us.gate(Ts(3), (0..MAX_HELD as u32 + 5).map(fact).collect());
        assert_eq!(us.held(), (MAX_HELD, 5));
        let sent = us.observe(Ts(4), held(US));
        assert_eq!(sent.len(), MAX_HELD);
        assert_eq!(names(&sent[..1]), ["r5"], "the oldest went first");
    }

    #[test]
    fn holder_identities_are_compared_trimmed_as_upstream_does() {
        let mut us = Follower::new(US.into(), Ts(0));
        us.observe(Ts(1), held(&format!(" {US} ")));
        assert!(us.leads());
    }
}

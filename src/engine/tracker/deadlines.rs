//! The deadline queue: runs to evaluate again at a time (a verdict waiting to settle, a submit waiting for its
//! status write). The tracker wakes only the runs whose deadline fell due, nothing else.

use std::{collections::BTreeMap, sync::Arc};

use super::super::time::Ts;

/// A run, by namespace and uid.
pub(super) type RunRef = (Arc<str>, Arc<str>);

#[derive(Debug, Default)]
pub(super) struct Deadlines {
    queue: BTreeMap<Ts, Vec<RunRef>>,
}

impl Deadlines {
    pub fn schedule(&mut self, at: Ts, run: &RunRef) {
        let list = self.queue.entry(at).or_default();
        if !list.contains(run) {
            list.push(run.clone());
        }
    }

    /// Takes the earliest deadline at or before `now`, if any.
    pub fn pop_due(&mut self, now: Ts) -> Option<Vec<RunRef>> {
        let entry = self.queue.first_entry()?;
        if *entry.key() > now {
            return None;
        }
        Some(entry.remove())
    }

    /// The earliest deadline.
    pub fn first(&self) -> Option<Ts> {
        self.queue.keys().next().copied()
    }

    /// The last deadline, to settle everything at the end of a replay.
    pub fn last(&self) -> Option<Ts> {
        self.queue.keys().next_back().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_due_deadlines_in_order_once_each() {
        let mut d = Deadlines::default();
        let a: RunRef = ("ns".into(), "a".into());
        let b: RunRef = ("ns".into(), "b".into());
        d.schedule(Ts(20), &a);
        d.schedule(Ts(10), &b);
        d.schedule(Ts(10), &b);
        assert_eq!(d.last(), Some(Ts(20)));
        assert_eq!(d.first(), Some(Ts(10)));
        assert_eq!(d.pop_due(Ts(5)), None);
        assert_eq!(d.pop_due(Ts(15)), Some(vec![b]));
        assert_eq!(d.pop_due(Ts(15)), None);
        assert_eq!(d.pop_due(Ts(20)), Some(vec![a]));
    }
}

//! A list that keeps its first element inline: most runs have one Job, a Job one Pod, and a run one entry of
//! each per-Job record, so the common case costs no separate allocation.

use std::ops::{Deref, DerefMut};

#[derive(Clone, Debug, Default)]
pub(super) enum Small<T> {
    #[default]
    Zero,
    One(T),
    /// Two or more, grown one element at a time.
    Many(Vec<T>),
}

impl<T> Small<T> {
    pub fn push(&mut self, x: T) {
        *self = match std::mem::take(self) {
            Small::Zero => Small::One(x),
            Small::One(a) => Small::Many(vec![a, x]),
            Small::Many(mut v) => {
                if v.len() == v.capacity() {
                    v.reserve_exact(1);
                }
                v.push(x);
                Small::Many(v)
            }
        };
    }
}

impl<T> From<Vec<T>> for Small<T> {
    fn from(mut v: Vec<T>) -> Self {
        match v.len() {
            0 => Small::Zero,
            1 => Small::One(v.pop().expect("one element")),
            _ => {
                v.shrink_to_fit();
                Small::Many(v)
            }
        }
    }
}

impl<T> Deref for Small<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match self {
            Small::Zero => &[],
            Small::One(x) => std::slice::from_ref(x),
            Small::Many(v) => v,
        }
    }
}

impl<T> DerefMut for Small<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match self {
            Small::Zero => &mut [],
            Small::One(x) => std::slice::from_mut(x),
            Small::Many(v) => v,
        }
    }
}

impl<'a, T> IntoIterator for &'a Small<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::Small;

    #[test]
    fn keeps_order_and_grows() {
        let mut s = Small::default();
        assert!(s.is_empty());
        for i in 0..5 {
            s.push(i);
            assert_eq!(&*s, &(0..=i).collect::<Vec<_>>()[..]);
        }
        s.sort_by(|a, b| b.cmp(a));
        assert_eq!(&*s, &[4, 3, 2, 1, 0]);
        assert_eq!(&*Small::from(vec![7]), &[7]);
        assert_eq!(&*Small::<u8>::from(vec![]), &[] as &[u8]);
        assert_eq!(&*Small::from(vec![1, 2]), &[1, 2]);
    }
}

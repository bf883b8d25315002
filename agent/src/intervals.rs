//! Sets of ports and addresses as sorted, merged, inclusive ranges.
//!
//! nftables rewrites the sets it is given: it sorts elements, merges adjacent
//! prefixes (`198.51.100.0/24` + `198.51.101.0/24` comes back as
//! `198.51.100.0/23`) and unwraps one-element sets. Comparing what we asked
//! for with what `nft` lists therefore only works on a canonical form;
//! merged ranges are that form. The same sets answer the lockout question
//! ("which admin addresses still reach port 22?").

use std::fmt;

/// A value with a successor, so adjacent ranges can be merged.
pub(crate) trait Point: Copy + Ord + fmt::Debug {
    const MIN: Self;
    const MAX: Self;
    fn next(self) -> Option<Self>;
    fn prev(self) -> Option<Self>;
}

macro_rules! point {
    ($($t:ty),*) => {$(
        impl Point for $t {
            const MIN: Self = <$t>::MIN;
            const MAX: Self = <$t>::MAX;
            fn next(self) -> Option<Self> {
                self.checked_add(1)
            }
            fn prev(self) -> Option<Self> {
                self.checked_sub(1)
            }
        }
    )*};
}
point!(u16, u32, u128);

/// A set of values as disjoint, non-adjacent, sorted inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct IntervalSet<T> {
    ranges: Vec<(T, T)>,
}

impl<T: Point> IntervalSet<T> {
    pub(crate) fn empty() -> Self {
        IntervalSet { ranges: Vec::new() }
    }

    pub(crate) fn full() -> Self {
        IntervalSet {
            ranges: vec![(T::MIN, T::MAX)],
        }
    }

    /// Builds the canonical set from ranges in any order, overlapping or not.
    /// A range whose start is after its end is read the other way round.
    pub(crate) fn from_ranges(ranges: impl IntoIterator<Item = (T, T)>) -> Self {
        let mut input: Vec<(T, T)> = ranges
            .into_iter()
            .map(|(a, b)| if a <= b { (a, b) } else { (b, a) })
            .collect();
        input.sort();
        let mut ranges: Vec<(T, T)> = Vec::with_capacity(input.len());
        for (start, end) in input {
            match ranges.last_mut() {
                Some(last) if last.1.next().is_none_or(|after| start <= after) => {
                    last.1 = last.1.max(end);
                }
                _ => ranges.push((start, end)),
            }
        }
        IntervalSet { ranges }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub(crate) fn ranges(&self) -> &[(T, T)] {
        &self.ranges
    }

    pub(crate) fn contains(&self, value: T) -> bool {
        self.ranges.iter().any(|&(a, b)| a <= value && value <= b)
    }

    /// The values in both sets.
    pub(crate) fn intersection(&self, other: &Self) -> Self {
        self.minus(&self.minus(other))
    }

    /// The values in either set.
    pub(crate) fn union(&self, other: &Self) -> Self {
        IntervalSet::from_ranges(self.ranges.iter().chain(&other.ranges).copied())
    }

    /// The values of `self` that are not in `other`.
    pub(crate) fn minus(&self, other: &Self) -> Self {
        let mut out = Vec::new();
        for &(start, end) in &self.ranges {
            let mut cursor = Some(start);
            for &(c, d) in &other.ranges {
                let Some(from) = cursor else { break };
                if d < from || c > end {
                    continue;
                }
                if c > from {
                    // `c > from >= MIN`, so `c` has a predecessor.
                    if let Some(before) = c.prev() {
                        out.push((from, before));
                    }
                }
                cursor = if d >= end { None } else { d.next() };
            }
            if let Some(from) = cursor {
                out.push((from, end));
            }
        }
        IntervalSet { ranges: out }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_overlapping_and_adjacent_ranges() {
        let set = IntervalSet::from_ranges([(10u16, 12), (1, 3), (4, 5), (11, 20), (30, 30)]);
        assert_eq!(set.ranges(), &[(1, 5), (10, 20), (30, 30)]);
    }

    #[test]
    fn merges_up_to_the_maximum() {
        let set = IntervalSet::from_ranges([(u16::MAX, u16::MAX), (0, 5), (6, u16::MAX - 1)]);
        assert_eq!(set, IntervalSet::full());
    }

    #[test]
    fn subtracts() {
        let all = IntervalSet::<u16>::full();
        let some = IntervalSet::from_ranges([(0, 21), (23, 100), (200, u16::MAX)]);
        assert_eq!(all.minus(&some).ranges(), &[(22, 22), (101, 199)]);
        assert!(some.minus(&all).is_empty());
        assert_eq!(some.minus(&IntervalSet::empty()), some);
    }

    #[test]
    fn intersection_union_and_contains() {
        let a = IntervalSet::from_ranges([(1u32, 5), (10, 20)]);
        let b = IntervalSet::from_ranges([(4, 12), (20, 30)]);
        assert_eq!(a.intersection(&b).ranges(), &[(4, 5), (10, 12), (20, 20)]);
        assert!(
            a.intersection(&IntervalSet::from_ranges([(6, 9), (21, 25)]))
                .is_empty()
        );
        assert_eq!(a.union(&b).ranges(), &[(1, 30)]);
        assert!(a.contains(15) && !a.contains(7));
    }
}

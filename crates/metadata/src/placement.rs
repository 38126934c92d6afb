//! Where a new partition's replicas go: spread over the unfenced brokers, leaders round robin,
//! and each partition's replicas in as many racks as there are (`broker.rack`).
//!
//! The brokers are put in one order that alternates racks (racks by name, brokers by id within
//! a rack, then the first broker of each rack, the second of each, …), so neighbours in it sit
//! in different racks. Partition `p` of a placement that starts at `start` has its first
//! replica (its preferred leader) at position `start + p` of that order; the followers come
//! after it at a distance that changes each time the partitions wrap around the brokers, so
//! that the followers of one broker's leaders are not always the same brokers. Among those
//! candidates a follower from a rack not yet used comes first. A broker without a rack counts
//! as a rack of its own.
//!
//! Pure and deterministic: the same brokers, counts and start give the same placement.

/// A broker that may hold replicas: its id and rack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: i32,
    pub rack: Option<String>,
}

/// Why no placement exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceError {
    #[error("there are no unfenced brokers to place partitions on")]
    NoBrokers,
    #[error(
        "Unable to replicate the partition {factor} time(s): The target replication factor of {factor} \
         cannot be reached because only {brokers} broker(s) are registered."
    )]
    TooFewBrokers { factor: i16, brokers: usize },
    #[error("replication factor must be at least 1")]
    BadFactor,
}

/// The brokers in rack-alternating order (see the module's text).
fn alternated(brokers: &[Candidate]) -> Vec<Candidate> {
    let mut by_rack: std::collections::BTreeMap<Option<&str>, Vec<&Candidate>> = Default::default();
    for b in brokers {
        by_rack.entry(b.rack.as_deref()).or_default().push(b);
    }
    for list in by_rack.values_mut() {
        list.sort_by_key(|b| b.id);
        list.dedup_by_key(|b| b.id);
    }
    let deepest = by_rack.values().map(Vec::len).max().unwrap_or(0);
    let mut out = vec![];
    for i in 0..deepest {
        for list in by_rack.values() {
            if let Some(b) = list.get(i) {
                out.push((*b).clone());
            }
        }
    }
    out
}

/// Replica lists for `partitions` new partitions, each of `factor` distinct brokers out of
/// `brokers`, the first of each list its leader. `start` shifts the first leader (a caller
/// passes something that changes between placements, so that small topics do not all lead on
/// the same broker).
pub fn place(brokers: &[Candidate], partitions: i32, factor: i16, start: usize) -> Result<Vec<Vec<i32>>, PlaceError> {
    if factor < 1 {
        return Err(PlaceError::BadFactor);
    }
    let order = alternated(brokers);
    let n = order.len();
    if n == 0 {
        return Err(PlaceError::NoBrokers);
    }
    let factor = factor as usize;
    if factor > n {
        return Err(PlaceError::TooFewBrokers {
            factor: factor as i16,
            brokers: n,
        });
    }
    let racks = {
        let mut r: Vec<Option<&str>> = order.iter().map(|b| b.rack.as_deref()).collect();
        r.sort();
        r.dedup();
        r.len()
    };
    let mut out = Vec::with_capacity(partitions.max(0) as usize);
    for p in 0..partitions.max(0) as usize {
        let k = start.wrapping_add(p);
        let first = k % n;
        let mut replicas = vec![order[first].id];
        if factor > 1 {
            // The candidates after the first, at a distance that moves with each wrap: every
            // other broker exactly once.
            let shift = (k / n) % (n - 1);
            let candidates: Vec<&Candidate> = (0..n - 1)
                .map(|j| &order[(first + 1 + (shift + j) % (n - 1)) % n])
                .collect();
            let mut used: Vec<Option<&str>> = vec![order[first].rack.as_deref()];
            let mut taken = vec![false; candidates.len()];
            // New racks first, while some rack holds none of this partition's replicas.
            for (i, c) in candidates.iter().enumerate() {
                if replicas.len() == factor || used.len() == racks {
                    break;
                }
                if !used.contains(&c.rack.as_deref()) {
                    used.push(c.rack.as_deref());
                    replicas.push(c.id);
                    taken[i] = true;
                }
            }
            for (i, c) in candidates.iter().enumerate() {
                if replicas.len() == factor {
                    break;
                }
                if !taken[i] {
                    replicas.push(c.id);
                }
            }
        }
        out.push(replicas);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn brokers(racks: &[Option<&str>]) -> Vec<Candidate> {
        racks
            .iter()
            .enumerate()
            .map(|(i, r)| Candidate {
                id: i as i32 + 1,
                rack: r.map(str::to_string),
            })
            .collect()
    }

    #[test]
    fn leaders_go_round_robin_and_replicas_are_distinct() {
        let b = brokers(&[None, None, None]);
        let p = place(&b, 6, 1, 0).unwrap();
        assert_eq!(p, vec![vec![1], vec![2], vec![3], vec![1], vec![2], vec![3]]);
        let p = place(&b, 7, 3, 1).unwrap();
        let mut leaders = BTreeMap::new();
        for r in &p {
            assert_eq!(r.len(), 3);
            assert_eq!(r.iter().collect::<BTreeSet<_>>().len(), 3, "{r:?}");
            *leaders.entry(r[0]).or_insert(0) += 1;
        }
        assert!(leaders.values().all(|&n| (2..=3).contains(&n)), "{leaders:?}");
        // Followers move as the partitions wrap: broker 1's leaderships do not all have the
        // same follower order.
        let b4 = brokers(&[None, None, None, None]);
        let p = place(&b4, 8, 2, 0).unwrap();
        assert_ne!(p[0], p[4]);
        assert_eq!(p[0][0], p[4][0]);
    }

    #[test]
    fn replicas_span_racks() {
        let b = brokers(&[Some("a"), Some("a"), Some("b"), Some("b"), Some("c"), Some("c")]);
        let rack = |id: i32| b[(id - 1) as usize].rack.clone();
        for start in 0..6 {
            for r in place(&b, 12, 3, start).unwrap() {
                let racks: BTreeSet<_> = r.iter().map(|&id| rack(id)).collect();
                assert_eq!(racks.len(), 3, "{r:?} spans {racks:?}");
            }
            for r in place(&b, 12, 2, start).unwrap() {
                assert_ne!(rack(r[0]), rack(r[1]), "{r:?}");
            }
        }
        // Uneven racks: two racks, factor three — both racks used, no broker twice.
        let b = brokers(&[Some("a"), Some("a"), Some("a"), Some("b")]);
        for r in place(&b, 8, 3, 0).unwrap() {
            assert!(r.contains(&4), "{r:?} leaves out the only broker of rack b");
            assert_eq!(r.iter().collect::<BTreeSet<_>>().len(), 3);
        }
    }

    #[test]
    fn impossible_placements_are_refused() {
        let b = brokers(&[None, None]);
        assert_eq!(
            place(&b, 1, 3, 0),
            Err(PlaceError::TooFewBrokers { factor: 3, brokers: 2 })
        );
        assert_eq!(place(&[], 1, 1, 0), Err(PlaceError::NoBrokers));
        assert_eq!(place(&b, 1, 0, 0), Err(PlaceError::BadFactor));
        assert_eq!(place(&b, 0, 1, 0), Ok(vec![]));
    }
}

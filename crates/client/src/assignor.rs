//! Partition assignors for the classic consumer protocol, run by the group leader: `range`
//! (Kafka's default before 3.x, what librdkafka offers first) and `cooperative-sticky`
//! (KIP-429: keep what members own, move only what balance needs, and hand a moved partition
//! over in a second rebalance after its old owner has let go of it).
//!
//! Pure functions of the members' subscriptions and the partition counts: no I/O.

use std::collections::{BTreeMap, BTreeSet};

pub type TopicPartition = (String, i32);

/// One member as the leader sees it in JoinGroup.
#[derive(Debug, Clone, Default)]
pub struct MemberSubscription {
    pub member_id: String,
    pub topics: Vec<String>,
    /// What the member owns now (cooperative protocol only).
    pub owned: Vec<TopicPartition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignor {
    Range,
    CooperativeSticky,
}

impl Assignor {
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::CooperativeSticky => "cooperative-sticky",
        }
    }

    pub fn from_name(s: &str) -> Option<Assignor> {
        match s {
            "range" => Some(Assignor::Range),
            "cooperative-sticky" => Some(Assignor::CooperativeSticky),
            _ => None,
        }
    }

    /// Whether members keep their partitions while the group rebalances.
    pub fn is_cooperative(self) -> bool {
        self == Assignor::CooperativeSticky
    }

    pub fn assign(
        self,
        members: &[MemberSubscription],
        partitions: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        match self {
            Assignor::Range => range(members, partitions),
            Assignor::CooperativeSticky => cooperative_sticky(members, partitions),
        }
    }
}

/// For each topic, its subscribers in member-id order get consecutive ranges; the first
/// `partitions % members` get one more.
pub fn range(
    members: &[MemberSubscription],
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut out: BTreeMap<String, Vec<TopicPartition>> =
        members.iter().map(|m| (m.member_id.clone(), vec![])).collect();
    for (topic, &n) in partitions {
        let mut subs: Vec<&str> = members
            .iter()
            .filter(|m| m.topics.iter().any(|t| t == topic))
            .map(|m| m.member_id.as_str())
            .collect();
        subs.sort_unstable();
        if subs.is_empty() {
            continue;
        }
        let (each, extra) = (n / subs.len() as i32, n % subs.len() as i32);
        let mut next = 0;
        for (i, m) in subs.iter().enumerate() {
            let count = each + i32::from((i as i32) < extra);
            if let Some(v) = out.get_mut(*m) {
                v.extend((next..next + count).map(|p| (topic.clone(), p)));
            }
            next += count;
        }
    }
    out
}

/// A balanced assignment that keeps owned partitions where it can; partitions that change
/// owner are left out this round (their old owner revokes them and rejoins, and the next
/// rebalance hands them over).
pub fn cooperative_sticky(
    members: &[MemberSubscription],
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut ids: Vec<&str> = members.iter().map(|m| m.member_id.as_str()).collect();
    ids.sort_unstable();
    let subscribed = |m: &MemberSubscription, t: &str| m.topics.iter().any(|x| x == t);
    let all: BTreeSet<TopicPartition> = partitions
        .iter()
        .filter(|(t, _)| members.iter().any(|m| subscribed(m, t)))
        .flat_map(|(t, &n)| (0..n).map(move |p| (t.clone(), p)))
        .collect();
    // Start from what each member owns and may still have (first claim wins a dispute).
    let mut previous: BTreeMap<TopicPartition, String> = BTreeMap::new();
    let mut owned: BTreeMap<&str, Vec<TopicPartition>> = ids.iter().map(|id| (*id, vec![])).collect();
    for m in members {
        for tp in &m.owned {
            if all.contains(tp) && subscribed(m, &tp.0) && !previous.contains_key(tp) {
                previous.insert(tp.clone(), m.member_id.clone());
                owned.entry(m.member_id.as_str()).or_default().push(tp.clone());
            }
        }
    }
    // Quotas: everyone gets floor(n/m) and the first n%m members (by current load) one more.
    let total = all.len();
    let m = ids.len().max(1);
    let (base, mut extra) = (total / m, total % m);
    let mut order: Vec<&str> = ids.clone();
    order.sort_by_key(|id| std::cmp::Reverse(owned.get(id).map_or(0, |v| v.len())));
    let mut quota: BTreeMap<&str, usize> = BTreeMap::new();
    for id in order {
        let q = base + usize::from(extra > 0);
        extra = extra.saturating_sub(1);
        quota.insert(id, q);
    }
    let mut unassigned: Vec<TopicPartition> = all.iter().filter(|tp| !previous.contains_key(*tp)).cloned().collect();
    for (id, v) in owned.iter_mut() {
        let q = quota.get(id).copied().unwrap_or(0);
        while v.len() > q {
            if let Some(tp) = v.pop() {
                unassigned.push(tp);
            }
        }
    }
    unassigned.sort();
    // Give each unassigned partition to the least-loaded subscriber still under its quota
    // (or, for uneven subscriptions, the least-loaded subscriber).
    let mut result: BTreeMap<&str, Vec<TopicPartition>> = owned;
    for tp in unassigned {
        let candidates: Vec<&str> = members
            .iter()
            .filter(|m| subscribed(m, &tp.0))
            .map(|m| m.member_id.as_str())
            .collect();
        let load = |id: &&str| result.get(id).map_or(0, |v| v.len());
        let under: Vec<&str> = candidates
            .iter()
            .copied()
            .filter(|id| load(id) < quota.get(id).copied().unwrap_or(0))
            .collect();
        let pool = if under.is_empty() { &candidates } else { &under };
        if let Some(best) = pool.iter().copied().min_by_key(|id| (load(id), *id)) {
            result.entry(best).or_default().push(tp);
        }
    }
    // Cooperative hand-over: a partition moving away from a still-present owner is withheld
    // from its new owner until the old one has revoked it.
    let present: BTreeSet<&str> = ids.iter().copied().collect();
    let mut out = BTreeMap::new();
    for (id, mut v) in result {
        v.retain(|tp| match previous.get(tp) {
            Some(owner) => owner == id || !present.contains(owner.as_str()),
            None => true,
        });
        v.sort();
        out.insert(id.to_string(), v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, topics: &[&str], owned: &[(&str, i32)]) -> MemberSubscription {
        MemberSubscription {
            member_id: id.into(),
            topics: topics.iter().map(|s| s.to_string()).collect(),
            owned: owned.iter().map(|(t, p)| (t.to_string(), *p)).collect(),
        }
    }

    fn parts(list: &[(&str, i32)]) -> BTreeMap<String, i32> {
        list.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    #[test]
    fn range_gives_consecutive_ranges_and_the_first_members_the_remainder() {
        let ms = [member("b", &["t"], &[]), member("a", &["t", "u"], &[])];
        let out = range(&ms, &parts(&[("t", 5), ("u", 2)]));
        assert_eq!(
            out["a"],
            vec![
                ("t".into(), 0),
                ("t".into(), 1),
                ("t".into(), 2),
                ("u".into(), 0),
                ("u".into(), 1)
            ]
        );
        assert_eq!(out["b"], vec![("t".into(), 3), ("t".into(), 4)]);
    }

    #[test]
    fn sticky_keeps_owned_partitions_and_balances() {
        // a owned everything; b joins: a keeps 3, and the 3 that move to b are withheld this round.
        let all: Vec<(&str, i32)> = (0..6).map(|p| ("t", p)).collect();
        let ms = [member("a", &["t"], &all), member("b", &["t"], &[])];
        let first = cooperative_sticky(&ms, &parts(&[("t", 6)]));
        assert_eq!(first["a"].len(), 3);
        assert!(first["b"].is_empty(), "moved partitions wait for the second round");
        // Second round: a has revoked the other three; b gets them.
        let kept: Vec<(&str, i32)> = first["a"].iter().map(|(t, p)| (t.as_str(), *p)).collect();
        let ms = [member("a", &["t"], &kept), member("b", &["t"], &[])];
        let second = cooperative_sticky(&ms, &parts(&[("t", 6)]));
        assert_eq!(second["a"], first["a"], "a keeps what it had");
        assert_eq!(second["b"].len(), 3);
        let mut union: Vec<_> = second["a"].iter().chain(&second["b"]).cloned().collect();
        union.sort();
        union.dedup();
        assert_eq!(union.len(), 6);
    }

    #[test]
    fn sticky_gives_a_departed_members_partitions_out_at_once() {
        let ms = [member("a", &["t"], &[("t", 0), ("t", 1)])];
        let out = cooperative_sticky(&ms, &parts(&[("t", 4)]));
        assert_eq!(out["a"].len(), 4);
    }

    #[test]
    fn sticky_ignores_claims_on_partitions_that_no_longer_exist_or_are_claimed_twice() {
        let ms = [
            member("a", &["t"], &[("t", 0), ("t", 9)]),
            member("b", &["t"], &[("t", 0), ("t", 1)]),
        ];
        let out = cooperative_sticky(&ms, &parts(&[("t", 2)]));
        assert_eq!(out["a"], vec![("t".into(), 0)]);
        assert_eq!(out["b"], vec![("t".into(), 1)]);
    }
}

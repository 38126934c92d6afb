//! The active controller's rules for a partition's leader, ISR and eligible leader replicas
//! (Kafka's `ReplicationControlManager` and `PartitionChangeBuilder`, with KIP-966's ELR):
//! AlterPartition from a leader, elections, and what a broker's fencing or return does. Each returns the PartitionChangeRecord to
//! commit (its `topic_id` and `partition_id` for the caller to fill), or the error to answer.

use crate::leader::IsrChange;
use crate::BrokerId;
use metadata::PartitionRegistration;
use wire::kafka_records::metadata::PartitionChangeRecord;
use wire::ErrorCode;

/// What the controller knows of a broker when it decides.
pub trait Brokers {
    /// Registered and unfenced, and not shutting down: may lead and may join an ISR.
    fn eligible(&self, broker: BrokerId) -> bool;
}

impl<F: Fn(BrokerId) -> bool> Brokers for F {
    fn eligible(&self, broker: BrokerId) -> bool {
        self(broker)
    }
}

/// A partition's leader, ISR and eligible leader replicas (KIP-966) as a change would leave
/// them: [`PartitionState::record`] writes only what differs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PartitionState {
    leader: BrokerId,
    isr: Vec<BrokerId>,
    elr: Vec<BrokerId>,
    last_known_elr: Vec<BrokerId>,
}

impl PartitionState {
    fn of(r: &PartitionRegistration) -> PartitionState {
        PartitionState {
            leader: r.leader,
            isr: r.isr.clone(),
            elr: r.elr.clone(),
            last_known_elr: r.last_known_elr.clone(),
        }
    }

    /// The ISR becomes `isr`: below `min.insync.replicas`, the members it loses join the ELR
    /// (the high watermark stands still, so they hold everything below it); at or above it,
    /// there is no ELR. An ELR member back in the ISR leaves the ELR. `unclean`: brokers whose
    /// data may be lost (a restart after an unclean shutdown), never eligible.
    fn set_isr(&mut self, isr: Vec<BrokerId>, min_isr: usize, unclean: &[BrokerId]) {
        let before = std::mem::take(&mut self.elr);
        let mut elr = vec![];
        if isr.len() < min_isr {
            for r in before.iter().chain(self.isr.iter()) {
                if !isr.contains(r) && !unclean.contains(r) && !elr.contains(r) {
                    elr.push(*r);
                }
            }
        }
        // Nobody in sync and nobody eligible: remember who was last (Kafka's LastKnownElr), the
        // replicas to fall back to.
        if isr.is_empty() && elr.is_empty() {
            let mut last: Vec<BrokerId> = self.isr.clone();
            last.extend(before.iter().filter(|r| !self.isr.contains(r)));
            if !last.is_empty() {
                self.last_known_elr = last;
            }
        }
        self.isr = isr;
        self.elr = elr;
    }

    /// A new leader when the partition has none, or its leader can no longer lead: the first
    /// eligible ISR member in replica order; if none, the first eligible ELR member, which
    /// becomes the whole ISR (KIP-966); if the ISR and the ELR are both empty, the first
    /// eligible of the last known ones (Kafka 4's fallback, as before ELR: the last replicas
    /// standing all restarted uncleanly, and one of them is all there is); else nobody.
    fn elect(&mut self, replicas: &[BrokerId], brokers: &impl Brokers) {
        #[cfg(test)]
        if ELECT_OUT_OF_SYNC.with(|b| b.get()) {
            if let Some(r) = replicas.iter().copied().find(|&r| brokers.eligible(r)) {
                self.leader = r;
                if !self.isr.contains(&r) {
                    self.isr.push(r);
                }
                self.elr.retain(|&e| e != r);
                return;
            }
        }
        if let Some(r) = replicas
            .iter()
            .copied()
            .find(|r| self.isr.contains(r) && brokers.eligible(*r))
        {
            self.leader = r;
        } else if let Some(r) = replicas
            .iter()
            .copied()
            .find(|r| self.elr.contains(r) && brokers.eligible(*r))
        {
            self.leader = r;
            self.isr = vec![r];
            self.elr.retain(|&e| e != r);
        } else if let Some(r) = replicas.iter().copied().find(|r| {
            self.isr.is_empty() && self.elr.is_empty() && self.last_known_elr.contains(r) && brokers.eligible(*r)
        }) {
            self.leader = r;
            self.isr = vec![r];
            self.last_known_elr.clear();
        } else {
            self.leader = -1;
        }
    }

    /// The record that takes `from` to this state (`None`: nothing changes).
    fn record(&self, from: &PartitionState) -> Option<PartitionChangeRecord> {
        if self == from {
            return None;
        }
        let changed = |a: &Vec<BrokerId>, b: &Vec<BrokerId>| (a != b).then(|| a.clone());
        Some(PartitionChangeRecord {
            leader: if self.leader != from.leader { self.leader } else { -2 },
            isr: changed(&self.isr, &from.isr),
            eligible_leader_replicas: changed(&self.elr, &from.elr),
            last_known_elr: changed(&self.last_known_elr, &from.last_known_elr),
            ..Default::default()
        })
    }
}

/// AlterPartition from `leader` asking for `change` (its leader epoch, the partition epoch
/// of the registration it saw, the new ISR), checked in Kafka's order:
/// - `NOT_LEADER_OR_FOLLOWER`: it does not lead the partition;
/// - `FENCED_LEADER_EPOCH`: its leader epoch is behind (a newer leader exists);
/// - `NOT_LEADER_OR_FOLLOWER` too when its epoch is ahead (this controller is behind);
/// - `INVALID_UPDATE_VERSION`: the partition changed since the leader's view;
/// - `INVALID_REQUEST`: the ISR leaves out the leader or names a non-replica;
/// - `INELIGIBLE_REPLICA`: it adds a broker that is fenced, unregistered or shutting down,
///   or whose broker epoch (`broker_epochs`, as the leader saw it in its fetches) is not the
///   one it is registered with now (it restarted since: KIP-903).
///
/// The ELR follows the new ISR (`min_isr`: the topic's `min.insync.replicas`). `Ok(None)`:
/// nothing changes (answer with the registration as it is).
pub fn alter_partition(
    registration: &PartitionRegistration,
    leader: BrokerId,
    change: &IsrChange,
    min_isr: usize,
    brokers: &impl Brokers,
    registered_epoch: impl Fn(BrokerId) -> Option<i64>,
) -> Result<Option<PartitionChangeRecord>, ErrorCode> {
    let (leader_epoch, partition_epoch) = (change.leader_epoch, change.partition_epoch);
    let (isr, broker_epochs) = (change.isr.as_slice(), change.broker_epochs.as_slice());
    if registration.leader != leader {
        return Err(ErrorCode::NotLeaderOrFollower);
    }
    if leader_epoch < registration.leader_epoch {
        return Err(ErrorCode::FencedLeaderEpoch);
    }
    if leader_epoch > registration.leader_epoch {
        return Err(ErrorCode::NotLeaderOrFollower);
    }
    if partition_epoch != registration.partition_epoch {
        return Err(ErrorCode::InvalidUpdateVersion);
    }
    let mut unique = isr.to_vec();
    unique.sort_unstable();
    unique.dedup();
    if unique.len() != isr.len() || !isr.contains(&leader) || !isr.iter().all(|r| registration.replicas.contains(r)) {
        return Err(ErrorCode::InvalidRequest);
    }
    // A joining member must come with the epoch the leader saw, and it must be current.
    let stale = |i: usize, r: BrokerId| {
        let said = broker_epochs.get(i).copied().unwrap_or(-1);
        said == -1 || registered_epoch(r) != Some(said)
    };
    if isr
        .iter()
        .enumerate()
        .any(|(i, &r)| !registration.isr.contains(&r) && (!brokers.eligible(r) || stale(i, r)))
    {
        return Err(ErrorCode::IneligibleReplica);
    }
    let before = PartitionState::of(registration);
    let mut next = before.clone();
    next.set_isr(isr.to_vec(), min_isr, &[]);
    Ok(next.record(&before))
}

/// What a broker's leaving does to a partition: fenced, registering again after a restart,
/// or shutting down. It leaves the ISR (into the ELR when the ISR falls below `min_isr`,
/// unless `unclean`: its data may be lost, so it leaves the ELR too); if it led, a new
/// leader is elected (`brokers` already counts it as ineligible); a partition without a
/// leader gets one if it can.
pub fn broker_gone(
    registration: &PartitionRegistration,
    broker: BrokerId,
    min_isr: usize,
    unclean: bool,
    brokers: &impl Brokers,
) -> Option<PartitionChangeRecord> {
    let before = PartitionState::of(registration);
    let mut next = before.clone();
    if next.isr.contains(&broker) || (unclean && next.elr.contains(&broker)) {
        let isr = next.isr.iter().copied().filter(|&r| r != broker).collect();
        let unclean: &[BrokerId] = if unclean { &[broker] } else { &[] };
        next.set_isr(isr, min_isr, unclean);
    }
    if next.leader == broker || next.leader == -1 {
        next.elect(&registration.replicas, brokers);
    }
    next.record(&before)
}

/// A broker came back (unfenced): a partition without a leader elects one, which may be it.
pub fn broker_back(registration: &PartitionRegistration, brokers: &impl Brokers) -> Option<PartitionChangeRecord> {
    if registration.leader != -1 {
        return None;
    }
    let before = PartitionState::of(registration);
    let mut next = before.clone();
    next.elect(&registration.replicas, brokers);
    next.record(&before)
}

/// The partition rules of a broker's fencing, unclean restart and return, for the
/// controller's broker sessions (`metadata::sessions`): ISR, ELR and elections as above, over
/// every partition the broker is part of. `min_isr`: each topic's `min.insync.replicas`.
pub struct IsrRules<F> {
    pub min_isr: F,
}

/// May lead and join an ISR in `image`: registered, unfenced, not shutting down.
fn eligible_in(image: &metadata::MetadataImage, b: BrokerId) -> bool {
    image
        .brokers
        .get(&b)
        .is_some_and(|r| !r.fenced && !r.in_controlled_shutdown)
}

impl<F: Fn(&metadata::TopicImage) -> usize> IsrRules<F> {
    fn each(
        &self,
        image: &metadata::MetadataImage,
        broker: BrokerId,
        change: impl Fn(&PartitionRegistration, usize) -> Option<PartitionChangeRecord>,
    ) -> Vec<metadata::MetadataRecord> {
        let mut out = vec![];
        for t in image.topics() {
            let min_isr = (self.min_isr)(t);
            for (&index, p) in &t.partitions {
                let involved = p.leader == broker
                    || p.isr.contains(&broker)
                    || p.elr.contains(&broker)
                    || p.last_known_elr.contains(&broker);
                if let Some(c) = involved.then(|| change(p, min_isr)).flatten() {
                    out.push(metadata::MetadataRecord::PartitionChangeRecord(PartitionChangeRecord {
                        topic_id: t.id,
                        partition_id: index,
                        ..c
                    }));
                }
            }
        }
        out
    }
}

impl<F: Fn(&metadata::TopicImage) -> usize> metadata::sessions::PartitionRules for IsrRules<F> {
    fn broker_gone(
        &self,
        image: &metadata::MetadataImage,
        broker: BrokerId,
        unclean: bool,
    ) -> Vec<metadata::MetadataRecord> {
        let eligible = |b: BrokerId| b != broker && eligible_in(image, b);
        self.each(image, broker, |p, min_isr| {
            broker_gone(p, broker, min_isr, unclean, &eligible)
        })
    }

    fn broker_back(&self, image: &metadata::MetadataImage, broker: BrokerId) -> Vec<metadata::MetadataRecord> {
        let eligible = |b: BrokerId| b == broker || eligible_in(image, b);
        self.each(image, broker, |p, _| broker_back(p, &eligible))
    }
}

#[cfg(test)]
thread_local! {
    /// `Broken::ElectOutOfSync`, for the simulation's own test.
    pub(crate) static ELECT_OUT_OF_SYNC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(replicas: &[i32], isr: &[i32], leader: i32) -> PartitionRegistration {
        PartitionRegistration {
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            removing_replicas: vec![],
            adding_replicas: vec![],
            leader,
            leader_recovery_state: 0,
            leader_epoch: 5,
            partition_epoch: 9,
            elr: vec![],
            last_known_elr: vec![],
        }
    }

    #[test]
    fn alter_partition_is_checked_as_kafka_checks_it() {
        let r = reg(&[1, 2, 3], &[1, 2], 1);
        let all = |_: i32| true;
        let epoch = |b: i32| Some(100 + b as i64);
        let change = |leader_epoch, partition_epoch, isr: &[i32], broker_epochs: &[i64]| IsrChange {
            leader_epoch,
            partition_epoch,
            isr: isr.to_vec(),
            broker_epochs: broker_epochs.to_vec(),
        };
        let ok = alter_partition(&r, 1, &change(5, 9, &[1, 2, 3], &[-1, 102, 103]), 2, &all, epoch)
            .unwrap()
            .unwrap();
        assert_eq!(
            (ok.isr, ok.leader, ok.eligible_leader_replicas),
            (Some(vec![1, 2, 3]), -2, None)
        );
        assert_eq!(
            alter_partition(&r, 1, &change(5, 9, &[1, 2], &[]), 2, &all, epoch),
            Ok(None)
        );
        assert_eq!(
            alter_partition(&r, 2, &change(5, 9, &[1, 2], &[]), 2, &all, epoch),
            Err(ErrorCode::NotLeaderOrFollower)
        );
        assert_eq!(
            alter_partition(&r, 1, &change(4, 9, &[1], &[]), 2, &all, epoch),
            Err(ErrorCode::FencedLeaderEpoch)
        );
        assert_eq!(
            alter_partition(&r, 1, &change(6, 9, &[1], &[]), 2, &all, epoch),
            Err(ErrorCode::NotLeaderOrFollower)
        );
        assert_eq!(
            alter_partition(&r, 1, &change(5, 8, &[1], &[]), 2, &all, epoch),
            Err(ErrorCode::InvalidUpdateVersion)
        );
        assert_eq!(
            alter_partition(&r, 1, &change(5, 9, &[2], &[]), 2, &all, epoch),
            Err(ErrorCode::InvalidRequest)
        );
        assert_eq!(
            alter_partition(&r, 1, &change(5, 9, &[1, 4], &[]), 2, &all, epoch),
            Err(ErrorCode::InvalidRequest)
        );
        assert_eq!(
            alter_partition(&r, 1, &change(5, 9, &[1, 1], &[]), 2, &all, epoch),
            Err(ErrorCode::InvalidRequest)
        );
        let fenced3 = |b: i32| b != 3;
        assert_eq!(
            alter_partition(&r, 1, &change(5, 9, &[1, 2, 3], &[]), 2, &fenced3, epoch),
            Err(ErrorCode::IneligibleReplica)
        );
        // A member that restarted since the leader saw it fetch (KIP-903).
        let stale = alter_partition(&r, 1, &change(5, 9, &[1, 2, 3], &[-1, 102, 99]), 2, &all, epoch);
        assert_eq!(stale, Err(ErrorCode::IneligibleReplica));
        let unknown = alter_partition(&r, 1, &change(5, 9, &[1, 2, 3], &[-1, 102, -1]), 2, &all, epoch);
        assert_eq!(unknown, Err(ErrorCode::IneligibleReplica));
        // A shrink below min.insync.replicas puts the member it removes in the ELR.
        let fenced2 = |b: i32| b != 2;
        let shrink = alter_partition(&r, 1, &change(5, 9, &[1], &[]), 2, &fenced2, epoch)
            .unwrap()
            .unwrap();
        assert_eq!(
            (shrink.isr, shrink.eligible_leader_replicas),
            (Some(vec![1]), Some(vec![2]))
        );
    }

    #[test]
    fn elections_take_the_isr_then_the_elr_in_replica_order() {
        let gone = |r: &PartitionRegistration, b, eligible: &dyn Fn(i32) -> bool| {
            broker_gone(r, b, 2, false, &|x| eligible(x)).unwrap()
        };
        let r = reg(&[3, 1, 2], &[1, 2, 3], 3);
        let c = gone(&r, 3, &|b| b != 3);
        assert_eq!(
            (c.leader, c.isr, c.eligible_leader_replicas),
            (1, Some(vec![1, 2]), None)
        );
        // Below min.insync.replicas, the leaving leader waits in the ELR.
        let r = reg(&[3, 1, 2], &[1, 3], 3);
        let c = gone(&r, 3, &|b| b != 3);
        assert_eq!(
            (c.leader, c.isr, c.eligible_leader_replicas),
            (1, Some(vec![1]), Some(vec![3]))
        );
        // The last ISR member leaves too (into the ELR): nobody eligible, no leader.
        let mut r = reg(&[1, 2, 3], &[2], 2);
        r.elr = vec![1];
        let c = gone(&r, 2, &|b| b == 3);
        assert_eq!(
            (c.leader, c.isr, c.eligible_leader_replicas),
            (-1, Some(vec![]), Some(vec![1, 2]))
        );
        // An unclean restart leaves the ELR as well.
        let mut r = reg(&[1, 2, 3], &[], -1);
        r.elr = vec![1, 2];
        let c = broker_gone(&r, 2, 2, true, &|b| b != 2).unwrap();
        assert_eq!(
            (c.leader, c.isr, c.eligible_leader_replicas),
            (1, Some(vec![1]), Some(vec![]))
        );
        // One replica, restarted uncleanly while in the ISR: nobody is eligible, so it is
        // remembered as the last known one, and leads again when it is back (the fallback).
        let r = reg(&[2], &[2], 2);
        let c = broker_gone(&r, 2, 1, true, &|b| b != 2).unwrap();
        assert_eq!(
            (c.leader, c.isr.clone(), c.eligible_leader_replicas.clone()),
            (-1, Some(vec![]), None)
        );
        assert_eq!(c.last_known_elr, Some(vec![2]));
        let mut gone = reg(&[2], &[], -1);
        gone.last_known_elr = vec![2];
        let back = broker_back(&gone, &|_| true).unwrap();
        assert_eq!(
            (back.leader, back.isr, back.last_known_elr),
            (2, Some(vec![2]), Some(vec![]))
        );
        // An ELR member coming back leads, alone in the ISR.
        let mut r = reg(&[1, 2, 3], &[], -1);
        r.elr = vec![2, 3];
        let c = broker_back(&r, &|b| b == 3).unwrap();
        assert_eq!(
            (c.leader, c.isr, c.eligible_leader_replicas),
            (3, Some(vec![3]), Some(vec![2]))
        );
        assert_eq!(broker_back(&reg(&[1, 2, 3], &[2], 2), &|_| true), None);
        // 3 is in neither: it never leads.
        let r = reg(&[3, 1, 2], &[1, 2], -1);
        assert_eq!(broker_back(&r, &|b| b == 3), None);
    }

    /// The rules over a whole image, as the controller's sessions use them: every partition a
    /// broker is part of — led, in the ISR or ELR, or only among the last known replicas —
    /// and no other.
    #[test]
    fn the_isr_rules_reach_every_partition_a_broker_is_part_of() {
        use metadata::sessions::PartitionRules;
        use metadata::{MetadataDelta, MetadataImage, MetadataRecord, Uuid};
        use std::sync::Arc;
        use wire::kafka_records::metadata::{PartitionRecord, TopicRecord};
        let topic = Uuid([4; 16]);
        // Partition 0: led by 2. Partition 1: 2 is only among the last known replicas.
        // Partition 2: 2 has no part in it.
        let part = |index, replicas: Vec<i32>, isr: Vec<i32>, leader, last_known: Option<Vec<i32>>| {
            MetadataRecord::PartitionRecord(PartitionRecord {
                partition_id: index,
                topic_id: topic,
                replicas,
                isr,
                leader,
                leader_epoch: 0,
                partition_epoch: 0,
                last_known_elr: last_known,
                ..Default::default()
            })
        };
        let mut records = vec![MetadataRecord::TopicRecord(TopicRecord {
            name: "t".into(),
            topic_id: topic,
        })];
        records.push(part(0, vec![2], vec![2], 2, None));
        records.push(part(1, vec![2], vec![], -1, Some(vec![2])));
        records.push(part(2, vec![3], vec![3], 3, None));
        for b in [2, 3] {
            records.push(crate::control::tests::registration(b));
        }
        let mut delta = MetadataDelta::new(Arc::new(MetadataImage::empty()));
        for (i, r) in records.iter().enumerate() {
            delta.replay(i as i64, 0, r).unwrap();
        }
        let image = delta.apply().0;
        let rules = IsrRules {
            min_isr: |_: &metadata::TopicImage| 1,
        };
        let touched = |records: Vec<MetadataRecord>| -> Vec<(i32, i32)> {
            records
                .into_iter()
                .map(|r| match r {
                    MetadataRecord::PartitionChangeRecord(c) => (c.partition_id, c.leader),
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        // 2 leaves: partition 0 loses its leader; the others are not touched.
        assert_eq!(touched(rules.broker_gone(&image, 2, false)), vec![(0, -1)]);
        // 2 comes back: partition 1, whose only candidate it is, is led by it again.
        assert_eq!(touched(rules.broker_back(&image, 2)), vec![(1, 2)]);
    }

    pub(super) fn registration(b: i32) -> metadata::MetadataRecord {
        metadata::sessions::registration_record(b, metadata::Uuid([b as u8; 16]), 10 + b as i64, vec![], None)
    }
}

//! One partition as its leader keeps it (Kafka's `Partition` on the leader): follower
//! positions, the high watermark, and the ISR changes it asks the controller for.

use crate::BrokerId;
use metadata::PartitionRegistration;
use std::collections::BTreeMap;

/// How long an unanswered AlterPartition waits before it is sent again.
pub const ALTER_PARTITION_RETRY_MS: i64 = 1_000;

/// What the leader knows of one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerPosition {
    /// The broker epoch (its registration) its fetches came with: a new one is a restarted
    /// broker, whose position starts again (KIP-903).
    pub broker_epoch: i64,
    /// Its log end, as its last fetch said (-1: not known since this leadership began).
    pub log_end: i64,
    pub last_fetch_ms: i64,
    /// When it last held everything the leader had (Kafka's `lastCaughtUpTimeMs`).
    pub last_caught_up_ms: i64,
    /// The leader's log end when that fetch came: a fetch reaching it later means the follower
    /// had caught up as of then.
    leader_end_at_last_fetch: i64,
}

/// An ISR change for the controller (AlterPartition), of the registration at
/// `partition_epoch` by the leader of `leader_epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<BrokerId>,
    /// The broker epoch of each member as its fetches showed it (-1: not known; the leader's
    /// own), so the controller refuses a member that has restarted since (KIP-903).
    pub broker_epochs: Vec<i64>,
}

#[derive(Debug, Clone)]
pub struct Leader {
    me: BrokerId,
    /// The registration as the metadata log last said, while this broker leads it.
    registration: PartitionRegistration,
    /// An ISR change sent to the controller and not yet answered or seen in the metadata,
    /// and when it was (last) sent.
    pending: Option<(IsrChange, i64)>,
    followers: BTreeMap<BrokerId, FollowerPosition>,
    log_end: i64,
    high_watermark: i64,
    /// The log end when this leadership began: a follower joins the ISR only once it holds
    /// it (so everything of this epoch comes from this leader).
    epoch_start_offset: i64,
    min_insync_replicas: usize,
    #[cfg(test)]
    pub(crate) broken: Option<crate::Broken>,
}

impl Leader {
    /// This broker (`me`) leads `registration` from `now`, its log ending at `log_end` with
    /// `high_watermark` (what it had as a follower). Its followers' positions are unknown
    /// until they fetch; those in the ISR count as caught up now, as Kafka starts them.
    pub fn new(
        me: BrokerId,
        registration: PartitionRegistration,
        log_end: i64,
        high_watermark: i64,
        min_insync_replicas: usize,
        now: i64,
    ) -> Leader {
        let followers = registration
            .replicas
            .iter()
            .filter(|&&r| r != me)
            .map(|&r| {
                let in_sync = registration.isr.contains(&r);
                (
                    r,
                    FollowerPosition {
                        broker_epoch: -1,
                        log_end: -1,
                        last_fetch_ms: now,
                        last_caught_up_ms: if in_sync { now } else { -1 },
                        leader_end_at_last_fetch: -1,
                    },
                )
            })
            .collect();
        Leader {
            me,
            registration,
            pending: None,
            followers,
            log_end,
            high_watermark: high_watermark.min(log_end),
            epoch_start_offset: log_end,
            min_insync_replicas,
            #[cfg(test)]
            broken: None,
        }
    }

    pub fn registration(&self) -> &PartitionRegistration {
        &self.registration
    }

    pub fn leader_epoch(&self) -> i32 {
        self.registration.leader_epoch
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    pub fn log_end(&self) -> i64 {
        self.log_end
    }

    pub fn follower(&self, id: BrokerId) -> Option<&FollowerPosition> {
        self.followers.get(&id)
    }

    pub fn pending(&self) -> Option<&IsrChange> {
        self.pending.as_ref().map(|(c, _)| c)
    }

    /// The ISR the high watermark waits for: the committed one with a pending expansion's
    /// new member (a pending shrink still waits for the members it would remove).
    pub fn maximal_isr(&self) -> Vec<BrokerId> {
        let mut isr = self.registration.isr.clone();
        if let Some((p, _)) = &self.pending {
            for &r in &p.isr {
                if !isr.contains(&r) {
                    isr.push(r);
                }
            }
        }
        isr
    }

    /// Whether a produce with acks=all may be appended: the committed ISR holds at least
    /// `min.insync.replicas` (otherwise NOT_ENOUGH_REPLICAS, before the append).
    pub fn enough_replicas(&self) -> bool {
        self.registration.isr.len() >= self.min_insync_replicas
    }

    /// The local log grew to `log_end`. Returns the new high watermark if it moved.
    pub fn appended(&mut self, log_end: i64) -> Option<i64> {
        self.log_end = self.log_end.max(log_end);
        self.advance()
    }

    /// A fetch from `follower` (registered with `broker_epoch`) at `fetch_offset` (it holds
    /// everything below) arrived at `now`, after any divergence was answered (a diverging
    /// fetch says nothing of its position). A fetch of a new broker epoch is a restarted
    /// follower: what was known of the earlier one is forgotten. Returns the new high
    /// watermark if it moved.
    pub fn fetched(&mut self, follower: BrokerId, broker_epoch: i64, fetch_offset: i64, now: i64) -> Option<i64> {
        let leader_end = self.log_end;
        let p = self.followers.get_mut(&follower)?;
        if p.broker_epoch != broker_epoch {
            p.broker_epoch = broker_epoch;
            p.leader_end_at_last_fetch = -1;
        }
        if fetch_offset >= leader_end {
            p.last_caught_up_ms = now;
        } else if p.leader_end_at_last_fetch >= 0 && fetch_offset >= p.leader_end_at_last_fetch {
            p.last_caught_up_ms = p.last_caught_up_ms.max(p.last_fetch_ms);
        }
        p.log_end = fetch_offset.min(leader_end);
        p.last_fetch_ms = now;
        p.leader_end_at_last_fetch = leader_end;
        self.advance()
    }

    /// The high watermark: the smallest log end over the maximal ISR (the leader's own
    /// included), moving only forward and only while the committed ISR holds at least
    /// `min.insync.replicas` (KIP-966: a member still joining does not count, or the ELR
    /// would not hold what the high watermark passed).
    fn advance(&mut self) -> Option<i64> {
        let isr = self.maximal_isr();
        #[allow(unused_mut)]
        let mut enough = self.registration.isr.len() >= self.min_insync_replicas;
        #[cfg(test)]
        if self.broken == Some(crate::Broken::HighWatermarkBelowMinIsr) {
            enough = true;
        }
        if !enough {
            return None;
        }
        let mut hw = self.log_end;
        for r in isr.iter().filter(|&&r| r != self.me) {
            hw = hw.min(self.followers.get(r).map_or(-1, |p| p.log_end));
        }
        (hw > self.high_watermark).then(|| {
            self.high_watermark = hw;
            hw
        })
    }

    /// The ISR change to ask the controller for at `now`, if any: followers in the ISR not
    /// caught up for `lag_max_ms` leave it (never the leader); a follower out of it that
    /// holds the high watermark and this leadership's start joins, if `eligible`
    /// (registered, unfenced, not shutting down). Shrinks first, as Kafka. One change at a
    /// time: while one is unanswered it is sent again every [`ALTER_PARTITION_RETRY_MS`] (the
    /// request or its answer may be lost; Kafka's AlterPartitionManager retries too).
    pub fn isr_change(&mut self, now: i64, lag_max_ms: i64, eligible: impl Fn(BrokerId) -> bool) -> Option<IsrChange> {
        if let Some((change, sent)) = &mut self.pending {
            if now - *sent < ALTER_PARTITION_RETRY_MS {
                return None;
            }
            *sent = now;
            return Some(change.clone());
        }
        let isr = &self.registration.isr;
        let out: Vec<BrokerId> = isr
            .iter()
            .copied()
            .filter(|&r| r != self.me)
            .filter(|r| {
                self.followers
                    .get(r)
                    .is_none_or(|p| now - p.last_caught_up_ms > lag_max_ms)
            })
            .collect();
        let next: Vec<BrokerId> = if !out.is_empty() {
            isr.iter().copied().filter(|r| !out.contains(r)).collect()
        } else {
            let caught_up =
                |p: &FollowerPosition| p.log_end >= self.high_watermark && p.log_end >= self.epoch_start_offset;
            #[cfg(test)]
            let broken = self.broken == Some(crate::Broken::ExpandEarly);
            #[cfg(not(test))]
            let broken = false;
            let joining: Vec<BrokerId> = self
                .registration
                .replicas
                .iter()
                .copied()
                .filter(|r| !isr.contains(r) && *r != self.me)
                .filter(|r| {
                    self.followers
                        .get(r)
                        .is_some_and(|p| p.log_end >= 0 && (broken || caught_up(p)))
                })
                .filter(|&r| eligible(r))
                .collect();
            if joining.is_empty() {
                return None;
            }
            // In replica order, as Kafka's ISR lists are kept.
            self.registration
                .replicas
                .iter()
                .copied()
                .filter(|r| isr.contains(r) || joining.contains(r))
                .collect()
        };
        let broker_epochs = next
            .iter()
            .map(|r| self.followers.get(r).map_or(-1, |p| p.broker_epoch))
            .collect();
        let change = IsrChange {
            leader_epoch: self.registration.leader_epoch,
            partition_epoch: self.registration.partition_epoch,
            isr: next,
            broker_epochs,
        };
        self.pending = Some((change.clone(), now));
        Some(change)
    }

    /// The controller answered the pending change: the registration it committed (`Ok`), or
    /// a refusal (the change is dropped and may be asked again). Returns the new high
    /// watermark if it moved.
    pub fn isr_change_answered(&mut self, answer: Result<PartitionRegistration, wire::ErrorCode>) -> Option<i64> {
        match answer {
            Ok(r) => self.registration_changed(r),
            Err(_) => {
                self.pending = None;
                None
            }
        }
    }

    /// The metadata log says `registration` (the same leadership: this broker, this leader
    /// epoch), newer than the one held: its ISR replaces the held one and ends a pending
    /// change. An older or equal one changes nothing. Returns the new high watermark if it
    /// moved.
    pub fn registration_changed(&mut self, registration: PartitionRegistration) -> Option<i64> {
        if registration.leader_epoch != self.registration.leader_epoch
            || registration.partition_epoch <= self.registration.partition_epoch
        {
            return None;
        }
        for &r in &registration.replicas {
            if r != self.me {
                self.followers.entry(r).or_insert(FollowerPosition {
                    broker_epoch: -1,
                    log_end: -1,
                    last_fetch_ms: -1,
                    last_caught_up_ms: -1,
                    leader_end_at_last_fetch: -1,
                });
            }
        }
        self.registration = registration;
        self.pending = None;
        self.advance()
    }
}

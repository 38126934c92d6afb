//! The active controller's rules for broker sessions, as Kafka's `BrokerHeartbeatManager` and
//! `ClusterControlManager` keep them: a broker registers fenced, is unfenced by a heartbeat
//! that shows it has caught up with the metadata log, and is fenced again when the controller
//! has not heard from it for `broker.session.timeout.ms`. With one replica per partition
//! (issue 20 brings more), a fenced broker's partitions have no leader, and an unfenced
//! broker takes back the leadership of its leaderless partitions.
//!
//! Pure: the caller passes the image, the controller's clock and the quorum's epoch, and
//! commits the records these rules return (`crate::MetadataRecord`s checked by the delta as
//! any others). Session times are the active controller's memory, not the log's: a new
//! quorum epoch gives every broker a whole session from the moment its controller first
//! looks, as Kafka's does. The seeded simulation in `sessions/sim.rs` drives these rules
//! with brokers that crash, restart, lag and lose messages, and a controller that fails
//! over and loses commits, and checks the invariants after every step.

use crate::{MetadataImage, MetadataRecord};
use std::collections::HashMap;
use wire::kafka_records::metadata::{
    register_broker_record, FenceBrokerRecord, PartitionChangeRecord, RegisterBrokerRecord, UnfenceBrokerRecord,
};
use wire::{ErrorCode, Uuid};

#[cfg(test)]
mod sim;

/// A broker's registration as the metadata log records it. Its epoch is the log's end offset
/// when it is written (as Kafka uses the registration record's offset): above every earlier
/// one. Unfenced: what a single node writes for itself; a registration with the active
/// controller is fenced ([`registration`]).
pub fn registration_record(
    broker_id: i32,
    incarnation_id: Uuid,
    epoch: i64,
    listeners: Vec<(String, String, u16)>,
    rack: Option<String>,
) -> MetadataRecord {
    MetadataRecord::RegisterBrokerRecord(RegisterBrokerRecord {
        broker_id,
        incarnation_id,
        broker_epoch: epoch,
        end_points: listeners
            .into_iter()
            .map(|(name, host, port)| register_broker_record::BrokerEndpoint {
                name,
                host,
                port,
                security_protocol: 0,
            })
            .collect(),
        rack,
        fenced: false,
        in_controlled_shutdown: false,
        ..Default::default()
    })
}

/// What a broker's leaving and return do to the partitions: the records to commit with its
/// fencing (or its new registration) and with its unfencing. The broker uses the ISR and
/// eligible-leader rules of `replication::control`; [`SingleReplica`] is the rule for one
/// replica per partition, which the simulation here drives.
pub trait PartitionRules {
    /// `broker` is fenced, or registers again (`unclean`: after an unclean shutdown its data
    /// may be lost). `image` still has it as it was.
    fn broker_gone(&self, image: &MetadataImage, broker: i32, unclean: bool) -> Vec<MetadataRecord>;
    /// `broker` is unfenced (`image` still has it fenced).
    fn broker_back(&self, image: &MetadataImage, broker: i32) -> Vec<MetadataRecord>;
}

/// One replica per partition: a gone broker's partitions have no leader, and get it back
/// when it returns.
pub struct SingleReplica;

impl PartitionRules for SingleReplica {
    fn broker_gone(&self, image: &MetadataImage, broker: i32, _unclean: bool) -> Vec<MetadataRecord> {
        leadership_changes(image, broker, false)
    }

    fn broker_back(&self, image: &MetadataImage, broker: i32) -> Vec<MetadataRecord> {
        leadership_changes(image, broker, true)
    }
}

/// Records moving the leadership of `broker`'s partitions: away from it (`lead` false: every
/// partition it leads gets no leader), or back to it (`lead`: every leaderless partition whose
/// ISR holds it).
fn leadership_changes(image: &MetadataImage, broker: i32, lead: bool) -> Vec<MetadataRecord> {
    let mut out = vec![];
    for t in image.topics() {
        for (&index, p) in &t.partitions {
            let leader = if lead {
                (p.leader == -1 && p.isr.contains(&broker)).then_some(broker)
            } else {
                (p.leader == broker).then_some(-1)
            };
            if let Some(leader) = leader {
                out.push(MetadataRecord::PartitionChangeRecord(PartitionChangeRecord {
                    partition_id: index,
                    topic_id: t.id,
                    leader,
                    ..Default::default()
                }));
            }
        }
    }
    out
}

/// The records of a registration: the broker, fenced until a heartbeat shows it caught up,
/// and what its earlier incarnation's leaving does to the partitions (`unclean`: that
/// incarnation did not shut down cleanly, so its data may be lost).
pub fn registration(
    image: &MetadataImage,
    record: MetadataRecord,
    unclean: bool,
    rules: &impl PartitionRules,
) -> Vec<MetadataRecord> {
    let mut records = vec![record];
    if let Some(MetadataRecord::RegisterBrokerRecord(r)) = records.first_mut() {
        r.fenced = true;
        let id = r.broker_id;
        if image.brokers.contains_key(&id) {
            records.extend(rules.broker_gone(image, id, unclean));
        }
    }
    records
}

/// What the controller does with a heartbeat.
#[derive(Debug, PartialEq)]
pub enum Heartbeat {
    /// Answer with this, changing nothing in the log.
    Answer {
        error: ErrorCode,
        caught_up: bool,
        fenced: bool,
    },
    /// Commit these records (the broker's unfencing and the leadership it takes back), then
    /// answer caught up and unfenced; if the commit fails, still fenced.
    Unfence { records: Vec<MetadataRecord> },
}

/// A broker to fence: its session ran out.
#[derive(Debug, PartialEq)]
pub struct Expired {
    pub broker: i32,
    pub silent_ms: i64,
    /// The FenceBrokerRecord and the leadership its partitions lose.
    pub records: Vec<MetadataRecord>,
}

/// A deliberately broken rule, for the simulation's own test that its checker sees it.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Broken {
    /// Unfence without waiting for the broker to catch up.
    UnfenceEarly,
    /// Fence after a third of the session timeout.
    FenceEarly,
    /// Fence without taking the leadership of the broker's partitions away.
    FenceKeepsLeaders,
}

/// The active controller's view of broker sessions.
#[derive(Debug)]
pub struct Sessions {
    timeout_ms: i64,
    /// The quorum epoch in which these sessions started: a new epoch starts them all again.
    epoch: i32,
    /// When each broker was last heard from (the controller's clock, ms).
    last: HashMap<i32, i64>,
    /// The metadata offset each fenced broker must reach before it is unfenced: the end of the
    /// log when it registered, or when this controller first heard from it.
    catch_up_to: HashMap<i32, i64>,
    #[cfg(test)]
    pub(crate) broken: Option<Broken>,
}

impl Sessions {
    pub fn new(session_timeout_ms: i64) -> Sessions {
        Sessions {
            timeout_ms: session_timeout_ms,
            epoch: -1,
            last: HashMap::new(),
            catch_up_to: HashMap::new(),
            #[cfg(test)]
            broken: None,
        }
    }

    /// Starts every session again if the quorum's epoch is not the one they began in. Called
    /// before each use, with the epoch this controller leads.
    pub fn in_epoch(&mut self, epoch: i32) -> &mut Sessions {
        if self.epoch != epoch {
            self.epoch = epoch;
            self.last.clear();
            self.catch_up_to.clear();
        }
        self
    }

    /// A registration of `broker` was committed at `now`, ending at metadata offset `end`:
    /// its session starts, and it must reach `end` to be unfenced.
    pub fn registered(&mut self, broker: i32, now: i64, end: i64) {
        self.last.insert(broker, now);
        self.catch_up_to.insert(broker, end);
    }

    /// A heartbeat of `broker` (registered with `broker_epoch`, holding the metadata log up to
    /// `metadata_offset`) arrived at `now`.
    pub fn heartbeat(
        &mut self,
        image: &MetadataImage,
        broker: i32,
        broker_epoch: i64,
        metadata_offset: i64,
        want_fence: bool,
        now: i64,
        rules: &impl PartitionRules,
    ) -> Heartbeat {
        let answer = |error, caught_up, fenced| Heartbeat::Answer {
            error,
            caught_up,
            fenced,
        };
        let Some(b) = image.brokers.get(&broker) else {
            return answer(ErrorCode::BrokerIdNotRegistered, false, true);
        };
        if b.epoch != broker_epoch {
            return answer(ErrorCode::StaleBrokerEpoch, false, true);
        }
        self.last.insert(broker, now);
        let target = *self.catch_up_to.entry(broker).or_insert(image.offset);
        #[allow(unused_mut)]
        let mut caught_up = metadata_offset >= target;
        #[cfg(test)]
        if self.broken == Some(Broken::UnfenceEarly) {
            caught_up = true;
        }
        if !b.fenced || !caught_up || want_fence {
            return answer(ErrorCode::None, caught_up, b.fenced);
        }
        let mut records = vec![MetadataRecord::UnfenceBrokerRecord(UnfenceBrokerRecord {
            id: b.id,
            epoch: b.epoch,
        })];
        records.extend(rules.broker_back(image, b.id));
        Heartbeat::Unfence { records }
    }

    /// Every unfenced broker not heard from for the session timeout at `now`. A broker this
    /// controller has not heard from at all (it took over since) starts its session now.
    pub fn expired(&mut self, image: &MetadataImage, now: i64, rules: &impl PartitionRules) -> Vec<Expired> {
        #[allow(unused_mut)]
        let mut timeout = self.timeout_ms;
        #[cfg(test)]
        if self.broken == Some(Broken::FenceEarly) {
            timeout /= 3;
        }
        let mut out = vec![];
        for b in image.brokers.values().filter(|b| !b.fenced) {
            let last = *self.last.entry(b.id).or_insert(now);
            if now - last < timeout {
                continue;
            }
            let mut records = vec![MetadataRecord::FenceBrokerRecord(FenceBrokerRecord {
                id: b.id,
                epoch: b.epoch,
            })];
            #[cfg(test)]
            let keep = self.broken == Some(Broken::FenceKeepsLeaders);
            #[cfg(not(test))]
            let keep = false;
            if !keep {
                records.extend(rules.broker_gone(image, b.id, false));
            }
            out.push(Expired {
                broker: b.id,
                silent_ms: now - last,
                records,
            });
        }
        out
    }

    /// `broker`'s fencing was committed: when it heartbeats again, it must catch up with the
    /// log as it is then.
    pub fn fenced(&mut self, broker: i32) {
        self.catch_up_to.remove(&broker);
    }
}

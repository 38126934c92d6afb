//! Records replayed on top of an image (Kafka's `MetadataDelta`).

use crate::image::{BrokerRegistration, ConfigResource, Endpoint, MetadataImage, PartitionRegistration, TopicImage};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use wire::kafka_records::metadata::MetadataRecord;
use wire::Uuid;

/// A record that contradicts the image it is replayed on: the log (or snapshot) is not one
/// this image can come from. Nothing of the record is applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metadata record at offset {offset} ({record}): {why}")]
pub struct ReplayError {
    pub offset: i64,
    pub record: &'static str,
    pub why: String,
}

/// What a delta changed, for whoever acts on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Topics that did not exist before the delta (and still do).
    pub created_topics: BTreeSet<Uuid>,
    /// Topics that existed before the delta and are gone, as they were before it.
    pub deleted_topics: BTreeMap<Uuid, Arc<TopicImage>>,
    /// Topics that existed before and after whose partitions changed (added or re-registered).
    pub changed_topics: BTreeSet<Uuid>,
    /// Resources whose configs changed.
    pub configs: BTreeSet<ConfigResource>,
    pub brokers: BTreeSet<i32>,
    pub features: bool,
    pub producer_ids: bool,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }
}

/// An image being changed by records. Build with [`MetadataDelta::new`], [`replay`] each
/// record in log order, then [`apply`] for the next image.
///
/// [`replay`]: MetadataDelta::replay
/// [`apply`]: MetadataDelta::apply
#[derive(Debug, Clone)]
pub struct MetadataDelta {
    base: Arc<MetadataImage>,
    next: MetadataImage,
    changes: Changes,
}

fn err(offset: i64, record: &MetadataRecord, why: impl Into<String>) -> ReplayError {
    ReplayError {
        offset,
        record: record.record_type().name(),
        why: why.into(),
    }
}

impl MetadataDelta {
    pub fn new(base: Arc<MetadataImage>) -> MetadataDelta {
        MetadataDelta {
            next: (*base).clone(),
            base,
            changes: Changes::default(),
        }
    }

    /// The image as it stands with the records replayed so far.
    pub fn image(&self) -> &MetadataImage {
        &self.next
    }

    /// Replays `record`, found at `offset` in a batch of leader epoch `epoch`. On error the
    /// delta is as it was before the call.
    pub fn replay(&mut self, offset: i64, epoch: i32, record: &MetadataRecord) -> Result<(), ReplayError> {
        self.replay_record(offset, record)?;
        self.next.offset = offset;
        self.next.epoch = epoch;
        Ok(())
    }

    /// Steps over a control batch ending at `last_offset` (the quorum's own records, such as a
    /// LeaderChangeMessage): the image moves past it and nothing else changes.
    pub fn skip(&mut self, last_offset: i64, epoch: i32) {
        self.next.offset = self.next.offset.max(last_offset);
        self.next.epoch = epoch;
    }

    fn replay_record(&mut self, offset: i64, record: &MetadataRecord) -> Result<(), ReplayError> {
        let next = &mut self.next;
        match record {
            MetadataRecord::TopicRecord(r) => {
                if let Some(id) = next.topic_ids.get(&r.name) {
                    return Err(err(
                        offset,
                        record,
                        format!("topic {} exists already (id {id})", r.name),
                    ));
                }
                if r.topic_id == Uuid::ZERO {
                    return Err(err(offset, record, format!("topic {} has the zero id", r.name)));
                }
                if let Some(t) = next.topics_by_id.get(&r.topic_id) {
                    return Err(err(
                        offset,
                        record,
                        format!("id {} is topic {} already", r.topic_id, t.name),
                    ));
                }
                if r.name.is_empty() {
                    return Err(err(offset, record, "empty topic name"));
                }
                next.topic_ids.insert(r.name.clone(), r.topic_id);
                next.topics_by_id.insert(
                    r.topic_id,
                    Arc::new(TopicImage {
                        name: r.name.clone(),
                        id: r.topic_id,
                        partitions: BTreeMap::new(),
                    }),
                );
                if !self.changes.deleted_topics.contains_key(&r.topic_id) {
                    self.changes.created_topics.insert(r.topic_id);
                }
            }
            MetadataRecord::PartitionRecord(r) => {
                let Some(topic) = next.topics_by_id.get_mut(&r.topic_id) else {
                    return Err(err(offset, record, format!("no topic has id {}", r.topic_id)));
                };
                if r.partition_id < 0 {
                    return Err(err(offset, record, format!("partition {} is negative", r.partition_id)));
                }
                if r.replicas.is_empty() || !r.isr.iter().all(|b| r.replicas.contains(b)) {
                    return Err(err(
                        offset,
                        record,
                        format!("replicas {:?} and ISR {:?} do not fit", r.replicas, r.isr),
                    ));
                }
                if let Some(old) = topic.partitions.get(&r.partition_id) {
                    if r.leader_epoch < old.leader_epoch || r.partition_epoch < old.partition_epoch {
                        return Err(err(
                            offset,
                            record,
                            format!(
                                "partition {} would go back from leader epoch {} / partition epoch {} to {} / {}",
                                r.partition_id,
                                old.leader_epoch,
                                old.partition_epoch,
                                r.leader_epoch,
                                r.partition_epoch
                            ),
                        ));
                    }
                }
                Arc::make_mut(topic).partitions.insert(
                    r.partition_id,
                    PartitionRegistration {
                        replicas: r.replicas.clone(),
                        isr: r.isr.clone(),
                        removing_replicas: r.removing_replicas.clone(),
                        adding_replicas: r.adding_replicas.clone(),
                        leader: r.leader,
                        leader_recovery_state: r.leader_recovery_state,
                        leader_epoch: r.leader_epoch,
                        partition_epoch: r.partition_epoch,
                        elr: r.eligible_leader_replicas.clone().unwrap_or_default(),
                        last_known_elr: r.last_known_elr.clone().unwrap_or_default(),
                    },
                );
                if !self.changes.created_topics.contains(&r.topic_id) {
                    self.changes.changed_topics.insert(r.topic_id);
                }
            }
            MetadataRecord::PartitionChangeRecord(r) => {
                let Some(topic) = next.topics_by_id.get_mut(&r.topic_id) else {
                    return Err(err(offset, record, format!("no topic has id {}", r.topic_id)));
                };
                let Some(old) = topic.partitions.get(&r.partition_id) else {
                    return Err(err(
                        offset,
                        record,
                        format!("topic {} has no partition {}", topic.name, r.partition_id),
                    ));
                };
                // Kafka's `PartitionRegistration.merge`: a new leader bumps the leader epoch;
                // every change bumps the partition epoch.
                let mut p = old.clone();
                if let Some(isr) = &r.isr {
                    p.isr = isr.clone();
                }
                if let Some(replicas) = &r.replicas {
                    p.replicas = replicas.clone();
                }
                if let Some(v) = &r.removing_replicas {
                    p.removing_replicas = v.clone();
                }
                if let Some(v) = &r.adding_replicas {
                    p.adding_replicas = v.clone();
                }
                if let Some(v) = &r.eligible_leader_replicas {
                    p.elr = v.clone();
                }
                if let Some(v) = &r.last_known_elr {
                    p.last_known_elr = v.clone();
                }
                if r.leader != -2 {
                    p.leader = r.leader;
                    p.leader_epoch = p
                        .leader_epoch
                        .checked_add(1)
                        .ok_or_else(|| err(offset, record, "leader epoch overflow"))?;
                }
                if r.leader_recovery_state != -1 {
                    p.leader_recovery_state = r.leader_recovery_state;
                }
                p.partition_epoch = p
                    .partition_epoch
                    .checked_add(1)
                    .ok_or_else(|| err(offset, record, "partition epoch overflow"))?;
                if p.replicas.is_empty()
                    || !p.isr.iter().chain(&p.elr).all(|b| p.replicas.contains(b))
                    || p.elr.iter().any(|b| p.isr.contains(b))
                {
                    return Err(err(
                        offset,
                        record,
                        format!(
                            "replicas {:?}, ISR {:?} and ELR {:?} do not fit",
                            p.replicas, p.isr, p.elr
                        ),
                    ));
                }
                Arc::make_mut(topic).partitions.insert(r.partition_id, p);
                if !self.changes.created_topics.contains(&r.topic_id) {
                    self.changes.changed_topics.insert(r.topic_id);
                }
            }
            MetadataRecord::RemoveTopicRecord(r) => {
                let Some(topic) = next.topics_by_id.remove(&r.topic_id) else {
                    return Err(err(offset, record, format!("no topic has id {}", r.topic_id)));
                };
                next.topic_ids.remove(&topic.name);
                // As in Kafka, a topic's configs go with it.
                let resource = ConfigResource::topic(&topic.name);
                if next.configs.remove(&resource).is_some() {
                    self.changes.configs.insert(resource);
                }
                self.changes.changed_topics.remove(&r.topic_id);
                if !self.changes.created_topics.remove(&r.topic_id) {
                    if let Some(before) = self.base.topics_by_id.get(&r.topic_id) {
                        self.changes.deleted_topics.insert(r.topic_id, before.clone());
                    }
                }
            }
            MetadataRecord::ConfigRecord(r) => {
                if r.resource_type != crate::resource_type::TOPIC && r.resource_type != crate::resource_type::BROKER {
                    return Err(err(
                        offset,
                        record,
                        format!("unknown resource type {}", r.resource_type),
                    ));
                }
                let resource = ConfigResource {
                    resource_type: r.resource_type,
                    name: r.resource_name.clone(),
                };
                match &r.value {
                    Some(v) => {
                        next.configs
                            .entry(resource.clone())
                            .or_default()
                            .insert(r.name.clone(), v.clone());
                    }
                    None => {
                        if let Some(values) = next.configs.get_mut(&resource) {
                            values.remove(&r.name);
                            if values.is_empty() {
                                next.configs.remove(&resource);
                            }
                        }
                    }
                }
                self.changes.configs.insert(resource);
            }
            MetadataRecord::ProducerIdsRecord(r) => {
                if r.next_producer_id <= next.next_producer_id {
                    return Err(err(
                        offset,
                        record,
                        format!(
                            "the next producer id would go back from {} to {}",
                            next.next_producer_id, r.next_producer_id
                        ),
                    ));
                }
                next.next_producer_id = r.next_producer_id;
                next.producer_ids_broker = r.broker_id;
                self.changes.producer_ids = true;
            }
            MetadataRecord::FeatureLevelRecord(r) => {
                if let Some(id) = &r.sluice_cluster_id {
                    match &next.cluster_id {
                        Some(ours) if ours != id => {
                            return Err(err(
                                offset,
                                record,
                                format!("names cluster {id}, but the log belongs to cluster {ours}"),
                            ))
                        }
                        _ => next.cluster_id = Some(id.clone()),
                    }
                }
                if r.feature_level == 0 {
                    next.features.remove(&r.name);
                } else {
                    next.features.insert(r.name.clone(), r.feature_level);
                }
                self.changes.features = true;
            }
            MetadataRecord::RegisterBrokerRecord(r) => {
                if let Some(old) = next.brokers.get(&r.broker_id) {
                    if r.broker_epoch <= old.epoch {
                        return Err(err(
                            offset,
                            record,
                            format!(
                                "broker {} registers with epoch {}, not above {}",
                                r.broker_id, r.broker_epoch, old.epoch
                            ),
                        ));
                    }
                }
                next.brokers.insert(
                    r.broker_id,
                    BrokerRegistration {
                        id: r.broker_id,
                        epoch: r.broker_epoch,
                        incarnation_id: r.incarnation_id,
                        endpoints: r
                            .end_points
                            .iter()
                            .map(|e| Endpoint {
                                name: e.name.clone(),
                                host: e.host.clone(),
                                port: e.port,
                                security_protocol: e.security_protocol,
                            })
                            .collect(),
                        rack: r.rack.clone(),
                        fenced: r.fenced,
                        in_controlled_shutdown: r.in_controlled_shutdown,
                    },
                );
                self.changes.brokers.insert(r.broker_id);
            }
            MetadataRecord::UnregisterBrokerRecord(r) => {
                if next.brokers.remove(&r.broker_id).is_none() {
                    return Err(err(offset, record, format!("broker {} is not registered", r.broker_id)));
                }
                self.changes.brokers.insert(r.broker_id);
            }
            MetadataRecord::FenceBrokerRecord(r) => self.set_broker(offset, record, r.id, r.epoch, Some(true), None)?,
            MetadataRecord::UnfenceBrokerRecord(r) => {
                self.set_broker(offset, record, r.id, r.epoch, Some(false), None)?
            }
            MetadataRecord::BrokerRegistrationChangeRecord(r) => {
                // 0: unchanged, 1: true (fenced) / 2: false, as Kafka's `BrokerRegistrationFencingChange`.
                let tri = |v: i8| match v {
                    1 => Some(true),
                    -1 | 2 => Some(false),
                    _ => None,
                };
                let shutdown = match r.in_controlled_shutdown {
                    1 => Some(true),
                    _ => None,
                };
                self.set_broker(offset, record, r.broker_id, r.broker_epoch, tri(r.fenced), shutdown)?
            }
            // Not kept in the image yet (Sluice writes none of them): ACLs, SCRAM credentials,
            // quotas, delegation tokens, controller registrations, transactions markers.
            // A NoOpRecord is a heartbeat of the quorum's leader and changes nothing.
            MetadataRecord::NoOpRecord(_)
            | MetadataRecord::RegisterControllerRecord(_)
            | MetadataRecord::AccessControlEntryRecord(_)
            | MetadataRecord::RemoveAccessControlEntryRecord(_)
            | MetadataRecord::UserScramCredentialRecord(_)
            | MetadataRecord::RemoveUserScramCredentialRecord(_)
            | MetadataRecord::ClientQuotaRecord(_)
            | MetadataRecord::DelegationTokenRecord(_)
            | MetadataRecord::RemoveDelegationTokenRecord(_)
            | MetadataRecord::BeginTransactionRecord(_)
            | MetadataRecord::EndTransactionRecord(_)
            | MetadataRecord::AbortTransactionRecord(_) => {}
        }
        Ok(())
    }

    fn set_broker(
        &mut self,
        offset: i64,
        record: &MetadataRecord,
        id: i32,
        epoch: i64,
        fenced: Option<bool>,
        in_controlled_shutdown: Option<bool>,
    ) -> Result<(), ReplayError> {
        let Some(b) = self.next.brokers.get_mut(&id) else {
            return Err(err(offset, record, format!("broker {id} is not registered")));
        };
        if b.epoch != epoch {
            return Err(err(
                offset,
                record,
                format!("broker {id} has epoch {}, not {epoch}", b.epoch),
            ));
        }
        if let Some(f) = fenced {
            b.fenced = f;
        }
        if let Some(s) = in_controlled_shutdown {
            b.in_controlled_shutdown = s;
        }
        self.changes.brokers.insert(id);
        Ok(())
    }

    /// The next image, and what changed from the base.
    pub fn apply(self) -> (MetadataImage, Changes) {
        (self.next, self.changes)
    }
}

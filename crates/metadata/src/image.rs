//! The metadata image: what the metadata log says the cluster is, as of one offset.

use std::collections::BTreeMap;
use std::sync::Arc;
use wire::Uuid;

/// Where a partition's replicas are and who leads it (Kafka's `PartitionRegistration`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRegistration {
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub removing_replicas: Vec<i32>,
    pub adding_replicas: Vec<i32>,
    /// -1: no leader.
    pub leader: i32,
    /// 0: recovered, 1: recovering (after an unclean election).
    pub leader_recovery_state: i8,
    /// Grows whenever the leader changes.
    pub leader_epoch: i32,
    /// Grows with every change to the registration.
    pub partition_epoch: i32,
    /// Eligible leader replicas (KIP-966): replicas that left the ISR while it was below
    /// `min.insync.replicas` (so the high watermark stood still and they hold everything below
    /// it); elected when no ISR member can lead. Never overlaps the ISR.
    pub elr: Vec<i32>,
    /// The ELR members last known before it emptied (KIP-966), for an operator's recovery.
    pub last_known_elr: Vec<i32>,
}

impl PartitionRegistration {
    /// A new partition led by `leader`, its only replica.
    pub fn single(leader: i32) -> PartitionRegistration {
        PartitionRegistration {
            replicas: vec![leader],
            isr: vec![leader],
            removing_replicas: vec![],
            adding_replicas: vec![],
            leader,
            leader_recovery_state: 0,
            leader_epoch: 0,
            partition_epoch: 0,
            elr: vec![],
            last_known_elr: vec![],
        }
    }
}

/// One topic: its name, id and partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub id: Uuid,
    /// By partition index; indexes run 0..len once every PartitionRecord of a change is in.
    pub partitions: BTreeMap<i32, PartitionRegistration>,
}

impl TopicImage {
    pub fn partition(&self, index: i32) -> Option<&PartitionRegistration> {
        self.partitions.get(&index)
    }

    pub fn partition_count(&self) -> usize {
        self.partitions.len()
    }
}

/// A listener of a broker, as registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub security_protocol: i16,
}

/// A broker as it registered itself (Kafka's `BrokerRegistration`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRegistration {
    pub id: i32,
    /// Grows with each registration (each start of the broker).
    pub epoch: i64,
    pub incarnation_id: Uuid,
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
    pub fenced: bool,
    pub in_controlled_shutdown: bool,
}

/// A resource configs belong to: a topic (by name), a broker (by id as text) or the cluster
/// default of every broker (resource type broker, name "").
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigResource {
    pub resource_type: i8,
    pub name: String,
}

impl ConfigResource {
    pub fn topic(name: &str) -> ConfigResource {
        ConfigResource {
            resource_type: crate::resource_type::TOPIC,
            name: name.to_string(),
        }
    }

    pub fn broker(name: &str) -> ConfigResource {
        ConfigResource {
            resource_type: crate::resource_type::BROKER,
            name: name.to_string(),
        }
    }
}

/// The cluster as of `offset` of the metadata log. Every map is ordered, so everything
/// derived from an image (snapshots, responses) comes out in one order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataImage {
    /// Offset of the last record applied (-1: none).
    pub offset: i64,
    /// Leader epoch of the batch that record was in.
    pub epoch: i32,
    pub features: BTreeMap<String, i16>,
    /// The cluster's id, as its first leader wrote it on the `metadata.version` record (Sluice's
    /// tagged field); `None` in a log bootstrapped before it was written there.
    pub cluster_id: Option<String>,
    pub brokers: BTreeMap<i32, BrokerRegistration>,
    pub(crate) topics_by_id: BTreeMap<Uuid, Arc<TopicImage>>,
    pub(crate) topic_ids: BTreeMap<String, Uuid>,
    pub(crate) configs: BTreeMap<ConfigResource, BTreeMap<String, String>>,
    /// The first producer id not yet handed out in a block (0: none handed out).
    pub next_producer_id: i64,
    /// The broker the last block went to (-1: none).
    pub producer_ids_broker: i32,
}

impl MetadataImage {
    /// The image of an empty log.
    pub fn empty() -> MetadataImage {
        MetadataImage {
            offset: -1,
            epoch: -1,
            producer_ids_broker: -1,
            ..MetadataImage::default()
        }
    }

    pub fn topic(&self, name: &str) -> Option<&Arc<TopicImage>> {
        self.topic_ids.get(name).and_then(|id| self.topics_by_id.get(id))
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&Arc<TopicImage>> {
        self.topics_by_id.get(id)
    }

    /// Every topic, by name.
    pub fn topics(&self) -> impl Iterator<Item = &Arc<TopicImage>> {
        self.topic_ids.values().filter_map(|id| self.topics_by_id.get(id))
    }

    pub fn topic_count(&self) -> usize {
        self.topics_by_id.len()
    }

    /// Partitions of every topic.
    pub fn partition_count(&self) -> usize {
        self.topics_by_id.values().map(|t| t.partitions.len()).sum()
    }

    /// The configs set on `resource` (empty: none).
    pub fn configs(&self, resource: &ConfigResource) -> &BTreeMap<String, String> {
        static NONE: BTreeMap<String, String> = BTreeMap::new();
        self.configs.get(resource).unwrap_or(&NONE)
    }

    /// Every resource with configs set, in order.
    pub fn config_resources(&self) -> impl Iterator<Item = (&ConfigResource, &BTreeMap<String, String>)> {
        self.configs.iter()
    }

    pub fn topic_configs(&self, name: &str) -> &BTreeMap<String, String> {
        self.configs(&ConfigResource::topic(name))
    }
}

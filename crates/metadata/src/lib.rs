//! The cluster's metadata as Kafka's KRaft keeps it: a log of metadata records
//! (`__cluster_metadata`), and the image they add up to.
//!
//! - [`MetadataImage`]: brokers, topics by id and by name with their partition registrations
//!   (replicas, ISR, leader, leader epoch, partition epoch), topic/broker/cluster-default
//!   configs, the producer-id blocks handed out, and features. Immutable; shared as an `Arc`.
//! - [`MetadataDelta`]: records replayed on top of an image, checked as they come (a record
//!   that contradicts the image is an error, never silently applied), then applied into the
//!   next image together with a summary of what changed ([`Changes`]) for whoever must act on
//!   it (the log manager opens and removes partition logs from it).
//! - [`frame`]: one record to and from the bytes of a record value, and a change to and from
//!   one record batch, in Kafka's layout (`MetadataRecordSerde`), so Kafka's tools read our log.
//! - [`placement`]: where new partitions' replicas go (round robin, rack-aware).
//! - [`sessions`]: the active controller's rules for broker sessions (registration,
//!   heartbeats, fencing and unfencing), with their seeded simulation.
//! - [`seeded`]: the randomness and seed selection the cluster's simulations share.
//! - [`snapshot`]: an image as the records that rebuild it, written as Kafka's snapshot files
//!   are (header control batch, data batches, footer control batch).
//!
//! Pure: no I/O, no tokio, no clock. The broker owns the log files and decides when to
//! snapshot and commits what these rules decide.

pub mod delta;
pub mod frame;
pub mod image;
pub mod placement;
pub mod seeded;
pub mod sessions;
pub mod snapshot;

pub use delta::{Changes, MetadataDelta, ReplayError};
pub use image::{BrokerRegistration, ConfigResource, Endpoint, MetadataImage, PartitionRegistration, TopicImage};
pub use wire::kafka_records::metadata::MetadataRecord;
pub use wire::Uuid;

/// Kafka's `ConfigResource.Type` codes, as ConfigRecord's `ResourceType` carries them.
pub mod resource_type {
    pub const TOPIC: i8 = 2;
    pub const BROKER: i8 = 4;
}

/// The feature level of `metadata.version` this node writes: Kafka 3.9 (`IBP_3_9_IV0`),
/// whose records (PartitionRecord v0 without directories, no ELR) are the ones written here.
pub const METADATA_VERSION_LEVEL: i16 = 21;

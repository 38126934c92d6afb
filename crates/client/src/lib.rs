//! Sluice's native async client for the Kafka protocol: a producer, a consumer (alone or in a
//! group) and an admin client, built on `wire` and tokio. It speaks to any Kafka-compatible
//! broker; nothing assumes a single node (requests go to each partition's leader and each
//! group's coordinator, found from metadata).
//!
//! - `conn`: one connection: framing, correlation ids, version negotiation.
//! - `cluster`: `Client`, the shared view of brokers, topics, leaders and coordinators.
//! - `producer`, `partitioner`: batching, compression, idempotence, Java-identical placement.
//! - `consumer`, `group`, `assignor`: fetching, positions, commits, group membership.
//! - `admin`: topics, configs, groups, offsets, cluster.

pub mod admin;
pub mod assignor;
pub mod cluster;
pub mod conn;
pub mod consumer;
pub mod error;
pub mod group;
pub mod partitioner;
pub mod producer;

pub use admin::{Admin, OffsetSpec};
pub use cluster::{Client, ClientConfig};
pub use consumer::{AutoOffsetReset, Consumer, ConsumerConfig, ConsumerRecord, Seek};
pub use error::{Error, Result};
pub use producer::{Producer, ProducerConfig, ProducerRecord, RecordMetadata};
pub use wire::Compression;

//! The Sluice broker: listeners and connections (`server`), the request dispatch and one module
//! per Kafka API (`handlers`), configuration (`config`) and the node's identity on disk (`meta`).
//!
//! Bytes are parsed only by `wire`; data is stored only by `storage`. This crate turns requests
//! into calls on those and responses back into bytes.

pub mod admin;
pub mod config;
pub mod dynamic_config;
pub mod group;
pub mod handlers;
pub mod heavy;
pub mod meta;
pub mod metrics;
pub mod producers;
pub mod ratelog;
pub mod response_memory;
pub mod server;
pub mod topics;

pub use config::{BrokerConfig, ConfigLayers};
pub use server::Server;

/// What every handler can see of the broker.
pub struct Broker {
    pub config: BrokerConfig,
    pub cluster_id: String,
    pub topics: topics::Topics,
    /// Broker settings changed at runtime (topic config defaults).
    pub dynamic: dynamic_config::DynamicConfigs,
    pub producer_ids: producers::ProducerIds,
    pub groups: group::coordinator::Coordinator,
    /// Woken after every append, so waiting fetches look again.
    pub data_arrived: tokio::sync::Notify,
    /// Record data held in fetch responses not yet written (`queued.max.response.bytes`).
    pub response_memory: std::sync::Arc<response_memory::ResponseMemory>,
    /// Low-priority threads that check costly produced batches (`heavy`).
    pub checks: heavy::Heavy,
    /// The low-priority thread that creates and deletes topics (`heavy`).
    pub topic_changes: heavy::Heavy,
    pub metrics: metrics::Metrics,
}

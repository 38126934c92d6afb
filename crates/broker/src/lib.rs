//! The Sluice broker: listeners and connections (`server`), the request dispatch and one module
//! per Kafka API (`handlers`), configuration (`config`) and the node's identity on disk (`meta`).
//!
//! Bytes are parsed only by `wire`; data is stored only by `storage`. This crate turns requests
//! into calls on those and responses back into bytes.

pub mod admin;
pub mod clock;
pub mod config;
pub mod controller;
pub mod dynamic_config;
pub mod group;
pub mod handlers;
pub mod heavy;
pub mod meta;
pub mod metadata_log;
pub mod metrics;
pub mod producers;
pub mod quorum;
pub mod random;
pub mod ratelog;
pub mod replica;
pub mod response_memory;
pub mod server;
pub mod topics;
pub mod upgrade;

pub use config::{BrokerConfig, ConfigLayers};

/// Makes any panic end the process at once (fail-stop), after saying where: a panic leaves
/// memory half-updated — a partition's state, a group, a pool's count — and a broker that
/// keeps serving from it could answer wrongly or lose acknowledged data. Whatever was
/// acknowledged is on disk (or in the page cache) already, so a restart recovers it. The
/// server installs this before anything starts; library users and tests keep unwinding.
pub fn fail_stop_on_panic() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        tracing::error!(panic = %info, "panic: stopping the broker (fail-stop); restart it to recover");
        std::process::abort();
    }));
}
pub use server::Server;

/// What every handler can see of the broker.
pub struct Broker {
    pub config: BrokerConfig,
    pub cluster_id: String,
    /// Every file the broker reads and writes goes through this one file system.
    pub fs: std::sync::Arc<dyn storage::Fs>,
    /// The metadata log and the image every cluster question is answered from.
    pub metadata: std::sync::Arc<metadata_log::MetadataLog>,
    pub topics: topics::Topics,
    /// Broker settings changed at runtime (topic config defaults).
    pub dynamic: dynamic_config::DynamicConfigs,
    pub producer_ids: producers::ProducerIds,
    pub groups: group::coordinator::Coordinator,
    /// Record data held in fetch responses not yet written (`queued.max.response.bytes`).
    pub response_memory: std::sync::Arc<response_memory::ResponseMemory>,
    /// Low-priority threads that check costly produced batches (`heavy`).
    pub checks: heavy::Heavy,
    /// The low-priority thread that creates and deletes topics (`heavy`).
    pub topic_changes: heavy::Heavy,
    pub metrics: metrics::Metrics,
    /// The one clock the broker core reads (`clock`): a `SimClock` in tests and simulations.
    pub clock: std::sync::Arc<dyn clock::Clock>,
    /// The one source of randomness (`random`), seeded from the OS or, in tests, given.
    pub random: std::sync::Arc<random::Random>,
}

//! Consumer groups (the classic protocol): the per-group state machine (`state`), the records
//! of `__consumer_offsets` (`store`), and the coordinator that ties them to requests, timers
//! and the log (`coordinator`).

pub mod coordinator;
pub mod memory;
pub mod state;
pub mod store;

//! The metadata quorum between controllers: Kafka's wire form of the `raft` core's messages
//! (`wire`), and the network driver that exchanges them (`net`: a thread per node driving the
//! core in `crate::metadata_log`, the controller listener, and connections to the other
//! voters). A single node runs the core without a network, as a quorum of one.

pub mod net;
pub mod wire;

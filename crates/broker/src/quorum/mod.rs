//! The metadata quorum between controllers. Today: Kafka's wire form of the `raft` core's
//! messages (`wire`). The network driver that exchanges them on the controller listener —
//! one task per controller owning the core and the metadata log — is issue 19's next step; a
//! single node runs the core locally as a quorum of one (`crate::metadata_log`).

pub mod wire;

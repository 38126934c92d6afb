//! Kafka's ISR replication of partition data, as pure rules (issue 20). Kafka's `Partition`,
//! `ReplicaFetcherThread` and the controller's `ReplicationControlManager` are the reference.
//!
//! - [`leader::Leader`]: one partition as its leader sees it — each follower's position (what
//!   its fetches say it holds, when it was last caught up), the high watermark (the smallest
//!   log end over the ISR, advancing only while the ISR holds at least `min.insync.replicas`),
//!   and the ISR changes to ask the controller for (AlterPartition): a follower that has not
//!   caught up for `replica.lag.time.max.ms` leaves, one that has caught up joins. One change
//!   in flight at a time; until it is committed the high watermark counts the larger ISR
//!   (Kafka's "maximal ISR"), so nothing is acknowledged on the strength of a change that
//!   may not happen.
//! - [`follower`]: where a follower whose fetch found a diverging epoch truncates to (the
//!   leader's end of that epoch, or its own if smaller: never to the high watermark, as Kafka
//!   did before KIP-101), and which divergence a leader reports for a fetch.
//! - [`control`]: the active controller's side: AlterPartition checked as Kafka checks it
//!   (`FENCED_LEADER_EPOCH`, `INVALID_UPDATE_VERSION`, `INELIGIBLE_REPLICA`, …), eligible
//!   leader replicas (KIP-966: members that left the ISR while it was below
//!   `min.insync.replicas` still hold everything below the high watermark), the election of a
//!   new leader (the first eligible ISR member in replica order, else the first eligible ELR
//!   member), and what a broker's fencing, return or unclean restart does to a partition.
//!
//! No I/O, no clock, no threads: the broker passes in what its logs and the metadata image
//! say and the time, and carries out what comes back. The seeded simulation (`sim.rs`) drives
//! a replicated partition through crashes, power losses, lost and delayed messages and
//! elections, and checks the replication invariants after every step.

pub mod control;
pub mod follower;
pub mod leader;

#[cfg(test)]
mod sim;

/// A broker's id.
pub type BrokerId = i32;

/// A deliberately broken rule, for the simulation's own test that its checks see it.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Broken {
    /// A follower that learns of a new leader truncates to its high watermark first (Kafka
    /// before KIP-101).
    TruncateToHighWatermark,
    /// The high watermark advances even while the ISR is below `min.insync.replicas`.
    HighWatermarkBelowMinIsr,
    /// A follower joins the ISR without having caught up to the high watermark.
    ExpandEarly,
    /// The controller elects any live replica, in sync or not.
    ElectOutOfSync,
}

//! The native async Kafka client: producer, consumer and admin.
//!
//! Not built yet (issue 6).

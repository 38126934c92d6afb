//! The partition log on disk: `LogManager` → `Log` → `Segment` with offset and time indexes,
//! recovery, retention and checkpoints.
//!
//! Not built yet (issue 3). Nothing in the broker stores data so far.

//! Idempotent producers: producer id allocation, and per-partition producer state that turns
//! a retried batch into success without a second copy and refuses gaps and stale epochs.
//!
//! The state machine does no I/O. Partition state is rebuilt from the log's batch headers on
//! startup, or, after a clean shutdown, read back from the snapshot written then (see
//! `Topics::save_producer_state`); ids are handed out in blocks, each committed to the
//! metadata log (a ProducerIdsRecord, as Kafka's controller writes) before any id of it is
//! used, so an id is never given out twice, even across crashes.

use crate::metadata_log::MetadataLog;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use wire::ErrorCode;

/// Batches remembered per producer: Kafka's limit of in-flight requests per connection for
/// idempotence (`max.in.flight.requests.per.connection` ≤ 5).
const CACHED_BATCHES: usize = 5;

/// Producers remembered per partition. Past it, the producer that appended least recently
/// is forgotten (Kafka expires them after `producer.id.expiration.ms`); a forgotten producer
/// that comes back is accepted as new.
const PRODUCERS_PER_PARTITION_MAX: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct CachedBatch {
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<CachedBatch>,
    /// A counter value for least-recently-used eviction.
    last_used: u64,
}

/// What to do with an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it.
    Append,
    /// Already appended at this base offset: answer success, append nothing.
    Duplicate { base_offset: i64 },
}

/// The idempotence fields of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    /// `first_seq + record count - 1`, wrapping past `i32::MAX` to 0 as Kafka's sequences do.
    pub last_seq: i32,
}

impl ProducerBatch {
    pub fn new(producer_id: i64, epoch: i16, first_seq: i32, last_offset_delta: i32) -> ProducerBatch {
        let last_seq = ((i64::from(first_seq) + i64::from(last_offset_delta)) % (i64::from(i32::MAX) + 1)) as i32;
        ProducerBatch {
            producer_id,
            epoch,
            first_seq,
            last_seq,
        }
    }
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

/// The producer state of one partition.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
    clock: u64,
}

impl ProducerStates {
    /// Brings state read from a snapshot file within the limits appends keep.
    pub fn sanitize(&mut self) {
        for e in self.producers.values_mut() {
            while e.batches.len() > CACHED_BATCHES {
                e.batches.pop_front();
            }
            self.clock = self.clock.max(e.last_used);
        }
        while self.producers.len() > PRODUCERS_PER_PARTITION_MAX {
            let Some(oldest) = self
                .producers
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(id, _)| *id)
            else {
                break;
            };
            self.producers.remove(&oldest);
        }
    }

    /// Decides what to do with `b`; changes nothing.
    pub fn check(&self, b: &ProducerBatch) -> Result<SequenceCheck, (ErrorCode, String)> {
        let Some(entry) = self.producers.get(&b.producer_id) else {
            // A producer we do not know (new, or forgotten): accept it as it is.
            return Ok(SequenceCheck::Append);
        };
        if b.epoch < entry.epoch {
            return Err((
                ErrorCode::InvalidProducerEpoch,
                format!(
                    "producer {} epoch {} is older than the current {}",
                    b.producer_id, b.epoch, entry.epoch
                ),
            ));
        }
        if b.epoch > entry.epoch {
            // A bumped epoch starts its sequences again at 0.
            return if b.first_seq == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err((
                    ErrorCode::OutOfOrderSequenceNumber,
                    format!("a new epoch must start at sequence 0, not {}", b.first_seq),
                ))
            };
        }
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|c| c.first_seq == b.first_seq && c.last_seq == b.last_seq)
        {
            return Ok(SequenceCheck::Duplicate {
                base_offset: dup.base_offset,
            });
        }
        match entry.batches.back() {
            Some(last) if b.first_seq != next_seq(last.last_seq) => Err((
                ErrorCode::OutOfOrderSequenceNumber,
                format!(
                    "producer {} sent sequence {} after {}; expected {}",
                    b.producer_id,
                    b.first_seq,
                    last.last_seq,
                    next_seq(last.last_seq)
                ),
            )),
            _ => Ok(SequenceCheck::Append),
        }
    }

    /// Records that `b` was appended at `base_offset`.
    pub fn record(&mut self, b: &ProducerBatch, base_offset: i64) {
        self.clock += 1;
        let clock = self.clock;
        if !self.producers.contains_key(&b.producer_id) && self.producers.len() >= PRODUCERS_PER_PARTITION_MAX {
            if let Some(oldest) = self
                .producers
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(id, _)| *id)
            {
                self.producers.remove(&oldest);
            }
        }
        let entry = self.producers.entry(b.producer_id).or_insert_with(|| ProducerEntry {
            epoch: b.epoch,
            batches: VecDeque::with_capacity(CACHED_BATCHES),
            last_used: clock,
        });
        if b.epoch != entry.epoch {
            entry.epoch = b.epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == CACHED_BATCHES {
            entry.batches.pop_front();
        }
        entry.batches.push_back(CachedBatch {
            first_seq: b.first_seq,
            last_seq: b.last_seq,
            base_offset,
        });
        entry.last_used = clock;
    }
}

/// Hands out producer ids, never the same one twice.
#[derive(Debug)]
pub struct ProducerIds {
    metadata: Arc<MetadataLog>,
    node_id: i32,
    voters: std::collections::BTreeMap<i32, String>,
    /// (next id to hand out, end of the block committed)
    state: Mutex<(i64, i64)>,
}

/// Producer ids per block committed to the metadata log.
pub(crate) const ID_BLOCK: i64 = 1000;

impl ProducerIds {
    /// Ids below the last block committed may have been handed out before a crash: each
    /// block starts where the image's last one ended. `voters`: where to ask the active
    /// controller for a block when this node does not lead the quorum.
    pub fn open(
        metadata: Arc<MetadataLog>,
        node_id: i32,
        voters: std::collections::BTreeMap<i32, String>,
    ) -> ProducerIds {
        ProducerIds {
            metadata,
            node_id,
            voters,
            state: Mutex::new((0, 0)),
        }
    }

    /// The next id. Blocking when a new block is needed: the active controller commits it
    /// (an fsync and the quorum's round trip; asked over the controller listener when it is
    /// another node), so ids never repeat across brokers.
    pub fn allocate(&self) -> Result<i64, String> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.0 >= state.1 {
            *state = self.new_block()?;
        }
        let id = state.0;
        state.0 += 1;
        Ok(id)
    }

    /// A new block, (first id, end).
    fn new_block(&self) -> Result<(i64, i64), String> {
        let leader = self.metadata.leader().ok_or("no active controller is known yet")?;
        if leader == self.node_id {
            let (start, len) =
                crate::controller::allocate_producer_ids(&self.metadata, self.node_id).map_err(|e| e.to_string())?;
            return Ok((start, start + i64::from(len)));
        }
        let addr = self
            .voters
            .get(&leader)
            .ok_or_else(|| format!("no address for the active controller, node {leader}"))?;
        let epoch = self.metadata.image().brokers.get(&self.node_id).map_or(-1, |b| b.epoch);
        let req = wire::messages::AllocateProducerIdsRequest {
            broker_id: self.node_id,
            broker_epoch: epoch,
        };
        match crate::quorum::net::call_blocking(
            addr,
            wire::messages::ApiKey::AllocateProducerIds,
            0,
            &req,
            std::time::Duration::from_secs(10),
        )? {
            wire::messages::ResponseBody::AllocateProducerIds(r) if r.error_code == 0 && r.producer_id_len > 0 => {
                Ok((r.producer_id_start, r.producer_id_start + i64::from(r.producer_id_len)))
            }
            wire::messages::ResponseBody::AllocateProducerIds(r) => Err(format!(
                "the active controller (node {leader}) refused a producer-id block with error code {}",
                r.error_code
            )),
            _ => Err("an answer of another kind".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(epoch: i16, first: i32, count: i32) -> ProducerBatch {
        ProducerBatch::new(7, epoch, first, count - 1)
    }

    #[test]
    fn in_order_batches_append_and_retries_are_duplicates() {
        let mut s = ProducerStates::default();
        assert_eq!(s.check(&batch(0, 0, 3)), Ok(SequenceCheck::Append));
        s.record(&batch(0, 0, 3), 100);
        assert_eq!(s.check(&batch(0, 3, 2)), Ok(SequenceCheck::Append));
        s.record(&batch(0, 3, 2), 103);
        assert_eq!(
            s.check(&batch(0, 0, 3)),
            Ok(SequenceCheck::Duplicate { base_offset: 100 })
        );
        assert_eq!(
            s.check(&batch(0, 3, 2)),
            Ok(SequenceCheck::Duplicate { base_offset: 103 })
        );
    }

    #[test]
    fn gaps_and_stale_epochs_are_refused() {
        let mut s = ProducerStates::default();
        s.record(&batch(2, 0, 3), 0);
        assert_eq!(
            s.check(&batch(2, 4, 1)).unwrap_err().0,
            ErrorCode::OutOfOrderSequenceNumber
        );
        assert_eq!(s.check(&batch(1, 3, 1)).unwrap_err().0, ErrorCode::InvalidProducerEpoch);
        assert_eq!(
            s.check(&batch(3, 5, 1)).unwrap_err().0,
            ErrorCode::OutOfOrderSequenceNumber
        );
        assert_eq!(s.check(&batch(3, 0, 1)), Ok(SequenceCheck::Append));
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut s = ProducerStates::default();
        for i in 0..6 {
            s.record(&batch(0, i, 1), i64::from(i));
        }
        assert_eq!(
            s.check(&batch(0, 1, 1)),
            Ok(SequenceCheck::Duplicate { base_offset: 1 })
        );
        assert!(
            s.check(&batch(0, 0, 1)).is_err(),
            "too old to be recognised; out of order"
        );
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let b = ProducerBatch::new(1, 0, i32::MAX - 1, 2);
        assert_eq!(b.last_seq, 0);
        let mut s = ProducerStates::default();
        s.record(&b, 0);
        assert_eq!(s.check(&ProducerBatch::new(1, 0, 1, 0)), Ok(SequenceCheck::Append));
    }

    #[test]
    fn ids_are_unique_across_restarts_and_crashes() {
        use storage::sim::{CrashMode, SimFs};
        let sim = Arc::new(SimFs::new());
        let fs: Arc<dyn storage::Fs> = sim.clone();
        let dir = std::path::Path::new("/data");
        let open = || {
            let log = crate::metadata_log::MetadataLog::open(dir, fs.clone(), u64::MAX)
                .unwrap()
                .log;
            ProducerIds::open(Arc::new(log), 1, Default::default())
        };
        let a = open();
        let first: Vec<i64> = (0..3).map(|_| a.allocate().unwrap()).collect();
        assert_eq!(first, [0, 1, 2]);
        drop(a);
        // Whatever a crash loses, the block was committed before its first id was used.
        sim.crash(CrashMode::DropUnsynced);
        let b = open();
        let next = b.allocate().unwrap();
        assert_eq!(next, ID_BLOCK, "the next start begins after the committed block");
    }
}

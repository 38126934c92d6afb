//! What the Raft core knows of its log: where it ends and where each leader epoch starts.
//! The records themselves live with the driver (a `storage::Log` in the broker, a vector in
//! the simulation); the core decides offsets, epochs, truncations and the high watermark.

/// The log's shape: where it starts (the end of the latest snapshot, whose records it no
/// longer holds), where it ends, and the start offset of every epoch in it, both strictly
/// increasing (Kafka's leader-epoch cache; the first entry is the snapshot's epoch, starting
/// at the log start).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogView {
    start: i64,
    end: i64,
    epochs: Vec<(i32, i64)>,
    snapshot: Option<SnapshotId>,
}

/// A snapshot of everything below `end_offset`, whose last record was written in `epoch`
/// (Kafka's OffsetAndEpoch, and the snapshot file's name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotId {
    pub end_offset: i64,
    pub epoch: i32,
}

/// A batch's place in the log: `base_offset..=last_offset`, all written in `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchMeta {
    pub base_offset: i64,
    pub last_offset: i64,
    pub epoch: i32,
}

impl LogView {
    pub fn new() -> LogView {
        LogView::default()
    }

    /// The view of a log holding these batches, in order. Refuses batches that do not follow
    /// one another or whose epochs go back (a log the core must not trust).
    pub fn from_batches(batches: impl IntoIterator<Item = BatchMeta>) -> Result<LogView, String> {
        LogView::from_parts(None, batches)
    }

    /// The view of a log that starts after `snapshot` and holds these batches.
    pub fn from_parts(
        snapshot: Option<SnapshotId>,
        batches: impl IntoIterator<Item = BatchMeta>,
    ) -> Result<LogView, String> {
        let mut v = LogView::new();
        if let Some(s) = snapshot {
            v.install(s);
        }
        for b in batches {
            v.check(&b)?;
            v.push(&b);
        }
        Ok(v)
    }

    pub fn end_offset(&self) -> i64 {
        self.end
    }

    /// The first offset the log holds records for (the latest snapshot's end, or 0).
    pub fn start_offset(&self) -> i64 {
        self.start
    }

    pub fn snapshot(&self) -> Option<SnapshotId> {
        self.snapshot
    }

    /// The log now starts after `s`, which holds everything below it: records below are gone.
    pub(crate) fn snapshot_taken(&mut self, s: SnapshotId) {
        self.snapshot = Some(s);
        self.start = s.end_offset;
        // Epochs wholly below the new start go; the one it falls in now starts there.
        let i = self.epochs.partition_point(|(_, start)| *start <= s.end_offset);
        self.epochs.drain(..i.saturating_sub(1));
        if let Some(first) = self.epochs.first_mut() {
            first.1 = first.1.max(s.end_offset);
        } else {
            self.epochs.push((s.epoch, s.end_offset));
        }
    }

    /// The log is replaced by snapshot `s` (a follower far behind): empty, from its end.
    pub(crate) fn install(&mut self, s: SnapshotId) {
        self.snapshot = Some(s);
        self.start = s.end_offset;
        self.end = s.end_offset;
        self.epochs = vec![(s.epoch, s.end_offset)];
    }

    /// The epoch of the last batch, 0 for an empty log.
    pub fn last_epoch(&self) -> i32 {
        self.epochs.last().map_or(0, |e| e.0)
    }

    /// Whether `b` may be appended: it starts at the end, is not empty, and its epoch does not
    /// go back.
    pub fn check(&self, b: &BatchMeta) -> Result<(), String> {
        if b.base_offset != self.end {
            return Err(format!(
                "batch at {} does not start at the log end {}",
                b.base_offset, self.end
            ));
        }
        if b.last_offset < b.base_offset {
            return Err(format!("empty batch {}..={}", b.base_offset, b.last_offset));
        }
        if b.epoch < self.last_epoch() || b.epoch < 1 {
            return Err(format!("batch of epoch {} after epoch {}", b.epoch, self.last_epoch()));
        }
        Ok(())
    }

    /// Appends `b`, which `check` accepted.
    pub(crate) fn push(&mut self, b: &BatchMeta) {
        if b.epoch > self.last_epoch() {
            self.epochs.push((b.epoch, b.base_offset));
        }
        self.end = b.last_offset + 1;
    }

    /// Removes everything from `end` on (never below the log start: a snapshot is committed).
    pub(crate) fn truncate(&mut self, end: i64) {
        self.end = self.end.min(end.max(self.start));
        let e = self.end;
        self.epochs.retain(|(_, start)| *start < e);
        if let (true, Some(s)) = (self.epochs.is_empty(), self.snapshot) {
            // Back to the snapshot: its epoch is the last one the log knows.
            self.epochs.push((s.epoch, s.end_offset));
        }
    }

    /// The largest epoch at most `epoch` and the offset where it ends (where the next epoch
    /// starts, or the log end): what a leader tells a follower whose log diverges, and where
    /// the follower truncates. An epoch the log no longer holds but the snapshot ends in ends
    /// at the snapshot; one older than that is unknown: (0, log start).
    pub fn end_for_epoch(&self, epoch: i32) -> (i32, i64) {
        let i = self.epochs.partition_point(|(e, _)| *e <= epoch);
        if i == 0 {
            return match self.snapshot {
                Some(s) if epoch >= s.epoch => (s.epoch, s.end_offset),
                _ => (0, self.start),
            };
        }
        let end = self.epochs.get(i).map_or(self.end, |next| next.1);
        (self.epochs[i - 1].0, end)
    }

    /// The epoch the record at `offset` was written in (None beyond the end).
    pub fn epoch_at(&self, offset: i64) -> Option<i32> {
        if offset < self.start || offset >= self.end {
            return None;
        }
        let i = self.epochs.partition_point(|(_, start)| *start <= offset);
        self.epochs.get(i.checked_sub(1)?).map(|e| e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(base: i64, last: i64, epoch: i32) -> BatchMeta {
        BatchMeta {
            base_offset: base,
            last_offset: last,
            epoch,
        }
    }

    #[test]
    fn epochs_and_their_ends() {
        let v = LogView::from_batches([b(0, 0, 1), b(1, 3, 1), b(4, 4, 3), b(5, 9, 5)]).unwrap();
        assert_eq!(v.end_offset(), 10);
        assert_eq!(v.last_epoch(), 5);
        assert_eq!(v.end_for_epoch(1), (1, 4));
        assert_eq!(v.end_for_epoch(2), (1, 4));
        assert_eq!(v.end_for_epoch(3), (3, 5));
        assert_eq!(v.end_for_epoch(4), (3, 5));
        assert_eq!(v.end_for_epoch(9), (5, 10));
        assert_eq!(v.end_for_epoch(0), (0, 0));
        assert_eq!(
            (v.epoch_at(0), v.epoch_at(4), v.epoch_at(9), v.epoch_at(10)),
            (Some(1), Some(3), Some(5), None)
        );
        let mut t = v.clone();
        t.truncate(5);
        assert_eq!((t.end_offset(), t.last_epoch()), (5, 3));
        t.truncate(4);
        assert_eq!((t.end_offset(), t.last_epoch()), (4, 1));
    }

    #[test]
    fn snapshots_move_the_start() {
        let mut v = LogView::from_batches([b(0, 0, 1), b(1, 3, 1), b(4, 4, 3), b(5, 9, 5)]).unwrap();
        v.snapshot_taken(SnapshotId {
            end_offset: 5,
            epoch: 3,
        });
        assert_eq!((v.start_offset(), v.end_offset(), v.last_epoch()), (5, 10, 5));
        assert_eq!(v.end_for_epoch(3), (3, 5), "epoch 3 ended with the snapshot");
        assert_eq!(v.end_for_epoch(4), (3, 5));
        assert_eq!(v.end_for_epoch(1), (0, 5), "older than the snapshot: unknown");
        assert_eq!(v.end_for_epoch(5), (5, 10));
        v.snapshot_taken(SnapshotId {
            end_offset: 7,
            epoch: 5,
        });
        assert_eq!(v.end_for_epoch(5), (5, 10));
        assert_eq!(v.epoch_at(6), None);
        let w = LogView::from_parts(
            Some(SnapshotId {
                end_offset: 7,
                epoch: 5,
            }),
            [b(7, 9, 5), b(10, 10, 6)],
        )
        .unwrap();
        assert_eq!((w.start_offset(), w.end_offset(), w.last_epoch()), (7, 11, 6));
        assert_eq!(w.end_for_epoch(5), (5, 10));
        let mut e = w.clone();
        e.install(SnapshotId {
            end_offset: 20,
            epoch: 8,
        });
        assert_eq!((e.start_offset(), e.end_offset(), e.last_epoch()), (20, 20, 8));
        assert!(LogView::from_parts(
            Some(SnapshotId {
                end_offset: 7,
                epoch: 5
            }),
            [b(6, 9, 5)]
        )
        .is_err());
        // Truncated back to the snapshot, the log still knows the snapshot's epoch.
        let mut t = w.clone();
        t.truncate(7);
        assert_eq!((t.start_offset(), t.end_offset(), t.last_epoch()), (7, 7, 5));
        let mut u = LogView::from_batches([b(0, 3, 1)]).unwrap();
        u.snapshot_taken(SnapshotId {
            end_offset: 4,
            epoch: 1,
        });
        u.truncate(4);
        assert_eq!(u.last_epoch(), 1);
    }

    #[test]
    fn a_log_that_does_not_follow_on_is_refused() {
        assert!(LogView::from_batches([b(0, 0, 1), b(2, 2, 1)]).is_err());
        assert!(LogView::from_batches([b(0, 0, 2), b(1, 1, 1)]).is_err());
        assert!(LogView::from_batches([b(0, 0, 0)]).is_err());
        assert!(LogView::from_batches([b(0, -1, 1)]).is_err());
    }
}

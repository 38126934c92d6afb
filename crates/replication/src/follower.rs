//! The follower's truncation by leader epoch (KIP-101, KIP-279, KIP-320), and the leader's
//! side of it: which divergence a fetch shows.
//!
//! A follower fetches with the epoch of the last batch it holds (`last_fetched_epoch`) and its
//! log end. The leader looks up where that epoch ends in its own log; if it ends before the
//! fetch offset, or the leader never had that epoch, the answer names the diverging epoch
//! and its end instead of records. The follower truncates to that end, or to its own end of
//! that epoch when smaller, and fetches again (another round when it still diverges).

/// An epoch and where it ends (exclusive): Kafka's `EpochEndOffset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEnd {
    pub epoch: i32,
    pub end_offset: i64,
}

/// The leader's check of a follower's (or KIP-320 consumer's) fetch: `end_of_theirs` is what
/// the leader's epoch cache says of `last_fetched_epoch` (its `end_offset_for`: the largest
/// epoch at or below it and where that ends). `None`: no divergence, serve from
/// `fetch_offset`.
pub fn diverging(last_fetched_epoch: i32, fetch_offset: i64, end_of_theirs: EpochEnd) -> Option<EpochEnd> {
    if last_fetched_epoch < 0 {
        return None; // a fetch without an epoch (older clients): nothing to compare
    }
    (end_of_theirs.epoch != last_fetched_epoch || end_of_theirs.end_offset < fetch_offset).then_some(end_of_theirs)
}

/// Where a follower truncates to when the leader reports `leader`'s divergence: the leader's
/// end of the epoch, or the follower's own end of it (`own`: its epoch cache's answer for
/// `leader.epoch`) when smaller — never by the high watermark, except as Kafka does when the
/// leader could name no epoch at all (it cannot, once it has put its own epoch in its cache
/// at its log end on becoming leader): then to `own_high_watermark`, below which nothing
/// diverges.
pub fn truncation_offset(leader: EpochEnd, own: EpochEnd, own_log_end: i64, own_high_watermark: i64) -> i64 {
    if leader.epoch < 0 || leader.end_offset < 0 {
        return own_high_watermark.clamp(0, own_log_end.max(0));
    }
    let own_end = if own.epoch < 0 { own_log_end } else { own.end_offset };
    leader.end_offset.min(own_end).min(own_log_end).max(0)
}

/// A follower's high watermark: the leader's, up to what the follower holds.
pub fn high_watermark(leader_high_watermark: i64, own_log_end: i64) -> i64 {
    leader_high_watermark.min(own_log_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetch_diverges_when_its_epoch_ended_earlier_on_the_leader_or_never_was() {
        let e = |epoch, end_offset| EpochEnd { epoch, end_offset };
        // The leader's epoch 3 ends at 100: a follower at 90 in epoch 3 is fine, one at 120 is not.
        assert_eq!(diverging(3, 90, e(3, 100)), None);
        assert_eq!(diverging(3, 100, e(3, 100)), None);
        assert_eq!(diverging(3, 120, e(3, 100)), Some(e(3, 100)));
        // The leader never had epoch 4 (its largest below is 3, ending at 100).
        assert_eq!(diverging(4, 90, e(3, 100)), Some(e(3, 100)));
        assert_eq!(diverging(-1, 90, e(-1, -1)), None);
    }

    #[test]
    fn a_follower_truncates_to_the_smaller_end_of_the_epoch() {
        let e = |epoch, end_offset| EpochEnd { epoch, end_offset };
        assert_eq!(truncation_offset(e(3, 100), e(3, 120), 130, 90), 100);
        assert_eq!(truncation_offset(e(3, 100), e(2, 80), 130, 70), 80);
        // The follower has no epoch at or above 3: its log ends before the leader's epoch does.
        assert_eq!(truncation_offset(e(3, 100), e(-1, -1), 50, 40), 50);
        // A leader that could name no epoch: Kafka's fallback, the high watermark.
        assert_eq!(truncation_offset(e(-1, -1), e(-1, -1), 50, 40), 40);
        assert_eq!(high_watermark(100, 80), 80);
    }
}

//! The memory groups hold for their members: protocol metadata from JoinGroup and assignments
//! from SyncGroup, kept until a member leaves or its session expires (up to
//! `group.max.session.timeout.ms` after its client is gone).
//!
//! Limits, and what happens at each:
//! - `group.max.member.metadata.bytes`: one member's protocol metadata (all protocols), or one
//!   member's assignment, larger than this is refused with `MESSAGE_TOO_LARGE`.
//! - `group.max.memory.bytes`: metadata and assignments held by all groups together; a join or
//!   sync that would pass it is refused with `GROUP_MAX_SIZE_REACHED` until members leave or
//!   expire.
//!
//! Admitted bytes are copied out of the request frame (a slice would pin the whole frame) into
//! buffers that count themselves: the count falls when the last copy is dropped, wherever the
//! state machine drops it, so no path can forget to give memory back.

use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use wire::messages::ErrorCode;

#[derive(Debug)]
pub struct GroupMemory {
    held: Arc<AtomicUsize>,
    member_bytes_max: usize,
    total_bytes_max: usize,
}

/// A buffer whose bytes are counted in `held` while it lives.
struct Counted {
    data: Vec<u8>,
    held: Arc<AtomicUsize>,
}

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.held.fetch_sub(self.data.len(), Ordering::Relaxed);
    }
}

impl GroupMemory {
    pub fn new(member_bytes_max: usize, total_bytes_max: usize) -> GroupMemory {
        GroupMemory {
            held: Arc::new(AtomicUsize::new(0)),
            member_bytes_max,
            total_bytes_max,
        }
    }

    /// Bytes held now by admitted metadata and assignments.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Admits the parts of one member's metadata (or assignment): counted copies of them, or
    /// the error to refuse the request with.
    pub fn admit<'a>(&self, parts: impl IntoIterator<Item = &'a [u8]> + Clone) -> Result<Vec<Bytes>, ErrorCode> {
        let size: usize = parts.clone().into_iter().map(<[u8]>::len).sum();
        if size > self.member_bytes_max {
            return Err(ErrorCode::MessageTooLarge);
        }
        // Reserve first, so concurrent admissions cannot pass the limit together.
        let before = self.held.fetch_add(size, Ordering::Relaxed);
        if before.saturating_add(size) > self.total_bytes_max {
            self.held.fetch_sub(size, Ordering::Relaxed);
            return Err(ErrorCode::GroupMaxSizeReached);
        }
        // Each copy gives its own share back when dropped.
        Ok(parts
            .into_iter()
            .map(|p| {
                Bytes::from_owner(Counted {
                    data: p.to_vec(),
                    held: self.held.clone(),
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admitted_bytes_are_counted_until_every_copy_is_dropped() {
        let m = GroupMemory::new(100, 250);
        let a = m.admit([&[1u8; 60][..], &[2u8; 40][..]]).unwrap();
        assert_eq!(m.held(), 100);
        assert_eq!(m.admit([&[0u8; 101][..]]), Err(ErrorCode::MessageTooLarge));
        let b = m.admit([&[3u8; 100][..]]).unwrap();
        assert_eq!(m.admit([&[4u8; 51][..]]), Err(ErrorCode::GroupMaxSizeReached));
        assert_eq!(m.held(), 200, "a refusal holds nothing");
        let clone = b[0].clone();
        drop(b);
        assert_eq!(m.held(), 200, "a clone keeps it counted");
        drop(clone);
        drop(a);
        assert_eq!(m.held(), 0);
        assert!(m.admit([&[4u8; 51][..]]).is_ok());
    }
}

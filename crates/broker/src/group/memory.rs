//! The memory groups hold for their members: protocol metadata from JoinGroup and assignments
//! from SyncGroup, kept until a member leaves or its session expires (up to
//! `group.max.session.timeout.ms` after its client is gone).
//!
//! Limits, and what happens at each:
//! - `group.max.member.metadata.bytes`: one member's protocol metadata (all protocols), or one
//!   member's assignment, larger than this is refused with `MESSAGE_TOO_LARGE`.
//! - `group.max.memory.bytes`: metadata and assignments held by all groups together, and a
//!   quarter of it per client address; a join that would pass either waits — it is answered
//!   `COORDINATOR_LOAD_IN_PROGRESS`, which every client retries — and so does a sync
//!   (`REBALANCE_IN_PROGRESS`: the members rejoin), until members leave or expire. (Kafka's
//!   `GROUP_MAX_SIZE_REACHED` would be fatal to Java consumers in groups that did nothing.)
//!
//! Admitted bytes are copied out of the request frame (a slice would pin the whole frame) into
//! buffers that count themselves: the count falls when the last copy is dropped, wherever the
//! state machine drops it, so no path can forget to give memory back.

use bytes::Bytes;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct Held {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
pub struct GroupMemory {
    held: Arc<Mutex<Held>>,
    member_bytes_max: usize,
    total_bytes_max: usize,
    /// One client address may hold at most this much (a quarter of the total), so one client
    /// cannot fill the budget for everyone else.
    ip_bytes_max: usize,
}

/// Why an admission was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// One member's metadata (or assignment) is over `group.max.member.metadata.bytes`: it
    /// will never fit.
    TooLarge,
    /// The budget (in total or for this address) is used up for now: it may fit later.
    Full,
}

/// A buffer whose bytes are counted in `held` while it lives.
struct Counted {
    data: Vec<u8>,
    ip: IpAddr,
    held: Arc<Mutex<Held>>,
}

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.total = held.total.saturating_sub(self.data.len());
        if let Some(n) = held.by_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(self.data.len());
            if *n == 0 {
                held.by_ip.remove(&self.ip);
            }
        }
    }
}

impl GroupMemory {
    pub fn new(member_bytes_max: usize, total_bytes_max: usize) -> GroupMemory {
        GroupMemory {
            held: Arc::default(),
            member_bytes_max,
            total_bytes_max,
            ip_bytes_max: (total_bytes_max / 4).max(member_bytes_max),
        }
    }

    /// Bytes held now by admitted metadata and assignments.
    pub fn held(&self) -> usize {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    /// Admits the parts of one member's metadata (or assignment) from a client at `ip`:
    /// counted copies of them, or why not.
    pub fn admit<'a>(
        &self,
        ip: IpAddr,
        parts: impl IntoIterator<Item = &'a [u8]> + Clone,
    ) -> Result<Vec<Bytes>, Refused> {
        let size: usize = parts.clone().into_iter().map(<[u8]>::len).sum();
        if size > self.member_bytes_max {
            return Err(Refused::TooLarge);
        }
        {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            let by_ip = held.by_ip.get(&ip).copied().unwrap_or(0);
            if held.total.saturating_add(size) > self.total_bytes_max || by_ip.saturating_add(size) > self.ip_bytes_max
            {
                return Err(Refused::Full);
            }
            held.total += size;
            *held.by_ip.entry(ip).or_insert(0) += size;
        }
        // Each copy gives its own share back when dropped.
        Ok(parts
            .into_iter()
            .map(|p| {
                Bytes::from_owner(Counted {
                    data: p.to_vec(),
                    ip,
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
        let ip = |n: u8| IpAddr::from([10, 0, 0, n]);
        let m = GroupMemory::new(100, 400);
        let a = m.admit(ip(1), [&[1u8; 60][..], &[2u8; 40][..]]).unwrap();
        assert_eq!(m.held(), 100);
        assert_eq!(m.admit(ip(1), [&[0u8; 101][..]]), Err(Refused::TooLarge));
        assert_eq!(
            m.admit(ip(1), [&[0u8; 1][..]]),
            Err(Refused::Full),
            "a quarter per address"
        );
        let b = m.admit(ip(2), [&[3u8; 100][..]]).unwrap();
        let c = m.admit(ip(3), [&[3u8; 100][..]]).unwrap();
        let d = m.admit(ip(4), [&[3u8; 100][..]]).unwrap();
        assert_eq!(m.admit(ip(5), [&[4u8; 1][..]]), Err(Refused::Full), "the total");
        assert_eq!(m.held(), 400, "a refusal holds nothing");
        let clone = b[0].clone();
        drop(b);
        assert_eq!(m.held(), 400, "a clone keeps it counted");
        drop((clone, a, c, d));
        assert_eq!(m.held(), 0);
        assert!(m.admit(ip(1), [&[4u8; 100][..]]).is_ok());
    }
}

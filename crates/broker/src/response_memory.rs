//! Memory for fetch responses not yet written to their sockets (`queued.max.response.bytes`).
//!
//! Limits, and what happens at each:
//! - The pool: a fetch reserves what it may read before reading; under pressure it gets less
//!   (at least `FLOOR_BYTES`, or what it asked if less), and when even that is not free it
//!   waits, no longer than its own `max_wait_ms`, then answers with no records (clients fetch
//!   again). Nothing waits while holding memory, so fetches cannot block each other for good.
//! - Per client address: at most a quarter of the pool, so clients that ask for large
//!   responses and stop reading (each held until `socket.write.timeout.ms`) cannot starve
//!   consumers elsewhere.
//! - The first batch of a response is sent whole even past the reservation (Kafka's rule, so
//!   a consumer always progresses); that overshoot, at most one batch per response, is counted
//!   when the pool has it and otherwise goes uncounted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// What a fetch is given at the least when the pool is short (unless it asked for less).
pub const FLOOR_BYTES: usize = 1 << 20;

pub struct ResponseMemory {
    pool: Arc<Semaphore>,
    ip_share_bytes: usize,
    by_ip: Mutex<HashMap<IpAddr, usize>>,
    freed: Notify,
}

/// Response memory held for one response; given back when dropped.
pub struct Held {
    memory: Arc<ResponseMemory>,
    permit: Option<OwnedSemaphorePermit>,
    ip: IpAddr,
}

impl ResponseMemory {
    pub fn new(bytes: usize) -> Arc<ResponseMemory> {
        Arc::new(ResponseMemory {
            pool: Arc::new(Semaphore::new(bytes)),
            ip_share_bytes: (bytes / 4).max(FLOOR_BYTES),
            by_ip: Mutex::new(HashMap::new()),
            freed: Notify::new(),
        })
    }

    fn by_ip(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.by_ip.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves up to `cap` bytes for a response to `ip`, waiting until `deadline` at most.
    /// `None`: nothing could be had in time (answer without records).
    pub async fn reserve(self: &Arc<Self>, ip: IpAddr, cap: usize, deadline: tokio::time::Instant) -> Option<Held> {
        loop {
            // Registered before looking, so a release between the look and the wait wakes us.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(held) = self.try_reserve(ip, cap) {
                return Some(held);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return None;
            }
        }
    }

    fn try_reserve(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<Held> {
        let mut by_ip = self.by_ip();
        let held_by_ip = by_ip.get(&ip).copied().unwrap_or(0);
        let room = self.ip_share_bytes.saturating_sub(held_by_ip);
        let least = cap.min(FLOOR_BYTES);
        let want = cap.min(room).min(self.pool.available_permits().max(least));
        if want < least {
            return None;
        }
        // `want <= fetch.max.bytes <= i32::MAX`.
        let permit = self.pool.clone().try_acquire_many_owned(want as u32).ok()?;
        *by_ip.entry(ip).or_insert(0) += want;
        Some(Held {
            memory: self.clone(),
            permit: Some(permit),
            ip,
        })
    }
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Held({} bytes for {})", self.bytes(), self.ip)
    }
}

impl Held {
    /// Bytes this reservation covers.
    pub fn bytes(&self) -> usize {
        self.permit.as_ref().map_or(0, OwnedSemaphorePermit::num_permits)
    }

    /// Makes the reservation cover `used` bytes: gives back what the read did not use, and
    /// takes the overshoot of an oversized first batch if the pool has it now (never waiting).
    pub fn settle(&mut self, used: usize) {
        let reserved = self.bytes();
        let Some(permit) = self.permit.as_mut() else { return };
        if used < reserved {
            drop(permit.split(reserved - used));
            self.memory.forget(self.ip, reserved - used);
        } else if used > reserved {
            let extra = (used - reserved).min(u32::MAX as usize) as u32;
            if let Ok(more) = self.memory.pool.clone().try_acquire_many_owned(extra) {
                permit.merge(more);
                *self.memory.by_ip().entry(self.ip).or_insert(0) += extra as usize;
            }
        }
    }
}

impl ResponseMemory {
    fn forget(&self, ip: IpAddr, bytes: usize) {
        let mut by_ip = self.by_ip();
        if let Some(n) = by_ip.get_mut(&ip) {
            *n = n.saturating_sub(bytes);
            if *n == 0 {
                by_ip.remove(&ip);
            }
        }
        drop(by_ip);
        self.freed.notify_waiters();
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            let bytes = permit.num_permits();
            drop(permit);
            self.memory.forget(self.ip, bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[tokio::test]
    async fn one_address_gets_a_quarter_and_nobody_waits_while_holding() {
        let m = ResponseMemory::new(8 << 20);
        let soon = || tokio::time::Instant::now() + Duration::from_millis(20);
        let a = m.reserve(ip(1), 10 << 20, soon()).await.unwrap();
        assert_eq!(a.bytes(), 2 << 20, "a quarter of the pool per address");
        assert!(
            m.reserve(ip(1), 1 << 20, soon()).await.is_none(),
            "its share is used up"
        );
        let mut b = m.reserve(ip(2), 10 << 20, soon()).await.unwrap();
        assert_eq!(b.bytes(), 2 << 20, "another address has its own share");
        b.settle(100);
        assert_eq!(b.bytes(), 100, "what the read did not use goes back");
        b.settle(3 << 20);
        assert_eq!(
            b.bytes(),
            3 << 20,
            "an oversized first batch is counted when the pool has it"
        );
        drop((a, b));
        assert_eq!(m.pool.available_permits(), 8 << 20);
        assert!(m.by_ip().is_empty());
    }

    #[tokio::test]
    async fn a_full_pool_answers_empty_by_the_deadline_and_a_release_wakes_waiters() {
        let m = ResponseMemory::new(4 << 20);
        let held: Vec<_> = (1..=4).map(|i| m.try_reserve(ip(i), 1 << 20).unwrap()).collect();
        let soon = tokio::time::Instant::now() + Duration::from_millis(20);
        assert!(
            m.reserve(ip(9), 1 << 20, soon).await.is_none(),
            "nothing free: empty by the deadline"
        );
        let m2 = m.clone();
        let waiter = tokio::spawn(async move {
            m2.reserve(ip(9), 1 << 20, tokio::time::Instant::now() + Duration::from_secs(10))
                .await
                .map(|h| h.bytes())
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        assert_eq!(waiter.await.unwrap(), Some(1 << 20));
    }
}

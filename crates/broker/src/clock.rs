//! The broker's one source of time, passed in (`Broker::clock`) so a test or a simulation can
//! drive it: wall time in milliseconds since the epoch, for timestamps and the group
//! coordinator's deadlines (Kafka keeps those in wall time too), and a monotonic reading for
//! measuring durations and deadlines that must not jump with the wall clock.
//!
//! `SystemClock` reads the operating system; `SimClock` moves only when told to
//! (`advance`), and is shared through an `Arc` between the test and the broker.
//!
//! tokio's own timers (`sleep`, `timeout`) are not driven by this clock: code that waits
//! computes how long from the clock and lets tokio sleep (tokio's paused test time can drive
//! those sleeps), but what a wake-up decides is decided from the clock's reading.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// A monotonic reading: time since the clock's own origin. Only differences mean anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(Duration);

impl Instant {
    /// Time from `earlier` to this reading; zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl std::ops::Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(d))
    }
}

impl std::ops::AddAssign<Duration> for Instant {
    fn add_assign(&mut self, d: Duration) {
        self.0 = self.0.saturating_add(d);
    }
}

pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Wall time, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
    /// A monotonic reading (never goes back).
    fn now(&self) -> Instant;
    /// Time elapsed since `earlier` (a reading of this clock).
    fn elapsed(&self, earlier: Instant) -> Duration {
        self.now().saturating_duration_since(earlier)
    }
}

/// The operating system's clocks.
#[derive(Debug)]
pub struct SystemClock {
    origin: std::time::Instant,
}

impl SystemClock {
    pub fn new() -> SystemClock {
        SystemClock {
            origin: std::time::Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }

    fn now(&self) -> Instant {
        Instant(self.origin.elapsed())
    }
}

/// The system clock's wall time, for code not yet given a `Clock` (a few call sites in
/// `topics.rs`, and tests). Everything else reads `Broker::clock`.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A clock that moves only when told: wall time and the monotonic reading advance together.
#[derive(Debug)]
pub struct SimClock {
    wall_ms: AtomicI64,
    mono_nanos: AtomicU64,
}

impl SimClock {
    /// A clock reading `wall_ms` (ms since the epoch) and a monotonic zero.
    pub fn new(wall_ms: i64) -> SimClock {
        SimClock {
            wall_ms: AtomicI64::new(wall_ms),
            mono_nanos: AtomicU64::new(0),
        }
    }

    /// Moves both readings forward by `d`.
    pub fn advance(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.mono_nanos.fetch_add(nanos, Ordering::SeqCst);
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.wall_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the wall time alone (a wall clock may jump, even backwards); the monotonic reading
    /// stays.
    pub fn set_wall_ms(&self, wall_ms: i64) {
        self.wall_ms.store(wall_ms, Ordering::SeqCst);
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> i64 {
        self.wall_ms.load(Ordering::SeqCst)
    }

    fn now(&self) -> Instant {
        Instant(Duration::from_nanos(self.mono_nanos.load(Ordering::SeqCst)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_clock_moves_only_when_advanced() {
        let c = SimClock::new(1_000);
        let t0 = c.now();
        assert_eq!(c.now_ms(), 1_000);
        assert_eq!(c.elapsed(t0), Duration::ZERO);
        c.advance(Duration::from_millis(250));
        assert_eq!(c.now_ms(), 1_250);
        assert_eq!(c.elapsed(t0), Duration::from_millis(250));
        c.set_wall_ms(0);
        assert_eq!(c.now_ms(), 0);
        assert_eq!(c.elapsed(t0), Duration::from_millis(250), "the monotonic reading stays");
    }

    #[test]
    fn system_clock_is_monotonic_and_near_the_wall() {
        let c = SystemClock::new();
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
        assert!((c.now_ms() - now_ms()).abs() < 5_000);
    }
}

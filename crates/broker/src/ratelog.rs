//! Rate-limited log lines: what one client (or one failing partition) can make the broker say.
//!
//! Every key (a kind of event, optionally with what it is about) may log `BURST` lines per
//! `WINDOW`; the rest are counted, and the next line logged for that key carries the count of
//! those suppressed since. Keys are kept at most `KEYS_MAX` at once: past it the table is
//! cleared (losing only suppressed counts, never a line that should have been logged).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(10);
const BURST: u32 = 5;
const KEYS_MAX: usize = 10_000;

struct Window {
    started: Instant,
    logged: u32,
    suppressed: u64,
}

static WINDOWS: Mutex<Option<HashMap<String, Window>>> = Mutex::new(None);

/// `Some(n)` when a line for `key` may be logged now, `n` being how many lines of that key were
/// suppressed since the last one logged (say so in the line); `None` when it must be dropped.
pub fn allow(key: &str) -> Option<u64> {
    allow_at(key, Instant::now())
}

fn allow_at(key: &str, now: Instant) -> Option<u64> {
    let mut guard = WINDOWS.lock().unwrap_or_else(|p| p.into_inner());
    let windows = guard.get_or_insert_with(HashMap::new);
    if windows.len() >= KEYS_MAX && !windows.contains_key(key) {
        windows.clear();
    }
    let w = windows.entry(key.to_string()).or_insert(Window {
        started: now,
        logged: 0,
        suppressed: 0,
    });
    if now.duration_since(w.started) >= WINDOW {
        w.started = now;
        w.logged = 0;
    }
    if w.logged >= BURST {
        w.suppressed += 1;
        return None;
    }
    w.logged += 1;
    Some(std::mem::take(&mut w.suppressed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_per_window_then_the_count_of_what_was_dropped() {
        let t0 = Instant::now();
        let key = "ratelog-test-burst";
        for _ in 0..BURST {
            assert_eq!(allow_at(key, t0), Some(0));
        }
        for _ in 0..100 {
            assert_eq!(allow_at(key, t0 + Duration::from_secs(1)), None);
        }
        assert_eq!(allow_at("ratelog-test-other", t0), Some(0), "keys are independent");
        assert_eq!(allow_at(key, t0 + WINDOW), Some(100));
        assert_eq!(allow_at(key, t0 + WINDOW), Some(0));
    }
}

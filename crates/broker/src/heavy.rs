//! Low-priority threads for the CPU-heavy work any client can ask for at will: checking
//! (decompressing) produced batches (`Broker::checks`), and creating or deleting topics
//! (`Broker::topic_changes`). Two pools, so a topic of 10 000 partitions being created never
//! makes a compressed produce wait behind it. The async workers keep answering everyone else
//! while this runs.
//!
//! Limits, and what happens at each:
//! - Threads: `Broker::checks` has cores − 1 (at least 1), so this work never holds every
//!   core; `Broker::topic_changes` has one (topic changes are serialized anyway). Each runs at
//!   nice +19, so whenever an async worker (nice 0) wants the same core the kernel gives it
//!   about 70 times this thread's share. With nothing else to run they run at full speed, so
//!   well-behaved compressed producers lose nothing (measured: lz4 produce throughput at nice
//!   +10 and +19 alike, while a client's p99 under a flood of costly batches went from 9× to
//!   1.1× its quiet p99 from +10 to +19; docs/benchmarks.md).
//! - Queue: `QUEUE_MAX` jobs per pool; a request that finds it full waits (asynchronously) for
//!   room, holding only the request memory it already has (`queued.max.request.bytes`).

use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// Jobs waiting for a thread.
const QUEUE_MAX: usize = 64;
/// The niceness of the threads (0 is the default; 19 the lowest priority, weight 15 against
/// 1024 for nice 0).
const NICE: libc::c_int = 19;

type Job = Box<dyn FnOnce() + Send>;

pub struct Heavy {
    jobs: mpsc::Sender<Job>,
}

impl Heavy {
    /// Cores − 1, at least one.
    pub fn all_but_one_core() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
    }

    /// Starts `threads` threads named `sluice-{name}-N`.
    pub fn start(name: &str, threads: usize) -> Heavy {
        let (jobs, rx) = mpsc::channel::<Job>(QUEUE_MAX);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("sluice-{name}-{i}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        // One thread waits on the queue at a time; the others wait for the lock.
                        let job = rx.lock().unwrap_or_else(|p| p.into_inner()).blocking_recv();
                        match job {
                            Some(job) => job(),
                            None => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start a thread for heavy work");
            }
        }
        Heavy { jobs }
    }

    /// Runs `f` on one of the threads and returns what it returns; `None` if it could not run
    /// (no thread could be started, or `f` panicked).
    pub async fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            // In the server a panic aborts the process (`fail_stop_on_panic`) before this sees
            // it; elsewhere (tests) it is answered as a failure of this job.
            if let Ok(r) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                let _ = tx.send(r);
            }
        });
        self.jobs.send(job).await.ok()?;
        rx.await.ok()
    }
}

/// Lowers the calling thread's priority (on Linux, niceness is per thread).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no arguments and cannot fail; setpriority only changes this
        // thread's scheduling weight.
        let ok = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, NICE) == 0
        };
        if !ok {
            tracing::debug!("cannot lower the priority of a heavy-work thread");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_and_a_panic_is_a_failed_job_not_a_dead_pool() {
        let heavy = Heavy::start("test", 2);
        assert_eq!(heavy.run(|| 2 + 2).await, Some(4));
        assert_eq!(heavy.run(|| -> i32 { panic!("boom") }).await, None);
        for i in 0..200 {
            assert_eq!(heavy.run(move || i).await, Some(i), "the threads survive");
        }
    }
}

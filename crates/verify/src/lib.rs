//! `sluice verify`: the history format (one JSON object per line: what each client asked for
//! and what it was told) and the checker that proves anomalies from histories. The format
//! and every count are described in `docs/verify.md`; the workload that writes histories with
//! the native client lives in the `sluice` binary (`crates/cli/src/verify.rs`).

pub mod check;
pub mod history;

pub use check::{check, Report};
pub use history::{read_history, Event, Kind, Outcome};

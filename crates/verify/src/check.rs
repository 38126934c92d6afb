//! The checker: reads what every client asked and was told and counts each anomaly it can
//! prove, with the first examples of each (docs/verify.md defines every count). It assumes no
//! timing between clients except for commits (a commit answered before another was sent), and
//! nothing of records whose produce failed or went unanswered: those may or may not be in the
//! log.
//!
//! Memory: everything is held at once, about 200 bytes per record sent or read; a history of
//! ten million records needs about 2 GiB.

use crate::history::{Event, Kind, Outcome};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// How many examples of each anomaly a report keeps.
const EXAMPLES: usize = 5;

/// A partition: topic and index.
type Tp = (String, i32);

/// The counts (docs/verify.md) and the first examples of each anomaly.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    pub histories: usize,
    pub clients: usize,
    pub sends: u64,
    pub acknowledged: u64,
    pub failed: u64,
    pub unknown: u64,
    pub read: u64,
    pub unverified: u64,
    pub lost: u64,
    pub unexpected: u64,
    pub duplicated: u64,
    pub duplicated_non_idempotent: u64,
    pub inconsistent_offsets: u64,
    pub order_violations: u64,
    pub poll_skips: u64,
    pub non_monotonic: u64,
    pub committed_regressions: u64,
    pub read_above_acknowledged: u64,
    pub commits: u64,
    /// Lines cut short at the end of a history (a client killed while writing), skipped.
    pub truncated_lines: u64,
    pub examples: BTreeMap<&'static str, Vec<String>>,
}

impl Report {
    /// The counts that mean a safety violation, in the order docs/verify.md lists them.
    pub fn violations(&self) -> [(&'static str, u64); 8] {
        [
            ("lost", self.lost),
            ("unexpected", self.unexpected),
            ("duplicated", self.duplicated),
            ("inconsistent_offsets", self.inconsistent_offsets),
            ("order_violations", self.order_violations),
            ("poll_skips", self.poll_skips),
            ("non_monotonic", self.non_monotonic),
            ("committed_regressions", self.committed_regressions),
        ]
    }

    /// The counts that describe the run without being violations.
    pub fn observations(&self) -> [(&'static str, u64); 11] {
        [
            ("sends", self.sends),
            ("acknowledged", self.acknowledged),
            ("failed", self.failed),
            ("unknown", self.unknown),
            ("read", self.read),
            ("commits", self.commits),
            ("unverified", self.unverified),
            ("duplicated_non_idempotent", self.duplicated_non_idempotent),
            ("read_above_acknowledged", self.read_above_acknowledged),
            ("truncated_lines", self.truncated_lines),
            ("clients", self.clients as u64),
        ]
    }

    /// True when no count that means a safety violation is above 0.
    pub fn passed(&self) -> bool {
        self.violations().iter().all(|(_, n)| *n == 0)
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut o = serde_json::Map::new();
        o.insert("histories".into(), json!(self.histories));
        for (k, v) in self.observations().into_iter().chain(self.violations()) {
            o.insert(k.into(), json!(v));
        }
        o.insert("passed".into(), json!(self.passed()));
        o.insert("examples".into(), json!(self.examples));
        serde_json::Value::Object(o)
    }

    /// A table for people: the counts, then the examples of each anomaly found.
    pub fn to_table(&self) -> String {
        let mut s = format!("{} histories, {} clients\n\n", self.histories, self.clients);
        for (k, v) in self.observations().iter().filter(|(k, _)| *k != "clients") {
            s.push_str(&format!("  {k:<28}{v:>12}\n"));
        }
        s.push('\n');
        for (k, v) in self.violations() {
            let mark = if v == 0 { "" } else { "  <- violation" };
            s.push_str(&format!("  {k:<28}{v:>12}{mark}\n"));
        }
        for (k, examples) in &self.examples {
            s.push_str(&format!("\n{k}:\n"));
            for e in examples {
                s.push_str(&format!("  {e}\n"));
            }
        }
        let failed: Vec<String> = self
            .violations()
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        if failed.is_empty() {
            s.push_str("\nPASSED: no safety violation\n");
        } else {
            s.push_str(&format!("\nFAILED: {}\n", failed.join(", ")));
        }
        s
    }

    fn example(&mut self, kind: &'static str, text: impl FnOnce() -> String) {
        let list = self.examples.entry(kind).or_default();
        if list.len() < EXAMPLES {
            list.push(text());
        }
    }
}

struct Commit {
    sent: i64,
    time: i64,
    offset: i64,
    client: String,
}

/// Checks histories given as (name, events in file order, lines cut short at the end).
pub fn check(histories: &[(String, Vec<Event>, usize)]) -> Report {
    let mut r = Report {
        histories: histories.len(),
        truncated_lines: histories.iter().map(|h| h.2 as u64).sum(),
        ..Default::default()
    };
    let all = || histories.iter().flat_map(|(_, events, _)| events.iter());

    // Who sent what, in which order, and with which guarantees.
    let mut idempotent: HashMap<&str, bool> = HashMap::new();
    let mut clients: HashSet<&str> = HashSet::new();
    let mut sent: HashMap<&str, &str> = HashMap::new(); // value -> producer
    let mut send_order: HashMap<&str, usize> = HashMap::new(); // value -> index among its producer's sends
    let mut sends_per_client: HashMap<&str, usize> = HashMap::new();
    for e in all() {
        clients.insert(&e.client);
        match e.kind {
            Kind::Producer => {
                idempotent.insert(&e.client, e.idempotent.unwrap_or(false));
            }
            Kind::Send | Kind::Produce => {
                let v = e.value.as_deref().unwrap_or_default();
                if e.kind == Kind::Send {
                    r.sends += 1;
                }
                if sent.insert(v, &e.client).is_none() {
                    let n = sends_per_client.entry(&e.client).or_default();
                    send_order.insert(v, *n);
                    *n += 1;
                }
            }
            _ => {}
        }
    }
    r.clients = clients.len();
    let is_idempotent = |value: &str| {
        sent.get(value)
            .and_then(|c| idempotent.get(c))
            .copied()
            .unwrap_or(false)
    };

    // Every observation of "this offset holds this value": acknowledgements and reads.
    let mut at: BTreeMap<(Tp, i64), BTreeSet<&str>> = BTreeMap::new();
    let mut offsets_of: BTreeMap<&str, BTreeSet<(Tp, i64)>> = BTreeMap::new();
    let mut acks: Vec<(&Event, Tp, i64)> = Vec::new();
    let mut read_values: HashSet<&str> = HashSet::new();
    let mut max_read: HashMap<Tp, i64> = HashMap::new();
    let mut max_acked: HashMap<Tp, i64> = HashMap::new();
    let mut acked_values: HashSet<&str> = HashSet::new();
    for e in all() {
        let tp = || (e.topic.clone().unwrap_or_default(), e.partition.unwrap_or_default());
        match (e.kind, e.outcome) {
            (Kind::Produce, Some(Outcome::Ok)) => {
                r.acknowledged += 1;
                let v = e.value.as_deref().unwrap_or_default();
                acked_values.insert(v);
                // acks=0 has no offset to check (-1): only a read can place it.
                if let Some(o) = e.offset.filter(|o| *o >= 0) {
                    at.entry((tp(), o)).or_default().insert(v);
                    offsets_of.entry(v).or_default().insert((tp(), o));
                    acks.push((e, tp(), o));
                    let m = max_acked.entry(tp()).or_insert(o);
                    *m = (*m).max(o);
                }
            }
            (Kind::Produce, Some(Outcome::Fail)) => r.failed += 1,
            (Kind::Produce, _) => r.unknown += 1,
            (Kind::Read, _) => {
                r.read += 1;
                let v = e.value.as_deref().unwrap_or_default();
                let o = e.offset.unwrap_or_default();
                at.entry((tp(), o)).or_default().insert(v);
                offsets_of.entry(v).or_default().insert((tp(), o));
                read_values.insert(v);
                let m = max_read.entry(tp()).or_insert(o);
                *m = (*m).max(o);
                if !sent.contains_key(v) {
                    r.unexpected += 1;
                    r.example("unexpected", || {
                        format!(
                            "{} read {v:?} at {}-{} offset {o}: no producer sent it",
                            e.client,
                            tp().0,
                            tp().1
                        )
                    });
                }
            }
            _ => {}
        }
    }

    // Lost: acknowledged, never read, though a consumer read past it.
    for (e, tp, o) in &acks {
        let v = e.value.as_deref().unwrap_or_default();
        if read_values.contains(v) {
            continue;
        }
        match max_read.get(tp) {
            Some(m) if m > o => {
                r.lost += 1;
                r.example("lost", || {
                    format!(
                        "{v:?} acknowledged to {} at {}-{} offset {o}, never read; reads reached offset {m}",
                        e.client, tp.0, tp.1
                    )
                });
            }
            _ => r.unverified += 1,
        }
    }

    // Two values at one offset; one value at two offsets.
    for ((tp, o), values) in &at {
        if values.len() > 1 {
            r.inconsistent_offsets += 1;
            r.example("inconsistent_offsets", || {
                format!("{}-{} offset {o} seen holding {values:?}", tp.0, tp.1)
            });
        }
    }
    for (v, places) in &offsets_of {
        if places.len() > 1 {
            let text = || {
                let list: Vec<String> = places.iter().map(|((t, p), o)| format!("{t}-{p}@{o}")).collect();
                format!("{v:?} seen at {}", list.join(", "))
            };
            if is_idempotent(v) {
                r.duplicated += 1;
                r.example("duplicated", text);
            } else {
                r.duplicated_non_idempotent += 1;
            }
        }
    }

    // Order: an idempotent producer's acknowledgements in one partition follow its send order.
    // Per producer and partition: (send order, acknowledged offset, value).
    type Acked<'a> = Vec<(usize, i64, &'a str)>;
    let mut by_producer: BTreeMap<(&str, Tp), Acked> = BTreeMap::new();
    for (e, tp, o) in &acks {
        let v = e.value.as_deref().unwrap_or_default();
        if is_idempotent(v) {
            let producer = sent.get(v).copied().unwrap_or(e.client.as_str());
            let order = send_order.get(v).copied().unwrap_or(usize::MAX);
            by_producer
                .entry((producer, tp.clone()))
                .or_default()
                .push((order, *o, v));
        }
    }
    for ((producer, tp), mut list) in by_producer {
        list.sort();
        let mut highest: Option<(i64, &str)> = None;
        for (_, o, v) in list {
            match highest {
                Some((h, hv)) if o < h => {
                    r.order_violations += 1;
                    r.example("order_violations", || {
                        format!(
                            "{producer} sent {hv:?} before {v:?} to {}-{}, acknowledged at offsets {h} and {o}",
                            tp.0, tp.1
                        )
                    });
                }
                _ => highest = Some((o, v)),
            }
        }
    }

    // Each consumer's reads: no skip over a known record, never backwards, unless it was
    // assigned or sought between the two reads.
    let mut last: HashMap<(&str, Tp), i64> = HashMap::new();
    for e in all() {
        let tp = || (e.topic.clone().unwrap_or_default(), e.partition.unwrap_or_default());
        match e.kind {
            Kind::Assign => {
                let topic = e.topic.as_deref().unwrap_or_default();
                last.retain(|(c, (t, _)), _| !(*c == e.client.as_str() && t == topic));
            }
            Kind::Seek => {
                last.remove(&(e.client.as_str(), tp()));
            }
            Kind::Read => {
                let o = e.offset.unwrap_or_default();
                let tp = tp();
                if let Some(a) = last.insert((e.client.as_str(), tp.clone()), o) {
                    if o <= a {
                        r.non_monotonic += 1;
                        r.example("non_monotonic", || {
                            format!("{} read {}-{} offset {a}, then offset {o}", e.client, tp.0, tp.1)
                        });
                    } else if o > a + 1 {
                        let between = at.range((tp.clone(), a + 1)..=(tp.clone(), o - 1)).next();
                        if let Some(((_, skipped), values)) = between {
                            r.poll_skips += 1;
                            r.example("poll_skips", || {
                                format!(
                                    "{} read {}-{} offset {a}, then offset {o}, skipping offset {skipped} ({values:?})",
                                    e.client, tp.0, tp.1
                                )
                            });
                        }
                    }
                }
            }
            _ => {}
        }
    }

    // Reads above every acknowledged offset of their partition (allowed; worth seeing).
    for e in all().filter(|e| e.kind == Kind::Read) {
        let tp = (e.topic.clone().unwrap_or_default(), e.partition.unwrap_or_default());
        let v = e.value.as_deref().unwrap_or_default();
        let above = max_acked.get(&tp).is_none_or(|m| e.offset.unwrap_or_default() > *m);
        if above && !acked_values.contains(v) {
            r.read_above_acknowledged += 1;
        }
    }

    // Commits: none acknowledged below one acknowledged before it was sent.
    let mut commits: BTreeMap<(&str, Tp), Vec<Commit>> = BTreeMap::new();
    for e in all().filter(|e| e.kind == Kind::Commit) {
        r.commits += 1;
        if e.outcome != Some(Outcome::Ok) {
            continue;
        }
        let tp = (e.topic.clone().unwrap_or_default(), e.partition.unwrap_or_default());
        commits
            .entry((e.group.as_deref().unwrap_or_default(), tp))
            .or_default()
            .push(Commit {
                sent: e.sent.unwrap_or(e.time),
                time: e.time,
                offset: e.offset.unwrap_or_default(),
                client: e.client.clone(),
            });
    }
    for ((group, tp), mut list) in commits {
        list.sort_by_key(|c| c.time);
        // prefix[i]: the highest offset among the first i + 1 commits by answer time.
        let mut prefix: Vec<usize> = Vec::with_capacity(list.len());
        for (i, c) in list.iter().enumerate() {
            let best = match prefix.last() {
                Some(&b) if list[b].offset >= c.offset => b,
                _ => i,
            };
            prefix.push(best);
        }
        for c in &list {
            // Commits answered strictly before this one was sent.
            let before = list.partition_point(|x| x.time < c.sent);
            if before == 0 {
                continue;
            }
            let top = &list[prefix[before - 1]];
            if c.offset < top.offset {
                r.committed_regressions += 1;
                r.example("committed_regressions", || {
                    format!(
                        "group {group} {}-{}: {} committed offset {} (answered at {}), after {} had committed {} (answered at {})",
                        tp.0, tp.1, c.client, c.offset, c.time, top.client, top.offset, top.time
                    )
                });
            }
        }
    }
    r
}

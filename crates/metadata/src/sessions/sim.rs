//! The seeded simulation of the controller's session rules ([`Sessions`]): brokers register,
//! heartbeat, lag behind the metadata log, crash and come back as new incarnations; their
//! messages are delayed, reordered and dropped; the active controller fails over (a new quorum
//! epoch, its sessions started again) and some of its commits are lost or committed without
//! an answer. The metadata image is replayed from the committed records by `MetadataDelta`,
//! as on a real node.
//!
//! After every step the invariants:
//! - a partition's leader is none, or a registered, unfenced broker of its ISR;
//! - a broker is unfenced only by a heartbeat of its current registration that showed it had
//!   reached the end of the log as it was when it registered;
//! - a broker is fenced only after the active controller has heard nothing of its current
//!   registration for the session timeout (counted from when it took over, at the earliest);
//! - broker epochs and partition leader epochs only grow, and a new leader has a new epoch;
//! - after the faults stop, every broker is registered and unfenced and every partition has
//!   its leader back.
//!
//! `SESSIONS_SEED=N cargo test -p sluice-metadata sessions` replays one seed;
//! `SESSIONS_SEEDS=N` runs N seeds (1,000 by default).

use super::*;
use crate::seeded::Rng;
use crate::MetadataDelta;
use std::collections::BTreeMap;
use std::sync::Arc;
use wire::kafka_records::metadata::{PartitionRecord, TopicRecord};

const TIMEOUT: i64 = 9_000;
const HEARTBEAT: i64 = 2_000;
const CHECK_EVERY: i64 = 250;
const BROKERS: i32 = 4;
const PARTITIONS_PER_BROKER: i32 = 2;
const CHAOS_STEPS: usize = 600;
/// Simulated time after the faults stop within which everything must be back.
const HEAL_MS: i64 = 40_000;

/// What a run went through, to show the faults and rules were exercised.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Seen {
    registrations: u64,
    fences: u64,
    unfences: u64,
    failovers: u64,
    crashes: u64,
    lost_commits: u64,
    stale_heartbeats: u64,
}

impl Seen {
    fn add(&mut self, o: Seen) {
        self.registrations += o.registrations;
        self.fences += o.fences;
        self.unfences += o.unfences;
        self.failovers += o.failovers;
        self.crashes += o.crashes;
        self.lost_commits += o.lost_commits;
        self.stale_heartbeats += o.stale_heartbeats;
    }
}

#[derive(Debug, Clone)]
enum Msg {
    Register { broker: i32, incarnation: u64 },
    Heartbeat { broker: i32, epoch: i64, offset: i64 },
}

struct SimBroker {
    alive: bool,
    incarnation: u64,
    /// Its registration's epoch, once the controller's answer reached it.
    epoch: Option<i64>,
    /// How far into the metadata log it has read.
    applied: i64,
    next_send: i64,
    restart_at: i64,
}

enum CommitFail {
    NotLeading,
    /// Lost with the controller: nothing applied.
    Lost,
    /// Applied, but the controller never learnt it (its commit timed out).
    Unanswered,
    /// The delta refused the records (they contradict the image).
    Refused,
}

struct Sim {
    rng: Rng,
    faults: bool,
    now: i64,
    image: Arc<MetadataImage>,
    sessions: Sessions,
    quorum_epoch: i32,
    leading: bool,
    leading_since: i64,
    lead_again_at: i64,
    next_check: i64,
    brokers: BTreeMap<i32, SimBroker>,
    /// (deliver at, sequence, message).
    net: Vec<(i64, u64, Msg)>,
    seq: u64,
    // What the checks need to know.
    /// Per broker: the registration epoch and time the leading controller last accepted a
    /// heartbeat or registration of, in this quorum epoch.
    heard: BTreeMap<i32, (i64, i64)>,
    /// Per (broker, registration epoch): the highest metadata offset its accepted heartbeats
    /// reported.
    reported: BTreeMap<(i32, i64), i64>,
    /// Per (broker, registration epoch): the last offset of its registration's records.
    registration_end: BTreeMap<(i32, i64), i64>,
    /// Per partition: (leader, leader epoch) as last checked.
    leaders: BTreeMap<(Uuid, i32), (i32, i32)>,
    broker_epochs: BTreeMap<i32, i64>,
    /// The first broken rule seen.
    violation: Option<String>,
    seen: Seen,
    digest: u64,
}

impl Sim {
    fn new(seed: u64, broken: Option<Broken>) -> Sim {
        let mut rng = Rng(seed);
        let mut sessions = Sessions::new(TIMEOUT);
        sessions.broken = broken;
        let mut records = vec![];
        for b in 1..=BROKERS {
            let topic_id = Uuid([b as u8; 16]);
            records.push(MetadataRecord::TopicRecord(TopicRecord {
                name: format!("t{b}"),
                topic_id,
            }));
            for p in 0..PARTITIONS_PER_BROKER {
                records.push(MetadataRecord::PartitionRecord(PartitionRecord {
                    partition_id: p,
                    topic_id,
                    replicas: vec![b],
                    isr: vec![b],
                    leader: -1,
                    ..Default::default()
                }));
            }
        }
        let mut delta = MetadataDelta::new(Arc::new(MetadataImage::empty()));
        for (i, r) in records.iter().enumerate() {
            delta.replay(i as i64, 0, r).expect("the starting records replay");
        }
        let brokers = (1..=BROKERS)
            .map(|b| {
                let next_send = rng.below(HEARTBEAT as u64) as i64;
                (
                    b,
                    SimBroker {
                        alive: true,
                        incarnation: 1,
                        epoch: None,
                        applied: -1,
                        next_send,
                        restart_at: 0,
                    },
                )
            })
            .collect();
        Sim {
            rng,
            faults: true,
            now: 0,
            image: Arc::new(delta.apply().0),
            sessions,
            quorum_epoch: 1,
            leading: true,
            leading_since: 0,
            lead_again_at: 0,
            next_check: 0,
            brokers,
            net: vec![],
            seq: 0,
            heard: BTreeMap::new(),
            reported: BTreeMap::new(),
            registration_end: BTreeMap::new(),
            leaders: BTreeMap::new(),
            broker_epochs: BTreeMap::new(),
            violation: None,
            seen: Seen::default(),
            digest: seed,
        }
    }

    fn mix(&mut self, x: u64) {
        self.digest = (self.digest ^ x).wrapping_mul(0x100_0000_01B3);
    }

    fn send(&mut self, msg: Msg) {
        if self.faults && self.rng.chance(10) {
            return;
        }
        let delay = self.rng.below(if self.faults { 1_500 } else { 50 }) as i64;
        self.seq += 1;
        self.net.push((self.now + delay, self.seq, msg));
    }

    /// Whether an answer reaches its broker.
    fn answered(&mut self) -> bool {
        !(self.faults && self.rng.chance(10))
    }

    /// Commits `records` as the active controller does, checking each fence and unfence
    /// against what the controller had heard.
    fn commit(&mut self, records: Vec<MetadataRecord>) -> Result<(), CommitFail> {
        if !self.leading {
            return Err(CommitFail::NotLeading);
        }
        if self.faults && self.rng.chance(5) {
            self.seen.lost_commits += 1;
            return Err(CommitFail::Lost);
        }
        let mut delta = MetadataDelta::new(self.image.clone());
        let start = self.image.offset + 1;
        for (i, r) in records.iter().enumerate() {
            if delta.replay(start + i as i64, self.quorum_epoch, r).is_err() {
                return Err(CommitFail::Refused);
            }
        }
        let end = start + records.len() as i64 - 1;
        for r in &records {
            self.check_record(r, end);
        }
        self.image = Arc::new(delta.apply().0);
        self.mix(end as u64);
        if self.faults && self.rng.chance(5) {
            return Err(CommitFail::Unanswered);
        }
        Ok(())
    }

    /// The rules a fence or an unfence must have followed; a violation ends the run.
    fn check_record(&mut self, r: &MetadataRecord, end: i64) {
        match r {
            MetadataRecord::RegisterBrokerRecord(r) => {
                self.seen.registrations += 1;
                self.registration_end.insert((r.broker_id, r.broker_epoch), end);
            }
            MetadataRecord::FenceBrokerRecord(r) => {
                self.seen.fences += 1;
                let heard = self
                    .heard
                    .get(&r.id)
                    .filter(|(epoch, _)| *epoch == r.epoch)
                    .map_or(self.leading_since, |(_, at)| (*at).max(self.leading_since));
                if self.now - heard < TIMEOUT {
                    self.violation = Some(format!(
                        "broker {} fenced at {} ms, {} ms after the controller last heard from it (timeout {TIMEOUT})",
                        r.id,
                        self.now,
                        self.now - heard
                    ));
                }
            }
            MetadataRecord::UnfenceBrokerRecord(r) => {
                self.seen.unfences += 1;
                let reported = self.reported.get(&(r.id, r.epoch)).copied().unwrap_or(-1);
                let needed = self.registration_end.get(&(r.id, r.epoch)).copied().unwrap_or(i64::MAX);
                if reported < needed {
                    self.violation = Some(format!(
                        "broker {} (epoch {}) unfenced having reported offset {reported}, before reaching its registration's end {needed}",
                        r.id, r.epoch
                    ));
                }
            }
            _ => {}
        }
    }

    /// The controller takes one message.
    fn deliver(&mut self, msg: Msg) {
        if !self.leading {
            return; // NOT_CONTROLLER: the broker tries again at its next send.
        }
        let (now, epoch) = (self.now, self.quorum_epoch);
        match msg {
            Msg::Register { broker, incarnation } => {
                let broker_epoch = self.image.offset + 1;
                let record = registration_record(broker, Uuid([incarnation as u8; 16]), broker_epoch, vec![], None);
                let records = registration(&self.image, record, false, &SingleReplica);
                if self.commit(records).is_err() {
                    return;
                }
                self.sessions.in_epoch(epoch).registered(broker, now, self.image.offset);
                self.heard.insert(broker, (broker_epoch, now));
                if self.answered() {
                    let b = self.brokers.get_mut(&broker).expect("a simulated broker");
                    if b.alive && b.incarnation == incarnation {
                        b.epoch = Some(broker_epoch);
                    }
                }
            }
            Msg::Heartbeat {
                broker,
                epoch: broker_epoch,
                offset,
            } => {
                if self.image.brokers.get(&broker).is_some_and(|b| b.epoch == broker_epoch) {
                    self.heard.insert(broker, (broker_epoch, now));
                    let r = self.reported.entry((broker, broker_epoch)).or_insert(-1);
                    *r = (*r).max(offset);
                }
                let image = self.image.clone();
                match self.sessions.in_epoch(epoch).heartbeat(
                    &image,
                    broker,
                    broker_epoch,
                    offset,
                    false,
                    now,
                    &SingleReplica,
                ) {
                    Heartbeat::Answer { error, .. } => {
                        let again = matches!(error, ErrorCode::StaleBrokerEpoch | ErrorCode::BrokerIdNotRegistered);
                        self.seen.stale_heartbeats += again as u64;
                        if again && self.answered() {
                            let b = self.brokers.get_mut(&broker).expect("a simulated broker");
                            if b.epoch == Some(broker_epoch) {
                                b.epoch = None; // registers again
                            }
                        }
                    }
                    Heartbeat::Unfence { records } => {
                        let _ = self.commit(records);
                    }
                }
            }
        }
    }

    /// The active controller's session check.
    fn check_sessions(&mut self) {
        let image = self.image.clone();
        let expired = self
            .sessions
            .in_epoch(self.quorum_epoch)
            .expired(&image, self.now, &SingleReplica);
        for e in expired {
            if self.commit(e.records).is_ok() {
                self.sessions.fenced(e.broker);
            }
        }
    }

    fn step(&mut self) {
        self.now += 1 + self.rng.below(250) as i64;
        // The quorum: the active controller fails over now and then.
        if self.faults && self.leading && self.rng.below(200) == 0 {
            self.leading = false;
            self.seen.failovers += 1;
            self.lead_again_at = self.now + self.rng.below(3_000) as i64;
        }
        if !self.leading && self.now >= self.lead_again_at {
            self.leading = true;
            self.quorum_epoch += 1;
            self.leading_since = self.now;
            self.heard.clear();
        }
        // The network.
        self.net.sort_by_key(|(at, seq, _)| (*at, *seq));
        let due = self.net.iter().take_while(|(at, ..)| *at <= self.now).count();
        let arrived: Vec<Msg> = self.net.drain(..due).map(|(.., m)| m).collect();
        for m in arrived {
            self.deliver(m);
        }
        if self.leading && self.now >= self.next_check {
            self.check_sessions();
            self.next_check = self.now + CHECK_EVERY;
        }
        // The brokers.
        let ids: Vec<i32> = self.brokers.keys().copied().collect();
        for id in ids {
            let crash = self.faults && self.rng.chance(1);
            let catch_up = self.rng.chance(if self.faults { 8 } else { 30 });
            let restart_after = self.rng.below(15_000) as i64;
            let end = self.image.offset;
            let now = self.now;
            let b = self.brokers.get_mut(&id).expect("a simulated broker");
            if !b.alive {
                if now >= b.restart_at {
                    // A new incarnation, with the metadata log it had.
                    b.alive = true;
                    b.incarnation += 1;
                    b.epoch = None;
                    b.next_send = now;
                }
                continue;
            }
            if crash {
                self.seen.crashes += 1;
                b.alive = false;
                b.restart_at = now + restart_after;
                continue;
            }
            if catch_up {
                b.applied = end;
            }
            if now >= b.next_send {
                let msg = match b.epoch {
                    None => {
                        b.next_send = now + HEARTBEAT / 4;
                        Msg::Register {
                            broker: id,
                            incarnation: b.incarnation,
                        }
                    }
                    Some(epoch) => {
                        b.next_send = now + HEARTBEAT;
                        Msg::Heartbeat {
                            broker: id,
                            epoch,
                            offset: b.applied,
                        }
                    }
                };
                self.send(msg);
            }
        }
        self.mix(self.now as u64);
    }

    /// The invariants of the image after a step.
    fn check(&mut self) -> Result<(), String> {
        if let Some(v) = self.violation.take() {
            return Err(v);
        }
        let image = self.image.clone();
        for t in image.topics() {
            for (&index, p) in &t.partitions {
                if p.leader != -1 {
                    let ok = image.brokers.get(&p.leader).is_some_and(|b| !b.fenced) && p.isr.contains(&p.leader);
                    if !ok {
                        return Err(format!(
                            "{}-{index} is led by broker {}, which is fenced, unregistered or out of its ISR",
                            t.name, p.leader
                        ));
                    }
                }
                let key = (t.id, index);
                if let Some(&(leader, epoch)) = self.leaders.get(&key) {
                    if p.leader_epoch < epoch || (p.leader != leader && p.leader_epoch == epoch) {
                        return Err(format!(
                            "{}-{index}: leader {leader} at epoch {epoch}, then leader {} at epoch {}",
                            t.name, p.leader, p.leader_epoch
                        ));
                    }
                }
                self.leaders.insert(key, (p.leader, p.leader_epoch));
            }
        }
        for b in image.brokers.values() {
            if let Some(&before) = self.broker_epochs.get(&b.id) {
                if b.epoch < before {
                    return Err(format!("broker {}'s epoch went from {before} to {}", b.id, b.epoch));
                }
            }
            self.broker_epochs.insert(b.id, b.epoch);
        }
        Ok(())
    }

    /// Chaos, then a healed cluster that must come back whole.
    fn run(&mut self) -> Result<(u64, Seen), String> {
        for _ in 0..CHAOS_STEPS {
            self.step();
            self.check()?;
        }
        self.faults = false;
        let healed_at = self.now;
        for b in self.brokers.values_mut() {
            b.restart_at = b.restart_at.min(healed_at);
        }
        while self.now < healed_at + HEAL_MS {
            self.step();
            self.check()?;
        }
        for (id, b) in &self.brokers {
            let registered = self.image.brokers.get(id);
            let whole = b.alive && registered.is_some_and(|r| !r.fenced && Some(r.epoch) == b.epoch);
            if !whole {
                return Err(format!(
                    "{HEAL_MS} ms after the faults stopped, broker {id} is not back: alive {}, its epoch {:?}, registered {:?}",
                    b.alive,
                    b.epoch,
                    registered.map(|r| (r.epoch, r.fenced))
                ));
            }
        }
        for t in self.image.topics() {
            for (index, p) in &t.partitions {
                if p.leader != p.replicas[0] {
                    return Err(format!(
                        "{HEAL_MS} ms after the faults stopped, {}-{index} is led by {}",
                        t.name, p.leader
                    ));
                }
            }
        }
        Ok((self.digest, self.seen))
    }
}

fn run_seed(seed: u64, broken: Option<Broken>) -> Result<(u64, Seen), String> {
    Sim::new(seed, broken).run()
}

#[test]
fn sessions_keep_their_invariants_and_recover_under_every_seed() {
    let seeds = crate::seeded::seeds("SESSIONS");
    let mut failures = vec![];
    let mut seen = Seen::default();
    for &seed in &seeds {
        match run_seed(seed, None) {
            Ok((_, s)) => seen.add(s),
            Err(e) => {
                eprintln!(
                    "seed {seed} failed: {e}\n  replay: SESSIONS_SEED={seed} cargo test -p sluice-metadata sessions"
                );
                failures.push(seed);
            }
        }
    }
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
    eprintln!("{} seeds: {seen:?}", seeds.len());
    // Every fault and rule was exercised, so passing means something.
    if seeds.len() >= 100 {
        let Seen {
            registrations,
            fences,
            unfences,
            failovers,
            crashes,
            lost_commits,
            stale_heartbeats,
        } = seen;
        for (what, n) in [
            ("registrations", registrations),
            ("fences", fences),
            ("unfences", unfences),
            ("failovers", failovers),
            ("crashes", crashes),
            ("lost commits", lost_commits),
            ("stale heartbeats", stale_heartbeats),
        ] {
            assert!(n >= seeds.len() as u64 / 10, "only {n} {what} in {} seeds", seeds.len());
        }
    }
}

#[test]
fn a_seed_replays_exactly() {
    for seed in [3, 77] {
        assert_eq!(run_seed(seed, None), run_seed(seed, None));
    }
    assert_ne!(run_seed(3, None), run_seed(77, None));
}

/// Each deliberately broken rule is caught by the checks within a few seeds.
#[test]
fn the_checks_catch_each_broken_rule() {
    for (broken, expect) in [
        (Broken::UnfenceEarly, "before reaching its registration's end"),
        (Broken::FenceEarly, "after the controller last heard from it"),
        (Broken::FenceKeepsLeaders, "which is fenced"),
    ] {
        let caught = (0..200).find_map(|seed| run_seed(seed, Some(broken)).err());
        let e = caught.unwrap_or_else(|| panic!("{broken:?} went unnoticed in 200 seeds"));
        assert!(e.contains(expect), "{broken:?}: {e}");
    }
}

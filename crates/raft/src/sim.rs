//! The seeded simulation: voters and observers on a network that drops, delays, duplicates,
//! reorders and partitions messages, with crashes that keep only what was made durable (a
//! crash in the middle of a step keeps a prefix of its writes and sends nothing). After every
//! step it checks the invariants; at the end it heals everything and checks that the cluster
//! elects a leader and commits a write on every node.
//!
//! `RAFT_SEED=N cargo test -p sluice-raft` replays one seed; `RAFT_SEEDS=N` runs N seeds.

use super::*;

type Batch = (BatchMeta, Payload<u64>);

/// The simulation's randomness (independent of the nodes' own).
struct SimRng(u64);

impl SimRng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

struct Node {
    raft: Option<Raft<u64>>,
    /// What is durable: the log and the quorum state.
    log: Vec<Batch>,
    state: QuorumState,
    /// This process's high watermark (it only grows within one life).
    hw: i64,
    /// The next step of this node crashes halfway through.
    crash_next: bool,
}

#[derive(Clone, Copy)]
struct Faults {
    drop: u64,
    duplicate: u64,
    max_delay: u64,
}

pub(crate) struct Sim {
    rng: SimRng,
    seed: u64,
    now: u64,
    nodes: BTreeMap<NodeId, Node>,
    voters: BTreeSet<NodeId>,
    queue: BTreeMap<(u64, u64), (NodeId, NodeId, Message<u64>)>,
    seq: u64,
    cut: BTreeSet<(NodeId, NodeId)>,
    faults: Faults,
    /// The longest committed prefix any node has shown: every node's log agrees with it up
    /// to that node's high watermark.
    committed: Vec<Batch>,
    leaders: BTreeMap<i32, NodeId>,
    next_value: u64,
    broken: bool,
    /// A digest of everything that happened, to show that a seed replays identically.
    pub(crate) trace: u64,
}

fn end_of(log: &[Batch]) -> i64 {
    log.last().map_or(0, |(m, _)| m.last_offset + 1)
}

/// The batches of `log` below `offset`.
fn prefix(log: &[Batch], offset: i64) -> &[Batch] {
    let n = log.partition_point(|(m, _)| m.base_offset < offset);
    &log[..n]
}

impl Sim {
    pub(crate) fn new(seed: u64, broken: bool) -> Sim {
        let mut rng = SimRng(seed);
        let voters = if rng.chance(50) { 3 } else { 5 };
        let observers = rng.below(3) as i32;
        let voter_ids: BTreeSet<NodeId> = (1..=voters).collect();
        let mut sim = Sim {
            faults: Faults {
                drop: rng.below(20),
                duplicate: rng.below(5),
                max_delay: 1 + rng.below(100),
            },
            rng,
            seed,
            now: 0,
            nodes: BTreeMap::new(),
            voters: voter_ids.clone(),
            queue: BTreeMap::new(),
            seq: 0,
            cut: BTreeSet::new(),
            committed: Vec::new(),
            leaders: BTreeMap::new(),
            next_value: 1,
            broken,
            trace: 0,
        };
        for id in 1..=voters + observers {
            sim.nodes.insert(
                id,
                Node {
                    raft: None,
                    log: Vec::new(),
                    state: QuorumState::default(),
                    hw: 0,
                    crash_next: false,
                },
            );
        }
        let ids: Vec<NodeId> = sim.nodes.keys().copied().collect();
        for id in ids {
            sim.start(id).expect("a fresh node starts");
        }
        sim
    }

    fn config(&self, id: NodeId) -> Config {
        let mut c = Config::new(
            id,
            self.voters.iter().copied(),
            self.seed.wrapping_mul(31).wrapping_add(id as u64),
        );
        c.broken_commit_alone = self.broken;
        c
    }

    fn mix(&mut self, x: u64) {
        self.trace = (self.trace ^ x).wrapping_mul(0x100_0000_01B3);
    }

    fn start(&mut self, id: NodeId) -> Result<(), String> {
        let config = self.config(id);
        let now = self.now;
        let node = self.nodes.get_mut(&id).ok_or("no such node")?;
        let view = LogView::from_batches(node.log.iter().map(|(m, _)| *m)).map_err(|e| format!("node {id}: {e}"))?;
        let mut raft = Raft::new(config, node.state, view, now);
        node.hw = 0;
        let actions = raft.take_actions();
        node.raft = Some(raft);
        self.apply(id, actions)
    }

    /// Carries out a node's actions in order, as a driver must; a node marked to crash keeps a
    /// random prefix of its durable writes and sends nothing.
    fn apply(&mut self, id: NodeId, actions: Vec<Action<u64>>) -> Result<(), String> {
        let crash = self.nodes.get(&id).is_some_and(|n| n.crash_next);
        let keep = if crash {
            let durable = actions
                .iter()
                .filter(|a| matches!(a, Action::PersistState(_) | Action::Append(_) | Action::Truncate(_)))
                .count();
            self.rng.below(durable as u64 + 1) as usize
        } else {
            usize::MAX
        };
        let mut durable_done = 0usize;
        for action in actions {
            self.mix(match &action {
                Action::PersistState(s) => s.epoch as u64,
                Action::Append(b) => b.len() as u64 + 100,
                Action::Truncate(t) => *t as u64 + 200,
                Action::Send { to, .. } => *to as u64 + 300,
                Action::HighWatermark(h) => *h as u64 + 400,
            });
            let is_durable = matches!(
                action,
                Action::PersistState(_) | Action::Append(_) | Action::Truncate(_)
            );
            if crash && (!is_durable || durable_done >= keep) {
                if is_durable {
                    if let Action::Append(batches) = &action {
                        // The write the crash interrupted: a prefix of its batches may have landed.
                        let n = self.rng.below(batches.len() as u64) as usize;
                        let node = self.nodes.get_mut(&id).ok_or("no node")?;
                        node.log.extend(batches[..n].iter().cloned());
                    }
                    break;
                }
                continue;
            }
            if is_durable {
                durable_done += 1;
            }
            self.carry_out(id, action)?;
        }
        if crash {
            let node = self.nodes.get_mut(&id).ok_or("no node")?;
            node.raft = None;
            node.crash_next = false;
        }
        Ok(())
    }

    fn carry_out(&mut self, id: NodeId, action: Action<u64>) -> Result<(), String> {
        let majority = self.voters.len() / 2 + 1;
        match action {
            Action::PersistState(s) => {
                let node = self.nodes.get_mut(&id).ok_or("no node")?;
                if s.epoch < node.state.epoch {
                    return Err(format!(
                        "node {id}: epoch went back from {} to {}",
                        node.state.epoch, s.epoch
                    ));
                }
                if s.epoch == node.state.epoch && node.state.voted_for.is_some() && s.voted_for != node.state.voted_for
                {
                    return Err(format!("node {id}: changed its vote in epoch {}", s.epoch));
                }
                node.state = s;
            }
            Action::Append(batches) => {
                let node = self.nodes.get_mut(&id).ok_or("no node")?;
                for (m, p) in batches {
                    if m.base_offset != end_of(&node.log) {
                        return Err(format!(
                            "node {id}: append at {} with log end {}",
                            m.base_offset,
                            end_of(&node.log)
                        ));
                    }
                    node.log.push((m, p));
                }
            }
            Action::Truncate(to) => {
                let node = self.nodes.get_mut(&id).ok_or("no node")?;
                if to < node.hw {
                    return Err(format!(
                        "node {id}: truncated to {to}, below its high watermark {}",
                        node.hw
                    ));
                }
                node.log.retain(|(m, _)| m.base_offset < to);
                if end_of(&node.log) != to.min(end_of(&node.log)) || end_of(&node.log) > to {
                    return Err(format!("node {id}: truncation to {to} splits a batch"));
                }
            }
            Action::HighWatermark(h) => {
                let node = self.nodes.get_mut(&id).ok_or("no node")?;
                if h < node.hw {
                    return Err(format!("node {id}: high watermark went back from {} to {h}", node.hw));
                }
                if h > end_of(&node.log) {
                    return Err(format!(
                        "node {id}: high watermark {h} beyond its log end {}",
                        end_of(&node.log)
                    ));
                }
                node.hw = h;
                let mine = prefix(&node.log, h).to_vec();
                let is_leader = node.raft.as_ref().is_some_and(|r| r.role() == RoleName::Leader);
                // Committed entries are the same on every node that has them.
                let n = self.committed.len().min(mine.len());
                if mine[..n] != self.committed[..n] {
                    let at = (0..n).find(|i| mine[*i] != self.committed[*i]).unwrap_or(0);
                    return Err(format!(
                        "node {id}: committed entry {:?} differs from {:?} committed elsewhere",
                        mine[at], self.committed[at]
                    ));
                }
                if mine.len() > self.committed.len() {
                    self.committed.extend(mine[n..].iter().cloned());
                }
                // A leader's high watermark was reached by a majority of voters' durable logs.
                if is_leader {
                    let have = self
                        .voters
                        .iter()
                        .filter(|v| self.nodes.get(v).is_some_and(|o| prefix(&o.log, h) == &mine[..]))
                        .count();
                    if have < majority {
                        return Err(format!(
                            "node {id}: leader committed up to {h}, which only {have} of {} voters hold",
                            self.voters.len()
                        ));
                    }
                }
            }
            Action::Send {
                to,
                mut message,
                fill_from,
            } => {
                if let (Some(from), Message::FetchResponse { batches, .. }) = (fill_from, &mut message) {
                    let node = self.nodes.get(&id).ok_or("no node")?;
                    let i = node.log.partition_point(|(m, _)| m.base_offset < from);
                    if node.log.get(i).is_none_or(|(m, _)| m.base_offset != from) {
                        return Err(format!("node {id}: asked to send from {from}, not a batch start"));
                    }
                    let n = 1 + self.rng.below(8) as usize;
                    batches.extend(node.log[i..].iter().take(n).cloned());
                }
                self.send(id, to, message);
            }
        }
        Ok(())
    }

    fn send(&mut self, from: NodeId, to: NodeId, message: Message<u64>) {
        if self.cut.contains(&(from, to)) || self.rng.chance(self.faults.drop) {
            return;
        }
        let copies = if self.rng.chance(self.faults.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let at = self.now + 1 + self.rng.below(self.faults.max_delay);
            self.seq += 1;
            self.queue.insert((at, self.seq), (from, to, message.clone()));
        }
    }

    fn step_node(&mut self, id: NodeId, input: Input<u64>) -> Result<(), String> {
        let now = self.now;
        let Some(raft) = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()) else {
            return Ok(());
        };
        let actions = raft.step(now, input);
        self.apply(id, actions)
    }

    /// Checks what must hold between steps.
    fn check(&mut self) -> Result<(), String> {
        for (id, node) in &self.nodes {
            let Some(r) = &node.raft else { continue };
            if r.role() != RoleName::Leader {
                continue;
            }
            let epoch = r.epoch();
            match self.leaders.get(&epoch) {
                Some(l) if l != id => return Err(format!("two leaders in epoch {epoch}: {l} and {id}")),
                Some(_) => {}
                None => {
                    // A new leader holds every committed entry.
                    let n = self.committed.len();
                    if node.log.len() < n || node.log[..n] != self.committed[..] {
                        return Err(format!(
                            "node {id} elected in epoch {epoch} without every committed entry ({} committed, log {:?})",
                            n,
                            node.log.iter().map(|(m, _)| m).collect::<Vec<_>>()
                        ));
                    }
                    self.leaders.insert(epoch, *id);
                }
            }
        }
        Ok(())
    }

    /// Advances to the next message or timer and handles everything due then.
    fn advance(&mut self) -> Result<(), String> {
        let next_msg = self.queue.keys().next().map(|k| k.0);
        let next_timer = self
            .nodes
            .values()
            .filter_map(|n| n.raft.as_ref())
            .map(|r| r.next_deadline())
            .min();
        let next = match (next_msg, next_timer) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => self.now + 10,
        };
        self.now = self.now.max(next);
        while let Some((&key, _)) = self.queue.iter().next() {
            if key.0 > self.now {
                break;
            }
            let (from, to, message) = self.queue.remove(&key).ok_or("queue")?;
            self.step_node(to, Input::Receive { from, message })?;
            self.check()?;
        }
        let due: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.raft.as_ref().is_some_and(|r| r.next_deadline() <= self.now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.step_node(id, Input::Tick)?;
            self.check()?;
        }
        Ok(())
    }

    fn live(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.raft.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    fn pick(&mut self, ids: &[NodeId]) -> Option<NodeId> {
        if ids.is_empty() {
            None
        } else {
            Some(ids[self.rng.below(ids.len() as u64) as usize])
        }
    }

    fn propose(&mut self, id: NodeId) -> Result<Option<BatchMeta>, String> {
        let now = self.now;
        let value = self.next_value;
        let records = 1 + self.rng.below(3) as u32;
        let Some(raft) = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()) else {
            return Ok(None);
        };
        match raft.propose(now, value, records) {
            Ok((meta, actions)) => {
                self.next_value += 1;
                self.apply(id, actions)?;
                Ok(Some(meta))
            }
            Err(_) => Ok(None),
        }
    }

    /// One random step of the fault phase.
    fn chaos_step(&mut self) -> Result<(), String> {
        let live = self.live();
        match self.rng.below(100) {
            0..=69 => self.advance()?,
            70..=84 => {
                let leaders: Vec<NodeId> = live
                    .iter()
                    .copied()
                    .filter(|id| {
                        self.nodes[id]
                            .raft
                            .as_ref()
                            .is_some_and(|r| r.role() == RoleName::Leader)
                    })
                    .collect();
                if let Some(id) = self.pick(&leaders) {
                    self.propose(id)?;
                }
            }
            85..=87 => {
                if let Some(id) = self.pick(&live) {
                    let node = self.nodes.get_mut(&id).ok_or("no node")?;
                    if self.rng.chance(50) {
                        node.raft = None; // between steps: everything it did is durable
                    } else {
                        node.crash_next = true; // in the middle of its next step
                    }
                }
            }
            88..=91 => {
                let down: Vec<NodeId> = self
                    .nodes
                    .iter()
                    .filter(|(_, n)| n.raft.is_none())
                    .map(|(id, _)| *id)
                    .collect();
                if let Some(id) = self.pick(&down) {
                    self.start(id)?;
                }
            }
            92..=94 => {
                let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
                let side: BTreeSet<NodeId> = ids.iter().copied().filter(|_| self.rng.chance(40)).collect();
                for a in &ids {
                    for b in &ids {
                        if side.contains(a) != side.contains(b) {
                            self.cut.insert((*a, *b));
                        }
                    }
                }
            }
            95..=97 => self.cut.clear(),
            _ => {
                let leaders: Vec<NodeId> = live
                    .iter()
                    .copied()
                    .filter(|id| {
                        self.nodes[id]
                            .raft
                            .as_ref()
                            .is_some_and(|r| r.role() == RoleName::Leader)
                    })
                    .collect();
                if let Some(id) = self.pick(&leaders) {
                    let now = self.now;
                    let actions = self
                        .nodes
                        .get_mut(&id)
                        .and_then(|n| n.raft.as_mut())
                        .map(|r| r.resign(now));
                    if let Some(a) = actions {
                        self.apply(id, a)?;
                    }
                }
            }
        }
        self.check()
    }

    /// Runs `steps` fault steps, then heals everything and requires a leader and a write
    /// committed on every node within a bounded simulated time.
    pub(crate) fn run(&mut self, steps: usize) -> Result<(), String> {
        for _ in 0..steps {
            self.chaos_step()?;
        }
        // Heal: every node up, no cuts, no losses.
        self.cut.clear();
        self.faults = Faults {
            drop: 0,
            duplicate: 0,
            max_delay: 5,
        };
        for n in self.nodes.values_mut() {
            n.crash_next = false;
        }
        let down: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.raft.is_none())
            .map(|(id, _)| *id)
            .collect();
        for id in down {
            self.start(id)?;
        }
        let deadline = self.now + 30_000;
        let mut written: Option<BatchMeta> = None;
        while self.now < deadline {
            self.advance()?;
            if written.is_none() {
                let leader = self.live().into_iter().find(|id| {
                    self.nodes[id]
                        .raft
                        .as_ref()
                        .is_some_and(|r| r.role() == RoleName::Leader)
                });
                if let Some(id) = leader {
                    written = self.propose(id)?;
                }
            }
            if let Some(m) = written {
                if self.nodes.values().all(|n| n.hw > m.last_offset) {
                    return Ok(());
                }
            }
        }
        let status: Vec<String> = self
            .nodes
            .iter()
            .map(|(id, n)| {
                let r = n.raft.as_ref();
                format!(
                    "{id}: {:?} epoch {:?} hw {} end {}",
                    r.map(|r| r.role()),
                    r.map(|r| r.epoch()),
                    n.hw,
                    end_of(&n.log)
                )
            })
            .collect();
        Err(format!(
            "no write committed on every node 30 s after healing: {}",
            status.join("; ")
        ))
    }
}

fn run_seed(seed: u64, broken: bool, steps: usize) -> Result<u64, String> {
    let outcome = std::panic::catch_unwind(|| {
        let mut sim = Sim::new(seed, broken);
        sim.run(steps).map(|()| sim.trace)
    });
    match outcome {
        Ok(r) => r,
        Err(p) => Err(p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into())),
    }
}

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

const STEPS: usize = 1500;

#[test]
fn every_seed_keeps_the_invariants_and_converges() {
    let seeds: Vec<u64> = match env("RAFT_SEED") {
        Some(s) => vec![s],
        None => (0..env("RAFT_SEEDS").unwrap_or(1000)).collect(),
    };
    let mut failures = Vec::new();
    for seed in &seeds {
        if let Err(e) = run_seed(*seed, false, STEPS) {
            eprintln!("seed {seed} failed: {e}\n  replay: RAFT_SEED={seed} cargo test -p sluice-raft every_seed");
            failures.push(*seed);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} seeds failed: {failures:?}",
        failures.len(),
        seeds.len()
    );
}

#[test]
fn a_seed_replays_identically() {
    for seed in [7, 8, 9] {
        assert_eq!(run_seed(seed, false, STEPS), run_seed(seed, false, STEPS));
    }
}

#[test]
fn a_leader_that_commits_alone_is_caught() {
    // The checker on a deliberately broken core: the leader moves its high watermark to its
    // own log end without waiting for a majority.
    let caught = (0..200).find_map(|seed| run_seed(seed, true, STEPS).err().map(|e| (seed, e)));
    let (seed, e) = caught.expect("the broken core went unnoticed on 200 seeds");
    assert!(
        e.contains("only")
            || e.contains("differs")
            || e.contains("without every committed")
            || e.contains("below its high watermark"),
        "seed {seed}: {e}"
    );
}

//! The seeded simulation: voters and observers on a network that drops, delays, duplicates,
//! reorders and partitions messages, with crashes that keep only what was made durable (a
//! crash in the middle of a step keeps a prefix of its writes and sends nothing). After every
//! step it checks the invariants; at the end it heals everything and checks that the cluster
//! elects a leader and commits a write on every node.
//!
//! `RAFT_SEED=N cargo test -p sluice-raft` replays one seed; `RAFT_SEEDS=N` runs N seeds.

use super::*;

type Batch = (BatchMeta, Payload<u64>);

/// The simulation's randomness (the core's SplitMix64, seeded apart from the nodes').
struct SimRng(Rng);

impl SimRng {
    fn below(&mut self, n: u64) -> u64 {
        self.0.next() % n.max(1)
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
    /// The latest snapshot: its id and the batches it stands for.
    snapshot: Option<(SnapshotId, Vec<Batch>)>,
    /// A snapshot being fetched (durable, as a partial file would be).
    partial: Vec<u8>,
}

impl Node {
    /// Everything this node holds: its snapshot's batches, then its log.
    fn full(&self) -> Vec<Batch> {
        let mut all = self.snapshot.as_ref().map_or_else(Vec::new, |s| s.1.clone());
        all.extend(self.log.iter().cloned());
        all
    }

    fn end(&self) -> i64 {
        self.log
            .last()
            .map(|(m, _)| m.last_offset + 1)
            .or(self.snapshot.as_ref().map(|s| s.0.end_offset))
            .unwrap_or(0)
    }

    fn start(&self) -> i64 {
        self.snapshot.as_ref().map_or(0, |s| s.0.end_offset)
    }
}

/// A snapshot's bytes, as the simulation ships them in chunks.
fn encode(batches: &[Batch]) -> Vec<u8> {
    let mut out = Vec::new();
    for (m, p) in batches {
        out.extend(m.base_offset.to_be_bytes());
        out.extend(m.last_offset.to_be_bytes());
        out.extend(m.epoch.to_be_bytes());
        match p {
            Payload::LeaderChange { leader, voters } => {
                out.push(0);
                out.extend(leader.to_be_bytes());
                out.extend((voters.len() as u32).to_be_bytes());
                for v in voters {
                    out.extend(v.to_be_bytes());
                }
            }
            Payload::Data(v) => {
                out.push(1);
                out.extend(v.to_be_bytes());
            }
        }
    }
    out
}

fn decode(mut b: &[u8]) -> Result<Vec<Batch>, String> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if b.len() < n {
            return Err("snapshot cut short".into());
        }
        let (x, rest) = b.split_at(n);
        *b = rest;
        Ok(x)
    }
    let i64_ = |b: &mut &[u8]| take(b, 8).map(|x| i64::from_be_bytes(x.try_into().unwrap_or([0; 8])));
    let i32_ = |b: &mut &[u8]| take(b, 4).map(|x| i32::from_be_bytes(x.try_into().unwrap_or([0; 4])));
    let mut out = Vec::new();
    while !b.is_empty() {
        let m = BatchMeta {
            base_offset: i64_(&mut b)?,
            last_offset: i64_(&mut b)?,
            epoch: i32_(&mut b)?,
        };
        let p = match take(&mut b, 1)?[0] {
            0 => {
                let leader = i32_(&mut b)?;
                let n = i32_(&mut b)? as usize;
                let voters = (0..n).map(|_| i32_(&mut b)).collect::<Result<_, _>>()?;
                Payload::LeaderChange { leader, voters }
            }
            _ => Payload::Data(i64_(&mut b)? as u64),
        };
        out.push((m, p));
    }
    Ok(out)
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
    /// How many snapshots followers fetched and installed, and how many fetches were told to
    /// truncate: the paths the faults must reach.
    pub(crate) installs: u64,
    pub(crate) truncations: u64,
}

fn is_durable<B>(a: &Action<B>) -> bool {
    matches!(
        a,
        Action::PersistState(_)
            | Action::Append(_)
            | Action::Truncate(_)
            | Action::SnapshotChunk { .. }
            | Action::InstallSnapshot(_)
    )
}

/// The batches of `log` below `offset`.
fn prefix(log: &[Batch], offset: i64) -> &[Batch] {
    let n = log.partition_point(|(m, _)| m.base_offset < offset);
    &log[..n]
}

impl Sim {
    pub(crate) fn new(seed: u64, broken: bool) -> Sim {
        let mut rng = SimRng(Rng(seed));
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
            installs: 0,
            truncations: 0,
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
                    snapshot: None,
                    partial: Vec::new(),
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
        let view = LogView::from_parts(node.snapshot.as_ref().map(|s| s.0), node.log.iter().map(|(m, _)| *m))
            .map_err(|e| format!("node {id}: {e}"))?;
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
            let durable = actions.iter().filter(|a| is_durable(a)).count();
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
                Action::SnapshotChunk { position, .. } => *position + 500,
                Action::InstallSnapshot(id) => id.end_offset as u64 + 600,
            });
            let durable = is_durable(&action);
            if crash && (!durable || durable_done >= keep) {
                if durable {
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
            if durable {
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
                    if m.base_offset != node.end() {
                        return Err(format!(
                            "node {id}: append at {} with log end {}",
                            m.base_offset,
                            node.end()
                        ));
                    }
                    node.log.push((m, p));
                }
            }
            Action::Truncate(to) => {
                let node = self.nodes.get_mut(&id).ok_or("no node")?;
                if to < node.hw || to < node.start() {
                    return Err(format!(
                        "node {id}: truncated to {to}, below its high watermark {}",
                        node.hw
                    ));
                }
                node.log.retain(|(m, _)| m.base_offset < to);
                self.truncations += 1;
                if node.end() > to {
                    return Err(format!("node {id}: truncation to {to} splits a batch"));
                }
            }
            Action::HighWatermark(h) => {
                let node = self.nodes.get_mut(&id).ok_or("no node")?;
                if h < node.hw {
                    return Err(format!("node {id}: high watermark went back from {} to {h}", node.hw));
                }
                if h > node.end() {
                    return Err(format!(
                        "node {id}: high watermark {h} beyond its log end {}",
                        node.end()
                    ));
                }
                node.hw = h;
                let mine = prefix(&node.full(), h).to_vec();
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
                        .filter(|v| self.nodes.get(v).is_some_and(|o| prefix(&o.full(), h) == &mine[..]))
                        .count();
                    if have < majority {
                        return Err(format!(
                            "node {id}: leader committed up to {h}, which only {have} of {} voters hold",
                            self.voters.len()
                        ));
                    }
                }
            }
            Action::Send { to, mut message, fill } => {
                match (fill, &mut message) {
                    (Some(Fill::Log(from)), Message::FetchResponse(FetchAnswer { batches, .. })) => {
                        let node = self.nodes.get(&id).ok_or("no node")?;
                        let i = node.log.partition_point(|(m, _)| m.base_offset < from);
                        if node.log.get(i).is_none_or(|(m, _)| m.base_offset != from) {
                            return Err(format!(
                                "node {id}: asked to send from {from}, not a batch start in its log"
                            ));
                        }
                        let n = 1 + self.rng.below(8) as usize;
                        batches.extend(node.log[i..].iter().take(n).cloned());
                    }
                    (
                        Some(Fill::Snapshot { id: sid, position }),
                        Message::FetchSnapshotResponse(SnapshotAnswer { size, chunk, .. }),
                    ) => {
                        let node = self.nodes.get(&id).ok_or("no node")?;
                        let Some((have, batches)) = &node.snapshot else {
                            return Err(format!("node {id}: asked to send a snapshot it does not have"));
                        };
                        if *have != sid {
                            return Err(format!("node {id}: asked to send snapshot {sid:?}, has {have:?}"));
                        }
                        let bytes = encode(batches);
                        let from = (position as usize).min(bytes.len());
                        let n = 1 + self.rng.below(64) as usize;
                        *size = bytes.len() as u64;
                        chunk.extend(&bytes[from..(from + n).min(bytes.len())]);
                    }
                    (None, _) => {}
                    (Some(f), m) => return Err(format!("node {id}: fill {f:?} for {m:?}")),
                }
                self.send(id, to, message);
            }
            Action::SnapshotChunk { position, chunk, .. } => {
                let node = self.nodes.get_mut(&id).ok_or("no node")?;
                if position == 0 {
                    node.partial.clear();
                }
                if position as usize != node.partial.len() {
                    return Err(format!(
                        "node {id}: snapshot chunk at {position}, has {}",
                        node.partial.len()
                    ));
                }
                node.partial.extend(chunk);
            }
            Action::InstallSnapshot(sid) => {
                let node = self.nodes.get_mut(&id).ok_or("no node")?;
                let batches = decode(&node.partial).map_err(|e| format!("node {id}: {e}"))?;
                let last = batches.last().map(|(m, _)| *m);
                if last.is_none_or(|m| m.last_offset + 1 != sid.end_offset || m.epoch != sid.epoch) {
                    return Err(format!("node {id}: snapshot {sid:?} holds {last:?} last"));
                }
                node.snapshot = Some((sid, batches));
                node.log.clear();
                node.partial.clear();
                self.installs += 1;
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
        if std::env::var_os("RAFT_TRACE").is_some() {
            if let Input::Receive { from, message } = &input {
                eprintln!("{now} node {id} <- {from}: {message:?}");
            }
        }
        let actions = raft.step(now, input);
        if std::env::var_os("RAFT_TRACE").is_some() {
            for a in &actions {
                eprintln!("{now} node {id} -> {a:?}");
            }
        }
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
                    let full = node.full();
                    if full.len() < n || full[..n] != self.committed[..] {
                        return Err(format!(
                            "node {id} elected in epoch {epoch} without every committed entry ({} committed, log {:?})",
                            n,
                            full.iter().map(|(m, _)| m).collect::<Vec<_>>()
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

    /// The live nodes that lead (in some epoch: an old leader may not know it is deposed).
    fn leaders(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.raft.as_ref().is_some_and(|r| r.role() == RoleName::Leader))
            .map(|(id, _)| *id)
            .collect()
    }

    fn live(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.raft.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    fn down(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.raft.is_none())
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
            83..=84 => {
                // A snapshot at the high watermark (what a node's state machine has applied).
                if let Some(id) = self.pick(&live) {
                    let node = self.nodes.get_mut(&id).ok_or("no node")?;
                    let hw = node.hw;
                    if hw > node.start() {
                        let batches = prefix(&node.full(), hw).to_vec();
                        let raft = node.raft.as_mut().ok_or("no raft")?;
                        let sid = raft.snapshot_taken(hw).map_err(|e| format!("node {id}: {e}"))?;
                        node.snapshot = Some((sid, batches));
                        node.log.retain(|(m, _)| m.base_offset >= hw);
                    }
                }
            }
            70..=82 => {
                let leaders = self.leaders();
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
                let down = self.down();
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
                let leaders = self.leaders();
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
        for id in self.down() {
            self.start(id)?;
        }
        self.converge("after healing")?;
        // Then the leader dies for good: the others must elect one of themselves and go on
        // (a voter that still follows the dead leader must not talk a prospective out of its
        // election).
        let leader = self.leaders().first().copied().ok_or("no leader after converging")?;
        let live_voters = self.voters.iter().filter(|v| **v != leader).count();
        if live_voters > self.voters.len() / 2 {
            if let Some(node) = self.nodes.get_mut(&leader) {
                node.raft = None;
            }
            self.converge(&format!("after leader {leader} died for good"))?;
        }
        Ok(())
    }

    /// Proposes a write through whichever node leads until one is committed on every live
    /// node, within 30 s.
    fn converge(&mut self, when: &str) -> Result<(), String> {
        let deadline = self.now + 30_000;
        // The write proposed: by whom, in which epoch, where, with which value.
        let mut written: Option<(NodeId, i32, BatchMeta, u64)> = None;
        while self.now < deadline {
            self.advance()?;
            let leader = self.leaders().first().copied();
            if let Some((by, epoch, m, value)) = written {
                let committed = self
                    .committed
                    .iter()
                    .any(|(c, p)| *c == m && *p == Payload::Data(value));
                if committed
                    && self
                        .nodes
                        .values()
                        .filter(|n| n.raft.is_some())
                        .all(|n| n.hw > m.last_offset)
                {
                    return Ok(());
                }
                // Its leader lost office before it was committed: it may be gone; write again.
                let still =
                    leader.is_some_and(|l| l == by && self.nodes[&l].raft.as_ref().is_some_and(|r| r.epoch() == epoch));
                if !committed && !still {
                    written = None;
                }
            }
            if let (None, Some(id)) = (written, leader) {
                let value = self.next_value;
                let epoch = self.nodes[&id].raft.as_ref().map_or(0, |r| r.epoch());
                if let Some(m) = self.propose(id)? {
                    written = Some((id, epoch, m, value));
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
                    n.end()
                )
            })
            .collect();
        Err(format!(
            "no write committed on every live node 30 s {when}: {}",
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
fn the_faults_reach_snapshot_transfer_and_truncation() {
    let (mut installs, mut truncations) = (0, 0);
    for seed in 0..100 {
        let mut sim = Sim::new(seed, false);
        sim.run(STEPS).expect("the seed passes");
        installs += sim.installs;
        truncations += sim.truncations;
    }
    eprintln!("100 seeds: {installs} snapshots installed, {truncations} truncations");
    assert!(
        installs >= 10 && truncations >= 10,
        "{installs} installs, {truncations} truncations"
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

//! KRaft — Kafka's pull-based Raft (KIP-595, pre-vote from KIP-996) — as a state machine with
//! no I/O, no threads and no clock of its own.
//!
//! The driver feeds it the time and what happened (`step`: a received message or a timer
//! tick; `propose`: records to append as leader) and carries out what it asks, **in order**:
//!
//! 1. `PersistState` (the `quorum-state` file), `Append` and `Truncate` change durable state.
//!    Each must be durable (written and fsynced) before the driver carries out any later
//!    action of the same step, and before it feeds the next input.
//! 2. `Send` goes out only then: nothing is ever promised to another node that a crash could
//!    take back (a vote, an offset a follower reports by fetching from it).
//! 3. `HighWatermark` says which prefix of the log is committed.
//!
//! The core never sees record bytes. It decides offsets and epochs (`BatchMeta`) and carries
//! the driver's payload `B` through unchanged; a leader answering a fetch asks the driver to
//! fill the response from its own log (`Send { fill: Some(Fill::Log(offset)), .. }`), or from
//! its latest snapshot (`Fill::Snapshot`) for a follower that is behind the log start.
//!
//! Roles follow Kafka's `QuorumState`: a voter is unattached, prospective (asking for
//! pre-votes, which change nothing on the voters), candidate, leader, follower or resigned;
//! a node that is not a voter (an observer, such as a broker) only ever follows. Followers
//! pull with Fetch; a leader answers a fetch whose last epoch disagrees with its log with the
//! diverging epoch and its end, and the follower truncates there (never to the high
//! watermark). The high watermark moves to the highest offset a majority of voters has
//! reached, once that covers the leader's own epoch (its LeaderChange record).
//!
//! Snapshots: the driver writes one at a committed offset and says so (`snapshot_taken`); the
//! log then starts there. A follower behind the log start is told the snapshot's id, fetches
//! it in chunks (FetchSnapshot: `SnapshotChunk` actions, then `InstallSnapshot`), and goes on
//! fetching from its end.
//!
//! Not yet here: dynamic voters (KIP-853).

mod log;
#[cfg(test)]
mod sim;

pub use log::{BatchMeta, LogView, SnapshotId};

use std::collections::{BTreeMap, BTreeSet};

pub type NodeId = i32;

/// Settings, with Kafka's names and defaults.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_id: NodeId,
    /// The voters (`controller.quorum.voters`); a node not among them is an observer.
    pub voters: BTreeSet<NodeId>,
    /// `controller.quorum.election.timeout.ms` (1000): how long a voter without a leader waits,
    /// plus a random share of as much again, before asking for votes; and how long an
    /// election may take.
    pub election_timeout_ms: u64,
    /// `controller.quorum.fetch.timeout.ms` (2000): a follower that has not heard from its
    /// leader for this long (plus a random share of up to half the election timeout) starts
    /// an election; a leader that has not heard from a majority
    /// for 1.5 times this long resigns.
    pub fetch_timeout_ms: u64,
    /// `controller.quorum.election.backoff.max.ms` (1000): the longest random wait after a
    /// lost election.
    pub election_backoff_max_ms: u64,
    /// How long a leader holds a fetch that has nothing new for it (Kafka: 500 ms).
    pub fetch_max_wait_ms: u64,
    /// `controller.quorum.request.timeout.ms` (2000): how long before an unanswered request is
    /// sent again. Longer than `fetch_max_wait_ms`, or a follower would give up on every fetch
    /// its leader holds (and, on a connection that carries one request at a time, never hear
    /// an answer to its latest).
    pub request_timeout_ms: u64,
    /// Seeds the randomized timeouts (the driver passes its seeded randomness).
    pub seed: u64,
    /// A deliberately broken rule for the simulation's own test: the leader commits what it
    /// alone has written. Never set outside that test.
    #[cfg(test)]
    pub(crate) broken_commit_alone: bool,
}

impl Config {
    pub fn new(node_id: NodeId, voters: impl IntoIterator<Item = NodeId>, seed: u64) -> Config {
        Config {
            node_id,
            voters: voters.into_iter().collect(),
            election_timeout_ms: 1000,
            fetch_timeout_ms: 2000,
            election_backoff_max_ms: 1000,
            fetch_max_wait_ms: 500,
            request_timeout_ms: 2000,
            seed,
            #[cfg(test)]
            broken_commit_alone: false,
        }
    }

    fn majority(&self) -> usize {
        self.voters.len() / 2 + 1
    }
}

/// What survives a restart besides the log (Kafka's `quorum-state` file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuorumState {
    pub epoch: i32,
    pub voted_for: Option<NodeId>,
    pub leader: Option<NodeId>,
}

/// What a batch holds, as far as the core cares: the record a new leader writes first, or the
/// driver's own records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload<B> {
    /// Kafka's LeaderChangeMessage control record: `leader` leads from here, elected by `voters`.
    LeaderChange {
        leader: NodeId,
        voters: Vec<NodeId>,
    },
    Data(B),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchError {
    /// The fetcher's epoch is older than the leader's (FENCED_LEADER_EPOCH).
    FencedLeaderEpoch,
    /// This node does not lead (NOT_LEADER_OR_FOLLOWER); `leader` says who does, if known.
    NotLeader,
    /// The snapshot asked for is not the leader's latest (SNAPSHOT_NOT_FOUND): fetch again.
    SnapshotNotFound,
}

/// What nodes send one another (Kafka's Vote, BeginQuorumEpoch, EndQuorumEpoch and Fetch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<B> {
    /// `epoch` is the epoch the candidate runs for; with `pre_vote`, it would run for it.
    Vote {
        epoch: i32,
        candidate: NodeId,
        last_epoch: i32,
        end_offset: i64,
        pre_vote: bool,
    },
    VoteResponse {
        epoch: i32,
        leader: Option<NodeId>,
        granted: bool,
        pre_vote: bool,
    },
    BeginQuorumEpoch {
        epoch: i32,
        leader: NodeId,
    },
    EndQuorumEpoch {
        epoch: i32,
        leader: NodeId,
        /// Voters by how far their logs reach, best first: they stand first.
        preferred_successors: Vec<NodeId>,
    },
    Fetch {
        /// Matches the response to the request (a node has one fetch in flight).
        id: u64,
        epoch: i32,
        replica: NodeId,
        fetch_offset: i64,
        last_fetched_epoch: i32,
    },
    FetchResponse(FetchAnswer<B>),
    FetchSnapshot {
        id: u64,
        epoch: i32,
        replica: NodeId,
        snapshot: SnapshotId,
        position: u64,
    },
    FetchSnapshotResponse(SnapshotAnswer),
}

/// A leader's answer to a Fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchAnswer<B> {
    /// The fetch's id (see `Message::Fetch`).
    pub id: u64,
    pub epoch: i32,
    pub leader: Option<NodeId>,
    pub error: Option<FetchError>,
    pub high_watermark: i64,
    /// The fetch's last epoch disagrees with the leader's log: the largest epoch they share
    /// and where it ends on the leader.
    pub diverging: Option<(i32, i64)>,
    /// The fetch is below the log start: fetch this snapshot first.
    pub snapshot: Option<SnapshotId>,
    pub batches: Vec<(BatchMeta, Payload<B>)>,
}

/// A leader's answer to a FetchSnapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotAnswer {
    pub id: u64,
    pub epoch: i32,
    pub leader: Option<NodeId>,
    pub error: Option<FetchError>,
    pub snapshot: SnapshotId,
    /// The whole snapshot's size in bytes, and where `chunk` starts in it.
    pub size: u64,
    pub position: u64,
    pub chunk: Vec<u8>,
}

/// What a leader's answer needs from the driver's storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// A FetchResponse's batches: from this offset towards the log end (as much as it sends at
    /// once, whole batches).
    Log(i64),
    /// A FetchSnapshotResponse's `size` and `chunk`: bytes of this snapshot from `position`.
    Snapshot { id: SnapshotId, position: u64 },
}

pub enum Input<B> {
    /// Time passed (the driver calls this at `next_deadline`, or whenever it likes).
    Tick,
    Receive {
        from: NodeId,
        message: Message<B>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<B> {
    PersistState(QuorumState),
    Append(Vec<(BatchMeta, Payload<B>)>),
    /// Remove every record from this offset on.
    Truncate(i64),
    /// Bytes of a snapshot being fetched, at `position` (0 starts it over).
    SnapshotChunk {
        id: SnapshotId,
        position: u64,
        chunk: Vec<u8>,
    },
    /// The snapshot fetched is complete: it replaces the whole log, which now starts at its end.
    InstallSnapshot(SnapshotId),
    /// With `fill`, the driver completes the message from its storage first (see `Fill`).
    Send {
        to: NodeId,
        message: Message<B>,
        fill: Option<Fill>,
    },
    HighWatermark(i64),
}

/// The role, as `describe` and the driver see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleName {
    Unattached,
    Prospective,
    Candidate,
    Leader,
    Follower,
    Resigned,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaDescription {
    pub id: NodeId,
    /// -1 before its first fetch in this epoch.
    pub end_offset: i64,
    pub last_fetch_ms: Option<u64>,
    pub last_caught_up_ms: Option<u64>,
}

/// DescribeQuorum, as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumDescription {
    pub leader: NodeId,
    pub epoch: i32,
    pub high_watermark: i64,
    pub voters: Vec<ReplicaDescription>,
    pub observers: Vec<ReplicaDescription>,
}

/// Refused: this node does not lead; `leader` may know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotLeader {
    pub epoch: i32,
    pub leader: Option<NodeId>,
}

#[derive(Debug, Clone, Default)]
struct Replica {
    end_offset: i64,
    last_fetch: Option<u64>,
    last_caught_up: Option<u64>,
    /// The high watermark this replica was last told.
    told_hw: i64,
}

#[derive(Debug, Clone)]
struct Parked {
    id: u64,
    fetch_offset: i64,
    deadline: u64,
}

#[derive(Debug, Clone)]
struct LeaderState {
    /// The offset of this epoch's LeaderChange record: the high watermark must pass it.
    epoch_start: i64,
    voters: BTreeMap<NodeId, Replica>,
    observers: BTreeMap<NodeId, Replica>,
    /// Observers forgotten after this many of them (the oldest fetch goes first).
    parked: BTreeMap<NodeId, Parked>,
    begin_retry_at: u64,
    elected_at: u64,
}

/// At most this many observers are tracked by a leader; the one silent longest is dropped at
/// the limit (it is tracked again on its next fetch).
const MAX_OBSERVERS: usize = 10_000;

/// An election in progress: who granted, who refused, when it is lost, when to ask again.
#[derive(Debug, Clone)]
struct Tally {
    granted: BTreeSet<NodeId>,
    rejected: BTreeSet<NodeId>,
    deadline: u64,
    retry_at: u64,
}

#[derive(Debug, Clone)]
enum Role {
    Unattached {
        deadline: u64,
    },
    /// Asking for votes: pre-votes (prospective, KIP-996: changing nothing on the voters)
    /// or votes (candidate, in a new epoch).
    Election {
        pre_vote: bool,
        tally: Tally,
    },
    Leader(Box<LeaderState>),
    Follower {
        leader: NodeId,
        /// When the fetch timeout last started over: on following, and on every answer.
        last_success: u64,
        /// How long without an answer before looking for another leader: the fetch timeout
        /// plus a random share of up to half the election timeout, drawn on following, so
        /// that the followers of a leader that dies rarely stand at the same moment (two
        /// prospectives grant each other, then split the vote and wait out an election).
        patience: u64,
        /// When the leader itself was last heard from (an answer to a fetch, or its
        /// BeginQuorumEpoch); `None` since following it on another's word. Pre-votes are
        /// refused only while this is recent: following a leader again after a lost
        /// election is not hearing from it, or voters that each still follow a dead leader
        /// would talk each other out of every election while it stays down.
        heard: Option<u64>,
        /// The fetch in flight: its id and when it was sent.
        fetch: Option<(u64, u64)>,
        /// A snapshot being fetched, and how many of its bytes are here.
        snapshot: Option<(SnapshotId, u64)>,
    },
    Resigned {
        deadline: u64,
    },
}

/// SplitMix64: the randomized timeouts, from the driver's seed.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..=max.
    fn upto(&mut self, max: u64) -> u64 {
        self.next() % (max + 1)
    }
}

pub struct Raft<B> {
    config: Config,
    rng: Rng,
    state: QuorumState,
    role: Role,
    log: LogView,
    hw: i64,
    /// The highest high watermark a leader has told this node of (not cut to its log).
    reported_hw: i64,
    now: u64,
    next_fetch_id: u64,
    out: Vec<Action<B>>,
}

impl<B: Clone> Raft<B> {
    /// Starts from what survived: the quorum state and the log. A node that led before the
    /// restart never leads that epoch again (it lost what it knew of its followers); one voter
    /// alone elects itself at once.
    pub fn new(config: Config, state: QuorumState, log: LogView, now: u64) -> Raft<B> {
        let rng = Rng(config.seed ^ (config.node_id as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
        let hw = log.start_offset();
        let mut r = Raft {
            config,
            rng,
            state,
            role: Role::Unattached { deadline: now },
            log,
            hw,
            reported_hw: -1,
            now,
            next_fetch_id: 1,
            out: Vec::new(),
        };
        if hw > 0 {
            // Everything in a snapshot is committed.
            r.out.push(Action::HighWatermark(hw));
        }
        let me = r.config.node_id;
        match state.leader {
            Some(l) if l == me => r.role = Role::Resigned { deadline: now },
            Some(l) => r.become_follower(state.epoch, l),
            None => {
                let deadline = r.election_deadline();
                r.role = Role::Unattached { deadline };
            }
        }
        if r.is_voter() && r.config.voters.len() == 1 {
            r.become_candidate();
        }
        r
    }

    // --- What the driver asks ------------------------------------------------------------

    pub fn node_id(&self) -> NodeId {
        self.config.node_id
    }

    pub fn epoch(&self) -> i32 {
        self.state.epoch
    }

    pub fn leader(&self) -> Option<NodeId> {
        match &self.role {
            Role::Leader(_) => Some(self.config.node_id),
            Role::Follower { leader, .. } => Some(*leader),
            _ => self.state.leader.filter(|l| *l != self.config.node_id),
        }
    }

    pub fn high_watermark(&self) -> i64 {
        self.hw
    }

    /// This node holds everything committed as far as it knows: a leader once its own
    /// epoch's first record is committed, a follower once its high watermark has reached the
    /// highest one its leader reported. (What a broker waits for before it serves metadata.)
    pub fn caught_up(&self) -> bool {
        match &self.role {
            Role::Leader(l) => self.hw > l.epoch_start,
            Role::Follower { .. } => self.reported_hw >= 0 && self.hw >= self.reported_hw,
            _ => false,
        }
    }

    pub fn log(&self) -> &LogView {
        &self.log
    }

    pub fn quorum_state(&self) -> QuorumState {
        self.state
    }

    pub fn role(&self) -> RoleName {
        match self.role {
            Role::Unattached { .. } => RoleName::Unattached,
            Role::Election { pre_vote: true, .. } => RoleName::Prospective,
            Role::Election { pre_vote: false, .. } => RoleName::Candidate,
            Role::Leader(_) => RoleName::Leader,
            Role::Follower { .. } => RoleName::Follower,
            Role::Resigned { .. } => RoleName::Resigned,
        }
    }

    fn is_voter(&self) -> bool {
        self.config.voters.contains(&self.config.node_id)
    }

    /// When the driver should tick next at the latest.
    pub fn next_deadline(&self) -> u64 {
        match &self.role {
            Role::Unattached { deadline } | Role::Resigned { deadline } => *deadline,
            Role::Election { tally, .. } => tally.deadline.min(tally.retry_at),
            Role::Leader(l) => {
                let parked = l.parked.values().map(|p| p.deadline).min().unwrap_or(u64::MAX);
                let check = self.now + self.config.request_timeout_ms;
                parked.min(l.begin_retry_at).min(check)
            }
            Role::Follower {
                last_success,
                patience,
                fetch,
                ..
            } => {
                let timeout = last_success + patience;
                let resend = fetch.map_or(self.now, |(_, sent)| sent + self.config.request_timeout_ms);
                timeout.min(resend)
            }
        }
    }

    /// DescribeQuorum: answered by the leader only.
    pub fn describe(&self) -> Option<QuorumDescription> {
        let Role::Leader(l) = &self.role else { return None };
        let me = self.config.node_id;
        let d = |id: NodeId, r: &Replica| ReplicaDescription {
            id,
            end_offset: if id == me { self.log.end_offset() } else { r.end_offset },
            last_fetch_ms: if id == me { Some(self.now) } else { r.last_fetch },
            last_caught_up_ms: if id == me { Some(self.now) } else { r.last_caught_up },
        };
        Some(QuorumDescription {
            leader: me,
            epoch: self.state.epoch,
            high_watermark: self.hw,
            voters: l.voters.iter().map(|(id, r)| d(*id, r)).collect(),
            observers: l.observers.iter().map(|(id, r)| d(*id, r)).collect(),
        })
    }

    /// The driver has made a snapshot of everything below `end_offset` durable and removed the
    /// log's records below it. Refused unless `end_offset` is committed and in the log.
    pub fn snapshot_taken(&mut self, end_offset: i64) -> Result<SnapshotId, String> {
        if end_offset > self.hw {
            return Err(format!(
                "a snapshot at {end_offset} is above the high watermark {}",
                self.hw
            ));
        }
        let epoch = self.log.epoch_at(end_offset - 1).ok_or_else(|| {
            format!(
                "no record at {} in the log ({}..{})",
                end_offset - 1,
                self.log.start_offset(),
                self.log.end_offset()
            )
        })?;
        let id = SnapshotId { end_offset, epoch };
        self.log.snapshot_taken(id);
        Ok(id)
    }

    /// Appends `records` records carried by `payload` as the leader: where they go, or who
    /// leads instead.
    pub fn propose(&mut self, now: u64, payload: B, records: u32) -> Result<(BatchMeta, Vec<Action<B>>), NotLeader> {
        self.now = self.now.max(now);
        if !matches!(self.role, Role::Leader(_)) || records == 0 {
            return Err(NotLeader {
                epoch: self.state.epoch,
                leader: self.leader().filter(|l| *l != self.config.node_id),
            });
        }
        let meta = self.append_as_leader(Payload::Data(payload), records);
        self.advance_hw();
        self.answer_parked(true);
        Ok((meta, std::mem::take(&mut self.out)))
    }

    /// Steps down gracefully (a controller shutting down): tells the voters, best successor
    /// first, so the next election need not wait for a timeout.
    pub fn resign(&mut self, now: u64) -> Vec<Action<B>> {
        self.now = self.now.max(now);
        if let Role::Leader(l) = &self.role {
            let mut successors: Vec<(i64, NodeId)> = l
                .voters
                .iter()
                .filter(|(id, _)| **id != self.config.node_id)
                .map(|(id, r)| (r.end_offset, *id))
                .collect();
            successors.sort_by(|a, b| b.cmp(a));
            let preferred: Vec<NodeId> = successors.into_iter().map(|(_, id)| id).collect();
            for to in preferred.clone() {
                self.send(
                    to,
                    Message::EndQuorumEpoch {
                        epoch: self.state.epoch,
                        leader: self.config.node_id,
                        preferred_successors: preferred.clone(),
                    },
                );
            }
            let deadline = self.now + self.config.election_timeout_ms;
            self.role = Role::Resigned { deadline };
        }
        std::mem::take(&mut self.out)
    }

    /// What the core asked for outside a `step` (by `new`: a single voter elects itself at
    /// once). The driver carries these out before its first step.
    pub fn take_actions(&mut self) -> Vec<Action<B>> {
        std::mem::take(&mut self.out)
    }

    pub fn step(&mut self, now: u64, input: Input<B>) -> Vec<Action<B>> {
        self.now = self.now.max(now);
        match input {
            Input::Tick => self.tick(),
            Input::Receive { from, message } => self.receive(from, message),
        }
        std::mem::take(&mut self.out)
    }

    // --- Transitions ---------------------------------------------------------------------

    fn election_deadline(&mut self) -> u64 {
        let t = self.config.election_timeout_ms;
        self.now + t + self.rng.upto(t)
    }

    fn set_state(&mut self, s: QuorumState) {
        // Epochs only grow; a vote or a leader, once known in an epoch, never changes in it.
        assert!(
            s.epoch >= self.state.epoch,
            "raft: epoch {} after {}",
            s.epoch,
            self.state.epoch
        );
        if s != self.state {
            self.state = s;
            self.out.push(Action::PersistState(s));
        }
    }

    fn become_unattached(&mut self, epoch: i32) {
        if epoch > self.state.epoch {
            self.set_state(QuorumState {
                epoch,
                voted_for: None,
                leader: None,
            });
        }
        let deadline = if self.is_voter() {
            self.election_deadline()
        } else {
            self.now
        };
        self.role = Role::Unattached { deadline };
    }

    fn become_follower(&mut self, epoch: i32, leader: NodeId) {
        let voted_for = if epoch == self.state.epoch {
            self.state.voted_for
        } else {
            None
        };
        self.set_state(QuorumState {
            epoch,
            voted_for,
            leader: Some(leader),
        });
        let patience = self.config.fetch_timeout_ms + self.rng.upto(self.config.election_timeout_ms / 2);
        self.role = Role::Follower {
            leader,
            last_success: self.now,
            patience,
            heard: None,
            fetch: None,
            snapshot: None,
        };
        self.send_fetch();
    }

    fn become_prospective(&mut self) {
        if !self.is_voter() {
            self.become_unattached(self.state.epoch);
            return;
        }
        self.start_election(true);
    }

    fn become_candidate(&mut self) {
        let me = self.config.node_id;
        self.set_state(QuorumState {
            epoch: self.state.epoch + 1,
            voted_for: Some(me),
            leader: None,
        });
        self.start_election(false);
    }

    /// Asks every other voter; with one voter, the election is won at once.
    fn start_election(&mut self, pre_vote: bool) {
        let me = self.config.node_id;
        self.role = Role::Election {
            pre_vote,
            tally: Tally {
                granted: BTreeSet::from([me]),
                rejected: BTreeSet::new(),
                deadline: self.now + self.config.election_timeout_ms,
                retry_at: self.now + self.config.request_timeout_ms,
            },
        };
        match (self.config.majority(), pre_vote) {
            (1, true) => self.become_candidate(),
            (1, false) => self.become_leader(),
            _ => self.request_votes(pre_vote, &BTreeSet::from([me])),
        }
    }

    fn become_leader(&mut self) {
        let me = self.config.node_id;
        self.set_state(QuorumState {
            epoch: self.state.epoch,
            voted_for: self.state.voted_for,
            leader: Some(me),
        });
        let now = self.now;
        let replica = || Replica {
            end_offset: -1,
            last_fetch: None,
            last_caught_up: None,
            told_hw: -1,
        };
        self.role = Role::Leader(Box::new(LeaderState {
            epoch_start: self.log.end_offset(),
            voters: self.config.voters.iter().map(|v| (*v, replica())).collect(),
            observers: BTreeMap::new(),
            parked: BTreeMap::new(),
            begin_retry_at: now,
            elected_at: now,
        }));
        let voters: Vec<NodeId> = self.config.voters.iter().copied().collect();
        self.append_as_leader(Payload::LeaderChange { leader: me, voters }, 1);
        self.send_begin_epoch();
        self.advance_hw();
    }

    fn append_as_leader(&mut self, payload: Payload<B>, records: u32) -> BatchMeta {
        let base = self.log.end_offset();
        let meta = BatchMeta {
            base_offset: base,
            last_offset: base + records as i64 - 1,
            epoch: self.state.epoch,
        };
        debug_assert!(self.log.check(&meta).is_ok());
        self.log.push(&meta);
        self.out.push(Action::Append(vec![(meta, payload)]));
        meta
    }

    /// Learns of an epoch (and maybe its leader) from any message. Returns false when the
    /// message's epoch is older than ours (a stale message, answered with our epoch).
    fn observe(&mut self, epoch: i32, leader: Option<NodeId>) -> bool {
        let me = self.config.node_id;
        if epoch < self.state.epoch {
            return false;
        }
        if epoch > self.state.epoch {
            match leader {
                Some(l) if l != me => self.become_follower(epoch, l),
                _ => self.become_unattached(epoch),
            }
            return true;
        }
        if let Some(l) = leader.filter(|l| *l != me) {
            let following = matches!(self.role, Role::Follower { leader, .. } if leader == l);
            // A leader is known for our epoch: follow it (we cannot lead it too: one leader
            // per epoch; and a leader, once known in an epoch, is the only one it has).
            if !following && !matches!(self.role, Role::Leader(_)) && self.state.leader.is_none_or(|k| k == l) {
                self.become_follower(epoch, l);
            }
        }
        true
    }

    // --- Timers --------------------------------------------------------------------------

    fn tick(&mut self) {
        let now = self.now;
        let voter = self.is_voter();
        match &mut self.role {
            Role::Unattached { deadline } if now >= *deadline => {
                if voter {
                    self.become_prospective();
                } else {
                    // An observer looks for the leader: ask a voter, another one each time.
                    *deadline = now + self.config.request_timeout_ms;
                    let voters: Vec<NodeId> = self.config.voters.iter().copied().collect();
                    if !voters.is_empty() {
                        let to = voters[self.rng.upto(voters.len() as u64 - 1) as usize];
                        self.send_fetch_to(to);
                    }
                }
            }
            Role::Resigned { deadline } if now >= *deadline => self.become_prospective(),
            Role::Election { pre_vote, tally } => {
                if now >= tally.deadline {
                    self.lost_election();
                } else if now >= tally.retry_at {
                    tally.retry_at = now + self.config.request_timeout_ms;
                    let answered: BTreeSet<NodeId> = tally.granted.union(&tally.rejected).copied().collect();
                    let pre_vote = *pre_vote;
                    self.request_votes(pre_vote, &answered);
                }
            }
            Role::Follower {
                last_success,
                patience,
                fetch,
                ..
            } => {
                if now >= *last_success + *patience {
                    // The leader is gone (or cut off): voters look for a new one.
                    if voter {
                        self.become_prospective();
                    } else {
                        self.become_unattached(self.state.epoch);
                    }
                } else if fetch.is_none_or(|(_, sent)| now >= sent + self.config.request_timeout_ms) {
                    self.send_fetch();
                }
            }
            Role::Leader(l) => {
                // Check quorum: a leader no majority has fetched from lately steps down.
                let window = self.config.fetch_timeout_ms * 3 / 2;
                let me = self.config.node_id;
                let elected = l.elected_at;
                let recent = l
                    .voters
                    .iter()
                    .filter(|(id, r)| **id == me || r.last_fetch.unwrap_or(elected) + window > now)
                    .count();
                let begin_due = now >= l.begin_retry_at;
                if recent < self.config.majority() {
                    let deadline = self.election_deadline();
                    self.role = Role::Resigned { deadline };
                    return;
                }
                if begin_due {
                    self.send_begin_epoch();
                }
                self.answer_parked(false);
            }
            _ => {}
        }
    }

    fn lost_election(&mut self) {
        // Wait a random while, then ask for pre-votes again (KIP-996: never straight to a
        // candidate, so a node cut off cannot drive epochs up).
        let deadline = self.now + self.rng.upto(self.config.election_backoff_max_ms);
        self.role = Role::Unattached { deadline };
    }

    // --- Sending -------------------------------------------------------------------------

    fn send(&mut self, to: NodeId, message: Message<B>) {
        self.out.push(Action::Send {
            to,
            message,
            fill: None,
        });
    }

    fn request_votes(&mut self, pre_vote: bool, answered: &BTreeSet<NodeId>) {
        let epoch = if pre_vote {
            self.state.epoch + 1
        } else {
            self.state.epoch
        };
        let others: Vec<NodeId> = self
            .config
            .voters
            .iter()
            .filter(|v| !answered.contains(v))
            .copied()
            .collect();
        for to in others {
            self.send(
                to,
                Message::Vote {
                    epoch,
                    candidate: self.config.node_id,
                    last_epoch: self.log.last_epoch(),
                    end_offset: self.log.end_offset(),
                    pre_vote,
                },
            );
        }
    }

    fn send_begin_epoch(&mut self) {
        let me = self.config.node_id;
        let Role::Leader(l) = &mut self.role else { return };
        l.begin_retry_at = self.now + self.config.request_timeout_ms;
        // Until a voter fetches in this epoch, it may not know it.
        let pending: Vec<NodeId> = l
            .voters
            .iter()
            .filter(|(id, r)| **id != me && r.end_offset < 0)
            .map(|(id, _)| *id)
            .collect();
        for to in pending {
            self.send(
                to,
                Message::BeginQuorumEpoch {
                    epoch: self.state.epoch,
                    leader: me,
                },
            );
        }
    }

    fn send_fetch(&mut self) {
        if let Role::Follower { leader, .. } = self.role {
            self.send_fetch_to(leader);
        }
    }

    fn send_fetch_to(&mut self, to: NodeId) {
        let id = self.next_fetch_id;
        self.next_fetch_id += 1;
        let mut fetching_snapshot = None;
        if let Role::Follower { fetch, snapshot, .. } = &mut self.role {
            *fetch = Some((id, self.now));
            fetching_snapshot = *snapshot;
        }
        if let Some((snapshot, position)) = fetching_snapshot {
            self.send(
                to,
                Message::FetchSnapshot {
                    id,
                    epoch: self.state.epoch,
                    replica: self.config.node_id,
                    snapshot,
                    position,
                },
            );
            return;
        }
        self.send(
            to,
            Message::Fetch {
                id,
                epoch: self.state.epoch,
                replica: self.config.node_id,
                fetch_offset: self.log.end_offset(),
                last_fetched_epoch: self.log.last_epoch(),
            },
        );
    }

    // --- Receiving -----------------------------------------------------------------------

    fn receive(&mut self, from: NodeId, message: Message<B>) {
        match message {
            Message::Vote {
                epoch,
                candidate,
                last_epoch,
                end_offset,
                pre_vote,
            } => self.on_vote(from, epoch, candidate, (last_epoch, end_offset), pre_vote),
            Message::VoteResponse {
                epoch,
                leader,
                granted,
                pre_vote,
            } => self.on_vote_response(from, epoch, leader, granted, pre_vote),
            Message::BeginQuorumEpoch { epoch, leader } => {
                self.observe(epoch, Some(leader));
                let now = self.now;
                if let Role::Follower { leader: l, heard, .. } = &mut self.role {
                    if *l == leader && epoch == self.state.epoch {
                        *heard = Some(now);
                    }
                }
            }
            Message::EndQuorumEpoch {
                epoch,
                leader,
                preferred_successors,
            } => {
                let following = matches!(self.role, Role::Follower { leader: l, .. } if l == leader);
                if epoch == self.state.epoch && following && self.is_voter() {
                    // The leader is leaving: stand soon, sooner the better placed we are.
                    let me = self.config.node_id;
                    let position = preferred_successors.iter().position(|p| *p == me);
                    let backoff = match position {
                        Some(0) => 0,
                        Some(i) => (50u64 << i.min(10)).min(self.config.election_backoff_max_ms),
                        None => self.config.election_backoff_max_ms,
                    };
                    let deadline = self.now + backoff + self.rng.upto(backoff / 2);
                    self.role = Role::Unattached { deadline };
                } else {
                    self.observe(epoch, None);
                }
            }
            Message::Fetch {
                id,
                epoch,
                replica,
                fetch_offset,
                last_fetched_epoch,
            } => self.on_fetch(from, id, epoch, replica, fetch_offset, last_fetched_epoch),
            Message::FetchResponse(answer) => self.on_fetch_response(from, answer),
            Message::FetchSnapshot {
                id,
                epoch,
                snapshot,
                position,
                ..
            } => self.on_fetch_snapshot(from, id, epoch, snapshot, position),
            Message::FetchSnapshotResponse(answer) => self.on_fetch_snapshot_response(from, answer),
        }
    }

    fn log_is_current(&self, candidate: (i32, i64)) -> bool {
        candidate >= (self.log.last_epoch(), self.log.end_offset())
    }

    fn on_vote(&mut self, from: NodeId, epoch: i32, candidate: NodeId, log: (i32, i64), pre_vote: bool) {
        let granted = if !self.is_voter() || !self.config.voters.contains(&candidate) {
            false
        } else if pre_vote {
            // A pre-vote changes nothing here; granted unless we hear from a live leader.
            let live_leader = match &self.role {
                Role::Leader(_) => true,
                Role::Follower { heard, .. } => heard.is_some_and(|h| self.now < h + self.config.fetch_timeout_ms),
                _ => false,
            };
            epoch > self.state.epoch && !live_leader && self.log_is_current(log)
        } else {
            if epoch > self.state.epoch {
                self.become_unattached(epoch);
            }
            if epoch < self.state.epoch {
                false
            } else {
                match (&self.role, self.state.voted_for) {
                    (Role::Leader(_) | Role::Follower { .. }, _) => false,
                    (_, Some(v)) => v == candidate,
                    (_, None) if self.state.leader.is_none() && self.log_is_current(log) => {
                        self.set_state(QuorumState {
                            epoch,
                            voted_for: Some(candidate),
                            leader: None,
                        });
                        let deadline = self.election_deadline();
                        self.role = Role::Unattached { deadline };
                        true
                    }
                    _ => false,
                }
            }
        };
        self.send(
            from,
            Message::VoteResponse {
                epoch: self.state.epoch,
                leader: self.leader(),
                granted,
                pre_vote,
            },
        );
    }

    fn on_vote_response(&mut self, from: NodeId, epoch: i32, leader: Option<NodeId>, granted: bool, pre_vote: bool) {
        if epoch > self.state.epoch {
            // Pre-votes are answered with the voter's own epoch: a higher one means an
            // election we have not heard of.
            self.observe(epoch, leader);
            return;
        }
        // Refused, naming a leader of our epoch: it hears from that leader, so follow it. A
        // grant names only what the voter last knew (it grants because it has not heard
        // from that leader lately): following it would throw the grant away, and voters that
        // each still follow a dead leader would talk each other out of every election.
        if epoch == self.state.epoch && leader.is_some() && !granted {
            self.observe(epoch, leader);
        }
        let majority = self.config.majority();
        let voters = self.config.voters.len();
        let epoch_now = self.state.epoch;
        let (won, lost, prospective) = match &mut self.role {
            // A pre-vote answers a prospective; a vote answers a candidate of that epoch.
            Role::Election { pre_vote: pv, tally } if *pv == pre_vote && (pre_vote || epoch == epoch_now) => {
                if granted {
                    tally.granted.insert(from);
                } else {
                    tally.rejected.insert(from);
                }
                let won = tally.granted.len() >= majority;
                (won, tally.rejected.len() > voters - majority, pre_vote)
            }
            _ => return,
        };
        if won && prospective {
            self.become_candidate();
        } else if won {
            self.become_leader();
        } else if lost {
            self.lost_election();
        }
    }

    fn fetch_answer(&self, id: u64, error: Option<FetchError>) -> FetchAnswer<B> {
        FetchAnswer {
            id,
            epoch: self.state.epoch,
            leader: self.leader(),
            error,
            high_watermark: if error.is_some() { -1 } else { self.hw },
            diverging: None,
            snapshot: None,
            batches: vec![],
        }
    }

    fn on_fetch(&mut self, from: NodeId, id: u64, epoch: i32, replica: NodeId, fetch_offset: i64, last_epoch: i32) {
        if epoch > self.state.epoch {
            self.observe(epoch, None);
        }
        if !matches!(self.role, Role::Leader(_)) {
            let answer = self.fetch_answer(id, Some(FetchError::NotLeader));
            self.send(from, Message::FetchResponse(answer));
            return;
        }
        if epoch < self.state.epoch {
            let answer = self.fetch_answer(id, Some(FetchError::FencedLeaderEpoch));
            self.send(from, Message::FetchResponse(answer));
            return;
        }
        // Below our log start, or from an epoch older than anything we still hold: the
        // fetcher needs our snapshot first.
        let needs_snapshot = self.log.snapshot().filter(|_| {
            fetch_offset < self.log.start_offset()
                || ((last_epoch > 0 || fetch_offset > 0) && self.log.end_for_epoch(last_epoch).0 == 0)
        });
        if let Some(snapshot) = needs_snapshot {
            let answer = FetchAnswer {
                snapshot: Some(snapshot),
                ..self.fetch_answer(id, None)
            };
            self.send(from, Message::FetchResponse(answer));
            return;
        }
        // Does the fetcher's log agree with ours up to where it fetches from?
        if fetch_offset > 0 || last_epoch > 0 {
            let (e, end) = self.log.end_for_epoch(last_epoch);
            if e != last_epoch || fetch_offset > end {
                let answer = FetchAnswer {
                    diverging: Some((e, end)),
                    ..self.fetch_answer(id, None)
                };
                self.send(from, Message::FetchResponse(answer));
                return;
            }
        }
        let now = self.now;
        let log_end = self.log.end_offset();
        let is_voter = self.config.voters.contains(&replica);
        let Role::Leader(l) = &mut self.role else { return };
        if !is_voter && !l.observers.contains_key(&replica) && l.observers.len() >= MAX_OBSERVERS {
            let oldest = l.observers.iter().min_by_key(|(_, r)| r.last_fetch).map(|(id, _)| *id);
            if let Some(o) = oldest {
                l.observers.remove(&o);
            }
        }
        let r = if is_voter {
            l.voters.entry(replica).or_default()
        } else {
            l.observers.entry(replica).or_default()
        };
        r.end_offset = fetch_offset;
        r.last_fetch = Some(now);
        if fetch_offset >= log_end {
            r.last_caught_up = Some(now);
        }
        let told = r.told_hw;
        l.parked.remove(&replica);
        if is_voter {
            self.advance_hw();
        }
        let hw = self.hw;
        if fetch_offset < log_end || told < hw {
            self.answer_fetch(from, replica, id, fetch_offset);
        } else if let Role::Leader(l) = &mut self.role {
            l.parked.insert(
                replica,
                Parked {
                    id,
                    fetch_offset,
                    deadline: now + self.config.fetch_max_wait_ms,
                },
            );
        }
    }

    fn answer_fetch(&mut self, to: NodeId, replica: NodeId, id: u64, fetch_offset: i64) {
        let hw = self.hw;
        if let Role::Leader(l) = &mut self.role {
            if let Some(r) = l.voters.get_mut(&replica).or(l.observers.get_mut(&replica)) {
                r.told_hw = hw;
            }
        }
        let fill = (fetch_offset < self.log.end_offset()).then_some(Fill::Log(fetch_offset));
        let message = Message::FetchResponse(self.fetch_answer(id, None));
        self.out.push(Action::Send { to, message, fill });
    }

    /// Answers parked fetches: all of them when the log grew, else those whose wait is over
    /// or whose replica has not been told the current high watermark.
    fn answer_parked(&mut self, grew: bool) {
        let now = self.now;
        let hw = self.hw;
        let Role::Leader(l) = &mut self.role else { return };
        let due: Vec<(NodeId, Parked)> = l
            .parked
            .iter()
            .filter(|(id, p)| {
                let told = l.voters.get(id).or(l.observers.get(id)).map_or(-1, |r| r.told_hw);
                grew || now >= p.deadline || told < hw
            })
            .map(|(id, p)| (*id, p.clone()))
            .collect();
        for (replica, p) in due {
            if let Role::Leader(l) = &mut self.role {
                l.parked.remove(&replica);
            }
            self.answer_fetch(replica, replica, p.id, p.fetch_offset);
        }
    }

    /// The leader's high watermark: the offset a majority of voters has reached, once it is
    /// past this epoch's first record.
    fn advance_hw(&mut self) {
        let me = self.config.node_id;
        let end = self.log.end_offset();
        let Role::Leader(l) = &self.role else { return };
        let mut reached: Vec<i64> = l
            .voters
            .iter()
            .map(|(id, r)| if *id == me { end } else { r.end_offset })
            .collect();
        reached.sort_unstable_by(|a, b| b.cmp(a));
        let mut candidate = reached[self.config.majority() - 1];
        #[cfg(test)]
        if self.config.broken_commit_alone {
            candidate = end;
        }
        candidate = candidate.min(end);
        if candidate > self.hw && candidate > l.epoch_start {
            self.hw = candidate;
            self.out.push(Action::HighWatermark(candidate));
            self.answer_parked(false);
        }
    }

    fn on_fetch_response(&mut self, from: NodeId, answer: FetchAnswer<B>) {
        let FetchAnswer {
            id,
            epoch,
            leader,
            error,
            high_watermark,
            diverging,
            snapshot,
            batches,
        } = answer;
        if !self.observe(epoch, leader) {
            return;
        }
        // Is this the answer to the fetch we have in flight, from the leader we follow? (A
        // change of epoch or leader just now sent a new fetch, so an old answer is not.)
        let ours = matches!(self.role, Role::Follower { leader: l, fetch: Some((f, _)), .. } if f == id && l == from);
        if !ours {
            return;
        }
        if error.is_some() {
            // Our leader no longer leads this epoch and knows of no other: look again.
            if self.is_voter() {
                let deadline = self.election_deadline();
                self.role = Role::Unattached { deadline };
            } else {
                self.become_unattached(epoch);
            }
            return;
        }
        if let Role::Follower {
            last_success,
            heard,
            fetch,
            snapshot: fetching,
            ..
        } = &mut self.role
        {
            *last_success = self.now;
            *heard = Some(self.now);
            *fetch = None;
            if let Some(s) = snapshot {
                // Behind the leader's log start: fetch its snapshot, from the start.
                *fetching = Some((s, 0));
                self.send_fetch();
                return;
            }
        }
        if let Some((e, end)) = diverging {
            // Truncate to where our logs last agree. When we hold the leader's epoch too, that is
            // where the first of us stops writing it; when we do not, our own largest epoch
            // below it ends where we can last agree (a batch boundary of ours; the next fetch
            // checks that epoch in turn).
            let (ours_epoch, ours_end) = self.log.end_for_epoch(e);
            let to = if ours_epoch == e { end.min(ours_end) } else { ours_end };
            let to = to.min(self.log.end_offset()).max(self.log.start_offset());
            assert!(
                to >= self.hw,
                "raft: node {} asked to truncate to {to}, below its high watermark {}",
                self.config.node_id,
                self.hw
            );
            self.log.truncate(to);
            self.out.push(Action::Truncate(to));
        } else {
            let mut accepted = Vec::new();
            for (meta, payload) in batches {
                if meta.base_offset < self.log.end_offset() {
                    continue; // already have it (a duplicate of what we appended)
                }
                if self.log.check(&meta).is_err() {
                    break; // not contiguous: fetch again from our end
                }
                self.log.push(&meta);
                accepted.push((meta, payload));
            }
            if !accepted.is_empty() {
                self.out.push(Action::Append(accepted));
            }
            self.reported_hw = self.reported_hw.max(high_watermark);
            let hw = high_watermark.min(self.log.end_offset());
            if hw > self.hw {
                self.hw = hw;
                self.out.push(Action::HighWatermark(hw));
            }
        }
        self.send_fetch();
    }

    fn on_fetch_snapshot(&mut self, from: NodeId, id: u64, epoch: i32, snapshot: SnapshotId, position: u64) {
        if epoch > self.state.epoch {
            self.observe(epoch, None);
        }
        let error = if !matches!(self.role, Role::Leader(_)) {
            Some(FetchError::NotLeader)
        } else if epoch < self.state.epoch {
            Some(FetchError::FencedLeaderEpoch)
        } else if self.log.snapshot() != Some(snapshot) {
            Some(FetchError::SnapshotNotFound)
        } else {
            None
        };
        let message = Message::FetchSnapshotResponse(SnapshotAnswer {
            id,
            epoch: self.state.epoch,
            leader: self.leader(),
            error,
            snapshot,
            size: 0,
            position,
            chunk: Vec::new(),
        });
        let fill = error.is_none().then_some(Fill::Snapshot { id: snapshot, position });
        let now = self.now;
        if let (None, Role::Leader(l)) = (error, &mut self.role) {
            // A follower fetching a snapshot is alive.
            if let Some(r) = l.voters.get_mut(&from).or(l.observers.get_mut(&from)) {
                r.last_fetch = Some(now);
            }
        }
        self.out.push(Action::Send {
            to: from,
            message,
            fill,
        });
    }

    fn on_fetch_snapshot_response(&mut self, from: NodeId, answer: SnapshotAnswer) {
        let SnapshotAnswer {
            id,
            epoch,
            leader,
            error,
            snapshot,
            size,
            position,
            chunk,
        } = answer;
        if !self.observe(epoch, leader) {
            return;
        }
        let ours = matches!(
            self.role,
            Role::Follower { leader: l, fetch: Some((f, _)), snapshot: Some((s, p)), .. }
                if f == id && l == from && s == snapshot && p == position
        );
        if !ours {
            return;
        }
        let now = self.now;
        let voter = self.is_voter();
        let Role::Follower {
            last_success,
            heard,
            fetch,
            snapshot: fetching,
            ..
        } = &mut self.role
        else {
            return;
        };
        *fetch = None;
        match error {
            Some(FetchError::SnapshotNotFound) => {
                // The leader has a newer snapshot (or none): ask again by fetching.
                *last_success = now;
                *heard = Some(now);
                *fetching = None;
            }
            Some(_) => {
                if voter {
                    let deadline = self.election_deadline();
                    self.role = Role::Unattached { deadline };
                } else {
                    self.become_unattached(epoch);
                }
                return;
            }
            None if chunk.is_empty() && position < size => {
                // Nothing came: ask again after the request timeout, so a leader that sends
                // nothing cannot make us spin.
                *fetch = Some((0, now));
                return;
            }
            None => {
                *last_success = now;
                *heard = Some(now);
                let end = position + chunk.len() as u64;
                let done = end >= size;
                *fetching = if done { None } else { Some((snapshot, end)) };
                self.out.push(Action::SnapshotChunk {
                    id: snapshot,
                    position,
                    chunk,
                });
                if done {
                    assert!(
                        snapshot.end_offset >= self.hw,
                        "raft: node {} installing a snapshot at {} below its high watermark {}",
                        self.config.node_id,
                        snapshot.end_offset,
                        self.hw
                    );
                    self.out.push(Action::InstallSnapshot(snapshot));
                    self.log.install(snapshot);
                    if snapshot.end_offset > self.hw {
                        self.hw = snapshot.end_offset;
                        self.out.push(Action::HighWatermark(self.hw));
                    }
                }
            }
        }
        self.send_fetch();
    }
}

//! The consumer group state machine driven with simulated time: no clock, no sockets.

use broker::group::state::*;
use bytes::Bytes;
use wire::messages::ErrorCode;

const SESSION: i32 = 10_000;
const REBALANCE: i32 = 60_000;

struct Harness {
    g: Group,
    now: i64,
    next: Token,
    limits: Limits,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            g: Group::new("g", 0),
            now: 0,
            next: 1,
            limits: Limits {
                initial_rebalance_delay_ms: 3000,
                ..Limits::default()
            },
        }
    }

    fn token(&mut self) -> Token {
        self.next += 1;
        self.next
    }

    fn join_req(&self, member_id: &str, instance: Option<&str>, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            member_id: member_id.into(),
            group_instance_id: instance.map(Into::into),
            client_id: "client".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: SESSION,
            rebalance_timeout_ms: REBALANCE,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(format!("meta-{p}"))))
                .collect(),
            require_known_member_id: instance.is_none(),
            new_member_id: format!("m{}", self.next + 1),
        }
    }

    /// Sends a JoinGroup; returns its token and every reply produced.
    fn join(&mut self, member_id: &str, instance: Option<&str>) -> (Token, Vec<Reply>) {
        self.join_with(member_id, instance, &["range"])
    }

    fn join_with(&mut self, member_id: &str, instance: Option<&str>, protocols: &[&str]) -> (Token, Vec<Reply>) {
        let req = self.join_req(member_id, instance, protocols);
        let t = self.token();
        let replies = self.g.join(req, t, self.now, &self.limits);
        (t, replies)
    }

    /// A new dynamic member: the MEMBER_ID_REQUIRED round trip, then the real join.
    fn new_member(&mut self) -> (String, Token, Vec<Reply>) {
        let (t, r) = self.join("", None);
        let id = match &r[..] {
            [Reply::Join(tt, res)] if *tt == t && res.error == ErrorCode::MemberIdRequired => res.member_id.clone(),
            other => panic!("expected MEMBER_ID_REQUIRED, got {other:?}"),
        };
        let (t, r) = self.join(&id, None);
        (id, t, r)
    }

    fn sync(&mut self, member: &str, generation: i32, assignments: &[(&str, &str)]) -> (Token, Vec<Reply>) {
        let t = self.token();
        let a = assignments
            .iter()
            .map(|(m, a)| (m.to_string(), Bytes::from(a.to_string())))
            .collect();
        let r = self.g.sync(member, None, generation, None, None, a, t, self.now);
        (t, r)
    }

    fn advance(&mut self, ms: i64) -> Vec<Reply> {
        self.now += ms;
        self.g.tick(self.now)
    }
}

fn join_result(replies: &[Reply], token: Token) -> &JoinResult {
    replies
        .iter()
        .find_map(|r| match r {
            Reply::Join(t, res) if *t == token => Some(res),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no join reply for token {token} in {replies:?}"))
}

fn sync_result(replies: &[Reply], token: Token) -> &SyncResult {
    replies
        .iter()
        .find_map(|r| match r {
            Reply::Sync(t, res) if *t == token => Some(res),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no sync reply for token {token} in {replies:?}"))
}

/// Brings up a stable group of `n` dynamic members; returns their ids (the first is leader).
fn stable_group(h: &mut Harness, n: usize) -> Vec<String> {
    let mut members = vec![];
    for _ in 0..n {
        let (id, t, r) = h.new_member();
        assert!(r.is_empty(), "the join waits for the initial delay: {r:?}");
        members.push((id, t));
    }
    // Members that arrive during the initial delay extend it by another delay.
    let mut replies = vec![];
    while h.g.state() == GroupState::PreparingRebalance {
        replies.extend(h.advance(3000));
    }
    let generation = h.g.generation();
    let leader = h.g.leader().unwrap().to_string();
    for (id, t) in &members {
        let res = join_result(&replies, *t);
        assert_eq!(res.error, ErrorCode::None);
        assert_eq!(res.generation, generation);
        assert_eq!(res.leader, leader);
        assert_eq!(res.members.len(), if *id == leader { n } else { 0 });
    }
    assert_eq!(h.g.state(), GroupState::CompletingRebalance);
    let mut sync_tokens = vec![];
    for (id, _) in members.iter().filter(|(id, _)| *id != leader) {
        let (t, r) = h.sync(id, generation, &[]);
        assert!(r.is_empty(), "followers wait for the leader's assignment");
        sync_tokens.push((id.clone(), t));
    }
    let assignments: Vec<(String, String)> = members.iter().map(|(id, _)| (id.clone(), format!("a-{id}"))).collect();
    let refs: Vec<(&str, &str)> = assignments.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let (lt, r) = h.sync(&leader, generation, &refs);
    assert_eq!(sync_result(&r, lt).assignment, Bytes::from(format!("a-{leader}")));
    for (id, t) in sync_tokens {
        assert_eq!(sync_result(&r, t).assignment, Bytes::from(format!("a-{id}")));
    }
    assert_eq!(h.g.state(), GroupState::Stable);
    assert!(h.g.take_dirty(), "a new assignment is persisted");
    let mut ids: Vec<String> = members.into_iter().map(|(id, _)| id).collect();
    ids.sort_by_key(|id| *id != leader);
    ids
}

#[test]
fn three_members_join_sync_and_heartbeat() {
    let mut h = Harness::new();
    let ids = stable_group(&mut h, 3);
    assert_eq!(h.g.generation(), 1);
    for id in &ids {
        assert_eq!(h.g.heartbeat(id, None, 1, h.now), ErrorCode::None);
    }
    assert_eq!(h.g.heartbeat(&ids[0], None, 0, h.now), ErrorCode::IllegalGeneration);
    assert_eq!(h.g.heartbeat("nobody", None, 1, h.now), ErrorCode::UnknownMemberId);
}

#[test]
fn the_initial_delay_waits_again_while_members_keep_arriving() {
    let mut h = Harness::new();
    let (_, t1, _) = h.new_member();
    assert!(h.advance(2000).is_empty());
    let (_, t2, _) = h.new_member();
    // The first round ends at 3000 ms, but a member arrived during it: one more round.
    assert!(h.advance(1000).is_empty());
    assert_eq!(h.g.state(), GroupState::PreparingRebalance);
    let r = h.advance(3000);
    assert_eq!(join_result(&r, t1).error, ErrorCode::None);
    assert_eq!(join_result(&r, t2).error, ErrorCode::None);
}

#[test]
fn a_silent_member_is_removed_after_its_session_and_the_rest_rebalance() {
    let mut h = Harness::new();
    let ids = stable_group(&mut h, 2);
    // Only the first member heartbeats.
    for _ in 0..3 {
        h.advance(3000);
        assert_eq!(h.g.heartbeat(&ids[0], None, 1, h.now), ErrorCode::None);
    }
    assert_eq!(h.g.member_count(), 2, "9 s of silence is within the 10 s session");
    h.advance(1000);
    assert_eq!(
        h.g.state(),
        GroupState::PreparingRebalance,
        "the second member's session ended"
    );
    assert_eq!(h.g.member_count(), 1);
    assert_eq!(h.g.heartbeat(&ids[0], None, 1, h.now), ErrorCode::RebalanceInProgress);
    // The survivor rejoins; everyone (just it) has joined, so the rebalance completes at once.
    let (t, r) = h.join(&ids[0], None);
    let res = join_result(&r, t);
    assert_eq!((res.error, res.generation), (ErrorCode::None, 2));
    assert_eq!(res.members.len(), 1);
}

#[test]
fn a_leaving_member_triggers_a_rebalance_at_once() {
    let mut h = Harness::new();
    let ids = stable_group(&mut h, 2);
    let (errors, _) = h.g.leave(&[(ids[1].clone(), None)], h.now);
    assert_eq!(errors, vec![ErrorCode::None]);
    assert_eq!(h.g.state(), GroupState::PreparingRebalance);
    let (errors, _) = h.g.leave(&[(ids[1].clone(), None)], h.now);
    assert_eq!(errors, vec![ErrorCode::UnknownMemberId]);
    // The last member leaving empties the group.
    let (errors, _) = h.g.leave(&[(ids[0].clone(), None)], h.now);
    assert_eq!(errors, vec![ErrorCode::None]);
    assert_eq!(h.g.state(), GroupState::Empty);
}

#[test]
fn a_member_that_does_not_rejoin_in_time_is_dropped() {
    let mut h = Harness::new();
    let ids = stable_group(&mut h, 2);
    // The leader rejoins (say, its subscription changed); the other never does.
    let (t, r) = h.join_with(&ids[0], None, &["range"]);
    assert!(r.is_empty());
    assert_eq!(h.g.state(), GroupState::PreparingRebalance);
    // The other keeps heartbeating (told to rejoin) but does not, until the rebalance timeout.
    let mut replies = vec![];
    for _ in 0..(REBALANCE / 5000) {
        replies.extend(h.advance(5000));
        if h.g.member_count() == 2 {
            assert_eq!(h.g.heartbeat(&ids[1], None, 1, h.now), ErrorCode::RebalanceInProgress);
        }
    }
    let res = join_result(&replies, t);
    assert_eq!(res.error, ErrorCode::None);
    assert_eq!(res.members.len(), 1, "only the member that rejoined remains");
    assert_eq!(h.g.heartbeat(&ids[1], None, 2, h.now), ErrorCode::UnknownMemberId);
}

#[test]
fn a_pending_sync_rebalances_a_completed_join() {
    // A new member joins a stable group, every member rejoins, and one never syncs.
    let mut h = Harness::new();
    let ids = stable_group(&mut h, 2);
    let (t0, _) = h.join(&ids[0], None);
    let (t1, r) = h.join(&ids[1], None);
    assert_eq!(join_result(&r, t0).generation, 2);
    assert_eq!(join_result(&r, t1).generation, 2);
    let (lt, r) = h.sync(&ids[0], 2, &[(&ids[0], "x"), (&ids[1], "y")]);
    assert_eq!(sync_result(&r, lt).error, ErrorCode::None);
    // ids[1] never syncs: at the rebalance timeout it is removed.
    for _ in 0..(REBALANCE / 5000) {
        h.advance(5000);
        let _ = h.g.heartbeat(&ids[0], None, h.g.generation(), h.now);
    }
    assert_eq!(h.g.member_count(), 1);
}

#[test]
fn static_member_restart_keeps_its_assignment_without_a_rebalance() {
    let mut h = Harness::new();
    let (t1, r) = h.join("", Some("instance-a"));
    assert!(r.is_empty(), "static members join without the member-id round trip");
    let (t2, _) = h.join("", Some("instance-b"));
    let mut r = h.advance(3000);
    r.extend(h.advance(3000));
    let a = join_result(&r, t1).member_id.clone();
    let b = join_result(&r, t2).member_id.clone();
    let leader = h.g.leader().unwrap().to_string();
    let follower = if leader == a { b.clone() } else { a.clone() };
    let _ = h.sync(&follower, 1, &[]);
    let _ = h.sync(&leader, 1, &[(&a, "pa"), (&b, "pb")]);
    assert_eq!(h.g.state(), GroupState::Stable);
    let _ = h.g.take_dirty();

    // instance-b restarts: it comes back with no member id.
    let (t, r) = h.join("", Some("instance-b"));
    let res = join_result(&r, t).clone();
    assert_eq!(res.error, ErrorCode::None);
    assert_eq!(res.generation, 1, "no new generation");
    assert_ne!(res.member_id, b, "a new member id");
    assert_eq!(h.g.state(), GroupState::Stable);
    assert!(h.g.take_dirty(), "the new member id is persisted");
    let (st, r) = h.sync(&res.member_id, 1, &[]);
    assert_eq!(sync_result(&r, st).assignment, Bytes::from("pb"));
    // The old incarnation is fenced.
    assert_eq!(
        h.g.heartbeat(&b, Some("instance-b"), 1, h.now),
        ErrorCode::FencedInstanceId
    );
    assert_eq!(
        h.g.heartbeat(&res.member_id, Some("instance-b"), 1, h.now),
        ErrorCode::None
    );
}

#[test]
fn protocols_must_be_shared() {
    let mut h = Harness::new();
    let ids = stable_group(&mut h, 1);
    // Even the only member cannot change the group's protocol type.
    let mut req = h.join_req(&ids[0], None, &["range"]);
    req.protocol_type = "connect".into();
    let r = h.g.join(req, 98, h.now, &h.limits);
    assert_eq!(join_result(&r, 98).error, ErrorCode::InconsistentGroupProtocol);
    // A known member naming an instance id the group does not know.
    let req = h.join_req(&ids[0], Some("stranger"), &["range"]);
    let r = h.g.join(req, 97, h.now, &h.limits);
    assert_eq!(join_result(&r, 97).error, ErrorCode::UnknownMemberId);
    let (t, r) = h.join_with("", None, &["roundrobin"]);
    assert_eq!(join_result(&r, t).error, ErrorCode::InconsistentGroupProtocol);
    let mut req = h.join_req("", None, &["range"]);
    req.protocol_type = "connect".into();
    let r = h.g.join(req, 99, h.now, &h.limits);
    assert_eq!(join_result(&r, 99).error, ErrorCode::InconsistentGroupProtocol);
}

#[test]
fn the_most_preferred_common_protocol_is_chosen() {
    let mut h = Harness::new();
    let (id1, _, _) = h.new_member();
    let _ = id1;
    let req = {
        let mut r = h.join_req("", None, &["cooperative-sticky", "range"]);
        r.require_known_member_id = false;
        r
    };
    let _ = h.g.join(req, 50, h.now, &h.limits);
    let _ = h.advance(3000);
    let _ = h.advance(3000);
    // Member 1 offers only range, so that is the one protocol all support.
    assert_eq!(h.g.protocol_name(), Some("range"));
}

#[test]
fn session_timeouts_outside_the_limits_are_refused() {
    let mut h = Harness::new();
    let mut req = h.join_req("", None, &["range"]);
    req.session_timeout_ms = 1000;
    let r = h.g.join(req, 7, h.now, &h.limits);
    assert_eq!(join_result(&r, 7).error, ErrorCode::InvalidSessionTimeout);
}

#[test]
fn commits_are_checked_against_membership_and_generation() {
    let mut h = Harness::new();
    // An empty group accepts commits from consumers that assign their own partitions.
    assert_eq!(h.g.check_commit("", None, -1, h.now), ErrorCode::None);
    let ids = stable_group(&mut h, 2);
    assert_eq!(h.g.check_commit("", None, -1, h.now), ErrorCode::UnknownMemberId);
    assert_eq!(h.g.check_commit(&ids[0], None, 1, h.now), ErrorCode::None);
    assert_eq!(h.g.check_commit(&ids[0], None, 0, h.now), ErrorCode::IllegalGeneration);
    assert_eq!(h.g.check_commit("stranger", None, 1, h.now), ErrorCode::UnknownMemberId);
    // During the join phase commits of the current generation are still accepted.
    let _ = h.join(&ids[0], None);
    assert_eq!(h.g.check_commit(&ids[1], None, 1, h.now), ErrorCode::None);
    let _ = h.join(&ids[1], None);
    assert_eq!(h.g.state(), GroupState::CompletingRebalance);
    assert_eq!(
        h.g.check_commit(&ids[1], None, 2, h.now),
        ErrorCode::RebalanceInProgress
    );
}

#[test]
fn offsets_of_an_empty_group_expire_after_retention() {
    let mut h = Harness::new();
    let ids = stable_group(&mut h, 1);
    h.g.put_offset(
        "t",
        0,
        CommittedOffset {
            offset: 5,
            leader_epoch: 0,
            metadata: None,
            commit_timestamp: h.now,
        },
    );
    assert!(
        h.g.expired_offsets(h.now + 10_000_000, 1000).is_empty(),
        "members keep offsets"
    );
    let _ = h.g.leave(&[(ids[0].clone(), None)], h.now);
    assert_eq!(h.g.state(), GroupState::Empty);
    assert!(h.g.expired_offsets(h.now + 999, 1000).is_empty());
    assert_eq!(h.g.expired_offsets(h.now + 1000, 1000), vec![("t".to_string(), 0)]);
}

#[test]
fn snapshots_restore_a_stable_group() {
    let mut h = Harness::new();
    let ids = stable_group(&mut h, 2);
    let snap = h.g.snapshot();
    let mut g = Group::restore("g", snap, 1_000);
    assert_eq!(g.state(), GroupState::Stable);
    assert_eq!(g.generation(), 1);
    for id in &ids {
        assert_eq!(g.heartbeat(id, None, 1, 1_000), ErrorCode::None);
        assert_eq!(g.assignment_of(id), Some(&Bytes::from(format!("a-{id}"))));
    }
}

mod random_operations {
    //! Random sequences of client operations and time: the state machine never panics, answers
    //! each waiting request at most once, keeps its leader among its members, and once clients
    //! fall silent answers every request still waiting.

    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[derive(Debug, Clone)]
    enum Op {
        JoinNew {
            instance: Option<u8>,
            protocols: u8,
            v4: bool,
        },
        JoinKnown {
            who: usize,
            protocols: u8,
        },
        Sync {
            who: usize,
            generation_offset: i32,
            assign: bool,
        },
        Heartbeat {
            who: usize,
        },
        Leave {
            who: usize,
            by_instance: bool,
        },
        Commit {
            who: usize,
        },
        Advance {
            ms: i64,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (proptest::option::of(0u8..3), 0u8..3, any::<bool>()).prop_map(|(instance, protocols, v4)| Op::JoinNew {
                instance,
                protocols,
                v4
            }),
            (0usize..8, 0u8..3).prop_map(|(who, protocols)| Op::JoinKnown { who, protocols }),
            (0usize..8, -1i32..=1, any::<bool>()).prop_map(|(who, generation_offset, assign)| Op::Sync {
                who,
                generation_offset,
                assign
            }),
            (0usize..8).prop_map(|who| Op::Heartbeat { who }),
            (0usize..8, any::<bool>()).prop_map(|(who, by_instance)| Op::Leave { who, by_instance }),
            (0usize..8).prop_map(|who| Op::Commit { who }),
            (0i64..20_000).prop_map(|ms| Op::Advance { ms }),
        ]
    }

    fn protocols(set: u8) -> &'static [&'static str] {
        match set {
            0 => &["range"],
            1 => &["cooperative-sticky", "range"],
            _ => &["roundrobin"],
        }
    }

    struct Model {
        h: Harness,
        /// Member ids handed out (joined or pending), with their instance id.
        ids: Vec<(String, Option<String>)>,
        waiting: HashSet<Token>,
        answered: HashSet<Token>,
        last_generation: i32,
    }

    impl Model {
        fn absorb(&mut self, replies: Vec<Reply>) {
            for r in replies {
                let (t, id) = match &r {
                    Reply::Join(t, res) => (*t, Some(res.member_id.clone())),
                    Reply::Sync(t, _) => (*t, None),
                };
                assert!(self.waiting.remove(&t), "reply to a token not waiting: {r:?}");
                assert!(self.answered.insert(t), "token answered twice: {r:?}");
                if let Some(id) = id.filter(|id| !id.is_empty()) {
                    if !self.ids.iter().any(|(known, _)| *known == id) {
                        self.ids.push((id, None));
                    }
                }
            }
        }

        fn who(&self, i: usize) -> Option<(String, Option<String>)> {
            (!self.ids.is_empty()).then(|| self.ids[i % self.ids.len()].clone())
        }

        fn check(&mut self) {
            let g = &self.h.g;
            assert!(g.generation() >= self.last_generation, "generations never go back");
            self.last_generation = g.generation();
            if matches!(g.state(), GroupState::Stable | GroupState::CompletingRebalance) {
                let leader = g.leader().expect("a group with a generation has a leader");
                assert!(g.member_ids().iter().any(|m| m == leader), "the leader is a member");
            }
            if g.state() == GroupState::Empty {
                assert_eq!(g.member_count(), 0);
            }
            assert!(g.member_count() <= self.h.limits.members_max);
        }

        fn apply(&mut self, op: Op) {
            let now = self.h.now;
            match op {
                Op::JoinNew {
                    instance,
                    protocols: p,
                    v4,
                } => {
                    let instance = instance.map(|i| format!("instance-{i}"));
                    let mut req = self.h.join_req("", instance.as_deref(), protocols(p));
                    req.require_known_member_id = v4;
                    let t = self.h.token();
                    self.waiting.insert(t);
                    let new_id = req.new_member_id.clone();
                    let replies = self.h.g.join(req, t, now, &self.h.limits);
                    self.ids.push((new_id, instance));
                    self.absorb(replies);
                }
                Op::JoinKnown { who, protocols: p } => {
                    let Some((id, instance)) = self.who(who) else { return };
                    let mut req = self.h.join_req(&id, instance.as_deref(), protocols(p));
                    req.require_known_member_id = true;
                    let t = self.h.token();
                    self.waiting.insert(t);
                    let replies = self.h.g.join(req, t, now, &self.h.limits);
                    self.absorb(replies);
                }
                Op::Sync {
                    who,
                    generation_offset,
                    assign,
                } => {
                    let Some((id, instance)) = self.who(who) else { return };
                    let assignments = if assign {
                        self.h
                            .g
                            .member_ids()
                            .into_iter()
                            .map(|m| (m.clone(), Bytes::from(m)))
                            .collect()
                    } else {
                        vec![]
                    };
                    let t = self.h.token();
                    self.waiting.insert(t);
                    let generation = self.h.g.generation() + generation_offset;
                    let replies = self
                        .h
                        .g
                        .sync(&id, instance.as_deref(), generation, None, None, assignments, t, now);
                    self.absorb(replies);
                }
                Op::Heartbeat { who } => {
                    let Some((id, instance)) = self.who(who) else { return };
                    let generation = self.h.g.generation();
                    let _ = self.h.g.heartbeat(&id, instance.as_deref(), generation, now);
                }
                Op::Leave { who, by_instance } => {
                    let Some((id, instance)) = self.who(who) else { return };
                    let leaving = if by_instance && instance.is_some() {
                        (String::new(), instance)
                    } else {
                        (id, instance)
                    };
                    let (errors, replies) = self.h.g.leave(&[leaving], now);
                    assert_eq!(errors.len(), 1);
                    self.absorb(replies);
                }
                Op::Commit { who } => {
                    let Some((id, instance)) = self.who(who) else { return };
                    let generation = self.h.g.generation();
                    let _ = self.h.g.check_commit(&id, instance.as_deref(), generation, now);
                }
                Op::Advance { ms } => {
                    let replies = self.h.advance(ms);
                    self.absorb(replies);
                }
            }
            self.check();
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn every_waiting_request_is_answered_once(ops in proptest::collection::vec(op(), 1..80)) {
            let mut m = Model {
                h: Harness::new(),
                ids: vec![],
                waiting: HashSet::new(),
                answered: HashSet::new(),
                last_generation: 0,
            };
            m.h.limits.members_max = 6;
            for op in ops {
                m.apply(op);
            }
            // Clients fall silent: within the longest timeout everything waiting is answered.
            for _ in 0..(2 * NEW_MEMBER_JOIN_TIMEOUT_MS / 1000) {
                let replies = m.h.advance(1000);
                m.absorb(replies);
                m.check();
            }
            prop_assert!(m.waiting.is_empty(), "never answered: {:?} (state {:?})", m.waiting, m.h.g.state());
        }
    }
}

//! The records of `__consumer_offsets`, in Kafka's layout so its tools can read them:
//!
//! - offset commit: key v1 `(group, topic, partition)`, value v3 `(offset, leader epoch,
//!   metadata, commit timestamp)`;
//! - group metadata: key v2 `(group)`, value v3 `(protocol type, generation, protocol, leader,
//!   state timestamp, members)`.
//!
//! These are written and read through the types generated from Kafka's record specs
//! (`wire::kafka_records::group`), which also read the versions Kafka wrote before (offset key
//! v0, offset values v0-v4, group values v0-v4). A null value is a tombstone: the offset or the
//! group is gone. Reading never panics on what the disk holds; a record that does not parse is
//! skipped by the loader, with a warning.

use super::state::{CommittedOffset, GroupSnapshot, MemberSnapshot};
use bytes::{Bytes, BytesMut};
use wire::codec::DecodeError;
use wire::kafka_records::group::{
    group_metadata_value::MemberMetadata, GroupMetadataKey, GroupMetadataValue, OffsetCommitKey, OffsetCommitValue,
    RecordKey, RecordValue,
};
use wire::kafka_records::write_versioned;

const OFFSET_KEY_VERSION: i16 = 1;
const GROUP_KEY_VERSION: i16 = 2;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_VALUE_VERSION: i16 = 3;

/// What one record of `__consumer_offsets` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Offset {
        group: String,
        topic: String,
        partition: i32,
        value: Option<CommittedOffset>,
    },
    Group {
        group: String,
        value: Option<GroupSnapshot>,
    },
}

/// Ids arrive as protocol strings; a compact one may exceed the int16 length of these records'
/// strings, so it is cut (at a character boundary) rather than failing the write.
fn fit(s: &str) -> String {
    let mut end = s.len().min(i16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Writes `message` with its int16 version. Every string was cut to fit, every bytes field is
/// at most `group.max.member.metadata.bytes` (at most 1 GiB, under the int32 length) and every
/// version is one the spec has, so this cannot fail; a failure would be a bug in this file.
fn versioned<T: wire::Message>(message: &T, version: i16) -> Bytes {
    let mut b = BytesMut::new();
    write_versioned(&mut b, message, version).expect("__consumer_offsets records always encode");
    b.freeze()
}

pub fn offset_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let key = OffsetCommitKey {
        group: fit(group),
        topic: fit(topic),
        partition,
    };
    versioned(&key, OFFSET_KEY_VERSION)
}

pub fn offset_value(o: &CommittedOffset) -> Bytes {
    let value = OffsetCommitValue {
        offset: o.offset,
        leader_epoch: o.leader_epoch,
        metadata: fit(o.metadata.as_deref().unwrap_or("")),
        commit_timestamp: o.commit_timestamp,
        ..Default::default()
    };
    versioned(&value, OFFSET_VALUE_VERSION)
}

pub fn group_key(group: &str) -> Bytes {
    versioned(&GroupMetadataKey { group: fit(group) }, GROUP_KEY_VERSION)
}

pub fn group_value(g: &GroupSnapshot) -> Bytes {
    let value = GroupMetadataValue {
        protocol_type: fit(&g.protocol_type),
        generation: g.generation,
        protocol: g.protocol_name.as_deref().map(fit),
        leader: g.leader.as_deref().map(fit),
        current_state_timestamp: g.state_timestamp,
        members: g
            .members
            .iter()
            .map(|m| MemberMetadata {
                member_id: fit(&m.member_id),
                group_instance_id: m.group_instance_id.as_deref().map(fit),
                client_id: fit(&m.client_id),
                client_host: fit(&m.client_host),
                rebalance_timeout: m.rebalance_timeout_ms,
                session_timeout: m.session_timeout_ms,
                subscription: m.subscription.clone(),
                assignment: m.assignment.clone(),
            })
            .collect(),
    };
    versioned(&value, GROUP_VALUE_VERSION)
}

fn unsupported(message: &'static str, version: i16) -> DecodeError {
    DecodeError::UnsupportedVersion { message, version }
}

/// Parses one record. Key versions (record types) 0 and 1 are offset commits, 2 a group; the
/// values may be in any version Kafka has written (offsets v0-v4, groups v0-v4). The other
/// record types (KIP-848 consumer groups, share groups) are refused: Sluice keeps none.
pub fn parse(key: Option<Bytes>, value: Option<Bytes>) -> Result<Entry, DecodeError> {
    let mut key = key.ok_or(DecodeError::Invalid("__consumer_offsets record without a key"))?;
    let (record_type, k) = RecordKey::read(&mut key)?;
    let value = match value {
        None => None,
        Some(mut v) => Some(RecordValue::read(record_type, &mut v)?),
    };
    match (k, value) {
        (RecordKey::OffsetCommitKey(k), value) => Ok(Entry::Offset {
            group: k.group,
            topic: k.topic,
            partition: k.partition,
            value: match value {
                None => None,
                Some((_, RecordValue::OffsetCommitValue(v))) => Some(CommittedOffset {
                    offset: v.offset,
                    leader_epoch: v.leader_epoch,
                    metadata: Some(v.metadata),
                    commit_timestamp: v.commit_timestamp,
                }),
                Some(_) => return Err(DecodeError::Invalid("offset commit key with another value")),
            },
        }),
        (RecordKey::GroupMetadataKey(k), value) => Ok(Entry::Group {
            group: k.group,
            value: match value {
                None => None,
                Some((version, RecordValue::GroupMetadataValue(v))) => Some(group_snapshot(version, v)),
                Some(_) => return Err(DecodeError::Invalid("group metadata key with another value")),
            },
        }),
        _ => Err(unsupported("__consumer_offsets key", record_type)),
    }
}

fn group_snapshot(version: i16, v: GroupMetadataValue) -> GroupSnapshot {
    GroupSnapshot {
        protocol_type: v.protocol_type,
        generation: v.generation,
        protocol_name: v.protocol,
        leader: v.leader,
        state_timestamp: v.current_state_timestamp,
        members: v
            .members
            .into_iter()
            .map(|m| MemberSnapshot {
                member_id: m.member_id,
                group_instance_id: m.group_instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                // Version 0 has no rebalance timeout: Kafka took the session timeout for it.
                rebalance_timeout_ms: if version == 0 {
                    m.session_timeout
                } else {
                    m.rebalance_timeout
                },
                session_timeout_ms: m.session_timeout,
                subscription: m.subscription,
                assignment: m.assignment,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::codec;

    #[test]
    fn offsets_and_groups_round_trip() {
        let o = CommittedOffset {
            offset: 42,
            leader_epoch: 3,
            metadata: Some("meta".into()),
            commit_timestamp: 1_700_000_000_000,
        };
        let e = parse(Some(offset_key("g", "t", 7)), Some(offset_value(&o))).unwrap();
        assert_eq!(
            e,
            Entry::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 7,
                value: Some(o)
            }
        );
        let g = GroupSnapshot {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol_name: Some("range".into()),
            leader: Some("m1".into()),
            state_timestamp: 9,
            members: vec![MemberSnapshot {
                member_id: "m1".into(),
                group_instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300000,
                session_timeout_ms: 45000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        let e = parse(Some(group_key("g")), Some(group_value(&g))).unwrap();
        assert_eq!(
            e,
            Entry::Group {
                group: "g".into(),
                value: Some(g)
            }
        );
        assert_eq!(
            parse(Some(group_key("g")), None).unwrap(),
            Entry::Group {
                group: "g".into(),
                value: None
            }
        );
    }

    fn hex(s: &str) -> Bytes {
        Bytes::from(
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect::<Vec<u8>>(),
        )
    }

    fn golden_offset() -> CommittedOffset {
        CommittedOffset {
            offset: 42,
            leader_epoch: 3,
            metadata: Some("meta".into()),
            commit_timestamp: 1_700_000_000_000,
        }
    }

    fn golden_group() -> GroupSnapshot {
        GroupSnapshot {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol_name: Some("range".into()),
            leader: Some("m1".into()),
            state_timestamp: 9,
            members: vec![
                MemberSnapshot {
                    member_id: "m1".into(),
                    group_instance_id: Some("i1".into()),
                    client_id: "c".into(),
                    client_host: "/127.0.0.1".into(),
                    rebalance_timeout_ms: 300000,
                    session_timeout_ms: 45000,
                    subscription: Bytes::from_static(b"sub"),
                    assignment: Bytes::from_static(b"asg"),
                },
                MemberSnapshot {
                    member_id: "m2".into(),
                    group_instance_id: None,
                    client_id: "".into(),
                    client_host: "h".into(),
                    rebalance_timeout_ms: 1,
                    session_timeout_ms: 2,
                    subscription: Bytes::new(),
                    assignment: Bytes::new(),
                },
            ],
        }
    }

    // What the hand-written encoder this file had before the generated types wrote for these
    // values (captured from it), so data dirs written by earlier builds load unchanged.
    const OLD_OFFSET_KEY: &str = "0001000867726f75702dc3a90005746f70696300000007";
    const OLD_OFFSET_VALUE: &str = "0003000000000000002a0000000300046d6574610000018bcfe56800";
    const OLD_OFFSET_VALUE_NO_METADATA: &str = "0003ffffffffffffffffffffffff00000000000000000005";
    const OLD_GROUP_KEY: &str = "0002000167";
    const OLD_GROUP_VALUE: &str = "00030008636f6e73756d657200000005000572616e676500026d310000000000000009000000020002\
        6d3100026931000163000a2f3132372e302e302e31000493e00000afc8000000037375620000000361736700026d32ffff000000016800\
        000001000000020000000000000000";
    const OLD_EMPTY_GROUP_VALUE: &str = "0003000000000000ffffffffffffffffffffffff00000000";

    #[test]
    fn writes_what_the_hand_written_encoder_wrote() {
        assert_eq!(offset_key("group-é", "topic", 7), hex(OLD_OFFSET_KEY));
        assert_eq!(offset_value(&golden_offset()), hex(OLD_OFFSET_VALUE));
        let none = CommittedOffset {
            offset: -1,
            leader_epoch: -1,
            metadata: None,
            commit_timestamp: 5,
        };
        assert_eq!(offset_value(&none), hex(OLD_OFFSET_VALUE_NO_METADATA));
        assert_eq!(group_key("g"), hex(OLD_GROUP_KEY));
        assert_eq!(group_value(&golden_group()), hex(OLD_GROUP_VALUE));
        let empty = GroupSnapshot {
            protocol_type: "".into(),
            generation: 0,
            protocol_name: None,
            leader: None,
            state_timestamp: -1,
            members: vec![],
        };
        assert_eq!(group_value(&empty), hex(OLD_EMPTY_GROUP_VALUE));
        // An id too long for an int16 length is cut at a character boundary, as before: 32766
        // bytes of 'a' and a two-byte 'é' leave 32766 bytes.
        let long = format!("{}é", "a".repeat(32766));
        let k = group_key(&long);
        assert_eq!((k.len(), &k[..4]), (32770, &[0x00, 0x02, 0x7f, 0xfe][..]));
    }

    #[test]
    fn reads_what_the_hand_written_encoder_wrote() {
        assert_eq!(
            parse(Some(hex(OLD_OFFSET_KEY)), Some(hex(OLD_OFFSET_VALUE))).unwrap(),
            Entry::Offset {
                group: "group-é".into(),
                topic: "topic".into(),
                partition: 7,
                value: Some(golden_offset()),
            }
        );
        assert_eq!(
            parse(Some(hex(OLD_OFFSET_KEY)), Some(hex(OLD_OFFSET_VALUE_NO_METADATA))).unwrap(),
            Entry::Offset {
                group: "group-é".into(),
                topic: "topic".into(),
                partition: 7,
                value: Some(CommittedOffset {
                    offset: -1,
                    leader_epoch: -1,
                    metadata: Some(String::new()),
                    commit_timestamp: 5,
                }),
            }
        );
        assert_eq!(
            parse(Some(hex(OLD_GROUP_KEY)), Some(hex(OLD_GROUP_VALUE))).unwrap(),
            Entry::Group {
                group: "g".into(),
                value: Some(golden_group()),
            }
        );
        let Entry::Group { value: Some(g), .. } =
            parse(Some(hex(OLD_GROUP_KEY)), Some(hex(OLD_EMPTY_GROUP_VALUE))).unwrap()
        else {
            panic!("not a group")
        };
        assert_eq!((g.protocol_name, g.leader, g.members.len()), (None, None, 0));
    }

    /// Bytes written field by field.
    #[derive(Default)]
    struct G(Vec<u8>);

    impl G {
        fn i16(mut self, v: i16) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i32(mut self, v: i32) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i64(mut self, v: i64) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn u8(mut self, v: u8) -> Self {
            self.0.push(v);
            self
        }
        fn str16(mut self, s: &str) -> Self {
            self = self.i16(s.len() as i16);
            self.0.extend_from_slice(s.as_bytes());
            self
        }
        fn cstr(mut self, s: &str) -> Self {
            self = self.u8(s.len() as u8 + 1);
            self.0.extend_from_slice(s.as_bytes());
            self
        }
        fn done(self) -> Option<Bytes> {
            Some(Bytes::from(self.0))
        }
    }

    #[test]
    fn reads_the_other_versions_kafka_wrote() {
        // Offset key v0 (same fields as v1) with value v1 (expire timestamp, no leader epoch).
        let key = G::default().i16(0).str16("g").str16("t").i32(7).done();
        let v1 = G::default()
            .i16(1) // version
            .i64(42) // offset
            .str16("") // metadata
            .i64(10) // commitTimestamp
            .i64(20) // expireTimestamp
            .done();
        let expected = |commit_timestamp, leader_epoch| Entry::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 7,
            value: Some(CommittedOffset {
                offset: 42,
                leader_epoch,
                metadata: Some(String::new()),
                commit_timestamp,
            }),
        };
        assert_eq!(parse(key.clone(), v1).unwrap(), expected(10, -1));
        // Value v0: offset, metadata, commit timestamp.
        let v0 = G::default().i16(0).i64(42).str16("").i64(11).done();
        assert_eq!(parse(key.clone(), v0).unwrap(), expected(11, -1));
        // Value v4, the flexible one: compact metadata and a tagged fields section.
        let v4 = G::default().i16(4).i64(42).i32(3).cstr("").i64(12).u8(0).done();
        assert_eq!(parse(key, v4).unwrap(), expected(12, 3));

        // Group value v0: no state timestamp, no rebalance timeout (the session timeout stands
        // in, as in Kafka); v4 is flexible.
        let member = |g: G, compact: bool| {
            if compact {
                g.cstr("m1")
                    .u8(0) // groupInstanceId: null
                    .cstr("c") // clientId
                    .cstr("h") // clientHost
                    .i32(1000) // rebalanceTimeout
                    .i32(30000) // sessionTimeout
                    .u8(2) // subscription: compact bytes of 1
                    .u8(7)
                    .u8(1) // assignment: empty
                    .u8(0) // no tagged fields in the member
            } else {
                // memberId, clientId, clientHost, sessionTimeout, subscription [7], assignment []
                g.str16("m1").str16("c").str16("h").i32(30000).i32(1).u8(7).i32(0)
            }
        };
        let v0 = member(
            G::default()
                .i16(0) // version
                .str16("consumer") // protocolType
                .i32(1) // generation
                .i16(-1) // protocol: null
                .i16(-1) // leader: null
                .i32(1), // members: array of 1
            false,
        )
        .done();
        let gkey = G::default().i16(2).str16("g").done();
        let Entry::Group { value: Some(g), .. } = parse(gkey.clone(), v0).unwrap() else {
            panic!("not a group")
        };
        assert_eq!(g.state_timestamp, -1);
        assert_eq!(
            (g.members[0].rebalance_timeout_ms, g.members[0].session_timeout_ms),
            (30000, 30000)
        );
        assert_eq!(g.members[0].subscription.as_ref(), &[7]);
        let v4 = member(
            G::default()
                .i16(4) // version
                .cstr("consumer") // protocolType
                .i32(1) // generation
                .cstr("range") // protocol
                .cstr("m1") // leader
                .i64(9) // currentStateTimestamp
                .u8(2), // members: compact array of 1
            true,
        )
        .u8(0) // no tagged fields
        .done();
        let Entry::Group { value: Some(g), .. } = parse(gkey, v4).unwrap() else {
            panic!("not a group")
        };
        assert_eq!((g.state_timestamp, g.members[0].rebalance_timeout_ms), (9, 1000));
        assert_eq!(g.members[0].group_instance_id, None);
        // KIP-848 records are not Sluice's: refused, so the loader skips them.
        let consumer_group_key = G::default().i16(3).str16("g").done();
        assert!(parse(consumer_group_key, None).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for len in 0..40 {
            let junk = Bytes::from(vec![0xffu8; len]);
            let _ = parse(Some(junk.clone()), Some(junk.clone()));
            let mut k = BytesMut::new();
            codec::put_i16(&mut k, 2);
            k.extend_from_slice(&junk);
            let _ = parse(Some(k.freeze()), Some(junk));
        }
        assert!(parse(None, None).is_err());
    }
}

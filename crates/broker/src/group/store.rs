//! The records of `__consumer_offsets`, in Kafka's layout so its tools can read them:
//!
//! - offset commit: key v1 `(group, topic, partition)`, value v3 `(offset, leader epoch,
//!   metadata, commit timestamp)`;
//! - group metadata: key v2 `(group)`, value v3 `(protocol type, generation, protocol, leader,
//!   state timestamp, members)`.
//!
//! A null value is a tombstone: the offset or the group is gone. Reading never panics on what
//! the disk holds; a record that does not parse is skipped by the loader, with a warning.

use super::state::{CommittedOffset, GroupSnapshot, MemberSnapshot};
use bytes::{Bytes, BytesMut};
use wire::codec::{self, DecodeError};

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

fn put_str(b: &mut BytesMut, s: &str) {
    // Ids arrive as protocol strings; a compact one may exceed the int16 length used here, so
    // it is cut (at a character boundary) rather than failing the write.
    let mut end = s.len().min(i16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let _ = codec::put_string(b, &s[..end], false);
}

fn put_opt_str(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(b, s),
        None => codec::put_null_string(b, false),
    }
}

pub fn offset_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut b = BytesMut::new();
    codec::put_i16(&mut b, OFFSET_KEY_VERSION);
    put_str(&mut b, group);
    put_str(&mut b, topic);
    codec::put_i32(&mut b, partition);
    b.freeze()
}

pub fn offset_value(o: &CommittedOffset) -> Bytes {
    let mut b = BytesMut::new();
    codec::put_i16(&mut b, OFFSET_VALUE_VERSION);
    codec::put_i64(&mut b, o.offset);
    codec::put_i32(&mut b, o.leader_epoch);
    put_str(&mut b, o.metadata.as_deref().unwrap_or(""));
    codec::put_i64(&mut b, o.commit_timestamp);
    b.freeze()
}

pub fn group_key(group: &str) -> Bytes {
    let mut b = BytesMut::new();
    codec::put_i16(&mut b, GROUP_KEY_VERSION);
    put_str(&mut b, group);
    b.freeze()
}

pub fn group_value(g: &GroupSnapshot) -> Bytes {
    let mut b = BytesMut::new();
    codec::put_i16(&mut b, GROUP_VALUE_VERSION);
    put_str(&mut b, &g.protocol_type);
    codec::put_i32(&mut b, g.generation);
    put_opt_str(&mut b, g.protocol_name.as_deref());
    put_opt_str(&mut b, g.leader.as_deref());
    codec::put_i64(&mut b, g.state_timestamp);
    codec::put_i32(&mut b, g.members.len() as i32);
    for m in &g.members {
        put_str(&mut b, &m.member_id);
        put_opt_str(&mut b, m.group_instance_id.as_deref());
        put_str(&mut b, &m.client_id);
        put_str(&mut b, &m.client_host);
        codec::put_i32(&mut b, m.rebalance_timeout_ms);
        codec::put_i32(&mut b, m.session_timeout_ms);
        let _ = codec::put_bytes(&mut b, &m.subscription, false);
        let _ = codec::put_bytes(&mut b, &m.assignment, false);
    }
    b.freeze()
}

fn unsupported(message: &'static str, version: i16) -> DecodeError {
    DecodeError::UnsupportedVersion { message, version }
}

/// Parses one record. Key versions 0 and 1 are offset commits, 2 a group; value versions of
/// each that this code does not write are refused.
pub fn parse(key: Option<Bytes>, value: Option<Bytes>) -> Result<Entry, DecodeError> {
    let mut key = key.ok_or(DecodeError::Invalid("__consumer_offsets record without a key"))?;
    let key_version = codec::get_i16(&mut key)?;
    match key_version {
        0 | 1 => {
            let group = codec::get_string(&mut key, false)?;
            let topic = codec::get_string(&mut key, false)?;
            let partition = codec::get_i32(&mut key)?;
            let value = match value {
                None => None,
                Some(mut v) => Some(parse_offset_value(&mut v)?),
            };
            Ok(Entry::Offset {
                group,
                topic,
                partition,
                value,
            })
        }
        2 => {
            let group = codec::get_string(&mut key, false)?;
            let value = match value {
                None => None,
                Some(mut v) => Some(parse_group_value(&mut v)?),
            };
            Ok(Entry::Group { group, value })
        }
        v => Err(unsupported("__consumer_offsets key", v)),
    }
}

fn parse_offset_value(v: &mut Bytes) -> Result<CommittedOffset, DecodeError> {
    let version = codec::get_i16(v)?;
    if version != OFFSET_VALUE_VERSION {
        return Err(unsupported("offset commit value", version));
    }
    let offset = codec::get_i64(v)?;
    let leader_epoch = codec::get_i32(v)?;
    let metadata = codec::get_string(v, false)?;
    let commit_timestamp = codec::get_i64(v)?;
    Ok(CommittedOffset {
        offset,
        leader_epoch,
        metadata: Some(metadata),
        commit_timestamp,
    })
}

fn parse_group_value(v: &mut Bytes) -> Result<GroupSnapshot, DecodeError> {
    let version = codec::get_i16(v)?;
    if version != GROUP_VALUE_VERSION {
        return Err(unsupported("group metadata value", version));
    }
    let protocol_type = codec::get_string(v, false)?;
    let generation = codec::get_i32(v)?;
    let protocol_name = codec::get_nullable_string(v, false)?;
    let leader = codec::get_nullable_string(v, false)?;
    let state_timestamp = codec::get_i64(v)?;
    let n = codec::get_array_len(v, false)?.unwrap_or(0);
    let mut members = Vec::with_capacity(codec::capacity_for::<MemberSnapshot>(n, v));
    for _ in 0..n {
        members.push(MemberSnapshot {
            member_id: codec::get_string(v, false)?,
            group_instance_id: codec::get_nullable_string(v, false)?,
            client_id: codec::get_string(v, false)?,
            client_host: codec::get_string(v, false)?,
            rebalance_timeout_ms: codec::get_i32(v)?,
            session_timeout_ms: codec::get_i32(v)?,
            subscription: codec::get_bytes(v, false)?,
            assignment: codec::get_bytes(v, false)?,
        });
    }
    Ok(GroupSnapshot {
        protocol_type,
        generation,
        protocol_name,
        leader,
        state_timestamp,
        members,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

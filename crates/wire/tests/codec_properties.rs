//! Properties of the generated codec, for every message and every version:
//! - encode → decode → encode gives the same bytes, and decode consumes exactly what encode wrote;
//! - decoding arbitrary bytes never panics (it returns a value or an error);
//! - the `kafka-protocol` crate, an independent implementation, decodes what we encode and
//!   re-encodes it to the same bytes (differential test).

use arbitrary::{Arbitrary, Unstructured};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use wire::messages::*;
use wire::Message;

/// Builds a random message from `seed` and checks the round trip in every version.
fn round_trip<M: Message + for<'a> Arbitrary<'a>>(seed: &[u8]) -> Result<usize, TestCaseError> {
    let mut u = Unstructured::new(seed);
    let Ok(m) = M::arbitrary(&mut u) else {
        return Ok(0);
    };
    let mut checked = 0;
    for v in M::MIN_VERSION..=M::MAX_VERSION {
        let mut first = BytesMut::new();
        // Values that cannot be written in this version (a null in a non-nullable field,
        // an over-long string) are an encode error, which is right; skip those versions.
        if m.encode(&mut first, v).is_err() {
            continue;
        }
        let mut input = first.clone().freeze();
        let decoded = M::decode(&mut input, v)
            .map_err(|e| TestCaseError::fail(format!("{} v{v}: decode of own encoding failed: {e}", M::NAME)))?;
        prop_assert!(input.is_empty(), "{} v{v}: {} bytes left over", M::NAME, input.len());
        let mut second = BytesMut::new();
        decoded
            .encode(&mut second, v)
            .map_err(|e| TestCaseError::fail(format!("{} v{v}: re-encode: {e}", M::NAME)))?;
        prop_assert_eq!(&first, &second, "{} v{}: re-encoding differs", M::NAME, v);
        checked += 1;
    }
    Ok(checked)
}

fn decode_never_panics<M: Message>(data: &[u8]) {
    for v in M::MIN_VERSION..=M::MAX_VERSION {
        let _ = M::decode(&mut Bytes::copy_from_slice(data), v);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn every_message_round_trips_in_every_version(seed in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut checked = 0;
        macro_rules! check { ($t:ident) => { checked += round_trip::<$t>(&seed)?; }; }
        wire::for_each_message!(check);
        let _ = checked;
    }

    #[test]
    fn decoding_random_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        macro_rules! check { ($t:ident) => { decode_never_panics::<$t>(&data); }; }
        wire::for_each_message!(check);
    }
}

/// The round trip must actually exercise versions, not skip them all as encode errors.
#[test]
fn round_trips_cover_most_versions() {
    let seed: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let (mut checked, mut total) = (0usize, 0usize);
    macro_rules! check {
        ($t:ident) => {
            checked += round_trip::<$t>(&seed).expect(stringify!($t));
            total += ($t::MAX_VERSION - $t::MIN_VERSION + 1) as usize;
        };
    }
    wire::for_each_message!(check);
    assert!(
        checked * 2 > total,
        "only {checked} of {total} message versions were exercised"
    );
}

mod differential {
    use super::*;
    include!("support/common_messages.rs");
    use kafka_protocol::protocol::{Decodable as TheirDecode, Encodable as TheirEncode, Message as TheirMessage};

    /// Encodes a random message of ours at every version both codecs support, decodes it with
    /// `kafka-protocol`, re-encodes it there, and compares bytes. Returns the versions compared.
    fn compare<M, T>(seed: &[u8]) -> Result<usize, String>
    where
        M: Message + for<'a> Arbitrary<'a>,
        T: TheirEncode + TheirDecode + TheirMessage,
    {
        let mut u = Unstructured::new(seed);
        let Ok(m) = M::arbitrary(&mut u) else {
            return Ok(0);
        };
        let lo = M::MIN_VERSION.max(T::VERSIONS.min);
        let hi = M::MAX_VERSION.min(T::VERSIONS.max);
        let mut compared = 0;
        for v in lo..=hi {
            let mut ours = BytesMut::new();
            if m.encode(&mut ours, v).is_err() {
                continue;
            }
            let mut input = ours.clone().freeze();
            let theirs = T::decode(&mut input, v)
                .map_err(|e| format!("{} v{v}: kafka-protocol cannot decode ours: {e}", M::NAME))?;
            if !input.is_empty() {
                return Err(format!("{} v{v}: kafka-protocol left {} bytes", M::NAME, input.len()));
            }
            let mut again = BytesMut::new();
            theirs
                .encode(&mut again, v)
                .map_err(|e| format!("{} v{v}: kafka-protocol re-encode: {e}", M::NAME))?;
            if again != ours {
                return Err(format!(
                    "{} v{v}: bytes differ after a trip through kafka-protocol",
                    M::NAME
                ));
            }
            compared += 1;
        }
        Ok(compared)
    }

    #[test]
    fn kafka_protocol_agrees_with_our_encoding() {
        let mut failures = vec![];
        let mut compared = 0;
        for round in 0..24u32 {
            let seed: Vec<u8> = (0..3000u32)
                .map(|i| ((i ^ round).wrapping_mul(2246822519) >> 11) as u8)
                .collect();
            macro_rules! diff {
                ($t:ident) => {
                    match compare::<$t, kafka_protocol::messages::$t>(&seed) {
                        Ok(n) => compared += n,
                        Err(e) => failures.push(e),
                    }
                };
            }
            for_each_common_message!(diff);
        }
        failures.sort();
        failures.dedup();
        assert!(
            failures.is_empty(),
            "{} disagreements:\n{}",
            failures.len(),
            failures.join("\n")
        );
        assert!(compared > 1000, "only {compared} message versions compared");
    }
}

/// VoteRequest v2 (KIP-996, from `xtask/spec-patches.json`): the pre-vote flag travels as the
/// partition's last byte from version 2 on and is absent before.
#[test]
fn vote_request_v2_carries_pre_vote() {
    use wire::codec::{Decode, Encode};
    use wire::messages::vote_request::{PartitionData, TopicData};
    let req = VoteRequest {
        cluster_id: Some("c".into()),
        voter_id: 2,
        topics: vec![TopicData {
            topic_name: "__cluster_metadata".into(),
            partitions: vec![PartitionData {
                candidate_epoch: 5,
                candidate_id: 1,
                last_offset_epoch: 4,
                last_offset: 99,
                pre_vote: true,
                ..Default::default()
            }],
        }],
    };
    let encode = |v: i16| {
        let mut b = BytesMut::new();
        req.encode(&mut b, v).unwrap();
        b.freeze()
    };
    let (v1, v2) = (encode(1), encode(2));
    assert_eq!(v2.len(), v1.len() + 1, "one bool more");
    let back = VoteRequest::decode(&mut v2.clone(), 2).unwrap();
    assert_eq!(back, req);
    let old = VoteRequest::decode(&mut v1.clone(), 1).unwrap();
    assert!(!old.topics[0].partitions[0].pre_vote, "version 1 has no pre-vote");
    let _: Bytes = v1;
}

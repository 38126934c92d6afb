//! The generated record types of `wire::kafka_records` against bytes written by hand from
//! Kafka's record specs (field by field, in spec order), with the framing of each log: the
//! metadata log's varint frame (frame version 1, record type, record version) and the int16
//! version that starts every key and value of `__consumer_offsets`.
//!
//! The expected bytes are built with plain `to_be_bytes`, never with `wire::codec`, so the test
//! does not check the codec against itself.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use wire::kafka_records::group::{
    group_metadata_value::MemberMetadata, GroupMetadataKey, GroupMetadataValue, OffsetCommitKey, OffsetCommitValue,
    RecordKey, RecordValue,
};
use wire::kafka_records::metadata::{
    self,
    partition_record::PartitionRecord,
    register_broker_record::{BrokerEndpoint, BrokerFeature},
    ConfigRecord, FeatureLevelRecord, MetadataRecord, MetadataRecordType, ProducerIdsRecord, RegisterBrokerRecord,
    TopicRecord,
};
use wire::kafka_records::{share, transaction};
use wire::{DecodeError, Uuid};

/// Expected bytes, written out field by field.
#[derive(Default)]
struct G(Vec<u8>);

impl G {
    /// A byte: an int8, a bool, or an unsigned varint below 128.
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn i16(mut self, v: i16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u16(mut self, v: u16) -> Self {
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
    fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    /// A classic string: int16 length, then the bytes.
    fn str16(self, s: &str) -> Self {
        self.i16(s.len() as i16).raw(s.as_bytes())
    }
    /// A compact string of fewer than 127 bytes: one varint byte, length + 1, then the bytes.
    fn cstr(self, s: &str) -> Self {
        assert!(s.len() < 127);
        self.u8(s.len() as u8 + 1).raw(s.as_bytes())
    }
    fn bytes(&self) -> Bytes {
        Bytes::from(self.0.clone())
    }
}

const TOPIC_ID: [u8; 16] = [
    0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x01,
];
const DIR_ID: [u8; 16] = [7; 16];

/// Every strict prefix of `full` fails to decode with `decode`, and none panics.
fn truncations_fail<T: std::fmt::Debug>(full: &Bytes, decode: impl Fn(&mut Bytes) -> Result<T, DecodeError>) {
    for n in 0..full.len() {
        let mut b = full.slice(..n);
        assert!(
            decode(&mut b).is_err(),
            "a {n}-byte prefix of {} bytes decoded",
            full.len()
        );
    }
}

/// Encoding `record` in `version` with the metadata framing gives `expected`; reading it back
/// gives the record, the version and nothing left over; every truncation is an error.
fn check_metadata(record: MetadataRecord, version: i16, expected: G) {
    let expected = expected.bytes();
    let mut out = BytesMut::new();
    record.write(&mut out, version).unwrap();
    assert_eq!(out.as_ref(), expected.as_ref(), "{:?} v{version}", record.record_type());
    let mut b = expected.clone();
    let (back, v) = metadata::read_record(&mut b).unwrap();
    assert_eq!((back, v), (record, version));
    assert!(b.is_empty());
    truncations_fail(&expected, metadata::read_record);
}

#[test]
fn topic_record_v0() {
    let r = TopicRecord {
        name: "foo".into(),
        topic_id: Uuid(TOPIC_ID),
    };
    let expected = G::default()
        .u8(1) // frame version (uvarint)
        .u8(2) // record type: TopicRecord (uvarint)
        .u8(0) // record version (uvarint)
        .cstr("foo") // Name: compact string
        .raw(&TOPIC_ID) // TopicId: uuid
        .u8(0); // no tagged fields
    check_metadata(r.clone().into(), 0, expected);
    // The typed writer frames the same way.
    let mut out = BytesMut::new();
    metadata::write_record(&mut out, &r, 0).unwrap();
    let mut b = out.freeze();
    assert_eq!(
        metadata::read_record(&mut b).unwrap(),
        (MetadataRecord::TopicRecord(r), 0)
    );
}

#[test]
fn partition_record_v2_with_tagged_fields() {
    let r = PartitionRecord {
        partition_id: 1,
        topic_id: Uuid(TOPIC_ID),
        replicas: vec![1, 2],
        isr: vec![1],
        removing_replicas: vec![],
        adding_replicas: vec![],
        leader: 1,
        leader_recovery_state: 1,
        leader_epoch: 5,
        partition_epoch: 7,
        directories: vec![Uuid(DIR_ID)],
        eligible_leader_replicas: Some(vec![2]),
        last_known_elr: None,
    };
    let expected = G::default()
        .u8(1) // frame version
        .u8(3) // record type: PartitionRecord
        .u8(2) // record version 2 (the latest)
        .i32(1) // PartitionId
        .raw(&TOPIC_ID) // TopicId
        .u8(3) // Replicas: compact array of 2
        .i32(1)
        .i32(2)
        .u8(2) // Isr: compact array of 1
        .i32(1)
        .u8(1) // RemovingReplicas: empty
        .u8(1) // AddingReplicas: empty
        .i32(1) // Leader (LeaderRecoveryState is tagged: below)
        .i32(5) // LeaderEpoch
        .i32(7) // PartitionEpoch
        .u8(2) // Directories (v1+): compact array of 1
        .raw(&DIR_ID)
        .u8(2) // tagged fields: 2 (LastKnownElr is null, its default, so absent)
        .u8(0) // tag 0: LeaderRecoveryState
        .u8(1) // size 1
        .u8(1) // int8 1
        .u8(1) // tag 1: EligibleLeaderReplicas
        .u8(5) // size 5
        .u8(2) // compact array of 1
        .i32(2);
    check_metadata(r.into(), 2, expected);
    // Defaults from the spec.
    let d = PartitionRecord::default();
    assert_eq!(
        (d.partition_id, d.leader, d.leader_epoch, d.partition_epoch),
        (-1, -1, -1, -1)
    );
    assert_eq!((d.leader_recovery_state, d.eligible_leader_replicas), (0, None));
}

#[test]
fn config_record_v0() {
    let r = ConfigRecord {
        resource_type: 2,
        resource_name: "t".into(),
        name: "retention.ms".into(),
        value: Some("1000".into()),
    };
    let expected = G::default()
        .u8(1) // frame version
        .u8(4) // record type: ConfigRecord
        .u8(0) // version
        .u8(2) // ResourceType: int8 (2, topic)
        .cstr("t") // ResourceName
        .cstr("retention.ms") // Name
        .cstr("1000") // Value: nullable compact string
        .u8(0); // no tagged fields
    check_metadata(r.clone().into(), 0, expected);
    let deleted = ConfigRecord { value: None, ..r };
    let expected = G::default()
        .u8(1)
        .u8(4)
        .u8(0)
        .u8(2)
        .cstr("t")
        .cstr("retention.ms")
        .u8(0) // Value: null (compact length 0)
        .u8(0);
    check_metadata(deleted.into(), 0, expected);
}

#[test]
fn register_broker_record_v3() {
    let r = RegisterBrokerRecord {
        broker_id: 1,
        is_migrating_zk_broker: false,
        incarnation_id: Uuid(TOPIC_ID),
        broker_epoch: 42,
        end_points: vec![BrokerEndpoint {
            name: "PLAINTEXT".into(),
            host: "h".into(),
            port: 9092,
            security_protocol: 0,
        }],
        features: vec![BrokerFeature {
            name: "metadata.version".into(),
            min_supported_version: 1,
            max_supported_version: 25,
        }],
        rack: None,
        fenced: true,
        in_controlled_shutdown: false,
        log_dirs: vec![Uuid(DIR_ID)],
    };
    let expected = G::default()
        .u8(1) // frame version
        .u8(0) // record type: RegisterBrokerRecord
        .u8(3) // version 3 (the latest)
        .i32(1) // BrokerId
        .u8(0) // IsMigratingZkBroker (v2+): false
        .raw(&TOPIC_ID) // IncarnationId
        .i64(42) // BrokerEpoch
        .u8(2) // EndPoints: compact array of 1
        .cstr("PLAINTEXT") //   Name
        .cstr("h") //   Host
        .u16(9092) //   Port: uint16
        .i16(0) //   SecurityProtocol
        .u8(0) //   no tagged fields
        .u8(2) // Features: compact array of 1
        .cstr("metadata.version") //   Name
        .i16(1) //   MinSupportedVersion
        .i16(25) //   MaxSupportedVersion
        .u8(0) //   no tagged fields
        .u8(0) // Rack: null
        .u8(1) // Fenced: true
        .u8(0) // InControlledShutdown (v1+): false
        .u8(1) // tagged fields: 1
        .u8(0) // tag 0: LogDirs (v3+)
        .u8(17) // size: 1 + 16
        .u8(2) // compact array of 1
        .raw(&DIR_ID);
    check_metadata(r.into(), 3, expected);
    assert!(RegisterBrokerRecord::default().fenced, "Fenced defaults to true");
}

#[test]
fn producer_ids_record_v0() {
    let r = ProducerIdsRecord {
        broker_id: 1,
        broker_epoch: 5,
        next_producer_id: 1000,
    };
    let expected = G::default()
        .u8(1) // frame version
        .u8(15) // record type: ProducerIdsRecord
        .u8(0) // version
        .i32(1) // BrokerId
        .i64(5) // BrokerEpoch
        .i64(1000) // NextProducerId
        .u8(0); // no tagged fields
    check_metadata(r.into(), 0, expected);
    assert_eq!(ProducerIdsRecord::default().broker_epoch, -1);
}

#[test]
fn feature_level_record_v0() {
    let r = FeatureLevelRecord {
        name: "metadata.version".into(),
        feature_level: 22,
        sluice_cluster_id: None,
    };
    let expected = G::default()
        .u8(1) // frame version
        .u8(12) // record type: FeatureLevelRecord
        .u8(0) // version
        .cstr("metadata.version") // Name
        .i16(22) // FeatureLevel
        .u8(0); // no tagged fields
    check_metadata(r.into(), 0, expected);
    // Sluice's cluster id is a tagged field (tag 10000, a uvarint of two bytes), which
    // Kafka's readers skip.
    let r = FeatureLevelRecord {
        name: "metadata.version".into(),
        feature_level: 22,
        sluice_cluster_id: Some("abc".into()),
    };
    let expected = G::default()
        .u8(1) // frame version
        .u8(12) // record type: FeatureLevelRecord
        .u8(0) // version
        .cstr("metadata.version") // Name
        .i16(22) // FeatureLevel
        .u8(1) // one tagged field
        .u8(0x90) // tag 10000 = 0x2710: 0x90 0x4e as a uvarint
        .u8(0x4e)
        .u8(4) // its size: the compact string's length byte and 3 bytes
        .cstr("abc"); // SluiceClusterId
    check_metadata(r.into(), 0, expected);
}

#[test]
fn metadata_framing_refuses_what_kafka_refuses() {
    // Frame version 2.
    let mut b = G::default().u8(2).u8(2).u8(0).cstr("foo").raw(&TOPIC_ID).u8(0).bytes();
    assert!(matches!(
        metadata::read_record(&mut b),
        Err(DecodeError::UnsupportedVersion { version: 2, .. })
    ));
    // Record type 99.
    let mut b = G::default().u8(1).u8(99).u8(0).bytes();
    assert!(matches!(
        metadata::read_record(&mut b),
        Err(DecodeError::UnknownRecordType { record_type: 99, .. })
    ));
    // TopicRecord v1 does not exist.
    let mut b = G::default().u8(1).u8(2).u8(1).cstr("foo").raw(&TOPIC_ID).u8(0).bytes();
    assert!(matches!(
        metadata::read_record(&mut b),
        Err(DecodeError::UnsupportedVersion { version: 1, .. })
    ));
    let mut out = BytesMut::new();
    assert!(MetadataRecord::from(TopicRecord::default()).write(&mut out, 1).is_err());
    assert!(out.is_empty(), "nothing written for a version that does not exist");
    // The type table is the specs' apiKeys.
    assert_eq!(
        MetadataRecordType::from_i16(3),
        Some(MetadataRecordType::PartitionRecord)
    );
    assert_eq!(MetadataRecordType::PartitionRecord.versions(), (0, 2));
    for t in MetadataRecordType::ALL {
        assert_eq!(MetadataRecordType::from_i16(t.id()), Some(*t));
    }
}

/// The key writes to `expected_key` and the value to `expected_value`; both read back.
fn check_coordinator(
    key: RecordKey,
    record_type: i16,
    expected_key: G,
    value: RecordValue,
    version: i16,
    expected_value: G,
) {
    let (ek, ev) = (expected_key.bytes(), expected_value.bytes());
    let mut out = BytesMut::new();
    key.write(&mut out, record_type).unwrap();
    assert_eq!(out.as_ref(), ek.as_ref(), "{key:?}");
    let mut out = BytesMut::new();
    value.write(&mut out, version).unwrap();
    assert_eq!(out.as_ref(), ev.as_ref(), "{value:?} v{version}");
    let mut b = ek.clone();
    assert_eq!(RecordKey::read(&mut b).unwrap(), (record_type, key));
    assert!(b.is_empty());
    let mut b = ev.clone();
    assert_eq!(RecordValue::read(record_type, &mut b).unwrap(), (version, value));
    assert!(b.is_empty());
    truncations_fail(&ek, RecordKey::read);
    truncations_fail(&ev, |b| RecordValue::read(record_type, b));
}

fn offset_key() -> (RecordKey, G) {
    let key = OffsetCommitKey {
        group: "g".into(),
        topic: "t".into(),
        partition: 7,
    };
    let bytes = G::default()
        .i16(1) // record type 1 = key version 1: an offset commit
        .str16("g") // group
        .str16("t") // topic
        .i32(7); // partition
    (key.into(), bytes)
}

#[test]
fn offset_commit_key_v1_value_v3() {
    let (key, key_bytes) = offset_key();
    let value = OffsetCommitValue {
        offset: 42,
        leader_epoch: 3,
        metadata: "meta".into(),
        commit_timestamp: 1_700_000_000_000,
        expire_timestamp: -1,
    };
    let value_bytes = G::default()
        .i16(3) // value version 3
        .i64(42) // offset
        .i32(3) // leaderEpoch (v3+)
        .str16("meta") // metadata
        .i64(1_700_000_000_000); // commitTimestamp (expireTimestamp is v1 only)
    check_coordinator(key, 1, key_bytes, value.into(), 3, value_bytes);
}

#[test]
fn offset_commit_value_v4_is_flexible() {
    let (key, key_bytes) = offset_key();
    let value = OffsetCommitValue {
        offset: 42,
        leader_epoch: 3,
        metadata: "meta".into(),
        commit_timestamp: 1_700_000_000_000,
        expire_timestamp: -1,
    };
    let value_bytes = G::default()
        .i16(4) // value version 4, the first flexible one
        .i64(42) // offset
        .i32(3) // leaderEpoch
        .cstr("meta") // metadata: compact string
        .i64(1_700_000_000_000) // commitTimestamp
        .u8(0); // no tagged fields
    check_coordinator(key, 1, key_bytes, value.into(), 4, value_bytes);
}

#[test]
fn offset_commit_key_v0_and_value_v1_read() {
    // What Kafka before 0.10.1 wrote: key v0 (same fields), value v1 with an expire timestamp.
    let mut key = G::default().i16(0).str16("g").str16("t").i32(7).bytes();
    let (t, k) = RecordKey::read(&mut key).unwrap();
    assert_eq!((t, k), (0, offset_key().0));
    let mut value = G::default()
        .i16(1) // version 1
        .i64(42) // offset
        .str16("") // metadata
        .i64(10) // commitTimestamp
        .i64(20) // expireTimestamp (v1 only)
        .bytes();
    let (v, value) = RecordValue::read(0, &mut value).unwrap();
    let RecordValue::OffsetCommitValue(value) = value else {
        panic!()
    };
    assert_eq!((v, value.leader_epoch, value.expire_timestamp), (1, -1, 20));
}

#[test]
fn group_metadata_key_v2_value_v3_one_member() {
    let key = GroupMetadataKey { group: "g".into() };
    let key_bytes = G::default()
        .i16(2) // record type 2: group metadata
        .str16("g"); // group
    let value = GroupMetadataValue {
        protocol_type: "consumer".into(),
        generation: 5,
        protocol: Some("range".into()),
        leader: Some("m1".into()),
        current_state_timestamp: 9,
        members: vec![MemberMetadata {
            member_id: "m1".into(),
            group_instance_id: Some("i1".into()),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            rebalance_timeout: 300_000,
            session_timeout: 45_000,
            subscription: Bytes::from_static(b"sub"),
            assignment: Bytes::from_static(b"asg"),
        }],
    };
    let value_bytes = G::default()
        .i16(3) // value version 3
        .str16("consumer") // protocolType
        .i32(5) // generation
        .str16("range") // protocol: nullable string
        .str16("m1") // leader: nullable string
        .i64(9) // currentStateTimestamp (v2+)
        .i32(1) // members: array of 1
        .str16("m1") //   memberId
        .str16("i1") //   groupInstanceId (v3+)
        .str16("c") //   clientId
        .str16("/127.0.0.1") //   clientHost
        .i32(300_000) //   rebalanceTimeout (v1+)
        .i32(45_000) //   sessionTimeout
        .i32(3) //   subscription: int32 length
        .raw(b"sub")
        .i32(3) //   assignment
        .raw(b"asg");
    check_coordinator(key.into(), 2, key_bytes, value.into(), 3, value_bytes);
}

#[test]
fn keys_refuse_record_types_they_do_not_have() {
    let mut out = BytesMut::new();
    assert!(RecordKey::from(GroupMetadataKey::default()).write(&mut out, 1).is_err());
    assert!(out.is_empty());
    let mut b = G::default().i16(99).str16("g").bytes();
    assert!(matches!(
        RecordKey::read(&mut b),
        Err(DecodeError::UnknownRecordType { record_type: 99, .. })
    ));
    let mut b = G::default().i16(-1).bytes();
    assert!(RecordKey::read(&mut b).is_err());
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Feeds `data` to every reader: none may panic, and a value claiming more elements than it has
/// bytes fails before allocating (the codec's `capacity_for`).
fn read_everything(data: &[u8]) {
    let all = Bytes::copy_from_slice(data);
    let _ = metadata::read_record(&mut all.clone());
    for t in MetadataRecordType::ALL {
        for v in -1..=4 {
            let _ = MetadataRecord::decode(*t, &mut all.clone(), v);
        }
    }
    let _ = RecordKey::read(&mut all.clone());
    let _ = transaction::RecordKey::read(&mut all.clone());
    let _ = share::RecordKey::read(&mut all.clone());
    for t in -1..=16 {
        let _ = RecordValue::read(t, &mut all.clone());
        let _ = transaction::RecordValue::read(t, &mut all.clone());
        let _ = share::RecordValue::read(t, &mut all.clone());
    }
}

#[test]
fn random_and_mangled_bytes_never_panic() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..2000 {
        let len = (xorshift(&mut seed) % 64) as usize;
        let data: Vec<u8> = (0..len).map(|_| xorshift(&mut seed) as u8).collect();
        read_everything(&data);
    }
    // Valid prefixes with huge lengths and counts after them.
    for prefix in [&[1u8, 3, 2][..], &[1, 0, 3], &[0, 2], &[0, 0], &[0, 3], &[0, 4]] {
        for fill in [0xffu8, 0x7f, 0x80] {
            let mut d = prefix.to_vec();
            d.extend(std::iter::repeat_n(fill, 24));
            read_everything(&d);
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        read_everything(&data);
    }
}

/// Builds a random record of type `M` from `seed` and checks, in every version, that decode
/// reads back exactly what encode wrote and re-encodes it to the same bytes.
fn round_trip<M: wire::Message + for<'a> arbitrary::Arbitrary<'a>>(seed: &[u8]) -> Result<usize, TestCaseError> {
    let mut u = arbitrary::Unstructured::new(seed);
    let Ok(m) = M::arbitrary(&mut u) else {
        return Ok(0);
    };
    let mut checked = 0;
    for v in M::MIN_VERSION..=M::MAX_VERSION {
        let mut first = BytesMut::new();
        // A null where this version has none, or an over-long string: an encode error is right.
        if m.encode(&mut first, v).is_err() {
            continue;
        }
        let mut input = first.clone().freeze();
        let decoded =
            M::decode(&mut input, v).map_err(|e| TestCaseError::fail(format!("{} v{v}: decode: {e}", M::NAME)))?;
        prop_assert!(input.is_empty(), "{} v{v}: {} bytes left over", M::NAME, input.len());
        let mut second = BytesMut::new();
        decoded
            .encode(&mut second, v)
            .map_err(|e| TestCaseError::fail(format!("{} v{v}: {e}", M::NAME)))?;
        prop_assert_eq!(&first, &second, "{} v{}: re-encoding differs", M::NAME, v);
        checked += 1;
    }
    Ok(checked)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn every_record_type_round_trips_in_every_version(seed in proptest::collection::vec(any::<u8>(), 0..2048)) {
        macro_rules! check { ($t:ty) => { round_trip::<$t>(&seed)?; }; }
        wire::for_each_kafka_record!(check);
    }

    #[test]
    fn every_record_type_decodes_random_bytes_without_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        macro_rules! check {
            ($t:ty) => {
                for v in <$t as wire::Message>::MIN_VERSION..=<$t as wire::Message>::MAX_VERSION {
                    let _ = <$t as wire::Decode>::decode(&mut Bytes::copy_from_slice(&data), v);
                }
            };
        }
        wire::for_each_kafka_record!(check);
    }
}

/// The defaults of every record type encode and decode back in every version.
#[test]
fn every_record_type_round_trips_its_default() {
    let mut n = 0;
    macro_rules! check {
        ($t:ty) => {
            for v in <$t as wire::Message>::MIN_VERSION..=<$t as wire::Message>::MAX_VERSION {
                let d = <$t>::default();
                let mut out = BytesMut::new();
                wire::Encode::encode(&d, &mut out, v).unwrap();
                let mut b = out.freeze();
                assert_eq!(<$t as wire::Decode>::decode(&mut b, v).unwrap(), d);
                assert!(b.is_empty());
                n += 1;
            }
        };
    }
    wire::for_each_kafka_record!(check);
    assert!(n >= 79, "only {n} record versions checked");
}

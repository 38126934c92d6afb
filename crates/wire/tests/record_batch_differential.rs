//! Record batches against the `kafka-protocol` crate, an independent implementation:
//! batches we build decode there to the same records, and batches it builds parse here.
//! (Uncompressed only: the dev-dependency is built without its codecs; our codecs are
//! checked against the clients in the compatibility suite.)

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression as TheirCompression, Record as TheirRecord, RecordBatchDecoder, RecordBatchEncoder,
    RecordEncodeOptions, TimestampType,
};
use wire::records::{BatchBuilder, RecordBatch};
use wire::Compression;

fn samples() -> Vec<(i64, Option<Vec<u8>>, Option<Vec<u8>>, Vec<(String, Option<Vec<u8>>)>)> {
    vec![
        (
            1_700_000_000_000,
            Some(b"key".to_vec()),
            Some(b"value".to_vec()),
            vec![("a".into(), Some(b"1".to_vec()))],
        ),
        (1_700_000_000_005, None, Some(vec![9u8; 1000]), vec![]),
        (
            1_699_999_999_000,
            Some(vec![]),
            None,
            vec![("n".into(), None), ("m".into(), Some(vec![]))],
        ),
    ]
}

#[test]
fn our_batches_decode_in_kafka_protocol() {
    let mut b = BatchBuilder::new(Compression::None).producer(7, 2, 40, false);
    for (ts, k, v, h) in samples() {
        let headers: Vec<(&[u8], Option<&[u8]>)> = h.iter().map(|(k, v)| (k.as_bytes(), v.as_deref())).collect();
        b.push(ts, k.as_deref(), v.as_deref(), &headers);
    }
    let mut data = b.build();
    let set = RecordBatchDecoder::decode(&mut data).expect("kafka-protocol decodes our batch");
    assert_eq!(set.records.len(), 3);
    for (i, (r, (ts, k, v, h))) in set.records.iter().zip(samples()).enumerate() {
        assert_eq!(r.offset, i as i64);
        assert_eq!(r.timestamp, ts);
        assert_eq!(r.key.as_deref(), k.as_deref());
        assert_eq!(r.value.as_deref(), v.as_deref());
        assert_eq!((r.producer_id, r.producer_epoch, r.sequence), (7, 2, 40 + i as i32));
        let theirs: Vec<(String, Option<Vec<u8>>)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_ref().map(|b| b.to_vec())))
            .collect();
        assert_eq!(theirs, h);
    }
}

#[test]
fn kafka_protocol_batches_parse_here() {
    let records: Vec<TheirRecord> = samples()
        .into_iter()
        .enumerate()
        .map(|(i, (ts, k, v, h))| TheirRecord {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: ts,
            key: k.map(Bytes::from),
            value: v.map(Bytes::from),
            headers: h
                .into_iter()
                .map(|(k, v)| (StrBytes::from_string(k), v.map(Bytes::from)))
                .collect::<IndexMap<_, _>>(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: TheirCompression::None,
        },
    )
    .expect("kafka-protocol encodes");
    let batches: Vec<RecordBatch> = RecordBatch::iter_all(buf.freeze()).collect::<Result<_, _>>().unwrap();
    // kafka-protocol may split the records over several batches; read them all.
    let mut ours = vec![];
    for batch in &batches {
        batch.verify_crc().expect("CRC-32C agrees");
        ours.extend(batch.records(1 << 20).unwrap().collect::<Result<Vec<_>, _>>().unwrap());
    }
    assert_eq!(ours.len(), 3);
    for (mine, (ts, k, v, h)) in ours.iter().zip(samples()) {
        assert_eq!(mine.timestamp, ts);
        assert_eq!(mine.key.as_deref(), k.as_deref());
        assert_eq!(mine.value.as_deref(), v.as_deref());
        let hs: Vec<(String, Option<Vec<u8>>)> = mine
            .headers
            .iter()
            .map(|x| {
                (
                    String::from_utf8(x.key.to_vec()).unwrap(),
                    x.value.as_ref().map(|b| b.to_vec()),
                )
            })
            .collect();
        assert_eq!(hs, h);
    }
}

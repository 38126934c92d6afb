//! Record batches (message format v2): a zero-copy view of a batch and its 61-byte header,
//! CRC-32C verification, iteration over records, and a builder for clients and tests.
//!
//! Layout of the header (big-endian):
//!
//! | offset | field                  | type  |
//! |-------:|------------------------|-------|
//! |      0 | base offset            | int64 |
//! |      8 | batch length           | int32 | (bytes after this field)
//! |     12 | partition leader epoch | int32 |
//! |     16 | magic (2)              | int8  |
//! |     17 | crc (CRC-32C)          | uint32| covers bytes 21.. to the end of the batch
//! |     21 | attributes             | int16 |
//! |     23 | last offset delta      | int32 |
//! |     27 | base timestamp         | int64 |
//! |     35 | max timestamp          | int64 |
//! |     43 | producer id            | int64 |
//! |     51 | producer epoch         | int16 |
//! |     53 | base sequence          | int32 |
//! |     57 | record count           | int32 |
//!
//! Base offset, batch length and leader epoch sit outside the CRC, so a broker stamps them
//! without re-encoding anything.

use crate::codec::{self, DecodeError};
use crate::compression::{self, Compression, CompressionError};
use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const HEADER_BYTES: usize = 61;
/// The bytes before the batch length field ends: base offset and the length itself.
pub const LOG_OVERHEAD: usize = 12;
pub const CRC_START: usize = 21;

pub const ATTR_COMPRESSION_MASK: i16 = 0x07;
pub const ATTR_LOG_APPEND_TIME: i16 = 0x08;
pub const ATTR_TRANSACTIONAL: i16 = 0x10;
pub const ATTR_CONTROL: i16 = 0x20;
pub const ATTR_DELETE_HORIZON: i16 = 0x40;

pub const NO_PRODUCER_ID: i64 = -1;
pub const NO_PRODUCER_EPOCH: i16 = -1;
pub const NO_SEQUENCE: i32 = -1;
/// A record or batch timestamp that is not set.
pub const NO_TIMESTAMP: i64 = -1;

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("batch is truncated: {0}")]
    Truncated(&'static str),
    #[error("unsupported magic {0} (only record batch v2 is supported)")]
    UnsupportedMagic(i8),
    #[error("batch length {0} is invalid")]
    InvalidLength(i32),
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    #[error(transparent)]
    Compression(#[from] CompressionError),
}

impl From<DecodeError> for BatchError {
    fn from(e: DecodeError) -> Self {
        BatchError::InvalidRecord(e.to_string())
    }
}

/// What [`RecordBatch::validate`] found in a batch's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSummary {
    pub records: i32,
    /// The smallest record timestamp other than -1 (none), `i64::MAX` if every record has -1,
    /// and the largest record timestamp, as the producer set them.
    pub min_timestamp: i64,
    pub max_timestamp: i64,
}

/// One record batch, as a zero-copy slice of the bytes it came in.
#[derive(Clone, PartialEq, Eq)]
pub struct RecordBatch {
    raw: Bytes,
}

impl std::fmt::Debug for RecordBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordBatch")
            .field("base_offset", &self.base_offset())
            .field("last_offset_delta", &self.last_offset_delta())
            .field("records", &self.record_count())
            .field("bytes", &self.raw.len())
            .field("compression", &Compression::from_attributes(self.attributes()).ok())
            .finish()
    }
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

impl RecordBatch {
    /// Splits the next batch off `buf`. The header's length and magic are checked; the CRC is
    /// not (call [`RecordBatch::verify_crc`]).
    pub fn parse(buf: &mut Bytes) -> Result<RecordBatch, BatchError> {
        if buf.len() < LOG_OVERHEAD {
            return Err(BatchError::Truncated("shorter than the batch length field"));
        }
        let len = be_i32(buf, 8);
        if len < (HEADER_BYTES - LOG_OVERHEAD) as i32 {
            return Err(BatchError::InvalidLength(len));
        }
        let total = LOG_OVERHEAD + len as usize;
        if buf.len() < total {
            return Err(BatchError::Truncated("shorter than its batch length"));
        }
        let magic = buf[16] as i8;
        if magic != 2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        Ok(RecordBatch {
            raw: buf.split_to(total),
        })
    }

    /// Every batch in `data`, in order. A trailing partial batch (which a fetch response may
    /// legally end with) is reported as [`BatchError::Truncated`].
    pub fn iter_all(data: Bytes) -> impl Iterator<Item = Result<RecordBatch, BatchError>> {
        let mut rest = data;
        let mut failed = false;
        std::iter::from_fn(move || {
            if failed || rest.is_empty() {
                return None;
            }
            let r = RecordBatch::parse(&mut rest);
            failed = r.is_err();
            Some(r)
        })
    }

    pub fn as_bytes(&self) -> &Bytes {
        &self.raw
    }

    pub fn into_bytes(self) -> Bytes {
        self.raw
    }

    pub fn size_bytes(&self) -> usize {
        self.raw.len()
    }

    pub fn base_offset(&self) -> i64 {
        be_i64(&self.raw, 0)
    }
    pub fn batch_length(&self) -> i32 {
        be_i32(&self.raw, 8)
    }
    pub fn partition_leader_epoch(&self) -> i32 {
        be_i32(&self.raw, 12)
    }
    pub fn magic(&self) -> i8 {
        self.raw[16] as i8
    }
    pub fn crc(&self) -> u32 {
        be_i32(&self.raw, 17) as u32
    }
    pub fn attributes(&self) -> i16 {
        be_i16(&self.raw, 21)
    }
    pub fn last_offset_delta(&self) -> i32 {
        be_i32(&self.raw, 23)
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset().wrapping_add(i64::from(self.last_offset_delta()))
    }
    pub fn base_timestamp(&self) -> i64 {
        be_i64(&self.raw, 27)
    }
    pub fn max_timestamp(&self) -> i64 {
        be_i64(&self.raw, 35)
    }
    pub fn producer_id(&self) -> i64 {
        be_i64(&self.raw, 43)
    }
    pub fn producer_epoch(&self) -> i16 {
        be_i16(&self.raw, 51)
    }
    pub fn base_sequence(&self) -> i32 {
        be_i32(&self.raw, 53)
    }
    pub fn record_count(&self) -> i32 {
        be_i32(&self.raw, 57)
    }
    pub fn compression(&self) -> Result<Compression, CompressionError> {
        Compression::from_attributes(self.attributes())
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes() & ATTR_TRANSACTIONAL != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes() & ATTR_CONTROL != 0
    }
    pub fn is_log_append_time(&self) -> bool {
        self.attributes() & ATTR_LOG_APPEND_TIME != 0
    }

    pub fn computed_crc(&self) -> u32 {
        crc32c::crc32c(&self.raw[CRC_START..])
    }

    pub fn verify_crc(&self) -> Result<(), BatchError> {
        let (stored, computed) = (self.crc(), self.computed_crc());
        if stored != computed {
            return Err(BatchError::CrcMismatch { stored, computed });
        }
        Ok(())
    }

    /// Checks everything a broker must before it accepts a batch: the CRC, that the records
    /// parse, that their offset deltas run 0, 1, … and end at the header's last offset delta,
    /// and that nothing follows the last record. Returns what the broker checks next.
    pub fn validate(&self, max_bytes: usize) -> Result<BatchSummary, BatchError> {
        self.verify_crc()?;
        let mut summary = BatchSummary {
            records: 0,
            min_timestamp: i64::MAX,
            max_timestamp: i64::MIN,
        };
        for record in self.records(max_bytes)? {
            let record = record?;
            let n = summary.records;
            let delta = record.offset.wrapping_sub(self.base_offset());
            if delta != i64::from(n) {
                return Err(BatchError::InvalidRecord(format!(
                    "record {n} has offset delta {delta}"
                )));
            }
            if record.timestamp != NO_TIMESTAMP {
                summary.min_timestamp = summary.min_timestamp.min(record.timestamp);
            }
            summary.max_timestamp = summary.max_timestamp.max(record.timestamp);
            summary.records += 1;
        }
        if summary.records == 0 || self.last_offset_delta() != summary.records - 1 {
            return Err(BatchError::InvalidRecord(format!(
                "{} records but last offset delta {}",
                summary.records,
                self.last_offset_delta()
            )));
        }
        Ok(summary)
    }

    /// The same batch with its records compressed by `codec` instead (a topic whose
    /// `compression.type` is not `producer`). Every header field but the compression bits,
    /// length and CRC is kept; the records' bytes do not depend on the codec, so they are
    /// moved across unchanged. Decompresses at most `max_bytes`.
    pub fn with_compression(&self, codec: Compression, max_bytes: usize) -> Result<RecordBatch, BatchError> {
        let records = self.records_bytes(max_bytes)?;
        let payload = match codec {
            Compression::None => records.to_vec(),
            c => compression::compress(c, &records),
        };
        let length = i32::try_from(HEADER_BYTES - LOG_OVERHEAD + payload.len())
            .map_err(|_| BatchError::InvalidRecord("recompressed batch exceeds 2 GiB".into()))?;
        let mut b = BytesMut::with_capacity(HEADER_BYTES + payload.len());
        b.put_slice(&self.raw[..HEADER_BYTES]);
        b[8..12].copy_from_slice(&length.to_be_bytes());
        let attributes = (self.attributes() & !ATTR_COMPRESSION_MASK) | codec as i16;
        b[21..23].copy_from_slice(&attributes.to_be_bytes());
        b.put_slice(&payload);
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        Ok(RecordBatch { raw: b.freeze() })
    }

    /// The bytes of the records, decompressed (at most `max_bytes` of them) if need be: a
    /// slice of the batch when it is not compressed.
    fn records_bytes(&self, max_bytes: usize) -> Result<Bytes, BatchError> {
        let body = self.raw.slice(HEADER_BYTES..);
        Ok(match self.compression()? {
            Compression::None => body,
            c => compression::decompress(c, &body, max_bytes)?,
        })
    }

    /// The records of this batch, decompressed (at most `max_bytes` of them) if need be.
    pub fn records(&self, max_bytes: usize) -> Result<Records, BatchError> {
        let data = self.records_bytes(max_bytes)?;
        let count = self.record_count();
        if count < 0 {
            return Err(BatchError::InvalidRecord(format!("negative record count {count}")));
        }
        Ok(Records {
            data,
            remaining: count as usize,
            base_offset: self.base_offset(),
            base_timestamp: self.base_timestamp(),
        })
    }
}

/// Writes the fields a broker stamps, which lie outside the CRC: base offset and leader epoch.
/// `batch` must start with a batch header (callers hold a parsed [`RecordBatch`]'s bytes).
pub fn stamp(batch: &mut [u8], base_offset: i64, partition_leader_epoch: i32) {
    assert!(batch.len() >= HEADER_BYTES, "stamp needs a whole batch header");
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
    batch[12..16].copy_from_slice(&partition_leader_epoch.to_be_bytes());
}

/// Sets the max timestamp and the log-append-time attribute, and recomputes the CRC (both lie
/// inside it). Used when a topic stamps `LogAppendTime`.
pub fn stamp_log_append_time(batch: &mut [u8], timestamp: i64) {
    assert!(batch.len() >= HEADER_BYTES, "stamp needs a whole batch header");
    let attributes = be_i16(batch, 21) | ATTR_LOG_APPEND_TIME;
    batch[21..23].copy_from_slice(&attributes.to_be_bytes());
    batch[35..43].copy_from_slice(&timestamp.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Sets the batch's max timestamp field (a producer's header disagreed with its records) and
/// recomputes the CRC.
pub fn set_max_timestamp(batch: &mut [u8], timestamp: i64) {
    assert!(
        batch.len() >= HEADER_BYTES,
        "set_max_timestamp needs a whole batch header"
    );
    batch[35..43].copy_from_slice(&timestamp.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// A record header: a key and an optional value. Duplicate keys are kept, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: Bytes,
    pub value: Option<Bytes>,
}

/// One record, with its absolute offset and timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

/// Iterator over the records of a batch.
pub struct Records {
    data: Bytes,
    remaining: usize,
    base_offset: i64,
    base_timestamp: i64,
}

/// A length-prefixed byte string of a record: -1 is null, and any other negative length is
/// refused. Kafka's decoder takes every negative length as null, but its consumers do not
/// (librdkafka stops at such a record for good), so one stored would poison the partition.
fn varbytes(buf: &mut Bytes) -> Result<Option<Bytes>, BatchError> {
    let len = codec::get_varint(buf)?;
    match len {
        -1 => Ok(None),
        len if len < 0 => Err(BatchError::InvalidRecord(format!(
            "length {len}: a key, value or header length must be -1 (null) or at least 0"
        ))),
        len => Ok(Some(codec::take(buf, len as usize)?)),
    }
}

impl Records {
    fn next_record(&mut self) -> Result<Record, BatchError> {
        let len = codec::get_varint(&mut self.data)?;
        if len < 0 {
            return Err(BatchError::InvalidRecord(format!("negative record length {len}")));
        }
        let mut r = codec::take(&mut self.data, len as usize)?;
        let _attributes = codec::get_i8(&mut r)?;
        let timestamp_delta = codec::get_varlong(&mut r)?;
        let offset_delta = codec::get_varint(&mut r)?;
        let key = varbytes(&mut r)?;
        let value = varbytes(&mut r)?;
        let header_count = codec::get_varint(&mut r)?;
        if header_count < 0 || header_count as usize > r.remaining() {
            return Err(BatchError::InvalidRecord(format!(
                "invalid header count {header_count}"
            )));
        }
        let mut headers = Vec::with_capacity(codec::capacity_for::<Header>(header_count as usize, &r));
        for _ in 0..header_count {
            let key = varbytes(&mut r)?.ok_or_else(|| BatchError::InvalidRecord("null header key".into()))?;
            let value = varbytes(&mut r)?;
            headers.push(Header { key, value });
        }
        if !r.is_empty() {
            return Err(BatchError::InvalidRecord(format!(
                "{} bytes left inside a record",
                r.len()
            )));
        }
        Ok(Record {
            offset: self.base_offset.wrapping_add(i64::from(offset_delta)),
            timestamp: self.base_timestamp.wrapping_add(timestamp_delta),
            key,
            value,
            headers,
        })
    }
}

impl Iterator for Records {
    type Item = Result<Record, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            if !self.data.is_empty() {
                // Bytes beyond the records the header counts: the batch is corrupt.
                let n = self.data.len();
                self.data.clear();
                return Some(Err(BatchError::InvalidRecord(format!(
                    "{n} bytes after the last record"
                ))));
            }
            return None;
        }
        self.remaining -= 1;
        let r = self.next_record();
        if r.is_err() {
            self.remaining = 0;
        }
        Some(r)
    }
}

/// Builds one record batch. Offsets start at 0 (the broker assigns real ones).
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    compression: Compression,
    attributes: i16,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    base_timestamp: Option<i64>,
    max_timestamp: i64,
    count: i32,
    body: BytesMut,
}

impl BatchBuilder {
    pub fn new(compression: Compression) -> BatchBuilder {
        BatchBuilder {
            compression,
            attributes: compression as i16,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            base_timestamp: None,
            max_timestamp: -1,
            count: 0,
            body: BytesMut::new(),
        }
    }

    /// Makes the batch idempotent (and transactional if `transactional`).
    pub fn producer(mut self, id: i64, epoch: i16, base_sequence: i32, transactional: bool) -> Self {
        self.producer_id = id;
        self.producer_epoch = epoch;
        self.base_sequence = base_sequence;
        if transactional {
            self.attributes |= ATTR_TRANSACTIONAL;
        }
        self
    }

    pub fn control(mut self) -> Self {
        self.attributes |= ATTR_CONTROL;
        self
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of records so far, before compression.
    pub fn body_bytes(&self) -> usize {
        self.body.len()
    }

    pub fn push(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) {
        let base = *self.base_timestamp.get_or_insert(timestamp);
        self.max_timestamp = self.max_timestamp.max(timestamp);
        let mut r = BytesMut::new();
        r.put_i8(0);
        codec::put_varlong(&mut r, timestamp.wrapping_sub(base));
        codec::put_varint(&mut r, self.count);
        let put_varbytes = |r: &mut BytesMut, b: Option<&[u8]>| match b {
            None => codec::put_varint(r, -1),
            Some(b) => {
                codec::put_varint(r, b.len() as i32);
                r.put_slice(b);
            }
        };
        put_varbytes(&mut r, key);
        put_varbytes(&mut r, value);
        codec::put_varint(&mut r, headers.len() as i32);
        for (k, v) in headers {
            put_varbytes(&mut r, Some(k));
            put_varbytes(&mut r, *v);
        }
        codec::put_varint(&mut self.body, r.len() as i32);
        self.body.put_slice(&r);
        self.count += 1;
    }

    pub fn build(self) -> Bytes {
        let payload = match self.compression {
            Compression::None => self.body.to_vec(),
            c => compression::compress(c, &self.body),
        };
        let mut b = BytesMut::with_capacity(HEADER_BYTES + payload.len());
        b.put_i64(0);
        b.put_i32((HEADER_BYTES - LOG_OVERHEAD + payload.len()) as i32);
        b.put_i32(-1);
        b.put_i8(2);
        b.put_u32(0); // CRC, filled below
        b.put_i16(self.attributes);
        b.put_i32((self.count - 1).max(0));
        let base_ts = self.base_timestamp.unwrap_or(-1);
        b.put_i64(base_ts);
        b.put_i64(if self.count == 0 { -1 } else { self.max_timestamp });
        b.put_i64(self.producer_id);
        b.put_i16(self.producer_epoch);
        b.put_i32(self.base_sequence);
        b.put_i32(self.count);
        b.put_slice(&payload);
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(c: Compression) -> Bytes {
        let mut b = BatchBuilder::new(c);
        b.push(
            1000,
            Some(b"k1"),
            Some(b"v1"),
            &[(b"h", Some(b"1")), (b"h", Some(b"2"))],
        );
        b.push(1005, None, None, &[]);
        b.push(999, Some(b""), Some(&[7u8; 3000]), &[(b"n", None)]);
        b.build()
    }

    /// One uncompressed batch whose single record has `key_len` as its key length varint.
    fn batch_with_key_length(key_len: i32) -> Bytes {
        let mut b = BatchBuilder::new(Compression::None);
        b.push(1000, None, Some(b"v"), &[]);
        let mut raw = BytesMut::from(&b.build()[..]);
        // The record: length, attributes, timestamp delta, offset delta, then the key length
        // (-1, one zigzag byte 0x01) at a fixed place after the header.
        let at = HEADER_BYTES + 4;
        assert_eq!(raw[at], 0x01, "the null key's length");
        let mut zigzag = BytesMut::new();
        codec::put_varint(&mut zigzag, key_len);
        assert_eq!(zigzag.len(), 1, "a one-byte length keeps the record's size");
        raw[at] = zigzag[0];
        let crc = crc32c::crc32c(&raw[CRC_START..]);
        raw[17..21].copy_from_slice(&crc.to_be_bytes());
        raw.freeze()
    }

    #[test]
    fn lengths_below_minus_one_are_refused() {
        let ok = RecordBatch::parse(&mut batch_with_key_length(-1)).unwrap();
        ok.validate(1 << 20).unwrap();
        for bad in [-2, -64] {
            let batch = RecordBatch::parse(&mut batch_with_key_length(bad)).unwrap();
            match batch.validate(1 << 20) {
                Err(BatchError::InvalidRecord(why)) => assert!(why.contains(&format!("length {bad}")), "{why}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn validation_reports_timestamps_and_a_fixed_max_timestamp_keeps_the_crc_valid() {
        let mut b = BatchBuilder::new(Compression::Lz4);
        b.push(1_000, None, Some(b"a"), &[]);
        b.push(NO_TIMESTAMP, None, Some(b"b"), &[]);
        b.push(900, None, Some(b"c"), &[]);
        let batch = RecordBatch::parse(&mut b.build()).unwrap();
        let summary = batch.validate(1 << 20).unwrap();
        assert_eq!(
            (summary.records, summary.min_timestamp, summary.max_timestamp),
            (3, 900, 1_000)
        );
        let mut raw = BytesMut::from(&batch.as_bytes()[..]);
        set_max_timestamp(&mut raw, 5_000);
        let fixed = RecordBatch::parse(&mut raw.freeze()).unwrap();
        fixed.verify_crc().unwrap();
        assert_eq!(fixed.max_timestamp(), 5_000);
    }

    #[test]
    fn recompression_keeps_every_record_and_header_field() {
        let codecs = [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ];
        for from in codecs {
            let mut b = BatchBuilder::new(from).producer(77, 3, 41, false);
            b.push(1000, Some(b"k"), Some(&[9u8; 500]), &[(b"h", Some(b"1"))]);
            b.push(1002, None, None, &[]);
            let mut raw = BytesMut::from(&b.build()[..]);
            stamp_log_append_time(&mut raw, 5000);
            let original = RecordBatch::parse(&mut raw.freeze()).unwrap();
            let want: Vec<Record> = original.records(1 << 20).unwrap().map(|r| r.unwrap()).collect();
            for to in codecs {
                let converted = original.with_compression(to, 1 << 20).unwrap();
                converted.validate(1 << 20).unwrap();
                assert_eq!(converted.compression().unwrap(), to);
                let got: Vec<Record> = converted.records(1 << 20).unwrap().map(|r| r.unwrap()).collect();
                assert_eq!(got, want, "{from:?} -> {to:?}");
                assert_eq!(converted.as_bytes()[..8], original.as_bytes()[..8], "base offset kept");
                assert_eq!(
                    converted.as_bytes()[12..17],
                    original.as_bytes()[12..17],
                    "epoch, magic kept"
                );
                assert_eq!(
                    converted.as_bytes()[23..61],
                    original.as_bytes()[23..61],
                    "fields after attributes kept"
                );
                assert!(converted.is_log_append_time());
                assert_eq!(converted.batch_length() as usize + LOG_OVERHEAD, converted.size_bytes());
            }
        }
    }

    #[test]
    fn built_batches_parse_and_iterate_with_every_codec() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut data = sample(c);
            let batch = RecordBatch::parse(&mut data).unwrap();
            assert!(data.is_empty());
            batch.verify_crc().unwrap();
            assert_eq!(batch.record_count(), 3);
            assert_eq!(batch.last_offset_delta(), 2);
            assert_eq!(batch.max_timestamp(), 1005);
            assert_eq!(batch.compression().unwrap(), c);
            let records: Vec<Record> = batch.records(1 << 20).unwrap().collect::<Result<_, _>>().unwrap();
            assert_eq!(records.len(), 3);
            assert_eq!(records[0].key.as_deref(), Some(&b"k1"[..]));
            assert_eq!(records[0].headers.len(), 2, "duplicate header keys are kept");
            assert_eq!(records[0].headers[1].value.as_deref(), Some(&b"2"[..]));
            assert_eq!(records[1].key, None);
            assert_eq!(records[1].value, None);
            assert_eq!(records[1].timestamp, 1005);
            assert_eq!(records[2].offset, 2);
            assert_eq!(records[2].timestamp, 999);
            assert_eq!(records[2].headers[0].value, None);
        }
    }

    #[test]
    fn validation_checks_counts_and_deltas() {
        let mut data = sample(Compression::Lz4);
        let batch = RecordBatch::parse(&mut data).unwrap();
        assert_eq!(batch.validate(1 << 20).unwrap().records, 3);
        // A header that claims fewer records than the body holds.
        let mut raw = BytesMut::from(&sample(Compression::None)[..]);
        raw[57..61].copy_from_slice(&2i32.to_be_bytes());
        raw[23..27].copy_from_slice(&1i32.to_be_bytes());
        let crc = crc32c::crc32c(&raw[CRC_START..]);
        raw[17..21].copy_from_slice(&crc.to_be_bytes());
        let batch = RecordBatch::parse(&mut raw.freeze()).unwrap();
        assert!(batch.validate(1 << 20).is_err());
        // An empty batch is not a valid produce.
        let empty = RecordBatch::parse(&mut BatchBuilder::new(Compression::None).build()).unwrap();
        assert!(empty.validate(1 << 20).is_err());
    }

    #[test]
    fn stamping_keeps_the_crc_valid() {
        let mut raw = BytesMut::from(&sample(Compression::None)[..]);
        stamp(&mut raw, 42, 7);
        let batch = RecordBatch::parse(&mut raw.clone().freeze()).unwrap();
        assert_eq!(batch.base_offset(), 42);
        assert_eq!(batch.partition_leader_epoch(), 7);
        batch.verify_crc().unwrap();
        let records: Vec<Record> = batch.records(1 << 20).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(records[2].offset, 44);
        stamp_log_append_time(&mut raw, 5555);
        let batch = RecordBatch::parse(&mut raw.freeze()).unwrap();
        assert!(batch.is_log_append_time());
        assert_eq!(batch.max_timestamp(), 5555);
        batch.verify_crc().unwrap();
    }

    #[test]
    fn a_flipped_bit_fails_the_crc() {
        let mut raw = BytesMut::from(&sample(Compression::None)[..]);
        let n = raw.len();
        raw[n - 5] ^= 0x10;
        let batch = RecordBatch::parse(&mut raw.freeze()).unwrap();
        assert!(matches!(batch.verify_crc(), Err(BatchError::CrcMismatch { .. })));
    }

    #[test]
    fn truncated_and_foreign_input_is_an_error() {
        let full = sample(Compression::None);
        for cut in [0, 5, 12, 60, full.len() - 1] {
            assert!(RecordBatch::parse(&mut full.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut v1 = BytesMut::from(&full[..]);
        v1[16] = 1;
        assert!(matches!(
            RecordBatch::parse(&mut v1.freeze()),
            Err(BatchError::UnsupportedMagic(1))
        ));
        let all: Vec<_> = RecordBatch::iter_all(full.slice(..full.len() - 3)).collect();
        assert_eq!(all.len(), 1);
        assert!(all[0].is_err());
    }
}

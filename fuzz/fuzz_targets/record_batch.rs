//! Fuzzes the record batch parser: header view, CRC, decompression (bounded) and records.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use wire::records::RecordBatch;

fuzz_target!(|data: &[u8]| {
    for batch in RecordBatch::iter_all(Bytes::copy_from_slice(data)) {
        let Ok(batch) = batch else { break };
        let _ = batch.verify_crc();
        let _ = batch.validate(1 << 20);
        let _ = (batch.last_offset(), batch.max_timestamp(), batch.is_control());
        if let Ok(records) = batch.records(1 << 20) {
            for r in records {
                if r.is_err() {
                    break;
                }
            }
        }
    }
});

//! Helpers shared by the storage integration tests.

use storage::{Log, StorageError};
use wire::records::RecordBatch;

/// Every record from `offset` on, read `max_bytes` at a time: (offset, value). Batches must be
/// whole and their CRCs good.
pub fn read_records(log: &Log, mut offset: i64, max_bytes: usize) -> Result<Vec<(i64, String)>, StorageError> {
    let mut out = vec![];
    loop {
        let data = log.read(offset, max_bytes)?;
        if data.is_empty() {
            return Ok(out);
        }
        for b in RecordBatch::iter_all(data) {
            let b = b.expect("whole batches");
            b.verify_crc().expect("crc");
            for r in b.records(1 << 20).expect("records") {
                let r = r.expect("record");
                if r.offset >= offset {
                    let value = r.value.expect("a value").to_vec();
                    out.push((r.offset, String::from_utf8(value).expect("utf-8")));
                }
            }
            offset = b.last_offset() + 1;
        }
    }
}

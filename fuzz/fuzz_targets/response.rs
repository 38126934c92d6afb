//! Fuzzes response decoding (what a client does with a broker's bytes): the first two bytes
//! pick the api key, the next two the version.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use wire::messages::{ApiKey, ResponseBody};

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let keys = ApiKey::ALL;
    let key = keys[usize::from(u16::from_be_bytes([data[0], data[1]])) % keys.len()];
    let version = i16::from_be_bytes([data[2], data[3]]) & 0x1f;
    let mut body = Bytes::copy_from_slice(&data[4..]);
    let _ = ResponseBody::decode(key, &mut body, version);
});

//! Fuzzes what a broker does with a request frame's bytes: the header, then the body of
//! whatever api key and version the header names.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use wire::messages::{ApiKey, RequestBody};

fuzz_target!(|data: &[u8]| {
    let mut frame = Bytes::copy_from_slice(data);
    let Ok(header) = wire::frame::decode_request_header(&mut frame) else { return };
    if let Some(key) = ApiKey::from_i16(header.request_api_key) {
        if let Ok(body) = RequestBody::decode(key, &mut frame, header.request_api_version) {
            // Whatever decodes must encode again in the same version.
            let mut out = bytes::BytesMut::new();
            let _ = body.encode(&mut out, header.request_api_version);
        }
    }
});

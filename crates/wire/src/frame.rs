//! Request and response framing helpers: the header that precedes every request body, and
//! size-prefixed responses. Reading frames off a socket is the broker's job; this is pure.

use crate::codec::{DecodeError, Encode, EncodeError};
use crate::messages::{ApiKey, RequestHeader, ResponseHeader};
use bytes::{BufMut, Bytes, BytesMut};

/// The request header version to read for `api_key`/`version`, known or not.
///
/// An ApiVersions request newer than we know is still read with the flexible header (v2), as
/// Kafka does, so that we can answer it with our version ranges. Any other unknown key or
/// version gets header v1 (the request is refused after the header is read).
pub fn request_header_version(api_key: i16, version: i16) -> i16 {
    match ApiKey::from_i16(api_key) {
        Some(ApiKey::ApiVersions) if version > ApiKey::ApiVersions.versions().1 => 2,
        Some(k) if version <= k.versions().1 && version >= 0 => k.request_header_version(version),
        _ => 1,
    }
}

/// Reads the request header off the front of `frame`, leaving the body.
pub fn decode_request_header(frame: &mut Bytes) -> Result<RequestHeader, DecodeError> {
    if frame.len() < 4 {
        return Err(DecodeError::ShortBuffer {
            needed: 4,
            remaining: frame.len(),
        });
    }
    let api_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    crate::Decode::decode(frame, request_header_version(api_key, version))
}

/// Appends a whole response frame: size prefix, response header, body.
pub fn encode_response<B: Encode>(
    out: &mut BytesMut,
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    body: &B,
) -> Result<(), EncodeError> {
    let header_version = api_key.response_header_version(version);
    encode_frame(out, |buf| {
        ResponseHeader { correlation_id }.encode(buf, header_version)?;
        body.encode(buf, version)
    })
}

/// A whole response frame as chunks to write in order. Large records fields (a fetch's data)
/// are not copied into the encoded bytes: their `Bytes` come back as chunks of their own
/// (see [`crate::codec::splicing`]), and the size prefix counts them.
pub fn encode_response_chunks<B: Encode>(
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    body: &B,
) -> Result<Vec<Bytes>, EncodeError> {
    let header_version = api_key.response_header_version(version);
    let mut out = BytesMut::new();
    out.put_i32(0);
    let target: *const BytesMut = &out;
    let (result, taken) = crate::codec::splicing(target, || {
        ResponseHeader { correlation_id }.encode(&mut out, header_version)?;
        body.encode(&mut out, version)
    });
    result?;
    let len = out.len() - 4 + taken.iter().map(|(_, b)| b.len()).sum::<usize>();
    let len = i32::try_from(len).map_err(|_| EncodeError::TooLong { what: "frame", len })?;
    out[..4].copy_from_slice(&len.to_be_bytes());
    let encoded = out.freeze();
    let mut chunks = Vec::with_capacity(2 * taken.len() + 1);
    let mut at = 0;
    for (position, data) in taken {
        if position > at {
            chunks.push(encoded.slice(at..position));
        }
        chunks.push(data);
        at = position;
    }
    if at < encoded.len() {
        chunks.push(encoded.slice(at..));
    }
    Ok(chunks)
}

/// Appends a whole request frame: size prefix, request header, body (for clients and tests).
pub fn encode_request<B: Encode>(out: &mut BytesMut, header: &RequestHeader, body: &B) -> Result<(), EncodeError> {
    let header_version = request_header_version(header.request_api_key, header.request_api_version);
    encode_frame(out, |buf| {
        header.encode(buf, header_version)?;
        body.encode(buf, header.request_api_version)
    })
}

fn encode_frame(
    out: &mut BytesMut,
    write: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let start = out.len();
    out.put_i32(0);
    if let Err(e) = write(out) {
        out.truncate(start);
        return Err(e);
    }
    let len = out.len() - start - 4;
    let len = i32::try_from(len).map_err(|_| EncodeError::TooLong { what: "frame", len })?;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Splits a complete response frame body (without its size prefix) into correlation id and body.
pub fn decode_response_header(frame: &mut Bytes, api_key: ApiKey, version: i16) -> Result<ResponseHeader, DecodeError> {
    crate::Decode::decode(frame, api_key.response_header_version(version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::ApiVersionsRequest;

    #[test]
    fn spliced_chunks_make_the_same_frame_as_a_copy() {
        use crate::messages::fetch_response::{FetchableTopicResponse, PartitionData};
        use crate::messages::FetchResponse;
        let partition = |index: i32, len: usize| PartitionData {
            partition_index: index,
            records: Some(Bytes::from(vec![index as u8; len])),
            ..Default::default()
        };
        // Big (spliced), small (copied), big, none: in flexible and non-flexible versions.
        let body = FetchResponse {
            responses: vec![FetchableTopicResponse {
                topic: "t".into(),
                partitions: vec![
                    partition(1, 70_000),
                    partition(2, 100),
                    partition(3, crate::codec::SPLICE_BYTES_MIN),
                    PartitionData {
                        records: None,
                        ..partition(4, 0)
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        for version in [4, 11, 12, 16] {
            let mut copied = BytesMut::new();
            encode_response(&mut copied, 9, ApiKey::Fetch, version, &body).unwrap();
            let chunks = encode_response_chunks(9, ApiKey::Fetch, version, &body).unwrap();
            assert!(chunks.len() >= 4, "the two large records fields stand alone");
            assert_eq!(chunks.concat(), copied.to_vec(), "version {version}");
        }
        // Outside `encode_response_chunks`, nothing is spliced.
        let mut again = BytesMut::new();
        encode_response(&mut again, 9, ApiKey::Fetch, 16, &body).unwrap();
        assert!(again.len() > 70_000 + 100 + crate::codec::SPLICE_BYTES_MIN);
    }

    #[test]
    fn a_request_frame_round_trips() {
        let header = RequestHeader {
            request_api_key: ApiKey::ApiVersions as i16,
            request_api_version: 3,
            correlation_id: 7,
            client_id: Some("me".into()),
        };
        let body = ApiVersionsRequest {
            client_software_name: "sluice".into(),
            client_software_version: "0.1".into(),
        };
        let mut out = BytesMut::new();
        encode_request(&mut out, &header, &body).unwrap();
        let mut frame = out.freeze().slice(4..);
        let h = decode_request_header(&mut frame).unwrap();
        assert_eq!(h, header);
        let b: ApiVersionsRequest = crate::Decode::decode(&mut frame, 3).unwrap();
        assert_eq!(b, body);
    }

    #[test]
    fn an_api_versions_request_from_the_future_still_has_a_readable_header() {
        assert_eq!(request_header_version(ApiKey::ApiVersions as i16, 99), 2);
        assert_eq!(request_header_version(ApiKey::ApiVersions as i16, 0), 1);
        assert_eq!(request_header_version(-5, 0), 1);
    }
}

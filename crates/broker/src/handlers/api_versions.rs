//! ApiVersions: which APIs and versions this broker serves.
//!
//! A client that asks with a version newer than ours gets a version-0 reply carrying
//! `UNSUPPORTED_VERSION` and our ranges; it then retries with a version we have. Closing the
//! connection instead would leave some clients unable to connect at all.

use super::SUPPORTED;
use bytes::Bytes;
use wire::messages::api_versions_response::ApiVersion;
use wire::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader};
use wire::{Decode, ErrorCode};

const UNSUPPORTED_VERSION: i16 = ErrorCode::UnsupportedVersion as i16;
const INVALID_REQUEST: i16 = ErrorCode::InvalidRequest as i16;

pub struct Reply {
    pub version: i16,
    pub body: ApiVersionsResponse,
}

fn all_versions(error_code: i16) -> ApiVersionsResponse {
    ApiVersionsResponse {
        error_code,
        api_keys: SUPPORTED
            .iter()
            .map(|(k, lo, hi)| ApiVersion {
                api_key: *k as i16,
                min_version: *lo,
                max_version: *hi,
            })
            .collect(),
        ..Default::default()
    }
}

/// Kafka's rule for client software names and versions (KIP-511).
fn valid_software_field(s: &str) -> bool {
    let b = s.as_bytes();
    let ok = |c: &u8| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'.';
    !b.is_empty() && b[0].is_ascii_alphanumeric() && b[b.len() - 1].is_ascii_alphanumeric() && b.iter().all(ok)
}

pub fn handle(header: &RequestHeader, mut body: Bytes) -> Reply {
    let version = header.request_api_version;
    let (lo, hi) = super::supported_versions(ApiKey::ApiVersions).unwrap_or((0, 0));
    if !(lo..=hi).contains(&version) {
        return Reply {
            version: 0,
            body: all_versions(UNSUPPORTED_VERSION),
        };
    }
    let request = match ApiVersionsRequest::decode(&mut body, version) {
        Ok(r) => r,
        Err(_) => {
            return Reply {
                version: 0,
                body: all_versions(INVALID_REQUEST),
            }
        }
    };
    if version >= 3
        && !(valid_software_field(&request.client_software_name)
            && valid_software_field(&request.client_software_version))
    {
        return Reply {
            version,
            body: all_versions(INVALID_REQUEST),
        };
    }
    Reply {
        version,
        body: all_versions(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(version: i16) -> RequestHeader {
        RequestHeader {
            request_api_key: 18,
            request_api_version: version,
            correlation_id: 1,
            client_id: None,
        }
    }

    #[test]
    fn a_version_from_the_future_gets_a_v0_reply_with_our_ranges() {
        let r = handle(&header(9), Bytes::new());
        assert_eq!(r.version, 0);
        assert_eq!(r.body.error_code, UNSUPPORTED_VERSION);
        assert!(r.body.api_keys.iter().any(|k| k.api_key == 18 && k.max_version == 4));
    }

    #[test]
    fn software_names_follow_kip_511() {
        assert!(valid_software_field("librdkafka"));
        assert!(valid_software_field("2.0.2"));
        assert!(!valid_software_field("bad name"));
        assert!(!valid_software_field("-x"));
        assert!(!valid_software_field(""));
    }
}

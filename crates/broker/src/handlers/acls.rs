//! DescribeAcls, CreateAcls and DeleteAcls, answered as a Kafka broker without an authorizer
//! (`authorizer.class.name` unset) answers them: `SECURITY_DISABLED`, "No Authorizer is
//! configured." (Kafka's `AclApis`), for the request (DescribeAcls) or for each creation and
//! each filter (`CreateAclsRequest`/`DeleteAclsRequest.getErrorResponse`). Nothing is stored.

use wire::messages::create_acls_response::AclCreationResult;
use wire::messages::delete_acls_response::DeleteAclsFilterResult;
use wire::messages::*;

/// Kafka's message, word for word.
pub const NO_AUTHORIZER: &str = "No Authorizer is configured.";

pub fn describe(_version: i16, _req: DescribeAclsRequest) -> DescribeAclsResponse {
    DescribeAclsResponse {
        error_code: ErrorCode::SecurityDisabled as i16,
        error_message: Some(NO_AUTHORIZER.into()),
        resources: vec![],
        ..Default::default()
    }
}

pub fn create(_version: i16, req: CreateAclsRequest) -> CreateAclsResponse {
    CreateAclsResponse {
        results: req
            .creations
            .iter()
            .map(|_| AclCreationResult {
                error_code: ErrorCode::SecurityDisabled as i16,
                error_message: Some(NO_AUTHORIZER.into()),
            })
            .collect(),
        ..Default::default()
    }
}

pub fn delete(_version: i16, req: DeleteAclsRequest) -> DeleteAclsResponse {
    DeleteAclsResponse {
        filter_results: req
            .filters
            .iter()
            .map(|_| DeleteAclsFilterResult {
                error_code: ErrorCode::SecurityDisabled as i16,
                error_message: Some(NO_AUTHORIZER.into()),
                matching_acls: vec![],
            })
            .collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::messages::create_acls_request::AclCreation;
    use wire::messages::delete_acls_request::DeleteAclsFilter;

    #[test]
    fn every_acl_call_is_security_disabled() {
        let d = describe(3, DescribeAclsRequest::default());
        assert_eq!(d.error_code, 54);
        assert_eq!(d.error_message.as_deref(), Some(NO_AUTHORIZER));
        let c = create(
            3,
            CreateAclsRequest {
                creations: vec![AclCreation::default(), AclCreation::default()],
            },
        );
        assert_eq!(c.results.len(), 2);
        assert!(c.results.iter().all(|r| r.error_code == 54));
        let d = delete(
            3,
            DeleteAclsRequest {
                filters: vec![DeleteAclsFilter::default()],
            },
        );
        assert_eq!(d.filter_results.len(), 1);
        assert!(d.filter_results[0].matching_acls.is_empty());
    }
}

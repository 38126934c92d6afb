//! `ErrorCodes` (generated for every response) finds the errors at every level of a response,
//! and only the non-zero ones.

use wire::messages::describe_configs_response::DescribeConfigsResult;
use wire::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use wire::messages::{DescribeConfigsResponse, ProduceResponse};
use wire::{ErrorCode, ErrorCodes};

fn codes(r: &impl ErrorCodes) -> Vec<i16> {
    let mut all = vec![];
    r.error_codes(&mut |c| all.push(c));
    all
}

#[test]
fn nested_partition_errors_are_found() {
    let partition = |index, code: ErrorCode| PartitionProduceResponse {
        index,
        error_code: code as i16,
        ..Default::default()
    };
    let response = ProduceResponse {
        responses: vec![
            TopicProduceResponse {
                name: "a".into(),
                partition_responses: vec![
                    partition(0, ErrorCode::None),
                    partition(1, ErrorCode::NotLeaderOrFollower),
                ],
            },
            TopicProduceResponse {
                name: "b".into(),
                partition_responses: vec![partition(0, ErrorCode::MessageTooLarge)],
            },
        ],
        ..Default::default()
    };
    assert_eq!(
        codes(&response),
        vec![ErrorCode::NotLeaderOrFollower as i16, ErrorCode::MessageTooLarge as i16]
    );
}

#[test]
fn top_level_errors_are_found() {
    let response = DescribeConfigsResponse {
        results: vec![DescribeConfigsResult {
            error_code: ErrorCode::UnknownTopicOrPartition as i16,
            ..Default::default()
        }],
        ..Default::default()
    };
    assert_eq!(codes(&response), vec![ErrorCode::UnknownTopicOrPartition as i16]);
    assert!(codes(&ProduceResponse::default()).is_empty());
}

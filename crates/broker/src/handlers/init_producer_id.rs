//! InitProducerId: a new producer id for an idempotent producer, or (v3+, KIP-360) the same
//! id with the next epoch when the producer asks to bump its epoch.
//!
//! Transactional ids are refused: transactions are not supported yet.

use crate::Broker;
use wire::messages::{InitProducerIdRequest, InitProducerIdResponse};
use wire::ErrorCode;

pub fn handle(broker: &Broker, _version: i16, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let fail = |code: ErrorCode| InitProducerIdResponse {
        error_code: code as i16,
        producer_id: -1,
        producer_epoch: -1,
        ..Default::default()
    };
    if request.transactional_id.is_some() {
        if let Some(suppressed) = crate::ratelog::allow("transactional-refused") {
            tracing::warn!(id = ?request.transactional_id, suppressed, "transactional producer refused: transactions are not supported yet");
        }
        return fail(ErrorCode::TransactionalIdAuthorizationFailed);
    }
    if request.producer_id >= 0 && request.producer_epoch >= 0 && request.producer_epoch < i16::MAX - 1 {
        return InitProducerIdResponse {
            producer_id: request.producer_id,
            producer_epoch: request.producer_epoch + 1,
            ..Default::default()
        };
    }
    match broker.producer_ids.allocate() {
        Ok(id) => InitProducerIdResponse {
            producer_id: id,
            producer_epoch: 0,
            ..Default::default()
        },
        Err(e) => {
            tracing::error!(error = %e, "cannot allocate a producer id");
            fail(ErrorCode::KafkaStorageError)
        }
    }
}

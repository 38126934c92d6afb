//! The Kafka wire protocol, with no I/O: primitive codecs (`codec`), every request and response
//! type generated from the protocol's JSON specs (`messages`), request/response framing helpers
//! (`frame`), and record batches with their compression codecs (`records`).

pub mod codec;
pub mod messages;

pub use codec::{ApiMessage, Decode, DecodeError, Encode, EncodeError, Message, Uuid};
pub use messages::ApiKey;

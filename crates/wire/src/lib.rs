//! The Kafka wire protocol, with no I/O: primitive codecs (`codec`), every request and response
//! type generated from the protocol's JSON specs (`messages`), request/response framing
//! (`frame`), record batches (`records`) and their compression codecs (`compression`).
//!
//! Nothing here panics on input bytes: every decoder returns an error for malformed data.

pub mod codec;
pub mod compression;
pub mod frame;
pub mod messages;
pub mod records;

pub use codec::{ApiMessage, Decode, DecodeError, Encode, EncodeError, ErrorCodes, Message, Uuid};
pub use compression::Compression;
pub use messages::{ApiKey, ErrorCode};

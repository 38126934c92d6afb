//! The Kafka wire protocol, with no I/O: primitive codecs (`codec`), every request and response
//! type generated from the protocol's JSON specs (`messages`), request/response framing
//! (`frame`), record batches (`records`) and their compression codecs (`compression`), and the
//! records Kafka keeps in its own logs — the metadata log, `__consumer_offsets`,
//! `__transaction_state`, `__share_group_state` — generated from Kafka's record specs
//! (`kafka_records`; not `records`, which is the batch format these travel in).
//!
//! Nothing here panics on input bytes: every decoder returns an error for malformed data.

pub mod codec;
pub mod compression;
pub mod frame;
pub mod kafka_records;
pub mod messages;
pub mod records;

pub use codec::{ApiMessage, Decode, DecodeError, Encode, EncodeError, ErrorCodes, Message, Uuid};
pub use compression::Compression;
pub use messages::{ApiKey, ErrorCode};

//! Primitive encoders and decoders of the Kafka protocol, and the traits generated messages implement.
//!
//! Every decoder reads from a `Bytes` cursor and checks the remaining length before it reads, so
//! no byte string can make it panic. Lengths read from the wire are checked against the bytes that
//! remain before anything is allocated: an array claiming two billion elements in a 12-byte frame
//! is an error, not an allocation.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Why a byte string could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unexpected end of data: needed {needed} more bytes, {remaining} remain")]
    ShortBuffer { needed: usize, remaining: usize },
    #[error("negative length {0} where null is not allowed")]
    UnexpectedNull(i64),
    #[error("invalid length {0}")]
    InvalidLength(i64),
    #[error("varint is longer than allowed")]
    VarintTooLong,
    #[error("version {version} of {message} is not supported")]
    UnsupportedVersion { message: &'static str, version: i16 },
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    #[error("unknown record type {record_type} in {log}")]
    UnknownRecordType { log: &'static str, record_type: i64 },
    #[error("{0}")]
    Invalid(&'static str),
}

/// Why a value could not be encoded in the version asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("field {0} is null but not nullable in this version")]
    NullNotAllowed(&'static str),
    #[error("{what} of length {len} is too long to encode")]
    TooLong { what: &'static str, len: usize },
    #[error("version {version} of {message} is not supported")]
    UnsupportedVersion { message: &'static str, version: i16 },
}

/// Writes a value in a given version of its message.
pub trait Encode {
    fn encode(&self, buf: &mut BytesMut, version: i16) -> Result<(), EncodeError>;
}

/// Visits the non-zero error codes a response carries, at every level (top, topic,
/// partition), so the broker can count what it answers with.
pub trait ErrorCodes {
    fn error_codes(&self, f: &mut dyn FnMut(i16));
}

/// Reads a value in a given version of its message.
pub trait Decode: Sized {
    fn decode(buf: &mut Bytes, version: i16) -> Result<Self, DecodeError>;
}

/// What every generated top-level message knows about itself.
pub trait Message: Encode + Decode + Default + std::fmt::Debug + Clone + PartialEq {
    const NAME: &'static str;
    const MIN_VERSION: i16;
    const MAX_VERSION: i16;
    /// The first flexible version, or `i16::MAX` when the message has none.
    const FLEXIBLE_MIN: i16;
}

/// Messages that are a request or a response of an API.
pub trait ApiMessage: Message {
    const API_KEY: i16;
}

/// A 16-byte UUID as Kafka sends it (topic ids, directory ids).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    pub const ZERO: Uuid = Uuid([0; 16]);

    pub fn is_zero(&self) -> bool {
        *self == Self::ZERO
    }
}

impl std::fmt::Debug for Uuid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Display for Uuid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

#[inline]
fn need(buf: &Bytes, n: usize) -> Result<(), DecodeError> {
    if buf.remaining() < n {
        Err(DecodeError::ShortBuffer {
            needed: n,
            remaining: buf.remaining(),
        })
    } else {
        Ok(())
    }
}

/// Takes the next `n` bytes as a zero-copy slice.
pub fn take(buf: &mut Bytes, n: usize) -> Result<Bytes, DecodeError> {
    need(buf, n)?;
    Ok(buf.split_to(n))
}

pub fn get_bool(buf: &mut Bytes) -> Result<bool, DecodeError> {
    Ok(get_i8(buf)? != 0)
}

macro_rules! get_fixed {
    ($name:ident, $ty:ty, $get:ident) => {
        #[inline]
        pub fn $name(buf: &mut Bytes) -> Result<$ty, DecodeError> {
            need(buf, std::mem::size_of::<$ty>())?;
            Ok(buf.$get())
        }
    };
}

get_fixed!(get_i8, i8, get_i8);
get_fixed!(get_i16, i16, get_i16);
get_fixed!(get_u16, u16, get_u16);
get_fixed!(get_i32, i32, get_i32);
get_fixed!(get_u32, u32, get_u32);
get_fixed!(get_i64, i64, get_i64);
get_fixed!(get_f64, f64, get_f64);

pub fn get_uuid(buf: &mut Bytes) -> Result<Uuid, DecodeError> {
    need(buf, 16)?;
    let mut id = [0u8; 16];
    buf.copy_to_slice(&mut id);
    Ok(Uuid(id))
}

/// An unsigned LEB128 varint of at most 32 bits.
pub fn get_uvarint(buf: &mut Bytes) -> Result<u32, DecodeError> {
    let mut value: u32 = 0;
    for i in 0..5 {
        let b = get_i8(buf)? as u8;
        if i == 4 && b > 0x0f {
            return Err(DecodeError::VarintTooLong);
        }
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::VarintTooLong)
}

/// An unsigned LEB128 varint of at most 64 bits.
pub fn get_uvarlong(buf: &mut Bytes) -> Result<u64, DecodeError> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let b = get_i8(buf)? as u8;
        if i == 9 && b > 0x01 {
            return Err(DecodeError::VarintTooLong);
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::VarintTooLong)
}

/// A zigzag-encoded signed varint (record fields).
pub fn get_varint(buf: &mut Bytes) -> Result<i32, DecodeError> {
    let v = get_uvarint(buf)?;
    Ok(((v >> 1) as i32) ^ -((v & 1) as i32))
}

/// A zigzag-encoded signed varlong (record fields).
pub fn get_varlong(buf: &mut Bytes) -> Result<i64, DecodeError> {
    let v = get_uvarlong(buf)?;
    Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
}

/// Reads a length prefix: `i16`/`i32` when not compact, `uvarint - 1` when compact.
/// Returns `None` for null (-1). A length longer than the remaining bytes is an error.
fn get_len(buf: &mut Bytes, compact: bool, wide: bool) -> Result<Option<usize>, DecodeError> {
    let len: i64 = if compact {
        i64::from(get_uvarint(buf)?) - 1
    } else if wide {
        i64::from(get_i32(buf)?)
    } else {
        i64::from(get_i16(buf)?)
    };
    if len < -1 {
        return Err(DecodeError::InvalidLength(len));
    }
    if len == -1 {
        return Ok(None);
    }
    let len = len as usize;
    need(buf, len)?;
    Ok(Some(len))
}

pub fn get_nullable_string(buf: &mut Bytes, compact: bool) -> Result<Option<String>, DecodeError> {
    match get_len(buf, compact, false)? {
        None => Ok(None),
        Some(n) => {
            // Invalid UTF-8 becomes U+FFFD, as Java's `new String(bytes, UTF_8)` does: a client
            // id in Latin-1 must not make a request unreadable. Names are validated later.
            let raw = buf.split_to(n);
            Ok(Some(String::from_utf8_lossy(&raw).into_owned()))
        }
    }
}

pub fn get_string(buf: &mut Bytes, compact: bool) -> Result<String, DecodeError> {
    get_nullable_string(buf, compact)?.ok_or(DecodeError::UnexpectedNull(-1))
}

pub fn get_nullable_bytes(buf: &mut Bytes, compact: bool) -> Result<Option<Bytes>, DecodeError> {
    Ok(get_len(buf, compact, true)?.map(|n| buf.split_to(n)))
}

pub fn get_bytes(buf: &mut Bytes, compact: bool) -> Result<Bytes, DecodeError> {
    get_nullable_bytes(buf, compact)?.ok_or(DecodeError::UnexpectedNull(-1))
}

/// Reads an array length; `None` is a null array.
///
/// Every element of every array in the protocol takes at least one byte, so a count larger than
/// the remaining bytes is rejected here, before any allocation.
pub fn get_array_len(buf: &mut Bytes, compact: bool) -> Result<Option<usize>, DecodeError> {
    let len: i64 = if compact {
        i64::from(get_uvarint(buf)?) - 1
    } else {
        i64::from(get_i32(buf)?)
    };
    if len < -1 {
        return Err(DecodeError::InvalidLength(len));
    }
    if len == -1 {
        return Ok(None);
    }
    if len as usize > buf.remaining() {
        return Err(DecodeError::InvalidLength(len));
    }
    Ok(Some(len as usize))
}

/// The capacity to reserve for `n` elements of `T`: never more bytes than remain in the input,
/// so a hostile count cannot make one allocation larger than the frame it came in.
pub fn capacity_for<T>(n: usize, buf: &Bytes) -> usize {
    n.min(buf.remaining() / std::mem::size_of::<T>().max(1))
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

pub fn put_bool(buf: &mut BytesMut, v: bool) {
    buf.put_i8(i8::from(v));
}

pub fn put_i8(buf: &mut BytesMut, v: i8) {
    buf.put_i8(v);
}

pub fn put_i16(buf: &mut BytesMut, v: i16) {
    buf.put_i16(v);
}

pub fn put_u16(buf: &mut BytesMut, v: u16) {
    buf.put_u16(v);
}

pub fn put_i32(buf: &mut BytesMut, v: i32) {
    buf.put_i32(v);
}

pub fn put_u32(buf: &mut BytesMut, v: u32) {
    buf.put_u32(v);
}

pub fn put_i64(buf: &mut BytesMut, v: i64) {
    buf.put_i64(v);
}

pub fn put_f64(buf: &mut BytesMut, v: f64) {
    buf.put_f64(v);
}

pub fn put_uuid(buf: &mut BytesMut, v: &Uuid) {
    buf.put_slice(&v.0);
}

pub fn put_uvarint(buf: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

pub fn put_uvarlong(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

pub fn put_varint(buf: &mut BytesMut, v: i32) {
    put_uvarint(buf, ((v << 1) ^ (v >> 31)) as u32);
}

pub fn put_varlong(buf: &mut BytesMut, v: i64) {
    put_uvarlong(buf, ((v << 1) ^ (v >> 63)) as u64);
}

/// The number of bytes `put_varint` writes for `v`.
pub fn varint_len(v: i32) -> usize {
    uvarlong_len(((v << 1) ^ (v >> 31)) as u32 as u64)
}

/// The number of bytes `put_varlong` writes for `v`.
pub fn varlong_len(v: i64) -> usize {
    uvarlong_len(((v << 1) ^ (v >> 63)) as u64)
}

fn uvarlong_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_len(buf: &mut BytesMut, len: usize, compact: bool, wide: bool, what: &'static str) -> Result<(), EncodeError> {
    let max = if wide || compact {
        i32::MAX as usize - 1
    } else {
        i16::MAX as usize
    };
    if len > max {
        return Err(EncodeError::TooLong { what, len });
    }
    if compact {
        put_uvarint(buf, len as u32 + 1);
    } else if wide {
        buf.put_i32(len as i32);
    } else {
        buf.put_i16(len as i16);
    }
    Ok(())
}

pub fn put_string(buf: &mut BytesMut, s: &str, compact: bool) -> Result<(), EncodeError> {
    put_len(buf, s.len(), compact, false, "string")?;
    buf.put_slice(s.as_bytes());
    Ok(())
}

pub fn put_null_string(buf: &mut BytesMut, compact: bool) {
    if compact {
        put_uvarint(buf, 0);
    } else {
        buf.put_i16(-1);
    }
}

pub fn put_bytes(buf: &mut BytesMut, b: &[u8], compact: bool) -> Result<(), EncodeError> {
    put_len(buf, b.len(), compact, true, "bytes")?;
    buf.put_slice(b);
    Ok(())
}

/// Records fields at least this large are spliced rather than copied (see [`splicing`]):
/// below it, a copy costs less than one more chunk to write.
pub const SPLICE_BYTES_MIN: usize = 4096;

struct Splice {
    /// The buffer whose records may be spliced; fields written elsewhere (a tagged field's
    /// temporary buffer) are copied as usual.
    target: *const BytesMut,
    taken: Vec<(usize, Bytes)>,
}

thread_local! {
    static SPLICE: std::cell::RefCell<Option<Splice>> = const { std::cell::RefCell::new(None) };
}

/// Runs `encode` (which writes into `target`) so that large records fields are not copied into
/// `target`: their length prefix is written, and the field's `Bytes` is returned with the
/// position in `target` where it belongs. The caller sends `target`'s bytes and the returned
/// ones interleaved by position, so record data read from disk goes to the socket without a
/// copy in memory. Encoding is synchronous, so the thread-local state never crosses tasks.
pub fn splicing<T>(target: *const BytesMut, encode: impl FnOnce() -> T) -> (T, Vec<(usize, Bytes)>) {
    // Puts back whatever was there before (an enclosing `splicing`), also on panic.
    struct Restore(Option<Splice>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.take();
            SPLICE.with(|s| *s.borrow_mut() = outer);
        }
    }
    let outer = SPLICE.with(|s| {
        s.borrow_mut().replace(Splice {
            target,
            taken: Vec::new(),
        })
    });
    let restore = Restore(outer);
    let result = encode();
    let taken = SPLICE.with(|s| s.borrow_mut().take().map(|sp| sp.taken).unwrap_or_default());
    drop(restore);
    (result, taken)
}

/// A `records` field: as [`put_bytes`], except that inside [`splicing`] a large one written to
/// the target buffer is handed back instead of copied.
pub fn put_records(buf: &mut BytesMut, b: &Bytes, compact: bool) -> Result<(), EncodeError> {
    put_len(buf, b.len(), compact, true, "bytes")?;
    if b.len() >= SPLICE_BYTES_MIN {
        let at = buf.len();
        let spliced = SPLICE.with(|s| match s.borrow_mut().as_mut() {
            Some(sp) if std::ptr::eq(sp.target, buf) => {
                sp.taken.push((at, b.clone()));
                true
            }
            _ => false,
        });
        if spliced {
            return Ok(());
        }
    }
    buf.put_slice(b);
    Ok(())
}

pub fn put_null_bytes(buf: &mut BytesMut, compact: bool) {
    if compact {
        put_uvarint(buf, 0);
    } else {
        buf.put_i32(-1);
    }
}

pub fn put_array_len(buf: &mut BytesMut, len: usize, compact: bool) -> Result<(), EncodeError> {
    put_len(buf, len, compact, true, "array")
}

pub fn put_null_array(buf: &mut BytesMut, compact: bool) {
    put_null_bytes(buf, compact)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [0, 1, -1, 63, -64, 64, i32::MAX, i32::MIN] {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v));
            assert_eq!(get_varint(&mut b.freeze()).unwrap(), v);
        }
        for v in [0, 1, -1, i64::MAX, i64::MIN] {
            let mut b = BytesMut::new();
            put_varlong(&mut b, v);
            assert_eq!(b.len(), varlong_len(v));
            assert_eq!(get_varlong(&mut b.freeze()).unwrap(), v);
        }
    }

    #[test]
    fn overlong_varints_are_rejected() {
        let mut b = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(get_uvarint(&mut b), Err(DecodeError::VarintTooLong));
        let mut b = Bytes::from_static(&[0xff; 11]);
        assert_eq!(get_uvarlong(&mut b), Err(DecodeError::VarintTooLong));
    }

    #[test]
    fn lengths_beyond_the_input_are_errors_not_allocations() {
        // An array claiming i32::MAX elements in four bytes.
        let mut b = Bytes::from_static(&[0x7f, 0xff, 0xff, 0xff]);
        assert!(get_array_len(&mut b, false).is_err());
        let mut b = Bytes::from_static(&[0x00, 0x10, b'a']);
        assert!(matches!(
            get_string(&mut b, false),
            Err(DecodeError::ShortBuffer { .. })
        ));
        let mut b = Bytes::from_static(&[0xff, 0xff]);
        assert_eq!(get_nullable_string(&mut b, false), Ok(None));
        let mut b = Bytes::from_static(&[0xff, 0xfe]);
        assert!(get_nullable_string(&mut b, false).is_err());
    }

    #[test]
    fn uuid_displays_like_java() {
        let id = Uuid([0x12; 16]);
        assert_eq!(id.to_string(), "12121212-1212-1212-1212-121212121212");
    }
}

/// `arbitrary` support for `Bytes` fields, which the `arbitrary` crate does not cover itself.
#[cfg(feature = "arbitrary")]
pub fn arbitrary_bytes(u: &mut arbitrary::Unstructured<'_>) -> arbitrary::Result<Bytes> {
    let v: Vec<u8> = arbitrary::Arbitrary::arbitrary(u)?;
    Ok(Bytes::from(v))
}

#[cfg(feature = "arbitrary")]
pub fn arbitrary_opt_bytes(u: &mut arbitrary::Unstructured<'_>) -> arbitrary::Result<Option<Bytes>> {
    let v: Option<Vec<u8>> = arbitrary::Arbitrary::arbitrary(u)?;
    Ok(v.map(Bytes::from))
}

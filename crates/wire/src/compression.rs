//! The four compression codecs of record batches: gzip, snappy (raw or in the xerial framing the
//! Java client writes), lz4 (the LZ4 frame format) and zstd.
//!
//! Decompression is bounded: output beyond `max_bytes` is an error, so a small compressed batch
//! cannot expand into gigabytes of memory.

use bytes::Bytes;
use std::io::{Read, Write};

/// The codec named by the low three bits of a batch's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Compression {
    None = 0,
    Gzip = 1,
    Snappy = 2,
    Lz4 = 3,
    Zstd = 4,
}

#[derive(Debug, thiserror::Error)]
pub enum CompressionError {
    #[error("unknown compression codec {0}")]
    UnknownCodec(i16),
    #[error("decompressed data exceeds the limit of {0} bytes")]
    TooLarge(usize),
    #[error("{codec:?} data is corrupt: {detail}")]
    Corrupt { codec: Compression, detail: String },
}

impl Compression {
    pub fn from_attributes(attributes: i16) -> Result<Compression, CompressionError> {
        Ok(match attributes & 0x07 {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => return Err(CompressionError::UnknownCodec(other)),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    pub fn from_name(name: &str) -> Option<Compression> {
        Some(match name {
            "none" | "uncompressed" => Compression::None,
            "gzip" => Compression::Gzip,
            "snappy" => Compression::Snappy,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd,
            _ => return None,
        })
    }
}

fn corrupt(codec: Compression, e: impl std::fmt::Display) -> CompressionError {
    CompressionError::Corrupt {
        codec,
        detail: e.to_string(),
    }
}

/// Reads all of `r`, failing once more than `max_bytes` come out.
fn read_bounded(codec: Compression, r: impl Read, max_bytes: usize) -> Result<Vec<u8>, CompressionError> {
    let mut out = Vec::new();
    r.take((max_bytes as u64).saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| corrupt(codec, e))?;
    if out.len() > max_bytes {
        return Err(CompressionError::TooLarge(max_bytes));
    }
    Ok(out)
}

const ZSTD_WINDOW_LOG_MAX: u32 = 27;

const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";

/// Decompresses `data`, producing at most `max_bytes`.
pub fn decompress(codec: Compression, data: &[u8], max_bytes: usize) -> Result<Bytes, CompressionError> {
    let out = match codec {
        Compression::None => return Ok(Bytes::copy_from_slice(data)),
        Compression::Gzip => read_bounded(codec, flate2::read::MultiGzDecoder::new(data), max_bytes)?,
        Compression::Lz4 => read_bounded(codec, lz4_flex::frame::FrameDecoder::new(data), max_bytes)?,
        Compression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::new(data).map_err(|e| corrupt(codec, e))?;
            // A frame header may ask for a window of up to 2 GiB. Refuse more than zstd's own
            // default limit (128 MiB), which the Java client and librdkafka also apply.
            decoder
                .window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(|e| corrupt(codec, e))?;
            read_bounded(codec, decoder, max_bytes)?
        }
        Compression::Snappy => {
            if data.starts_with(XERIAL_MAGIC) && data.len() >= 16 {
                // xerial framing: magic, version and compatible version (int32 each), then
                // blocks of [int32 length][raw snappy].
                let mut out = Vec::new();
                let mut rest = &data[16..];
                while !rest.is_empty() {
                    if rest.len() < 4 {
                        return Err(corrupt(codec, "truncated xerial block length"));
                    }
                    let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                    rest = &rest[4..];
                    if len > rest.len() {
                        return Err(corrupt(codec, "xerial block longer than the data"));
                    }
                    snappy_raw(&rest[..len], max_bytes - out.len(), &mut out)?;
                    rest = &rest[len..];
                }
                out
            } else {
                let mut out = Vec::new();
                snappy_raw(data, max_bytes, &mut out)?;
                out
            }
        }
    };
    Ok(Bytes::from(out))
}

/// At most this many output bytes per input byte of a raw snappy block (64 / 3, rounded up).
const SNAPPY_EXPANSION_MAX: usize = 22;

fn snappy_raw(block: &[u8], room: usize, out: &mut Vec<u8>) -> Result<(), CompressionError> {
    let len = snap::raw::decompress_len(block).map_err(|e| corrupt(Compression::Snappy, e))?;
    // The longest output one element of the raw format can produce is 64 bytes from a 3-byte
    // copy, so a block expands at most ~21.3 times. A claim beyond that is a lie: refuse it
    // before allocating (and zeroing) what it claims.
    if len > block.len().saturating_mul(SNAPPY_EXPANSION_MAX) {
        return Err(corrupt(
            Compression::Snappy,
            format!(
                "a block of {} bytes claims to hold {len} bytes, more than snappy can expand to",
                block.len()
            ),
        ));
    }
    if len > room {
        return Err(CompressionError::TooLarge(out.len() + room));
    }
    let start = out.len();
    out.resize(start + len, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| corrupt(Compression::Snappy, e))?;
    Ok(())
}

/// Compresses `data` the way the Java client does (snappy in xerial framing, lz4 frames).
pub fn compress(codec: Compression, data: &[u8]) -> Vec<u8> {
    // Writing into a Vec cannot fail; the codecs' own errors are I/O errors of the sink.
    fn done<W>(r: std::io::Result<W>) -> W {
        match r {
            Ok(w) => w,
            Err(e) => unreachable!("compressing into memory failed: {e}"),
        }
    }
    match codec {
        Compression::None => data.to_vec(),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            done(enc.write_all(data));
            done(enc.finish())
        }
        Compression::Lz4 => {
            let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
            done(enc.write_all(data));
            match enc.finish() {
                Ok(v) => v,
                Err(e) => unreachable!("lz4 into memory failed: {e}"),
            }
        }
        Compression::Zstd => done(zstd::stream::encode_all(data, 3)),
        Compression::Snappy => {
            let mut out = Vec::with_capacity(data.len() / 2 + 32);
            out.extend_from_slice(XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            let mut enc = snap::raw::Encoder::new();
            for chunk in data.chunks(32 * 1024) {
                let block = match enc.compress_vec(chunk) {
                    Ok(b) => b,
                    Err(e) => unreachable!("snappy block of 32 KiB failed: {e}"),
                };
                out.extend_from_slice(&(block.len() as u32).to_be_bytes());
                out.extend_from_slice(&block);
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    #[test]
    fn every_codec_round_trips() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for c in ALL {
            let packed = compress(c, &data);
            assert_eq!(&decompress(c, &packed, data.len()).unwrap()[..], &data[..], "{c:?}");
        }
    }

    #[test]
    fn decompression_stops_at_the_limit() {
        let data = vec![0u8; 1 << 20];
        for c in ALL.into_iter().skip(1) {
            let packed = compress(c, &data);
            assert!(
                matches!(decompress(c, &packed, 1000), Err(CompressionError::TooLarge(_))),
                "{c:?}"
            );
        }
    }

    #[test]
    fn raw_snappy_is_read_too() {
        let raw = snap::raw::Encoder::new().compress_vec(b"hello hello hello").unwrap();
        assert_eq!(
            &decompress(Compression::Snappy, &raw, 100).unwrap()[..],
            b"hello hello hello"
        );
    }

    #[test]
    fn a_snappy_block_claiming_more_than_it_can_expand_to_is_refused_before_allocating() {
        // The length varint of 60 MiB, then 60 bytes: at most 22 * 64 bytes could come out.
        let mut block = vec![];
        let mut n = 60u64 << 20;
        while n >= 0x80 {
            block.push((n as u8) | 0x80);
            n >>= 7;
        }
        block.push(n as u8);
        block.extend_from_slice(&[0u8; 60]);
        match decompress(Compression::Snappy, &block, 64 << 20) {
            Err(CompressionError::Corrupt { detail, .. }) => {
                assert!(detail.contains("more than snappy can expand to"), "{detail}")
            }
            other => panic!("{other:?}"),
        }
        // The densest real data stays within the bound.
        let zeros = vec![0u8; 1 << 20];
        let packed = snap::raw::Encoder::new().compress_vec(&zeros).unwrap();
        assert!(packed.len() * SNAPPY_EXPANSION_MAX >= zeros.len());
        assert_eq!(
            decompress(Compression::Snappy, &packed, 1 << 20).unwrap().len(),
            1 << 20
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for c in ALL.into_iter().skip(1) {
            assert!(
                decompress(c, b"\x82SNAPPY\x00garbage-garbage-garbage", 1000).is_err(),
                "{c:?}"
            );
        }
    }
}

//! The one place that knows the binary encoding of the store's small records.
//!
//! Every record in the index is `MAGIC` (7 bytes, `b"IPIRMST"`), the schema version as a
//! little-endian `u32`, then the record's bincode 1.3.3 body (fixed-width little-endian integers,
//! no trailing bytes, at most [`MAX_RECORD_BYTES`]). bincode is pinned (`=1.3.3`) and unmaintained
//! upstream: nothing else in the crate calls it, so swapping it means changing this file and
//! bumping [`SCHEMA_VERSION`](super::SCHEMA_VERSION).
//!
//! bincode is not self-describing: a type whose `Deserialize` needs `deserialize_any`
//! (`serde_json::Value`, `#[serde(flatten)]`, untagged enums) cannot be stored, and a
//! `HashMap` must never be (its order varies from run to run; use a `BTreeMap` or a `Vec`).
use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The first bytes of every record the store writes.
pub const MAGIC: &[u8; 7] = b"IPIRMST";
/// Upper bound on one decoded record, so a damaged length prefix cannot ask for all memory.
pub const MAX_RECORD_BYTES: u64 = 1 << 30;

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .reject_trailing_bytes()
        .with_limit(MAX_RECORD_BYTES)
}

/// Why a record could not be decoded; the caller adds which key and which store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Too short, or the first bytes are not [`MAGIC`]: not something the store wrote.
    #[error("not an ipirm store record (no \"IPIRMST\" header)")]
    NotARecord,
    /// The envelope names this schema version (the caller decides if it can read it).
    #[error("record written with schema version {0}")]
    Version(u32),
    /// The body does not decode as the expected type.
    #[error("record body does not decode: {0}")]
    Body(String),
}

/// The bare bincode body of `value` (no envelope): the payload of a record artifact, which
/// lives inside an enveloped [`Artifact`](super::Artifact).
pub fn encode_body<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    options().serialize(value).map_err(|e| e.to_string())
}

/// Decodes a bare body written by [`encode_body`].
pub fn decode_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    options().deserialize(bytes).map_err(|e| e.to_string())
}

/// `value` in an envelope carrying `schema`.
pub fn encode<T: Serialize + ?Sized>(schema: u32, value: &T) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&schema.to_le_bytes());
    options()
        .serialize_into(&mut out, value)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// The schema version an envelope carries, without decoding the body.
pub fn schema_of(bytes: &[u8]) -> Result<u32, DecodeError> {
    if bytes.len() < MAGIC.len() + 4 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(DecodeError::NotARecord);
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(&bytes[MAGIC.len()..MAGIC.len() + 4]);
    Ok(u32::from_le_bytes(v))
}

/// Decodes an envelope whose schema version must be exactly `schema`
/// (else [`DecodeError::Version`] with the version found).
pub fn decode<T: DeserializeOwned>(schema: u32, bytes: &[u8]) -> Result<T, DecodeError> {
    let found = schema_of(bytes)?;
    if found != schema {
        return Err(DecodeError::Version(found));
    }
    decode_body(&bytes[MAGIC.len() + 4..]).map_err(DecodeError::Body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_header() {
        let v = (1u32, "a".to_string(), vec![0.5f64]);
        let b = encode(3, &v).unwrap();
        assert_eq!(&b[..7], MAGIC);
        assert_eq!(schema_of(&b), Ok(3));
        assert_eq!(decode::<(u32, String, Vec<f64>)>(3, &b).unwrap(), v);
        assert_eq!(
            decode::<(u32, String, Vec<f64>)>(4, &b),
            Err(DecodeError::Version(3))
        );
        assert_eq!(schema_of(b"xx"), Err(DecodeError::NotARecord));
        let mut trailing = b.clone();
        trailing.push(0);
        assert!(matches!(
            decode::<(u32, String, Vec<f64>)>(3, &trailing),
            Err(DecodeError::Body(_))
        ));
    }
}

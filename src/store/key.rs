//! Stage keys: what a cached result is filed under.
//!
//! A stage's key is the sha256 of its name and version, the canonical form of the *whole* config
//! section it reads, the keys of its input artifacts in order, and the crate version. Nothing
//! else: the device, the libtorch version, the git commit, the host and the wall time are recorded
//! in [`Provenance`](super::Provenance) but never keyed on.
//!
//! The canonical form comes from a serde serializer written for the purpose (not
//! `serde_json::Value`, which turns NaN and infinities into `null` and rounds `u128`): map and
//! struct keys are sorted, every integer type is one integer (a field that changes from `u32` to
//! `u64` keeps its key), floats are hashed by their IEEE-754 bit pattern (an `f32` widened to
//! `f64` first), so `0.5` and `0.5000001` differ and formatting never matters. The readable
//! form kept in [`Artifact::config_json`](super::Artifact::config_json) is compact JSON with
//! sorted keys, floats in shortest round-trip notation and non-finite floats as the strings
//! `"NaN"`, `"inf"`, `"-inf"`.
use serde::ser::{self, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Domain separation for the stage-key hash; bump the suffix if the hashed layout changes.
const KEY_DOMAIN: &[u8] = b"ipirm-stage-key-v1";

/// A config value in canonical form.
#[derive(Debug, Clone, PartialEq)]
pub enum Canon {
    Null,
    Bool(bool),
    Int(i128),
    /// Integers above `i128::MAX`.
    BigUint(u128),
    /// The bit pattern of the value as `f64`.
    Float(u64),
    Str(String),
    Bytes(Vec<u8>),
    Seq(Vec<Canon>),
    /// Entries sorted by key (see `sorted_map`), so the order of insertion (and of struct
    /// fields) does not matter.
    Map(Vec<(Canon, Canon)>),
}

impl Canon {
    /// The canonical form of any serializable value.
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Result<Canon> {
        value.serialize(CanonSerializer).map_err(|e| Error::Store(format!("config does not serialise canonically: {}", e.0)))
    }

    /// Unambiguous bytes for hashing: a type tag, then fixed-width or length-prefixed data.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Canon::Null => out.push(b'n'),
            Canon::Bool(b) => out.push(if *b { b't' } else { b'f' }),
            Canon::Int(i) => {
                out.push(b'i');
                out.extend_from_slice(&i.to_le_bytes());
            }
            Canon::BigUint(u) => {
                out.push(b'u');
                out.extend_from_slice(&u.to_le_bytes());
            }
            Canon::Float(bits) => {
                out.push(b'd');
                out.extend_from_slice(&bits.to_le_bytes());
            }
            Canon::Str(s) => {
                out.push(b's');
                put_bytes(out, s.as_bytes());
            }
            Canon::Bytes(b) => {
                out.push(b'b');
                put_bytes(out, b);
            }
            Canon::Seq(items) => {
                out.push(b'l');
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for item in items {
                    item.encode(out);
                }
            }
            Canon::Map(entries) => {
                out.push(b'm');
                out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
                for (k, v) in entries {
                    k.encode(out);
                    v.encode(out);
                }
            }
        }
    }

    /// Compact JSON with sorted keys (see the module docs for floats); a non-string map key is
    /// written as the string of its own JSON.
    pub fn to_json(&self) -> String {
        let mut s = String::new();
        self.write_json(&mut s);
        s
    }

    fn write_json(&self, out: &mut String) {
        match self {
            Canon::Null => out.push_str("null"),
            Canon::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Canon::Int(i) => out.push_str(&i.to_string()),
            Canon::BigUint(u) => out.push_str(&u.to_string()),
            Canon::Float(bits) => {
                let f = f64::from_bits(*bits);
                match serde_json::Number::from_f64(f) {
                    Some(n) => out.push_str(&n.to_string()),
                    None if f.is_nan() => out.push_str("\"NaN\""),
                    None if f > 0.0 => out.push_str("\"inf\""),
                    None => out.push_str("\"-inf\""),
                }
            }
            Canon::Str(s) => out.push_str(&serde_json::to_string(s).expect("a string serialises")),
            Canon::Bytes(b) => {
                out.push('[');
                for (i, x) in b.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&x.to_string());
                }
                out.push(']');
            }
            Canon::Seq(items) => {
                out.push('[');
                for (i, x) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    x.write_json(out);
                }
                out.push(']');
            }
            Canon::Map(entries) => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    match k {
                        Canon::Str(s) => out.push_str(&serde_json::to_string(s).expect("a string serialises")),
                        other => out.push_str(&serde_json::to_string(&other.to_json()).expect("a string serialises")),
                    }
                    out.push(':');
                    v.write_json(out);
                }
                out.push('}');
            }
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
}

/// Sorts entries by key: string keys by their text, other keys by their JSON (ties broken by
/// the canonical encoding, which is unique per key); two equal keys are an error.
fn sorted_map(entries: Vec<(Canon, Canon)>) -> std::result::Result<Canon, CanonError> {
    type SortKey = (String, Vec<u8>);
    let mut keyed: Vec<(SortKey, (Canon, Canon))> = entries
        .into_iter()
        .map(|(k, v)| {
            let mut b = Vec::new();
            k.encode(&mut b);
            let text = match &k {
                Canon::Str(s) => s.clone(),
                other => other.to_json(),
            };
            ((text, b), (k, v))
        })
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(w) = keyed.windows(2).find(|w| w[0].0 .1 == w[1].0 .1) {
        return Err(CanonError(format!("duplicate map key {}", (w[0].1).0.to_json())));
    }
    Ok(Canon::Map(keyed.into_iter().map(|(_, kv)| kv).collect()))
}

/// The canonical JSON text of a config section (what [`stage_key`] hashes, in readable form).
pub fn canonical_json<T: Serialize + ?Sized>(config: &T) -> Result<String> {
    Ok(Canon::of(config)?.to_json())
}

/// The key of a stage's result: hex sha256 over `stage`, `stage_version`, the canonical form of
/// the whole `config_section` the stage reads, the `inputs` (keys of the input artifacts, in the
/// order the stage uses them) and the crate version. Fails only if `config_section`'s
/// `Serialize` implementation fails (or a map has two equal keys).
pub fn stage_key<C: Serialize + ?Sized>(stage: &str, stage_version: u32, config_section: &C, inputs: &[&str]) -> Result<String> {
    Ok(key_from_canon(stage, stage_version, &Canon::of(config_section)?, inputs))
}

pub(crate) fn key_from_canon(stage: &str, stage_version: u32, config: &Canon, inputs: &[&str]) -> String {
    let mut buf = Vec::with_capacity(256);
    put_bytes(&mut buf, KEY_DOMAIN);
    put_bytes(&mut buf, stage.as_bytes());
    buf.extend_from_slice(&stage_version.to_le_bytes());
    config.encode(&mut buf);
    buf.extend_from_slice(&(inputs.len() as u64).to_le_bytes());
    for i in inputs {
        put_bytes(&mut buf, i.as_bytes());
    }
    put_bytes(&mut buf, env!("CARGO_PKG_VERSION").as_bytes());
    to_hex(&Sha256::digest(&buf))
}

/// Lower-case hex.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Inverse of [`to_hex`]; `None` on odd length or a non-hex digit.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

// ---------------------------------------------------------------------------------------------
// The serializer. It mirrors serde_json's data model (unit variants as strings, other variants
// as one-entry maps, `None` and `()` as null) so the JSON form reads like the config file.

#[derive(Debug)]
pub struct CanonError(String);

impl std::fmt::Display for CanonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for CanonError {}
impl ser::Error for CanonError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        CanonError(msg.to_string())
    }
}

type R = std::result::Result<Canon, CanonError>;

struct CanonSerializer;

fn variant_map(variant: &str, value: Canon) -> Canon {
    Canon::Map(vec![(Canon::Str(variant.to_string()), value)])
}

impl ser::Serializer for CanonSerializer {
    type Ok = Canon;
    type Error = CanonError;
    type SerializeSeq = SeqBuilder;
    type SerializeTuple = SeqBuilder;
    type SerializeTupleStruct = SeqBuilder;
    type SerializeTupleVariant = SeqBuilder;
    type SerializeMap = MapBuilder;
    type SerializeStruct = MapBuilder;
    type SerializeStructVariant = MapBuilder;

    fn serialize_bool(self, v: bool) -> R {
        Ok(Canon::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> R {
        Ok(Canon::Int(v.into()))
    }
    fn serialize_i16(self, v: i16) -> R {
        Ok(Canon::Int(v.into()))
    }
    fn serialize_i32(self, v: i32) -> R {
        Ok(Canon::Int(v.into()))
    }
    fn serialize_i64(self, v: i64) -> R {
        Ok(Canon::Int(v.into()))
    }
    fn serialize_i128(self, v: i128) -> R {
        Ok(Canon::Int(v))
    }
    fn serialize_u8(self, v: u8) -> R {
        Ok(Canon::Int(v.into()))
    }
    fn serialize_u16(self, v: u16) -> R {
        Ok(Canon::Int(v.into()))
    }
    fn serialize_u32(self, v: u32) -> R {
        Ok(Canon::Int(v.into()))
    }
    fn serialize_u64(self, v: u64) -> R {
        Ok(Canon::Int(v.into()))
    }
    fn serialize_u128(self, v: u128) -> R {
        Ok(i128::try_from(v).map_or(Canon::BigUint(v), Canon::Int))
    }
    fn serialize_f32(self, v: f32) -> R {
        Ok(Canon::Float(f64::from(v).to_bits()))
    }
    fn serialize_f64(self, v: f64) -> R {
        Ok(Canon::Float(v.to_bits()))
    }
    fn serialize_char(self, v: char) -> R {
        Ok(Canon::Str(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> R {
        Ok(Canon::Str(v.to_string()))
    }
    fn serialize_bytes(self, v: &[u8]) -> R {
        Ok(Canon::Bytes(v.to_vec()))
    }
    fn serialize_none(self) -> R {
        Ok(Canon::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> R {
        value.serialize(self)
    }
    fn serialize_unit(self) -> R {
        Ok(Canon::Null)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> R {
        Ok(Canon::Null)
    }
    fn serialize_unit_variant(self, _name: &'static str, _index: u32, variant: &'static str) -> R {
        Ok(Canon::Str(variant.to_string()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _name: &'static str, value: &T) -> R {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(self, _name: &'static str, _index: u32, variant: &'static str, value: &T) -> R {
        Ok(variant_map(variant, value.serialize(CanonSerializer)?))
    }
    fn serialize_seq(self, len: Option<usize>) -> std::result::Result<SeqBuilder, CanonError> {
        Ok(SeqBuilder { items: Vec::with_capacity(len.unwrap_or(0)), variant: None })
    }
    fn serialize_tuple(self, len: usize) -> std::result::Result<SeqBuilder, CanonError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> std::result::Result<SeqBuilder, CanonError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(self, _name: &'static str, _index: u32, variant: &'static str, len: usize) -> std::result::Result<SeqBuilder, CanonError> {
        Ok(SeqBuilder { items: Vec::with_capacity(len), variant: Some(variant) })
    }
    fn serialize_map(self, len: Option<usize>) -> std::result::Result<MapBuilder, CanonError> {
        Ok(MapBuilder { entries: Vec::with_capacity(len.unwrap_or(0)), pending: None, variant: None })
    }
    fn serialize_struct(self, _name: &'static str, len: usize) -> std::result::Result<MapBuilder, CanonError> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(self, _name: &'static str, _index: u32, variant: &'static str, len: usize) -> std::result::Result<MapBuilder, CanonError> {
        Ok(MapBuilder { entries: Vec::with_capacity(len), pending: None, variant: Some(variant) })
    }
}

struct SeqBuilder {
    items: Vec<Canon>,
    variant: Option<&'static str>,
}

impl SeqBuilder {
    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> std::result::Result<(), CanonError> {
        self.items.push(value.serialize(CanonSerializer)?);
        Ok(())
    }
    fn finish(self) -> R {
        let seq = Canon::Seq(self.items);
        Ok(match self.variant {
            Some(v) => variant_map(v, seq),
            None => seq,
        })
    }
}

impl ser::SerializeSeq for SeqBuilder {
    type Ok = Canon;
    type Error = CanonError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> std::result::Result<(), CanonError> {
        self.push(value)
    }
    fn end(self) -> R {
        self.finish()
    }
}
impl ser::SerializeTuple for SeqBuilder {
    type Ok = Canon;
    type Error = CanonError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> std::result::Result<(), CanonError> {
        self.push(value)
    }
    fn end(self) -> R {
        self.finish()
    }
}
impl ser::SerializeTupleStruct for SeqBuilder {
    type Ok = Canon;
    type Error = CanonError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> std::result::Result<(), CanonError> {
        self.push(value)
    }
    fn end(self) -> R {
        self.finish()
    }
}
impl ser::SerializeTupleVariant for SeqBuilder {
    type Ok = Canon;
    type Error = CanonError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> std::result::Result<(), CanonError> {
        self.push(value)
    }
    fn end(self) -> R {
        self.finish()
    }
}

struct MapBuilder {
    entries: Vec<(Canon, Canon)>,
    pending: Option<Canon>,
    variant: Option<&'static str>,
}

impl MapBuilder {
    fn finish(self) -> R {
        let map = sorted_map(self.entries)?;
        Ok(match self.variant {
            Some(v) => variant_map(v, map),
            None => map,
        })
    }
    fn field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> std::result::Result<(), CanonError> {
        self.entries.push((Canon::Str(key.to_string()), value.serialize(CanonSerializer)?));
        Ok(())
    }
}

impl ser::SerializeMap for MapBuilder {
    type Ok = Canon;
    type Error = CanonError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> std::result::Result<(), CanonError> {
        self.pending = Some(key.serialize(CanonSerializer)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> std::result::Result<(), CanonError> {
        let key = self.pending.take().ok_or_else(|| CanonError("map value without a key".into()))?;
        self.entries.push((key, value.serialize(CanonSerializer)?));
        Ok(())
    }
    fn end(self) -> R {
        self.finish()
    }
}
impl ser::SerializeStruct for MapBuilder {
    type Ok = Canon;
    type Error = CanonError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> std::result::Result<(), CanonError> {
        self.field(key, value)
    }
    fn end(self) -> R {
        self.finish()
    }
}
impl ser::SerializeStructVariant for MapBuilder {
    type Ok = Canon;
    type Error = CanonError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> std::result::Result<(), CanonError> {
        self.field(key, value)
    }
    fn end(self) -> R {
        self.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashMap};

    #[test]
    fn json_is_sorted_and_floats_exact() {
        #[derive(serde::Serialize)]
        struct C {
            z: f64,
            a: Option<u8>,
            m: HashMap<String, f32>,
            e: E,
        }
        #[derive(serde::Serialize)]
        enum E {
            V { y: i32, x: f64 },
        }
        let mut m = HashMap::new();
        m.insert("b".to_string(), 1.0);
        m.insert("a".to_string(), f32::NAN);
        let c = C { z: 0.1, a: None, m, e: E::V { y: -1, x: f64::NEG_INFINITY } };
        assert_eq!(canonical_json(&c).unwrap(), r#"{"a":null,"e":{"V":{"x":"-inf","y":-1}},"m":{"a":"NaN","b":1.0},"z":0.1}"#);
        // Same content, different insertion order: same key.
        let mut a = BTreeMap::new();
        a.insert(2, "x");
        a.insert(1, "y");
        let b: Vec<(i32, &str)> = vec![(1, "y"), (2, "x")];
        assert_eq!(stage_key("s", 1, &a, &[]).unwrap(), stage_key("s", 1, &a.clone(), &[]).unwrap());
        assert_ne!(stage_key("s", 1, &a, &[]).unwrap(), stage_key("s", 1, &b, &[]).unwrap());
        assert_eq!(from_hex(&to_hex(&[0, 255, 16])).unwrap(), vec![0, 255, 16]);
    }
}

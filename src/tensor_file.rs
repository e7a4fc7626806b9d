//! Tensors in the store: safetensors files with a metadata header, the format of every tensor
//! blob ([`Store::put_tensors`], [`Store::get_tensors`]), and [`TensorArtifact`], a value stored as
//! one ([`Store::get_typed`]). Built on the store's blobs, which know nothing of tensors. tch
//! writes no metadata, so writing goes through the `safetensors` crate; reading the metadata reads
//! the header alone ([`Store::tensor_meta`]: a checkpoint's epoch without its 100 MB of weights).
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

use safetensors::tensor::{Dtype, View};
use tch::{Kind, Tensor};

use crate::store::{Stage, Store};
use crate::{Error, Result};

/// The blob format tensors are stored in.
const FORMAT: &str = "safetensors";

impl Store {
    /// Stores named tensors as one safetensors blob for `stage`, with `meta` in its header
    /// (see [`Store::tensor_meta`]); returns the blob's digest.
    pub fn put_tensors(
        &self,
        stage: &Stage,
        tensors: &[(&str, &Tensor)],
        meta: &Meta,
    ) -> Result<String> {
        self.put_blob(stage, FORMAT, |path| write(path, tensors, meta))
    }

    /// The tensors stored under `key`, re-hashed first: `Ok(None)` if no such artifact,
    /// [`Error::Damaged`] if the blob is missing or its bytes no longer match the digest (then
    /// [`Store::invalidate`] it and recompute).
    pub fn get_tensors(&self, key: &str) -> Result<Option<Vec<(String, Tensor)>>> {
        self.get_blob(key)?.map(|path| read(key, &path)).transpose()
    }

    /// The value stored under `key` as a [`TensorArtifact`] (its tensors, hash-checked as by
    /// [`Store::get_tensors`], and its header); `Ok(None)` if no such artifact.
    pub fn get_typed<T: TensorArtifact>(&self, key: &str) -> Result<Option<T>> {
        let Some(path) = self.get_blob(key)? else {
            return Ok(None);
        };
        T::from_tensors(read(key, &path)?, &read_meta(&path)?).map(Some)
    }

    /// The metadata written with the tensors under `key`, from the blob's header alone (not
    /// re-hashed: [`Store::get_tensors`] checks the bytes); `Ok(None)` if no such artifact.
    pub fn tensor_meta(&self, key: &str) -> Result<Option<Meta>> {
        self.blob_path(key)?.map(|p| read_meta(&p)).transpose()
    }
}

/// Small facts about a tensor blob, as strings (safetensors' `__metadata__`).
pub type Meta = BTreeMap<String, String>;

/// A value stored as a safetensors blob: its tensors by name, its small facts in the header.
/// Each type's encoding is written beside the type.
pub trait TensorArtifact: Sized {
    /// Its tensors and header metadata.
    fn to_tensors(&self) -> (Vec<(String, Tensor)>, Meta);
    /// Read back from what [`TensorArtifact::to_tensors`] wrote (`meta`: the blob's header).
    fn from_tensors(named: Vec<(String, Tensor)>, meta: &Meta) -> Result<Self>;
}

/// Takes the tensor `name` out of `named` (a stored artifact's tensors); an error if absent.
pub fn take(named: &mut Vec<(String, Tensor)>, name: &str) -> Result<Tensor> {
    let i = named
        .iter()
        .position(|(n, _)| n == name)
        .ok_or_else(|| Error::Shape(format!("stored artifact lacks tensor `{name}`")))?;
    Ok(named.swap_remove(i).1)
}

/// The first floating-point tensor of `named` that holds a NaN or an infinity: its name, how many
/// such values it holds and how many values it has. What a checkpoint file read and an artifact
/// about to be stored are checked with.
pub fn first_non_finite(named: &[(String, Tensor)]) -> Result<Option<(&str, i64, i64)>> {
    for (name, t) in named {
        if t.is_floating_point() && !bool::try_from(t.f_isfinite()?.f_all()?)? {
            let bad = i64::try_from(t.f_isfinite()?.f_logical_not()?.f_sum(Kind::Int64)?)?;
            return Ok(Some((name, bad, t.numel() as i64)));
        }
    }
    Ok(None)
}

/// The one `__metadata__` entry the store writes (its value: the [`Meta`] map as JSON).
const META_KEY: &str = "ipirm";

/// The longest header [`read_meta`] accepts (safetensors' own limit).
const MAX_HEADER: u64 = 100 << 20;

struct Bytes {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Bytes {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn dtype(kind: Kind) -> Result<Dtype> {
    Ok(match kind {
        Kind::Bool => Dtype::BOOL,
        Kind::Uint8 => Dtype::U8,
        Kind::Int8 => Dtype::I8,
        Kind::Int16 => Dtype::I16,
        Kind::Int => Dtype::I32,
        Kind::Int64 => Dtype::I64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        k => {
            return Err(Error::Shape(format!(
                "a tensor of dtype {k:?} cannot be stored"
            )))
        }
    })
}

/// The tensors of the blob of `key` at `path` (its bytes already checked).
fn read(key: &str, path: &Path) -> Result<Vec<(String, Tensor)>> {
    Tensor::read_safetensors(path).map_err(|e| {
        Error::Store(format!(
            "artifact {key}: blob {} matches its digest but does not read as {FORMAT}: {e}",
            path.display()
        ))
    })
}

/// Writes `tensors` (any device; copied to the CPU) to `path` with `meta` in the header.
fn write(path: &Path, tensors: &[(&str, &Tensor)], meta: &Meta) -> Result<()> {
    let mut owned = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t.f_to_device(tch::Device::Cpu)?.f_contiguous()?;
        let numel = t.numel();
        let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut data, numel)?;
        let shape = t.size().iter().map(|&d| d as usize).collect();
        owned.push((
            name.to_string(),
            Bytes {
                dtype: dtype(t.kind())?,
                shape,
                data,
            },
        ));
    }
    // One entry holding the sorted map as JSON: the crate writes its metadata map in HashMap
    // order, so two entries would make the same content hash differently from run to run.
    let meta: Option<HashMap<String, String>> = (!meta.is_empty()).then(|| {
        HashMap::from([(
            META_KEY.to_string(),
            serde_json::to_string(meta).expect("strings serialise"),
        )])
    });
    safetensors::tensor::serialize_to_file(owned.iter().map(|(n, b)| (n.as_str(), b)), &meta, path)
        .map_err(|e| Error::file(path, "a writable safetensors file", e.to_string()))
}

/// The `__metadata__` of the safetensors file at `path`, reading only its header.
fn read_meta(path: &Path) -> Result<Meta> {
    let bad = |found: String| Error::file(path, "a safetensors file", found);
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|e| bad(format!("no header ({e})")))?;
    let len = u64::from_le_bytes(len);
    if len > MAX_HEADER {
        return Err(bad(format!("a header of {len} bytes")));
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header)
        .map_err(|e| bad(format!("a truncated header ({e})")))?;
    let v: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| bad(format!("a header that is not JSON ({e})")))?;
    let Some(text) = v
        .get("__metadata__")
        .and_then(|m| m.get(META_KEY))
        .and_then(|m| m.as_str())
    else {
        return Ok(Meta::new());
    };
    serde_json::from_str(text)
        .map_err(|e| bad(format!("metadata that is not a map of strings ({e})")))
}

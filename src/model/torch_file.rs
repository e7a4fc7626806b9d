//! Reading the tensors of a file PyTorch wrote with `torch.save(model.state_dict(), path)`:
//! the zip format (PyTorch ≥ 1.6), `<archive>/data.pkl` plus one raw little-endian file per
//! storage under `<archive>/data/`. libtorch's own unpickler turns the `OrderedDict` of a Python
//! state_dict into `None`, so this reads the pickle itself, with the small stack machine in
//! [`super::pickle`], and rebuilds each tensor from the storage, offset, size and stride the
//! pickle names. Nothing in the file is executed.
//!
//! A checkpoint is a file people download, so what reading one may cost is bounded by the file
//! and by fixed limits, each checked before the work it bounds: the pickle is at most
//! [`MAX_PICKLE_BYTES`], and the machine keeps its own limits (nesting, stack, memory). An
//! archive entry is inflated only up to the size its header declares, which for a storage must
//! be the size its tensors claim, and everything inflated from the archive or copied into
//! tensors together may be at most [`MAX_EXPANSION`] times the file's size plus
//! [`EXPANSION_ALLOWANCE`]: a decompression bomb is refused before it is inflated. Encrypted
//! entries are refused (the zip crate would panic on some).
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use tch::{Device, Kind, Tensor};

use super::pickle::{shorten, variant_name, Machine, PResult, Value};
use crate::{Error, Result};

/// The largest `data.pkl` read. A ResNet-50 state_dict's is 42 KB (about 130 bytes a tensor).
const MAX_PICKLE_BYTES: u64 = 16 << 20;
/// Entries inflated and tensors copied out of a file may take at most this many times its size,
/// plus [`EXPANSION_ALLOWANCE`]. `torch.save` stores its entries uncompressed, so a checkpoint
/// takes about twice its size (each storage, then its tensors); a re-zipped one deflates floats
/// by ~10%. A deflate stream can inflate 1000-fold.
const MAX_EXPANSION: u64 = 16;
/// What any file may inflate to beyond [`MAX_EXPANSION`] times its size: the pickle and small
/// tensors of zeros, which deflate far more than weights.
const EXPANSION_ALLOWANCE: u64 = 64 << 20;
/// The most dimensions a tensor may have (PyTorch's own tensors use a handful).
const MAX_DIMS: usize = 64;

/// How many elements a view of a storage of `numel` elements (`offset`, `size`, `stride`, from
/// the file) has, if it stays inside the storage; computed without overflow, so a crafted view
/// is refused here rather than by libtorch.
fn view_elements(numel: i64, offset: i64, size: &[i64], stride: &[i64]) -> PResult<i64> {
    if size.len() > MAX_DIMS || size.len() != stride.len() {
        return Err(format!(
            "{} sizes and {} strides (at most {MAX_DIMS} of each, as many strides as sizes)",
            size.len(),
            stride.len()
        ));
    }
    let shape = format!("size {size:?}, stride {stride:?}, offset {offset}");
    if offset < 0 || size.iter().chain(stride).any(|&x| x < 0) {
        return Err(format!("a negative size, stride or offset ({shape})"));
    }
    let elements = size
        .iter()
        .try_fold(1i64, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("more elements than a 64-bit count holds ({shape})"))?;
    let inside = if elements == 0 {
        offset <= numel
    } else {
        // The last element's index, offset + Σ (size - 1) · stride (every size is ≥ 1 here),
        // must be in the storage.
        size.iter()
            .zip(stride)
            .try_fold(offset, |at, (&n, &s)| {
                at.checked_add((n - 1).checked_mul(s)?)
            })
            .is_some_and(|last| last < numel)
    };
    if !inside {
        return Err(format!(
            "a view reaching past its storage of {numel} elements ({shape})"
        ));
    }
    Ok(elements)
}

/// The size an archive entry must have.
enum Expect {
    /// Exactly this many bytes (a storage: what its tensors claim).
    Exactly(u64),
    /// At most this many (the pickle).
    AtMost(u64),
}

/// The zip archive of a `.pth`, read within a budget of bytes set by the file's size.
struct Archive {
    zip: zip::ZipArchive<std::fs::File>,
    /// Each entry's index in the archive, by name.
    entries: HashMap<String, usize>,
    file_len: u64,
    /// What may still be inflated from entries or copied into tensors, in bytes.
    left: u64,
}

impl Archive {
    /// The archive in `file`, or why it is not one.
    fn open(file: std::fs::File) -> PResult<Archive> {
        let file_len = file.metadata().map_err(|e| e.to_string())?.len();
        let mut zip = zip::ZipArchive::new(file).map_err(|e| {
            format!(
                "not a zip archive ({e}); an older torch.save format? re-save it with a recent \
                 PyTorch"
            )
        })?;
        let mut entries = HashMap::new();
        for i in 0..zip.len() {
            // Raw: the entry's header only, nothing inflated or decrypted.
            let name = zip
                .by_index_raw(i)
                .map_err(|e| format!("a damaged zip archive ({e})"))?
                .name()
                .to_string();
            if entries.insert(name.clone(), i).is_some() {
                return Err(format!("two zip entries named {}", shorten(&name)));
            }
        }
        Ok(Archive {
            zip,
            entries,
            file_len,
            left: file_len
                .saturating_mul(MAX_EXPANSION)
                .saturating_add(EXPANSION_ALLOWANCE),
        })
    }

    /// Takes `bytes` (of `what`) from the budget, or refuses.
    fn spend(&mut self, bytes: u64, what: &str) -> PResult<()> {
        if bytes > self.left {
            return Err(format!(
                "{what} {bytes} bytes, beyond what a file of {} bytes may inflate to \
                 ({MAX_EXPANSION}× its size plus {} MiB in all, {} bytes of it left): a \
                 decompression bomb or a damaged file",
                self.file_len,
                EXPANSION_ALLOWANCE >> 20,
                self.left
            ));
        }
        self.left -= bytes;
        Ok(())
    }

    /// The bytes of entry `name`, whose header must declare the size `expect` asks for and
    /// which is inflated no further than that.
    fn read(&mut self, name: &str, expect: Expect) -> PResult<Vec<u8>> {
        let &i = self.entries.get(name).ok_or("missing")?;
        let (declared, compressed) = {
            let raw = self.zip.by_index_raw(i).map_err(|e| e.to_string())?;
            if aes_encrypted(raw.extra_data()) {
                return Err("encrypted (password-protected), which torch.save never does".into());
            }
            match raw.compression() {
                zip::CompressionMethod::Stored | zip::CompressionMethod::Deflated => {}
                m => {
                    return Err(format!(
                        "compressed with {m}, which torch.save does not use"
                    ))
                }
            }
            (raw.size(), raw.compressed_size())
        };
        if compressed > self.file_len {
            return Err(format!(
                "declared as {compressed} compressed bytes in a file of {}",
                self.file_len
            ));
        }
        match expect {
            Expect::Exactly(n) if declared != n => {
                return Err(format!("of {declared} bytes where its tensors need {n}"))
            }
            Expect::AtMost(n) if declared > n => {
                return Err(format!("of {declared} bytes, beyond the limit of {n}"))
            }
            _ => {}
        }
        self.spend(declared, "inflating to")?;
        let mut f = self.zip.by_index(i).map_err(|e| match e {
            zip::result::ZipError::UnsupportedArchive(m)
                if m == zip::result::ZipError::PASSWORD_REQUIRED =>
            {
                "encrypted (password-protected), which torch.save never does".to_string()
            }
            e => e.to_string(),
        })?;
        let mut bytes = Vec::with_capacity(declared as usize);
        (&mut f)
            .take(declared)
            .read_to_end(&mut bytes)
            .map_err(|e| e.to_string())?;
        if (bytes.len() as u64) < declared {
            return Err(format!(
                "ending after {} of its declared {declared} bytes",
                bytes.len()
            ));
        }
        // One byte more: a stream going on past its declared size is refused after one byte
        // rather than inflated, and a stream ending there has its checksum checked.
        match f.read(&mut [0u8; 1]) {
            Ok(0) => Ok(bytes),
            Ok(_) => Err(format!("inflating past its declared {declared} bytes")),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Whether a zip entry's extra field holds WinZip's AES encryption record (0x9901), which the
/// zip crate cannot decrypt and, without a password, does not refuse by itself.
fn aes_encrypted(extra: &[u8]) -> bool {
    let mut rest = extra;
    while rest.len() >= 4 {
        let id = u16::from_le_bytes([rest[0], rest[1]]);
        let len = u16::from_le_bytes([rest[2], rest[3]]) as usize;
        if id == 0x9901 {
            return true;
        }
        rest = rest.get(4 + len..).unwrap_or_default();
    }
    false
}

/// The named tensors of the `torch.save`d state_dict at `path`, on the CPU, in file order.
pub fn read_state_dict(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let expected = "a PyTorch state_dict saved by torch.save (zip format, PyTorch ≥ 1.6)";
    let bad = |found: String| Error::file(path, expected, found);
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut archive = Archive::open(file).map_err(bad)?;
    let pkl_name = archive
        .entries
        .iter()
        .filter(|(n, _)| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .min_by_key(|(_, &i)| i)
        .map(|(n, _)| n.clone())
        .ok_or_else(|| bad("a zip archive without <name>/data.pkl".into()))?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    let pkl = archive
        .read(&pkl_name, Expect::AtMost(MAX_PICKLE_BYTES))
        .map_err(|e| bad(format!("{pkl_name} {e}")))?;
    let top = Machine::new(&pkl)
        .run()
        .map_err(|e| bad(format!("{e} in {pkl_name}")))?;
    drop(pkl);
    let Value::Dict(entries) = top else {
        return Err(bad(format!(
            "a pickle of {} rather than a dict",
            variant_name(&top)
        )));
    };
    // Each storage read, with the dtype and length its first tensor claimed for it.
    let mut storages: HashMap<String, (Tensor, Kind, i64)> = HashMap::new();
    let mut out = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        let Value::Str(name) = k else {
            return Err(bad("a state_dict key that is not a string".into()));
        };
        // Names and keys in messages are shortened: a hostile file's may be megabytes.
        let shown = shorten(&name);
        let Value::Tensor {
            storage,
            offset,
            size,
            stride,
        } = v
        else {
            return Err(bad(format!(
                "entry `{shown}` holding a {} rather than a tensor",
                variant_name(&v)
            )));
        };
        let Value::Storage { kind, key, numel } = *storage else {
            unreachable!("checked when rebuilt")
        };
        let elt = kind.elt_size_in_bytes() as u64;
        if let Some(&(_, k, n)) = storages.get(&key) {
            if (k, n) != (kind, numel) {
                return Err(bad(format!(
                    "tensor `{shown}` claiming storage {} as {numel} elements of {kind:?}, \
                     where an earlier tensor claimed {n} of {k:?}",
                    shorten(&key)
                )));
            }
        } else {
            let want = u64::try_from(numel)
                .ok()
                .and_then(|n| n.checked_mul(elt))
                .ok_or_else(|| bad(format!("tensor `{shown}` of a storage of {numel} elements")))?;
            let bytes = archive
                .read(&format!("{prefix}data/{key}"), Expect::Exactly(want))
                .map_err(|e| {
                    bad(format!(
                        "storage {prefix}data/{} (of tensor `{shown}`, {numel} elements of \
                         {kind:?}) {e}",
                        shorten(&key)
                    ))
                })?;
            let t = Tensor::f_from_data_size(&bytes, &[numel], kind)
                .map_err(|e| bad(format!("tensor `{shown}` that libtorch refuses ({e})")))?;
            storages.insert(key.clone(), (t, kind, numel));
        }
        let elements = view_elements(numel, offset, &size, &stride)
            .map_err(|e| bad(format!("tensor `{shown}` with {e}")))?;
        archive
            .spend((elements as u64).saturating_mul(elt), "taking")
            .map_err(|e| bad(format!("tensor `{shown}` {e}")))?;
        let t = storages[&key]
            .0
            .f_as_strided(&size, &stride, Some(offset))
            .and_then(|t| t.f_contiguous())
            .and_then(|t| t.f_to_device(Device::Cpu))
            .map_err(|e| bad(format!("tensor `{shown}` that libtorch refuses ({e})")))?;
        out.push((name, t));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_are_checked_without_overflow() {
        assert_eq!(view_elements(6, 1, &[2, 2], &[3, 1]), Ok(4));
        assert_eq!(view_elements(6, 0, &[2, 3], &[3, 1]), Ok(6));
        assert_eq!(view_elements(6, 6, &[0, 3], &[3, 1]), Ok(0));
        assert_eq!(view_elements(1, 0, &[1000, 1000], &[0, 0]), Ok(1_000_000));
        for (offset, size, stride) in [
            (0, vec![2, 3], vec![3, 2]),               // one past the end
            (i64::MAX - 2, vec![2], vec![1]),          // the offset overflows
            (0, vec![2, 2], vec![i64::MAX, 1]),        // a stride overflows
            (0, vec![i64::MAX, i64::MAX], vec![0, 0]), // the element count overflows
            (-1, vec![1], vec![1]),                    // a negative offset
            (0, vec![-1], vec![1]),                    // a negative size
            (0, vec![2], vec![-1]),                    // a negative stride
            (0, vec![2, 2], vec![1]),                  // as many strides as sizes
            (0, vec![1; 65], vec![1; 65]),             // too many dimensions
            (7, vec![0], vec![1]),                     // an empty view past the end
        ] {
            assert!(
                view_elements(6, offset, &size, &stride).is_err(),
                "{offset} {size:?} {stride:?}"
            );
        }
    }

    #[test]
    fn aes_records_are_found_in_extra_fields() {
        assert!(!aes_encrypted(b""));
        assert!(!aes_encrypted(b"\x01\x00\x08\x00\0\0\0\0\0\0\0\0"));
        assert!(aes_encrypted(
            b"\x01\x00\x08\x00\0\0\0\0\0\0\0\0\x01\x99\x07\x00\x02\x00AE\x03\x08\x00"
        ));
        assert!(!aes_encrypted(b"\x01\x00\xff\xff\x01\x99"));
    }
}

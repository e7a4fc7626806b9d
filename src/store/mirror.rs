//! A file per index entry under `meta/`, so the index can be rebuilt when sled's own files are
//! lost or damaged (`ipirm store repair`).
//!
//! ```text
//! meta/artifacts/ab/<key>   the enveloped Artifact, the same bytes the index holds
//! meta/runs/<run id>        the enveloped RunRecord
//! meta/complete             written once every index entry has its file (older stores are
//!                           brought up to date when first opened by this version)
//! ```
//! Order of writes: an entry's file is written (temporary file, fsync, rename) before the index
//! entry, and removed only after the index entry's removal is flushed. A crash in between leaves a
//! file whose index entry is missing: [`crate::store::Store::repair`] restores it, which is right,
//! since its blob was installed before either was written.
use std::path::{Path, PathBuf};

use super::fault;
use crate::{Error, Result};

pub(crate) const META_DIR: &str = "meta";
const ARTIFACTS: &str = "artifacts";
const RUNS: &str = "runs";
const COMPLETE: &str = "complete";

/// Where the file of artifact `key` lives.
pub(crate) fn artifact_path(root: &Path, key: &str) -> PathBuf {
    root.join(META_DIR)
        .join(ARTIFACTS)
        .join(key.get(..2).unwrap_or("__"))
        .join(file_name(key))
}

/// Where the file of run `id` lives.
pub(crate) fn run_path(root: &Path, id: &str) -> PathBuf {
    root.join(META_DIR).join(RUNS).join(file_name(id))
}

/// `name` itself when it is a safe file name (letters, digits, `-`, `_`, `.`, not starting with a
/// dot), else `x` and its hex.
fn file_name(name: &str) -> String {
    let safe = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if safe {
        name.to_string()
    } else {
        format!("x{}", hex::encode(name.as_bytes()))
    }
}

/// Writes `bytes` to `path` atomically (temporary file in `root/tmp`, fsync, rename).
pub(crate) fn write(root: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    fault!("store::meta-write");
    let dir = path.parent().expect("meta files live in a folder");
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = super::tmp_file(root);
    let written = (|| {
        use std::io::Write;
        let mut f = std::fs::File::create_new(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Removes a meta file; an absent one is fine.
pub(crate) fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Whether every index entry of the store has its file.
pub(crate) fn is_complete(root: &Path) -> bool {
    root.join(META_DIR).join(COMPLETE).is_file()
}

pub(crate) fn mark_complete(root: &Path) -> Result<()> {
    write(
        root,
        &root.join(META_DIR).join(COMPLETE),
        b"every index entry has its file here\n",
    )
}

/// The files of every artifact, then of every run, sorted by path.
pub(crate) fn list(root: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let arts = super::commands::files_under(&root.join(META_DIR).join(ARTIFACTS))?;
    let runs = super::commands::files_under(&root.join(META_DIR).join(RUNS))?;
    Ok((arts, runs))
}

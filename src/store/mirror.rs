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
    let tmp = super::blobs::tmp_file(root);
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

/// What the index lacks that the files say the store holds: entries with a file under `meta/`
/// and no index entry, or blob files while the index lists no artifact and no run (its meta
/// files lost too). `None` when they agree. A crash between a meta file's write and its index entry leaves
/// one such entry, which `ipirm store repair` restores like a lost index.
pub(crate) fn index_gaps(
    root: &Path,
    artifact_keys: &[String],
    run_ids: &[String],
) -> Result<Option<String>> {
    use std::collections::BTreeSet;
    let (arts, runs) = list(root)?;
    let names =
        |keys: &[String]| -> BTreeSet<String> { keys.iter().map(|k| file_name(k)).collect() };
    let (indexed_arts, indexed_runs) = (names(artifact_keys), names(run_ids));
    let missing = |files: &[PathBuf], indexed: &BTreeSet<String>| {
        files
            .iter()
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| !indexed.contains(n))
            })
            .count()
    };
    let (lost_arts, lost_runs) = (missing(&arts, &indexed_arts), missing(&runs, &indexed_runs));
    if lost_arts + lost_runs > 0 {
        return Ok(Some(format!(
            "the index of store {} lacks {lost_arts} of the {} artifacts and {lost_runs} of the {} runs that its meta files record (a lost or damaged index); `ipirm store repair` rebuilds it",
            root.display(),
            arts.len(),
            runs.len()
        )));
    }
    // (A run records itself before its first blob, so blobs under an index without runs were
    // not left by a crash.)
    if artifact_keys.is_empty() && run_ids.is_empty() {
        let blobs = super::commands::files_under(&root.join(super::blobs::OBJECTS_DIR))?.len();
        if blobs > 0 {
            return Ok(Some(format!(
                "the index of store {} is empty while {blobs} blob files are present under objects/ (a lost index, and no meta files to rebuild it from: `ipirm store repair --from EXPORT_DIR` restores an export)",
                root.display()
            )));
        }
    }
    Ok(None)
}

/// The files of every artifact, then of every run, sorted by path.
pub(crate) fn list(root: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let arts = super::commands::files_under(&root.join(META_DIR).join(ARTIFACTS))?;
    let runs = super::commands::files_under(&root.join(META_DIR).join(RUNS))?;
    Ok((arts, runs))
}

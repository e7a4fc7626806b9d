//! A file per index entry under `meta/`, from which opening the store restores an entry a crash
//! left out of the index, and `ipirm store repair` rebuilds an index sled cannot open.
//!
//! ```text
//! meta/artifacts/ab/<key>   the enveloped Artifact, the same bytes the index holds
//! meta/runs/<run id>        the enveloped RunRecord
//! meta/complete             written once every index entry has its file (older stores are
//!                           brought up to date when first opened by this version)
//! ```
//! Order of writes: an entry's file is written (temporary file, fsync, rename) before the index
//! entry, and removed before the index entry is. So a file whose index entry is missing was left
//! by a put that a crash interrupted (its blob was installed before either was written), or by a
//! lost index: opening the store restores such entries (`repair::restore_unindexed`), and a crash
//! in a removal leaves an index entry without its file, which the next removal finishes. Opening
//! a writable store also writes the file of any index entry that lacks one.
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

/// The files of the entries the index lacks, given the artifact keys and run ids it has:
/// (artifacts, runs).
pub(crate) fn unindexed(
    root: &Path,
    artifact_keys: &[String],
    run_ids: &[String],
) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let (arts, runs) = list(root)?;
    let lacking = |files: Vec<PathBuf>, ids: &[String]| -> Vec<PathBuf> {
        let indexed: std::collections::BTreeSet<String> =
            ids.iter().map(|k| file_name(k)).collect();
        let name = |p: &PathBuf| p.file_name().and_then(|n| n.to_str()).map(str::to_string);
        files
            .into_iter()
            .filter(|p| name(p).is_some_and(|n| !indexed.contains(&n)))
            .collect()
    };
    Ok((lacking(arts, artifact_keys), lacking(runs, run_ids)))
}

/// What the index lacks that the files say the store holds: entries with a file under `meta/`
/// and no index entry (which a writable store restores when opened), or blob files while the
/// index lists no artifact and no run (its meta files lost too). `None` when they agree.
pub(crate) fn index_gaps(
    root: &Path,
    artifact_keys: &[String],
    run_ids: &[String],
) -> Result<Option<String>> {
    let (arts, runs) = unindexed(root, artifact_keys, run_ids)?;
    if !arts.is_empty() || !runs.is_empty() {
        return Ok(Some(format!(
            "the index of store {} lacks {} artifacts and {} runs that its meta files record (an interrupted write or a lost index, restored when the store is opened writable); `ipirm store repair` rebuilds it",
            root.display(),
            arts.len(),
            runs.len()
        )));
    }
    // (A run records itself before its first blob, so blobs under an index without runs were
    // not left by a crash.)
    if artifact_keys.is_empty() && run_ids.is_empty() {
        let blobs = super::blobs::files_under(&root.join(super::blobs::OBJECTS_DIR))?.len();
        if blobs > 0 {
            return Ok(Some(format!(
                "the index of store {} is empty while {blobs} blob files are present under objects/ (a lost index, and no meta files to rebuild it from: `ipirm store repair --from EXPORT_DIR` restores an export)",
                root.display()
            )));
        }
    }
    Ok(None)
}

/// Moves `files` (under `root/meta/`) to the same places under `root/<dir>/`; returns that folder.
pub(crate) fn move_aside(root: &Path, files: &[PathBuf], dir: &str) -> Result<PathBuf> {
    let aside = root.join(dir);
    for f in files {
        let to = aside.join(f.strip_prefix(root.join(META_DIR)).unwrap_or(f));
        let parent = to.parent().expect("a file in a folder");
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        std::fs::rename(f, &to).map_err(|e| Error::io(f, e))?;
    }
    Ok(aside)
}

/// The files of every artifact, then of every run, sorted by path.
pub(crate) fn list(root: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let arts = super::blobs::files_under(&root.join(META_DIR).join(ARTIFACTS))?;
    let runs = super::blobs::files_under(&root.join(META_DIR).join(RUNS))?;
    Ok((arts, runs))
}

//! Content addressing: blobs named by the sha256 of their bytes under `objects/`, written to
//! `tmp/`, fsynced and hashed, checked against their digest when read; and the walk of a folder's
//! files (`objects/` and `tmp/` for `verify` and `gc`, `meta/` for `mirror`).
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::{Error, Result};

pub(super) const OBJECTS_DIR: &str = "objects";
pub(super) const TMP_DIR: &str = "tmp";

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Where the blob with `digest` lives under the store folder `root`.
pub(crate) fn object_path(root: &Path, digest: &str) -> PathBuf {
    root.join(OBJECTS_DIR)
        .join(digest.get(..2).unwrap_or("__"))
        .join(digest)
}

/// (sha256 hex, size) of a file.
pub(crate) fn hash_file(path: &Path) -> Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let bytes = File::open(path)
        .and_then(|mut f| std::io::copy(&mut f, &mut hasher))
        .map_err(|e| Error::io(path, e))?;
    Ok((hex::encode(hasher.finalize()), bytes))
}

/// What [`Error::Damaged`] says was found in place of a missing blob file.
pub(super) const NO_FILE: &str = "no such file";

/// Checks the blob file of `key` against its digest: [`Error::Damaged`] if missing or changed.
pub(super) fn check_blob(key: &str, path: &Path, digest: &str, bytes: u64) -> Result<()> {
    judge(key, path, digest, bytes, hash_file(path))
}

/// Copies the blob of `key` from `src` into the new file `dest`, fsynced, then hashes the copy:
/// [`Error::Damaged`] (and no `dest`) unless it has `digest` and `bytes`.
pub(super) fn copy_blob(
    key: &str,
    src: &Path,
    dest: &Path,
    digest: &str,
    bytes: u64,
) -> Result<()> {
    // The copy is hashed, not its source: what is checked is what landed.
    let found = (|| {
        let mut from = File::open(src).map_err(|e| Error::io(src, e))?;
        let mut to = File::create_new(dest).map_err(|e| Error::io(dest, e))?;
        std::io::copy(&mut from, &mut to)
            .and_then(|_| to.sync_all())
            .map_err(|e| Error::io(dest, e))?;
        hash_file(dest)
    })();
    let checked = judge(key, src, digest, bytes, found);
    if checked.is_err() {
        let _ = std::fs::remove_file(dest);
    }
    checked
}

/// `found` (a blob's sha256 and size, or why it could not be read) against what the index records.
fn judge(
    key: &str,
    path: &Path,
    digest: &str,
    bytes: u64,
    found: Result<(String, u64)>,
) -> Result<()> {
    let damaged = |found: String| Error::Damaged {
        key: key.to_string(),
        file: path.to_path_buf(),
        expected: format!("sha256 {digest} ({bytes} bytes)"),
        found,
    };
    match found {
        Ok((d, n)) if d == digest && n == bytes => Ok(()),
        Ok((d, n)) => Err(damaged(format!("sha256 {d} ({n} bytes)"))),
        Err(Error::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {
            Err(damaged(NO_FILE.into()))
        }
        Err(e) => Err(e),
    }
}

/// A fresh temporary file name under `root/tmp`.
pub(crate) fn tmp_file(root: &Path) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    root.join(TMP_DIR).join(format!(
        "{}.{}.{nanos}.part",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Whether this process can create files in the existing folder `root` (probed by creating and
/// removing one).
pub(super) fn is_writable(root: &Path) -> Result<bool> {
    let probe = root.join(format!(
        ".write-probe.{}.{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    match File::create_new(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(true)
        }
        Err(e)
            if e.kind() == std::io::ErrorKind::PermissionDenied || e.raw_os_error() == Some(30) =>
        {
            Ok(false)
        }
        Err(e) => Err(Error::io(root, e)),
    }
}

/// Removes the file at `path` (a blob, a temp or a meta file); an absent one is fine.
pub(super) fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Every file under `dir` (recursively), sorted; none if `dir` does not exist.
pub(crate) fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(dir).min_depth(1) {
        match e {
            Ok(e) if !e.file_type().is_dir() => out.push(e.into_path()),
            Ok(_) => {}
            Err(e) if e.depth() == 0 && !dir.exists() => {}
            Err(e) => return Err(Error::io(e.path().unwrap_or(dir).to_path_buf(), e.into())),
        }
    }
    out.sort();
    Ok(out)
}

/// The files among `objects` (files under `root/objects/`) that are not the blob of a digest
/// `used` accepts: orphans for `verify`, what `gc` removes.
pub(super) fn unused_objects(
    root: &Path,
    objects: Vec<PathBuf>,
    used: impl Fn(&str) -> bool,
) -> Vec<PathBuf> {
    objects
        .into_iter()
        .filter(|p| {
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| used(n) && object_path(root, n) == *p)
        })
        .collect()
}

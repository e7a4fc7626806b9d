//! Content addressing: blobs named by the sha256 of their bytes under `objects/`, written to
//! `tmp/` while hashed and fsynced, checked against their digest when read.
use std::fs::File;
use std::io::{Read, Write};
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

/// Copies `src` into a new file `tmp` while hashing it, then fsyncs; returns (digest, size).
pub(super) fn write_tmp(tmp: &Path, src: &mut dyn Read) -> Result<(String, u64)> {
    let mut f = File::create_new(tmp).map_err(|e| Error::io(tmp, e))?;
    let r = hash_stream(src, Some(&mut f)).map_err(|e| match e {
        StreamError::Read(e) => Error::Store(format!(
            "reading the blob's source for {}: {e}",
            tmp.display()
        )),
        StreamError::Write(e) => Error::io(tmp, e),
    })?;
    f.sync_all().map_err(|e| Error::io(tmp, e))?;
    Ok(r)
}

/// (sha256 hex, size) of a file.
pub(crate) fn hash_file(path: &Path) -> Result<(String, u64)> {
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    hash_stream(&mut f, None)
        .map_err(|(StreamError::Read(e) | StreamError::Write(e))| Error::io(path, e))
}

enum StreamError {
    Read(std::io::Error),
    Write(std::io::Error),
}

/// The one read loop: hashes `src` to its end, copying it into `dst` when given.
fn hash_stream(
    src: &mut dyn Read,
    mut dst: Option<&mut File>,
) -> std::result::Result<(String, u64), StreamError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StreamError::Read(e)),
        };
        hasher.update(&buf[..n]);
        if let Some(f) = dst.as_mut() {
            f.write_all(&buf[..n]).map_err(StreamError::Write)?;
        }
        total += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), total))
}

/// What [`Error::Damaged`] says was found in place of a missing blob file.
pub(super) const NO_FILE: &str = "no such file";

/// Checks the blob file of `key` against its digest: [`Error::Damaged`] if missing or changed.
pub(super) fn check_blob(key: &str, path: &Path, digest: &str, bytes: u64) -> Result<()> {
    judge(key, path, digest, bytes, hash_file(path))
}

/// Copies the blob of `key` from `src` into the new file `dest`, hashing it on the way:
/// [`Error::Damaged`] (and no `dest`) unless it has `digest` and `bytes`.
pub(super) fn copy_blob(
    key: &str,
    src: &Path,
    dest: &Path,
    digest: &str,
    bytes: u64,
) -> Result<()> {
    let found = File::open(src)
        .map_err(|e| Error::io(src, e))
        .and_then(|mut f| write_tmp(dest, &mut f));
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

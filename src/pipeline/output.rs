//! Where jobs write their files: checked before any work, JSON written pretty.
use std::path::Path;

use serde::Serialize;

use crate::{Error, Result};

/// Writes `value` as pretty JSON.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("serialisable");
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

/// Fails unless a file can be written at `path` (named by `flag` in the message): its folder
/// exists and takes new files, and `path` is not a folder. Checked before long work, so a typo
/// costs nothing. Leaves nothing behind.
pub fn check_output_file(path: &Path, flag: &str) -> Result<()> {
    if path.is_dir() {
        return Err(Error::file(
            path,
            format!("a file path for {flag}"),
            "a folder",
        ));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(Error::file(
            dir,
            format!("an existing folder for {flag} {}", path.display()),
            "no such folder",
        ));
    }
    let probe = dir.join(format!(".ipirm-write-probe-{}", std::process::id()));
    std::fs::File::create(&probe).map_err(|e| {
        Error::file(
            dir,
            format!("a writable folder for {flag} {}", path.display()),
            e.to_string(),
        )
    })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Fails if `path` (named by `flag`) exists and is not a folder: a folder is made there, or
/// written into. Checked before any work.
pub fn check_output_dir(path: &Path, flag: &str) -> Result<()> {
    if path.exists() && !path.is_dir() {
        return Err(Error::file(
            path,
            format!("a folder (new or existing) for {flag}"),
            "a file",
        ));
    }
    Ok(())
}

/// Fails if `output` (`--out`) names the file `input` (named by `in_flag`): writing it would
/// destroy what is read.
pub fn check_not_the_input(input: &Path, output: &Path, in_flag: &str) -> Result<()> {
    if !same_file(input, output) {
        return Ok(());
    }
    Err(Error::file(
        output,
        format!("an --out path other than {in_flag} (the output would overwrite the input)"),
        format!("the same file as {}", input.display()),
    ))
}

/// Whether `a` and `b` are one file (one device and inode: a hard link or a symlink to it
/// counts); `false` when `b` does not exist yet.
fn same_file(a: &Path, b: &Path) -> bool {
    same_file::is_same_file(a, b).unwrap_or(false)
}

//! Index entries restored from the files under `meta/` (see `mirror`): those a crash or a lost
//! index left out, each time a store is opened writable ([`restore_unindexed`]), and every one,
//! into a new index, by `ipirm store repair` when sled's own files are damaged (optionally adding
//! an export).
use std::path::{Path, PathBuf};

use super::blobs::{check_blob, object_path};
use super::index::{Entry, Index};
use super::key::NOT_ITS_OWN_KEY;
use super::lock::{self, INDEX_DIR};
use super::transfer::Export;
use super::{
    codec, compact_time, mirror, now_secs, Artifact, ArtifactKind, ImportReport, RunRecord, Store,
    SCHEMA_VERSION,
};
use crate::{Error, Result};

/// What [`Store::repair`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RepairReport {
    /// Where the old index was moved (nothing is deleted), if there was one.
    pub old_index: Option<PathBuf>,
    /// What the new index got from the meta files.
    pub restored: Restored,
    /// What importing the export added, when one was given.
    pub imported: Option<ImportReport>,
}

impl Store {
    /// Rebuilds the index of the store at `root` from its `meta/` files: the old `index/` is
    /// moved aside (to `index.before-repair-<time>`), a new one is written with every artifact whose
    /// meta file decodes and whose blob is present and matches its digest, and every run (the
    /// files left out are moved to `meta.left-out-<time>/`); then, if `export` is given, that
    /// export is imported on top ([`Store::import`]). Fails if another process holds the index,
    /// or if the export cannot be read or a blob of it does not match its digest: both are
    /// checked before the old index moves.
    pub fn repair(root: impl AsRef<Path>, export: Option<&Path>) -> Result<RepairReport> {
        let root = root.as_ref();
        if !root.join(mirror::META_DIR).is_dir() && export.is_none() {
            return Err(Error::file(
                root.join(mirror::META_DIR),
                "the store's meta files (written by ipirm 0.1 since the store gained `repair`)",
                "no such folder; repair from an export instead: `ipirm store repair --from DIR`",
            ));
        }
        let index = root.join(INDEX_DIR);
        if index.exists() {
            ensure_unheld(&index)?;
        }
        // The export is read and checked before anything of the store moves.
        let export = export.map(|dir| Export::read(root, dir)).transpose()?;
        let old_index = if index.exists() {
            let aside = root.join(format!(
                "{INDEX_DIR}.before-repair-{}",
                compact_time(now_secs())
            ));
            std::fs::rename(&index, &aside).map_err(|e| Error::io(&index, e))?;
            Some(aside)
        } else {
            None
        };
        let (store, restored) = Store::open_restoring(root, super::StoreOptions::default())?;
        let imported = export.map(|e| store.add(e)).transpose()?;
        Ok(RepairReport {
            old_index,
            restored,
            imported,
        })
    }
}

/// Index entries restored from their meta files: when a writable store is opened (the entries a
/// kill left out) or by [`Store::repair`] (every one).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Restored {
    pub artifacts: usize,
    pub runs: usize,
    /// Meta files left out, each with the reason (damaged or missing blob, undecodable file).
    pub skipped: Vec<String>,
    /// Where the files left out were moved (under the store folder), if any were.
    pub left_out: Option<PathBuf>,
}

/// Indexes the entry of every meta file the index lacks (every one, in a new index) that decodes,
/// is filed under its own id and, for a blob, has its blob present with its digest. The others
/// are listed with the reason and moved under `meta.left-out-<time>/` (kept for a person to
/// look at, no longer counted as a gap the store would refuse to collect garbage over).
pub(super) fn restore_unindexed(ix: &Index) -> Result<Restored> {
    let (keys, ids) = (ix.ids::<Artifact>()?, ix.ids::<RunRecord>()?);
    let (arts, runs) = mirror::unindexed(&ix.root, &keys, &ids)?;
    let (mut left, mut r) = (Vec::new(), Restored::default());
    if arts.is_empty() && runs.is_empty() {
        return Ok(r);
    }
    // Every blob is re-hashed: a whole lost index of a large store takes a while.
    let bar = crate::progress::bar((arts.len() + runs.len()) as u64, "restoring");
    r.artifacts = restore::<Artifact>(ix, &arts, &mut left, &bar, |a| {
        if !a.key_is_its_own() {
            return Err(Error::Store(NOT_ITS_OWN_KEY.into()));
        }
        let ArtifactKind::Blob { digest, bytes, .. } = &a.kind else {
            return Ok(());
        };
        check_blob(&a.key, &object_path(&ix.root, digest), digest, *bytes)
    })?;
    r.runs = restore::<RunRecord>(ix, &runs, &mut left, &bar, |_| Ok(()))?;
    bar.finish_and_clear();
    if !left.is_empty() {
        let files: Vec<PathBuf> = left.iter().map(|(p, _)| p.clone()).collect();
        let dir = format!("{}.left-out-{}", mirror::META_DIR, compact_time(now_secs()));
        r.left_out = Some(mirror::move_aside(&ix.root, &files, &dir)?);
        r.skipped = (left.iter())
            .map(|(p, why)| format!("{}: {why}", p.display()))
            .collect();
    }
    Ok(r)
}

/// Indexes the entry of each meta file in `files` that decodes, is filed under its own id and
/// passes `check`; the others are added to `left` with the reason. Returns how many it indexed.
fn restore<T: Entry>(
    ix: &Index,
    files: &[PathBuf],
    left: &mut Vec<(PathBuf, String)>,
    bar: &crate::progress::Progress,
    check: impl Fn(&T) -> Result<()>,
) -> Result<usize> {
    let mut restored = 0;
    for path in files {
        bar.inc(1);
        let entry = std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| codec::decode::<T>(SCHEMA_VERSION, &b).map_err(|e| e.to_string()))
            .and_then(|v| match T::meta_path(&ix.root, v.id()) == *path {
                true => check(&v).map(|()| v).map_err(|e| e.to_string()),
                false => Err(format!(
                    "holds {} {}, not the one its name says",
                    T::WHAT,
                    v.id()
                )),
            });
        match entry {
            Ok(v) => {
                ix.put(&v)?;
                restored += 1;
            }
            Err(why) => left.push((path.clone(), why)),
        }
    }
    Ok(restored)
}

/// Fails if a process holds sled's lock on `index/db`.
fn ensure_unheld(index: &Path) -> Result<()> {
    match lock::while_unheld(index, || ()) {
        Some(false) => Err(Error::Store(format!(
            "store index {} is in use by another process: stop it before repairing",
            index.display()
        ))),
        _ => Ok(()),
    }
}

//! `verify`: every blob re-hashed against its digest, and what else the files say (orphans,
//! temp files, a gap in the index). The report is plain data that the CLI prints
//! (`src/bin/ipirm/store_cmd.rs`).
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::blobs::{
    check_blob, files_under, object_path, unused_objects, NO_FILE, OBJECTS_DIR, TMP_DIR,
};
use super::key::NOT_ITS_OWN_KEY;
use super::{Artifact, ArtifactKind, Store};
use crate::{Error, Result};

/// What [`Store::verify`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VerifyReport {
    /// Artifacts in the index.
    pub artifacts: usize,
    /// Distinct blob files re-hashed.
    pub blobs_checked: usize,
    /// Keys whose blob's bytes no longer match the digest.
    pub damaged: Vec<String>,
    /// Keys whose blob file is absent.
    pub missing: Vec<String>,
    /// Index entries that do not decode, or whose key is not their own (changed), by key.
    pub unreadable: Vec<String>,
    /// Files under `objects/` that no artifact refers to (left by a crash between the rename and
    /// the index write, or by a replaced artifact): harmless, removed by `gc`.
    pub orphans: Vec<PathBuf>,
    /// Files under `tmp/` (a write in progress, or killed).
    pub temp_files: Vec<PathBuf>,
    /// `run -> key` references to artifacts no longer in the index (informational).
    pub dangling_run_refs: Vec<String>,
    /// One line per damaged, missing or unreadable key, with the file and what was found.
    pub details: Vec<String>,
    /// What the index lacks that the store's files record (a lost index: `repair` restores it).
    pub index_gap: Option<String>,
}

impl VerifyReport {
    /// No damaged, missing or unreadable artifact and no index gap (orphans and temp files are
    /// allowed).
    pub fn is_clean(&self) -> bool {
        let damage = [&self.damaged, &self.missing, &self.unreadable];
        damage.iter().all(|v| v.is_empty()) && self.index_gap.is_none()
    }
}

impl Store {
    /// Re-hashes every blob (outside the lock) and reports damaged and missing ones by key,
    /// orphan blobs and temp files separately, and whether the index lacks entries.
    pub fn verify(&self) -> Result<VerifyReport> {
        let root = self.root().to_path_buf();
        let (entries, runs, objects, temp_files, index_gap) = self.with_index(|ix| {
            // Listed under the lock: no rename into objects/ is half done.
            let (objects, temps) = (root.join(OBJECTS_DIR), root.join(TMP_DIR));
            let entries = ix.entries::<Artifact>()?;
            Ok((
                entries,
                ix.runs()?,
                files_under(&objects)?,
                files_under(&temps)?,
                ix.gaps()?,
            ))
        })?;
        let mut report = VerifyReport {
            artifacts: entries.len(),
            temp_files,
            index_gap,
            ..Default::default()
        };
        // The keys of each blob, by what the index records of it.
        let mut blobs: BTreeMap<(String, u64), Vec<String>> = BTreeMap::new();
        let mut keys = BTreeSet::new();
        for (key, entry) in entries {
            match entry {
                Ok(a) if !a.key_is_its_own() => {
                    report
                        .details
                        .push(format!("changed {key}: {NOT_ITS_OWN_KEY}"));
                    report.unreadable.push(key);
                }
                Ok(a) => {
                    if let ArtifactKind::Blob { digest, bytes, .. } = a.kind {
                        blobs.entry((digest, bytes)).or_default().push(key.clone());
                    }
                    keys.insert(key);
                }
                Err(e) => {
                    report.details.push(format!("unreadable {key}: {e}"));
                    report.unreadable.push(key);
                }
            }
        }
        for ((digest, bytes), users) in &blobs {
            let path = object_path(&root, digest);
            let verdict = check_blob(&users[0], &path, digest, *bytes);
            for key in users {
                let (list, detail) = match &verdict {
                    Ok(()) => continue,
                    Err(Error::Damaged { found, .. }) if found == NO_FILE => (
                        &mut report.missing,
                        format!("missing {key}: {} does not exist", path.display()),
                    ),
                    Err(Error::Damaged {
                        expected, found, ..
                    }) => (
                        &mut report.damaged,
                        format!(
                            "damaged {key}: {} has {found}, expected {expected}",
                            path.display()
                        ),
                    ),
                    Err(e) => (
                        &mut report.damaged,
                        format!("unreadable blob of {key}: {e}"),
                    ),
                };
                list.push(key.clone());
                report.details.push(detail);
            }
        }
        report.blobs_checked = blobs.len();
        let digests: BTreeSet<&str> = blobs.keys().map(|(d, _)| d.as_str()).collect();
        report.orphans = unused_objects(&root, objects, |d| digests.contains(d));
        for r in &runs {
            for k in r.artifacts.iter().filter(|k| !keys.contains(*k)) {
                report.dangling_run_refs.push(format!("{} -> {k}", r.id));
            }
        }
        Ok(report)
    }
}

//! The store's maintenance: finding a run or an artifact, `verify`, `gc` (`export` and `import`
//! are in `transfer.rs`). Each returns a report, plain data that the CLI prints
//! (`src/bin/ipirm/store_view.rs`), as it formats `ls` and `show` from [`Store::list_runs`],
//! [`Store::list_artifacts`] and [`Store::find`].
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::blobs::{check_blob, object_path, remove_if_present, NO_FILE, OBJECTS_DIR, TMP_DIR};
use super::{latest_of, now_secs, Artifact, ArtifactKind, RunRecord, Store};
use crate::{Error, Result};

/// Default [`GcOptions::grace_secs`]: one hour.
const DEFAULT_GRACE_SECS: u64 = 3600;
/// Default [`GcOptions::unfinished_run_secs`]: one week.
const DEFAULT_UNFINISHED_RUN_SECS: u64 = 7 * 24 * 3600;

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
    /// Index entries that do not decode, by key.
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

/// How [`Store::gc_with`] runs.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Report what would be removed, remove nothing.
    pub dry_run: bool,
    /// Temp files, and artifacts that belong to no run, younger than this are presumed to be
    /// another process's work in progress and kept. Default one hour.
    pub grace_secs: u64,
    /// An unfinished run younger than this is presumed still running (or worth inspecting) and
    /// kept with what it reaches, even if it is neither pinned nor the latest of its name.
    /// Default one week.
    pub unfinished_run_secs: u64,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            dry_run: false,
            grace_secs: DEFAULT_GRACE_SECS,
            unfinished_run_secs: DEFAULT_UNFINISHED_RUN_SECS,
        }
    }
}

/// What [`Store::gc`] removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GcReport {
    pub dry_run: bool,
    /// Runs kept: pinned, latest of their name, or unfinished and recent.
    pub kept_runs: Vec<String>,
    pub kept_artifacts: usize,
    pub removed_runs: Vec<String>,
    pub removed_artifacts: Vec<String>,
    /// Blob files no kept artifact uses (including orphans).
    pub removed_blobs: Vec<PathBuf>,
    pub removed_temp_files: Vec<PathBuf>,
    /// Bytes of the removed blob and temp files.
    pub freed_bytes: u64,
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

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

fn file_age_secs(p: &Path) -> u64 {
    std::fs::metadata(p)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .map_or(0, |d| d.as_secs())
}

/// The files among `objects` (files under `root/objects/`) that are not the blob of a digest
/// `used` accepts: orphans for `verify`, what `gc` removes.
fn unused_objects(root: &Path, objects: Vec<PathBuf>, used: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    objects
        .into_iter()
        .filter(|p| {
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| used(n) && object_path(root, n) == *p)
        })
        .collect()
}

/// What [`Store::find`] resolved its argument to.
#[derive(Debug, Clone)]
pub enum Found {
    Artifact(Box<Artifact>),
    Run(RunRecord),
}

impl Store {
    /// The run `what` names: a run id, a run name (its latest run: the most recent finished one,
    /// else the most recent), or a unique prefix (at least 4 characters) of a run id.
    pub fn resolve_run(&self, what: &str) -> Result<RunRecord> {
        match self.find_in(what, false)? {
            Found::Run(r) => Ok(r),
            Found::Artifact(_) => unreachable!("only runs were searched"),
        }
    }

    /// An artifact or a run, found by: artifact key, run id, run name (its latest run), or a
    /// unique prefix (at least 4 characters) of an artifact key or run id.
    pub fn find(&self, what: &str) -> Result<Found> {
        self.find_in(what, true)
    }

    fn find_in(&self, what: &str, artifacts: bool) -> Result<Found> {
        let (arts, runs) = self.with_index(|ix| {
            let arts: Vec<Artifact> = if artifacts { ix.list()? } else { Vec::new() };
            Ok((arts, ix.runs()?))
        })?;
        let latest = latest_of(&runs).into_iter().find(|r| r.name == what);
        let all = (arts.into_iter())
            .map(|a| (a.key.clone(), Found::Artifact(Box::new(a))))
            .chain(runs.into_iter().map(|r| (r.id.clone(), Found::Run(r))));
        // An exact key or id first, then a run name, then a unique prefix.
        let mut hits = Vec::new();
        for (id, found) in all {
            if id == what {
                return Ok(found);
            }
            if what.len() >= 4 && id.starts_with(what) {
                hits.push((id, found));
            }
        }
        if let Some(r) = latest {
            return Ok(Found::Run(r));
        }
        let root = self.root().display();
        match hits.len() {
            1 => Ok(hits.pop().expect("one").1),
            0 => {
                let kinds = ["run id or run name", "artifact key, run id or run name"];
                let kind = kinds[artifacts as usize];
                Err(Error::Store(format!(
                    "store at {root}: no {kind} `{what}` (see `ipirm store ls`)"
                )))
            }
            n => {
                let ids: Vec<&str> = hits.iter().take(5).map(|(id, _)| id.as_str()).collect();
                Err(Error::Store(format!("store at {root}: `{what}` is a prefix of {n} keys or run ids ({}…): give more of it", ids.join(", "))))
            }
        }
    }

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
                super::index_gaps(ix)?,
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

    /// [`Store::gc_with`] with the default grace periods.
    pub fn gc(&self, dry_run: bool) -> Result<GcReport> {
        self.gc_with(&GcOptions {
            dry_run,
            ..GcOptions::default()
        })
    }

    /// Keeps every pinned run, the latest run of each name and recent unfinished runs, every
    /// artifact they reach through their artifact lists and then the `inputs` of those,
    /// transitively, and recent artifacts that belong to no run; removes the other runs and
    /// artifacts (index entries first, flushed, then blob files), orphan blobs, and temp files
    /// older than the grace period. Holds the index throughout.
    pub fn gc_with(&self, opts: &GcOptions) -> Result<GcReport> {
        if !opts.dry_run {
            self.writable()?;
        }
        let root = self.root().to_path_buf();
        self.with_index(|ix| {
            // What gc keeps is read from the index: one that lost entries would have gc delete
            // their blobs, which repair could otherwise bring back.
            if let Some(gap) = super::index_gaps(ix)? {
                return Err(Error::Store(format!("{gap}. gc refuses to run until then")));
            }
            let now = now_secs();
            let young = |t: u64| now.saturating_sub(t) < opts.grace_secs;
            let running = |r: &RunRecord| {
                !r.finished && now.saturating_sub(r.created) < opts.unfinished_run_secs
            };
            let (runs, arts) = (ix.runs()?, ix.list::<Artifact>()?);
            let by_key: BTreeMap<&str, &Artifact> =
                arts.iter().map(|a| (a.key.as_str(), a)).collect();
            let latest: BTreeSet<String> = latest_of(&runs).into_iter().map(|r| r.id).collect();
            let (kept_runs, removed_runs): (Vec<&RunRecord>, Vec<&RunRecord>) = runs
                .iter()
                .partition(|r| r.pinned || latest.contains(&r.id) || running(r));
            let mut reach: BTreeSet<&str> = BTreeSet::new();
            let mut stack: Vec<&str> = kept_runs
                .iter()
                .flat_map(|r| r.artifacts.iter().map(String::as_str))
                .collect();
            // A recent artifact of no run may be another process's, about to be attached to one.
            stack.extend(
                arts.iter()
                    .filter(|a| a.run.is_none() && young(a.provenance.created))
                    .map(|a| a.key.as_str()),
            );
            while let Some(k) = stack.pop() {
                if reach.insert(k) {
                    if let Some(a) = by_key.get(k) {
                        stack.extend(a.inputs.iter().map(String::as_str));
                    }
                }
            }
            let removed_artifacts: Vec<&Artifact> = arts
                .iter()
                .filter(|a| !reach.contains(a.key.as_str()))
                .collect();
            let kept_digests: BTreeSet<&str> = arts
                .iter()
                .filter(|a| reach.contains(a.key.as_str()))
                .filter_map(|a| a.digest())
                .collect();
            let objects = files_under(&root.join(OBJECTS_DIR))?;
            let removed_blobs = unused_objects(&root, objects, |d| kept_digests.contains(d));
            let removed_temp_files: Vec<PathBuf> = files_under(&root.join(TMP_DIR))?
                .into_iter()
                .filter(|p| file_age_secs(p) >= opts.grace_secs)
                .collect();
            let freed_bytes = removed_blobs
                .iter()
                .chain(&removed_temp_files)
                .map(|p| file_len(p))
                .sum();
            let report = GcReport {
                dry_run: opts.dry_run,
                kept_runs: kept_runs.iter().map(|r| r.id.clone()).collect(),
                kept_artifacts: arts.len() - removed_artifacts.len(),
                removed_runs: removed_runs.iter().map(|r| r.id.clone()).collect(),
                removed_artifacts: removed_artifacts.iter().map(|a| a.key.clone()).collect(),
                removed_blobs,
                removed_temp_files,
                freed_bytes,
            };
            if opts.dry_run {
                return Ok(report);
            }
            let keys: Vec<&str> = removed_artifacts.iter().map(|a| a.key.as_str()).collect();
            let ids: Vec<&str> = removed_runs.iter().map(|r| r.id.as_str()).collect();
            ix.remove::<Artifact>(&keys)?;
            ix.remove::<RunRecord>(&ids)?;
            for p in report
                .removed_blobs
                .iter()
                .chain(&report.removed_temp_files)
            {
                remove_if_present(p)?;
            }
            Ok(report)
        })
    }
}

//! `gc`: keeps what pinned runs, the latest run of each name and seed, and recent unfinished runs
//! reach (through their artifacts and those artifacts' inputs), removes the rest. The report is
//! plain data that the CLI prints.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::blobs::{files_under, remove_if_present, unused_objects, OBJECTS_DIR, TMP_DIR};
use super::{latest_by, now_secs, Artifact, RunRecord, Store};
use crate::{Error, Result};

/// Default [`GcOptions::grace_secs`]: one hour.
const DEFAULT_GRACE_SECS: u64 = 3600;
/// Default [`GcOptions::unfinished_run_secs`]: one week.
const DEFAULT_UNFINISHED_RUN_SECS: u64 = 7 * 24 * 3600;

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
    /// Runs kept: pinned, latest of their name and seed, or unfinished and recent.
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

impl Store {
    /// [`Store::gc_with`] with the default grace periods.
    pub fn gc(&self, dry_run: bool) -> Result<GcReport> {
        self.gc_with(&GcOptions {
            dry_run,
            ..GcOptions::default()
        })
    }

    /// Keeps every pinned run, the latest run of each name and seed ([`RunRecord::seed`]: every
    /// seed of an arm that `ipirm compare` reads) and recent unfinished runs, every
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
            if let Some(gap) = ix.gaps()? {
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
            let latest: BTreeSet<String> = latest_by(&runs, |r| (r.name.clone(), r.seed()))
                .into_iter()
                .map(|r| r.id)
                .collect();
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

//! `ipirm store`: its subcommands ([`StoreCommand`], [`run`]), how it prints the store (`ls`,
//! `show`) and the reports of its commands (`verify`, `gc`, `export`, `import`, `repair`).
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Subcommand;
use ipirm::pipeline::StageKind;
use ipirm::store::{
    fmt_time, Artifact, ArtifactEntry, ArtifactKind, ExportReport, Found, GcReport, ImportReport,
    RepairReport, RunRecord, Store, VerifyReport,
};
use serde::Serialize;

use crate::{emit, emitln};

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Runs and stages, one line each.
    Ls,
    /// An artifact or a run (key, run id, run name or a unique prefix) with its inputs, config,
    /// digests and provenance.
    Show {
        /// A key, run id, run name or unique prefix (4 characters or more).
        what: String,
        /// As JSON (with each artifact's details for a run).
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every blob; report each damaged or missing one by key, orphans, and a lost index
    /// (fails on damage or a lost index).
    Verify,
    /// Remove what no pinned run, no latest run of a name and seed and no unfinished run of the
    /// last week reaches.
    Gc {
        /// List what would be removed, and remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Pin a run (id, name or unique id prefix; or unpin it with --off) so gc keeps everything
    /// it reaches.
    Pin {
        /// A run id, a run name (its latest run) or a unique id prefix.
        run: String,
        /// Unpin it: gc may then remove what only it reaches.
        #[arg(long)]
        off: bool,
    },
    /// Write a plain JSON manifest and the blob files to a new folder (readable without sled).
    Export {
        /// A new or empty folder, outside the store's own folders.
        #[arg(value_name = "EXPORT_DIR")]
        export_dir: PathBuf,
    },
    /// Add what `export` wrote to this store, verifying every digest.
    Import {
        /// A folder that `ipirm store export` wrote.
        #[arg(value_name = "EXPORT_DIR")]
        export_dir: PathBuf,
    },
    /// Rebuild a damaged index from the store's meta files (the old one is kept aside), then
    /// optionally import an export on top.
    Repair {
        /// An export (`ipirm store export`) to import after the rebuild.
        #[arg(long, value_name = "EXPORT_DIR")]
        from: Option<PathBuf>,
    },
}

/// Whether `store_dir` holds no store, so that opening it would make an empty one there. (A
/// file in its place is left to [`Store::open`], whose error says what it is.)
pub fn holds_no_store(store_dir: &Path) -> bool {
    !Store::exists_at(store_dir) && !store_dir.is_file()
}

/// A store folder of its own under the temp folder, removed on drop: what `report` reads when
/// `--store` names no store, so that it creates nothing there.
pub struct EmptyStore(PathBuf);

impl EmptyStore {
    pub fn new() -> EmptyStore {
        let dir = std::env::temp_dir().join(format!("ipirm-empty-store-{}", std::process::id()));
        EmptyStore(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for EmptyStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The store at `store_dir`, for a command that reads one: an error naming the path where
/// there is none.
pub fn existing(store_dir: &Path) -> Result<Store> {
    if holds_no_store(store_dir) {
        anyhow::bail!(
            "no artifact store at {} (--store DIR; a run or `ipirm store import` makes one)",
            store_dir.display()
        );
    }
    Ok(Store::open(store_dir)?)
}

/// Runs `ipirm store --store STORE_DIR <what>`.
pub fn run(store_dir: &Path, what: StoreCommand) -> Result<()> {
    let created = !store_dir.exists();
    let store = match what {
        StoreCommand::Repair { from } => {
            return emit(Text(&Store::repair(store_dir, from.as_deref())?));
        }
        // Only an import makes a store; the others read one (or change what it holds).
        StoreCommand::Import { .. } => Store::open(store_dir)?,
        _ => existing(store_dir)?,
    };
    match what {
        StoreCommand::Ls => emit(ls(&store)?),
        StoreCommand::Show { what, json } => emitln(show(&store, &what, json)?),
        StoreCommand::Verify => {
            let report = store.verify()?;
            emit(Text(&report))?;
            let root = store.root().display();
            match (&report.index_gap, report.is_clean()) {
                (Some(gap), _) => anyhow::bail!("{gap}"),
                (None, false) => anyhow::bail!(
                    "the store at {root} has damaged, missing or changed artifacts (listed above); a run recomputes those it needs (not a finished run's earlier checkpoints), and `ipirm store repair` rebuilds the index without any of them"
                ),
                (None, true) => Ok(()),
            }
        }
        StoreCommand::Gc { dry_run } => emit(Text(&store.gc(dry_run)?)),
        StoreCommand::Pin { run, off } => {
            let run = store.resolve_run(&run)?;
            store.pin(&run.id, !off)?;
            let done = if off { "unpinned" } else { "pinned" };
            emitln(format_args!("{done} {}", run.id))
        }
        StoreCommand::Export { export_dir } => {
            crate::checks::outside_store(store_dir, "store export DIR", &export_dir)?;
            emitln(Text(&store.export(&export_dir)?))
        }
        StoreCommand::Import { export_dir } => {
            let imported = store.import(&export_dir);
            if imported.is_err() && created {
                // A refused export leaves no empty store where there was none.
                drop(store);
                let _ = std::fs::remove_dir_all(store_dir);
            }
            emit(Text(&imported?))
        }
        StoreCommand::Repair { .. } => unreachable!("handled above"),
    }
}

/// Runs (oldest first) and then artifacts (by stage, then key), one line each. An artifact of
/// a stage version this build no longer writes is marked: the current stages never match it.
/// A warning on stderr first when the index lacks entries the store's files record (what opening
/// could not restore: a read-only store, blobs without index or meta files).
pub fn ls(store: &Store) -> ipirm::Result<String> {
    if let Some(gap) = store.index_gaps()? {
        eprintln!("warning: {gap}");
    }
    let runs = store.list_runs()?;
    let mut arts = store.list_artifacts()?;
    let latest: BTreeSet<String> = store.latest_runs()?.into_iter().map(|r| r.id).collect();
    let mut out = format!(
        "store {}: {} runs, {} artifacts\n",
        store.root().display(),
        runs.len(),
        arts.len()
    );
    for r in &runs {
        let mut flags = Vec::new();
        if r.pinned {
            flags.push("pinned");
        }
        if latest.contains(&r.id) {
            flags.push("latest");
        }
        flags.push(if r.finished { "finished" } else { "unfinished" });
        out += &format!(
            "run {}  name={}  {}  {}  {} artifacts\n",
            r.id,
            r.name,
            fmt_time(r.created),
            flags.join(","),
            r.artifacts.len()
        );
    }
    arts.sort_by(|a, b| {
        (&a.stage, a.stage_version, &a.key).cmp(&(&b.stage, b.stage_version, &b.key))
    });
    for a in &arts {
        out += &format!(
            "stage {} v{}  {}  {} {}  {}  run={}{}\n",
            a.stage,
            a.stage_version,
            short(&a.key),
            a.kind_name(),
            human_bytes(a.size()),
            fmt_time(a.provenance.created),
            a.run.as_deref().unwrap_or("-"),
            stale_note(a)
        );
    }
    Ok(out)
}

/// ` (stale: …)` for an artifact written by another version of its stage.
fn stale_note(a: &Artifact) -> String {
    match StageKind::from_name(&a.stage) {
        Some(k) if k.version() != a.stage_version => format!(
            "  (stale: this ipirm writes {} v{}; never reused)",
            a.stage,
            k.version()
        ),
        None => "  (stale: no such stage in this ipirm; never reused)".to_string(),
        _ => String::new(),
    }
}

fn short(key: &str) -> &str {
    key.get(..16).unwrap_or(key)
}

/// A run with its artifacts, for `show --json`.
#[derive(Serialize)]
struct RunJson<'a> {
    #[serde(flatten)]
    run: &'a RunRecord,
    created_utc: String,
    artifact_details: Vec<ArtifactEntry>,
}

/// An artifact or a run (see [`Store::find`]): inputs, config, digests and provenance as text,
/// or as JSON (an [`ArtifactEntry`], or the run with an entry per artifact, so every digest).
pub fn show(store: &Store, what: &str, json: bool) -> ipirm::Result<String> {
    let found = store.find(what)?;
    let arts = store.list_artifacts()?;
    let by_key: BTreeMap<&str, &Artifact> = arts.iter().map(|a| (a.key.as_str(), a)).collect();
    let file_of = |a: &Artifact| {
        a.digest()
            .map(|d| store.object_path(d).display().to_string())
    };
    Ok(match found {
        Found::Artifact(a) if json => {
            serde_json::to_string_pretty(&ArtifactEntry::new(&a, file_of(&a)))
                .expect("plain data serialises")
        }
        Found::Artifact(a) => artifact_text(store, &a, &by_key),
        Found::Run(r) if json => {
            let details = r
                .artifacts
                .iter()
                .filter_map(|k| by_key.get(k.as_str()))
                .map(|a| ArtifactEntry::new(a, file_of(a)))
                .collect();
            serde_json::to_string_pretty(&RunJson {
                run: &r,
                created_utc: fmt_time(r.created),
                artifact_details: details,
            })
            .expect("plain data serialises")
        }
        Found::Run(r) => run_text(&r, &by_key),
    })
}

fn run_text(r: &RunRecord, by_key: &BTreeMap<&str, &Artifact>) -> String {
    let mut out = format!(
        "run {}\n  name      {}\n  created   {}\n  pinned    {}\n  finished  {}\n",
        r.id,
        r.name,
        fmt_time(r.created),
        r.pinned,
        r.finished
    );
    // A branched run says where it came from.
    let cfg: Option<serde_json::Value> = serde_json::from_str(&r.config_json).ok();
    if let Some(p) = cfg
        .as_ref()
        .and_then(|c| c["ipirm"]["from_partition"].as_str())
    {
        let source = by_key
            .get(p)
            .and_then(|a| a.run.as_deref())
            .unwrap_or("unknown run");
        out += &format!("  branched  from partition {p} (made by {source})\n");
    }
    out += &format!(
        "  config    {}\n  artifacts {}\n",
        r.config_json,
        r.artifacts.len()
    );
    for k in &r.artifacts {
        match by_key.get(k.as_str()) {
            Some(a) => {
                out += &format!(
                    "    {}  stage {} v{}  {} {}",
                    a.key,
                    a.stage,
                    a.stage_version,
                    a.kind_name(),
                    human_bytes(a.size())
                );
                if let Some(d) = a.digest() {
                    out += &format!("  sha256 {d}");
                }
                out += "\n";
            }
            None => out += &format!("    {k}  (no longer in the store)\n"),
        }
    }
    out
}

fn artifact_text(store: &Store, a: &Artifact, by_key: &BTreeMap<&str, &Artifact>) -> String {
    let mut out = format!(
        "artifact {}\n  stage      {} v{}{}\n",
        a.key,
        a.stage,
        a.stage_version,
        stale_note(a)
    );
    match &a.kind {
        ArtifactKind::Blob {
            digest,
            bytes,
            format,
        } => {
            out += &format!(
            "  kind       {format} blob, {bytes} bytes\n  sha256     {digest}\n  file       {}\n",
            store.object_path(digest).display()
        )
        }
        ArtifactKind::Record(b) => {
            out += &format!("  kind       record, {} bytes in the index\n", b.len())
        }
    }
    if a.inputs.is_empty() {
        out += "  inputs     none\n";
    }
    for (i, k) in a.inputs.iter().enumerate() {
        let label = if i == 0 { "inputs" } else { "" };
        match by_key.get(k.as_str()) {
            Some(inp) => {
                out += &format!(
                    "  {label:<10} {k}  (stage {} v{}{})\n",
                    inp.stage,
                    inp.stage_version,
                    inp.digest()
                        .map(|d| format!(", sha256 {d}"))
                        .unwrap_or_default()
                )
            }
            None => out += &format!("  {label:<10} {k}\n"),
        }
    }
    let p = &a.provenance;
    let dirty = match p.git_dirty {
        Some(true) => " (dirty)",
        Some(false) => "",
        None => " (dirty: unknown)",
    };
    out += &format!(
        "  params     {}\n  run        {}\n  created    {}\n  wall       {:.3} s\n  device     {}\n  libtorch   {}\n  git        {}{dirty}\n  host       {}\n  ipirm      {}\n",
        a.config_json,
        a.run.as_deref().unwrap_or("-"),
        fmt_time(p.created),
        p.wall_seconds,
        p.device,
        p.libtorch,
        p.git_commit,
        p.host,
        p.crate_version
    );
    out
}

/// A store report as `ipirm store verify`, `gc`, `export`, `import` and `repair` print it.
pub struct Text<'a, T>(pub &'a T);

impl fmt::Display for Text<'_, VerifyReport> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rep = self.0;
        writeln!(
            f,
            "{} artifacts, {} blobs re-hashed: {} damaged, {} missing, {} unreadable; {} orphan blobs, {} temp files",
            rep.artifacts,
            rep.blobs_checked,
            rep.damaged.len(),
            rep.missing.len(),
            rep.unreadable.len(),
            rep.orphans.len(),
            rep.temp_files.len()
        )?;
        for d in &rep.details {
            writeln!(f, "  {d}")?;
        }
        for o in &rep.orphans {
            writeln!(f, "  orphan {}", o.display())?;
        }
        for t in &rep.temp_files {
            writeln!(f, "  temp {}", t.display())?;
        }
        for r in &rep.dangling_run_refs {
            writeln!(f, "  run reference to a missing artifact: {r}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Text<'_, GcReport> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rep = self.0;
        let verb = if rep.dry_run {
            "would remove"
        } else {
            "removed"
        };
        writeln!(
            f,
            "gc {verb} {} runs, {} artifacts, {} blob files, {} temp files ({}); kept {} runs, {} artifacts",
            rep.removed_runs.len(),
            rep.removed_artifacts.len(),
            rep.removed_blobs.len(),
            rep.removed_temp_files.len(),
            human_bytes(rep.freed_bytes),
            rep.kept_runs.len(),
            rep.kept_artifacts
        )?;
        for r in &rep.removed_runs {
            writeln!(f, "  run {r}")?;
        }
        for a in &rep.removed_artifacts {
            writeln!(f, "  artifact {a}")?;
        }
        for b in &rep.removed_blobs {
            writeln!(f, "  blob {}", b.display())?;
        }
        for t in &rep.removed_temp_files {
            writeln!(f, "  temp {}", t.display())?;
        }
        Ok(())
    }
}

impl fmt::Display for Text<'_, ExportReport> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rep = self.0;
        write!(
            f,
            "exported {} artifacts, {} runs, {} blob files ({}) to {}",
            rep.artifacts,
            rep.runs,
            rep.blobs,
            human_bytes(rep.bytes),
            rep.manifest.display()
        )
    }
}

impl fmt::Display for Text<'_, ImportReport> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rep = self.0;
        writeln!(
            f,
            "imported {} artifacts ({} already present), {} runs ({} already present), {} blob files",
            rep.artifacts_added, rep.artifacts_skipped, rep.runs_added, rep.runs_skipped, rep.blobs_copied
        )?;
        for c in &rep.conflicts {
            writeln!(f, "  kept this store's own, different, artifact {c}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Text<'_, RepairReport> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (rep, r) = (self.0, &self.0.restored);
        writeln!(
            f,
            "rebuilt the index: {} artifacts, {} runs; {} entries left out",
            r.artifacts,
            r.runs,
            r.skipped.len()
        )?;
        for s in &r.skipped {
            writeln!(f, "  left out {s}")?;
        }
        if let Some(dir) = &r.left_out {
            writeln!(f, "the files left out are in {}", dir.display())?;
        }
        if let Some(old) = &rep.old_index {
            writeln!(
                f,
                "the old index is in {} (delete it once the store works)",
                old.display()
            )?;
        }
        if let Some(i) = &rep.imported {
            write!(f, "{}", Text(i))?;
        }
        Ok(())
    }
}

/// `512 B`, `1.5 KiB`, `3.2 MiB`, …
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reports' texts name what they count: a damaged key under verify's summary, and a
    /// dry run of gc as what it would remove.
    #[test]
    fn reports_print_their_details() {
        let verify = VerifyReport {
            artifacts: 2,
            damaged: vec!["k1".into()],
            details: vec!["k1: blob objects/ab/ab12 damaged".into()],
            ..VerifyReport::default()
        };
        let text = Text(&verify).to_string();
        assert!(
            text.contains("1 damaged") && text.contains("\n  k1: blob"),
            "{text}"
        );
        let gc = GcReport {
            dry_run: true,
            removed_runs: vec!["r1".into()],
            freed_bytes: 1536,
            ..GcReport::default()
        };
        let text = Text(&gc).to_string();
        assert!(
            text.starts_with("gc would remove 1 runs") && text.contains("(1.5 KiB)"),
            "{text}"
        );
        assert!(text.contains("\n  run r1\n"), "{text}");
    }
}

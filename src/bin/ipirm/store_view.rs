//! How `ipirm store ls` and `ipirm store show` print the store.
use std::collections::{BTreeMap, BTreeSet};

use ipirm::pipeline::StageKind;
use ipirm::store::{
    fmt_time, human_bytes, Artifact, ArtifactEntry, ArtifactKind, Found, RunRecord, Store,
};
use serde::Serialize;

/// Runs (oldest first) and then artifacts (by stage, then key), one line each. An artifact of
/// a stage version this build no longer writes is marked: the current stages never match it.
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

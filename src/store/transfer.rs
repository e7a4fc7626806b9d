//! Moving artifacts between stores: [`Store::export`] writes every artifact and run as plain JSON
//! (`manifest.json`, [`ArtifactEntry`]) beside the blobs, [`Store::import`] adds what a store
//! lacks from such a folder. Each returns a report that the CLI prints
//! (`src/bin/ipirm/store_cmd.rs`).
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::blobs::{copy_blob, tmp_file, OBJECTS_DIR, TMP_DIR};
use super::key::NOT_ITS_OWN_KEY;
use super::{now_secs, Artifact, ArtifactKind, Provenance, RunRecord, Store, SCHEMA_VERSION};
use crate::{Error, Result};

/// `format` of an export's `manifest.json`.
pub const MANIFEST_FORMAT: &str = "ipirm-store-export";
/// Version of the manifest layout (independent of the index schema).
const MANIFEST_VERSION: u32 = 1;
/// One artifact as plain JSON: in an export's `manifest.json` and in `show --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactEntry {
    pub key: String,
    pub stage: String,
    pub stage_version: u32,
    /// `blob` or `record`.
    pub kind: String,
    /// Blob: `safetensors` or `bytes`.
    pub format: Option<String>,
    /// Blob: sha256 hex of the file.
    pub digest: Option<String>,
    /// Size of the blob, or of the record's body.
    pub bytes: u64,
    /// Blob: the file, relative to the manifest (export) or absolute (show).
    pub file: Option<String>,
    /// Record: the bincode 1.3.3 body (fixint, little-endian), hex.
    pub record_hex: Option<String>,
    /// Record: sha256 hex of the body, checked on import (absent from exports made before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_sha256: Option<String>,
    pub inputs: Vec<String>,
    /// Canonical JSON of the config section (a string, kept byte-exact).
    pub config_json: String,
    pub provenance: Provenance,
    pub run: Option<String>,
}

impl ArtifactEntry {
    /// The plain-JSON form of `a`; `file` is where its blob is (for an export, relative).
    pub fn new(a: &Artifact, file: Option<String>) -> ArtifactEntry {
        let (kind, format, digest, body) = match &a.kind {
            ArtifactKind::Blob { digest, format, .. } => {
                ("blob", Some(format.clone()), Some(digest.clone()), None)
            }
            ArtifactKind::Record(b) => ("record", None, None, Some(b)),
        };
        ArtifactEntry {
            key: a.key.clone(),
            stage: a.stage.clone(),
            stage_version: a.stage_version,
            kind: kind.into(),
            format,
            digest,
            bytes: a.size(),
            file: if kind == "blob" { file } else { None },
            record_hex: body.map(hex::encode),
            record_sha256: body.map(|b| hex::encode(Sha256::digest(b))),
            inputs: a.inputs.clone(),
            config_json: a.config_json.clone(),
            provenance: a.provenance.clone(),
            run: a.run.clone(),
        }
    }

    fn to_artifact(&self) -> std::result::Result<Artifact, String> {
        let kind = match self.kind.as_str() {
            "blob" => ArtifactKind::Blob {
                digest: self
                    .digest
                    .clone()
                    .filter(|d| is_digest(d))
                    .ok_or("a blob without a valid `digest`")?,
                bytes: self.bytes,
                format: self.format.clone().unwrap_or_else(|| "bytes".into()),
            },
            "record" => {
                let body = (self.record_hex.as_deref())
                    .and_then(|h| hex::decode(h).ok())
                    .ok_or("a record without a valid `record_hex`")?;
                let sha = hex::encode(Sha256::digest(&body));
                if self.record_sha256.as_ref().is_some_and(|want| *want != sha) {
                    return Err(format!(
                        "`record_hex` has sha256 {sha}, not its `record_sha256`"
                    ));
                }
                ArtifactKind::Record(body)
            }
            k => return Err(format!("unknown kind `{k}` (expected blob or record)")),
        };
        let a = Artifact {
            key: self.key.clone(),
            stage: self.stage.clone(),
            stage_version: self.stage_version,
            kind,
            inputs: self.inputs.clone(),
            config_json: self.config_json.clone(),
            provenance: self.provenance.clone(),
            run: self.run.clone(),
        };
        match a.key_is_its_own() {
            true => Ok(a),
            false => Err(NOT_ITS_OWN_KEY.into()),
        }
    }
}

/// An export's `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    format: String,
    format_version: u32,
    /// Index schema of the store it came from (informational).
    schema: u32,
    crate_version: String,
    exported: u64,
    artifacts: Vec<ArtifactEntry>,
    runs: Vec<RunRecord>,
}

/// What [`Store::export`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportReport {
    pub manifest: PathBuf,
    pub artifacts: usize,
    pub runs: usize,
    pub blobs: usize,
    pub bytes: u64,
}

/// What [`Store::import`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportReport {
    pub artifacts_added: usize,
    /// Keys already present with the same content.
    pub artifacts_skipped: usize,
    /// Keys already present with a different blob or record: the store's own is kept.
    pub conflicts: Vec<String>,
    pub runs_added: usize,
    pub runs_skipped: usize,
    pub blobs_copied: usize,
}

fn is_digest(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Store {
    /// Writes `dir/manifest.json` (every artifact and run as plain JSON, see [`ArtifactEntry`])
    /// and each blob as `dir/objects/<digest>`, checking every digest on the way (a damaged blob
    /// fails the export, naming its key). `dir` must not exist or be empty.
    pub fn export(&self, dir: impl AsRef<Path>) -> Result<ExportReport> {
        let dir = dir.as_ref();
        if dir.exists() && !dir.is_dir() {
            let what = "a new or empty folder for the export";
            return Err(Error::file(dir, what, "a file"));
        }
        if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
            return Err(Error::Store(format!(
                "export folder {} is not empty: export into a new or empty folder",
                dir.display()
            )));
        }
        let (existed, objects) = (dir.exists(), dir.join(OBJECTS_DIR));
        std::fs::create_dir_all(&objects).map_err(|e| Error::io(&objects, e))?;
        let (arts, runs) = self.with_index(|ix| Ok((ix.list::<Artifact>()?, ix.runs()?)))?;
        let mut copied: BTreeSet<String> = BTreeSet::new();
        let mut bytes_total = 0;
        let mut entries = Vec::with_capacity(arts.len());
        for a in &arts {
            if let ArtifactKind::Blob { digest, bytes, .. } = &a.kind {
                if copied.insert(digest.clone()) {
                    let (src, dest) = (self.object_path(digest), objects.join(digest));
                    if let Err(e) = copy_blob(&a.key, &src, &dest, digest, *bytes) {
                        // No half export is left behind (the folder was new or empty).
                        let _ = std::fs::remove_dir_all(if existed { &objects } else { dir });
                        return Err(match e {
                            Error::Damaged {
                                key,
                                file,
                                expected,
                                found,
                            } => Error::Store(format!(
                                "artifact {key}: blob {} is damaged: expected {expected}, found {found}; nothing was exported (`ipirm store verify` lists every damaged file, a run that needs it recomputes it; then export again)",
                                file.display()
                            )),
                            e => e,
                        });
                    }
                    bytes_total += bytes;
                }
            }
            entries.push(ArtifactEntry::new(
                a,
                a.digest().map(|d| format!("{OBJECTS_DIR}/{d}")),
            ));
        }
        let manifest = Manifest {
            format: MANIFEST_FORMAT.into(),
            format_version: MANIFEST_VERSION,
            schema: SCHEMA_VERSION,
            crate_version: env!("CARGO_PKG_VERSION").into(),
            exported: now_secs(),
            artifacts: entries,
            runs: runs.clone(),
        };
        let path = dir.join("manifest.json");
        let text = serde_json::to_string_pretty(&manifest).expect("plain data serialises");
        std::fs::write(&path, text + "\n").map_err(|e| Error::io(&path, e))?;
        Ok(ExportReport {
            manifest: path,
            artifacts: arts.len(),
            runs: runs.len(),
            blobs: copied.len(),
            bytes: bytes_total,
        })
    }

    /// Reads an export (`dir/manifest.json` and `dir/objects/`), checks every blob against its
    /// digest, and adds what this store lacks: artifacts under keys it already has are kept as
    /// they are (listed as conflicts if they differ), runs with ids it already has are skipped.
    pub fn import(&self, dir: impl AsRef<Path>) -> Result<ImportReport> {
        self.writable()?;
        let export = Export::read(self.root(), dir.as_ref())?;
        self.add(export)
    }

    /// Adds what this store lacks of a read [`Export`] (see [`Store::import`]).
    pub(super) fn add(&self, export: Export) -> Result<ImportReport> {
        let Export { arts, runs, staged } = export;
        self.with_index(|ix| {
            let mut report = ImportReport::default();
            for a in &arts {
                match ix.get::<Artifact>(&a.key)? {
                    Some(existing) if existing.kind == a.kind => report.artifacts_skipped += 1,
                    Some(_) => report.conflicts.push(a.key.clone()),
                    None => {
                        if let Some(d) = a.digest() {
                            if let Some(tmp) = staged.0.get(d) {
                                if tmp.exists() {
                                    ix.install_blob(tmp, d)?;
                                    report.blobs_copied += 1;
                                }
                            }
                        }
                        ix.put(a)?;
                        report.artifacts_added += 1;
                    }
                }
            }
            for r in &runs {
                if ix.get::<RunRecord>(&r.id)?.is_some() {
                    report.runs_skipped += 1;
                } else {
                    let seq = ix.next_seq()?;
                    ix.put(&RunRecord { seq, ..r.clone() })?;
                    report.runs_added += 1;
                }
            }
            Ok(report)
        })
    }
}

/// An export read and checked: its entries, and its blobs copied (each checked against its
/// digest) under the `tmp/` folder of the store that will add them.
pub(super) struct Export {
    arts: Vec<Artifact>,
    runs: Vec<RunRecord>,
    staged: Staged,
}

impl Export {
    /// Reads and checks the export in `dir` for the store at `root` (its blobs are staged under
    /// `root/tmp/`, made if missing: repair reads an export before it opens the store); nothing
    /// in the store's index changes.
    pub(super) fn read(root: &Path, dir: &Path) -> Result<Export> {
        let path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let m: Manifest = serde_json::from_str(&text).map_err(|e| {
            Error::file(
                &path,
                format!("an {MANIFEST_FORMAT} manifest"),
                format!("invalid JSON for it ({e})"),
            )
        })?;
        if m.format != MANIFEST_FORMAT || m.format_version > MANIFEST_VERSION {
            return Err(Error::file(
                &path,
                format!("format `{MANIFEST_FORMAT}` version <= {MANIFEST_VERSION}"),
                format!("format `{}` version {}", m.format, m.format_version),
            ));
        }
        let mut arts = Vec::with_capacity(m.artifacts.len());
        for e in &m.artifacts {
            arts.push(e.to_artifact().map_err(|msg| {
                Error::file(&path, format!("a valid entry for artifact {}", e.key), msg)
            })?);
        }
        for r in &m.runs {
            let what = || format!("a valid entry for run {:?}", r.id);
            for (field, value) in [("name", &r.name), ("id", &r.id)] {
                if let Err(e) = super::check_run_name(value) {
                    return Err(Error::file(
                        &path,
                        what(),
                        format!("`{field}` {value:?}: {e}"),
                    ));
                }
            }
            if serde_json::from_str::<Value>(&r.config_json).is_err() {
                return Err(Error::file(
                    &path,
                    what(),
                    "a `config_json` that is not JSON",
                ));
            }
        }
        // Copy and check every blob outside the lock; what is not installed goes when it ends.
        let tmp_dir = root.join(TMP_DIR);
        std::fs::create_dir_all(&tmp_dir).map_err(|e| Error::io(&tmp_dir, e))?;
        let mut staged = Staged::default();
        for a in &arts {
            if let ArtifactKind::Blob { digest, bytes, .. } = &a.kind {
                if staged.0.contains_key(digest) {
                    continue;
                }
                let (src, tmp) = (dir.join(OBJECTS_DIR).join(digest), tmp_file(root));
                copy_blob(&a.key, &src, &tmp, digest, *bytes)?;
                staged.0.insert(digest.clone(), tmp);
            }
        }
        let mut runs = m.runs;
        runs.sort_by_key(|r| (r.created, r.seq));
        Ok(Export { arts, runs, staged })
    }
}

/// Blobs copied into `tmp/` for an import, by digest: whichever are still there when it ends
/// (not installed: a conflict, an error, a panic) are removed.
#[derive(Default)]
struct Staged(BTreeMap<String, PathBuf>);

impl Drop for Staged {
    fn drop(&mut self) {
        for p in self.0.values() {
            let _ = std::fs::remove_file(p);
        }
    }
}

//! The artifact store: cached stage results (features, checkpoints, partitions, metrics) and the
//! runs that made them, in a folder (by default [`DEFAULT_ROOT`], `artifacts/`).
//!
//! # Layout
//! ```text
//! artifacts/
//!   index/            sled database: the index only (trees `artifacts`, `runs`, `meta`)
//!   index.holder      pid, since and command line of the process holding the index (while held)
//!   index.wait/       markers of processes waiting for the index (fairness, see `lock`)
//!   objects/ab/<sha256 hex>   large values, one file each, named by the sha256 of their bytes
//!   meta/             a file per index entry (see `mirror`): what opening the store restores
//!                     an entry a crash left out from, and `ipirm store repair` a damaged index
//!   tmp/              blobs and meta files being written
//! ```
//! A blob is written to `tmp/`, fsynced, and then, holding the index, renamed into `objects/`,
//! the folder fsynced, the artifact indexed and the index flushed: a crash leaves at worst an
//! orphan blob or a temp file (which [`Store::verify`] lists and [`Store::gc`] removes), never an
//! index entry pointing at nothing.
//!
//! A store the process cannot write to (a read-only mount, another user's folder) is opened
//! read-only: `ls`, `show`, `verify` and `export` work on a private copy of its index, and every
//! write is refused with an error saying so.
//!
//! Index values are bincode records in an envelope {magic `IPIRMST`, schema version} (see
//! [`codec`]); the `meta` tree holds the `schema` record written at creation. A store written by a
//! newer schema is refused; an older one would be migrated on open (there is none yet).
//!
//! # Caching a stage
//! ```no_run
//! # use ipirm::store::{Store, Stage};
//! # fn f(store: &Store, params: &serde_json::Value, input: &str, run: &str) -> ipirm::Result<()> {
//! let stage = Stage::new("features", 1, params, &[input])?.run(run).device("cpu", "2.11.0");
//! let file = match store.get_blob(stage.key()) {
//!     Ok(Some(file)) => { store.attach(run, &[stage.key()])?; file }
//!     Ok(None) | Err(ipirm::Error::Damaged { .. }) => {
//!         store.invalidate(stage.key())?;
//!         store.put_blob(&stage, "bytes", |p| std::fs::write(p, b"computed").map_err(|e| ipirm::Error::io(p, e)))?;
//!         store.get_blob(stage.key())?.expect("just stored")
//!     }
//!     Err(e) => return Err(e),
//! };
//! # Ok(()) }
//! ```
//! (Tensors are stored through `ipirm::tensor_file`, the pipeline's stages through typed
//! artifacts, `ipirm::pipeline::artifacts`.)
//!
//! # Concurrency
//! sled locks its database exclusively, so no operation keeps it open: each opens it, does a few
//! reads and writes, flushes and closes (a few milliseconds). Another process that finds it open
//! waits up to [`StoreOptions::lock_timeout`] (30 s by default) and then fails with an error
//! naming the holder's pid and command. Writing blob bytes and hashing them on load happen
//! outside the lock. Within one process a `Store` (and its clones) serialises its own operations.
//!
//! # Files
//! This file holds the [`Store`] front (open, put and get) and what it stores ([`Artifact`],
//! [`RunRecord`]); `index.rs` the sled index inside one operation (typed tables of artifacts and
//! runs), `lock.rs` opening it and who holds it, `codec.rs` the records' envelope, `mirror.rs` the
//! `meta/` files, `blobs.rs` content addressing (writing, hashing, checking and listing blob
//! files), `key.rs` stage keys and the [`Stage`] they are computed for, `provenance.rs` what is
//! recorded with an artifact; then a file per verb: `find.rs`, `verify.rs`, `gc.rs`, `transfer.rs` (export and import),
//! `repair.rs` (restoring index entries from `meta/`); `fault.rs` fault injection for the tests.
mod blobs;
pub mod codec;
pub mod fault;
mod find;
mod gc;
mod index;
mod key;
mod lock;
mod mirror;
mod provenance;
mod repair;
mod transfer;
mod verify;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use find::Found;
pub use gc::{GcOptions, GcReport};
pub use key::{canonical_json, stage_key, Stage};
pub use provenance::Provenance;
pub use repair::{RepairReport, Restored};
pub use transfer::{ArtifactEntry, ExportReport, ImportReport, MANIFEST_FORMAT};
pub use verify::VerifyReport;

use crate::{Error, Result};
use blobs::{check_blob, hash_file, is_writable, object_path, tmp_file, OBJECTS_DIR, TMP_DIR};
use fault::fault;
use index::Index;

/// The schema this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;
/// Where the CLI keeps its store unless told otherwise.
pub const DEFAULT_ROOT: &str = "artifacts";
/// How long an operation waits for another process to release the index.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether `path` lies in a folder the store at `root` manages (blobs, index, meta files,
/// temporary files): a file put there by anyone else is taken for the store's (gc removes it).
pub fn manages(root: &Path, path: &Path) -> bool {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let path = abs(path);
    let managed = [OBJECTS_DIR, TMP_DIR, lock::INDEX_DIR, mirror::META_DIR];
    managed.iter().any(|d| path.starts_with(abs(&root.join(d))))
}

/// One stored result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    /// The stage key ([`stage_key`]); the index key.
    pub key: String,
    /// The stage name and version that made it.
    pub stage: String,
    pub stage_version: u32,
    pub kind: ArtifactKind,
    /// Keys of the artifacts it was computed from, in order (part of the key; followed by `gc`).
    pub inputs: Vec<String>,
    /// The canonical JSON of the parameters the stage read (part of the key).
    pub config_json: String,
    pub provenance: Provenance,
    /// The run that made it, if any.
    pub run: Option<String>,
}

/// What an artifact holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ArtifactKind {
    /// A file `objects/<digest[..2]>/<digest>` of `bytes` bytes whose sha256 is `digest`;
    /// `format` is `safetensors` (`crate::tensor_file`; stores made before may hold `bytes`).
    Blob {
        digest: String,
        bytes: u64,
        format: String,
    },
    /// A small value kept in the index: the bincode body of the value given to
    /// [`Store::put_record`].
    Record(Vec<u8>),
}

impl Artifact {
    /// The blob's digest, `None` for a record.
    pub fn digest(&self) -> Option<&str> {
        match &self.kind {
            ArtifactKind::Blob { digest, .. } => Some(digest),
            ArtifactKind::Record(_) => None,
        }
    }
    /// Size of the blob or of the record's body.
    pub fn size(&self) -> u64 {
        match &self.kind {
            ArtifactKind::Blob { bytes, .. } => *bytes,
            ArtifactKind::Record(b) => b.len() as u64,
        }
    }
    /// `safetensors`, `bytes` or `record`.
    pub fn kind_name(&self) -> &str {
        match &self.kind {
            ArtifactKind::Blob { format, .. } => format,
            ArtifactKind::Record(_) => "record",
        }
    }
}

/// One run of a job (e.g. `ipirm run`): its config and the artifacts it produced or reused, in
/// the order it used them. Runs are what [`Store::gc`] keeps alive: every pinned run, the latest
/// run of each name and seed, and recent unfinished runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Unique in the store: `<name>-<UTC yyyymmddThhmmss>-<seq>`.
    pub id: String,
    /// What the run is (e.g. the preset); "the latest run" is per name.
    pub name: String,
    /// Canonical JSON of the run's whole config.
    pub config_json: String,
    /// Keys of the artifacts the run made or reused, in order, without repeats.
    pub artifacts: Vec<String>,
    pub pinned: bool,
    /// Unix seconds when it started.
    pub created: u64,
    /// Set by [`Store::finish_run`] when the job completed.
    pub finished: bool,
    /// Store-wide sequence number (sled id), breaking ties between runs started the same second.
    pub seq: u64,
}

impl RunRecord {
    /// The seed its config names (`train.seed`, as JSON text), if any: the runs of one name and
    /// several seeds (`ipirm run --seeds N`) are an arm of `ipirm compare`, and [`Store::gc`]
    /// keeps the latest run of each.
    pub fn seed(&self) -> Option<String> {
        let config: serde_json::Value = serde_json::from_str(&self.config_json).ok()?;
        Some(config.pointer("/train/seed")?.to_string())
    }
}

/// Whether `name` can name runs: 1 to 100 letters, digits, `-`, `_` and `.`, not starting with
/// `.` (it is a folder under `<store>/runs/` and the start of each run's id, one line of `store
/// ls`); the error says what was expected. A run id follows the same rule.
pub fn check_run_name(name: &str) -> std::result::Result<(), String> {
    match name {
        "" => Err("expected a name, found nothing".into()),
        n if n.len() > 100 => Err(format!("expected at most 100 characters, found {}", n.len())),
        n if !n.chars().all(is_run_name_char) => Err(
            "expected letters, digits, `-`, `_` and `.` only (the name is a folder under <store>/runs/)".into(),
        ),
        n if n.starts_with('.') => Err("expected a name that does not start with `.`".into()),
        _ => Ok(()),
    }
}

/// The characters a run name may hold: letters, digits, `-`, `_` and `.`.
pub fn is_run_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// How a [`Store`] behaves.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long an operation waits for another process to release the index before failing with
    /// an error that names it.
    pub lock_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        }
    }
}

/// A handle on a store folder. Cheap to clone (clones share one in-process lock); holds no file
/// open between operations.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    options: StoreOptions,
    local: Mutex<()>,
    /// Read-only stores: the private folder holding a copy of the index (removed on drop).
    read_only_copy: Option<PathBuf>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(copy) = &self.read_only_copy {
            let _ = std::fs::remove_dir_all(copy);
        }
    }
}

impl Store {
    /// Whether `root` holds a store: its index, the `meta/` records a lost index is rebuilt
    /// from, or blobs. Opens nothing (a reader that must not create a store checks this first).
    pub fn exists_at(root: impl AsRef<Path>) -> bool {
        let dirs = [lock::INDEX_DIR, mirror::META_DIR, OBJECTS_DIR];
        dirs.iter().any(|d| root.as_ref().join(d).is_dir())
    }

    /// Opens (creating if needed) the store at `root` with default options, checking its schema.
    pub fn open(root: impl AsRef<Path>) -> Result<Store> {
        Store::open_with(root, StoreOptions::default())
    }

    /// [`Store::open`] with options. A folder this process cannot write to is opened read-only
    /// (see [`Store::is_read_only`]). A writable store's index gets back the entries a crash or a
    /// lost index left out, from their meta files (see `mirror`), with a note on stderr.
    pub fn open_with(root: impl AsRef<Path>, options: StoreOptions) -> Result<Store> {
        let (store, restored) = Store::open_restoring(root.as_ref(), options)?;
        let (found, left) = (restored.artifacts + restored.runs, &restored.left_out);
        if found > 0 || left.is_some() {
            let left = left.as_ref().map_or(String::new(), |d| {
                let n = restored.skipped.len();
                format!(
                    "; {n} unusable (a damaged blob or file) moved to {}",
                    d.display()
                )
            });
            eprintln!(
                "note: store {}: {found} entries restored to the index from their meta files (left by an interrupted write or a lost index){left}",
                store.root().display()
            );
        }
        Ok(store)
    }

    /// [`Store::open_with`], returning what it restored to the index.
    fn open_restoring(root: &Path, options: StoreOptions) -> Result<(Store, repair::Restored)> {
        let root = root.to_path_buf();
        let read_only = match std::fs::metadata(&root) {
            Ok(m) if !m.is_dir() => {
                return Err(Error::file(
                    &root,
                    "a store folder (--store DIR)",
                    "a file, not a folder",
                ));
            }
            Ok(_) => !is_writable(&root)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::io(&root, e)),
        };
        let read_only_copy = if read_only {
            Some(lock::copy_index(&root)?)
        } else {
            for d in [root.clone(), root.join(OBJECTS_DIR), root.join(TMP_DIR)] {
                std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
            }
            None
        };
        let store = Store {
            inner: Arc::new(Inner {
                root,
                options,
                local: Mutex::new(()),
                read_only_copy,
            }),
        };
        let restored = store.with_index(|ix| {
            ix.check_schema()?;
            if read_only {
                return Ok(repair::Restored::default());
            }
            ix.write_all_meta()?;
            repair::restore_unindexed(ix)
        })?;
        Ok((store, restored))
    }

    /// Whether the store was opened read-only (its folder is not writable by this process):
    /// reads work, writes fail with an error saying so.
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only_copy.is_some()
    }

    /// `Ok` unless the store is read-only.
    fn writable(&self) -> Result<()> {
        match self.is_read_only() {
            true => Err(index::read_only_error(self.root())),
            false => Ok(()),
        }
    }

    /// The store folder.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    fn with_index<T>(&self, f: impl FnOnce(&Index) -> Result<T>) -> Result<T> {
        let root = &self.inner.root;
        let _local = match self.inner.local.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::WouldBlock) => {
                lock::ensure_not_held_here(root)?;
                self.inner.local.lock().unwrap_or_else(|p| p.into_inner())
            }
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        };
        let index_root = self.inner.read_only_copy.as_deref().unwrap_or(root);
        let timeout = self.inner.options.lock_timeout;
        let index = Index::open(index_root, root, self.is_read_only(), timeout)?;
        let out = f(&index);
        let flushed = (|| {
            fault!("store::index-flush");
            index.flush()
        })();
        index.close();
        let out = out?;
        flushed?;
        Ok(out)
    }

    // ----- blobs ------------------------------------------------------------------------------

    /// Stores the file that `write` makes at the path it is given as a blob of `format` for
    /// `stage`, named by the sha256 of its bytes; returns the digest. The store knows nothing of
    /// what is inside (tensors are `crate::tensor_file`'s, on top of this).
    pub fn put_blob(
        &self,
        stage: &Stage,
        format: &str,
        write: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<String> {
        self.writable()?;
        let tmp = tmp_file(self.root());
        let written = (|| {
            write(&tmp).map_err(|e| {
                let (key, name) = (&stage.key, &stage.name);
                Error::Store(format!(
                    "artifact {key} (stage {name}): cannot write its blob: {e}"
                ))
            })?;
            fault!("store::blob-write");
            File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(&tmp, e))?;
            hash_file(&tmp)
        })();
        let (digest, bytes) = written.inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
        let artifact = stage.artifact(ArtifactKind::Blob {
            digest: digest.clone(),
            bytes,
            format: format.to_string(),
        });
        let r = self.with_index(|ix| {
            ix.check_run_of(&artifact)?;
            ix.install_blob(&tmp, &digest)?;
            ix.insert_artifact(&artifact)
        });
        if r.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        r.map(|_| digest)
    }

    /// The file of the blob under `key`, its bytes re-hashed first: `Ok(None)` if no such
    /// artifact, [`Error::Damaged`] if the file is missing or no longer matches the digest (then
    /// [`Store::invalidate`] it and recompute), an error if it is a record.
    pub fn get_blob(&self, key: &str) -> Result<Option<PathBuf>> {
        let Some((path, digest, bytes)) = self.blob_of(key)? else {
            return Ok(None);
        };
        check_blob(key, &path, &digest, bytes)?;
        Ok(Some(path))
    }

    /// Where the blob under `key` is, not re-hashed (to read a header without the whole file;
    /// [`Store::get_blob`] checks the bytes); `Ok(None)` if no such artifact.
    pub fn blob_path(&self, key: &str) -> Result<Option<PathBuf>> {
        Ok(self.blob_of(key)?.map(|(path, ..)| path))
    }

    /// Where the blob of `key` is, with the digest and size the index records.
    fn blob_of(&self, key: &str) -> Result<Option<(PathBuf, String, u64)>> {
        let Some(a) = self.get_meta(key)? else {
            return Ok(None);
        };
        match a.kind {
            ArtifactKind::Blob { digest, bytes, .. } => {
                Ok(Some((self.object_path(&digest), digest, bytes)))
            }
            ArtifactKind::Record(_) => Err(Error::Store(format!(
                "artifact {key} in store {} is a record (stage {}), not a blob",
                self.root().display(),
                a.stage
            ))),
        }
    }

    // ----- records ----------------------------------------------------------------------------

    /// Stores a small value for `stage` in the index itself. See [`codec`] for what bincode can
    /// store (no `HashMap`, no `serde_json::Value`).
    pub fn put_record<T: Serialize + ?Sized>(&self, stage: &Stage, value: &T) -> Result<()> {
        self.writable()?;
        let body = codec::encode_body(value).map_err(|e| {
            Error::Store(format!(
                "artifact {} (stage {}): the record does not encode: {e}",
                stage.key, stage.name
            ))
        })?;
        let artifact = stage.artifact(ArtifactKind::Record(body));
        self.with_index(|ix| {
            ix.check_run_of(&artifact)?;
            ix.insert_artifact(&artifact)
        })
    }

    /// The record under `key`; `Ok(None)` if absent, an error if it is a blob or does not decode
    /// as `T`.
    pub fn get_record<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let Some(a) = self.get_meta(key)? else {
            return Ok(None);
        };
        let (root, stage) = (self.root().display(), &a.stage);
        match &a.kind {
            ArtifactKind::Record(body) => codec::decode_body(body).map(Some).map_err(|e| {
                let t = std::any::type_name::<T>();
                Error::Store(format!(
                    "artifact {key} (stage {stage}) in store {root} does not decode as {t}: {e}"
                ))
            }),
            ArtifactKind::Blob { .. } => Err(Error::Store(format!(
                "artifact {key} in store {root} is a blob (stage {stage}), not a record"
            ))),
        }
    }

    // ----- the index --------------------------------------------------------------------------

    /// The artifact's metadata (no blob check).
    pub fn get_meta(&self, key: &str) -> Result<Option<Artifact>> {
        self.with_index(|ix| ix.get(key))
    }

    /// Whether `key` can be loaded: it is indexed and, for a blob, its file exists with the
    /// recorded size. (A file of the right size with changed bytes is caught on load.)
    pub fn contains(&self, key: &str) -> Result<bool> {
        self.with_index(|ix| ix.contains(key))
    }

    /// [`Store::contains`] of each key, in one visit to the index (a plan of many epochs
    /// would otherwise open it once per key).
    pub fn contains_each(&self, keys: &[&str]) -> Result<Vec<bool>> {
        self.with_index(|ix| keys.iter().map(|k| ix.contains(k)).collect())
    }

    /// Drops `key` from the index (and deletes its blob if no other artifact shares it), so the
    /// next [`Store::contains`] is false and the stage is recomputed. Returns whether it existed.
    pub fn invalidate(&self, key: &str) -> Result<bool> {
        self.with_index(|ix| {
            let Some(a) = ix.get::<Artifact>(key)? else {
                return Ok(false);
            };
            ix.remove::<Artifact>(&[key])?;
            if let Some(d) = a.digest() {
                if !ix.list::<Artifact>()?.iter().any(|o| o.digest() == Some(d)) {
                    blobs::remove_if_present(&self.object_path(d))?;
                }
            }
            Ok(true)
        })
    }

    /// Every artifact, sorted by key.
    pub fn list_artifacts(&self) -> Result<Vec<Artifact>> {
        self.with_index(|ix| ix.list())
    }

    /// Whether the index misses entries the store's files record (see `mirror::index_gaps`):
    /// a message saying what and how to repair it, or `None`.
    pub fn index_gaps(&self) -> Result<Option<String>> {
        self.with_index(|ix| ix.gaps())
    }

    // ----- runs -------------------------------------------------------------------------------

    /// Records the start of a run of `name` with its whole `config`; returns it (with its id).
    pub fn start_run<C: Serialize + ?Sized>(&self, name: &str, config: &C) -> Result<RunRecord> {
        check_run_name(name).map_err(|e| Error::config("--name", e))?;
        self.writable()?;
        let config_json = canonical_json(config)?;
        self.with_index(|ix| {
            let (seq, created) = (ix.next_seq()?, now_secs());
            let run = RunRecord {
                id: format!("{name}-{}-{seq}", compact_time(created)),
                name: name.to_string(),
                config_json,
                artifacts: Vec::new(),
                pinned: false,
                created,
                finished: false,
                seq,
            };
            ix.put(&run)?;
            Ok(run)
        })
    }

    pub fn get_run(&self, id: &str) -> Result<Option<RunRecord>> {
        self.with_index(|ix| ix.get(id))
    }

    /// Every run, oldest first.
    pub fn list_runs(&self) -> Result<Vec<RunRecord>> {
        self.with_index(|ix| ix.runs())
    }

    /// The most recent run of each name, by name.
    pub fn latest_runs(&self) -> Result<Vec<RunRecord>> {
        Ok(latest_of(&self.list_runs()?))
    }

    /// Appends each of `keys` the run does not list yet to its artifacts, in order: how a run
    /// records the cached results it reused. One write of the run record for all of them, none
    /// if it lists every one already.
    pub fn attach(&self, run: &str, keys: &[&str]) -> Result<()> {
        self.with_index(|ix| ix.attach(run, keys))
    }

    /// Pins or unpins a run: [`Store::gc`] keeps everything a pinned run reaches.
    pub fn pin(&self, run: &str, pinned: bool) -> Result<()> {
        self.with_index(|ix| ix.update_run(run, |r| r.pinned = pinned))
    }

    /// Marks a run finished.
    pub fn finish_run(&self, run: &str) -> Result<()> {
        self.with_index(|ix| ix.update_run(run, |r| r.finished = true))
    }

    // ----- paths ------------------------------------------------------------------------------

    /// Where the blob with `digest` lives.
    pub fn object_path(&self, digest: &str) -> PathBuf {
        object_path(self.root(), digest)
    }
}

/// "The latest run" of each name, sorted by name (see [`latest_by`]).
fn latest_of(runs: &[RunRecord]) -> Vec<RunRecord> {
    latest_by(runs, |r| r.name.clone())
}

/// The latest run of each group of `runs` (runs with one `group` value), in the order of the
/// groups: its most recent finished run (by `created`, then `seq`), or its most recent run when
/// none finished. A run that failed or is still going never displaces a finished one (so `gc`
/// keeps the finished run and what it reaches).
fn latest_by<G: Ord>(runs: &[RunRecord], group: impl Fn(&RunRecord) -> G) -> Vec<RunRecord> {
    let mut by: std::collections::BTreeMap<G, &RunRecord> = std::collections::BTreeMap::new();
    for r in runs {
        let e = by.entry(group(r)).or_insert(r);
        if (r.finished, r.created, r.seq) > (e.finished, e.created, e.seq) {
            *e = r;
        }
    }
    by.into_values().cloned().collect()
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `2025-11-28T17:32:00Z`.
pub fn fmt_time(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// `20251128T173200`: [`fmt_time`] without separators, for run ids and folder names.
fn compact_time(secs: u64) -> String {
    fmt_time(secs)
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::fmt_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::fmt_time(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::fmt_time(1_764_351_120), "2025-11-28T17:32:00Z");
        assert_eq!(super::compact_time(1_764_351_120), "20251128T173200");
    }
}

//! The store's index, open inside one store operation ([`Index`]): typed tables over sled's trees
//! ([`Entry`]: artifacts by key, runs by id), each entry written with its meta file (see `mirror`)
//! and enveloped by [`codec`](super::codec) at [`SCHEMA_VERSION`]; and the `schema` record.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::blobs::{object_path, remove_if_present, sync_dir, OBJECTS_DIR};
use super::fault::fault;
use super::lock::{self, Held};
use super::{codec, mirror, now_secs, Artifact, ArtifactKind, RunRecord, SCHEMA_VERSION};
use crate::{Error, Result};

/// The `schema` record's key in the `meta` tree.
const SCHEMA_KEY: &[u8] = b"schema";

/// The `schema` record in the `meta` tree.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SchemaRecord {
    version: u32,
    created: u64,
    crate_version: String,
}

/// What the index's trees hold: a value filed under its id, with a file of the same bytes under
/// `meta/`.
pub(super) trait Entry: Serialize + DeserializeOwned {
    /// What it is, for messages: `artifact` or `run`.
    const WHAT: &'static str;
    fn tree(ix: &Index) -> &sled::Tree;
    fn meta_path(root: &Path, id: &str) -> PathBuf;
    fn id(&self) -> &str;
}

impl Entry for Artifact {
    const WHAT: &'static str = "artifact";
    fn tree(ix: &Index) -> &sled::Tree {
        &ix.artifacts
    }
    fn meta_path(root: &Path, key: &str) -> PathBuf {
        mirror::artifact_path(root, key)
    }
    fn id(&self) -> &str {
        &self.key
    }
}

impl Entry for RunRecord {
    const WHAT: &'static str = "run";
    fn tree(ix: &Index) -> &sled::Tree {
        &ix.runs
    }
    fn meta_path(root: &Path, id: &str) -> PathBuf {
        mirror::run_path(root, id)
    }
    fn id(&self) -> &str {
        &self.id
    }
}

/// The index, open, inside one store operation: sled's trees of artifacts, runs and store
/// metadata (the schema record).
pub(crate) struct Index {
    /// First, so that it drops before the database closes (see [`Held`]).
    held: Held,
    db: sled::Db,
    artifacts: sled::Tree,
    runs: sled::Tree,
    meta: sled::Tree,
    pub(super) root: PathBuf,
    read_only: bool,
}

impl Index {
    /// Opens the index under `index_root` (the store folder `root`, or a read-only store's private
    /// copy), waiting at most `timeout` for another process to close it.
    pub(super) fn open(
        index_root: &Path,
        root: &Path,
        read_only: bool,
        timeout: Duration,
    ) -> Result<Index> {
        let (db, held) = lock::open(index_root, root, timeout)?;
        let tree = |name: &str| {
            db.open_tree(name)
                .map_err(|e| lock::damaged_index(root, &format!("cannot open its trees: {e}")))
        };
        Ok(Index {
            artifacts: tree("artifacts")?,
            runs: tree("runs")?,
            meta: tree("meta")?,
            db,
            held,
            root: root.to_path_buf(),
            read_only,
        })
    }

    /// Closes the index (releasing sled's lock), then defers to a waiting process.
    pub(super) fn close(self) {
        let root = self.held.root.clone();
        drop(self);
        lock::defer_to_waiters(&root);
    }

    fn sled<T>(&self, r: sled::Result<T>) -> Result<T> {
        let dir = self.held.index_dir.display();
        r.map_err(|e| Error::Store(format!("store index {dir}: {e}")))
    }

    /// Makes everything written so far durable.
    pub(super) fn flush(&self) -> Result<()> {
        self.sled(self.db.flush()).map(drop)
    }

    pub(super) fn writable(&self) -> Result<()> {
        match self.read_only {
            true => Err(read_only_error(&self.root)),
            false => Ok(()),
        }
    }

    fn decode<T: DeserializeOwned>(&self, what: &str, bytes: &[u8]) -> Result<T> {
        codec::decode(SCHEMA_VERSION, bytes).map_err(|e| match e {
            codec::DecodeError::Version(v) => schema_error(&self.root, v),
            e => Error::Store(format!("store at {}: {what}: {e}", self.root.display())),
        })
    }

    fn encode<T: Serialize>(&self, what: &str, value: &T) -> Result<Vec<u8>> {
        codec::encode(SCHEMA_VERSION, value).map_err(|e| {
            Error::Store(format!(
                "store at {}: {what} does not encode: {e}",
                self.root.display()
            ))
        })
    }

    /// Writes the schema record into a new index; refuses an index of another schema.
    pub(super) fn check_schema(&self) -> Result<()> {
        let meta = &self.meta;
        let Some(bytes) = self.sled(meta.get(SCHEMA_KEY))? else {
            if !self.artifacts.is_empty() || !self.runs.is_empty() {
                return Err(Error::Store(format!(
                    "store at {} has artifacts or runs but no schema record: it is damaged or was not written by ipirm",
                    self.root.display()
                )));
            }
            let rec = SchemaRecord {
                version: SCHEMA_VERSION,
                created: now_secs(),
                crate_version: env!("CARGO_PKG_VERSION").into(),
            };
            let bytes = self.encode("the schema record", &rec)?;
            return self.sled(meta.insert(SCHEMA_KEY, bytes)).map(drop);
        };
        match codec::schema_of(&bytes) {
            Ok(SCHEMA_VERSION) => Ok(()),
            // Schema 1 is the first: any other version, newer or older, is refused (an older one
            // would be migrated here once there is one).
            Ok(v) => Err(schema_error(&self.root, v)),
            Err(e) => Err(Error::Store(format!(
                "store at {}: the schema record is damaged ({e})",
                self.root.display()
            ))),
        }
    }

    /// Gives every index entry its meta file: all of them in a store made before `meta/`
    /// existed (then marked complete), else those whose file is missing (deleted by hand, or a
    /// removal a crash cut short, its entry still indexed): without it, a lost index came back
    /// without the entry and gc deleted its blob.
    pub(super) fn write_all_meta(&self) -> Result<()> {
        fn files_of<T: Entry>(ix: &Index, only_missing: bool) -> Result<()> {
            for kv in T::tree(ix).iter() {
                let (k, v) = ix.sled(kv)?;
                let path = T::meta_path(&ix.root, &String::from_utf8_lossy(&k));
                if !(only_missing && path.is_file()) {
                    mirror::write(&ix.root, &path, &v)?;
                }
            }
            Ok(())
        }
        let complete = mirror::is_complete(&self.root);
        files_of::<Artifact>(self, complete)?;
        files_of::<RunRecord>(self, complete)?;
        if !complete {
            mirror::mark_complete(&self.root)?;
        }
        Ok(())
    }

    // ----- typed tables -----------------------------------------------------------------------

    /// The entry filed under `id`.
    pub(super) fn get<T: Entry>(&self, id: &str) -> Result<Option<T>> {
        let bytes = self.sled(T::tree(self).get(id.as_bytes()))?;
        let what = || format!("{} {id}", T::WHAT);
        bytes.map(|b| self.decode(&what(), &b)).transpose()
    }

    /// Every entry by id, sorted by id, each decoded or with the error it gave.
    pub(super) fn entries<T: Entry>(&self) -> Result<Vec<(String, Result<T>)>> {
        let mut out = Vec::new();
        for kv in T::tree(self).iter() {
            let (k, v) = self.sled(kv)?;
            let id = String::from_utf8_lossy(&k).into_owned();
            let value = self.decode(&format!("{} {id}", T::WHAT), &v);
            out.push((id, value));
        }
        Ok(out)
    }

    /// Every entry, sorted by id; fails on the first that does not decode.
    pub(super) fn list<T: Entry>(&self) -> Result<Vec<T>> {
        self.entries()?.into_iter().map(|(_, v)| v).collect()
    }

    /// Every id, sorted.
    pub(super) fn ids<T: Entry>(&self) -> Result<Vec<String>> {
        let keys = T::tree(self).iter().keys();
        keys.map(|k| Ok(String::from_utf8_lossy(&self.sled(k)?).into_owned()))
            .collect()
    }

    /// See [`Store::index_gaps`](super::Store::index_gaps).
    pub(super) fn gaps(&self) -> Result<Option<String>> {
        mirror::index_gaps(
            &self.root,
            &self.ids::<Artifact>()?,
            &self.ids::<RunRecord>()?,
        )
    }

    /// Every run, oldest first.
    pub(super) fn runs(&self) -> Result<Vec<RunRecord>> {
        let mut runs: Vec<RunRecord> = self.list()?;
        runs.sort_by_key(|r| (r.created, r.seq));
        Ok(runs)
    }

    /// Writes `value`'s meta file, then its index entry (replacing any with its id).
    pub(super) fn put<T: Entry>(&self, value: &T) -> Result<()> {
        self.writable()?;
        let id = value.id();
        let bytes = self.encode(&format!("{} {id}", T::WHAT), value)?;
        mirror::write(&self.root, &T::meta_path(&self.root, id), &bytes)?;
        fault!("store::index-insert");
        self.sled(T::tree(self).insert(id.as_bytes(), bytes))
            .map(drop)
    }

    /// Removes the entries' meta files, then the entries, and flushes. (In this order a meta file
    /// without its entry is always an interrupted put, which opening the store restores.)
    pub(super) fn remove<T: Entry>(&self, ids: &[&str]) -> Result<()> {
        self.writable()?;
        for id in ids {
            remove_if_present(&T::meta_path(&self.root, id))?;
        }
        for id in ids {
            self.sled(T::tree(self).remove(id.as_bytes()))?;
        }
        self.flush()
    }

    /// The next store-wide sequence number (sled's id generator, monotonic across restarts).
    pub(super) fn next_seq(&self) -> Result<u64> {
        Ok(self.sled(self.db.generate_id())? + 1)
    }

    // ----- what several operations share -------------------------------------------------------

    /// See [`Store::contains`](super::Store::contains).
    pub(super) fn contains(&self, key: &str) -> Result<bool> {
        Ok(match self.get::<Artifact>(key)?.map(|a| a.kind) {
            None => false,
            Some(ArtifactKind::Record(_)) => true,
            Some(ArtifactKind::Blob { digest, bytes, .. }) => {
                std::fs::metadata(object_path(&self.root, &digest))
                    .is_ok_and(|m| m.is_file() && m.len() == bytes)
            }
        })
    }

    /// Renames a finished temp file into `objects/` (replacing a file of the same name, which can
    /// only be the same bytes or a damaged copy) and fsyncs the folder.
    pub(super) fn install_blob(&self, tmp: &Path, digest: &str) -> Result<()> {
        self.writable()?;
        fault!("store::blob-install");
        let dest = object_path(&self.root, digest);
        let dir = dest.parent().expect("objects/ab");
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            sync_dir(&self.root.join(OBJECTS_DIR))?;
        }
        std::fs::rename(tmp, &dest).map_err(|e| Error::io(tmp, e))?;
        sync_dir(dir)
    }

    /// Fails if `a` names a run that does not exist (before its blob is installed).
    pub(super) fn check_run_of(&self, a: &Artifact) -> Result<()> {
        match &a.run {
            Some(id) if self.get::<RunRecord>(id)?.is_none() => Err(Error::Store(format!(
                "store at {}: run {id} does not exist (`ipirm store ls` lists the runs)",
                self.root.display()
            ))),
            _ => Ok(()),
        }
    }

    /// Indexes `a` (replacing any artifact with its key) and attaches it to its run.
    pub(super) fn insert_artifact(&self, a: &Artifact) -> Result<()> {
        self.put(a)?;
        match &a.run {
            Some(run) => self.attach(run, &[&a.key]),
            None => Ok(()),
        }
    }

    /// Changes the run `id` with `f`, and writes it back if that changed it (a run record holds
    /// every key the run used: rewriting it is what a long run's attaches cost).
    pub(super) fn update_run(&self, id: &str, f: impl FnOnce(&mut RunRecord)) -> Result<()> {
        let run: RunRecord = self.get(id)?.ok_or_else(|| {
            Error::Store(format!("store at {}: no run {id}", self.root.display()))
        })?;
        let mut changed = run.clone();
        f(&mut changed);
        match changed == run {
            true => Ok(()),
            false => self.put(&changed),
        }
    }

    /// See [`Store::attach`](super::Store::attach).
    pub(super) fn attach(&self, run: &str, keys: &[&str]) -> Result<()> {
        self.update_run(run, |r| {
            let mut have: BTreeSet<String> = r.artifacts.iter().cloned().collect();
            for k in keys {
                if have.insert(k.to_string()) {
                    r.artifacts.push(k.to_string());
                }
            }
        })
    }
}

/// The refusal of a write to a read-only store.
pub(super) fn read_only_error(root: &Path) -> Error {
    Error::Store(format!(
        "store at {} is read-only (this process cannot create files in it): `store ls`, `show`, `verify` and `export` work, this command has to write",
        root.display()
    ))
}

fn schema_error(root: &Path, found: u32) -> Error {
    if found > SCHEMA_VERSION {
        Error::Store(format!(
            "store at {} was written by a newer ipirm (schema {found}, this build reads up to {SCHEMA_VERSION}); use that ipirm, or export the store with it and import the export here",
            root.display()
        ))
    } else {
        Error::Store(format!(
            "store at {} has schema {found}, older than any this build can migrate (it reads schema {SCHEMA_VERSION}); export it with the ipirm that wrote it and import the export here",
            root.display()
        ))
    }
}

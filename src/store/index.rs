//! The store's index, open inside one store operation ([`Index`]): the sled trees of artifacts,
//! runs and the `schema` record, each entry written with its meta file (see `mirror`), values
//! enveloped by [`codec`](super::codec) and checked against [`SCHEMA_VERSION`].
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::blobs::{object_path, remove_if_present, sync_dir, OBJECTS_DIR};
use super::fault::fault;
use super::lock::IndexHandle;
use super::{
    codec, compact_time, mirror, now_secs, Artifact, ArtifactKind, RunRecord, SCHEMA_VERSION,
};
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

/// The index, open, inside one store operation.
pub(crate) struct Index {
    pub(super) handle: IndexHandle,
    pub(super) root: PathBuf,
    pub(super) read_only: bool,
}

impl Index {
    fn writable(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::Store(format!(
                "store at {} is read-only: this operation has to write",
                self.root.display()
            )));
        }
        Ok(())
    }

    /// Writes the meta file of every index entry (a store made before `meta/` existed), then
    /// marks `meta/` complete.
    pub(super) fn write_all_meta(&self) -> Result<()> {
        if mirror::is_complete(&self.root) {
            return Ok(());
        }
        for tree in [self.handle.artifacts(), self.handle.runs()] {
            for kv in tree.iter() {
                let (k, v) = kv.map_err(|e| self.sled_err(e))?;
                let name = String::from_utf8_lossy(&k);
                let path = if std::ptr::eq(tree, self.handle.artifacts()) {
                    mirror::artifact_path(&self.root, &name)
                } else {
                    mirror::run_path(&self.root, &name)
                };
                mirror::write(&self.root, &path, &v)?;
            }
        }
        mirror::mark_complete(&self.root)
    }

    pub(super) fn sled_err(&self, e: sled::Error) -> Error {
        self.handle.err(e.to_string())
    }

    pub(super) fn decode<T: DeserializeOwned>(&self, what: &str, bytes: &[u8]) -> Result<T> {
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

    pub(super) fn check_schema(&self) -> Result<()> {
        match self
            .handle
            .meta()
            .get(SCHEMA_KEY)
            .map_err(|e| self.sled_err(e))?
        {
            None => {
                if !self.handle.artifacts().is_empty() || !self.handle.runs().is_empty() {
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
                self.handle
                    .meta()
                    .insert(SCHEMA_KEY, bytes)
                    .map_err(|e| self.sled_err(e))?;
                Ok(())
            }
            Some(bytes) => match codec::schema_of(&bytes) {
                Ok(SCHEMA_VERSION) => Ok(()),
                // Schema 1 is the first: any other version, newer or older, is refused (an
                // older one would be migrated here once there is one).
                Ok(v) => Err(schema_error(&self.root, v)),
                Err(e) => Err(Error::Store(format!(
                    "store at {}: the schema record is damaged ({e})",
                    self.root.display()
                ))),
            },
        }
    }

    pub fn get_meta(&self, key: &str) -> Result<Option<Artifact>> {
        match self
            .handle
            .artifacts()
            .get(key.as_bytes())
            .map_err(|e| self.sled_err(e))?
        {
            None => Ok(None),
            Some(b) => self.decode(&format!("artifact {key}"), &b).map(Some),
        }
    }

    /// See [`Store::contains`].
    pub fn contains(&self, key: &str) -> Result<bool> {
        Ok(match self.get_meta(key)? {
            None => false,
            Some(a) => match &a.kind {
                ArtifactKind::Record(_) => true,
                ArtifactKind::Blob { digest, bytes, .. } => {
                    std::fs::metadata(object_path(&self.root, digest))
                        .is_ok_and(|m| m.is_file() && m.len() == *bytes)
                }
            },
        })
    }

    pub fn get_record<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let Some(a) = self.get_meta(key)? else {
            return Ok(None);
        };
        match &a.kind {
            ArtifactKind::Record(body) => codec::decode_body(body).map(Some).map_err(|e| {
                Error::Store(format!(
                    "artifact {key} (stage {}) in store {} does not decode as {}: {e}",
                    a.stage,
                    self.root.display(),
                    std::any::type_name::<T>()
                ))
            }),
            ArtifactKind::Blob { .. } => Err(Error::Store(format!(
                "artifact {key} in store {} is a blob (stage {}), not a record",
                self.root.display(),
                a.stage
            ))),
        }
    }

    pub fn list_artifacts(&self) -> Result<Vec<Artifact>> {
        let mut out = Vec::new();
        for kv in self.handle.artifacts().iter() {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
            out.push(self.decode(&format!("artifact {}", String::from_utf8_lossy(&k)), &v)?);
        }
        Ok(out)
    }

    /// See [`Store::index_gaps`].
    pub fn index_gaps(&self) -> Result<Option<String>> {
        let mut keys = Vec::new();
        for k in self.handle.artifacts().iter().keys() {
            keys.push(String::from_utf8_lossy(&k.map_err(|e| self.sled_err(e))?).into_owned());
        }
        let mut runs = Vec::new();
        for k in self.handle.runs().iter().keys() {
            runs.push(String::from_utf8_lossy(&k.map_err(|e| self.sled_err(e))?).into_owned());
        }
        mirror::index_gaps(&self.root, &keys, &runs)
    }

    /// See [`Store::invalidate`].
    pub fn invalidate(&self, key: &str) -> Result<bool> {
        self.writable()?;
        let Some(a) = self.get_meta(key)? else {
            return Ok(false);
        };
        self.handle
            .artifacts()
            .remove(key.as_bytes())
            .map_err(|e| self.sled_err(e))?;
        self.handle.flush()?;
        remove_if_present(&mirror::artifact_path(&self.root, key))?;
        if let Some(d) = a.digest() {
            if !self.list_artifacts()?.iter().any(|o| o.digest() == Some(d)) {
                remove_if_present(&object_path(&self.root, d))?;
            }
        }
        Ok(true)
    }

    pub(super) fn check_run_exists(&self, run: Option<&str>) -> Result<()> {
        match run {
            Some(id) if self.get_run(id)?.is_none() => Err(Error::Store(format!(
                "store at {}: run {id} does not exist (`ipirm store ls` lists the runs)",
                self.root.display()
            ))),
            _ => Ok(()),
        }
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

    /// Indexes `a` (replacing any artifact with its key) and attaches it to its run.
    pub(super) fn insert_artifact(&self, a: &Artifact) -> Result<()> {
        self.index_artifact(a)?;
        if let Some(run) = &a.run {
            self.attach(run, &a.key)?;
        }
        Ok(())
    }

    /// Writes `a`'s meta file, then its index entry (replacing any artifact with its key).
    pub(crate) fn index_artifact(&self, a: &Artifact) -> Result<()> {
        self.writable()?;
        let bytes = self.encode(&format!("artifact {}", a.key), a)?;
        mirror::write(
            &self.root,
            &mirror::artifact_path(&self.root, &a.key),
            &bytes,
        )?;
        fault!("store::index-insert");
        self.handle
            .artifacts()
            .insert(a.key.as_bytes(), bytes)
            .map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    /// Removes artifacts and runs from the index, flushes, then removes their meta files.
    pub(crate) fn remove_entries(&self, artifacts: &[&str], runs: &[&str]) -> Result<()> {
        self.writable()?;
        for k in artifacts {
            self.handle
                .artifacts()
                .remove(k.as_bytes())
                .map_err(|e| self.sled_err(e))?;
        }
        for r in runs {
            self.handle
                .runs()
                .remove(r.as_bytes())
                .map_err(|e| self.sled_err(e))?;
        }
        self.handle.flush()?;
        for k in artifacts {
            remove_if_present(&mirror::artifact_path(&self.root, k))?;
        }
        for r in runs {
            remove_if_present(&mirror::run_path(&self.root, r))?;
        }
        Ok(())
    }

    pub(super) fn start_run(&self, name: &str, config_json: &str) -> Result<RunRecord> {
        let seq = self.handle.generate_id()? + 1;
        let created = now_secs();
        let run = RunRecord {
            id: format!("{name}-{}-{seq}", compact_time(created)),
            name: name.to_string(),
            config_json: config_json.to_string(),
            artifacts: Vec::new(),
            pinned: false,
            created,
            finished: false,
            seq,
        };
        self.put_run(&run)
    }

    pub fn put_run(&self, run: &RunRecord) -> Result<RunRecord> {
        self.writable()?;
        let mut run = run.clone();
        if run.seq == 0 {
            run.seq = self.handle.generate_id()? + 1;
        }
        let bytes = self.encode(&format!("run {}", run.id), &run)?;
        mirror::write(&self.root, &mirror::run_path(&self.root, &run.id), &bytes)?;
        fault!("store::index-insert");
        self.handle
            .runs()
            .insert(run.id.as_bytes(), bytes)
            .map_err(|e| self.sled_err(e))?;
        Ok(run)
    }

    pub fn get_run(&self, id: &str) -> Result<Option<RunRecord>> {
        match self
            .handle
            .runs()
            .get(id.as_bytes())
            .map_err(|e| self.sled_err(e))?
        {
            None => Ok(None),
            Some(b) => self.decode(&format!("run {id}"), &b).map(Some),
        }
    }

    pub fn list_runs(&self) -> Result<Vec<RunRecord>> {
        let mut out: Vec<RunRecord> = Vec::new();
        for kv in self.handle.runs().iter() {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
            out.push(self.decode(&format!("run {}", String::from_utf8_lossy(&k)), &v)?);
        }
        out.sort_by_key(|r| (r.created, r.seq));
        Ok(out)
    }

    pub fn update_run(&self, id: &str, f: impl FnOnce(&mut RunRecord)) -> Result<()> {
        let mut run = self.get_run(id)?.ok_or_else(|| {
            Error::Store(format!("store at {}: no run {id}", self.root.display()))
        })?;
        f(&mut run);
        self.put_run(&run).map(|_| ())
    }

    pub fn attach(&self, run: &str, key: &str) -> Result<()> {
        self.update_run(run, |r| {
            if !r.artifacts.iter().any(|k| k == key) {
                r.artifacts.push(key.to_string());
            }
        })
    }
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

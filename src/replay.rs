//! Stepping through a stored run (the notebooks' entry point): its config, its stages in the
//! order it used them, the partition of every maximize step, the training curve, its data
//! (checked against the stored fingerprint), and a trainer restored from any stored checkpoint,
//! ready to replay or continue an epoch.
//!
//! A notebook cell that calls these returns their error with `?`: evcxr prints the message in the
//! cell (a store or run that is not there, a data folder that is gone) instead of a panic.
use std::path::Path;

use tch::Device;

use crate::config::Config;
use crate::data::loader::RunData;
use crate::pipeline::{DatasetRecord, StageKind};
use crate::store::{Artifact, RunRecord, Store};
use crate::train::ipirm::{Features, PartitionRecord};
use crate::train::{Checkpoint, EpochStats, Trainer};
use crate::{Error, Result};

/// The variable naming the store the notebooks read (`scripts/test.sh`, `scripts/lab.sh` and
/// `scripts/notebooks-in-browser.sh` set it).
pub const NOTEBOOK_STORE_ENV: &str = "IPIRM_NOTEBOOK_STORE";

/// The store the notebooks read without [`NOTEBOOK_STORE_ENV`]: the project's `artifacts/` (what
/// `ipirm run` writes by default), seen from `notebooks/`, where their kernel runs.
pub const NOTEBOOK_DEFAULT_STORE: &str = "../artifacts";

/// Why a notebook has no store to read ([`notebook_store`]): the library's error, which a cell's
/// `?` prints. evcxr prints it on the kernel's stderr, which its Jupyter kernel forwards to the
/// cell that is current when the line arrives; under "Run All" the next cell is already current
/// a moment after this one returns, and the message would land there. So, in an evcxr kernel,
/// dropping this error (evcxr drops it right after printing it, before the cell ends) waits a
/// little for the line to be forwarded to its own cell. Elsewhere it is a plain error.
pub struct NotebookStoreError(pub Error);

impl std::fmt::Display for NotebookStoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::fmt::Debug for NotebookStoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

impl std::error::Error for NotebookStoreError {}

impl From<Error> for NotebookStoreError {
    fn from(e: Error) -> Self {
        NotebookStoreError(e)
    }
}

impl Drop for NotebookStoreError {
    fn drop(&mut self) {
        // Set in the process evcxr runs a notebook's cells in.
        if std::env::var_os("EVCXR_IS_RUNTIME").is_some() {
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    }
}

/// The artifact store a notebook reads: `$IPIRM_NOTEBOOK_STORE`, else [`NOTEBOOK_DEFAULT_STORE`].
/// See [`open_notebook_store`]: a folder that holds no run is an error saying so.
pub fn notebook_store() -> std::result::Result<Store, NotebookStoreError> {
    match std::env::var_os(NOTEBOOK_STORE_ENV) {
        Some(dir) if !dir.is_empty() => {
            open_notebook_store(Path::new(&dir), &format!("${NOTEBOOK_STORE_ENV}"))
        }
        _ => open_notebook_store(
            Path::new(NOTEBOOK_DEFAULT_STORE),
            &format!("the default; ${NOTEBOOK_STORE_ENV} is not set"),
        ),
    }
}

/// The store at `dir` (`chosen` says why that folder, for the message), when it holds at least
/// one run. A missing folder, or one that is not a store yet (no index, no `meta/`), is an error
/// naming the folder and the command that makes a run there, and is left as it was; so is an
/// opened store without runs.
pub fn open_notebook_store(
    dir: &Path,
    chosen: &str,
) -> std::result::Result<Store, NotebookStoreError> {
    let shown = shown_path(dir);
    let no_runs = |what: &str| {
        Error::Store(format!(
            "the notebooks' store {shown} ({chosen}) {what}: make a run there from the project's \
             folder with `target/release/ipirm run --preset fmnist-ipirm-quick --set \
             train.knn_every=1 --store {shown}` (about 12 minutes on 2 CPU cores), or set \
             ${NOTEBOOK_STORE_ENV} to a store that holds one; then run the notebook again",
            shown = shown.display()
        ))
    };
    if !dir.exists() {
        return Err(no_runs("is not there").into());
    }
    if !dir.is_dir() {
        return Err(no_runs("is a file, not a folder").into());
    }
    if !Store::exists_at(dir) {
        return Err(no_runs("is not an artifact store yet").into());
    }
    let store = Store::open(dir)?;
    if store.list_runs()?.is_empty() {
        return Err(no_runs("holds no runs").into());
    }
    Ok(store)
}

/// `path` without `..` where its folder exists (`../artifacts` from `notebooks/` reads as the
/// project's `artifacts`), else as given, made absolute.
fn shown_path(path: &Path) -> std::path::PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    match (parent.map(|p| p.canonicalize()), path.file_name()) {
        (Some(Ok(p)), Some(name)) => p.join(name),
        _ => std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
    }
}

/// One stored maximize step of a run ([`RunView::maximize_step`]).
pub struct StoredStep {
    pub step: usize,
    /// The partition it learned.
    pub partition: PartitionRecord,
    /// The features it was learned on (offline steps).
    pub features: Option<Features>,
    /// The partition it started from, when the run starts each step from the previous one.
    pub previous: Option<PartitionRecord>,
}

/// A stored run, opened by id or by name (its latest run).
pub struct RunView {
    pub run: RunRecord,
    pub cfg: Config,
    /// The run's artifacts in the order it made or reused them.
    pub artifacts: Vec<Artifact>,
}

impl RunView {
    /// The run `what` names: an id, a name (its latest finished run, else its latest) or a
    /// unique id prefix.
    pub fn open(store: &Store, what: &str) -> Result<RunView> {
        let run = store.resolve_run(what)?;
        let cfg = Config::from_recorded_json(&run.config_json).map_err(|e| {
            Error::Store(format!(
                "run {}: its config does not read as this version's Config: {e}",
                run.id
            ))
        })?;
        let mut artifacts = Vec::new();
        for key in &run.artifacts {
            if let Some(a) = store.get_meta(key)? {
                artifacts.push(a);
            }
        }
        Ok(RunView {
            run,
            cfg,
            artifacts,
        })
    }

    /// The run's artifacts of one stage, in order.
    pub fn stage(&self, kind: StageKind) -> Vec<&Artifact> {
        self.artifacts
            .iter()
            .filter(|a| a.stage == kind.name())
            .collect()
    }

    /// One line per artifact: stage, short key, size.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "run {} ({}), {} artifacts\n",
            self.run.id,
            self.run.name,
            self.artifacts.len()
        );
        for a in &self.artifacts {
            s += &format!("  {:<12} {}  {:>10} B\n", a.stage, &a.key[..12], a.size());
        }
        s
    }

    /// The partition of every maximize step, in the order of the steps.
    pub fn partitions(&self, store: &Store) -> Result<Vec<PartitionRecord>> {
        let mut out = Vec::new();
        for a in self.stage(StageKind::Partition) {
            let p = store
                .get_typed::<PartitionRecord>(&a.key)?
                .ok_or_else(|| Error::Store(format!("partition {} is not in the store", a.key)))?;
            out.push(p);
        }
        out.sort_by_key(|p| p.after_epoch);
        Ok(out)
    }

    /// Maximize step `step` (0-based, in the order the run took them) as stored: the partition it
    /// learned, the features it was learned on (offline steps; `None` online) and the partition
    /// it started from (`None` with `maximize.random_init`, or for the first step): what
    /// [`crate::train::ipirm::OfflineStep`] needs to run it again, epoch by epoch.
    pub fn maximize_step(&self, store: &Store, step: usize) -> Result<StoredStep> {
        let mut steps: Vec<(PartitionRecord, &Artifact)> = Vec::new();
        for a in self.stage(StageKind::Partition) {
            let p = store
                .get_typed::<PartitionRecord>(&a.key)?
                .ok_or_else(|| Error::Store(format!("partition {} is not in the store", a.key)))?;
            steps.push((p, a));
        }
        steps.sort_by_key(|(p, _)| p.after_epoch);
        let count = steps.len();
        let previous = match step {
            0 => None,
            _ => steps.get(step - 1).map(|(p, _)| p.clone()),
        };
        let (partition, artifact) = steps.into_iter().nth(step).ok_or_else(|| {
            Error::Store(format!(
                "run {} stored {count} maximize steps; there is no step {step}",
                self.run.id
            ))
        })?;
        let mut features = None;
        for key in &artifact.inputs {
            let Some(meta) = store.get_meta(key)? else {
                continue;
            };
            if meta.stage == StageKind::Features.name() {
                features = Some(store.get_typed::<Features>(key)?.ok_or_else(|| {
                    Error::Store(format!(
                        "the features of maximize step {step} ({key}) are not in the store"
                    ))
                })?);
            }
        }
        let previous = previous.filter(|_| !self.cfg.maximize.random_init);
        Ok(StoredStep {
            step,
            partition,
            features,
            previous,
        })
    }

    /// The training curve: the figures of every epoch the run trained or loaded.
    pub fn curves(&self, store: &Store) -> Result<Vec<EpochStats>> {
        let mut out: Vec<EpochStats> = Vec::new();
        for a in self.stage(StageKind::Curve) {
            out.extend(store.get_record::<EpochStats>(&a.key)?);
        }
        out.sort_by_key(|s| s.epoch);
        Ok(out)
    }

    /// The run's data as it read it, on the CPU: the splits its config names, from its
    /// `data.data_dir`, checked against the fingerprint its dataset stage stored. An error says
    /// why when the files are not there or hold other images than the run read.
    pub fn data(&self, store: &Store) -> Result<RunData> {
        let stored = self
            .stage(StageKind::Dataset)
            .first()
            .map(|a| store.get_record::<DatasetRecord>(&a.key))
            .transpose()?
            .flatten()
            .ok_or_else(|| {
                Error::Store(format!(
                    "run {} has no dataset stage in the store",
                    self.run.id
                ))
            })?;
        let data = RunData::load(&self.cfg, Device::Cpu)?;
        let sha256 = data.fingerprint()?;
        if sha256 != stored.sha256 {
            let dir = self
                .cfg
                .data
                .data_dir
                .clone()
                .unwrap_or_else(|| std::path::PathBuf::from(crate::data::FASHION_MNIST_DIR));
            return Err(Error::file(
                dir,
                format!(
                    "the images run {} read ({}, sha256 {})",
                    self.run.id,
                    stored.names.join(", "),
                    &stored.sha256[..12.min(stored.sha256.len())]
                ),
                format!("other images (sha256 {})", &sha256[..12]),
            ));
        }
        Ok(data)
    }

    /// The key of the run's stored checkpoint after `epoch` epochs (0 = initialisation), if any,
    /// found from the checkpoints' index entries (no file is read).
    pub fn checkpoint_at(&self, epoch: usize) -> Option<String> {
        (self.stage(StageKind::Checkpoint).into_iter())
            .find(|a| crate::pipeline::stages::checkpoint_epoch(a) == Some(epoch))
            .map(|a| a.key.clone())
    }

    /// A trainer restored from the stored checkpoint `key` (model, optimizer state, epoch).
    pub fn trainer_at(&self, store: &Store, key: &str, device: Device) -> Result<Trainer> {
        let ckpt = store
            .get_typed::<Checkpoint>(key)?
            .ok_or_else(|| Error::Store(format!("checkpoint {key} is not in the store")))?;
        // The run's recorded config, fitted to this machine (a run recorded before the numerics
        // settings existed reads them as `auto`).
        let mut t = Trainer::new(&crate::fit::fit(&self.cfg, device, 1)?.cfg, device)?;
        t.restore(&ckpt)?;
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a notebook's first data cell shows on a store without runs.
    fn message(dir: &Path) -> String {
        match open_notebook_store(dir, "$IPIRM_NOTEBOOK_STORE") {
            Ok(_) => panic!("{} opened as a notebook store", dir.display()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_notebook_store_without_runs_is_named_with_the_command_that_makes_one() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let command = "ipirm run --preset fmnist-ipirm-quick --set train.knn_every=1 --store";

        // A folder that is not there is not created.
        let missing = root.join("store");
        let m = message(&missing);
        assert!(
            m.contains(&format!(
                "{} ($IPIRM_NOTEBOOK_STORE) is not there",
                missing.display()
            )),
            "{m}"
        );
        assert!(
            m.contains(&format!("{command} {}", missing.display())),
            "{m}"
        );
        assert!(!missing.exists());
        // `..` is resolved where the folder above exists (`../artifacts` from `notebooks/`).
        std::fs::create_dir(root.join("notebooks")).unwrap();
        let m = message(&root.join("notebooks/../store"));
        assert!(m.contains(&format!("{} (", missing.display())), "{m}");

        // An empty folder (a fresh clone's artifacts/) is left empty.
        std::fs::create_dir(&missing).unwrap();
        let m = message(&missing);
        assert!(
            m.contains("is not an artifact store yet") && m.contains(command),
            "{m}"
        );
        assert_eq!(std::fs::read_dir(&missing).unwrap().count(), 0);

        // A store without runs, then with one.
        let store = Store::open(&missing).unwrap();
        let m = message(&missing);
        assert!(m.contains("holds no runs") && m.contains(command), "{m}");
        let run = store
            .start_run("fmnist-ipirm-quick", &Config::default())
            .unwrap();
        drop(store);
        let opened = open_notebook_store(&missing, "test").unwrap();
        assert_eq!(opened.list_runs().unwrap()[0].id, run.id);

        // A file where the folder should be.
        let file = root.join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(message(&file).contains("is a file, not a folder"));
    }
}

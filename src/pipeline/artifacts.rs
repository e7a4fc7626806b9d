//! What a run stores, each as one type with one codec, and the store as one run uses it
//! ([`Ctx`]: every stage it makes or reuses is attached to the run).
//!
//! Tensor artifacts ([`TensorArtifact`]) are safetensors blobs whose header carries their small
//! facts ([`crate::store::Meta`]), readable without loading the tensors:
//! - [`Checkpoint`]: the model's variables (`model.<name>`), Adam's state, `epoch`; meta `epoch`.
//! - [`PartitionRecord`]: `partition` and `last_partition` (N×E logits), `risk` (epochs×4:
//!   total, contrastive, penalty, constraint), `best_epoch`, `after_epoch`; meta `after_epoch`,
//!   `best_epoch`, `epochs_run`, `env_sizes` (JSON).
//! - [`Features`]: `z1`, `z2` (N×d projections of both views; with `maximize.mixup` also `lam`
//!   and `labels_aux`, each image's λ and partner).
//!
//! Records (bincode in the index): [`crate::train::EpochStats`] (curve),
//! [`crate::eval::Accuracy`] (kNN), [`MonitorPoint`] (the kNN monitor),
//! [`crate::eval::linear::LinearResult`] (probe),
//! [`DatasetRecord`], [`super::Report`].
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use super::stages::Planned;
use crate::config::Config;
use crate::store::{Meta, Stage, Store};
pub use crate::train::ipirm::Features;
use crate::train::ipirm::PartitionRecord;
use crate::train::maximize::EpochRisk;
use crate::{Error, Result};

/// A value stored as a safetensors blob.
pub trait TensorArtifact: Sized {
    /// Its tensors and header metadata.
    fn to_tensors(&self) -> (Vec<(String, Tensor)>, Meta);
    /// Read back from what [`TensorArtifact::to_tensors`] wrote.
    fn from_tensors(named: Vec<(String, Tensor)>) -> Result<Self>;
}

/// A training state: model, optimizer, epochs done.
pub struct Checkpoint {
    pub epoch: usize,
    /// `model.<variable>`, `adam.*` and `epoch`, as [`crate::train::Trainer::state`] gives them.
    pub state: Vec<(String, Tensor)>,
}

impl TensorArtifact for Checkpoint {
    fn to_tensors(&self) -> (Vec<(String, Tensor)>, Meta) {
        let named = self
            .state
            .iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect();
        (
            named,
            Meta::from([("epoch".to_string(), self.epoch.to_string())]),
        )
    }
    fn from_tensors(state: Vec<(String, Tensor)>) -> Result<Self> {
        let epoch = state
            .iter()
            .find(|(n, _)| n == "epoch")
            .map(|(_, t)| t.int64_value(&[0]) as usize);
        Ok(Checkpoint {
            epoch: epoch.ok_or_else(|| Error::Shape("checkpoint lacks `epoch`".into()))?,
            state,
        })
    }
}

impl TensorArtifact for PartitionRecord {
    fn to_tensors(&self) -> (Vec<(String, Tensor)>, Meta) {
        let risk: Vec<f64> = self
            .risks
            .iter()
            .flat_map(|r| [r.total, r.contrastive, r.penalty, r.constraint])
            .collect();
        let named = [
            ("partition", self.partition.shallow_clone()),
            ("last_partition", self.last_partition.shallow_clone()),
            ("risk", Tensor::from_slice(&risk).view([-1, 4])),
            ("best_epoch", Tensor::from_slice(&[self.best_epoch as i64])),
            (
                "after_epoch",
                Tensor::from_slice(&[self.after_epoch as i64]),
            ),
        ]
        .into_iter()
        .map(|(n, t)| (n.to_string(), t))
        .collect();
        let meta = Meta::from([
            ("after_epoch".to_string(), self.after_epoch.to_string()),
            ("best_epoch".to_string(), self.best_epoch.to_string()),
            ("epochs_run".to_string(), self.risks.len().to_string()),
            (
                "env_sizes".to_string(),
                serde_json::to_string(&self.env_sizes).expect("integers serialise"),
            ),
        ]);
        (named, meta)
    }
    fn from_tensors(mut named: Vec<(String, Tensor)>) -> Result<Self> {
        let partition = take(&mut named, "partition")?;
        let risk = Vec::<Vec<f64>>::try_from(take(&mut named, "risk")?)?;
        let env_sizes = Vec::<i64>::try_from(
            partition
                .argmax(1, false)
                .bincount::<Tensor>(None, partition.size()[1]),
        )?;
        Ok(PartitionRecord {
            after_epoch: take(&mut named, "after_epoch")?.int64_value(&[0]) as usize,
            best_epoch: take(&mut named, "best_epoch")?.int64_value(&[0]) as usize,
            last_partition: take(&mut named, "last_partition")?,
            risks: risk
                .iter()
                .map(|r| EpochRisk {
                    total: r[0],
                    contrastive: r[1],
                    penalty: r[2],
                    constraint: r[3],
                })
                .collect(),
            env_sizes,
            partition,
        })
    }
}

impl TensorArtifact for Features {
    fn to_tensors(&self) -> (Vec<(String, Tensor)>, Meta) {
        let mut named = vec![
            ("z1".into(), self.z1.shallow_clone()),
            ("z2".into(), self.z2.shallow_clone()),
        ];
        if let Some((lam, aux)) = &self.mix {
            named.push(("lam".into(), lam.shallow_clone()));
            named.push(("labels_aux".into(), aux.shallow_clone()));
        }
        (named, Meta::new())
    }
    fn from_tensors(mut named: Vec<(String, Tensor)>) -> Result<Self> {
        let mix = match named.iter().any(|(n, _)| n == "lam") {
            true => Some((take(&mut named, "lam")?, take(&mut named, "labels_aux")?)),
            false => None,
        };
        Ok(Features {
            z1: take(&mut named, "z1")?,
            z2: take(&mut named, "z2")?,
            mix,
        })
    }
}

/// The dataset stage's record: which images a run read (their sha256 is the stage's input).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetRecord {
    pub names: Vec<String>,
    pub counts: Vec<i64>,
    pub sha256: String,
}

/// One point of the kNN monitor: the encoder's kNN accuracy after `epoch` epochs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MonitorPoint {
    pub epoch: usize,
    pub knn: crate::eval::Accuracy,
}

/// Named tensors by name.
pub fn take(named: &mut Vec<(String, Tensor)>, name: &str) -> Result<Tensor> {
    let i = named
        .iter()
        .position(|(n, _)| n == name)
        .ok_or_else(|| Error::Shape(format!("stored artifact lacks tensor `{name}`")))?;
    Ok(named.swap_remove(i).1)
}

/// The store as one run uses it: every stage it makes or reuses is attached to the run, and
/// each artifact records the device it was computed on.
pub struct Ctx<'a> {
    pub store: &'a Store,
    pub run: String,
    pub device: Device,
    pub cfg: &'a Config,
}

impl Ctx<'_> {
    /// The [`Stage`] of `planned`, recorded as this run's.
    pub fn stage(&self, planned: &Planned) -> Result<Stage> {
        if !planned.computable() {
            return Err(Error::Store(format!(
                "stage {} {} was made by another run and cannot be recomputed here",
                planned.kind.name(),
                planned.key
            )));
        }
        let refs: Vec<&str> = planned.inputs.iter().map(String::as_str).collect();
        let params: serde_json::Value =
            serde_json::from_str(&planned.params).expect("canonical JSON reads back");
        Ok(
            Stage::new(planned.kind.name(), planned.kind.version(), &params, &refs)?
                .run(&self.run)
                .device(crate::device::describe(self.device)),
        )
    }

    /// The tensor artifact stored under `key`, attached to the run; `None` when absent. A
    /// damaged blob is reported, dropped from the index and treated as absent, so the caller
    /// recomputes it (from its own inputs).
    pub fn load<T: TensorArtifact>(&self, key: &str) -> Result<Option<T>> {
        match self.store.get_tensors(key) {
            Ok(Some(t)) => {
                self.store.attach(&self.run, key)?;
                T::from_tensors(t).map(Some)
            }
            Ok(None) => Ok(None),
            Err(e @ Error::Damaged { .. }) => {
                eprintln!("warning: {e}; recomputing it");
                self.store.invalidate(key)?;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Attaches to the run each of `keys` that is stored, without reading it: what a resumed
    /// run reuses by standing on it (the checkpoints, features and monitor points before its
    /// resume point), so its record lists what a run from scratch would have made.
    pub fn attach_stored(&self, keys: &[&str]) -> Result<()> {
        for (key, stored) in keys.iter().zip(self.store.contains_each(keys)?) {
            if stored {
                self.store.attach(&self.run, key)?;
            }
        }
        Ok(())
    }

    /// Stores a tensor artifact as the result of `planned`.
    pub fn save<T: TensorArtifact>(&self, planned: &Planned, value: &T) -> Result<()> {
        let (named, meta) = value.to_tensors();
        let refs: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
        self.store
            .put_tensors(&self.stage(planned)?, &refs, &meta)
            .map(|_| ())
    }

    /// The record stored under `key`, attached to the run; `None` when absent.
    pub fn load_record<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let r = self.store.get_record(key)?;
        if r.is_some() {
            self.store.attach(&self.run, key)?;
        }
        Ok(r)
    }

    /// Stores a record as the result of `planned`.
    pub fn save_record<T: Serialize>(&self, planned: &Planned, value: &T) -> Result<()> {
        self.store.put_record(&self.stage(planned)?, value)
    }

    /// A record computed once: loaded when stored (saying so), else computed and stored.
    pub fn cached_record<T>(
        &self,
        planned: &Planned,
        what: &str,
        compute: impl FnOnce() -> Result<T>,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
    {
        if let Some(v) = self.load_record(&planned.key)? {
            eprintln!("{what}: cached ({})", short(&planned.key));
            return Ok(v);
        }
        let v = compute()?;
        self.save_record(planned, &v)?;
        Ok(v)
    }
}

/// The first 12 hex digits of a key, as `ipirm store ls` shows it.
pub fn short(key: &str) -> &str {
    &key[..key.len().min(12)]
}

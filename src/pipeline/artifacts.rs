//! The store as one run uses it ([`Ctx`]: every stage it makes or reuses is attached to the
//! run), and the records only the pipeline stores.
//!
//! Tensor artifacts ([`TensorArtifact`]) are safetensors blobs whose header carries their small
//! facts ([`crate::tensor_file::Meta`]), readable without loading the tensors; each type's encoding is
//! beside the type: [`crate::train::Checkpoint`] (`train/checkpoint.rs`),
//! [`crate::train::ipirm::PartitionRecord`] and [`crate::train::ipirm::Features`]
//! (`train/ipirm.rs`).
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
use crate::device::{describe, libtorch_version};
use crate::store::{Stage, Store};
use crate::tensor_file::{first_non_finite, TensorArtifact};
use crate::{Error, Result};

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
        let (name, version) = (planned.kind.name(), planned.kind.version());
        Ok(
            Stage::canonical(name, version, planned.params.clone(), &refs)
                .run(&self.run)
                .device(describe(self.device), libtorch_version()),
        )
    }

    /// The tensor artifact stored under `key`, attached to the run; `None` when absent. A
    /// damaged blob is reported, dropped from the index and treated as absent, so the caller
    /// recomputes it (from its own inputs).
    pub fn load<T: TensorArtifact>(&self, key: &str) -> Result<Option<T>> {
        match self.store.get_typed::<T>(key) {
            Ok(Some(v)) => {
                self.store.attach(&self.run, &[key])?;
                Ok(Some(v))
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
    /// resume point), so its record lists what a run from scratch would have made. Returns
    /// whether each key was stored.
    pub fn attach_stored(&self, keys: &[&str]) -> Result<Vec<bool>> {
        let stored = self.store.contains_each(keys)?;
        let attached: Vec<&str> = (keys.iter().zip(&stored))
            .filter_map(|(k, s)| s.then_some(*k))
            .collect();
        self.store.attach(&self.run, &attached)?;
        Ok(stored)
    }

    /// Stores a tensor artifact as the result of `planned`; refuses one holding a NaN or an
    /// infinity (in a parameter, a BatchNorm statistic, features...): nothing non-finite is
    /// stored.
    pub fn save<T: TensorArtifact>(&self, planned: &Planned, value: &T) -> Result<()> {
        let (named, meta) = value.to_tensors();
        if let Some((name, ..)) = first_non_finite(&named)? {
            return Err(Error::NonFinite {
                what: format!("tensor `{name}` of the {}", planned.kind.name()),
                at: format!("stage key {}", short(&planned.key)),
                value: f64::NAN,
            });
        }
        let refs: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
        self.store
            .put_tensors(&self.stage(planned)?, &refs, &meta)
            .map(|_| ())
    }

    /// The record stored under `key`, attached to the run; `None` when absent.
    pub fn load_record<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let r = self.store.get_record(key)?;
        if r.is_some() {
            self.store.attach(&self.run, &[key])?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::stages::StageKind;
    use crate::train::ipirm::Features;

    /// A tensor artifact with a NaN or an infinity anywhere is refused, naming the tensor, and
    /// nothing is stored; a finite one is stored.
    #[test]
    fn nothing_non_finite_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let cfg = Config::default();
        let run = store.start_run("t", &0).unwrap().id;
        let ctx = Ctx {
            store: &store,
            run,
            device: Device::Cpu,
            cfg: &cfg,
        };
        let features = |bad: f64| Features {
            z1: Tensor::ones([4, 2], (tch::Kind::Float, Device::Cpu)),
            z2: Tensor::from_slice(&[1f32, 0., 0., 1., 1., 0., 0., bad as f32]).view([4, 2]),
            mix: None,
        };
        for (i, bad) in [f64::NAN, f64::INFINITY].into_iter().enumerate() {
            let planned = Planned::new(StageKind::Features, &serde_json::json!(i), vec![]).unwrap();
            let e = ctx.save(&planned, &features(bad)).unwrap_err();
            assert!(
                matches!(&e, Error::NonFinite { what, .. } if what.contains("`z2`")),
                "{e}"
            );
            assert!(!store.contains(&planned.key).unwrap());
        }
        let planned = Planned::new(StageKind::Features, &serde_json::json!(2), vec![]).unwrap();
        ctx.save(&planned, &features(1.0)).unwrap();
        assert!(store.contains(&planned.key).unwrap());
    }
}

//! The stages of a run and their keys in the store.
//!
//! Training is a chain: the checkpoint after epoch e is keyed on the checkpoint after epoch e−1
//! and the partitions that epoch trained on; a partition is keyed on the checkpoint it was learned
//! from (and on the previous partition when it continues from it). Every key is known before any
//! work, so a run finds the last stage it can resume from by asking the store, and a changed
//! setting invalidates exactly the stages that read it: each stage's key covers the whole config
//! sections it reads ([`TrainSections`] for training), its inputs' keys, its version and the crate
//! version.
use serde::Serialize;
use tch::{Device, Tensor};

use crate::config::{Config, IpirmConfig, MaximizeConfig, Method, ModelConfig, TrainConfig};
use crate::store::{key_from_canon, Canon, Stage, Store};
use crate::{Error, Result};

/// Versions of the stages' code: bump one when its output changes for the same inputs.
pub mod version {
    pub const DATASET: u32 = 1;
    /// 2: a checkpoint's inputs are the previous checkpoint and the newest kept partition.
    pub const CHECKPOINT: u32 = 2;
    pub const CURVE: u32 = 1;
    pub const FEATURES: u32 = 1;
    pub const PARTITION: u32 = 1;
    pub const KNN: u32 = 1;
    pub const PIXEL_KNN: u32 = 1;
    pub const LINEAR: u32 = 1;
    pub const REPORT: u32 = 1;
}

/// The config sections the training stages read (the minimize step reads the maximize section's
/// `env_num` and `irm_temp`; the maximize step reads `train.temperature` and `train.seed`).
#[derive(Serialize)]
pub struct TrainSections<'a> {
    pub model: &'a ModelConfig,
    pub train: &'a TrainConfig,
    pub ipirm: &'a IpirmConfig,
    pub maximize: &'a MaximizeConfig,
}

impl<'a> TrainSections<'a> {
    pub fn of(cfg: &'a Config) -> Self {
        TrainSections { model: &cfg.model, train: &cfg.train, ipirm: &cfg.ipirm, maximize: &cfg.maximize }
    }
}

/// A planned stage: its name, version and input keys (the config sections are the caller's).
#[derive(Debug, Clone)]
pub struct Planned {
    pub name: &'static str,
    pub version: u32,
    pub inputs: Vec<String>,
    pub key: String,
}

/// A planned maximize step.
#[derive(Debug, Clone)]
pub struct PlannedPartition {
    /// Training epochs before it (0 = before epoch 1).
    pub after_epoch: usize,
    /// The offline step's extracted features (none for the online step).
    pub features: Option<Planned>,
    pub partition: Planned,
}

/// Every training stage's key, computed from the config and the dataset's key alone.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `checkpoints[e]`: the state after `e` epochs (`[0]` = initialisation).
    pub checkpoints: Vec<Planned>,
    /// `curves[e - 1]`: the figures of epoch `e`.
    pub curves: Vec<Planned>,
    pub partitions: Vec<PlannedPartition>,
}

fn plan_stage(name: &'static str, version: u32, sections: &Canon, inputs: Vec<String>) -> Planned {
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let key = key_from_canon(name, version, sections, &refs);
    Planned { name, version, inputs, key }
}

impl Plan {
    /// Time and memory linear in `train.epochs` (the config is canonicalised once; a checkpoint's
    /// inputs are the previous checkpoint and the newest partition: the older kept partitions
    /// are inputs of earlier checkpoints, so the chain commits to all of them).
    pub fn new(cfg: &Config, dataset_key: &str) -> Result<Plan> {
        let s = Canon::of(&TrainSections::of(cfg))?;
        let ipirm = cfg.train.method == Method::Ipirm;
        let epochs = cfg.train.epochs;
        let mut checkpoints = vec![plan_stage("checkpoint", version::CHECKPOINT, &s, vec![dataset_key.to_string()])];
        let mut curves = Vec::new();
        let mut partitions: Vec<PlannedPartition> = Vec::new();
        let add_partition = |after_epoch: usize, ckpt: &str, partitions: &mut Vec<PlannedPartition>| {
            let features = cfg.maximize.offline.then(|| plan_stage("features", version::FEATURES, &s, vec![ckpt.to_string()]));
            let mut inputs = vec![ckpt.to_string()];
            inputs.extend(features.as_ref().map(|f| f.key.clone()));
            if !cfg.maximize.random_init {
                inputs.extend(partitions.last().map(|p| p.partition.key.clone()));
            }
            let partition = plan_stage("partition", version::PARTITION, &s, inputs);
            partitions.push(PlannedPartition { after_epoch, features, partition });
        };
        if ipirm {
            add_partition(0, &checkpoints[0].key.clone(), &mut partitions);
        }
        for e in 1..=epochs {
            let mut inputs = vec![checkpoints[e - 1].key.clone()];
            inputs.extend(partitions.last().map(|p| p.partition.key.clone()));
            let ck = plan_stage("checkpoint", version::CHECKPOINT, &s, inputs);
            curves.push(plan_stage("curve", version::CURVE, &s, vec![ck.key.clone()]));
            checkpoints.push(ck);
            if ipirm && e % cfg.ipirm.maximize_iter == 0 && e < epochs {
                add_partition(e, &checkpoints[e].key.clone(), &mut partitions);
            }
        }
        Ok(Plan { checkpoints, curves, partitions })
    }
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
    /// A [`Stage`] for `planned`, reading `section`, recorded as this run's.
    pub fn stage<C: Serialize + ?Sized>(&self, name: &str, version: u32, section: &C, inputs: &[String]) -> Result<Stage> {
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        Ok(Stage::new(name, version, section, &refs)?.run(&self.run).device(crate::device::describe(self.device)))
    }

    /// The [`Stage`] of a planned training stage.
    pub fn planned(&self, p: &Planned) -> Result<Stage> {
        let st = self.stage(p.name, p.version, &TrainSections::of(self.cfg), &p.inputs)?;
        debug_assert_eq!(st.key(), p.key);
        Ok(st)
    }

    /// The tensors stored under `key`, attached to the run; `None` when absent. A damaged blob is
    /// reported, dropped from the index and treated as absent, so the caller recomputes it.
    pub fn load_tensors(&self, key: &str) -> Result<Option<Vec<(String, Tensor)>>> {
        match self.store.get_tensors(key) {
            Ok(Some(t)) => {
                self.store.attach(&self.run, key)?;
                Ok(Some(t))
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

    /// The record stored under `key`, attached to the run; `None` when absent.
    pub fn load_record<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let r = self.store.get_record(key)?;
        if r.is_some() {
            self.store.attach(&self.run, key)?;
        }
        Ok(r)
    }

    /// A record computed once: loaded when stored (saying so), else computed and stored.
    pub fn cached_record<T>(&self, stage: Stage, what: &str, compute: impl FnOnce() -> Result<T>) -> Result<T>
    where
        T: Serialize + serde::de::DeserializeOwned,
    {
        if let Some(v) = self.load_record(stage.key())? {
            eprintln!("{what}: cached ({})", short(stage.key()));
            return Ok(v);
        }
        let v = compute()?;
        self.store.put_record(&stage, &v)?;
        Ok(v)
    }
}

/// The first 12 hex digits of a key, as `ipirm store ls` shows it.
pub fn short(key: &str) -> &str {
    &key[..key.len().min(12)]
}

/// Named tensors by name.
pub fn take(named: &mut Vec<(String, Tensor)>, name: &str) -> Result<Tensor> {
    let i = named.iter().position(|(n, _)| n == name).ok_or_else(|| Error::Shape(format!("stored artifact lacks tensor `{name}`")))?;
    Ok(named.swap_remove(i).1)
}

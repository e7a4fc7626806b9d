//! The stages of a run, what each one reads, and their keys in the store.
//!
//! Each stage's key covers exactly the resolved parameters it reads (the `*_params` functions
//! below) and the keys of its inputs. The functions destructure every config section they touch
//! without `..`, so a new config field does not compile until someone decides which stages read
//! it.
//!
//! | stage | inputs | parameters |
//! |---|---|---|
//! | `dataset` | the data's sha256 | dataset, limits (not the folder: the content is hashed) |
//! | `checkpoint` 0 (initialisation) | none | model, `train.seed` |
//! | `checkpoint` e ≥ 1 | checkpoint e−1, dataset, newest partition | e, model, the minimize step's settings (`train` without `epochs`, `knn_every`; `mixup`, `mixup_alpha` only with `mixup`, `debiased`, `tau_plus` only for SimCLR without it; IP-IRM: `ipirm` without `maximize_iter`, with `retain_group_set` only when `retain_group` and non-zero, plus `env_num`, and `irm_temp` unless `mixup`; `epochs` only with `increasing_weight`), the partition a branched run started from; antialias; numerics |
//! | `curve` e | checkpoint e | none (the same computation as the checkpoint) |
//! | `features` k | the checkpoint it is learned after, dataset | k, `train.seed`, `maximize.batch_size` (and `train.mixup_alpha` with `maximize.mixup`), antialias, numerics |
//! | `partition` k | that checkpoint, dataset, its features (offline), the previous partition (without `random_init`) | k, `train.seed`, every `maximize` setting but `seed`, the resolved temperature (and `train.mixup_alpha` with `maximize.mixup`); antialias and numerics when online |
//! | `knn-pixels` | dataset | `knn`, the resolved temperature |
//! | `knn` | a checkpoint, dataset | `knn`, the resolved temperature, numerics |
//! | `knn-monitor` | the checkpoint after epoch e, dataset | e, `knn`, the resolved temperature, numerics |
//! | `linear` | a checkpoint, dataset | `linear`, model, antialias, numerics |
//! | `report` | final checkpoint, dataset | the whole config (`data.antialias` as antialias; `model.sync_bn` only when on) |
//!
//! So `train.epochs` enters no checkpoint's key (a longer run reuses a shorter one's epochs),
//! and a stage that never reads `train.lr` (the raw-pixel kNN, the initial encoder's kNN) is
//! reused when it changes. Training is a chain: the checkpoint after epoch e is keyed on the one
//! after e−1 and the partition the epoch trained on, so every key is known before any work and
//! a run resumes from the last stage it finds.
//!
//! "numerics" are `train.precision`, `channels_last` and `tf32` as resolved for the device
//! ([`crate::numerics::key_params`]): they enter every stage whose model forward they change
//! (checkpoints from epoch 1, including the minimize step's settings above), and only when one
//! of them is on, so the keys of fp32 runs (every CPU run by default) are those from before these
//! settings existed. The pipeline resolves the config before it plans.
//!
//! `data.antialias` (the training crops resized with antialiasing, as the reference's PIL) enters
//! every stage that draws training views (checkpoints from epoch 1, the offline step's features,
//! the online step's partitions, the linear probe, and the report) only when it is on and the
//! dataset's images are larger than the crop ([`crate::config::DataConfig::antialiased_crops`]):
//! on smaller images no crop shrinks and the two resizes are one computation, so CIFAR and
//! Fashion-MNIST runs keep their keys, and so does an STL-10 run with it off.
//! `data.crop_size` and `data.crop_scale` enter the same stages only when they are not the
//! reference's (32, [0.08, 1]), so the keys of runs with the reference's crops are those from
//! before the settings.
use serde_json::{json, Value};

use crate::config::{
    Config, DataConfig, IpirmConfig, KnnConfig, LinearConfig, MaximizeConfig, Method, ModelConfig,
    TrainConfig,
};
use crate::store::{canonical_json, stage_key, Artifact};
use crate::train::schedule::Schedule;
use crate::{Error, Result};

/// The kinds of stage a run stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StageKind {
    Dataset,
    Checkpoint,
    Curve,
    Features,
    Partition,
    PixelKnn,
    Knn,
    /// The kNN monitor during training (every `train.knn_every` epochs).
    Monitor,
    Linear,
    Report,
}

impl StageKind {
    pub const ALL: [StageKind; 10] = [
        StageKind::Dataset,
        StageKind::Checkpoint,
        StageKind::Curve,
        StageKind::Features,
        StageKind::Partition,
        StageKind::PixelKnn,
        StageKind::Knn,
        StageKind::Monitor,
        StageKind::Linear,
        StageKind::Report,
    ];

    /// The name in the store.
    pub fn name(self) -> &'static str {
        match self {
            StageKind::Dataset => "dataset",
            StageKind::Checkpoint => "checkpoint",
            StageKind::Curve => "curve",
            StageKind::Features => "features",
            StageKind::Partition => "partition",
            StageKind::PixelKnn => "knn-pixels",
            StageKind::Knn => "knn",
            StageKind::Monitor => "knn-monitor",
            StageKind::Linear => "linear",
            StageKind::Report => "report",
        }
    }

    /// The version of the stage's code and parameters: bumped when its output changes for the
    /// same key. 2: keys over what each stage reads; checkpoint 3: inputs (previous, dataset,
    /// newest partition), 4: PyTorch's initialisation and split BatchNorm; linear 3: the test
    /// accuracy of every probe epoch.
    pub fn version(self) -> u32 {
        match self {
            StageKind::Checkpoint => 4,
            StageKind::Linear => 3,
            _ => 2,
        }
    }

    pub fn from_name(name: &str) -> Option<StageKind> {
        StageKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

fn model_params(m: &ModelConfig) -> Value {
    let ModelConfig {
        arch,
        width,
        head_hidden,
        feature_dim,
        bn_splits,
        // Global-batch statistics over the ranks train as one process with bn_splits 1 does.
        sync_bn: _,
    } = m;
    json!({
        "arch": arch,
        "width": width,
        "head_hidden": head_hidden,
        "feature_dim": feature_dim,
        "bn_splits": bn_splits,
    })
}

/// The dataset stage: which images (their bytes are hashed into the stage's input).
pub fn dataset_params(cfg: &Config) -> Value {
    let DataConfig {
        dataset,
        data_dir: _,
        train_limit,
        bank_limit,
        test_limit,
        // The training views (`views_into`), not the images.
        antialias: _,
        crop_size: _,
        crop_scale: _,
    } = &cfg.data;
    json!({"dataset": dataset, "train_limit": train_limit, "bank_limit": bank_limit, "test_limit": test_limit})
}

/// The initial checkpoint: the model drawn from the seed (and Adam's empty state).
pub fn init_params(cfg: &Config) -> Value {
    json!({"model": model_params(&cfg.model), "seed": cfg.train.seed})
}

/// The epochs trained before a stored checkpoint, from its index entry alone (no blob is
/// read): the `epoch` of its parameters ([`epoch_params`]), 0 for the initialisation
/// ([`init_params`] names none); `None` for an artifact that is not a checkpoint.
pub fn checkpoint_epoch(a: &Artifact) -> Option<usize> {
    if StageKind::from_name(&a.stage) != Some(StageKind::Checkpoint) {
        return None;
    }
    let params: Value = serde_json::from_str(&a.config_json).ok()?;
    match params.get("epoch") {
        Some(e) => e.as_u64().map(|e| e as usize),
        None => Some(0),
    }
}

/// The checkpoint after training epoch `epoch` (1-based) from the one before; `origin` is the
/// partition a branched run started from.
pub fn epoch_params(cfg: &Config, epoch: usize, origin: Option<&str>) -> Value {
    let TrainConfig {
        method,
        epochs,
        batch_size,
        lr,
        weight_decay,
        temperature,
        debiased,
        tau_plus,
        seed,
        knn_every: _,
        mixup,
        mixup_alpha,
        // Read through `numerics_into` below.
        precision: _,
        channels_last: _,
        tf32: _,
    } = &cfg.train;
    let mut p = json!({
        "epoch": epoch,
        "model": model_params(&cfg.model),
        "method": method,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "temperature": temperature,
        "seed": seed,
        "origin": origin,
    });
    // MixUp enters only MixUp runs' keys, so the keys of runs without it are those they had
    // before the option existed.
    if *mixup {
        p["mixup"] = json!(true);
        p["mixup_alpha"] = json!(mixup_alpha);
    }
    match method {
        // The MixUp baseline has no debiased form (config validation refuses it).
        Method::Simclr if !*mixup => {
            p["debiased"] = json!(debiased);
            p["tau_plus"] = json!(tau_plus);
        }
        Method::Simclr => {}
        Method::Ipirm => {
            let IpirmConfig {
                penalty_weight,
                penalty_iters,
                increasing_weight,
                keep_cont,
                retain_group,
                retain_group_set,
                maximize_iter: _,
                from_partition: _,
            } = &cfg.ipirm;
            p["ipirm"] = json!({
                "penalty_weight": penalty_weight,
                "penalty_iters": penalty_iters,
                "increasing_weight": increasing_weight,
                "keep_cont": keep_cont,
                "retain_group": retain_group,
                "env_num": cfg.maximize.env_num,
            });
            // The MixUp minimize step's penalty is taken at `train.temperature`; irm_temp unread.
            if !*mixup {
                p["ipirm"]["irm_temp"] = json!(cfg.maximize.irm_temp);
            }
            // Read only with retain_group; 0 (keep all) is the behaviour before the option.
            if *retain_group && *retain_group_set != 0 {
                p["ipirm"]["retain_group_set"] = json!(retain_group_set);
            }
            if *increasing_weight {
                p["ipirm"]["epochs"] = json!(epochs);
            }
        }
    }
    views_into(cfg, &mut p);
    numerics_into(cfg, &mut p);
    p
}

/// Adds what makes a stage's training views differ from the reference's to the parameters of a
/// stage that draws them: `antialias: true` when the crops are antialiased, the crop's side and
/// range of areas when they are not the reference's (see the module doc).
fn views_into(cfg: &Config, p: &mut Value) {
    if cfg.data.antialiased_crops() {
        p["antialias"] = json!(true);
    }
    if !cfg.data.reference_crops() {
        p["crop_size"] = json!(cfg.data.crop_size);
        p["crop_scale"] = json!(cfg.data.crop_scale);
    }
}

/// Adds the resolved numerics to a stage's parameters when one of them is on (see the module
/// doc).
fn numerics_into(cfg: &Config, p: &mut Value) {
    if let Some(n) = crate::numerics::key_params(&cfg.train) {
        p["numerics"] = n;
    }
}

/// The offline maximize step's features: both views of every training image, extracted after
/// the checkpoint of maximize step `step`.
pub fn features_params(cfg: &Config, step: usize) -> Value {
    let mut p =
        json!({"step": step, "seed": cfg.train.seed, "batch_size": cfg.maximize.batch_size});
    if cfg.maximize.mixup {
        p["mixup_alpha"] = json!(cfg.train.mixup_alpha);
    }
    views_into(cfg, &mut p);
    numerics_into(cfg, &mut p);
    p
}

/// Maximize step `step`'s partition.
pub fn partition_params(cfg: &Config, step: usize) -> Value {
    let MaximizeConfig {
        temperature: _,
        irm_temp,
        irm_weight,
        env_num,
        irm_mode,
        constrain,
        constrain_relax,
        nonorm,
        offline,
        random_init,
        batch_size,
        lr,
        lr_milestones,
        lr_gamma,
        max_epoch,
        patience_after,
        patience,
        exact,
        mixup,
        seed: _,
    } = &cfg.maximize;
    let mut p = json!({
        "step": step,
        "seed": cfg.train.seed,
        "temperature": cfg.maximize_temperature(),
        "irm_temp": irm_temp,
        "irm_weight": irm_weight,
        "env_num": env_num,
        "irm_mode": irm_mode,
        "constrain": constrain,
        "constrain_relax": constrain_relax,
        "nonorm": nonorm,
        "offline": offline,
        "random_init": random_init,
        "batch_size": batch_size,
        "lr": lr,
        "lr_milestones": lr_milestones,
        "lr_gamma": lr_gamma,
        "max_epoch": max_epoch,
        "patience_after": patience_after,
        "patience": patience,
        "exact": exact,
        "mixup": mixup,
        "mixup_alpha": if *mixup { json!(cfg.train.mixup_alpha) } else { Value::Null },
    });
    // The online step augments and encodes every batch itself; the offline one reads stored
    // features.
    if !*offline {
        views_into(cfg, &mut p);
        numerics_into(cfg, &mut p);
    }
    p
}

/// A kNN evaluation of raw pixels (and the part every kNN evaluation reads).
pub fn knn_params(cfg: &Config) -> Value {
    let KnnConfig {
        k,
        temperature: _,
        batch_size,
    } = &cfg.knn;
    json!({"k": k, "temperature": cfg.knn_temperature(), "batch_size": batch_size})
}

/// A kNN evaluation of a checkpoint's encoder.
pub fn encoder_knn_params(cfg: &Config) -> Value {
    let mut p = knn_params(cfg);
    numerics_into(cfg, &mut p);
    p
}

/// The kNN monitor after `epoch` epochs.
pub fn monitor_params(cfg: &Config, epoch: usize) -> Value {
    let mut p = encoder_knn_params(cfg);
    p["epoch"] = json!(epoch);
    p
}

/// A linear probe of a checkpoint's encoder.
pub fn linear_params(cfg: &Config) -> Value {
    let LinearConfig {
        epochs,
        batch_size,
        lr,
        weight_decay,
        bn_train_quirk,
        seed,
    } = &cfg.linear;
    let mut p = json!({
        "model": model_params(&cfg.model),
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "bn_train_quirk": bn_train_quirk,
        "seed": seed,
    });
    // The probe trains on the train transform's views.
    views_into(cfg, &mut p);
    numerics_into(cfg, &mut p);
    p
}

/// The run's report: the whole config but where the data and the store live, with
/// `data.antialias` only where it is in effect and the crop's settings only where they are not
/// the reference's (see the module doc).
pub fn report_params(cfg: &Config) -> Result<Value> {
    let mut c = cfg.clone();
    c.data.data_dir = None;
    c.store = Default::default();
    let mut v = serde_json::to_value(&c)
        .map_err(|e| Error::Store(format!("the config does not serialise: {e}")))?;
    if let Some(data) = v["data"].as_object_mut() {
        if !cfg.data.antialiased_crops() {
            data.remove("antialias");
        }
        if cfg.data.reference_crops() {
            data.remove("crop_size");
            data.remove("crop_scale");
        }
    }
    // Off, `model.sync_bn` leaves the report keys of runs from before it where they were.
    if !cfg.model.sync_bn {
        if let Some(model) = v["model"].as_object_mut() {
            model.remove("sync_bn");
        }
    }
    Ok(v)
}

/// A stage whose key is known: its kind, canonical parameters and input keys.
#[derive(Debug, Clone)]
pub struct Planned {
    pub kind: StageKind,
    /// Canonical JSON of the parameters (see the `*_params` functions).
    pub params: String,
    pub inputs: Vec<String>,
    pub key: String,
}

impl Planned {
    /// The stage `kind` with `params` on `inputs`.
    pub fn new(kind: StageKind, params: &Value, inputs: Vec<String>) -> Result<Planned> {
        Ok(Planned::from_json(kind, canonical_json(params)?, inputs))
    }

    fn from_json(kind: StageKind, params: String, inputs: Vec<String>) -> Planned {
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let key = stage_key(kind.name(), kind.version(), &params, &refs);
        Planned {
            kind,
            params,
            inputs,
            key,
        }
    }

    /// A stage made by another run, known by its key alone (a branched run's starting
    /// checkpoint and partition): loaded, never recomputed.
    fn given(kind: StageKind, key: &str) -> Planned {
        Planned {
            kind,
            params: String::new(),
            inputs: Vec::new(),
            key: key.to_string(),
        }
    }

    /// Whether this stage can be computed here (false for a branch's given stages).
    pub fn computable(&self) -> bool {
        !self.params.is_empty()
    }
}

/// A planned maximize step.
#[derive(Debug, Clone)]
pub struct PlannedPartition {
    /// Training epochs before it (0 = before epoch 1).
    pub after_epoch: usize,
    /// The step's number in the run (0 = first).
    pub step: usize,
    /// The offline step's extracted features (none for the online step or a given partition).
    pub features: Option<Planned>,
    pub partition: Planned,
}

/// Where a branched run starts: a stored partition and the checkpoint it was learned from.
#[derive(Debug, Clone, PartialEq)]
pub struct Branch {
    pub partition: String,
    pub checkpoint: String,
    /// Training epochs before the partition was learned.
    pub after_epoch: usize,
}

/// Every training stage's key, from the config, the dataset's key and (for a branched run)
/// where it starts. Time and memory linear in the number of epochs.
#[derive(Debug, Clone)]
pub struct Plan {
    pub schedule: Schedule,
    /// `checkpoints[i]`: the state after `schedule.start + i` epochs.
    pub checkpoints: Vec<Planned>,
    /// `curves[i]`: the figures of epoch `schedule.start + i + 1`.
    pub curves: Vec<Planned>,
    pub partitions: Vec<PlannedPartition>,
}

impl Plan {
    pub fn new(cfg: &Config, dataset_key: &str, branch: Option<&Branch>) -> Result<Plan> {
        let start = branch.map_or(0, |b| b.after_epoch);
        let schedule = Schedule::new(cfg, start);
        if start >= cfg.train.epochs {
            return Err(Error::config("train.epochs", format!("{} end before the branch's partition (learned after epoch {start}); train longer", crate::progress::count(cfg.train.epochs as u64, "epoch"))));
        }
        let origin = branch.map(|b| b.partition.as_str());
        let mut checkpoints = vec![match branch {
            Some(b) => Planned::given(StageKind::Checkpoint, &b.checkpoint),
            None => Planned::new(StageKind::Checkpoint, &init_params(cfg), Vec::new())?,
        }];
        let mut curves = Vec::new();
        let mut partitions: Vec<PlannedPartition> = Vec::new();
        if let Some(b) = branch {
            partitions.push(PlannedPartition {
                after_epoch: start,
                step: 0,
                features: None,
                partition: Planned::given(StageKind::Partition, &b.partition),
            });
        }
        let add_partition = |after_epoch: usize,
                             ckpt: &str,
                             partitions: &mut Vec<PlannedPartition>|
         -> Result<()> {
            let step = partitions.len();
            // The dataset is an input of its own: the checkpoint before epoch 1 does not read
            // the data, so without it the first step's features and partition would be served
            // for other images of the same count. The checkpoint stays the first input (a
            // branch finds it there).
            let features = match cfg.maximize.offline {
                true => Some(Planned::new(
                    StageKind::Features,
                    &features_params(cfg, step),
                    vec![ckpt.to_string(), dataset_key.to_string()],
                )?),
                false => None,
            };
            let mut inputs = vec![ckpt.to_string(), dataset_key.to_string()];
            inputs.extend(features.as_ref().map(|f| f.key.clone()));
            if !cfg.maximize.random_init {
                inputs.extend(partitions.last().map(|p| p.partition.key.clone()));
            }
            let partition =
                Planned::new(StageKind::Partition, &partition_params(cfg, step), inputs)?;
            partitions.push(PlannedPartition {
                after_epoch,
                step,
                features,
                partition,
            });
            Ok(())
        };
        if branch.is_none() && schedule.maximizes_after(0) {
            add_partition(0, &checkpoints[0].key.clone(), &mut partitions)?;
        }
        for e in start + 1..=cfg.train.epochs {
            let mut inputs = vec![
                checkpoints.last().expect("one").key.clone(),
                dataset_key.to_string(),
            ];
            inputs.extend(partitions.last().map(|p| p.partition.key.clone()));
            let ck = Planned::new(StageKind::Checkpoint, &epoch_params(cfg, e, origin), inputs)?;
            curves.push(Planned::from_json(
                StageKind::Curve,
                "{}".into(),
                vec![ck.key.clone()],
            ));
            let key = ck.key.clone();
            checkpoints.push(ck);
            if schedule.maximizes_after(e) {
                add_partition(e, &key, &mut partitions)?;
            }
        }
        Ok(Plan {
            schedule,
            checkpoints,
            curves,
            partitions,
        })
    }

    /// The first epoch of the run (0, or where a branch starts).
    pub fn start(&self) -> usize {
        self.schedule.start
    }

    /// The checkpoint after `epoch` epochs.
    pub fn checkpoint(&self, epoch: usize) -> &Planned {
        &self.checkpoints[epoch - self.start()]
    }

    /// The figures of (1-based) `epoch`.
    pub fn curve(&self, epoch: usize) -> &Planned {
        &self.curves[epoch - self.start() - 1]
    }

    /// The last epoch.
    pub fn epochs(&self) -> usize {
        self.schedule.epochs
    }
}

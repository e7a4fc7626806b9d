//! The run configuration: one serde struct whose defaults are the paper's STL-10 IP-IRM run
//! (`runsh/IPIRM_STL_400epoch.sh` of the reference), named presets, `section.key=value` overrides,
//! and validation when a config is built.
//!
//! Every way of building a config (`Config::default()`, a preset, a TOML file, overrides) ends in
//! [`Config::validate`], so an unknown key or an out-of-range value is refused before any work.
//!
//! This file holds the types and their defaults; `validate.rs` the validation, `presets.rs` the
//! named presets, `overrides.rs` reading a config from text (overrides, TOML, the JSON a run
//! recorded).

use serde::{Deserialize, Serialize};

mod overrides;
mod presets;
mod validate;

pub use crate::data::DataConfig;
pub use overrides::{json_leaves, recorded_config_value};
pub use presets::{paper_of, Paper, Preset, PRESETS};
pub use validate::MAX_EPOCHS;

/// Which training objective the minimize side runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// SimCLR / DCL: NT-Xent over the 2B views (the reference's `--baseline`).
    Simclr,
    /// IP-IRM: contrastive loss per environment + IRM penalty, partitions learned by the maximize step.
    Ipirm,
}

/// Encoder architecture (CIFAR stem: 3×3 conv1, stride 1, no max-pool).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    Resnet18,
    Resnet50,
}

/// How the maximize step scores environments (`--irm_mode` of the reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IrmMode {
    /// IRMv1 penalty through the dummy scale vector.
    V1,
    /// Variance of the environments' losses.
    V2,
}

/// The precision the model's forward passes compute in (`train.precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// bf16 on a GPU that computes in it natively (compute capability 8.0 or later: Ampere,
    /// Hopper, …), fp32 on the CPU and on older GPUs.
    Auto,
    /// Everything in fp32: the parity tests' path, and the CPU's.
    Fp32,
    /// The forward passes under bf16 autocast (on any device; on the CPU it is slow and only
    /// for tests).
    Bf16,
}

/// A switch whose default depends on the device: `auto`, `true` or `false`
/// (`train.channels_last`, `train.tf32`). `--set` and TOML take `auto`, `true`/`false`,
/// `on`/`off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    Auto,
    On,
    Off,
}

impl Switch {
    /// `Auto` resolved to `auto_value`.
    pub fn or(self, auto_value: bool) -> bool {
        match self {
            Switch::Auto => auto_value,
            Switch::On => true,
            Switch::Off => false,
        }
    }
}

impl From<bool> for Switch {
    fn from(b: bool) -> Switch {
        if b {
            Switch::On
        } else {
            Switch::Off
        }
    }
}

impl Serialize for Switch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Switch::Auto => s.serialize_str("auto"),
            Switch::On => s.serialize_bool(true),
            Switch::Off => s.serialize_bool(false),
        }
    }
}

impl<'de> Deserialize<'de> for Switch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Switch, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(b) => Ok(b.into()),
            Raw::Text(t) => match t.trim().to_ascii_lowercase().as_str() {
                "auto" => Ok(Switch::Auto),
                "true" | "on" | "yes" | "1" => Ok(Switch::On),
                "false" | "off" | "no" | "0" => Ok(Switch::Off),
                _ => Err(serde::de::Error::custom(format!(
                    "expected auto, true or false, got `{t}`"
                ))),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub arch: Arch,
    /// Channels of the first stage (64 is torchvision's; ResNet-18 at 16 is the quick CPU model).
    pub width: i64,
    /// Hidden width of the projection head (512 in the paper).
    pub head_hidden: i64,
    /// Output dimension of the projection head (128 in the paper).
    pub feature_dim: i64,
    /// BatchNorm in train mode normalises the batch in this many chunks, as the reference's
    /// `nn.DataParallel` on that many GPUs does (every script of the reference used 2; see
    /// `model::SplitBatchNorm`). 1 = the whole batch.
    pub bn_splits: i64,
    /// SyncBatchNorm, as DistributedDataParallel users know it: in a data-parallel run every
    /// BatchNorm normalises with the statistics of the global batch, summed over the ranks
    /// (needs `bn_splits = 1`; on one process it changes nothing). The same training as one
    /// process with `bn_splits = 1`, hence the same stage keys.
    pub sync_bn: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub method: Method,
    pub epochs: usize,
    pub batch_size: i64,
    pub lr: f64,
    pub weight_decay: f64,
    /// Contrastive temperature τ (0.5; 0.2 in the MixUp runs).
    pub temperature: f64,
    /// DCL's debiased estimator (baseline only).
    pub debiased: bool,
    pub tau_plus: f64,
    #[serde(with = "seed")]
    pub seed: u64,
    /// Run the kNN monitor every N epochs (0 = never during training).
    pub knn_every: usize,
    /// MixUp on view 1 (`main_mixup.py`): with `method = simclr` the MixUp baseline
    /// (`--baseline`), with `method = ipirm` the minimize step `--ours_mixup_mode full`
    /// (`train_env_mixup_full_retaingp` with `ipirm.retain_group`, else `_noretaingp`). The
    /// maximize step is the ordinary one (the reference's `--mixup_max` off).
    pub mixup: bool,
    /// α of MixUp's Beta(α, α) (`--alpha`); read only with `mixup`.
    pub mixup_alpha: f64,
    /// The precision of the model's forward passes (training, feature extraction, kNN, probe):
    /// `auto` (bf16 on a GPU that computes in it natively, else fp32), `fp32` or `bf16`. bf16
    /// runs the forward under autocast; the losses, the optimizer and the weights stay fp32.
    pub precision: Precision,
    /// Image batches and convolution weights in channels_last layout (`auto`: on a GPU, not on
    /// the CPU, where it is not faster and changes the last bits of results).
    pub channels_last: Switch,
    /// TF32 tensor cores for fp32 matmuls and convolutions on the GPU (`auto` = on; the CPU
    /// has none, so it resolves to off there).
    pub tf32: Switch,
}

/// The minimize step of IP-IRM (`train_env`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IpirmConfig {
    /// λ1: weight of the IRM penalty in the minimize step.
    pub penalty_weight: f64,
    /// The penalty is applied from this epoch on (0 = always).
    pub penalty_iters: usize,
    /// Ramp the penalty weight linearly from 0 over the run instead.
    pub increasing_weight: bool,
    /// Add the ordinary InfoNCE loss of the whole batch.
    pub keep_cont: bool,
    /// Train on every partition found so far (else the latest only).
    pub retain_group: bool,
    /// With `retain_group`: keep at most this many partitions, the oldest dropped first
    /// (`--retain_group_set`); 0 = keep all.
    pub retain_group_set: usize,
    /// A maximize step after every N epochs (and one before epoch 1).
    pub maximize_iter: usize,
    /// Branch from a stored partition: its key (or a unique prefix), or `RUN@EPOCH` (the
    /// partition run RUN learned after EPOCH epochs). The run starts from the checkpoint that
    /// partition was learned from, with it as its first partition (`--from-partition`).
    pub from_partition: Option<String>,
}

/// The maximize step (`auto_split_offline` / `auto_split`): learn a soft partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaximizeConfig {
    /// Contrastive temperature; `None` = `train.temperature` (the reference uses one value).
    pub temperature: Option<f64>,
    /// Temperature of the logits inside the IRM penalty (both steps).
    pub irm_temp: f64,
    /// λ2: weight of the IRM penalty in the maximize objective (`irm_weight_maxim`).
    pub irm_weight: f64,
    /// Number of environments of a partition (both steps).
    pub env_num: i64,
    pub irm_mode: IrmMode,
    pub constrain: bool,
    pub constrain_relax: bool,
    pub nonorm: bool,
    /// Extract features once per step (eval mode) instead of recomputing them per batch.
    pub offline: bool,
    /// Fresh N(0,1) logits at every step instead of continuing from the previous partition.
    pub random_init: bool,
    pub batch_size: i64,
    pub lr: f64,
    /// LR × `lr_gamma` at these epochs.
    pub lr_milestones: Vec<usize>,
    pub lr_gamma: f64,
    /// Stop after this (0-based) epoch at the latest.
    pub max_epoch: usize,
    /// Or once past `patience_after` with `patience` epochs without a new lowest risk.
    pub patience_after: usize,
    pub patience: usize,
    /// Compute the step with the reference's own sequence of floating-point operations, so a run
    /// on the CPU matches it bit for bit (`false`: the same formulas, about 2.5× faster on the
    /// CPU, ~1e-4 from the reference in probability after a whole step).
    pub exact: bool,
    /// MixUp view 1 in the maximize step too (the reference's `--mixup_max`; MixUp runs only):
    /// offline, each feature batch is mixed as extracted (`auto_split_offline_mixuup`), online each
    /// batch (`auto_split_online_mixup`); mixing draws λ ~ Beta(`train.mixup_alpha`). The
    /// reference's MixUp steps batch by 2048 (its offline extraction and loader, and its online
    /// loader on STL-10 and CIFAR-100): set `maximize.batch_size = 2048` with it, as the
    /// CIFAR-100 MixUp presets do.
    pub mixup: bool,
    /// Seed of the partition's random init and the batch order (the CLI tool, whose order is the
    /// reference's after `torch.manual_seed(seed)`); the training run derives it from `train.seed`
    /// and the step.
    #[serde(with = "seed")]
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KnnConfig {
    pub k: i64,
    /// Weighting temperature; `None` = `train.temperature` (as the reference).
    pub temperature: Option<f64>,
    pub batch_size: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinearConfig {
    pub epochs: usize,
    pub batch_size: i64,
    pub lr: f64,
    pub weight_decay: f64,
    /// The reference leaves the frozen encoder in train mode during the probe, so its BatchNorm
    /// uses batch statistics and its running statistics keep moving. `false` = eval mode.
    pub bn_train_quirk: bool,
    #[serde(with = "seed")]
    pub seed: u64,
}

/// How a run uses the artifact store. No stage reads this section, so no result is keyed on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Store a checkpoint every N epochs (also after the last epoch and wherever a maximize step
    /// runs); a killed run resumes from the latest one.
    pub checkpoint_every: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            checkpoint_every: 25,
        }
    }
}

/// The whole run. Sections mirror the pipeline's stages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub data: DataConfig,
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub ipirm: IpirmConfig,
    pub maximize: MaximizeConfig,
    pub knn: KnnConfig,
    pub linear: LinearConfig,
    pub store: StoreConfig,
}

/// A run's data section, for what reads only that ([`crate::data::loader::RunData::load`]).
impl AsRef<DataConfig> for Config {
    fn as_ref(&self) -> &DataConfig {
        &self.data
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            arch: Arch::Resnet50,
            width: 64,
            head_hidden: 512,
            feature_dim: 128,
            bn_splits: 2,
            sync_bn: false,
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            method: Method::Ipirm,
            epochs: 400,
            batch_size: 256,
            lr: 1e-3,
            weight_decay: 1e-6,
            temperature: 0.5,
            debiased: false,
            tau_plus: 0.1,
            seed: 1234,
            knn_every: 25,
            mixup: false,
            mixup_alpha: 1.0,
            precision: Precision::Auto,
            channels_last: Switch::Auto,
            tf32: Switch::Auto,
        }
    }
}

impl Default for IpirmConfig {
    fn default() -> Self {
        IpirmConfig {
            penalty_weight: 0.2,
            penalty_iters: 0,
            increasing_weight: false,
            keep_cont: true,
            retain_group: true,
            retain_group_set: 0,
            maximize_iter: 50,
            from_partition: None,
        }
    }
}

impl Default for MaximizeConfig {
    fn default() -> Self {
        MaximizeConfig {
            temperature: None,
            irm_temp: 0.5,
            irm_weight: 0.5,
            env_num: 2,
            irm_mode: IrmMode::V1,
            constrain: true,
            constrain_relax: true,
            nonorm: false,
            offline: true,
            random_init: true,
            batch_size: 3096,
            lr: 0.5,
            lr_milestones: vec![5, 35],
            lr_gamma: 0.2,
            max_epoch: 60,
            patience_after: 50,
            patience: 5,
            exact: true,
            mixup: false,
            seed: 1234,
        }
    }
}

impl Default for KnnConfig {
    fn default() -> Self {
        KnnConfig {
            k: 200,
            temperature: None,
            batch_size: 512,
        }
    }
}

impl Default for LinearConfig {
    fn default() -> Self {
        LinearConfig {
            epochs: 100,
            batch_size: 512,
            lr: 1e-3,
            weight_decay: 1e-6,
            bn_train_quirk: true,
            seed: 1234,
        }
    }
}

/// Seeds take the whole `u64` range. TOML integers are signed 64-bit, so a seed above
/// `i64::MAX` is written as a string (`seed = "18446744073709551615"`); either form is read.
mod seed {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        if i64::try_from(*v).is_ok() {
            s.serialize_u64(*v)
        } else {
            s.serialize_str(&v.to_string())
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Seed {
            Int(u64),
            Signed(i64),
            Float(f64),
            Text(String),
        }
        let refuse = |got: String| {
            serde::de::Error::custom(format!(
                "a seed must be an integer in 0..=18446744073709551615, got `{got}`"
            ))
        };
        match Seed::deserialize(d)? {
            Seed::Int(v) => Ok(v),
            Seed::Signed(v) => Err(refuse(v.to_string())),
            Seed::Float(v) => Err(refuse(v.to_string())),
            Seed::Text(t) => t.trim().parse().map_err(|_| refuse(t)),
        }
    }
}

impl Config {
    /// Temperature the maximize step uses.
    pub fn maximize_temperature(&self) -> f64 {
        self.maximize.temperature.unwrap_or(self.train.temperature)
    }

    /// Temperature the kNN monitor weights neighbours with.
    pub fn knn_temperature(&self) -> f64 {
        self.knn.temperature.unwrap_or(self.train.temperature)
    }
}

//! Validation of a run config: [`Config::validate`] (values no run can use, refused when a
//! config is built) and [`Config::check_against_data`] (settings the loaded data cannot serve),
//! each naming the key and the accepted range.
use tch::Device;

use super::{Config, IrmMode, Method};
use crate::data::loader::RunData;
use crate::{Error, Result};

/// The largest `train.epochs` accepted.
pub const MAX_EPOCHS: usize = 100_000;
/// The training crops' side: at least the 3×3 blur's support with a margin, at most what any
/// dataset here holds (STL-10's 96) and a little more.
const MIN_CROP: i64 = 8;
const MAX_CROP: i64 = 256;
/// The widest `model.width`: 16 times the paper's 64.
const MAX_WIDTH: i64 = 1024;
/// The widest `model.head_hidden` and `model.feature_dim`.
const MAX_HEAD: i64 = 16384;

impl Config {
    /// Refuses values no run can use, naming the key and the accepted range.
    pub fn validate(&self) -> Result<()> {
        fn positive_i(key: &str, v: i64) -> Result<()> {
            if v <= 0 {
                return Err(Error::config(
                    key,
                    format!("must be a positive integer, got {v}"),
                ));
            }
            Ok(())
        }
        fn positive_f(key: &str, v: f64) -> Result<()> {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::config(
                    key,
                    format!("must be a positive number, got {v}"),
                ));
            }
            Ok(())
        }
        fn non_negative_f(key: &str, v: f64) -> Result<()> {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::config(key, format!("must be a number ≥ 0, got {v}")));
            }
            Ok(())
        }
        if !(MIN_CROP..=MAX_CROP).contains(&self.data.crop_size) {
            return Err(Error::config(
                "data.crop_size",
                format!(
                    "must be in {MIN_CROP}..={MAX_CROP} pixels (the reference crops 32), got {}",
                    self.data.crop_size
                ),
            ));
        }
        let [lo, hi] = self.data.crop_scale;
        if !(lo.is_finite() && hi.is_finite() && 0.0 < lo && lo <= hi && hi <= 1.0) {
            return Err(Error::config(
                "data.crop_scale",
                format!(
                    "must be [lo, hi] with 0 < lo ≤ hi ≤ 1 (fractions of the image's area; the \
                     reference's [0.08, 1.0]), got [{lo}, {hi}]"
                ),
            ));
        }
        // Upper bounds far above any published setting (64, 512, 128), below sizes whose first
        // allocation fails (libtorch then panics in the variable store, naming nothing).
        for (key, v, max) in [
            ("model.width", self.model.width, MAX_WIDTH),
            ("model.head_hidden", self.model.head_hidden, MAX_HEAD),
            ("model.feature_dim", self.model.feature_dim, MAX_HEAD),
        ] {
            positive_i(key, v)?;
            if v > max {
                let msg = format!(
                    "must be at most {max} (the paper's models use 64, 512 and 128), got {v}"
                );
                return Err(Error::config(key, msg));
            }
        }
        positive_i("model.bn_splits", self.model.bn_splits)?;
        if self.model.sync_bn && self.model.bn_splits != 1 {
            return Err(Error::config(
                "model.sync_bn",
                format!(
                    "normalises with the whole batch's statistics, and model.bn_splits = {} splits \
                     it: set model.bn_splits=1 with it",
                    self.model.bn_splits
                ),
            ));
        }
        positive_i("train.batch_size", self.train.batch_size)?;
        if self.train.batch_size < 2 {
            return Err(Error::config(
                "train.batch_size",
                "needs at least 2 images for a contrastive batch",
            ));
        }
        if let Some(one) = single_image_chunk(self.train.batch_size, self.model.bn_splits) {
            return Err(Error::config(
                "model.bn_splits",
                format!(
                    "= {} cuts a batch of train.batch_size = {} images into chunks of at most \
                     {one}, one of them a single image: BatchNorm needs at least 2 images a chunk \
                     (PyTorch refuses one; its running variance is NaN); lower model.bn_splits \
                     or change train.batch_size",
                    self.model.bn_splits, self.train.batch_size
                ),
            ));
        }
        if !(1..=MAX_EPOCHS).contains(&self.train.epochs) {
            return Err(Error::config(
                "train.epochs",
                format!("must be in 1..={MAX_EPOCHS} (the paper's longest run is 1000; every epoch's stage key is planned up front), got {}", self.train.epochs),
            ));
        }
        if (self.data.data_dir.as_ref()).is_some_and(|d| d.as_os_str().is_empty()) {
            return Err(Error::config(
                "data.data_dir",
                "is empty: give a folder, or `none` for the default",
            ));
        }
        positive_f("train.lr", self.train.lr)?;
        non_negative_f("train.weight_decay", self.train.weight_decay)?;
        positive_f("train.temperature", self.train.temperature)?;
        if !(0.0..1.0).contains(&self.train.tau_plus) {
            return Err(Error::config(
                "train.tau_plus",
                format!("must be in [0, 1), got {}", self.train.tau_plus),
            ));
        }
        positive_f("train.mixup_alpha", self.train.mixup_alpha)?;
        if self.train.mixup && self.train.debiased {
            return Err(Error::config(
                "train.debiased",
                "has no MixUp form (`main_mixup.train` has no debiased estimator); turn off train.mixup or train.debiased",
            ));
        }
        if self.maximize.mixup && !self.train.mixup {
            return Err(Error::config(
                "maximize.mixup",
                "MixUp in the maximize step (the reference's --mixup_max) belongs to MixUp runs: set train.mixup=true too",
            ));
        }
        if self.maximize.mixup && self.maximize.irm_mode != IrmMode::V1 {
            return Err(Error::config(
                "maximize.irm_mode",
                "the MixUp maximize step has only the IRMv1 penalty (v1)",
            ));
        }
        if self.ipirm.from_partition.is_some() && self.train.method != Method::Ipirm {
            return Err(Error::config(
                "ipirm.from_partition",
                "(--from-partition) starts an IP-IRM run from a learned partition, which train.method=simclr has no use for: drop it, or set train.method=ipirm",
            ));
        }
        non_negative_f("ipirm.penalty_weight", self.ipirm.penalty_weight)?;
        if self.ipirm.maximize_iter == 0 {
            return Err(Error::config("ipirm.maximize_iter", "must be at least 1"));
        }
        if let Some(t) = self.maximize.temperature {
            positive_f("maximize.temperature", t)?;
        }
        positive_f("maximize.irm_temp", self.maximize.irm_temp)?;
        non_negative_f("maximize.irm_weight", self.maximize.irm_weight)?;
        if self.maximize.env_num < 2 {
            return Err(Error::config(
                "maximize.env_num",
                format!("must be at least 2, got {}", self.maximize.env_num),
            ));
        }
        if self.maximize.batch_size < 2 {
            return Err(Error::config(
                "maximize.batch_size",
                format!(
                    "must be at least 2 (a contrastive batch needs negatives), got {}",
                    self.maximize.batch_size
                ),
            ));
        }
        positive_f("maximize.lr", self.maximize.lr)?;
        positive_f("maximize.lr_gamma", self.maximize.lr_gamma)?;
        positive_i("knn.k", self.knn.k)?;
        positive_i("knn.batch_size", self.knn.batch_size)?;
        if let Some(t) = self.knn.temperature {
            positive_f("knn.temperature", t)?;
        }
        positive_i("linear.batch_size", self.linear.batch_size)?;
        positive_f("linear.lr", self.linear.lr)?;
        non_negative_f("linear.weight_decay", self.linear.weight_decay)?;
        Ok(())
    }

    /// The run's data read for training ([`RunData::load`]), refused with
    /// [`Config::check_against_data`] when the rest of the config cannot train on it.
    pub fn load_training_data(&self, device: Device) -> Result<RunData> {
        let data = RunData::load(self, device)?;
        self.check_against_data(data.train.len(), data.bank.len())?;
        Ok(data)
    }

    /// Refuses settings that the loaded data cannot serve, before any work: called once the
    /// datasets are read. `train` images for self-supervised training, `bank` labelled images for
    /// the kNN bank and the probe.
    pub fn check_against_data(&self, train: i64, bank: i64) -> Result<()> {
        let images = |n: i64| {
            format!("{n} training images (data.train_limit and --data-dir decide how many)")
        };
        if self.train.batch_size > train {
            return Err(Error::config(
                "train.batch_size",
                format!(
                    "{} is larger than the {}",
                    self.train.batch_size,
                    images(train)
                ),
            ));
        }
        if self.train.method == Method::Ipirm {
            if self.maximize.env_num > train {
                return Err(Error::config(
                    "maximize.env_num",
                    format!(
                        "{} environments cannot be filled by {}",
                        self.maximize.env_num,
                        images(train)
                    ),
                ));
            }
            if !self.maximize.offline && self.maximize.batch_size > train {
                return Err(Error::config(
                    "maximize.batch_size",
                    format!("the online maximize step drops a last partial batch, so {} needs at least that many of the {}", self.maximize.batch_size, images(train)),
                ));
            }
        }
        if bank < 1 {
            return Err(Error::config(
                "data.bank_limit",
                "the kNN bank and the probe need at least one labelled image",
            ));
        }
        Ok(())
    }
}

/// The chunk size when BatchNorm normalises a batch of `batch` images in `splits` chunks as
/// `Tensor.chunk` cuts it (⌈batch/splits⌉ each, the last smaller), if a chunk then holds a single
/// image: BatchNorm cannot normalise one (the reference's PyTorch raises "Expected more than 1
/// value per channel when training" in the head's BatchNorm1d).
fn single_image_chunk(batch: i64, splits: i64) -> Option<i64> {
    let chunk = (batch + splits - 1) / splits.max(1);
    (chunk == 1 || batch % chunk == 1).then_some(chunk)
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunks_of_one_image_are_found_as_tensor_chunk_cuts() {
        use super::single_image_chunk as one;
        // 16 in 16: chunks of 1; 7 in 3: 3, 3, 1; 10 in 3: 4, 4, 2; 9 in 4: 3, 3, 3.
        assert_eq!(one(16, 16), Some(1));
        assert_eq!(one(16, 32), Some(1));
        assert_eq!(one(7, 3), Some(3));
        assert_eq!(one(10, 3), None);
        assert_eq!(one(9, 4), None);
        assert_eq!(one(512, 1), None);
        assert_eq!(one(512, 8), None);
        assert_eq!(one(2, 1), None);
    }
}

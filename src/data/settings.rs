//! The `data` section of a run's config ([`DataConfig`], re-exported as
//! `crate::config::DataConfig`): which dataset and how much of it, and the training crops. Here,
//! beside the readers and the augmentation it names, so that `data` never reads `config`.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::augment::{self, Views};
use super::DatasetKind;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    pub dataset: DatasetKind,
    /// Folder holding the official files (required for STL-10 and CIFAR; Fashion-MNIST defaults
    /// to Debian's `/usr/share/datasets/fashion-mnist`).
    pub data_dir: Option<PathBuf>,
    /// Use only the first N training images for self-supervised training (0 = all).
    pub train_limit: usize,
    /// Use only the first N labelled train images as kNN memory bank / linear-probe train set (0 = all).
    pub bank_limit: usize,
    /// Use only the first N test images (0 = all).
    pub test_limit: usize,
    /// Resize the training crops with antialiasing where they shrink, as the reference's PIL
    /// resize does (`false`: plain bilinear sampling, this project's resize before the option).
    /// It changes only crops larger than 32 pixels, so only STL-10's 96×96 images: see
    /// [`DataConfig::antialiased_crops`].
    pub antialias: bool,
    /// Side of the square training crops (the reference's 32 for every dataset; the
    /// Fashion-MNIST presets crop at the images' own 28).
    pub crop_size: i64,
    /// RandomResizedCrop's range of the crop's area as a fraction of the image's, `[lo, hi]`
    /// (the reference's `[0.08, 1.0]`).
    pub crop_scale: [f64; 2],
}

impl DataConfig {
    /// Whether `antialias` can change anything: the dataset's images are larger than the crop.
    /// Crop boxes lie inside the image, so on smaller images (CIFAR 32×32, Fashion-MNIST 28×28)
    /// no crop shrinks and the two resizes are the same computation.
    pub fn antialias_applies(&self) -> bool {
        self.dataset.image_side() > self.crop_size
    }

    /// Whether the training crops are resized with antialiasing: `antialias` is on and it
    /// [applies](DataConfig::antialias_applies). Where it does not, the trainer runs the plain
    /// resize and no stage key names the setting.
    pub fn antialiased_crops(&self) -> bool {
        self.antialias && self.antialias_applies()
    }

    /// The run's training views: its crop side and range of areas, antialiased where that
    /// [applies](DataConfig::antialias_applies) and is on.
    pub fn views(&self) -> Views {
        Views {
            size: self.crop_size,
            scale: (self.crop_scale[0], self.crop_scale[1]),
            antialias: self.antialiased_crops(),
        }
    }

    /// Whether the crops are the reference's ([`augment::CROP_SIZE`], [`augment::CROP_SCALE`]):
    /// the settings then enter no stage key, so runs from before them keep their keys.
    pub fn reference_crops(&self) -> bool {
        self.crop_size == augment::CROP_SIZE
            && (self.crop_scale[0], self.crop_scale[1]) == augment::CROP_SCALE
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            dataset: DatasetKind::Stl10,
            data_dir: None,
            train_limit: 0,
            bank_limit: 0,
            test_limit: 0,
            antialias: true,
            crop_size: augment::CROP_SIZE,
            crop_scale: [augment::CROP_SCALE.0, augment::CROP_SCALE.1],
        }
    }
}

impl AsRef<DataConfig> for DataConfig {
    fn as_ref(&self) -> &DataConfig {
        self
    }
}

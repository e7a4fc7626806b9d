//! Datasets read from their official files, and batched on-device augmentation.
use tch::Tensor;

pub mod augment;
pub mod cifar;
pub mod fashion_mnist;
pub mod loader;
pub mod stl10;

/// A labelled image set held in memory as raw bytes.
#[derive(Debug)]
pub struct Dataset {
    /// e.g. "stl10/train+unlabeled"
    pub name: String,
    /// uint8, N×C×H×W (C = 1 for Fashion-MNIST, 3 otherwise), CPU.
    pub images: Tensor,
    /// int64, N. Unlabelled images (STL-10 `unlabeled`) carry -1.
    pub labels: Tensor,
    /// Number of classes of the labelled splits (10 or 100).
    pub num_classes: i64,
}

impl Dataset {
    pub fn len(&self) -> i64 {
        self.images.size()[0]
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// TEMP STUB (replaced by the data branch)
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind { FashionMnist, Stl10, Cifar10, Cifar100 }
impl std::fmt::Display for DatasetKind { fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result { write!(f, "{:?}", self) } }
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split { Train, Test, Unlabeled, TrainUnlabeled }
pub fn load(_k: DatasetKind, _s: Split, _d: Option<&std::path::Path>) -> crate::Result<Dataset> { unimplemented!() }

//! The encoder `f` (CIFAR-stem ResNet-18/50) and the projection head `g`, with torchvision's
//! parameter names under the reference's `f.N` / `g.N` prefixes so its released checkpoints load.
pub mod checkpoint;
mod pickle;
mod resnet;
mod torch_file;

pub use resnet::{
    count_parameters, l2_normalize, torch_linear, Model, RankSum, SplitBatchNorm, SyncStats,
};

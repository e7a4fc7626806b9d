//! `ipirm`: IP-IRM (Wang et al., NeurIPS 2021) on libtorch.
//!
//! Layout: [`data`] reads the datasets and augments batches on the training device, [`model`]
//! builds the CIFAR-stem ResNets and the projection head, [`loss`] holds the losses as free
//! functions over tensors, [`train`] wires them into the SimCLR and IP-IRM steps, [`eval`] runs the
//! kNN monitor and the linear probe, [`config`] is the one serde config with its presets, [`distributed`]
//! is c10d's process group (Gloo) and the launch of several ranks, which a trainer is handed.
pub mod bench;
pub mod config;
pub mod data;
pub mod device;
pub mod distributed;
pub mod error;
pub mod eval;
pub mod fit;
pub mod gallery;
pub mod gate;
pub mod html;
pub mod loss;
pub mod model;
pub mod numerics;
pub mod pipeline;
pub mod plot;
pub mod progress;
pub mod replay;
pub mod reproduction;
pub mod rng;
pub mod shim;
pub mod stats;
pub mod store;
pub mod tensor_file;
pub mod train;

pub use error::{Error, Result};

//! Which splits a run reads, and the batches of an epoch.
//!
//! The whole dataset stays as uint8 on the training device; a batch is an `index_select` of
//! shuffled indices followed by the batched augmentation of [`super::augment`], so no host-side
//! loader is needed and the GPU never waits on Python-style workers.
use tch::{Device, Kind, Tensor};

use super::{load, DataConfig, Dataset, DatasetKind, Split};
use crate::Result;

/// The three image sets of a run, on the training device.
pub struct RunData {
    /// Self-supervised training images (STL-10: `train+unlabeled`; others: `train`).
    pub train: Dataset,
    /// Labelled images for the kNN memory bank and the linear probe's training set.
    pub bank: Dataset,
    /// Labelled test images.
    pub test: Dataset,
    /// [`RunData::fingerprint`], computed on first use (the sets do not change once read).
    sha256: std::sync::OnceLock<String>,
}

impl RunData {
    /// Reads the splits a run's data section names (with their limits) and moves them to
    /// `device`. `cfg`: a [`crate::config::Config`] or its [`DataConfig`].
    pub fn load(cfg: &impl AsRef<DataConfig>, device: Device) -> Result<RunData> {
        RunData::load_splits(cfg.as_ref(), device)
    }

    /// The sha256 of the three sets' images and labels, in the order train, bank, test: what
    /// the `dataset` stage keys on, and what data-parallel ranks compare. Hashed once per read
    /// (every seed of `ipirm run --seeds N` fingerprints the same read).
    pub fn fingerprint(&self) -> Result<String> {
        if let Some(h) = self.sha256.get() {
            return Ok(h.clone());
        }
        let h = self.hash()?;
        Ok(self.sha256.get_or_init(|| h).clone())
    }

    fn hash(&self) -> Result<String> {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for ds in [&self.train, &self.bank, &self.test] {
            for t in [&ds.images, &ds.labels] {
                let cpu = t.to_device(Device::Cpu).contiguous();
                let n = cpu.numel() * cpu.kind().elt_size_in_bytes();
                let mut bytes = vec![0u8; n];
                cpu.f_copy_data_u8(&mut bytes, cpu.numel())?;
                h.update(&bytes);
            }
        }
        Ok(format!("{:x}", h.finalize()))
    }

    fn load_splits(cfg: &DataConfig, device: Device) -> Result<RunData> {
        let dir = cfg.data_dir.as_deref();
        let train_split = if cfg.dataset == DatasetKind::Stl10 {
            Split::TrainUnlabeled
        } else {
            Split::Train
        };
        let labelled = load(cfg.dataset, Split::Train, dir)?;
        // The labelled train split is also the training set except for STL-10; each use takes
        // its own prefix of it.
        let train = if train_split == Split::Train {
            limit(share(&labelled), cfg.train_limit)
        } else {
            limit(load(cfg.dataset, train_split, dir)?, cfg.train_limit)
        };
        let bank = limit(labelled, cfg.bank_limit);
        let test = limit(load(cfg.dataset, Split::Test, dir)?, cfg.test_limit);
        Ok(RunData {
            train: to_device(train, device),
            bank: to_device(bank, device),
            test: to_device(test, device),
            sha256: std::sync::OnceLock::new(),
        })
    }
}

/// The first `n` items (`n == 0` or `n ≥ len`: all). A prefix, so the same limit always names the
/// same images.
pub fn limit(ds: Dataset, n: usize) -> Dataset {
    let n = n as i64;
    if n == 0 || n >= ds.len() {
        return ds;
    }
    Dataset {
        name: format!("{}[..{n}]", ds.name),
        images: ds.images.narrow(0, 0, n),
        labels: ds.labels.narrow(0, 0, n),
        num_classes: ds.num_classes,
    }
}

/// Another handle on the same tensors.
fn share(ds: &Dataset) -> Dataset {
    Dataset {
        name: ds.name.clone(),
        images: ds.images.shallow_clone(),
        labels: ds.labels.shallow_clone(),
        num_classes: ds.num_classes,
    }
}

fn to_device(ds: Dataset, device: Device) -> Dataset {
    Dataset {
        images: ds.images.to_device(device),
        labels: ds.labels.to_device(device),
        ..ds
    }
}

/// Index batches of one epoch: a permutation of `0..n` drawn from tch's global CPU generator,
/// cut into `batch` sized pieces; the last partial batch is dropped when `drop_last` (as the
/// reference's training loader does) and kept otherwise.
pub fn shuffled_batches(n: i64, batch: i64, drop_last: bool, device: Device) -> Vec<Tensor> {
    let perm = Tensor::randperm(n, (Kind::Int64, Device::Cpu)).to_device(device);
    ordered_batches(&perm, batch, drop_last)
}

/// `indices` cut into consecutive batches.
pub fn ordered_batches(indices: &Tensor, batch: i64, drop_last: bool) -> Vec<Tensor> {
    let n = indices.size()[0];
    let mut out = Vec::new();
    let mut start = 0;
    while start < n {
        let len = batch.min(n - start);
        if len < batch && drop_last {
            break;
        }
        out.push(indices.narrow(0, start, len));
        start += len;
    }
    out
}

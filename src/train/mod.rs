//! Training: the model with its optimizer ([`Trainer`]), the epoch loop, and the per-batch steps
//! (SimCLR baseline here; the IP-IRM minimize and maximize steps in their own modules).
use std::time::Instant;

use tch::{nn, Device, Tensor};

use crate::config::{Config, Method};
use crate::data::{augment, loader};
use crate::model::Model;
use crate::{loss, progress, rng, Result};

pub mod adam;
pub mod ipirm;
pub mod maximize;
pub mod minimize;

/// Figures of one training epoch.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochStats {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches.
    pub loss: f64,
    /// Images per second (each image gives two views).
    pub images_per_sec: f64,
    pub seconds: f64,
}

/// The model being trained, its optimizer, and how many epochs it has seen.
pub struct Trainer {
    pub cfg: Config,
    pub device: Device,
    pub vs: nn::VarStore,
    pub model: Model,
    pub opt: adam::Adam,
    /// Epochs completed.
    pub epoch: usize,
}

impl Trainer {
    /// A freshly initialised model (initialisation drawn from `train.seed`) and its Adam.
    pub fn new(cfg: &Config, device: Device) -> Result<Trainer> {
        rng::reseed(cfg.train.seed, "init", 0);
        let vs = nn::VarStore::new(device);
        let model = Model::new(&vs.root(), &cfg.model);
        let opt = adam::Adam::for_var_store(&vs, cfg.train.lr, cfg.train.weight_decay);
        Ok(Trainer { cfg: cfg.clone(), device, vs, model, opt, epoch: 0 })
    }

    /// One SimCLR epoch over `images` (uint8 N×C×H×W on the device): shuffled batches of
    /// `train.batch_size` (last partial one dropped), two augmented views each, NT-Xent.
    pub fn train_epoch_simclr(&mut self, images: &Tensor) -> Result<EpochStats> {
        let cfg = &self.cfg.train;
        let (tau, debiased) = (cfg.temperature, cfg.debiased.then_some(cfg.tau_plus));
        let model = &self.model;
        run_epoch(self.epoch + 1, cfg.epochs, cfg.seed, images, cfg.batch_size, &mut self.opt, |x, _| {
            let (_, z1) = model.forward(&augment::train_view(x, augment::CROP_SIZE), true);
            let (_, z2) = model.forward(&augment::train_view(x, augment::CROP_SIZE), true);
            loss::nt_xent(&z1, &z2, tau, debiased)
        })
        .inspect(|_| self.epoch += 1)
    }

    /// One IP-IRM minimize epoch over `images` with the kept `partitions` (each N×E logits on
    /// the training device; the caller passes all of them with `retain_group`, else the latest).
    pub fn train_epoch_ipirm(&mut self, images: &Tensor, partitions: &[Tensor]) -> Result<EpochStats> {
        let cfg = &self.cfg;
        let epoch = self.epoch + 1;
        let pw = minimize::penalty_weight(&cfg.ipirm, epoch, cfg.train.epochs);
        let model = &self.model;
        run_epoch(epoch, cfg.train.epochs, cfg.train.seed, images, cfg.train.batch_size, &mut self.opt, |x, idx| {
            let (_, z1) = model.forward(&augment::train_view(x, augment::CROP_SIZE), true);
            let (_, z2) = model.forward(&augment::train_view(x, augment::CROP_SIZE), true);
            Ok(minimize::minimize_loss(&z1, &z2, idx, partitions, cfg, pw)?.total)
        })
        .inspect(|_| self.epoch += 1)
    }

    /// One epoch of the configured method (`partitions` is ignored by SimCLR).
    pub fn train_epoch(&mut self, images: &Tensor, partitions: &[Tensor]) -> Result<EpochStats> {
        match self.cfg.train.method {
            Method::Simclr => self.train_epoch_simclr(images),
            Method::Ipirm => self.train_epoch_ipirm(images, partitions),
        }
    }
}

/// The epoch loop shared by the training methods: seeds the epoch's random stream from the run
/// seed and the epoch, draws the batches, calls `step(images, indices)` for each batch's loss,
/// back-propagates, steps the optimizer and reports progress.
pub(crate) fn run_epoch(
    epoch: usize,
    epochs: usize,
    seed: u64,
    images: &Tensor,
    batch_size: i64,
    opt: &mut adam::Adam,
    mut step: impl FnMut(&Tensor, &Tensor) -> Result<Tensor>,
) -> Result<EpochStats> {
    rng::reseed(seed, "train", epoch as u64);
    let device = images.device();
    let batches = loader::shuffled_batches(images.size()[0], batch_size, true, device);
    if batches.is_empty() {
        return Err(crate::Error::config(
            "train.batch_size",
            format!("{batch_size} is larger than the {} training images", images.size()[0]),
        ));
    }
    let pb = progress::bar(batches.len() as u64, &format!("epoch {epoch}/{epochs}"));
    let start = Instant::now();
    let (mut total, mut seen) = (0.0, 0i64);
    for idx in &batches {
        let x = images.index_select(0, idx);
        let loss = step(&x, idx)?;
        opt.zero_grad();
        loss.backward();
        opt.step();
        let b = idx.size()[0];
        total += loss.double_value(&[]) * b as f64;
        seen += b;
        let secs = start.elapsed().as_secs_f64();
        pb.set_message(format!("loss {:.4}  {:.0} img/s", total / seen as f64, seen as f64 / secs));
        pb.inc(1);
    }
    pb.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    Ok(EpochStats { epoch, loss: total / seen as f64, images_per_sec: seen as f64 / seconds, seconds })
}

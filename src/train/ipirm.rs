//! The IP-IRM schedule: a maximize step before epoch 1 and after every `maximize_iter` epochs,
//! minimize steps in between over the kept partitions.
use tch::{Kind, Tensor};

use super::maximize::{maximize_offline, maximize_online, EpochRisk, MaximizeResult};
use super::Trainer;
use crate::data::{augment, loader};
use crate::{progress, rng, Result};

/// One maximize step's outcome, kept for the rest of the run and the report.
pub struct PartitionRecord {
    /// The step ran after this many training epochs (0 = before epoch 1).
    pub after_epoch: usize,
    /// N×E logits of the best partition found (CPU); hard assignment = argmax.
    pub partition: Tensor,
    pub risks: Vec<EpochRisk>,
    pub best_epoch: usize,
    pub env_sizes: Vec<i64>,
    /// N×E logits after the last epoch run (CPU); see [`crate::pipeline::train`] for the one place
    /// the reference lets it replace a kept partition.
    pub last_partition: Tensor,
}

impl Clone for PartitionRecord {
    /// Shares the tensors (they are never changed in place).
    fn clone(&self) -> Self {
        PartitionRecord {
            after_epoch: self.after_epoch,
            partition: self.partition.shallow_clone(),
            risks: self.risks.clone(),
            best_epoch: self.best_epoch,
            env_sizes: self.env_sizes.clone(),
            last_partition: self.last_partition.shallow_clone(),
        }
    }
}

/// Both views' projections of every training image under the train transform, the encoder in
/// eval mode, no gradients (the reference's offline feature extraction, batch = maximize batch),
/// for maximize step number `step`. The model computes as its numerics say (bf16, channels_last,
/// TF32 on a GPU by default); the projections come back fp32.
pub fn extract_view_pairs(
    trainer: &Trainer,
    images: &Tensor,
    step: u64,
) -> Result<(Tensor, Tensor)> {
    let _guard = tch::no_grad_guard();
    let _tf32 = trainer.model.numerics().tf32_scope()?;
    rng::reseed(trainer.cfg.train.seed, "features", step);
    let n = images.size()[0];
    let idx = Tensor::arange(n, (Kind::Int64, images.device()));
    let batches = loader::ordered_batches(&idx, trainer.cfg.maximize.batch_size, false);
    let pb = progress::bar(batches.len() as u64, "features");
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in &batches {
        let x = images.index_select(0, i);
        a.push(
            trainer
                .model
                .forward(&augment::train_view(&x, augment::CROP_SIZE), false)
                .1,
        );
        b.push(
            trainer
                .model
                .forward(&augment::train_view(&x, augment::CROP_SIZE), false)
                .1,
        );
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok((Tensor::cat(&a, 0), Tensor::cat(&b, 0)))
}

/// Learns the partition of maximize step number `step` (0-based) from fresh N(0,1) logits
/// (`random_init`, or no previous partition) or from `previous`: offline on the view pairs
/// `views` = (z1, z2) (N×d, see [`extract_view_pairs`]), or online (`views` = None) with both
/// views of each batch of `images` augmented and encoded afresh (eval mode, no gradients).
pub fn learn_partition(
    trainer: &Trainer,
    images: &Tensor,
    views: Option<(&Tensor, &Tensor)>,
    previous: Option<&Tensor>,
    step: u64,
) -> Result<PartitionRecord> {
    let cfg = &trainer.cfg;
    rng::reseed(cfg.train.seed, "maximize", step);
    let n = images.size()[0];
    let init = match previous {
        Some(p) if !cfg.maximize.random_init => p.to_device(trainer.device),
        _ => Tensor::randn([n, cfg.maximize.env_num], (Kind::Float, tch::Device::Cpu))
            .to_device(trainer.device),
    };
    let pb = progress::bar(
        (cfg.maximize.max_epoch + 1) as u64,
        &format!("maximize {step}"),
    );
    let on_epoch = |_: usize, r: &EpochRisk| {
        pb.set_message(format!("risk {:.4}", r.total));
        pb.inc(1);
    };
    let tau = cfg.maximize_temperature();
    let MaximizeResult {
        partition,
        last_partition,
        risks,
        best_epoch,
        env_sizes,
    } = match views {
        Some((z1, z2)) => maximize_offline(z1, z2, &init, &cfg.maximize, tau, on_epoch)?,
        None => {
            let _tf32 = trainer.model.numerics().tf32_scope()?;
            let encode = |idx: &Tensor| {
                let _guard = tch::no_grad_guard();
                let x = images.index_select(0, idx);
                let z1 = trainer
                    .model
                    .forward(&augment::train_view(&x, augment::CROP_SIZE), false)
                    .1;
                let z2 = trainer
                    .model
                    .forward(&augment::train_view(&x, augment::CROP_SIZE), false)
                    .1;
                Ok((z1, z2))
            };
            maximize_online(
                n,
                &init,
                &cfg.maximize,
                tau,
                trainer.device,
                encode,
                on_epoch,
            )?
        }
    };
    pb.finish_and_clear();
    check_finite(
        &risks,
        &partition,
        &format!("maximize step {step} (after epoch {})", trainer.epoch),
    )?;
    let cpu = tch::Device::Cpu;
    Ok(PartitionRecord {
        after_epoch: trainer.epoch,
        partition: partition.to_device(cpu),
        risks,
        best_epoch,
        env_sizes,
        last_partition: last_partition.to_device(cpu),
    })
}

/// An error naming the first epoch of a maximize step (`label`) whose risk is NaN or infinite,
/// or a partition with non-finite logits: such a partition is never returned, so never stored.
pub fn check_finite(risks: &[EpochRisk], partition: &Tensor, label: &str) -> Result<()> {
    if let Some((t, r)) = risks.iter().enumerate().find(|(_, r)| !r.total.is_finite()) {
        return Err(crate::Error::NonFinite {
            what: "the maximize risk".into(),
            at: format!("{label}, epoch {t}"),
            value: r.total,
        });
    }
    if !bool::try_from(partition.isfinite().all())? {
        return Err(crate::Error::NonFinite {
            what: "the learned partition's logits".into(),
            at: label.to_string(),
            value: f64::NAN,
        });
    }
    Ok(())
}

/// The partitions the minimize steps train on, on `device`: every one so far with `retain_group`,
/// else the latest. Without `random_init` the reference optimises the previous partition's tensor
/// in place, and from the third step on that tensor is also the kept one (the first is kept as a
/// copy), so the kept partition k−1 becomes step k's last iterate; the paper's runs all use
/// `random_init`, and the quirk is kept for parity.
pub fn kept_partitions(
    records: &[PartitionRecord],
    cfg: &crate::config::Config,
    device: tch::Device,
) -> Vec<Tensor> {
    let mut all: Vec<Tensor> = records
        .iter()
        .map(|r| r.partition.to_device(device))
        .collect();
    if !cfg.maximize.random_init {
        for k in 2..records.len() {
            all[k - 1] = records[k].last_partition.to_device(device);
        }
    }
    super::schedule::Schedule::new(cfg, 0)
        .kept(&all)
        .iter()
        .map(Tensor::shallow_clone)
        .collect()
}

/// Class composition of each environment of a partition: `counts[e][c]` = training images of
/// class `c` assigned to environment `e`; the last column counts unlabelled images (label −1).
pub fn class_composition(partition: &Tensor, labels: &Tensor, classes: i64) -> Vec<Vec<i64>> {
    let assign = partition.argmax(1, false).to_device(tch::Device::Cpu);
    let labels = labels.to_device(tch::Device::Cpu);
    let env_num = partition.size()[1];
    // label −1 → column `classes`
    let col = labels.where_scalarother(&labels.ge(0), classes);
    let flat = &assign * (classes + 1) + col;
    let counts = flat.bincount::<Tensor>(None, env_num * (classes + 1));
    let v: Vec<i64> = Vec::try_from(counts).unwrap_or_default();
    v.chunks((classes + 1) as usize)
        .map(|c| c.to_vec())
        .collect()
}

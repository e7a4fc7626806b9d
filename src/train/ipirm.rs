//! IP-IRM's side of training: the maximize step as the run takes it (the view pairs extracted
//! for it, sharded over ranks; the partition learned from them, [`learn_partition`], kept as a
//! [`PartitionRecord`]), the partitions kept for the minimize steps ([`kept_partitions`],
//! `retain_group`), and their class composition. The schedule itself is `train/schedule.rs`.
//!
//! What the store keeps of a step, as tensor blobs ([`TensorArtifact`]):
//! - [`PartitionRecord`]: `partition` and `last_partition` (N×E logits), `risk` (epochs×4:
//!   total, contrastive, penalty, constraint), `best_epoch`, `after_epoch`; meta `after_epoch`,
//!   `best_epoch`, `epochs_run`, `env_sizes` (JSON).
//! - [`Features`]: `z1`, `z2` (N×d projections of both views; with `maximize.mixup` also `lam`
//!   and `labels_aux`, each image's λ and partner).
use tch::{Kind, Tensor};

use super::maximize::{maximize_online, BatchFeatures, EpochRisk, MaximizeResult, Maximizer, Mix};
use super::Trainer;
use crate::config::Config;
use crate::data::loader;
use crate::tensor_file::{take, Meta, TensorArtifact};
use crate::{loss, progress, rng, Result};

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

/// Both views' projections of every training image, fixed for an offline maximize step.
pub struct Features {
    /// View 1's projections (MixUp-ed with `maximize.mixup`), N × d.
    pub z1: Tensor,
    /// View 2's projections, N × d.
    pub z2: Tensor,
    /// With `maximize.mixup`: each image's λ (N, float) and the training-set index of the image
    /// it was mixed with (N, int64; the reference's `labels_aux`, kept though its loss ignores it).
    pub mix: Option<(Tensor, Tensor)>,
}

impl TensorArtifact for PartitionRecord {
    fn to_tensors(&self) -> (Vec<(String, Tensor)>, Meta) {
        let risk: Vec<f64> = self
            .risks
            .iter()
            .flat_map(|r| [r.total, r.contrastive, r.penalty, r.constraint])
            .collect();
        let named = [
            ("partition", self.partition.shallow_clone()),
            ("last_partition", self.last_partition.shallow_clone()),
            ("risk", Tensor::from_slice(&risk).view([-1, 4])),
            ("best_epoch", Tensor::from_slice(&[self.best_epoch as i64])),
            (
                "after_epoch",
                Tensor::from_slice(&[self.after_epoch as i64]),
            ),
        ]
        .into_iter()
        .map(|(n, t)| (n.to_string(), t))
        .collect();
        let meta = Meta::from([
            ("after_epoch".to_string(), self.after_epoch.to_string()),
            ("best_epoch".to_string(), self.best_epoch.to_string()),
            ("epochs_run".to_string(), self.risks.len().to_string()),
            (
                "env_sizes".to_string(),
                serde_json::to_string(&self.env_sizes).expect("integers serialise"),
            ),
        ]);
        (named, meta)
    }
    fn from_tensors(mut named: Vec<(String, Tensor)>, _meta: &Meta) -> Result<Self> {
        let partition = take(&mut named, "partition")?;
        let risk = Vec::<Vec<f64>>::try_from(take(&mut named, "risk")?)?;
        let env_sizes = Vec::<i64>::try_from(
            partition
                .argmax(1, false)
                .bincount::<Tensor>(None, partition.size()[1]),
        )?;
        Ok(PartitionRecord {
            after_epoch: take(&mut named, "after_epoch")?.int64_value(&[0]) as usize,
            best_epoch: take(&mut named, "best_epoch")?.int64_value(&[0]) as usize,
            last_partition: take(&mut named, "last_partition")?,
            risks: risk
                .iter()
                .map(|r| EpochRisk {
                    total: r[0],
                    contrastive: r[1],
                    penalty: r[2],
                    constraint: r[3],
                })
                .collect(),
            env_sizes,
            partition,
        })
    }
}

impl TensorArtifact for Features {
    fn to_tensors(&self) -> (Vec<(String, Tensor)>, Meta) {
        let mut named = vec![
            ("z1".into(), self.z1.shallow_clone()),
            ("z2".into(), self.z2.shallow_clone()),
        ];
        if let Some((lam, aux)) = &self.mix {
            named.push(("lam".into(), lam.shallow_clone()));
            named.push(("labels_aux".into(), aux.shallow_clone()));
        }
        (named, Meta::new())
    }
    fn from_tensors(mut named: Vec<(String, Tensor)>, _meta: &Meta) -> Result<Self> {
        let mix = match named.iter().any(|(n, _)| n == "lam") {
            true => Some((take(&mut named, "lam")?, take(&mut named, "labels_aux")?)),
            false => None,
        };
        Ok(Features {
            z1: take(&mut named, "z1")?,
            z2: take(&mut named, "z2")?,
            mix,
        })
    }
}

/// Both views' projections of every training image under the train transform, the encoder in
/// eval mode, no gradients (the reference's offline feature extraction, batch = maximize batch),
/// for maximize step number `step`. With `maximize.mixup` view 1 is MixUp-ed within each batch
/// before the encoder, as `train_update_split` does with `--mixup_max`. The model computes as its
/// numerics say (bf16, channels_last, TF32 on a GPU by default); the projections come back fp32.
/// As rank 0 of a data-parallel run, every rank extracts its chunk of each batch.
pub fn extract_view_pairs(trainer: &Trainer, images: &Tensor, step: u64) -> Result<Features> {
    trainer.lead(super::Command::Features(step), &[])?;
    extract_view_pairs_here(trainer, images, step)
}

/// [`extract_view_pairs`] without announcing it (a rank that follows rank 0).
pub(crate) fn extract_view_pairs_here(
    trainer: &Trainer,
    images: &Tensor,
    step: u64,
) -> Result<Features> {
    let _guard = tch::no_grad_guard();
    let _tf32 = trainer.model.numerics().tf32_scope()?;
    let cfg = &trainer.cfg;
    rng::reseed(cfg.train.seed, "features", step);
    let n = images.size()[0];
    let idx = Tensor::arange(n, (Kind::Int64, images.device()));
    let batches = loader::ordered_batches(&idx, cfg.maximize.batch_size, false);
    let pb = progress::bar(batches.len() as u64, "features");
    let (mut a, mut b, mut lams, mut partners) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in &batches {
        let x = images.index_select(0, i);
        let mut v1 = cfg.data.views().draw(&x);
        let v2 = cfg.data.views().draw(&x);
        if cfg.maximize.mixup {
            let (lam, perm) =
                loss::draw_mixup(i.size()[0], cfg.train.mixup_alpha, images.device())?;
            v1 = loss::mixup(&v1, &lam, &perm)?;
            lams.push(lam);
            partners.push(i.index_select(0, &perm));
        }
        let dist = trainer.group();
        a.push(super::project_batch(&trainer.model, &v1, false, dist)?);
        b.push(super::project_batch(&trainer.model, &v2, false, dist)?);
        pb.inc(1);
    }
    pb.finish_and_clear();
    let mix = cfg
        .maximize
        .mixup
        .then(|| (Tensor::cat(&lams, 0), Tensor::cat(&partners, 0)));
    Ok(Features {
        z1: Tensor::cat(&a, 0),
        z2: Tensor::cat(&b, 0),
        mix,
    })
}

/// Maximize step `step` of a run, offline on fixed features, one epoch at a time: the partition
/// logits start from fresh N(0,1) draws (`random_init`, or no previous partition) or from
/// `previous`, seeded from `train.seed` and the step, and each epoch's batch order is drawn
/// after them as [`learn_partition`] draws it, so stepping it to the end gives the partition a
/// run stored (notebook 02).
pub struct OfflineStep {
    maximizer: Maximizer,
    z1: Tensor,
    z2: Tensor,
    lam: Option<Tensor>,
}

impl OfflineStep {
    /// The step for `features` (N × d each) on their device.
    pub fn new(
        cfg: &Config,
        features: &Features,
        previous: Option<&Tensor>,
        step: u64,
    ) -> Result<OfflineStep> {
        let device = features.z1.device();
        let n = features.z1.size()[0];
        let init = initial_partition(cfg, n, previous, step, device);
        let maximizer = Maximizer::new(
            n,
            &init,
            &cfg.maximize,
            cfg.maximize_temperature(),
            device,
            false,
        )?;
        let lam = features.mix.as_ref().map(|(l, _)| l.to_device(device));
        Ok(OfflineStep {
            maximizer,
            z1: features.z1.detach(),
            z2: features.z2.detach(),
            lam,
        })
    }

    /// Runs the next epoch (its batch order drawn now); its mean risk.
    pub fn epoch(&mut self) -> Result<EpochRisk> {
        let n = self.z1.size()[0];
        let perm = Tensor::f_randperm(n, (Kind::Int64, self.z1.device()))?;
        let (z1, z2, lam) = (&self.z1, &self.z2, &self.lam);
        self.maximizer.run_epoch(&perm, |idx| {
            let mix = lam.as_ref().map(|l| Mix {
                lam: l.index_select(0, idx),
                partner: None,
            });
            Ok(BatchFeatures {
                z1: z1.index_select(0, idx),
                z2: z2.index_select(0, idx),
                mix,
            })
        })
    }

    /// The state between epochs: learning rate, current partition, risks so far, stop rule.
    pub fn maximizer(&self) -> &Maximizer {
        &self.maximizer
    }

    pub fn finish(self) -> Result<MaximizeResult> {
        self.maximizer.finish()
    }
}

/// The starting logits of maximize step `step`: N(0,1) drawn from the run's seed and the step,
/// or the previous partition without `random_init`. Leaves tch's generator where the step's
/// batch orders are drawn from.
fn initial_partition(
    cfg: &Config,
    n: i64,
    previous: Option<&Tensor>,
    step: u64,
    device: tch::Device,
) -> Tensor {
    rng::reseed(cfg.train.seed, "maximize", step);
    match previous {
        Some(p) if !cfg.maximize.random_init => p.to_device(device),
        _ => Tensor::randn([n, cfg.maximize.env_num], (Kind::Float, tch::Device::Cpu))
            .to_device(device),
    }
}

/// Learns the partition of maximize step number `step` (0-based): offline on `features` (see
/// [`extract_view_pairs`] and [`OfflineStep`]), or online (`features` = None) with both views of
/// each batch of `images` augmented (view 1 MixUp-ed with `maximize.mixup`) and encoded afresh
/// (eval mode, no gradients).
pub fn learn_partition(
    trainer: &Trainer,
    images: &Tensor,
    features: Option<&Features>,
    previous: Option<&Tensor>,
    step: u64,
) -> Result<PartitionRecord> {
    let cfg = &trainer.cfg;
    let pb = progress::bar(
        (cfg.maximize.max_epoch + 1) as u64,
        &format!("maximize {step}"),
    );
    let on_epoch = |_: usize, r: &EpochRisk| {
        pb.set_message(format!("risk {:.4}", r.total));
        pb.inc(1);
    };
    let result = match features {
        Some(f) => {
            let mut s = OfflineStep::new(cfg, f, previous, step)?;
            while !s.maximizer().done() {
                let epoch = s.maximizer().epochs_run();
                let r = s.epoch()?;
                on_epoch(epoch, &r);
            }
            s.finish()?
        }
        None => {
            let n = images.size()[0];
            let init = initial_partition(cfg, n, previous, step, trainer.device);
            let _tf32 = trainer.model.numerics().tf32_scope()?;
            // In a data-parallel run the other ranks project their chunks of each batch.
            trainer.lead(super::Command::Online(step), &[])?;
            let group = trainer.group();
            let encode = |idx: &Tensor| {
                let _guard = tch::no_grad_guard();
                let x = images.index_select(0, idx);
                let mut v1 = cfg.data.views().draw(&x);
                let v2 = cfg.data.views().draw(&x);
                let mut mix = None;
                if cfg.maximize.mixup {
                    let (lam, perm) =
                        loss::draw_mixup(idx.size()[0], cfg.train.mixup_alpha, images.device())?;
                    v1 = loss::mixup(&v1, &lam, &perm)?;
                    mix = Some(Mix {
                        lam,
                        partner: Some(perm),
                    });
                }
                let views = (v1, v2);
                if let Some(g) = group {
                    super::ranks::send_views(g, Some((&views.0, &views.1)))?;
                }
                let (z1, z2) = super::ranks::project_views(trainer, &views)?;
                Ok(BatchFeatures { z1, z2, mix })
            };
            let result = maximize_online(
                n,
                &init,
                &cfg.maximize,
                cfg.maximize_temperature(),
                trainer.device,
                encode,
                on_epoch,
            );
            // The other ranks are told the step is over even when it failed (its error first).
            let ended = group.map(|g| super::ranks::send_views(g, None));
            let result = result?;
            ended.transpose()?;
            result
        }
    };
    pb.finish_and_clear();
    let MaximizeResult {
        partition,
        last_partition,
        risks,
        best_epoch,
        env_sizes,
    } = result;
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

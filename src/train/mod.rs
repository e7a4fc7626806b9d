//! Training: the model with its optimizer ([`Trainer`]), the epoch loop, and the per-batch steps
//! (SimCLR baseline here; the IP-IRM minimize and maximize steps and the MixUp minimize steps in
//! their own modules). A trainer's state is a [`Checkpoint`] (`checkpoint.rs`).
//!
//! The model's forward passes compute as its numerics say ([`crate::numerics`]: bf16 autocast,
//! channels_last, TF32 on a GPU by default; on the CPU plain fp32); the losses and the optimizer
//! always run in fp32. An epoch holds the TF32 switches for its forward and backward passes.
use std::cell::{Cell, OnceCell};
use std::sync::Arc;
use std::time::Instant;

use tch::{nn, Device, Tensor};

use crate::config::{Config, Method};
use crate::data::augment::Views;
use crate::data::loader;
use crate::distributed::{self, GradBuckets, GradSync, Group, StepSync};
use crate::model::Model;
use crate::{loss, progress, rng, Result};

pub mod adam;
mod checkpoint;
pub mod ipirm;
pub mod maximize;
pub mod minimize;
pub mod mixup;
mod ranks;
pub mod schedule;

pub use checkpoint::Checkpoint;
pub use ranks::{serve, Command};

/// Figures of one training epoch (the training curve is a list of these).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochStats {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean over the epoch's batches of the loss back-propagated.
    pub loss: f64,
    /// Its contrastive part (IP-IRM: mean env loss + the batch's InfoNCE with `keep_cont`;
    /// SimCLR: the whole loss).
    pub contrastive: f64,
    /// Its IRM penalty part, before weighting (0 for SimCLR).
    pub penalty: f64,
    pub penalty_weight: f64,
    pub lr: f64,
    /// Images per second (each image gives two views).
    pub images_per_sec: f64,
    pub seconds: f64,
}

/// One batch's loss as the epoch loop sees it.
pub struct BatchLoss {
    /// The loss to back-propagate, or, when `backpropagated`, the figure reported for the batch.
    pub total: Tensor,
    pub contrastive: Tensor,
    pub penalty: Tensor,
    /// The step ran its own backward passes (the MixUp retain-group step back-propagates once per
    /// partition); the loop then only steps the optimizer.
    pub backpropagated: bool,
}

impl BatchLoss {
    /// A loss without a penalty (SimCLR, the MixUp baseline), back-propagated by the loop.
    fn contrastive_only(total: Tensor) -> Self {
        BatchLoss {
            contrastive: total.detach(),
            penalty: total.zeros_like(),
            total,
            backpropagated: false,
        }
    }

    /// A loss and its parts, back-propagated by the loop.
    fn with_parts(total: Tensor, contrastive: &Tensor, penalty: &Tensor) -> Self {
        BatchLoss {
            total,
            contrastive: contrastive.detach(),
            penalty: penalty.detach(),
            backpropagated: false,
        }
    }
}

/// The projections of a global batch `x` ([`Model::forward`]'s second output): on one process
/// `forward(x).1`; as one rank of a data-parallel run, this rank's chunk forwarded and every
/// rank's projections gathered (gradients flow into this rank's rows only; see
/// [`distributed`]). The model knows nothing of process groups: the gather is the step's.
pub fn project_batch(
    model: &Model,
    x: &Tensor,
    train: bool,
    group: Option<&Group>,
) -> Result<Tensor> {
    match group {
        None => Ok(model.forward(x, train).1),
        Some(g) => g.sharded(x, |chunk| model.forward(chunk, train).1),
    }
}

/// The projections of two augmented views of a batch (the first view's draws first);
/// `views`: [`crate::config::DataConfig::views`].
fn projected_views(
    model: &Model,
    x: &Tensor,
    views: Views,
    dist: Option<&Group>,
) -> Result<(Tensor, Tensor)> {
    let view = || project_batch(model, &views.draw(x), true, dist);
    // A tuple's fields are evaluated left to right: the first view draws first.
    Ok((view()?, view()?))
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
    /// The process group when this trainer is one rank of a data-parallel run ([`distributed`]).
    dist: Option<Arc<Group>>,
    /// Rank 0: whether the other ranks hold this trainer's state (false after a load).
    synced: Cell<bool>,
    /// A data-parallel rank's gradient buckets ([`GradSync::Buckets`]), made at its first step.
    buckets: OnceCell<Arc<GradBuckets>>,
}

impl Trainer {
    /// A freshly initialised model (initialisation drawn from `train.seed`) and its Adam, from a
    /// config fitted to `device` ([`crate::fit`]): the model computes as its `train.precision`,
    /// `channels_last` and `tf32` say.
    pub fn new(cfg: &Config, device: Device) -> Result<Trainer> {
        let cfg = cfg.clone();
        let numerics = crate::numerics::Numerics::of_fitted(&cfg.train, device)?;
        rng::reseed(cfg.train.seed, "init", 0);
        let vs = nn::VarStore::new(device);
        let mut model = Model::new(&vs.root(), &cfg.model);
        // Before the optimizer: its moments take the parameters' layout.
        model.set_numerics(numerics)?;
        let opt = adam::Adam::for_var_store(&vs, cfg.train.lr, cfg.train.weight_decay);
        Ok(Trainer {
            cfg,
            device,
            vs,
            model,
            opt,
            epoch: 0,
            dist: None,
            synced: Cell::new(false),
            buckets: OnceCell::new(),
        })
    }

    /// A trainer that is one rank of the data-parallel run over `group`: `cfg.model.bn_splits`
    /// (fitted to the world size, [`crate::fit`]) is shared among the ranks, each
    /// normalising its own chunk of every batch in `bn_splits / world` pieces. Rank 0 drives the
    /// other ranks (each epoch and feature extraction is announced to them) until
    /// [`Trainer::release_workers`].
    pub fn with_group(cfg: &Config, device: Device, group: Arc<Group>) -> Result<Trainer> {
        let mut t = Trainer::new(cfg, device)?;
        t.model.set_bn_splits(distributed::local_bn_splits(
            t.cfg.model.bn_splits,
            group.world(),
        ));
        if t.cfg.model.sync_bn {
            let g = group.clone();
            let sum: crate::model::RankSum = Arc::new(move |x: &Tensor| g.all_reduce_sum_grad(x));
            t.model
                .set_sync_stats(Some(crate::model::SyncStats::new(sum)));
        }
        t.dist = Some(group);
        Ok(t)
    }

    /// The process group this trainer is a rank of, if any.
    pub fn group(&self) -> Option<&Group> {
        self.dist.as_deref()
    }

    /// Rank 0: announces `command` to the other ranks, with this trainer's state when they do
    /// not hold it yet and the `partitions` the command uses. Nothing on one process or on the
    /// other ranks (they follow [`serve`]).
    pub(crate) fn lead(&self, command: Command, partitions: &[Tensor]) -> Result<()> {
        let Some(g) = self.dist.as_deref().filter(|g| g.rank() == 0) else {
            return Ok(());
        };
        let state = (!self.synced.get()).then(|| self.checkpoint());
        ranks::send(g, command, state.as_ref(), partitions)?;
        self.synced.set(true);
        Ok(())
    }

    /// Rank 0: the other ranks are done (they exit); this trainer continues alone, as one
    /// process with the run's `model.bn_splits`. Nothing on one process.
    pub fn release_workers(&mut self) -> Result<()> {
        if self.dist.as_ref().is_some_and(|g| g.rank() == 0) {
            self.lead(Command::Done, &[])?;
        }
        if self.dist.take().is_some() {
            self.buckets.take();
            self.model.set_sync_stats(None);
            self.model.set_bn_splits(self.cfg.model.bn_splits);
            distributed::take_back_cores();
        }
        Ok(())
    }

    /// What an optimizer step of a data-parallel rank synchronises.
    fn step_sync(&self) -> Result<Option<StepSync>> {
        let Some(group) = self.dist.clone() else {
            return Ok(None);
        };
        let params: Vec<Tensor> = self.opt.params().map(|p| p.shallow_clone()).collect();
        let grad_sync = group.grad_sync();
        let buckets = match grad_sync {
            GradSync::Flat => None,
            GradSync::Buckets { cap_mb } => Some(match self.buckets.get() {
                Some(b) => b.clone(),
                None => {
                    grad_sync.check_rows(self.cfg.train.batch_size, group.world())?;
                    let b = Arc::new(GradBuckets::new(group.clone(), &params, cap_mb)?);
                    self.buckets.get_or_init(|| b).clone()
                }
            }),
        };
        // In name order: the same on every rank (the var store's map has no order).
        let mut buffers: Vec<(String, Tensor)> = self
            .vs
            .variables()
            .into_iter()
            .filter(|(_, t)| !t.requires_grad())
            .collect();
        buffers.sort_by(|a, b| a.0.cmp(&b.0));
        let buffers = buffers.into_iter().map(|(_, t)| t).collect();
        Ok(Some(StepSync {
            group,
            params,
            buffers,
            forward_failure: self.model.sync_failure(),
            buckets,
        }))
    }

    /// One training epoch over `images` at `penalty_weight`, each batch's loss computed by
    /// `step` (given what it reads besides the batch and the batch's dataset indices).
    fn epoch_of(
        &mut self,
        images: &Tensor,
        penalty_weight: f64,
        mut step: impl FnMut(&StepInputs, &Tensor, &Tensor) -> Result<BatchLoss>,
    ) -> Result<EpochStats> {
        let _tf32 = self.model.numerics().tf32_scope()?;
        let sync = self.step_sync()?;
        let inputs = StepInputs {
            model: &self.model,
            dist: self.dist.as_deref(),
            cfg: &self.cfg,
        };
        let t = &self.cfg.train;
        let stats = run_epoch(
            self.epoch + 1,
            t.epochs,
            t.seed,
            images,
            t.batch_size,
            &mut self.opt,
            sync.as_ref(),
            |x, idx| step(&inputs, x, idx),
            penalty_weight,
        )?;
        self.epoch += 1;
        Ok(stats)
    }

    /// One SimCLR epoch over `images` (uint8 N×C×H×W on the device): shuffled batches of
    /// `train.batch_size` (last partial one dropped), two augmented views each, NT-Xent.
    pub fn train_epoch_simclr(&mut self, images: &Tensor) -> Result<EpochStats> {
        self.epoch_of(images, 0.0, |s, x, _| {
            let t = &s.cfg.train;
            let (z1, z2) = projected_views(s.model, x, s.cfg.data.views(), s.dist)?;
            let total = loss::nt_xent(&z1, &z2, t.temperature, t.debiased.then_some(t.tau_plus))?;
            Ok(BatchLoss::contrastive_only(total))
        })
    }

    /// One IP-IRM minimize epoch over `images` with the kept `partitions` (each N×E logits on
    /// the training device; the caller passes all of them with `retain_group`, else the latest).
    pub fn train_epoch_ipirm(
        &mut self,
        images: &Tensor,
        partitions: &[Tensor],
    ) -> Result<EpochStats> {
        let pw = minimize::penalty_weight(&self.cfg.ipirm, self.epoch + 1, self.cfg.train.epochs);
        self.epoch_of(images, pw, |s, x, idx| {
            let (z1, z2) = projected_views(s.model, x, s.cfg.data.views(), s.dist)?;
            let l = minimize::minimize_loss(&z1, &z2, idx, partitions, s.cfg, pw)?;
            Ok(BatchLoss::with_parts(l.total, &l.contrastive, &l.penalty))
        })
    }

    /// One MixUp epoch (`train.mixup`, `main_mixup.py`): two augmented views per batch as in
    /// the other methods, then with SimCLR the MixUp baseline ([`mixup::mixup_baseline_loss`]),
    /// with IP-IRM the `full` minimize step over the kept `partitions`, back-propagated once per
    /// partition then one optimizer step with `retain_group`
    /// ([`mixup::mixup_ipirm_retain_backward`]), else over the latest partition
    /// ([`mixup::mixup_ipirm_loss`]). The MixUp draws come from the epoch's random stream, after
    /// the batch's augmentations.
    pub fn train_epoch_mixup(
        &mut self,
        images: &Tensor,
        partitions: &[Tensor],
    ) -> Result<EpochStats> {
        let cfg = &self.cfg;
        let ipirm = cfg.train.method == Method::Ipirm;
        let pw = match ipirm {
            true => minimize::penalty_weight(&cfg.ipirm, self.epoch + 1, cfg.train.epochs),
            false => 0.0,
        };
        if ipirm && partitions.is_empty() {
            return Err(crate::Error::Shape(
                "the MixUp IP-IRM minimize step needs at least one partition".into(),
            ));
        }
        let mut draws = mixup::BetaDraws {
            alpha: cfg.train.mixup_alpha,
        };
        self.epoch_of(images, pw, |s, x, idx| {
            let (cfg, views) = (s.cfg, s.cfg.data.views());
            let forward = |x: &Tensor| project_batch(s.model, x, true, s.dist);
            let x1 = views.draw(x);
            let x2 = views.draw(x);
            if !ipirm {
                let total = mixup::mixup_baseline_loss(
                    &x1,
                    &x2,
                    cfg.train.temperature,
                    forward,
                    &mut draws,
                )?;
                return Ok(BatchLoss::contrastive_only(total));
            }
            if cfg.ipirm.retain_group {
                let l = mixup::mixup_ipirm_retain_backward(
                    &x1, &x2, idx, partitions, cfg, pw, forward, &mut draws,
                )?;
                return Ok(BatchLoss {
                    total: l.total(),
                    contrastive: l.contrastive(),
                    penalty: l.penalty(),
                    backpropagated: true,
                });
            }
            let latest = partitions.last().expect("checked above");
            let l = mixup::mixup_ipirm_loss(&x1, &x2, idx, latest, cfg, pw, forward, &mut draws)?;
            Ok(BatchLoss::with_parts(l.total, &l.contrastive, &l.penalty))
        })
    }

    /// The model's variables, the optimizer's state and the epoch count (shallow: the live
    /// tensors): what a checkpoint holds. Restored by [`Trainer::restore`].
    pub fn checkpoint(&self) -> Checkpoint {
        let mut model: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        model.sort_by(|a, b| a.0.cmp(&b.0));
        Checkpoint {
            epoch: self.epoch,
            model,
            optimizer: self.opt.state(),
        }
    }

    /// Restores a [`Trainer::checkpoint`] (of the same model config).
    pub fn restore(&mut self, ckpt: &Checkpoint) -> Result<()> {
        let _guard = tch::no_grad_guard();
        let mut missing = Vec::new();
        for (name, mut var) in self.vs.variables() {
            match ckpt.model.iter().find(|(n, _)| *n == name) {
                Some((_, t)) if t.size() == var.size() => var.f_copy_(t)?,
                Some((_, t)) => {
                    return Err(crate::Error::Shape(format!(
                        "checkpoint variable `{name}` has shape {:?}, the model {:?}",
                        t.size(),
                        var.size()
                    )))
                }
                None => missing.push(name),
            }
        }
        if !missing.is_empty() {
            return Err(crate::Error::Shape(format!(
                "checkpoint lacks model variables {missing:?}"
            )));
        }
        self.opt.load_state(&ckpt.optimizer)?;
        self.epoch = ckpt.epoch;
        self.synced.set(false);
        Ok(())
    }

    /// One epoch of the configured method (`partitions` is ignored by SimCLR). As rank 0 of a
    /// data-parallel run, the other ranks are told first and take part.
    pub fn train_epoch(&mut self, images: &Tensor, partitions: &[Tensor]) -> Result<EpochStats> {
        self.lead(Command::Epoch, partitions)?;
        self.train_epoch_here(images, partitions)
    }

    /// [`Trainer::train_epoch`] without announcing it (a rank that follows rank 0).
    pub(crate) fn train_epoch_here(
        &mut self,
        images: &Tensor,
        partitions: &[Tensor],
    ) -> Result<EpochStats> {
        match (self.cfg.train.method, self.cfg.train.mixup) {
            (_, true) => self.train_epoch_mixup(images, partitions),
            (Method::Simclr, false) => self.train_epoch_simclr(images),
            (Method::Ipirm, false) => self.train_epoch_ipirm(images, partitions),
        }
    }
}

/// What a training step reads besides its batch.
struct StepInputs<'a> {
    model: &'a Model,
    /// The process group of a data-parallel run.
    dist: Option<&'a Group>,
    cfg: &'a Config,
}

/// The epoch loop shared by the training methods: seeds the epoch's random stream from the run
/// seed and the epoch, draws the batches, and for each one zeroes the gradients, calls
/// `step(images, indices)` for the batch's loss, back-propagates it (unless the step did its own
/// backward passes, [`BatchLoss::backpropagated`]), steps the optimizer once and reports
/// progress. A non-finite loss stops the epoch before the optimizer step. With `sync` (a rank of
/// a data-parallel run) the gradients are summed over the ranks before the step and rank 0's
/// BatchNorm statistics broadcast after it.
#[allow(clippy::too_many_arguments)] // the epoch's settings, each used once
pub(crate) fn run_epoch(
    epoch: usize,
    epochs: usize,
    seed: u64,
    images: &Tensor,
    batch_size: i64,
    opt: &mut adam::Adam,
    sync: Option<&StepSync>,
    mut step: impl FnMut(&Tensor, &Tensor) -> Result<BatchLoss>,
    penalty_weight: f64,
) -> Result<EpochStats> {
    rng::reseed(seed, "train", epoch as u64);
    let device = images.device();
    let batches = loader::shuffled_batches(images.size()[0], batch_size, true, device);
    if batches.is_empty() {
        return Err(crate::Error::config(
            "train.batch_size",
            format!(
                "{batch_size} is larger than the {} training images",
                images.size()[0]
            ),
        ));
    }
    let pb = progress::bar(batches.len() as u64, &format!("epoch {epoch}/{epochs}"));
    let start = Instant::now();
    let (mut total, mut contrastive, mut penalty, mut seen) = (0.0, 0.0, 0.0, 0i64);
    for (i, idx) in batches.iter().enumerate() {
        let x = images.index_select(0, idx);
        opt.zero_grad();
        let loss = step(&x, idx)?;
        let b = idx.size()[0];
        let parts = Vec::<f64>::try_from(
            Tensor::stack(&[loss.total.detach(), loss.contrastive, loss.penalty], 0)
                .to_kind(tch::Kind::Double),
        )?;
        if !parts[0].is_finite() {
            pb.finish_and_clear();
            return Err(crate::Error::NonFinite {
                what: "the training loss".into(),
                at: format!("epoch {epoch}, batch {} of {}", i + 1, batches.len()),
                value: parts[0],
            });
        }
        if !loss.backpropagated {
            if let Some(sync) = sync {
                sync.before_backward()?;
            }
            loss.total.f_backward()?;
        }
        if let Some(sync) = sync {
            sync.reduce_gradients(!loss.backpropagated)?;
        }
        opt.step();
        if let Some(sync) = sync {
            sync.broadcast_buffers()?;
        }
        total += parts[0] * b as f64;
        contrastive += parts[1] * b as f64;
        penalty += parts[2] * b as f64;
        seen += b;
        let secs = start.elapsed().as_secs_f64();
        pb.set_message(format!(
            "loss {:.4}  {:.0} img/s",
            total / seen as f64,
            seen as f64 / secs
        ));
        pb.inc(1);
    }
    pb.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let n = seen as f64;
    Ok(EpochStats {
        epoch,
        loss: total / n,
        contrastive: contrastive / n,
        penalty: penalty / n,
        penalty_weight,
        lr: opt.lr,
        images_per_sec: n / seconds,
        seconds,
    })
}

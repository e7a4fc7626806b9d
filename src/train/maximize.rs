//! The maximize step: learn a soft partition of the training set into environments, maximizing
//! the environments' contrastive loss and IRM penalty under a balance constraint. Offline on
//! fixed features (`utils.auto_split_offline` of the reference, and its MixUp form) or online,
//! re-extracting features from the model each batch (`utils.auto_split`).
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::adam::Adam;
use crate::config::{IrmMode, MaximizeConfig};
use crate::loss::{
    balance_constraint, info_nce_column_index, info_nce_logits_with_index, irm_penalty,
    irm_penalty_with_loss, soft_contrastive_loss, soft_contrastive_v2_fast, soft_mixup_loss,
    SoftMode,
};
use crate::{Error, Result};

/// One epoch of the maximize step: the means over the epoch's batches of each batch's values,
/// each batch's value taken before that batch's Adam step (as the reference logs them).
///
/// Sign convention: `contrastive` and `penalty` are reported as the losses themselves (positive);
/// the reference logs them negated (`Cont_Risk`, `Inv_Risk`). `total` is the minimized risk,
/// `−(contrastive + irm_weight·penalty) + constraint`, the reference's `Loss`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpochRisk {
    /// The risk Adam minimizes, `−(contrastive + irm_weight·penalty) + constraint`.
    pub total: f64,
    /// Mean over environments of the soft contrastive loss.
    pub contrastive: f64,
    /// Mean over environments of the IRM penalty (`IrmMode::V1`), or the unbiased variance of the
    /// environments' contrastive losses (`IrmMode::V2`).
    pub penalty: f64,
    /// The balance constraint (0 without `constrain`).
    pub constraint: f64,
}

/// What [`maximize_offline`] found.
#[derive(Debug)]
pub struct MaximizeResult {
    /// `N × E` logits (not probabilities): the partition after the epoch with the lowest mean risk.
    pub partition: Tensor,
    /// `N × E` logits after the last epoch run. The reference optimises the tensor it is given in
    /// place, so without `random_init` a caller that kept a reference to the previous partition
    /// (`retain_group`: the last entry of `updated_split_all`) sees it become this tensor.
    pub last_partition: Tensor,
    /// One entry per epoch run, in order.
    pub risks: Vec<EpochRisk>,
    /// 0-based epoch whose end state is `partition`.
    pub best_epoch: usize,
    /// Samples per environment under the hard assignment `argmax` of `partition` (length `E`).
    pub env_sizes: Vec<i64>,
}

/// The offline maximize step with a fresh random batch order each epoch
/// (`Tensor::randperm` on the features' device, i.e. tch's global RNG: seed it for a reproducible
/// run). See [`maximize_offline_with_order`].
pub fn maximize_offline(
    z1: &Tensor,
    z2: &Tensor,
    init: &Tensor,
    cfg: &MaximizeConfig,
    temperature: f64,
    on_epoch: impl FnMut(usize, &EpochRisk),
) -> Result<MaximizeResult> {
    let n = z1.size().first().copied().unwrap_or(0);
    let device = z1.device();
    maximize_offline_with_order(
        z1,
        z2,
        None,
        init,
        cfg,
        temperature,
        |_| Ok(Tensor::f_randperm(n, (Kind::Int64, device))?),
        on_epoch,
    )
}

/// The batch orders of the reference's shuffling `DataLoader` in `auto_split_offline`
/// (`DataLoader(dataset, batch_size=3096, shuffle=True, num_workers=4)`, no generator) for a run
/// that calls `torch.manual_seed(seed)` right before `auto_split_offline`.
///
/// What torch 2.11 does (`torch/utils/data/dataloader.py`, `sampler.py`), nothing else in
/// `auto_split_offline` drawing from the global CPU generator: each epoch, creating the loader's
/// iterator draws a base seed for the workers, `torch.empty((), dtype=torch.int64).random_()`;
/// the first batch then makes the `RandomSampler` draw its own seed the same way and permute with
/// `torch.randperm(n, generator=torch.Generator().manual_seed(that_seed))`. The number of workers
/// does not enter (the workers only receive the base seed). Here the `2·epochs` draws are taken up
/// front from the global generator after `tch::manual_seed(seed)`, and epoch `t`'s permutation is
/// `Tensor::randperm(n)` after `tch::manual_seed(sampler_seed[t])` (a fresh `Generator` and the
/// reseeded default CPU generator are the same Mersenne twister, so the same permutation).
/// Checked against the orders the reference recorded in `tests/fixtures/maximize_long_*`.
///
/// Reseeds tch's global generators (CPU and CUDA) on [`ReferenceShuffle::new`] and on every
/// [`ReferenceShuffle::order`].
#[derive(Debug, Clone)]
pub struct ReferenceShuffle {
    n: i64,
    sampler_seeds: Vec<i64>,
}

impl ReferenceShuffle {
    /// The orders of the first `epochs` epochs of `n` samples after `torch.manual_seed(seed)`.
    pub fn new(seed: u64, n: i64, epochs: usize) -> Result<ReferenceShuffle> {
        tch::manual_seed(seed as i64); // torch.manual_seed takes the same 64 bits
        let draw = || -> Result<i64> {
            let mut t = Tensor::f_empty([], (Kind::Int64, Device::Cpu))?;
            let _ = t.f_random_()?;
            Ok(t.f_int64_value(&[])?)
        };
        let mut sampler_seeds = Vec::with_capacity(epochs);
        for _ in 0..epochs {
            let _workers_base_seed = draw()?;
            sampler_seeds.push(draw()?);
        }
        Ok(ReferenceShuffle { n, sampler_seeds })
    }

    /// Epoch `epoch`'s permutation of `0..n` (int64, CPU).
    pub fn order(&self, epoch: usize) -> Result<Tensor> {
        let seed = self.sampler_seeds.get(epoch).ok_or_else(|| {
            Error::Shape(format!(
                "reference shuffle: drawn for {} epochs, epoch {epoch} asked",
                self.sampler_seeds.len()
            ))
        })?;
        tch::manual_seed(*seed);
        Ok(Tensor::f_randperm(self.n, (Kind::Int64, Device::Cpu))?)
    }
}

/// The offline maximize step (`auto_split_offline`) with the batch order of each epoch given by
/// `order(epoch)`: a permutation of `0..N` (int64, any device) cut into consecutive batches of
/// `cfg.batch_size`, the last one possibly shorter (the reference's shuffling `DataLoader`,
/// `drop_last=False`). The order matters even with a single batch: the IRM penalty's scale vector
/// ties column `k` of every row together, and which sample sits in column `k` depends on the row
/// order, so the penalty is not invariant under a permutation of the batch.
///
/// Inputs: `z1`, `z2`: `N × d` fixed features of the two views (no gradient flows into them);
/// `init`: `N × E` initial logits, `E = cfg.env_num`, copied (the caller's tensor is not changed);
/// `temperature`: τ of the contrastive loss (`cfg.temperature` resolved by the caller).
///
/// Per epoch `t` (0-based), with learning rate `cfg.lr × cfg.lr_gamma^{#milestones ≤ t}`, per batch
/// of indices `I` (`|I| = B`):
/// 1. `p = softmax(P[I])` (`B × E`); `logits` = [`info_nce_logits`](crate::loss::info_nce_logits)
///    of `z1[I], z2[I]` at τ = 1 (`2B × (2B − 1)`, computed once per batch);
/// 2. for each environment `e`: `w = p[:, e]` gathered by the sample index of each logit column;
///    `cont_e` = [`soft_contrastive_loss`] v2 of `logits / τ` with `w`; with `IrmMode::V1`,
///    `pen_e` = [`irm_penalty`] of the same loss on `logits / irm_temp`;
/// 3. `risk = −(mean_e cont_e + irm_weight · mean_e pen_e) + constraint`, where `IrmMode::V2`
///    replaces `mean_e pen_e` by the unbiased variance of the `cont_e`, and the constraint is
///    [`balance_constraint`]`(p, constrain_relax, nonorm)` when `cfg.constrain`, else 0;
/// 4. one Adam step (no weight decay) on `P` to minimize `risk`.
///
/// After the epoch: if its mean risk is below the lowest so far (initially 1e5) the current `P`
/// becomes the best (epoch 0 always sets it). As in the reference, that is `P` after the epoch's
/// last Adam step, while the epoch's risks were each measured before a step; the loop ends after epoch `t` when
/// `t > cfg.patience_after && epochs_without_improvement >= cfg.patience || t == cfg.max_epoch`.
/// `on_epoch(t, risk)` is called after every epoch.
///
/// Not read here (the caller's business): `cfg.temperature` (pass it resolved as `temperature`),
/// `cfg.offline`, `cfg.random_init` (build `init` accordingly) and `cfg.seed`.
///
/// Departures from the reference, none of which change a run it completes: a trailing batch of one
/// sample is skipped (the reference's loss is NaN there: no negatives); the reference also stops at
/// epoch 99 whatever `max_epoch` says (and then returns `None`).
///
/// Rounding: the step is computed with the reference's operations in the reference's order (the
/// contrastive loss and the penalty's forward separately even when `τ = irm_temp`; the soft
/// contrastive loss as the reference writes it; Adam rounded as `torch.optim.Adam`), because the
/// gradients with respect to the partition are of the order of Adam's `eps`, where last-bit
/// differences in a gradient become ~1e-3 differences in the logits after one step. Earlier
/// versions read the contrastive loss off the penalty's forward when `τ = irm_temp`, factored the
/// row maximum out of the loss's exponentials and rounded Adam's update differently: all equal
/// formulas, but on a 61-epoch run at N = 1500 (one batch per epoch, the reference's batch order
/// replayed) they ended 2.0e-4 in softmax probability from the reference, against 9.3e-5 between
/// two runs of the reference itself on 1 and 2 threads. The run's batch order matters far more:
/// the reference's own result moves by up to 8.7e-3 with the order alone (see
/// `tests/maximize_parity.rs`).
///
/// With `lam` (one λ per sample: `z1` are then the projections of MixUp-ed first views), the
/// offline MixUp step (`utils_mixup.auto_split_offline_mixuup`): per environment the soft MixUp
/// loss ([`soft_mixup_loss`], offline form) and its IRM penalty; the reference's loader batch for
/// it is 2048 (`maximize.batch_size`).
#[allow(clippy::too_many_arguments)] // the step's inputs, settings, order and observer
pub fn maximize_offline_with_order(
    z1: &Tensor,
    z2: &Tensor,
    lam: Option<&Tensor>,
    init: &Tensor,
    cfg: &MaximizeConfig,
    temperature: f64,
    order: impl FnMut(usize) -> Result<Tensor>,
    on_epoch: impl FnMut(usize, &EpochRisk),
) -> Result<MaximizeResult> {
    let (n, _) = check_inputs(z1, z2, init, cfg)?;
    let lam = match lam {
        Some(lam) if lam.size() != [n] => {
            return Err(Error::Shape(format!(
                "maximize: lam must hold one λ per sample ({n}), found shape {:?}",
                lam.size()
            )))
        }
        Some(lam) => Some(lam.f_to_kind(Kind::Float)?.f_to_device(z1.device())?),
        None => None,
    };
    let (z1, z2) = (z1.f_detach()?, z2.f_detach()?);
    let features = |idx: &Tensor| {
        let mix = match &lam {
            Some(lam) => Some(Mix {
                lam: lam.f_index_select(0, idx)?,
                partner: None,
            }),
            None => None,
        };
        Ok(BatchFeatures {
            z1: z1.f_index_select(0, idx)?,
            z2: z2.f_index_select(0, idx)?,
            mix,
        })
    };
    maximize_core(
        n,
        z1.device(),
        init,
        cfg,
        temperature,
        order,
        false,
        features,
        on_epoch,
    )
}

/// The online maximize step (`utils.auto_split`): as [`maximize_offline`], but the two views'
/// features of each batch are computed afresh by `features(indices)` (the caller augments the
/// batch's images and runs the encoder in eval mode without gradients), and the last partial
/// batch of an epoch is dropped, as the reference's online loader does. `n`: training images.
pub fn maximize_online(
    n: i64,
    init: &Tensor,
    cfg: &MaximizeConfig,
    temperature: f64,
    device: Device,
    features: impl FnMut(&Tensor) -> Result<BatchFeatures>,
    on_epoch: impl FnMut(usize, &EpochRisk),
) -> Result<MaximizeResult> {
    let order = |_| Ok(Tensor::f_randperm(n, (Kind::Int64, device))?);
    maximize_online_with_order(n, init, cfg, temperature, device, order, features, on_epoch)
}

/// [`maximize_online`] with the batch order of each epoch given by `order(epoch)` (see
/// [`maximize_offline_with_order`]).
#[allow(clippy::too_many_arguments)]
pub fn maximize_online_with_order(
    n: i64,
    init: &Tensor,
    cfg: &MaximizeConfig,
    temperature: f64,
    device: Device,
    order: impl FnMut(usize) -> Result<Tensor>,
    features: impl FnMut(&Tensor) -> Result<BatchFeatures>,
    on_epoch: impl FnMut(usize, &EpochRisk),
) -> Result<MaximizeResult> {
    if init.size() != [n, cfg.env_num] {
        return Err(Error::Shape(format!(
            "maximize: the initial partition must be [{n}, {}], found {:?}",
            cfg.env_num,
            init.size()
        )));
    }
    if n < cfg.batch_size {
        return Err(Error::Shape(format!(
            "maximize: the online step drops the last partial batch, so it needs at least maximize.batch_size = {} images, found {n}",
            cfg.batch_size
        )));
    }
    maximize_core(
        n,
        device,
        init,
        cfg,
        temperature,
        order,
        true,
        features,
        on_epoch,
    )
}

/// One batch's features for the maximize step.
pub struct BatchFeatures {
    /// View 1's projections (MixUp-ed when `mix` is given), `B × d`.
    pub z1: Tensor,
    /// View 2's projections, `B × d`.
    pub z2: Tensor,
    /// How view 1 was mixed (`--mixup_max`), else `None`.
    pub mix: Option<Mix>,
}

/// MixUp of view 1 in a maximize batch: each row's λ (`B`) and, for the online step, each row's
/// partner within the batch (`B` int64; the offline loss does not read partners).
pub struct Mix {
    pub lam: Tensor,
    pub partner: Option<Tensor>,
}

impl BatchFeatures {
    /// Plain (un-mixed) views.
    pub fn plain(z1: Tensor, z2: Tensor) -> BatchFeatures {
        BatchFeatures { z1, z2, mix: None }
    }
}

/// The maximize step's state, one epoch at a time: what the reference's `auto_split_*` loop
/// holds (the partition logits `P` and their Adam, the learning rate, the lowest mean risk so
/// far and the `P` that had it, the epochs without improvement), so a caller (notebook 02) can
/// look at it between epochs. [`maximize_offline_with_order`] and the other entry points run it
/// to the end.
pub struct Maximizer {
    cfg: MaximizeConfig,
    temperature: f64,
    n: i64,
    e_num: i64,
    device: Device,
    drop_last: bool,
    p: Tensor,
    opt: Adam,
    lr: f64,
    low: f64,
    best: Tensor,
    best_epoch: usize,
    since_best: usize,
    risks: Vec<EpochRisk>,
    done: bool,
    /// (B, column index, flat sample index) of the InfoNCE layout for batch size B.
    index_cache: Option<(i64, Tensor, Tensor)>,
}

impl Maximizer {
    /// A maximize step over `n` samples from the `n × env_num` logits `init` (copied), on
    /// `device`; `temperature` is τ of the contrastive loss; `drop_last` drops a last partial
    /// batch (the online step's loader).
    pub fn new(
        n: i64,
        init: &Tensor,
        cfg: &MaximizeConfig,
        temperature: f64,
        device: Device,
        drop_last: bool,
    ) -> Result<Maximizer> {
        if init.size() != [n, cfg.env_num] {
            return Err(Error::Shape(format!(
                "maximize: the initial partition must be [{n}, {}], found {:?}",
                cfg.env_num,
                init.size()
            )));
        }
        let p = init
            .f_to_kind(Kind::Float)?
            .f_to_device(device)?
            .f_detach_copy()?
            .set_requires_grad(true);
        let opt = Adam::new(vec![("partition".into(), p.shallow_clone())], cfg.lr, 0.0);
        let best = p.f_detach_copy()?;
        Ok(Maximizer {
            cfg: cfg.clone(),
            temperature,
            n,
            e_num: cfg.env_num,
            device,
            drop_last,
            p,
            opt,
            lr: cfg.lr,
            low: 1e5,
            best,
            best_epoch: 0,
            since_best: 0,
            risks: Vec::new(),
            done: false,
            index_cache: None,
        })
    }

    /// Epochs run so far.
    pub fn epochs_run(&self) -> usize {
        self.risks.len()
    }

    /// The mean risk of every epoch run, in order.
    pub fn risks(&self) -> &[EpochRisk] {
        &self.risks
    }

    /// The learning rate the next epoch runs with.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// The partition logits now (`n × env_num`).
    pub fn current(&self) -> Tensor {
        self.p.detach()
    }

    /// Samples per environment of the current partition's hard assignment.
    pub fn env_sizes(&self) -> Result<Vec<i64>> {
        sizes(&self.p.detach(), self.e_num)
    }

    /// Whether the stop rule has ended the step: after epoch `max_epoch`, or past
    /// `patience_after` with `patience` epochs without a new lowest risk.
    pub fn done(&self) -> bool {
        self.done
    }

    /// Runs one epoch over the batches of `perm` (a permutation of `0..n`, cut into batches of
    /// `batch_size`), the features of each from `features(indices)`; returns its mean risk.
    pub fn run_epoch(
        &mut self,
        perm: &Tensor,
        mut features: impl FnMut(&Tensor) -> Result<BatchFeatures>,
    ) -> Result<EpochRisk> {
        let epoch = self.risks.len();
        if self.done {
            return Err(Error::Shape(format!(
                "maximize: the step ended after epoch {}",
                epoch.saturating_sub(1)
            )));
        }
        check_permutation(perm, self.n, epoch)?;
        let perm = perm.f_to_device(self.device)?;
        let (mut sums, mut batches) = ([0f64; 4], 0usize);
        for idx in perm.f_split(self.cfg.batch_size, 0)? {
            let b = idx.size()[0];
            if b < 2 || (self.drop_last && b < self.cfg.batch_size) {
                continue;
            }
            let f = features(&idx)?;
            let param = self.p.f_index_select(0, &idx)?.f_softmax(-1, Kind::Float)?; // B×E
            let (cont, inv) = match &f.mix {
                None => self.plain_terms(&f, &param, b)?,
                Some(mix) => self.mixup_terms(&f, mix, &param)?,
            };
            let constraint = if self.cfg.constrain {
                balance_constraint(&param, self.cfg.constrain_relax, self.cfg.nonorm)?
            } else {
                Tensor::f_zeros([], (Kind::Float, self.device))?
            };
            let risk = cont
                .f_add(&inv.f_mul_scalar(self.cfg.irm_weight)?)?
                .f_neg()?
                .f_add(&constraint)?;
            self.opt.zero_grad();
            risk.f_backward()?;
            self.opt.step();
            let values = Tensor::f_stack(&[&risk, &cont, &inv, &constraint], 0)?
                .f_detach()?
                .f_to_kind(Kind::Double)?
                .f_to_device(Device::Cpu)?;
            for (s, v) in sums.iter_mut().zip(Vec::<f64>::try_from(&values)?) {
                *s += v;
            }
            batches += 1;
        }
        if batches == 0 {
            return Err(Error::Shape(format!(
                "maximize: no batch of at least 2 samples in {} (batch_size {})",
                self.n, self.cfg.batch_size
            )));
        }
        let k = batches as f64;
        let risk = EpochRisk {
            total: sums[0] / k,
            contrastive: sums[1] / k,
            penalty: sums[2] / k,
            constraint: sums[3] / k,
        };
        self.risks.push(risk);

        // MultiStepLR, stepped once per epoch: the LR of the next epoch.
        for _ in self.cfg.lr_milestones.iter().filter(|&&m| m == epoch + 1) {
            self.lr *= self.cfg.lr_gamma;
        }
        self.opt.lr = self.lr;
        if epoch == 0 {
            self.best = self.p.f_detach_copy()?;
        }
        if risk.total < self.low {
            self.low = risk.total;
            self.best = self.p.f_detach_copy()?;
            self.best_epoch = epoch;
            self.since_best = 0;
        } else {
            self.since_best += 1;
        }
        // A NaN or infinite risk ends the step: the caller refuses it (`ipirm::check_finite`),
        // and the epochs after it would only repeat it.
        self.done = (epoch > self.cfg.patience_after && self.since_best >= self.cfg.patience)
            || epoch == self.cfg.max_epoch
            || !risk.total.is_finite();
        Ok(risk)
    }

    /// `auto_split_offline` / `auto_split`: per environment the soft InfoNCE of both views
    /// (weights gathered by each logit column's sample) and its IRM penalty, or their variance.
    fn plain_terms(
        &mut self,
        f: &BatchFeatures,
        param: &Tensor,
        b: i64,
    ) -> Result<(Tensor, Tensor)> {
        if self.index_cache.as_ref().map(|c| c.0) != Some(b) {
            let col = info_nce_column_index(b, self.device)?;
            let sample = col.f_remainder(b)?.f_view([-1])?;
            self.index_cache = Some((b, col, sample));
        }
        let (_, col, sample) = self
            .index_cache
            .as_ref()
            .expect("index cache was just filled");
        let (cfg, rows) = (&self.cfg, 2 * b);
        let logits = info_nce_logits_with_index(&f.z1, &f.z2, 1.0, col)?;
        let logits_cont = logits.f_div_scalar(self.temperature)?;
        // The fast form computes the contrastive loss once when it equals the penalty's own.
        let shared = !cfg.exact && self.temperature == cfg.irm_temp;
        let logits_pen = match cfg.irm_mode {
            IrmMode::V1 if !shared => Some(logits.f_div_scalar(cfg.irm_temp)?),
            _ => None,
        };
        let (mut conts, mut pens) = (Vec::new(), Vec::new());
        for env in 0..self.e_num {
            let w = param
                .f_select(1, env)?
                .f_index_select(0, sample)?
                .f_view([rows, rows - 1])?;
            let loss = |l: &Tensor| match cfg.exact {
                true => soft_contrastive_loss(l, &w, SoftMode::V2, cfg.nonorm),
                false => soft_contrastive_v2_fast(l, &w, cfg.nonorm),
            };
            match (cfg.irm_mode, &logits_pen) {
                (IrmMode::V1, None) => {
                    let (pen, cont) = irm_penalty_with_loss(&logits_cont, loss)?;
                    conts.push(cont);
                    pens.push(pen);
                }
                (IrmMode::V1, Some(lp)) => {
                    conts.push(loss(&logits_cont)?);
                    pens.push(irm_penalty(lp, loss)?);
                }
                (IrmMode::V2, _) => conts.push(loss(&logits_cont)?),
            }
        }
        let conts = Tensor::f_stack(&conts, 0)?;
        let inv = match cfg.irm_mode {
            IrmMode::V1 => Tensor::f_stack(&pens, 0)?.f_mean(None::<Kind>)?,
            IrmMode::V2 => conts.f_var(true)?,
        };
        Ok((conts.f_mean(None::<Kind>)?, inv))
    }

    /// `auto_split_offline_mixuup` / `auto_split_online_mixup`: logits `z̃1·z2ᵀ/τ` (B × B), per
    /// environment the soft MixUp loss ([`soft_mixup_loss`]) and the IRM penalty of the same loss
    /// through the scale vector at the same τ (the reference does not use `irm_temp` here).
    fn mixup_terms(
        &self,
        f: &BatchFeatures,
        mix: &Mix,
        param: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        if self.cfg.irm_mode != IrmMode::V1 {
            return Err(Error::config(
                "maximize.irm_mode",
                "the MixUp maximize step has only the IRMv1 penalty (v1), as the reference",
            ));
        }
        let logits = f.z1.f_mm(&f.z2.f_tr()?)?.f_div_scalar(self.temperature)?;
        let (mut conts, mut pens) = (Vec::new(), Vec::new());
        for env in 0..self.e_num {
            let w = param.f_select(1, env)?;
            let loss = |l: &Tensor| {
                soft_mixup_loss(l, &w, &mix.lam, mix.partner.as_ref(), self.cfg.nonorm)
            };
            conts.push(loss(&logits)?);
            pens.push(irm_penalty(&logits, loss)?);
        }
        Ok((
            Tensor::f_stack(&conts, 0)?.f_mean(None::<Kind>)?,
            Tensor::f_stack(&pens, 0)?.f_mean(None::<Kind>)?,
        ))
    }

    /// The result: the partition of the epoch with the lowest mean risk, the last one, the
    /// risks, the best epoch and its environment sizes.
    pub fn finish(self) -> Result<MaximizeResult> {
        let env_sizes = sizes(&self.best, self.e_num)?;
        Ok(MaximizeResult {
            partition: self.best,
            last_partition: self.p.f_detach_copy()?,
            risks: self.risks,
            best_epoch: self.best_epoch,
            env_sizes,
        })
    }
}

/// Samples per environment of the hard assignment `argmax` of `logits`.
fn sizes(logits: &Tensor, e_num: i64) -> Result<Vec<i64>> {
    Ok(Vec::<i64>::try_from(
        &logits
            .f_argmax(1, false)?
            .f_bincount::<Tensor>(None, e_num)?
            .f_to_device(Device::Cpu)?,
    )?)
}

/// The loop every form shares: per epoch, batches of `order(epoch)` (a permutation of `0..n`),
/// their features from `features(indices)`, the risk, an Adam step on the partition logits.
#[allow(clippy::too_many_arguments)]
fn maximize_core(
    n: i64,
    device: Device,
    init: &Tensor,
    cfg: &MaximizeConfig,
    temperature: f64,
    mut order: impl FnMut(usize) -> Result<Tensor>,
    drop_last: bool,
    mut features: impl FnMut(&Tensor) -> Result<BatchFeatures>,
    mut on_epoch: impl FnMut(usize, &EpochRisk),
) -> Result<MaximizeResult> {
    let mut m = Maximizer::new(n, init, cfg, temperature, device, drop_last)?;
    while !m.done() {
        let epoch = m.epochs_run();
        let risk = m.run_epoch(&order(epoch)?, &mut features)?;
        on_epoch(epoch, &risk);
    }
    m.finish()
}

fn check_inputs(
    z1: &Tensor,
    z2: &Tensor,
    init: &Tensor,
    cfg: &MaximizeConfig,
) -> Result<(i64, i64)> {
    let (s1, s2, si) = (z1.size(), z2.size(), init.size());
    if s1.len() != 2 || s1 != s2 {
        return Err(Error::Shape(format!(
            "maximize: z1 and z2 must both be N×d, found {s1:?} and {s2:?}"
        )));
    }
    let n = s1[0];
    if n < 2 {
        return Err(Error::Shape(format!(
            "maximize: needs at least 2 samples, found N = {n}"
        )));
    }
    if si.len() != 2 || si[0] != n || si[1] != cfg.env_num {
        return Err(Error::Shape(format!(
            "maximize: the initial partition must be N×E = [{n}, {}] (env_num), found {si:?}",
            cfg.env_num
        )));
    }
    if cfg.env_num < 1 {
        return Err(Error::Shape(format!(
            "maximize: env_num must be at least 1, found {}",
            cfg.env_num
        )));
    }
    if cfg.batch_size < 2 {
        return Err(Error::Shape(format!(
            "maximize: batch_size must be at least 2, found {}",
            cfg.batch_size
        )));
    }
    if z1.device() != z2.device() {
        return Err(Error::Shape(format!(
            "maximize: z1 is on {:?} but z2 on {:?}",
            z1.device(),
            z2.device()
        )));
    }
    Ok((n, si[1]))
}

fn check_permutation(perm: &Tensor, n: i64, epoch: usize) -> Result<()> {
    let ok = perm.size() == [n]
        && perm.f_kind()? == Kind::Int64
        && perm
            .f_sort(0, false)?
            .0
            .f_to_device(Device::Cpu)?
            .f_equal(&Tensor::f_arange(n, (Kind::Int64, Device::Cpu))?)?;
    if !ok {
        return Err(Error::Shape(format!(
            "maximize: the batch order of epoch {epoch} must be an int64 permutation of 0..{n}, found {:?} of shape {:?}",
            perm.f_kind()?,
            perm.size()
        )));
    }
    Ok(())
}

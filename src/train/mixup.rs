//! The MixUp minimize steps of `main_mixup.py`: the MixUp baseline (`train`, `--baseline`) and
//! IP-IRM's `--ours_mixup_mode full` with and without `--retain_group`
//! (`train_env_mixup_full_retaingp`, `train_env_mixup_full_noretaingp`).
//!
//! Unlike [`super::minimize`], these steps mix the *images* of view 1 before the encoder, and the
//! reference forwards several subsets of the batch separately (each environment's re-mixed view
//! 1; view 2 again for every retained partition). So each function takes the batch's two views
//! and a `forward` closure (images → L2-normalised projections, the model in train mode), and
//! calls it exactly as often, in the same order and on the same samples as the reference does:
//! BatchNorm's batch statistics and running statistics then match too. The random draws (λ and
//! the permutation of every MixUp) come from a [`MixupDraws`] source, in the reference's order:
//! [`BetaDraws`] in training, [`ReplayDraws`] to replay recorded ones.
//!
//! Environments: as in [`super::minimize`], the samples of the batch whose partition logits
//! have their argmax at `e`. An environment with fewer than 2 samples in the batch is skipped (no
//! draw, no forward, no loss); the reference never meets one with its batch sizes and fails on
//! it (the head's BatchNorm1d refuses a training batch of one image). [`super::minimize`]
//! differs here: it forwards the whole batch once, so a one-sample environment is the
//! reference's zero there.
//!
//! Quirks of the reference kept as they are:
//! - the MixUp loss reduces λ over the batch before weighting (see
//!   [`loss::mixup_cross_entropy`]);
//! - the IRM penalty is taken on the logits at `train.temperature`, not at `maximize.irm_temp`
//!   (`main.train_env` uses `irm_temp`; the MixUp steps do not read it);
//! - each environment re-mixes its samples' *unmixed* view 1 with fresh draws, while the global
//!   term uses the batch-wide MixUp;
//! - the whole batch's mixed view 1 (and, with `retain_group`, view 2) is forwarded even when
//!   `keep_cont` is off and its loss unused; here that forward runs without gradients (BatchNorm's
//!   running statistics still move, as in the reference). With `retain_group` and without
//!   `keep_cont` the reference stops with a NameError (`loss_original` is only defined with
//!   `keep_cont`); here the global term is then 0.
use tch::{Device, Kind, Tensor};

use super::minimize::MinimizeLoss;
use crate::config::Config;
use crate::loss;
use crate::{Error, Result};

/// A source of MixUp draws: `(λ, perm)` for a batch of `n` on `device` (λ: `n` float32 in
/// [0.5, 1]; perm: `n` int64, a permutation of `0..n`). Called once per MixUp, in the
/// reference's order.
pub trait MixupDraws {
    fn draw(&mut self, n: i64, device: Device) -> Result<(Tensor, Tensor)>;
}

/// Draws from tch's global generator with [`loss::draw_mixup`] (training: the epoch loop seeds
/// that generator from the run's seed and the epoch).
pub struct BetaDraws {
    /// α of Beta(α, α) (`train.mixup_alpha`).
    pub alpha: f64,
}

impl MixupDraws for BetaDraws {
    fn draw(&mut self, n: i64, device: Device) -> Result<(Tensor, Tensor)> {
        loss::draw_mixup(n, self.alpha, device)
    }
}

/// Replays recorded draws in order (tests against the reference's recorded λ and permutations).
/// A request for a different batch size than the next recorded draw (which stays next), or past
/// the last one, is an error naming both.
pub struct ReplayDraws {
    draws: std::collections::VecDeque<(Tensor, Tensor)>,
    used: usize,
}

impl ReplayDraws {
    /// `draws`: `(λ, perm)` pairs in the order they will be asked for.
    pub fn new(draws: Vec<(Tensor, Tensor)>) -> ReplayDraws {
        ReplayDraws {
            draws: draws.into(),
            used: 0,
        }
    }

    /// Draws not asked for yet.
    pub fn remaining(&self) -> usize {
        self.draws.len()
    }
}

impl MixupDraws for ReplayDraws {
    fn draw(&mut self, n: i64, device: Device) -> Result<(Tensor, Tensor)> {
        let (lam, perm) = self.draws.front().ok_or_else(|| {
            Error::Shape(format!(
                "replayed MixUp draws: draw {} asked for, only {} recorded",
                self.used + 1,
                self.used
            ))
        })?;
        if lam.size() != [n] || perm.size() != [n] {
            return Err(Error::Shape(format!(
                "replayed MixUp draws: draw {} is for {:?} samples, asked for {n}",
                self.used + 1,
                lam.size()
            )));
        }
        let (lam, perm) = (lam.to_device(device), perm.to_device(device));
        self.draws.pop_front();
        self.used += 1;
        Ok((lam, perm))
    }
}

/// The MixUp baseline loss of one batch (`main_mixup.train`): draw `(λ, perm)` for the batch,
/// `z1 = forward(mixup(x1, λ, perm))`, `z2 = forward(x2)` (in that order),
/// loss = [`loss::mixup_contrastive_loss`]`(z1, z2, λ, perm, τ)`, a 0-dim tensor to back-propagate.
///
/// `x1`, `x2`: the batch's two augmented views (`B × …`).
pub fn mixup_baseline_loss(
    x1: &Tensor,
    x2: &Tensor,
    temperature: f64,
    mut forward: impl FnMut(&Tensor) -> Result<Tensor>,
    draws: &mut impl MixupDraws,
) -> Result<Tensor> {
    let (lam, perm) = draws.draw(batch_size(x1, x2)?, x1.device())?;
    let z1 = forward(&loss::mixup(x1, &lam, &perm)?)?;
    let z2 = forward(x2)?;
    loss::mixup_contrastive_loss(&z1, &z2, &lam, &perm, temperature)
}

fn batch_size(x1: &Tensor, x2: &Tensor) -> Result<i64> {
    let (s1, s2) = (x1.size(), x2.size());
    if s1.is_empty() || s1 != s2 || s1[0] < 2 {
        return Err(Error::Shape(format!(
            "MixUp step: the two views must have one shape B × … with B ≥ 2, found {s1:?} and {s2:?}"
        )));
    }
    Ok(s1[0])
}

/// The environments' MixUp losses and penalties of one partition: for each environment e with
/// at least 2 samples, `sel` its samples, a fresh draw for them, `z1e = forward(mixup(x1[sel]))`,
/// logits `z1e · z2[sel]ᵀ / τ`, loss [`loss::mixup_cross_entropy`] and its IRM penalty (through
/// the scale vector). Returns `(losses, penalties, skipped)`.
#[allow(clippy::too_many_arguments)] // the batch, the partition, and how to forward and draw
fn environments(
    x1: &Tensor,
    z2: &Tensor,
    idx: &Tensor,
    partition: &Tensor,
    cfg: &Config,
    forward: &mut impl FnMut(&Tensor) -> Result<Tensor>,
    draws: &mut impl MixupDraws,
) -> Result<(Vec<Tensor>, Vec<Tensor>, usize)> {
    let tau = cfg.train.temperature;
    let assign = partition.f_index_select(0, idx)?.f_argmax(1, false)?;
    let (mut losses, mut penalties, mut skipped) = (Vec::new(), Vec::new(), 0);
    for e in 0..cfg.maximize.env_num {
        let sel = assign.f_eq(e)?.f_nonzero()?.f_squeeze_dim(1)?;
        let n = sel.size()[0];
        if n < 2 {
            skipped += 1;
            continue;
        }
        let (lam, perm) = draws.draw(n, x1.device())?;
        let z1e = forward(&loss::mixup(&x1.f_index_select(0, &sel)?, &lam, &perm)?)?;
        let logits = loss::mixup_logits(&z1e, &z2.f_index_select(0, &sel)?, tau)?;
        let (penalty, cont) =
            loss::irm_penalty_with_loss(&logits, |l| loss::mixup_cross_entropy(l, &lam, &perm))?;
        losses.push(cont);
        penalties.push(penalty);
    }
    Ok((losses, penalties, skipped))
}

fn mean_or_zero(v: &[Tensor], device: Device) -> Tensor {
    if v.is_empty() {
        Tensor::zeros([], (Kind::Float, device))
    } else {
        Tensor::stack(v, 0).mean(None::<Kind>)
    }
}

/// `(cont + pw · penalty) / pw` when pw > 1, else unscaled (the reference's rescaling).
fn weigh(cont: &Tensor, penalty: &Tensor, penalty_weight: f64) -> Tensor {
    let total = cont + penalty * penalty_weight;
    if penalty_weight > 1.0 {
        total / penalty_weight
    } else {
        total
    }
}

/// The batch-wide MixUp and its two forwards, first in both IP-IRM steps: one draw for the
/// batch, `forward(mixup(x1))` then `forward(x2)`. With `keep_cont`, returns `(loss, z2)`, the
/// MixUp loss of the whole batch and view 2's projections; without, both forwards run without
/// gradients (their loss is unused) and the loss is `None`.
fn global_term(
    x1: &Tensor,
    x2: &Tensor,
    cfg: &Config,
    forward: &mut impl FnMut(&Tensor) -> Result<Tensor>,
    draws: &mut impl MixupDraws,
) -> Result<(Option<Tensor>, Tensor)> {
    let (lam, perm) = draws.draw(batch_size(x1, x2)?, x1.device())?;
    let mixed = loss::mixup(x1, &lam, &perm)?;
    if cfg.ipirm.keep_cont {
        let z1 = forward(&mixed)?;
        let z2 = forward(x2)?;
        let l = loss::mixup_contrastive_loss(&z1, &z2, &lam, &perm, cfg.train.temperature)?;
        Ok((Some(l), z2))
    } else {
        let _ = tch::no_grad(|| forward(&mixed))?;
        Ok((None, forward(x2)?))
    }
}

/// One batch of `train_env_mixup_full_noretaingp` (IP-IRM MixUp, the latest partition only):
/// the whole loss, back-propagated once by the caller.
///
/// Order: the batch-wide MixUp draw, `z1 = forward(mixup(x1))`, `z2 = forward(x2)`; then for
/// each environment (its samples `sel`, at least 2; view 2 is the batch-wide `z2[sel]`) a fresh
/// draw and a forward. `contrastive = mean_e(env loss)` (+ the batch-wide MixUp loss with
/// `keep_cont`), `penalty = mean_e(env penalty)`, `total = contrastive + pw · penalty`, divided by
/// pw when pw > 1. Without `keep_cont` the first forward is still made (without gradients).
///
/// `x1`, `x2`: the two views (`B × …`); `idx`: the `B` int64 indices of the batch in the training
/// set; `partition`: `N × E` logits.
#[allow(clippy::too_many_arguments)] // the batch, the partition, the settings, forward and draws
pub fn mixup_ipirm_loss(
    x1: &Tensor,
    x2: &Tensor,
    idx: &Tensor,
    partition: &Tensor,
    cfg: &Config,
    penalty_weight: f64,
    mut forward: impl FnMut(&Tensor) -> Result<Tensor>,
    draws: &mut impl MixupDraws,
) -> Result<MinimizeLoss> {
    let (global, z2) = global_term(x1, x2, cfg, &mut forward, draws)?;
    let (losses, penalties, skipped_envs) =
        environments(x1, &z2, idx, partition, cfg, &mut forward, draws)?;
    // Not `+=`: tch's assign operators work in place, which autograd refuses here.
    let contrastive = match global {
        Some(g) => mean_or_zero(&losses, x1.device()) + g,
        None => mean_or_zero(&losses, x1.device()),
    };
    let penalty = mean_or_zero(&penalties, x1.device());
    Ok(MinimizeLoss {
        total: weigh(&contrastive, &penalty, penalty_weight),
        contrastive,
        penalty,
        penalty_weight,
        skipped_envs,
        envs: Vec::new(),
    })
}

/// What [`mixup_ipirm_retain_backward`] back-propagated (all detached).
pub struct MixupRetainLoss {
    /// The batch-wide MixUp loss (`keep_cont`; 0 without), back-propagated first.
    pub global: Tensor,
    /// Each kept partition's loss in order: `total` is what was back-propagated for it,
    /// `(mean env loss + pw · mean env penalty)`, divided by pw when pw > 1.
    pub partitions: Vec<MinimizeLoss>,
    pub penalty_weight: f64,
}

impl MixupRetainLoss {
    /// The reference's reported loss: `global + mean over partitions of their total` (0-dim,
    /// float64).
    pub fn total(&self) -> Tensor {
        self.global_plus_mean(|p| &p.total)
    }

    /// `global + mean over partitions of their mean env loss` (float64).
    pub fn contrastive(&self) -> Tensor {
        self.global_plus_mean(|p| &p.contrastive)
    }

    /// Mean over partitions of their mean env penalty, unweighted (float64).
    pub fn penalty(&self) -> Tensor {
        self.mean(|p| &p.penalty)
    }

    /// Environments skipped over all partitions.
    pub fn skipped_envs(&self) -> usize {
        self.partitions.iter().map(|p| p.skipped_envs).sum()
    }

    fn mean(&self, part: impl Fn(&MinimizeLoss) -> &Tensor) -> Tensor {
        let v: Vec<Tensor> = self
            .partitions
            .iter()
            .map(|p| part(p).to_kind(Kind::Double))
            .collect();
        match v.is_empty() {
            true => Tensor::zeros([], (Kind::Double, self.global.device())),
            false => Tensor::stack(&v, 0).mean(None::<Kind>),
        }
    }

    fn global_plus_mean(&self, part: impl Fn(&MinimizeLoss) -> &Tensor) -> Tensor {
        self.global.to_kind(Kind::Double) + self.mean(part)
    }
}

/// One batch of `train_env_mixup_full_retaingp` (IP-IRM MixUp over every kept partition), with
/// its backward passes: the caller zeroes the gradients before and takes ONE optimizer step
/// after.
///
/// Order: the batch-wide MixUp draw, `forward(mixup(x1))`, `forward(x2)`, and with `keep_cont`
/// the backward of their MixUp loss. Then for each partition in order: a fresh
/// `z2 = forward(x2)`, its environments (view 2 is this `z2[sel]`), and the backward of
/// `loss_env = mean_e(env loss) + pw · mean_e(env penalty)` (÷ pw when pw > 1); a
/// partition whose environments were all skipped back-propagates nothing. Gradients accumulate
/// over the backward passes. Arguments as [`mixup_ipirm_loss`], with every kept partition.
#[allow(clippy::too_many_arguments)] // the batch, the partitions, the settings, forward and draws
pub fn mixup_ipirm_retain_backward(
    x1: &Tensor,
    x2: &Tensor,
    idx: &Tensor,
    partitions: &[Tensor],
    cfg: &Config,
    penalty_weight: f64,
    mut forward: impl FnMut(&Tensor) -> Result<Tensor>,
    draws: &mut impl MixupDraws,
) -> Result<MixupRetainLoss> {
    let device = x1.device();
    let (global, _) = global_term(x1, x2, cfg, &mut forward, draws)?;
    let global = match global {
        Some(g) => {
            g.f_backward()?;
            g.detach()
        }
        None => Tensor::zeros([], (Kind::Float, device)),
    };
    let mut parts = Vec::with_capacity(partitions.len());
    for partition in partitions {
        let z2 = forward(x2)?;
        let (losses, penalties, skipped_envs) =
            environments(x1, &z2, idx, partition, cfg, &mut forward, draws)?;
        let contrastive = mean_or_zero(&losses, device);
        let penalty = mean_or_zero(&penalties, device);
        let total = weigh(&contrastive, &penalty, penalty_weight);
        if !losses.is_empty() {
            total.f_backward()?;
        }
        parts.push(MinimizeLoss {
            total: total.detach(),
            contrastive: contrastive.detach(),
            penalty: penalty.detach(),
            penalty_weight,
            skipped_envs,
            envs: Vec::new(),
        });
    }
    Ok(MixupRetainLoss {
        global,
        partitions: parts,
        penalty_weight,
    })
}

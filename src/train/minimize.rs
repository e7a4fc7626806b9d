//! The IP-IRM minimize step (the reference's `train_env`): the contrastive loss of every
//! environment of every kept partition plus the IRM penalty of each.
use tch::{Kind, Tensor};

use crate::config::{Config, IpirmConfig};
use crate::loss;
use crate::Result;

/// The parts of one minimize-step loss, for reporting and tests.
pub struct MinimizeLoss {
    /// What is back-propagated: `(cont + pw · penalty) / max(pw, 1)` when pw > 1, else unscaled.
    pub total: Tensor,
    /// Mean of the environments' contrastive losses (+ the whole batch's InfoNCE with `keep_cont`).
    pub contrastive: Tensor,
    /// Mean of the environments' IRM penalties (0 when every environment is empty).
    pub penalty: Tensor,
    /// The penalty weight used.
    pub penalty_weight: f64,
    /// Environments with no sample in this batch, skipped.
    pub skipped_envs: usize,
    /// Each environment's terms (partition, environment, size, loss, penalty), for looking
    /// inside a batch (notebook 03; the MixUp steps leave it empty). The tensors are the
    /// graph's own: detach to keep them.
    pub envs: Vec<EnvTerm>,
}

/// One environment of one kept partition in a minimize step.
pub struct EnvTerm {
    /// Index of the partition among the kept ones.
    pub partition: usize,
    pub env: i64,
    /// Samples of the batch in the environment.
    pub size: i64,
    /// Its contrastive loss (0-dim).
    pub loss: Tensor,
    /// Its IRM penalty (0-dim).
    pub penalty: Tensor,
}

/// The penalty weight at (1-based) `epoch`, as the reference's `train_env` picks it:
/// `increasing_weight` → a linear ramp `penalty_weight · epoch / epochs` (the reference calls a
/// helper its repository does not define; this ramp is our reading of its name);
/// else `penalty_iters < 200` → `penalty_weight` from epoch `penalty_iters` on, 0 before;
/// else (`penalty_iters ≥ 200`, a quirk kept as is) → always `penalty_weight`.
pub fn penalty_weight(cfg: &IpirmConfig, epoch: usize, epochs: usize) -> f64 {
    if cfg.increasing_weight {
        cfg.penalty_weight * epoch as f64 / epochs.max(1) as f64
    } else if cfg.penalty_iters < 200 {
        if epoch >= cfg.penalty_iters {
            cfg.penalty_weight
        } else {
            0.0
        }
    } else {
        cfg.penalty_weight
    }
}

/// The minimize-step loss of one batch.
///
/// `z1`, `z2`: B×d L2-normalised projections of the two views; `idx`: B int64 indices of the
/// batch's images in the training set; `partitions`: the kept partitions, each N×E logits (hard
/// assignment = argmax). For each partition and environment e, the samples assigned to e give
/// InfoNCE logits at τ = 1; env loss = CE(logits/τ, 0), env penalty = IRM penalty of
/// CE(logits/irm_temp · s, 0). An environment with one sample of the batch has 2 × 1 logits, so
/// its loss and penalty are 0, counted in the means as the reference counts them; an empty one
/// is skipped (the reference fails on it; here it must not produce NaN).
#[allow(clippy::assign_op_pattern)] // see the note on `contrastive`
pub fn minimize_loss(
    z1: &Tensor,
    z2: &Tensor,
    idx: &Tensor,
    partitions: &[Tensor],
    cfg: &Config,
    penalty_weight: f64,
) -> Result<MinimizeLoss> {
    let tau = cfg.train.temperature;
    let irm_temp = cfg.maximize.irm_temp;
    let env_num = cfg.maximize.env_num;
    let mut envs = Vec::new();
    let mut skipped_envs = 0;
    for (k, partition) in partitions.iter().enumerate() {
        let assign = partition.index_select(0, idx).argmax(1, false);
        for e in 0..env_num {
            let sel = assign.eq(e).nonzero().squeeze_dim(1);
            if sel.size()[0] == 0 {
                skipped_envs += 1;
                continue;
            }
            let (e1, e2) = (z1.index_select(0, &sel), z2.index_select(0, &sel));
            let logits = loss::info_nce_logits(&e1, &e2, 1.0)?;
            envs.push(EnvTerm {
                partition: k,
                env: e,
                size: sel.size()[0],
                loss: loss::cross_entropy_first(&(&logits / tau))?,
                penalty: loss::irm_penalty(&(&logits / irm_temp), loss::cross_entropy_first)?,
            });
        }
    }
    let env_losses: Vec<Tensor> = envs.iter().map(|t| t.loss.shallow_clone()).collect();
    let env_penalties: Vec<Tensor> = envs.iter().map(|t| t.penalty.shallow_clone()).collect();
    let zero = || Tensor::zeros([], (Kind::Float, z1.device()));
    let mean = |v: &[Tensor]| {
        if v.is_empty() {
            zero()
        } else {
            Tensor::stack(v, 0).mean(Kind::Float)
        }
    };
    let mut contrastive = mean(&env_losses);
    // Not `+=` (nor `/=` below): tch's assign operators work in place, which autograd refuses
    // on tensors the backward pass needs.
    if cfg.ipirm.keep_cont {
        contrastive = contrastive + loss::info_nce_loss(z1, z2, tau)?;
    }
    let penalty = mean(&env_penalties);
    let mut total = &contrastive + &penalty * penalty_weight;
    if penalty_weight > 1.0 {
        total = total / penalty_weight;
    }
    Ok(MinimizeLoss {
        total,
        contrastive,
        penalty,
        penalty_weight,
        skipped_envs,
        envs,
    })
}

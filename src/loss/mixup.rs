//! MixUp for contrastive learning (`utils_mixup.mixup` and the loss inside `main_mixup.train` and
//! each environment of `main_mixup.train_env_mixup_full_*`).
//!
//! View 1 of each sample is mixed with view 1 of another sample of the batch; the mixed view's
//! projection is then contrasted against every view-2 projection with two targets: its own
//! sample (weight λ) and the sample it was mixed with (weight 1 − λ).
use tch::{Device, Kind, Reduction, Tensor};

use super::{check_float, check_same_device};
use crate::{Error, Result};

/// `Err(Error::Shape)` unless `lam` is a float vector of `n` and `perm` an int64 vector of `n`,
/// both on `device`.
fn check_draws(lam: &Tensor, perm: &Tensor, n: i64, device: Device) -> Result<()> {
    let ls = check_float("MixUp λ", lam, 1)?;
    if ls[0] != n {
        return Err(Error::Shape(format!(
            "MixUp λ: expected one per sample ({n}), found shape {ls:?}"
        )));
    }
    let ps = perm.size();
    if ps != [n] || perm.f_kind()? != Kind::Int64 {
        return Err(Error::Shape(format!(
            "MixUp permutation: expected int64 of shape [{n}], found {:?} of shape {ps:?}",
            perm.f_kind()?
        )));
    }
    if lam.device() != device || perm.device() != device {
        return Err(Error::Shape(format!(
            "MixUp λ ({:?}) and permutation ({:?}) must be on the data's device {device:?}",
            lam.device(),
            perm.device()
        )));
    }
    Ok(())
}

/// The MixUp of a batch with given draws: `x̃ = λ ⊙ x + (1 − λ) ⊙ x[perm]`.
///
/// `x`: `N × …` (any number of trailing dimensions, floating point); `lam`: `N` floats, one per
/// sample, broadcast over the trailing dimensions; `perm`: `N` int64, a permutation of `0..N`
/// (sample `i` is mixed with sample `perm[i]`). The deterministic part of `utils_mixup.mixup`
/// with `share_lam=False`, computed with the same operations in the same order. Returns `N × …`.
pub fn mixup(x: &Tensor, lam: &Tensor, perm: &Tensor) -> Result<Tensor> {
    let size = x.size();
    if size.is_empty() {
        return Err(Error::Shape(
            "MixUp input: expected a batch (N × …), found a 0-dim tensor".into(),
        ));
    }
    check_float("MixUp input", x, size.len())?;
    check_draws(lam, perm, size[0], x.device())?;
    let mut shape = vec![-1i64];
    shape.resize(size.len(), 1);
    let l = lam.f_view(shape.as_slice())?;
    let other = x.f_index_select(0, perm)?;
    Ok(l.f_mul(x)?
        .f_add(&l.f_neg()?.f_add_scalar(1.0)?.f_mul(&other)?)?)
}

/// MixUp's random draws for a batch of `n`: `(λ, perm)`, `λ` float32 of `n` with
/// `λ_i = max(u_i, 1 − u_i)`, `u_i ~ Beta(α, α)` independently, and `perm` an int64 random
/// permutation of `0..n`, both on `device`.
///
/// Both come from tch's global generator (so [`crate::rng::reseed`] makes them reproducible), in
/// the reference's order: the permutation first (`torch.randperm`), then the Beta draws, which
/// use libtorch's Dirichlet sampler (`_sample_dirichlet` on `n × 2` concentrations `α`, first
/// column), the sampler `torch.distributions.Beta` itself uses (two Gamma(α) draws normalised).
/// On the CPU the same seed therefore gives exactly the reference's draws (a test checks this);
/// on CUDA they follow libtorch's CUDA generator.
pub fn draw_mixup(n: i64, alpha: f64, device: Device) -> Result<(Tensor, Tensor)> {
    if n < 1 {
        return Err(Error::Shape(format!(
            "MixUp draws: need at least one sample, found {n}"
        )));
    }
    if !(alpha.is_finite() && alpha > 0.0) {
        return Err(Error::Shape(format!(
            "MixUp draws: α must be a positive number, found {alpha}"
        )));
    }
    let perm = Tensor::f_randperm(n, (Kind::Int64, device))?;
    let u = Tensor::f_full([n, 2], alpha, (Kind::Float, device))?
        .f_internal_sample_dirichlet()?
        .f_select(1, 0)?;
    let lam = u.f_maximum(&u.f_neg()?.f_add_scalar(1.0)?)?;
    Ok((lam, perm))
}

/// MixUp contrastive logits: `z̃1 · z2ᵀ / τ`, `B × B` (row `i`: mixed view 1 of sample `i`
/// against view 2 of every sample). `z1`, `z2`: `B × d` (the reference feeds L2-normalised
/// projections).
pub fn mixup_logits(z1: &Tensor, z2: &Tensor, temperature: f64) -> Result<Tensor> {
    let s1 = check_float("MixUp z1", z1, 2)?;
    let s2 = check_float("MixUp z2", z2, 2)?;
    if s1 != s2 {
        return Err(Error::Shape(format!(
            "MixUp z1 and z2 must have one shape B×d, found {s1:?} and {s2:?}"
        )));
    }
    check_same_device("MixUp z1", z1, "MixUp z2", z2)?;
    Ok(z1.f_mm(&z2.f_tr()?)?.f_div_scalar(temperature)?)
}

/// The MixUp cross-entropy of `B × B` logits (the expression of `main_mixup.train`):
///
/// `mean_i( λ_i · CE(logits, arange(B)) + (1 − λ_i) · CE(logits, perm) )`
///
/// where each `CE` is PyTorch's `CrossEntropyLoss()`, already a **mean over the B rows** (a
/// scalar), and `λ` a vector of `B`. So this is `λ̄ · CE_own + (1 − λ̄) · CE_mixed` with `λ̄` the
/// batch mean of λ: each row is NOT weighted by its own λ_i. That is the reference's reduction,
/// kept as is (computed as it writes it: scale the vector, add, mean). A 0-dim result.
///
/// Takes the logits so that it can be the loss of [`irm_penalty`](super::irm_penalty), which
/// multiplies them by the scale vector first.
pub fn mixup_cross_entropy(logits: &Tensor, lam: &Tensor, perm: &Tensor) -> Result<Tensor> {
    let size = check_float("MixUp logits", logits, 2)?;
    if size[0] != size[1] || size[0] < 1 {
        return Err(Error::Shape(format!(
            "MixUp logits: expected a square B × B matrix with B ≥ 1, found {size:?}"
        )));
    }
    check_draws(lam, perm, size[0], logits.device())?;
    let own = Tensor::f_arange(size[0], (Kind::Int64, logits.device()))?;
    let ce = |target: &Tensor| {
        logits.f_cross_entropy_loss::<Tensor>(target, None, Reduction::Mean, -100, 0.0)
    };
    let (ce_own, ce_mixed) = (ce(&own)?, ce(perm)?);
    Ok(lam
        .f_mul(&ce_own)?
        .f_add(&lam.f_neg()?.f_add_scalar(1.0)?.f_mul(&ce_mixed)?)?
        .f_mean(None::<Kind>)?)
}

/// The MixUp contrastive loss: [`mixup_cross_entropy`] of [`mixup_logits`]`(z1, z2, τ)`.
/// `z1`: `B × d` projections of the mixed view 1 (`mixup(x1, λ, perm)`), `z2`: `B × d` of view 2.
pub fn mixup_contrastive_loss(
    z1: &Tensor,
    z2: &Tensor,
    lam: &Tensor,
    perm: &Tensor,
    temperature: f64,
) -> Result<Tensor> {
    mixup_cross_entropy(&mixup_logits(z1, z2, temperature)?, lam, perm)
}

//! The sample-weighted ("soft") contrastive loss of the maximize step.
use tch::{Kind, Reduction, Tensor};

use super::{check_float, check_same_device};
use crate::{Error, Result};

/// The two forms of the reference's `utils.soft_contrastive_loss` (`mode`); the reference's
/// maximize step always calls `V2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoftMode {
    /// Cross-entropy of the weighted logits `logits ⊙ weights`, target column 0, mean over rows.
    V1,
    /// Weighted softmax over the negatives, rows weighted by the positive's weight.
    V2,
}

/// The largest logit, and the largest spread between logits, for which [`soft_contrastive_loss`]
/// `V2` exponentiates the raw logits as the reference does (float32 `exp` overflows above ~88.7
/// and a ratio of exponentials underflows below e^-87; the rows' sums need some headroom).
pub const V2_RAW_EXP_MAX: f64 = 80.0;

/// Soft contrastive loss (`utils.soft_contrastive_loss`).
///
/// `logits`: `R × C`, column 0 the positive (the layout of
/// [`info_nce_logits`](super::info_nce_logits)); `weights`: `R × C`, the weight of the sample each
/// column belongs to (in the maximize step `w_rj = p_e(sample of column j)`, gathered with
/// [`info_nce_sample_index`](super::info_nce_sample_index)). Returns a 0-dim tensor.
///
/// `V2` (`C ≥ 2`): the negatives' weights are renormalised per row to sum to `C − 1`,
/// `w'_rj = (C − 1)·w_rj / Σ_{k≥1} w_rk` for `j ≥ 1`, and the positive's weight is 1;
/// `loss_r = −log(e^{l_r0} / (e^{l_r0} + Σ_{j≥1} w'_rj e^{l_rj}))`;
/// the result is `Σ_r w_r0·loss_r / Σ_r w_r0`, or `Σ_r w_r0·loss_r / R` with `nonorm`.
///
/// Rounding: while every logit is at most [`V2_RAW_EXP_MAX`], and they spread over no more than
/// that, the reference's own sequence of
/// operations is used (exponentiate the raw logits, build the renormalised weight matrix, divide
/// by the row sums, take the log, pick column 0), so the value and its gradients, first and second
/// order, round as the reference's (measured: the maximize step's gradients with respect to the
/// partition identical to the last bit, float32 on an x86-64 CPU). This matters in the maximize
/// step: those gradients are of the order of Adam's `eps` (1e-8), where Adam's step
/// `m/(√v + eps)` turns last-bit differences (float32 rounding of a differently ordered but equal
/// formula: 2e-10 on gradients of at most 6e-6, N = 1500) into logit differences of up to 5e-3
/// after a single step.
/// Above that bound (a temperature below ~0.0125 for unit features) the reference overflows to
/// inf/NaN, and where the logits spread over more than the bound (a temperature below ~0.025) a
/// positive's share of its row can round to 0 in float32 and its log to −inf (an underflow that
/// depends on the draw); this function then factors the row maximum out of the exponentials
/// instead (same value up to rounding, finite for any logits). The paper's temperatures (0.2,
/// 0.5) keep unit features' logits within ±5.
///
/// `V1`: `mean_r CE(l_r ⊙ w_r, target 0)`; `nonorm` is ignored (as in the reference). The
/// reference multiplies its `logits` argument *in place* (`logits *= weights`); this function does
/// not. The side effect never matters in the reference: its callers pass a fresh temporary
/// (`logits / temperature`, `logits_pen * scale`) that is not read again, and `V1` is never
/// selected by `main.py` anyway.
pub fn soft_contrastive_loss(
    logits: &Tensor,
    weights: &Tensor,
    mode: SoftMode,
    nonorm: bool,
) -> Result<Tensor> {
    let size = check_float("soft contrastive logits", logits, 2)?;
    let wsize = check_float("soft contrastive weights", weights, 2)?;
    if size != wsize {
        return Err(Error::Shape(format!(
            "soft contrastive loss: logits and weights must have one shape R×C, found {size:?} and {wsize:?}"
        )));
    }
    check_same_device("soft contrastive logits", logits, "weights", weights)?;
    let (rows, cols) = (size[0], size[1]);
    if rows < 1 {
        return Err(Error::Shape("soft contrastive loss: no rows".into()));
    }
    match mode {
        SoftMode::V1 => {
            let target = Tensor::f_zeros([rows], (Kind::Int64, logits.device()))?;
            Ok(logits.f_mul(weights)?.f_cross_entropy_loss::<Tensor>(
                &target,
                None,
                Reduction::Mean,
                -100,
                0.0,
            )?)
        }
        SoftMode::V2 => {
            if cols < 2 {
                return Err(Error::Shape(format!(
                    "soft contrastive loss v2: needs at least one negative column, found C = {cols}"
                )));
            }
            // Both read back at once: one wait for the device per call, as before the minimum.
            let (min, max) = logits.f_aminmax(None, false)?;
            let bounds =
                Vec::<f64>::try_from(Tensor::f_stack(&[max, min], 0)?.f_to_kind(Kind::Double)?)?;
            let (max, min) = (bounds[0], bounds[1]);
            if max <= V2_RAW_EXP_MAX && max - min <= V2_RAW_EXP_MAX {
                return soft_contrastive_v2_as_reference(logits, weights, nonorm);
            }
            soft_contrastive_v2_fast(logits, weights, nonorm)
        }
    }
}

/// [`soft_contrastive_loss`] `V2` computed with the row maximum factored out of the
/// exponentials and only the sums it needs: the same value and gradients (no overflow for any
/// logits, and about half the work), rounded differently from the reference's operations, so a
/// maximize step's Adam (which magnifies last-bit differences of its tiny gradients) ends ~1e-4
/// in probability from the reference instead of bit for bit (`maximize.exact = false`).
pub fn soft_contrastive_v2_fast(logits: &Tensor, weights: &Tensor, nonorm: bool) -> Result<Tensor> {
    let (rows, cols) = (logits.size()[0], logits.size()[1]);
    let m = logits.f_amax(1, true)?.f_detach()?; // R×1, constant shift
    let e = logits.f_sub(&m)?.f_exp()?;
    let w_pos = weights.f_select(1, 0)?; // R
    let w_neg = weights.f_narrow(1, 1, cols - 1)?;
    let neg = w_neg
        .f_mul(&e.f_narrow(1, 1, cols - 1)?)?
        .f_sum_dim_intlist(1, false, None::<Kind>)?
        .f_div(&w_neg.f_sum_dim_intlist(1, false, None::<Kind>)?)?
        .f_mul_scalar((cols - 1) as f64)?;
    let l0 = logits.f_select(1, 0)?;
    let row_loss = m
        .f_squeeze_dim(1)?
        .f_sub(&l0)?
        .f_add(&e.f_select(1, 0)?.f_add(&neg)?.f_log()?)?;
    let total = row_loss.f_mul(&w_pos)?.f_sum(None::<Kind>)?;
    if nonorm {
        Ok(total.f_div_scalar(rows as f64)?)
    } else {
        Ok(total.f_div(&w_pos.f_sum(None::<Kind>)?)?)
    }
}

/// `V2` by the reference's own sequence of operations (see [`soft_contrastive_loss`]); `cols ≥ 2`.
/// The reference forms `weights_new * logits_exp` twice (numerator and row sum); it is formed once
/// here. The gradients are still the same bits: the numerator's gradient is exactly 0 outside
/// column 0 (only column 0's log is read), and column 0 of the weights is the constant 1.
fn soft_contrastive_v2_as_reference(
    logits: &Tensor,
    weights: &Tensor,
    nonorm: bool,
) -> Result<Tensor> {
    let (rows, cols) = (logits.size()[0], logits.size()[1]);
    let e = logits.f_exp()?;
    let w_pos = weights.f_narrow(1, 0, 1)?; // R×1
    let w_neg = weights.f_narrow(1, 1, cols - 1)?;
    let w_neg = w_neg
        .f_div(
            &w_neg
                .f_sum_dim_intlist(1, false, None::<Kind>)?
                .f_unsqueeze(1)?,
        )?
        .f_mul_scalar((cols - 1) as f64)?;
    let w = Tensor::f_cat(&[&w_pos.f_ones_like()?, &w_neg], 1)?;
    let we = w.f_mul(&e)?;
    let soft = we.f_div(
        &we.f_sum_dim_intlist(1, false, None::<Kind>)?
            .f_unsqueeze(1)?,
    )?;
    let target = Tensor::f_zeros([rows], (Kind::Int64, logits.device()))?;
    let row_loss = soft
        .f_log()?
        .f_nll_loss::<Tensor>(&target, None, Reduction::None, -100)?;
    let total = row_loss.f_mul(&w_pos.f_squeeze()?)?.f_sum(None::<Kind>)?;
    if nonorm {
        Ok(total.f_div_scalar(rows as f64)?)
    } else {
        Ok(total.f_div(&w_pos.f_sum(None::<Kind>)?)?)
    }
}

/// The soft MixUp contrastive loss of the maximize step, mode v2: `utils_mixup`'s
/// `soft_contrastive_loss_mixup_offline` (`aux` = `None`) and `_online` (`aux` = the batch's
/// MixUp partners), computed with the reference's sequence of operations.
///
/// `logits`: `B × B`, `z̃1·z2ᵀ/τ` (row `r`'s positive on the diagonal); `weights`: `B`, the
/// environment's probability of each sample (of each column); `lam`: `B`, each row's MixUp λ.
/// Column weights `W[r, j] = w_j`; the negatives' (off-diagonal) weights are renormalised per row
/// to sum to `B − 1`, the positive's weight is 1; `s = (W' ⊙ e^logits)` divided by its row sums.
/// - offline: `loss_r = λ_r · (−log s_rr)`, the result `Σ_r w_r·loss_r / Σ_r w_r` (or `/ B` with
///   `nonorm`); the partners are not read (the reference passes them and ignores them).
/// - online: `c = mean_r(λ_r·(−log s_rr) + (1 − λ_r)·(−log s_r,aux_r))`, a scalar, and the
///   result `Σ_r w_r·c / Σ_r w_r` (`= c`), or `Σ_r w_r·c / B` with `nonorm`: the reference
///   reduces before weighting, so the environment weights act only through the negatives.
///
/// Returns a 0-dim tensor.
pub fn soft_mixup_loss(
    logits: &Tensor,
    weights: &Tensor,
    lam: &Tensor,
    aux: Option<&Tensor>,
    nonorm: bool,
) -> Result<Tensor> {
    let size = check_float("soft MixUp logits", logits, 2)?;
    let b = size[0];
    if size[1] != b || b < 2 {
        return Err(Error::Shape(format!(
            "soft MixUp loss: logits must be B×B with B ≥ 2, found {size:?}"
        )));
    }
    for (name, t) in [("weights", weights), ("lam", lam)] {
        if t.size() != [b] {
            return Err(Error::Shape(format!(
                "soft MixUp loss: {name} must have {b} entries, found shape {:?}",
                t.size()
            )));
        }
    }
    let device = logits.device();
    let e = logits.f_exp()?;
    let mask = Tensor::f_eye(b, (Kind::Bool, device))?;
    let w = weights.f_unsqueeze(0)?.f_repeat([b, 1])?;
    let w_pos = w.f_masked_select(&mask)?;
    let w_mask = w.f_mul(&mask.f_logical_not()?)?;
    let w_neg = w_mask
        .f_div(
            &w_mask
                .f_sum_dim_intlist(1, false, None::<Kind>)?
                .f_unsqueeze(1)?,
        )?
        .f_mul_scalar((b - 1) as f64)?;
    let w_new = w_neg.f_add(&mask)?;
    let we = w_new.f_mul(&e)?;
    let log_soft = we
        .f_div(
            &we.f_sum_dim_intlist(1, false, None::<Kind>)?
                .f_unsqueeze(1)?,
        )?
        .f_log()?;
    let labels = Tensor::f_arange(b, (Kind::Int64, device))?;
    let nll = |target: &Tensor| log_soft.f_nll_loss::<Tensor>(target, None, Reduction::None, -100);
    let per_row = match aux {
        None => lam.f_mul(&nll(&labels)?)?,
        Some(perm) => {
            if perm.size() != [b] || perm.f_kind()? != Kind::Int64 {
                return Err(Error::Shape(format!(
                    "soft MixUp loss: the partners must be {b} int64, found {:?}",
                    perm.size()
                )));
            }
            let one_minus = lam.f_neg()?.f_add_scalar(1.0)?;
            lam.f_mul(&nll(&labels)?)?
                .f_add(&one_minus.f_mul(&nll(perm)?)?)?
                .f_mean(None::<Kind>)?
        }
    };
    let total = per_row.f_mul(&w_pos)?.f_sum(None::<Kind>)?;
    if nonorm {
        Ok(total.f_div_scalar(b as f64)?)
    } else {
        Ok(total.f_div(&w_pos.f_sum(None::<Kind>)?)?)
    }
}

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
/// Computed with the row maximum factored out of the exponentials (the reference exponentiates the
/// raw logits); same value, no overflow.
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
    }
}

//! The baseline loss of the reference's `main.train` (DCL, `chingyaoc/DCL`): NT-Xent, optionally
//! with the debiased negative estimator.
use tch::{Kind, Tensor};

use super::info_nce::info_nce_logits;
use crate::{Error, Result};

/// NT-Xent as the reference's `train()` computes it, optionally debiased (DCL).
///
/// `z1`, `z2`: `B × d` (L2-normalised views). With `Z = [z1; z2]`, for each of the `R = 2B` rows:
/// - `pos_r = exp(⟨z1_i, z2_i⟩ / τ)`, `i = r mod B` (computed from the two views directly, as the
///   reference does, not read off `Z Zᵀ`);
/// - `neg_r = Σ_{j ∉ {r, other view of r}} exp(S_rj / τ)`, `S = Z Zᵀ` (the `N = 2B − 2` negatives);
/// - `Ng_r = neg_r` when `debiased` is `None`; with `debiased = Some(τ⁺)`:
///   `Ng_r = max((neg_r − τ⁺·N·pos_r) / (1 − τ⁺), N·e^{−1/τ})` (`torch.clamp(min=…)`, whose
///   gradient flows to the first argument where it is `≥` the floor);
/// - `loss = mean_r −log(pos_r / (pos_r + Ng_r))`; a 0-dim tensor.
///
/// Evaluated in log-space: every exponential is taken relative to the row's largest logit `m_r`
/// (treated as a constant), `loss_r = m_r − l_pos + log(e^{l_pos − m_r} + Ng_r·e^{−m_r})`, which is
/// the reference's value without its overflow for small τ.
pub fn nt_xent(
    z1: &Tensor,
    z2: &Tensor,
    temperature: f64,
    debiased: Option<f64>,
) -> Result<Tensor> {
    if let Some(tau_plus) = debiased {
        if !(0.0..1.0).contains(&tau_plus) {
            return Err(Error::Shape(format!(
                "nt_xent: tau_plus must lie in [0, 1), found {tau_plus}"
            )));
        }
    }
    // Checks the shapes too; columns 1.. are the 2B − 2 negatives.
    let logits = info_nce_logits(z1, z2, temperature)?;
    let b = z1.size()[0];
    if b < 2 {
        return Err(Error::Shape(format!(
            "nt_xent: needs at least 2 samples (one negative), found B = {b}"
        )));
    }
    let n = (2 * b - 2) as f64;
    let neg = logits.f_narrow(1, 1, 2 * b - 2)?; // R×N
    let pos = z1
        .f_mul(z2)?
        .f_sum_dim_intlist(-1, false, None::<Kind>)?
        .f_div_scalar(temperature)?; // B
    let pos = Tensor::f_cat(&[&pos, &pos], 0)?.f_unsqueeze(1)?; // R×1
    let m = neg.f_amax(1, true)?.f_maximum(&pos)?.f_detach()?; // R×1, constant shift
    let pos_exp = pos.f_sub(&m)?.f_exp()?;
    let neg_exp = neg
        .f_sub(&m)?
        .f_exp()?
        .f_sum_dim_intlist(1, true, None::<Kind>)?;
    let ng = match debiased {
        None => neg_exp,
        Some(tau_plus) => {
            let est = neg_exp
                .f_sub(&pos_exp.f_mul_scalar(tau_plus * n)?)?
                .f_div_scalar(1.0 - tau_plus)?;
            let floor = m
                .f_neg()?
                .f_sub_scalar(1.0 / temperature)?
                .f_exp()?
                .f_mul_scalar(n)?;
            let keep = est.f_ge_tensor(&floor)?;
            est.f_where_self(&keep, &floor)?
        }
    };
    let loss = m.f_sub(&pos)?.f_add(&pos_exp.f_add(&ng)?.f_log()?)?;
    Ok(loss.f_mean(None::<Kind>)?)
}

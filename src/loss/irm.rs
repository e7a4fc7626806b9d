//! The IRMv1 penalty through a dummy scale vector (`utils.penalty`, mode `w`).
use tch::{Kind, Tensor};

use super::check_float;
use crate::{Error, Result};

/// IRMv1 penalty: `‖∂ loss(logits · s) / ∂s‖²` at `s = 1`.
///
/// `logits`: `R × C` (already divided by the penalty's temperature, `irm_temp` in the reference);
/// `s = ones(1, C)` scales each column; `loss` maps the scaled `R × C` logits to a 0-dim loss
/// (e.g. cross-entropy with target 0, or a [`soft_contrastive_loss`](super::soft_contrastive_loss)
/// with fixed weights). The gradient is taken with `create_graph = true`, so the returned 0-dim
/// penalty is differentiable with respect to everything `logits` (and `loss`) depend on; its
/// backward is a double backward through `loss`.
pub fn irm_penalty(logits: &Tensor, loss: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    Ok(irm_penalty_with_loss(logits, loss)?.0)
}

/// [`irm_penalty`] that also returns `loss(logits · s)` at `s = 1`: `(penalty, loss)`, both 0-dim.
/// The loss equals `loss(logits)` bit for bit (`x · 1 = x`), so a caller that needs both (the
/// maximize step when its two temperatures coincide) computes the forward once.
pub fn irm_penalty_with_loss(
    logits: &Tensor,
    loss: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<(Tensor, Tensor)> {
    let size = check_float("IRM penalty logits", logits, 2)?;
    let scale =
        Tensor::f_ones([1, size[1]], (logits.f_kind()?, logits.device()))?.set_requires_grad(true);
    let value = loss(&logits.f_mul(&scale)?)?;
    if value.numel() != 1 {
        return Err(Error::Shape(format!(
            "IRM penalty: the loss must be a scalar, found shape {:?}",
            value.size()
        )));
    }
    let grad = Tensor::f_run_backward(&[&value], &[&scale], true, true)?
        .pop()
        .ok_or_else(|| {
            Error::Shape("IRM penalty: autograd returned no gradient for the scale".into())
        })?;
    Ok((grad.f_square()?.f_sum(None::<Kind>)?, value))
}

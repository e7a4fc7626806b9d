//! The environment-balance constraint of the maximize step, and entropy.
use tch::{Kind, Tensor};

use super::check_float;
use crate::{Error, Result};

/// `H(2/3, 1/3)` in nats, rounded as the reference writes it: the relaxed constraint is zero as
/// long as no environment is more than twice as large as the other (two environments).
pub const RELAXED_ENTROPY_FLOOR: f64 = 0.6365;

/// Entropy along `dim`: `H = −Σ p·ln p` (`utils.cal_entropy`). A zero probability gives NaN, as in
/// the reference (`0·ln 0`); softmax outputs are zero only after float underflow.
pub fn entropy(prob: &Tensor, dim: i64) -> Result<Tensor> {
    let size = prob.size();
    check_float("entropy input", prob, size.len())?;
    let d = if dim < 0 {
        dim + size.len() as i64
    } else {
        dim
    };
    if d < 0 || d >= size.len() as i64 {
        return Err(Error::Shape(format!(
            "entropy: dim {dim} out of range for shape {size:?}"
        )));
    }
    Ok(prob
        .f_mul(&prob.f_log()?)?
        .f_sum_dim_intlist(d, false, None::<Kind>)?
        .f_neg()?)
}

/// Balance constraint added to the maximize risk (`constrain` branch of `auto_split_offline`).
///
/// `probs`: `B × E`, each row a softmax over environments; `p̄ = mean_i probs_i` (`E`).
/// - default: `−H(p̄)` (pushes towards equal-sized environments);
/// - `constrain_relax`: `relu(0.6365 − H(p̄))`, zero while no environment exceeds 2:1;
/// - `nonorm` (takes precedence over `constrain_relax`, as in the reference):
///   `0.2·(−H(p̄) + mean_i H(probs_i))`, which also rewards confident assignments.
///
/// Returns a 0-dim tensor.
pub fn balance_constraint(probs: &Tensor, constrain_relax: bool, nonorm: bool) -> Result<Tensor> {
    let size = check_float("balance constraint probabilities", probs, 2)?;
    if size[0] < 1 || size[1] < 1 {
        return Err(Error::Shape(format!(
            "balance constraint: expected B×E with B, E ≥ 1, found {size:?}"
        )));
    }
    let h_mean = entropy(&probs.f_mean_dim(0, false, None::<Kind>)?, 0)?;
    if nonorm {
        let mean_h = entropy(probs, 1)?.f_mean(None::<Kind>)?;
        Ok(h_mean.f_neg()?.f_add(&mean_h)?.f_mul_scalar(0.2)?)
    } else if constrain_relax {
        Ok(h_mean
            .f_neg()?
            .f_add_scalar(RELAXED_ENTROPY_FLOOR)?
            .f_relu()?)
    } else {
        Ok(h_mean.f_neg()?)
    }
}

//! InfoNCE / NT-Xent logits in the reference's layout, the sample index of each logit column, and
//! the plain InfoNCE loss.
use tch::{Device, Kind, Reduction, Tensor};

use super::{check_float, check_same_device};
use crate::{Error, Result};

/// Where each logit column of [`info_nce_logits`] comes from in the full `2B × 2B` similarity
/// matrix `S = Z Zᵀ` (`Z = [z1; z2]`): an int64 tensor of shape `2B × (2B − 1)`.
///
/// Row `r` is `[p(r), then every j ∉ {r, p(r)} in increasing order]` with `p(r) = (r + B) mod 2B`
/// the other view of the same sample. This is exactly the column order the reference obtains by
/// dropping the diagonal of `S`, taking the positive with one boolean mask and the negatives with
/// its complement (`utils.info_nce_loss`).
///
/// Computed on `device` with tensor ops (no host loop); for `B = 3096` it is a 306 MB tensor, so
/// compute it once per batch size and reuse it (see [`info_nce_logits_with_index`]).
pub fn info_nce_column_index(b: i64, device: Device) -> Result<Tensor> {
    if b < 1 {
        return Err(Error::Shape(format!(
            "InfoNCE column index: batch size must be at least 1, found {b}"
        )));
    }
    let opts = (Kind::Int64, device);
    let rows = 2 * b;
    let r = Tensor::f_arange(rows, opts)?.f_unsqueeze(1)?; // R×1
    let k = Tensor::f_arange(rows - 1, opts)?.f_unsqueeze(0)?; // 1×C
                                                               // The positive's column in S and its position p in the row once the diagonal is dropped.
    let pos = r.f_add_scalar(b)?.f_remainder(rows)?; // R×1
    let p = pos.f_sub(&pos.f_gt_tensor(&r)?.f_to_kind(Kind::Int64)?)?;
    // Output column k ≥ 1 is the (k − 1)-th entry of the diagonal-free row with p skipped …
    let km1 = k.f_sub_scalar(1)?;
    let c = km1.f_add(&km1.f_ge_tensor(&p)?.f_to_kind(Kind::Int64)?)?; // R×C
                                                                       // … which sits at column c (c < r) or c + 1 (c ≥ r) of S.
    let j = c.f_add(&c.f_ge_tensor(&r)?.f_to_kind(Kind::Int64)?)?;
    // Output column 0 is the positive.
    let is_first = k.f_eq(0)?;
    Ok(pos
        .f_expand([rows, rows - 1], false)?
        .f_where_self(&is_first, &j)?)
}

/// The sample (`0..B`) each logit column of [`info_nce_logits`] belongs to: int64, `2B × (2B − 1)`,
/// `= info_nce_column_index(b) mod B`. This is the `indexs` matrix of the reference's
/// `utils.info_nce_loss_update`; the maximize step gathers per-sample weights with it.
pub fn info_nce_sample_index(b: i64, device: Device) -> Result<Tensor> {
    Ok(info_nce_column_index(b, device)?.f_remainder(b)?)
}

fn check_views(z1: &Tensor, z2: &Tensor) -> Result<i64> {
    let s1 = check_float("z1", z1, 2)?;
    let s2 = check_float("z2", z2, 2)?;
    if s1 != s2 {
        return Err(Error::Shape(format!(
            "z1 and z2 must have one shape B×d, found {s1:?} and {s2:?}"
        )));
    }
    if s1[0] < 1 {
        return Err(Error::Shape(
            "z1, z2: need at least one sample, found an empty batch".into(),
        ));
    }
    check_same_device("z1", z1, "z2", z2)?;
    Ok(s1[0])
}

/// InfoNCE logits in the reference's layout (`utils.info_nce_loss`).
///
/// `z1`, `z2`: `B × d` (the two views; the reference feeds L2-normalised projections).
/// With `Z = [z1; z2]` (`2B × d`) and `S = Z Zᵀ`, row `r` of the result is
/// `[S[r, p(r)], S[r, j] for the 2B − 2 negatives j] / τ`, `p(r)` the other view of sample
/// `r mod B`, the negatives in the order of [`info_nce_column_index`]. Shape `2B × (2B − 1)`;
/// the target class of every row is column 0.
pub fn info_nce_logits(z1: &Tensor, z2: &Tensor, temperature: f64) -> Result<Tensor> {
    let b = check_views(z1, z2)?;
    let index = info_nce_column_index(b, z1.device())?;
    info_nce_logits_with_index(z1, z2, temperature, &index)
}

/// [`info_nce_logits`] with a precomputed `info_nce_column_index(B)` (`2B × (2B − 1)`, int64, on
/// the features' device), for callers that run many batches of one size.
pub fn info_nce_logits_with_index(
    z1: &Tensor,
    z2: &Tensor,
    temperature: f64,
    column_index: &Tensor,
) -> Result<Tensor> {
    let b = check_views(z1, z2)?;
    let size = column_index.size();
    if size != [2 * b, 2 * b - 1] || column_index.f_kind()? != Kind::Int64 {
        return Err(Error::Shape(format!(
            "InfoNCE column index: expected int64 of shape [{}, {}] for B = {b}, found {:?} of shape {size:?}",
            2 * b,
            2 * b - 1,
            column_index.f_kind()?
        )));
    }
    check_same_device("z1", z1, "column index", column_index)?;
    let z = Tensor::f_cat(&[z1, z2], 0)?;
    let sim = z.f_matmul(&z.f_tr()?)?;
    Ok(sim
        .f_gather(1, column_index, false)?
        .f_div_scalar(temperature)?)
}

/// InfoNCE loss: `mean_r CE(info_nce_logits(z1, z2, τ)[r], 0)` over the `2B` rows
/// (`CrossEntropyLoss()(logits, zeros)` in the reference). `z1`, `z2`: `B × d`; a 0-dim result.
pub fn info_nce_loss(z1: &Tensor, z2: &Tensor, temperature: f64) -> Result<Tensor> {
    cross_entropy_first(&info_nce_logits(z1, z2, temperature)?)
}

/// `mean_r CE(logits[r], 0)`: cross-entropy of `R × C` logits whose target is column 0 in every
/// row (the positive of the InfoNCE layout); a 0-dim result.
pub fn cross_entropy_first(logits: &Tensor) -> Result<Tensor> {
    let target = Tensor::f_zeros([logits.size()[0]], (Kind::Int64, logits.device()))?;
    Ok(logits.f_cross_entropy_loss::<Tensor>(&target, None, Reduction::Mean, -100, 0.0)?)
}

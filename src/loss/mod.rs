//! Losses as free functions over tensors.
//!
//! Every function checks the shapes of its inputs on entry and answers [`Error::Shape`] with a
//! message naming the argument, the expected and the found shape; libtorch failures come back as
//! [`Error::Torch`]. Nothing here holds state: the minimize and maximize steps in
//! [`crate::train`] compose these functions.
//!
//! Notation: `B` = samples in a batch, `d` = feature width, `R = 2B` logit rows (view 1 then
//! view 2), `C = 2B − 1` logit columns (the positive first, then the `2B − 2` negatives in the
//! reference's order), `E` = environments of a partition.
//!
//! | function | reference (`Wangt-CN/IP-IRM`) |
//! |---|---|
//! | [`info_nce_logits`], [`info_nce_loss`], [`info_nce_sample_index`] | `utils.info_nce_loss`, `utils.info_nce_loss_update` |
//! | [`nt_xent`] | the loss inside `main.train` (DCL's baseline, optionally debiased) |
//! | [`soft_contrastive_loss`] | `utils.soft_contrastive_loss` |
//! | [`irm_penalty`] | `utils.penalty` (mode `w`) and the inline penalty of `auto_split_offline` |
//! | [`balance_constraint`], [`entropy`] | the `constrain` branch of `auto_split_offline`, `utils.cal_entropy` |
//! | [`mixup`], [`draw_mixup`] | `utils_mixup.mixup` (`share_lam=False`) |
//! | [`mixup_logits`], [`mixup_cross_entropy`], [`mixup_contrastive_loss`] | the loss inside `main_mixup.train` and each environment of `train_env_mixup_full_*` |
//!
//! [`Error::Shape`]: crate::Error::Shape
//! [`Error::Torch`]: crate::Error::Torch
mod constraint;
mod info_nce;
mod irm;
mod mixup;
mod nt_xent;
mod soft_contrastive;

pub use constraint::{balance_constraint, entropy, RELAXED_ENTROPY_FLOOR};
pub use info_nce::{
    cross_entropy_first, info_nce_column_index, info_nce_logits, info_nce_logits_with_index,
    info_nce_loss, info_nce_sample_index,
};
pub use irm::{irm_penalty, irm_penalty_with_loss};
pub use mixup::{draw_mixup, mixup, mixup_contrastive_loss, mixup_cross_entropy, mixup_logits};
pub use nt_xent::nt_xent;
pub use soft_contrastive::{
    soft_contrastive_loss, soft_contrastive_v2_fast, soft_mixup_loss, SoftMode, V2_RAW_EXP_MAX,
};

use tch::{Kind, Tensor};

use crate::{Error, Result};

/// `Err(Error::Shape)` unless `t` is a floating-point tensor of `dims` dimensions.
pub(crate) fn check_float(name: &str, t: &Tensor, dims: usize) -> Result<Vec<i64>> {
    let size = t.size();
    if size.len() != dims {
        return Err(Error::Shape(format!(
            "{name}: expected a {dims}-D tensor, found shape {size:?}"
        )));
    }
    let kind = t.f_kind()?;
    if !matches!(
        kind,
        Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16
    ) {
        return Err(Error::Shape(format!(
            "{name}: expected a floating-point tensor, found {kind:?}"
        )));
    }
    Ok(size)
}

/// `Err(Error::Shape)` unless `a` and `b` live on the same device.
pub(crate) fn check_same_device(name_a: &str, a: &Tensor, name_b: &str, b: &Tensor) -> Result<()> {
    if a.device() != b.device() {
        return Err(Error::Shape(format!(
            "{name_a} is on {:?} but {name_b} is on {:?}; both must be on one device",
            a.device(),
            b.device()
        )));
    }
    Ok(())
}

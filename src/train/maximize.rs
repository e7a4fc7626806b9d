// TEMP STUB (replaced by the loss branch)
use tch::Tensor;
pub struct EpochRisk { pub total: f64 }
pub struct MaximizeResult { pub partition: Tensor, pub risks: Vec<EpochRisk>, pub best_epoch: usize, pub env_sizes: Vec<i64> }
pub fn maximize_offline(_a: &Tensor, _b: &Tensor, _i: &Tensor, _c: &crate::config::MaximizeConfig, _t: f64, _f: impl FnMut(usize, &EpochRisk)) -> crate::Result<MaximizeResult> { unimplemented!() }

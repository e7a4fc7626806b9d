// TEMP STUB
use tch::Tensor;
pub fn nt_xent(z1: &Tensor, _z2: &Tensor, _t: f64, _d: Option<f64>) -> crate::Result<Tensor> { Ok(z1.sum(tch::Kind::Float)) }
pub fn info_nce_logits(z1: &Tensor, _z2: &Tensor, _t: f64) -> crate::Result<Tensor> { Ok(z1.shallow_clone()) }
pub fn info_nce_loss(z1: &Tensor, _z2: &Tensor, _t: f64) -> crate::Result<Tensor> { Ok(z1.shallow_clone()) }
pub fn cross_entropy_first(z1: &Tensor) -> crate::Result<Tensor> { Ok(z1.shallow_clone()) }
pub fn irm_penalty(z1: &Tensor, _f: impl Fn(&Tensor) -> crate::Result<Tensor>) -> crate::Result<Tensor> { Ok(z1.shallow_clone()) }

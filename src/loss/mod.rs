// TEMP STUB
use tch::Tensor;
pub fn nt_xent(z1: &Tensor, _z2: &Tensor, _t: f64, _d: Option<f64>) -> crate::Result<Tensor> { Ok(z1.sum(tch::Kind::Float)) }

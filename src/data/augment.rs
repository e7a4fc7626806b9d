// TEMP STUB
use tch::Tensor;
pub const CROP_SIZE: i64 = 32;
pub fn train_view(x: &Tensor, _s: i64) -> Tensor { x.to_kind(tch::Kind::Float) }
pub fn test_view(x: &Tensor) -> Tensor { x.to_kind(tch::Kind::Float) }

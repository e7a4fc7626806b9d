//! Reading the parity fixtures (numbers the reference produced; see tests/fixtures/gen_*.py)
//! and comparing against them.
use std::collections::HashMap;
use std::path::Path;

use tch::{Kind, Tensor};

/// The tensors of `tests/fixtures/<name>.safetensors` by name.
pub fn fixture(name: &str) -> HashMap<String, Tensor> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.safetensors"));
    Tensor::read_safetensors(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .collect()
}

/// The fixture tensor `key`, or a panic naming it.
pub fn get<'a>(f: &'a HashMap<String, Tensor>, key: &str) -> &'a Tensor {
    f.get(key)
        .unwrap_or_else(|| panic!("fixture key {key} missing"))
}

/// Normwise relative error `max|ours − reference| / max|reference|` (shapes must agree).
pub fn rel_err(ours: &Tensor, reference: &Tensor) -> f64 {
    let ours = ours.detach().to_kind(Kind::Double).reshape([-1]);
    let reference = reference.detach().to_kind(Kind::Double).reshape([-1]);
    assert_eq!(ours.size(), reference.size());
    let scale = reference.abs().max().double_value(&[]).max(1e-30);
    (&ours - &reference).abs().max().double_value(&[]) / scale
}

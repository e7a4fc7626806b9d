//! A training state as one value ([`Checkpoint`]: the model's variables, the optimizer's state,
//! the epochs completed) and its encoding as a tensor blob: the variables as `model.<name>`,
//! Adam's state as `adam.*` ([`adam::State::to_named`]), and the epoch once, in the header
//! (meta `epoch`), which is read without loading the weights. Checkpoints stored before this
//! encoding carry the epoch also as a tensor `epoch`; it is read past.
use tch::Tensor;

use super::adam;
use crate::model::checkpoint::MODEL_PREFIX;
use crate::tensor_file::{take, Meta, TensorArtifact};
use crate::{Error, Result};

/// A training state: what [`super::Trainer::checkpoint`] gives and
/// [`super::Trainer::restore`] takes.
pub struct Checkpoint {
    /// Epochs completed.
    pub epoch: usize,
    /// The model's variables (parameters and buffers) by name, in name order.
    pub model: Vec<(String, Tensor)>,
    pub optimizer: adam::State,
}

impl Checkpoint {
    /// The model's and the optimizer's tensors under their stored names, in name order (the
    /// order rank 0 broadcasts them in); the epoch is not among them.
    pub fn to_named(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = self
            .model
            .iter()
            .map(|(n, t)| (format!("{MODEL_PREFIX}{n}"), t.shallow_clone()))
            .collect();
        out.extend(self.optimizer.to_named());
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The checkpoint after `epoch` epochs whose tensors [`Checkpoint::to_named`] gave. A tensor
    /// named `epoch` (checkpoints stored before the epoch was kept in the header alone carry
    /// one, equal to the header's) is left out.
    pub fn from_named(mut named: Vec<(String, Tensor)>, epoch: usize) -> Result<Checkpoint> {
        let optimizer = adam::State::take_from(&mut named)?;
        let mut model: Vec<(String, Tensor)> = named
            .into_iter()
            .filter_map(|(n, t)| Some((n.strip_prefix(MODEL_PREFIX)?.to_string(), t)))
            .collect();
        model.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Checkpoint {
            epoch,
            model,
            optimizer,
        })
    }
}

impl TensorArtifact for Checkpoint {
    fn to_tensors(&self) -> (Vec<(String, Tensor)>, Meta) {
        let meta = Meta::from([("epoch".to_string(), self.epoch.to_string())]);
        (self.to_named(), meta)
    }
    fn from_tensors(mut named: Vec<(String, Tensor)>, meta: &Meta) -> Result<Self> {
        let epoch = match meta.get("epoch") {
            Some(e) => e.parse().map_err(|_| {
                Error::Shape(format!("checkpoint header's `epoch` is not a count: {e:?}"))
            })?,
            // Written before the header held it: the tensor alone did.
            None => take(&mut named, "epoch")
                .map_err(|_| Error::Shape("checkpoint lacks `epoch`".into()))?
                .int64_value(&[0]) as usize,
        };
        Checkpoint::from_named(named, epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        let t = |v: f32| Tensor::from_slice(&[v, v + 1.0]);
        Checkpoint {
            epoch: 7,
            model: vec![("f.0.weight".into(), t(1.0)), ("g.0.bias".into(), t(3.0))],
            optimizer: adam::State {
                step: 12,
                moments: vec![
                    ("f.0.weight".into(), t(5.0), t(7.0)),
                    ("g.0.bias".into(), t(9.0), t(11.0)),
                ],
            },
        }
    }

    fn same(a: &Checkpoint, b: &Checkpoint) -> bool {
        let (na, nb) = (a.to_named(), b.to_named());
        a.epoch == b.epoch
            && na.len() == nb.len()
            && na
                .iter()
                .zip(&nb)
                .all(|((x, s), (y, t))| x == y && s.equal(t))
    }

    #[test]
    fn the_epoch_is_stored_once_in_the_header() {
        let (named, meta) = sample().to_tensors();
        assert!(named.iter().all(|(n, _)| n != "epoch"), "{named:?}");
        assert_eq!(meta.get("epoch").map(String::as_str), Some("7"));
        let names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "adam.exp_avg.f.0.weight",
                "adam.exp_avg.g.0.bias",
                "adam.exp_avg_sq.f.0.weight",
                "adam.exp_avg_sq.g.0.bias",
                "adam.step",
                "model.f.0.weight",
                "model.g.0.bias",
            ]
        );
        assert!(same(
            &Checkpoint::from_tensors(named, &meta).unwrap(),
            &sample()
        ));
    }

    #[test]
    fn checkpoints_written_with_an_epoch_tensor_still_read() {
        // As the store held them before: the epoch as a tensor too, or (before the header
        // carried it) as a tensor alone.
        let (mut named, meta) = sample().to_tensors();
        named.push(("epoch".into(), Tensor::from_slice(&[7i64])));
        let copy = || named.iter().map(|(n, t)| (n.clone(), t.copy())).collect();
        assert!(same(
            &Checkpoint::from_tensors(copy(), &meta).unwrap(),
            &sample()
        ));
        assert!(same(
            &Checkpoint::from_tensors(copy(), &Meta::new()).unwrap(),
            &sample()
        ));
        named.pop();
        let e = Checkpoint::from_tensors(named, &Meta::new()).err().unwrap();
        assert!(e.to_string().contains("epoch"), "{e}");
    }
}

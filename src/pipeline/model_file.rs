//! Model files: what `ipirm run` and `ipirm train` write (`model.safetensors`), and the
//! commands that read one: `ipirm eval knn|linear` and `ipirm checkpoint import` (the
//! reference's `.pth`, or ours).
use std::path::Path;

use tch::{Device, Tensor};

use super::output::{check_not_the_input, check_output_file};
use crate::config::Config;
use crate::data::loader::RunData;
use crate::eval::{knn, linear, Accuracy};
use crate::{Error, Result};

/// Writes the variables of `vs` as safetensors in the default layout (what `vs.save` writes,
/// which refuses weights in channels_last layout).
pub(super) fn save_model(vs: &tch::nn::VarStore, path: &Path) -> Result<()> {
    let named: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.contiguous()))
        .collect();
    Tensor::write_safetensors(&named, path)
        .map_err(|e| Error::file(path, "a writable safetensors file", e.to_string()))
}

/// A model with the variables of a checkpoint file.
pub struct LoadedModel {
    pub vs: tch::nn::VarStore,
    pub model: crate::model::Model,
    /// The classifier a `linear.py` checkpoint carries (`fc.weight`, `fc.bias`), else empty.
    pub classifier: Vec<(String, Tensor)>,
}

/// The model of `cfg.model` with the variables of a checkpoint file: ipirm's
/// `model.safetensors`, or the reference's `.pth`.
/// The model computes as `cfg.train`'s numerics resolve for `device`.
pub fn load_model(cfg: &Config, device: Device, checkpoint: &Path) -> Result<LoadedModel> {
    let vs = tch::nn::VarStore::new(device);
    let mut model = crate::model::Model::new(&vs.root(), &cfg.model);
    model.set_numerics(crate::numerics::Numerics::of_fitted(&cfg.train, device)?)?;
    let (_, classifier) = crate::model::checkpoint::load_into(&vs, checkpoint)?;
    Ok(LoadedModel {
        vs,
        model,
        classifier,
    })
}

/// What `ipirm checkpoint import` wrote.
#[derive(Debug, Clone)]
pub struct Imported {
    pub tensors: usize,
    /// The classifier (`fc.*`) of a `linear.py` checkpoint, kept beside the model.
    pub classifier: bool,
}

/// `ipirm checkpoint import`: a checkpoint file (the reference's `.pth`, or ours) into ipirm's
/// safetensors, checked against the model `cfg.model` describes.
pub fn import_checkpoint(cfg: &Config, input: &Path, output: &Path) -> Result<Imported> {
    check_output_file(output, "--out")?;
    check_not_the_input(input, output, "the FILE imported")?;
    let m = load_model(cfg, Device::Cpu, input)?;
    let mut named: Vec<(String, Tensor)> = m.vs.variables().into_iter().collect();
    let classifier = !m.classifier.is_empty();
    named.extend(m.classifier);
    Tensor::write_safetensors(&named, output)
        .map_err(|e| Error::file(output, "a writable safetensors file", e.to_string()))?;
    Ok(Imported {
        tensors: named.len(),
        classifier,
    })
}

/// `ipirm eval knn`: the weighted kNN of a checkpoint file's encoder, and the k it used
/// (`knn.k`, at most the memory bank's size).
pub fn eval_knn(cfg: &Config, device: Device, checkpoint: &Path) -> Result<(Accuracy, i64)> {
    let model = load_model(cfg, device, checkpoint)?.model;
    let data = RunData::load(cfg, device)?;
    let acc = knn::evaluate(&model, &data.bank, &data.test, &knn::Knn::of(cfg))?;
    Ok((acc, cfg.knn.k.min(data.bank.len())))
}

/// `ipirm eval linear`: the linear probe of a checkpoint file's encoder; with `linear.epochs=0`
/// and a checkpoint that carries a classifier (`linear.py`'s), that classifier scored as it is
/// (without one, `linear.epochs=0` is refused: it would score an untrained classifier).
pub fn eval_linear(
    cfg: &Config,
    device: Device,
    checkpoint: &Path,
) -> Result<linear::LinearResult> {
    let LoadedModel {
        vs,
        classifier,
        model,
    } = load_model(cfg, device, checkpoint)?;
    if cfg.linear.epochs == 0 && classifier.is_empty() {
        return Err(Error::config(
            "linear.epochs",
            format!(
                "0 scores the classifier a checkpoint carries (fc.weight, fc.bias), and {} has none: train a probe with linear.epochs ≥ 1",
                checkpoint.display()
            ),
        ));
    }
    let data = RunData::load(cfg, device)?;
    if cfg.linear.epochs == 0 && !classifier.is_empty() {
        // The checkpoint's own classifier (a linear.py checkpoint), scored as it is.
        let begun = std::time::Instant::now();
        let acc = linear::score_saved(
            &vs,
            &cfg.model,
            model.numerics(),
            &classifier,
            &data.test,
            cfg.linear.batch_size,
        )?;
        return Ok(linear::LinearResult {
            test: acc,
            best: acc,
            per_epoch: Vec::new(),
            final_train_loss: f64::NAN,
            seconds: begun.elapsed().as_secs_f64(),
        });
    }
    linear::linear_probe(
        &vs,
        &cfg.model,
        model.numerics(),
        &cfg.linear,
        cfg.data.views(),
        &data.bank,
        &data.test,
    )
}

//! Linear evaluation as the reference's `linear.py`: the encoder frozen, a Linear(D→classes)
//! trained with Adam on the labelled train split under the train transform, the test split
//! scored under the test transform after every epoch (the last is the figure reported).
//!
//! The reference's quirk is kept by default (`linear.bn_train_quirk`): the whole network stays in
//! train mode while the classifier trains, so the frozen encoder's BatchNorm normalises with batch
//! statistics and its running statistics keep moving; the test pass then runs in eval mode with
//! those moved statistics. The probe works on a copy of the encoder, so the caller's model is
//! left as it was.
use std::time::Instant;

use tch::{nn, nn::Module, Kind, Tensor};

use super::{topk_hits, Accuracy};
use crate::config::{LinearConfig, ModelConfig};
use crate::data::augment::{self, Views};
use crate::data::{loader, Dataset};
use crate::model::Model;
use crate::numerics::Numerics;
use crate::{progress, rng, Result};

/// What the probe reports: the test accuracy after the last epoch (and after every epoch, as
/// the reference's `linear.py` logs it), and the last epoch's training loss.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LinearResult {
    /// After the last epoch (the figure the paper reports).
    pub test: Accuracy,
    /// The best top-1 over the epochs (with its top-5), for reference.
    pub best: Accuracy,
    /// After each epoch, in order.
    pub per_epoch: Vec<Accuracy>,
    pub final_train_loss: f64,
    pub seconds: f64,
}

/// Trains a linear classifier on the frozen encoder of (`vs`, `model_cfg`), scoring it on the
/// test set after every epoch. The encoder computes as `numerics` say (its features come back
/// fp32; the classifier and its loss are fp32); it trains on the run's training views
/// ([`crate::config::DataConfig::views`]).
pub fn linear_probe(
    vs: &nn::VarStore,
    model_cfg: &ModelConfig,
    numerics: Numerics,
    cfg: &LinearConfig,
    views: Views,
    train: &Dataset,
    test: &Dataset,
) -> Result<LinearResult> {
    let start = Instant::now();
    let device = vs.device();
    // A private copy of the encoder: the quirk moves its BatchNorm statistics.
    let (_enc_vs, encoder) = encoder_copy(vs, model_cfg, numerics)?;
    let _tf32 = numerics.tf32_scope()?;

    rng::reseed(cfg.seed, "linear-init", 0);
    let head_vs = nn::VarStore::new(device);
    let fc = crate::model::torch_linear(
        head_vs.root() / "fc",
        encoder.feature_width,
        train.num_classes,
    );
    let mut opt = crate::train::adam::Adam::for_var_store(&head_vs, cfg.lr, cfg.weight_decay);

    let mut final_train_loss = f64::NAN;
    let mut per_epoch = Vec::with_capacity(cfg.epochs);
    for epoch in 1..=cfg.epochs {
        rng::reseed(cfg.seed, "linear", epoch as u64);
        let batches = loader::shuffled_batches(train.len(), cfg.batch_size, false, device);
        let pb = progress::bar(
            batches.len() as u64,
            &format!("probe {epoch}/{}", cfg.epochs),
        );
        let (mut total, mut seen) = (0.0, 0i64);
        for idx in &batches {
            let x = views.draw(&train.images.index_select(0, idx));
            let y = train.labels.index_select(0, idx);
            let h = tch::no_grad(|| encoder.encode(&x, cfg.bn_train_quirk));
            let loss = fc.forward(&h).cross_entropy_for_logits(&y);
            opt.backward_step(&loss);
            total += loss.double_value(&[]) * idx.size()[0] as f64;
            seen += idx.size()[0];
            pb.set_message(format!("loss {:.4}", total / seen as f64));
            pb.inc(1);
        }
        pb.finish_and_clear();
        final_train_loss = total / seen.max(1) as f64;
        if !final_train_loss.is_finite() {
            return Err(crate::Error::NonFinite {
                what: "the linear probe's training loss".into(),
                at: format!("probe epoch {epoch}"),
                value: final_train_loss,
            });
        }
        per_epoch.push(score(&encoder, &fc, test, cfg.batch_size));
    }
    let test_acc = match per_epoch.last() {
        Some(a) => *a,
        None => score(&encoder, &fc, test, cfg.batch_size),
    };
    let best = per_epoch
        .iter()
        .copied()
        .fold(test_acc, |b, a| if a.top1 > b.top1 { a } else { b });
    Ok(LinearResult {
        test: test_acc,
        best,
        per_epoch,
        final_train_loss,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// A frozen copy of the encoder of (`vs`, `model_cfg`), computing as `numerics` say.
fn encoder_copy(
    vs: &nn::VarStore,
    model_cfg: &ModelConfig,
    numerics: Numerics,
) -> Result<(nn::VarStore, Model)> {
    let mut enc_vs = nn::VarStore::new(vs.device());
    let mut encoder = Model::new(&enc_vs.root(), model_cfg);
    encoder.set_numerics(numerics)?;
    enc_vs.copy(vs)?;
    enc_vs.freeze();
    Ok((enc_vs, encoder))
}

/// Top-1/top-5 of the classifier `fc` on the encoder's features of `test` (test transform,
/// eval mode).
pub fn score(encoder: &Model, fc: &impl Module, test: &Dataset, batch_size: i64) -> Accuracy {
    let _guard = tch::no_grad_guard();
    let idx = Tensor::arange(test.len(), (Kind::Int64, test.images.device()));
    let (mut top1, mut top5) = (0i64, 0i64);
    for b in loader::ordered_batches(&idx, batch_size, false) {
        let h = encoder.encode(&augment::test_view(&test.images.index_select(0, &b)), false);
        let (t1, t5) = topk_hits(&fc.forward(&h), &test.labels.index_select(0, &b));
        top1 += t1;
        top5 += t5;
    }
    let m = test.len().max(1) as f64;
    Accuracy {
        top1: 100.0 * top1 as f64 / m,
        top5: 100.0 * top5 as f64 / m,
    }
}

/// The classifier a checkpoint carries (`fc.weight`, `fc.bias`: a `linear.py` checkpoint of the
/// reference), scored on `test` over the encoder of (`vs`, `model_cfg`) computing as `numerics`
/// say.
pub fn score_saved(
    vs: &nn::VarStore,
    model_cfg: &ModelConfig,
    numerics: Numerics,
    classifier: &[(String, Tensor)],
    test: &Dataset,
    batch_size: i64,
) -> Result<Accuracy> {
    let get = |n: &str| {
        classifier
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, t)| t.to_device(vs.device()).to_kind(Kind::Float))
            .ok_or_else(|| crate::Error::Shape(format!("the checkpoint's classifier lacks `{n}`")))
    };
    let (w, b) = (get("fc.weight")?, get("fc.bias")?);
    let (_enc_vs, encoder) = encoder_copy(vs, model_cfg, numerics)?;
    let _tf32 = numerics.tf32_scope()?;
    if w.size() != [test.num_classes, encoder.feature_width] {
        return Err(crate::Error::Shape(format!(
            "the checkpoint's classifier is {:?}, the data and model need [{}, {}]",
            w.size(),
            test.num_classes,
            encoder.feature_width
        )));
    }
    let fc = nn::Linear { ws: w, bs: Some(b) };
    Ok(score(&encoder, &fc, test, batch_size))
}

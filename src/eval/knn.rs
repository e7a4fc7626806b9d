//! The weighted kNN monitor of the reference (from InstDisc / DCL): memory bank = L2-normalised
//! encoder features of the labelled train split under the test transform; each test image votes
//! with its k nearest bank entries by cosine similarity, each weighted by exp(sim/τ).
use tch::{Kind, Tensor};

use super::{topk_hits, Accuracy};
use crate::data::{augment, loader, Dataset};
use crate::model::Model;
use crate::{progress, Error, Result};

/// L2-normalised encoder features (N×D) of `images` under the test transform, eval mode.
pub fn extract_features(model: &Model, images: &Tensor, batch_size: i64, label: &str) -> Tensor {
    let _guard = tch::no_grad_guard();
    let n = images.size()[0];
    let idx = Tensor::arange(n, (Kind::Int64, images.device()));
    let batches = loader::ordered_batches(&idx, batch_size, false);
    let pb = progress::bar(batches.len() as u64, label);
    let feats: Vec<Tensor> = batches
        .iter()
        .map(|b| {
            let (f, _) = model.forward(&augment::test_view(&images.index_select(0, b)), false);
            pb.inc(1);
            f
        })
        .collect();
    pb.finish_and_clear();
    Tensor::cat(&feats, 0)
}

/// Raw pixels as features under the same protocol: test transform, each pixel standardised by
/// its mean and standard deviation over the bank, then L2-normalised. Returns (bank, test).
pub fn pixel_features(bank: &Tensor, test: &Tensor) -> (Tensor, Tensor) {
    let _guard = tch::no_grad_guard();
    let flat = |x: &Tensor| augment::test_view(x).flatten(1, -1);
    let (b, t) = (flat(bank), flat(test));
    let mean = b.mean_dim(0, true, Kind::Float);
    let std = b.std_dim(0, false, true).clamp_min(1e-6);
    let norm = |x: Tensor| crate::model::l2_normalize(&((x - &mean) / &std));
    (norm(b), norm(t))
}

/// The kNN monitor's settings, resolved from the config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Knn {
    /// Neighbours (clamped to the bank's size, with a warning).
    pub k: i64,
    /// Weighting temperature τ: each neighbour votes exp(sim/τ).
    pub temperature: f64,
    /// Test images per batch.
    pub batch_size: i64,
}

impl Knn {
    /// `knn.k`, the resolved temperature (`knn.temperature`, else `train.temperature`) and
    /// `knn.batch_size` of `cfg`.
    pub fn of(cfg: &crate::config::Config) -> Knn {
        Knn {
            k: cfg.knn.k,
            temperature: cfg.knn_temperature(),
            batch_size: cfg.knn.batch_size,
        }
    }
}

/// Weighted kNN accuracy of `test_features` against a bank, as the reference's `test()`:
/// sim = test·bankᵀ, top-k, weight exp(sim/τ), per-class sums, top-1/top-5 of the class scores.
/// `bank_features`: N×D, `bank_labels`: N int64 in 0..classes, `test_features`: M×D, `test_labels`: M.
/// Classes with equal scores (e.g. the zero scores of classes no neighbour belongs to) rank in an
/// unspecified order, as with the reference's `argsort`, which can move top-5 when k is small.
pub fn knn_accuracy(
    bank_features: &Tensor,
    bank_labels: &Tensor,
    test_features: &Tensor,
    test_labels: &Tensor,
    classes: i64,
    knn: &Knn,
) -> Result<Accuracy> {
    let Knn {
        k,
        temperature,
        batch_size,
    } = *knn;
    let n = bank_features.size()[0];
    if n == 0 || test_features.size()[0] == 0 {
        return Err(Error::Shape(
            "kNN needs a non-empty memory bank and test set".into(),
        ));
    }
    if k > n {
        eprintln!(
            "warning: knn.k = {k} is larger than the memory bank ({n} images); using k = {n}"
        );
    }
    let k = k.min(n);
    let _guard = tch::no_grad_guard();
    let bank_t = bank_features.tr().contiguous();
    let m = test_features.size()[0];
    let idx = Tensor::arange(m, (Kind::Int64, test_features.device()));
    let (mut top1, mut top5) = (0i64, 0i64);
    for b in loader::ordered_batches(&idx, batch_size, false) {
        let f = test_features.index_select(0, &b);
        let sim = f.mm(&bank_t);
        let (w, i) = sim.topk(k, -1, true, true);
        let labels = bank_labels.index_select(0, &i.flatten(0, -1)).view([-1, k]);
        let weights = (w / temperature).exp();
        let scores = Tensor::zeros([b.size()[0], classes], (Kind::Float, f.device()))
            .scatter_add(1, &labels, &weights);
        let (t1, t5) = topk_hits(&scores, &test_labels.index_select(0, &b));
        top1 += t1;
        top5 += t5;
    }
    Ok(Accuracy {
        top1: 100.0 * top1 as f64 / m as f64,
        top5: 100.0 * top5 as f64 / m as f64,
    })
}

/// kNN accuracy of `model`'s encoder: bank = `bank` under the test transform, queries = `test`.
/// The encoder computes as its numerics say; the features come back fp32.
pub fn evaluate(model: &Model, bank: &Dataset, test: &Dataset, knn: &Knn) -> Result<Accuracy> {
    let _tf32 = model.numerics().tf32_scope()?;
    let bank_f = extract_features(model, &bank.images, knn.batch_size, "kNN bank");
    let test_f = extract_features(model, &test.images, knn.batch_size, "kNN test");
    for (f, set) in [(&bank_f, "bank"), (&test_f, "test")] {
        if !bool::try_from(f.isfinite().all())? {
            return Err(Error::NonFinite {
                what: "the encoder's features".into(),
                at: format!("the kNN {set} set"),
                value: f64::NAN,
            });
        }
    }
    knn_accuracy(
        &bank_f,
        &bank.labels,
        &test_f,
        &test.labels,
        bank.num_classes,
        knn,
    )
}

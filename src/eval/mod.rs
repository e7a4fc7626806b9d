//! Evaluation of an encoder: the weighted kNN monitor and the linear probe.
pub mod knn;
pub mod linear;

/// Top-1 and top-5 accuracy in percent.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Accuracy {
    pub top1: f64,
    pub top5: f64,
}

/// Counts how often `target` is the best, or among the best five, of each row of `scores`
/// (B×C, higher is better), as the reference does with `argsort(descending)`.
pub(crate) fn topk_hits(scores: &tch::Tensor, target: &tch::Tensor) -> (i64, i64) {
    let c = scores.size()[1];
    let (_, order) = scores.topk(c.min(5), -1, true, true);
    let hit = order.eq_tensor(&target.unsqueeze(-1));
    let top1 = hit.narrow(1, 0, 1).sum(tch::Kind::Int64).int64_value(&[]);
    let top5 = hit.any_dim(1, false).sum(tch::Kind::Int64).int64_value(&[]);
    (top1, top5)
}

//! What a run reports: the results table of `ipirm run` and what each maximize step found.
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::data::classes;
use crate::eval::{linear, Accuracy};
use crate::train::ipirm::{self, PartitionRecord};
use crate::train::EpochStats;

/// Everything `ipirm run` measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub device: String,
    pub dataset: String,
    pub train_images: i64,
    pub bank_images: i64,
    pub test_images: i64,
    pub raw_pixels_knn: Accuracy,
    pub init_knn: Accuracy,
    pub trained_knn: Accuracy,
    pub linear: Option<linear::LinearResult>,
    pub epochs: Vec<EpochStats>,
    /// IP-IRM: one entry per maximize step.
    pub partitions: Vec<PartitionSummary>,
    /// Wall seconds of the `ipirm run` that wrote this report (stages found cached cost none).
    pub seconds: f64,
}

/// What a maximize step found, in numbers a person can read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionSummary {
    pub after_epoch: usize,
    pub best_epoch: usize,
    pub epochs_run: usize,
    /// Risk (total) of the first and the best epoch.
    pub first_risk: f64,
    pub best_risk: f64,
    pub env_sizes: Vec<i64>,
    /// `composition[e][c]`: images of class c in environment e (last column: unlabelled).
    pub composition: Vec<Vec<i64>>,
}

impl PartitionSummary {
    pub fn new(p: &PartitionRecord, labels: &Tensor, classes: i64) -> PartitionSummary {
        PartitionSummary {
            after_epoch: p.after_epoch,
            best_epoch: p.best_epoch,
            epochs_run: p.risks.len(),
            first_risk: p.risks.first().map_or(f64::NAN, |r| r.total),
            best_risk: p.risks.get(p.best_epoch).map_or(f64::NAN, |r| r.total),
            env_sizes: p.env_sizes.clone(),
            composition: ipirm::class_composition(&p.partition, labels, classes),
        }
    }

    /// A few lines: sizes, then what each environment holds, its classes by name (`names`,
    /// indexed by label; `class c` past its end), largest first.
    pub fn describe(&self, names: &[&str]) -> String {
        let mut s = format!(
            "partition after epoch {}: {} maximize epochs, best at {} (risk {:.4} → {:.4}), environment sizes {:?}",
            self.after_epoch, self.epochs_run, self.best_epoch, self.first_risk, self.best_risk, self.env_sizes
        );
        for (e, counts) in self.composition.iter().enumerate() {
            let size: i64 = counts.iter().sum();
            s += &format!(
                "\n  env {e} ({size}): {}",
                classes::composition_mix(counts, names, MIX_NAMED)
            );
        }
        s
    }
}

/// Classes named per environment in a printout; the rest are summed (CIFAR-100 has 100).
const MIX_NAMED: usize = 10;

impl Report {
    /// The results table printed at the end of the main job.
    pub fn table(&self) -> String {
        let mut s = String::new();
        // The epochs' figures are those of the process that trained them, which for a cached
        // training was an earlier one (on other threads, maybe another machine).
        let ips = self.epochs.iter().map(|e| e.images_per_sec).sum::<f64>()
            / self.epochs.len().max(1) as f64;
        let trained: f64 = self.epochs.iter().map(|e| e.seconds).sum();
        s += &format!(
            "{} on {}: {} training images, kNN bank {}, test {}; training {}, {:.0} s at {:.0} img/s when they ran; this run {:.0} s\n",
            self.dataset,
            self.device,
            self.train_images,
            self.bank_images,
            self.test_images,
            crate::progress::count(self.epochs.len() as u64, "epoch"),
            trained,
            ips,
            self.seconds
        );
        s += "| features                         | kNN top-1 | kNN top-5 | linear top-1 | linear top-5 |\n";
        s += "|----------------------------------|-----------|-----------|--------------|--------------|\n";
        let row = |name: &str, a: &Accuracy, l: Option<&Accuracy>| {
            let (l1, l5) = l.map_or(("-".to_string(), "-".to_string()), |l| {
                (format!("{:.2}", l.top1), format!("{:.2}", l.top5))
            });
            format!(
                "| {name:<32} | {:>9.2} | {:>9.2} | {l1:>12} | {l5:>12} |\n",
                a.top1, a.top5
            )
        };
        s += &row("raw pixels (standardised)", &self.raw_pixels_knn, None);
        s += &row("encoder at initialisation", &self.init_knn, None);
        s += &row(
            "trained encoder",
            &self.trained_knn,
            self.linear.as_ref().map(|l| &l.test),
        );
        s += &format!(
            "kNN gain over initialisation: {:+.2} points top-1\n",
            self.trained_knn.top1 - self.init_knn.top1
        );
        for p in &self.partitions {
            s += &p.describe(classes::names_of(&self.dataset));
            s += "\n";
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report of a run that found its training cached: its epochs' time is not the run's.
    #[test]
    fn the_table_keeps_training_time_apart_from_the_run() {
        let acc = Accuracy {
            top1: 80.0,
            top5: 99.0,
        };
        let epoch = |epoch, seconds, images_per_sec| EpochStats {
            epoch,
            loss: 1.0,
            contrastive: 1.0,
            penalty: 0.0,
            penalty_weight: 0.0,
            lr: 1e-3,
            images_per_sec,
            seconds,
        };
        let report = Report {
            device: "cpu".into(),
            dataset: "fashion-mnist".into(),
            train_images: 10240,
            bank_images: 10000,
            test_images: 2000,
            raw_pixels_knn: acc,
            init_knn: acc,
            trained_knn: acc,
            linear: None,
            epochs: vec![epoch(1, 200.0, 50.0), epoch(2, 210.0, 48.0)],
            partitions: Vec::new(),
            seconds: 7.2,
        };
        let first = report.table().lines().next().unwrap().to_string();
        assert!(
            first.ends_with("training 2 epochs, 410 s at 49 img/s when they ran; this run 7 s"),
            "{first}"
        );
    }
}

//! The stages of a run wired together: load the data, train, evaluate, report.
//!
//! `ipirm run` (the README's main job) calls [`main_job`]: raw-pixel kNN and the kNN of the
//! encoder at initialisation as the two reference points, then training, the trained encoder's
//! kNN and the linear probe, so a results table can show the gain and where it stands.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::Device;

use crate::config::Config;
use crate::data::loader::RunData;
use crate::eval::{knn, linear, Accuracy};
use crate::train::{EpochStats, Trainer};
use crate::{Error, Result};

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
    pub seconds: f64,
}

impl Report {
    /// The results table printed at the end of the main job.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let ips = self.epochs.iter().map(|e| e.images_per_sec).sum::<f64>() / self.epochs.len().max(1) as f64;
        s += &format!(
            "{} on {}: {} training images, kNN bank {}, test {}; {} epochs at {:.0} img/s, {:.0} s in all\n",
            self.dataset,
            self.device,
            self.train_images,
            self.bank_images,
            self.test_images,
            self.epochs.len(),
            ips,
            self.seconds
        );
        s += "| features                         | kNN top-1 | kNN top-5 | linear top-1 | linear top-5 |\n";
        s += "|----------------------------------|-----------|-----------|--------------|--------------|\n";
        let row = |name: &str, a: &Accuracy, l: Option<&Accuracy>| {
            let (l1, l5) = l.map_or(("-".to_string(), "-".to_string()), |l| (format!("{:.2}", l.top1), format!("{:.2}", l.top5)));
            format!("| {name:<32} | {:>9.2} | {:>9.2} | {l1:>12} | {l5:>12} |\n", a.top1, a.top5)
        };
        s += &row("raw pixels (standardised)", &self.raw_pixels_knn, None);
        s += &row("encoder at initialisation", &self.init_knn, None);
        s += &row("trained encoder", &self.trained_knn, self.linear.as_ref().map(|l| &l.test));
        s += &format!("kNN gain over initialisation: {:+.2} points top-1\n", self.trained_knn.top1 - self.init_knn.top1);
        s
    }
}

/// Trains a model on `data.train` for `cfg.train.epochs`, calling `on_epoch` after each epoch
/// (with the trainer, so a caller can run the kNN monitor or save a checkpoint).
pub fn train(cfg: &Config, device: Device, data: &RunData, mut on_epoch: impl FnMut(&Trainer, &EpochStats) -> Result<()>) -> Result<(Trainer, Vec<EpochStats>)> {
    let mut trainer = Trainer::new(cfg, device)?;
    let mut stats = Vec::new();
    while trainer.epoch < cfg.train.epochs {
        let s = trainer.train_epoch(&data.train.images)?;
        on_epoch(&trainer, &s)?;
        stats.push(s);
    }
    Ok((trainer, stats))
}

/// The README's main job: reference points, training, kNN, linear probe.
pub fn main_job(cfg: &Config, device: Device, out_dir: &Path) -> Result<Report> {
    let start = std::time::Instant::now();
    let data = RunData::load(&cfg.data, device)?;
    let (k, tau, kb) = (cfg.knn.k, cfg.knn_temperature(), cfg.knn.batch_size);
    eprintln!(
        "data: {} ({} images) for training, {} ({}) as kNN bank, {} ({}) as test",
        data.train.name,
        data.train.len(),
        data.bank.name,
        data.bank.len(),
        data.test.name,
        data.test.len()
    );

    let (pb, pt) = knn::pixel_features(&data.bank.images, &data.test.images);
    let raw_pixels_knn = knn::knn_accuracy(&pb, &data.bank.labels, &pt, &data.test.labels, data.bank.num_classes, k, tau, kb)?;
    drop((pb, pt));
    eprintln!("kNN on raw pixels: top-1 {:.2}", raw_pixels_knn.top1);

    let init = Trainer::new(cfg, device)?;
    let init_knn = knn::evaluate(&init.model, &data.bank, &data.test, k, tau, kb)?;
    eprintln!("kNN of the encoder at initialisation: top-1 {:.2}", init_knn.top1);
    drop(init);

    let every = cfg.train.knn_every;
    let (trainer, epochs) = train(cfg, device, &data, |t, s| {
        let mut line = format!("epoch {}/{}: loss {:.4}, {:.0} img/s, {:.1} s", s.epoch, cfg.train.epochs, s.loss, s.images_per_sec, s.seconds);
        if every > 0 && s.epoch % every == 0 && s.epoch < cfg.train.epochs {
            let acc = knn::evaluate(&t.model, &data.bank, &data.test, k, tau, kb)?;
            line += &format!(", kNN top-1 {:.2} top-5 {:.2}", acc.top1, acc.top5);
        }
        eprintln!("{line}");
        Ok(())
    })?;
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let ckpt = out_dir.join("model.safetensors");
    trainer.vs.save(&ckpt)?;
    eprintln!("checkpoint: {}", ckpt.display());

    let trained_knn = knn::evaluate(&trainer.model, &data.bank, &data.test, k, tau, kb)?;
    eprintln!("kNN of the trained encoder: top-1 {:.2} top-5 {:.2}", trained_knn.top1, trained_knn.top5);
    let linear = if cfg.linear.epochs > 0 {
        let r = linear::linear_probe(&trainer.vs, &cfg.model, &cfg.linear, &data.bank, &data.test)?;
        eprintln!("linear probe ({} epochs): top-1 {:.2} top-5 {:.2}", cfg.linear.epochs, r.test.top1, r.test.top5);
        Some(r)
    } else {
        None
    };
    let report = Report {
        device: crate::device::describe(device),
        dataset: format!("{}", cfg.data.dataset),
        train_images: data.train.len(),
        bank_images: data.bank.len(),
        test_images: data.test.len(),
        raw_pixels_knn,
        init_knn,
        trained_knn,
        linear,
        epochs,
        seconds: start.elapsed().as_secs_f64(),
    };
    write_json(&out_dir.join("report.json"), &report)?;
    std::fs::write(out_dir.join("config.toml"), cfg.to_toml()).map_err(|e| Error::io(out_dir.join("config.toml"), e))?;
    Ok(report)
}

/// Writes `value` as pretty JSON.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("serialisable");
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

/// Default output folder of a run.
pub fn default_out_dir(name: &str) -> PathBuf {
    PathBuf::from("artifacts").join("runs").join(name)
}

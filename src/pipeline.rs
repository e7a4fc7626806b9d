//! The stages of a run wired together: load the data, train, evaluate, report.
//!
//! `ipirm run` (the README's main job) calls [`main_job`]: raw-pixel kNN and the kNN of the
//! encoder at initialisation as the two reference points, then training, the trained encoder's
//! kNN and the linear probe, so a results table can show the gain and where it stands.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::config::{Config, Method};
use crate::data::loader::RunData;
use crate::eval::{knn, linear, Accuracy};
use crate::train::ipirm::{self, PartitionRecord};
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
    /// IP-IRM: one entry per maximize step.
    pub partitions: Vec<PartitionSummary>,
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

    /// A few lines: sizes, then each environment's class counts.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "partition after epoch {}: {} maximize epochs, best at {} (risk {:.4} → {:.4}), environment sizes {:?}",
            self.after_epoch, self.epochs_run, self.best_epoch, self.first_risk, self.best_risk, self.env_sizes
        );
        for (e, counts) in self.composition.iter().enumerate() {
            let (labelled, unlabelled) = counts.split_at(counts.len() - 1);
            s += &format!("\n  env {e}: per class {labelled:?}");
            if unlabelled[0] > 0 {
                s += &format!(", unlabelled {}", unlabelled[0]);
            }
        }
        s
    }
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
        for p in &self.partitions {
            s += &p.describe();
            s += "\n";
        }
        s
    }
}

/// What training produced.
pub struct Trained {
    pub trainer: Trainer,
    pub epochs: Vec<EpochStats>,
    /// IP-IRM: the partition of every maximize step, in order (empty for SimCLR).
    pub partitions: Vec<PartitionRecord>,
}

/// Trains a model on `data.train` for `cfg.train.epochs` with the configured method. IP-IRM runs
/// a maximize step before epoch 1 and after every `ipirm.maximize_iter` epochs. `on_epoch` is
/// called after each epoch (with the trainer, so a caller can run the kNN monitor or save a
/// checkpoint), `on_partition` after each maximize step.
pub fn train(
    cfg: &Config,
    device: Device,
    data: &RunData,
    mut on_epoch: impl FnMut(&Trainer, &EpochStats) -> Result<()>,
    mut on_partition: impl FnMut(&PartitionRecord) -> Result<()>,
) -> Result<Trained> {
    let mut trainer = Trainer::new(cfg, device)?;
    let images = &data.train.images;
    let ipirm = cfg.train.method == Method::Ipirm;
    let mut partitions: Vec<PartitionRecord> = Vec::new();
    let mut on_device: Vec<Tensor> = Vec::new();
    let mut maximize = |trainer: &Trainer, partitions: &mut Vec<PartitionRecord>, on_device: &mut Vec<Tensor>| -> Result<()> {
        let previous = partitions.last().map(|p| &p.partition);
        let step = partitions.len();
        let rec = ipirm::maximize_step(trainer, images, previous, step as u64)?;
        // The reference optimises the previous partition's tensor in place when it does not
        // re-initialise, and from the third step on that tensor is also the last kept partition
        // (the first is kept as a copy), so under `retain_group` the kept partition becomes this
        // step's last iterate. The paper's runs all use `random_init`; the quirk is kept for parity.
        if !cfg.maximize.random_init && step >= 2 {
            *on_device.last_mut().expect("a previous partition") = rec.last_partition.to_device(device);
            partitions.last_mut().expect("a previous partition").partition = rec.last_partition.shallow_clone();
        }
        on_partition(&rec)?;
        on_device.push(rec.partition.to_device(device));
        partitions.push(rec);
        Ok(())
    };
    if ipirm {
        maximize(&trainer, &mut partitions, &mut on_device)?;
    }
    let mut stats = Vec::new();
    while trainer.epoch < cfg.train.epochs {
        let kept = if cfg.ipirm.retain_group { &on_device[..] } else { &on_device[on_device.len().saturating_sub(1)..] };
        let s = trainer.train_epoch(images, kept)?;
        on_epoch(&trainer, &s)?;
        stats.push(s);
        // The reference also runs a maximize step after the last epoch when maximize_iter divides
        // it; no minimize step ever uses that partition, so it is skipped here.
        if ipirm && trainer.epoch % cfg.ipirm.maximize_iter == 0 && trainer.epoch < cfg.train.epochs {
            maximize(&trainer, &mut partitions, &mut on_device)?;
        }
    }
    Ok(Trained { trainer, epochs: stats, partitions })
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
    let mut partitions = Vec::new();
    let on_epoch = |t: &Trainer, s: &EpochStats| {
        let mut line = format!("epoch {}/{}: loss {:.4}, {:.0} img/s, {:.1} s", s.epoch, cfg.train.epochs, s.loss, s.images_per_sec, s.seconds);
        if every > 0 && s.epoch % every == 0 && s.epoch < cfg.train.epochs {
            let acc = knn::evaluate(&t.model, &data.bank, &data.test, k, tau, kb)?;
            line += &format!(", kNN top-1 {:.2} top-5 {:.2}", acc.top1, acc.top5);
        }
        eprintln!("{line}");
        Ok(())
    };
    let on_partition = |p: &PartitionRecord| {
        let summary = PartitionSummary::new(p, &data.train.labels, data.train.num_classes);
        eprintln!("{}", summary.describe());
        partitions.push(summary);
        Ok(())
    };
    let Trained { trainer, epochs, .. } = train(cfg, device, &data, on_epoch, on_partition)?;
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
        partitions,
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

/// `ipirm maximize`: one offline maximize step on features read from a safetensors file.
///
/// `input` holds float32 `z1` and `z2` (N×d, one row per sample, already L2-normalised) and
/// optionally `init` (N×env_num float32 logits: the starting partition; without it the start is
/// N(0,1) drawn from `maximize.seed`). `output` receives `partition` (N×env_num logits, the best
/// found) and `risk` (epochs×4 float64: total, contrastive, penalty, constraint per epoch run).
pub fn maximize_features(input: &Path, output: &Path, cfg: &Config) -> Result<crate::train::maximize::MaximizeResult> {
    let named = tch::Tensor::read_safetensors(input).map_err(|e| match std::fs::metadata(input) {
        Err(io) => Error::io(input, io),
        Ok(_) => Error::file(input, "a safetensors file with float32 tensors z1, z2 (and optionally init)", e.to_string()),
    })?;
    let get = |name: &str| named.iter().find(|(n, _)| n == name).map(|(_, t)| t.shallow_clone());
    let names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
    let bad = |what: String| Error::file(input, what, format!("tensors {names:?}"));
    let check = |name: &str, t: &Tensor| -> Result<()> {
        if t.kind() != tch::Kind::Float {
            return Err(Error::file(input, format!("`{name}` of dtype float32"), format!("{:?}", t.kind())));
        }
        if t.dim() != 2 {
            return Err(Error::file(input, format!("`{name}` with 2 dimensions (N×d)"), format!("shape {:?}", t.size())));
        }
        if t.isfinite().logical_not().any().int64_value(&[]) != 0 {
            return Err(Error::file(input, format!("`{name}` without NaN or infinite values"), "non-finite values".to_string()));
        }
        Ok(())
    };
    let z1 = get("z1").ok_or_else(|| bad("a tensor `z1` (N×d float32)".into()))?;
    let z2 = get("z2").ok_or_else(|| bad("a tensor `z2` (N×d float32)".into()))?;
    check("z1", &z1)?;
    check("z2", &z2)?;
    if z1.size() != z2.size() {
        return Err(Error::file(input, "`z1` and `z2` of the same shape", format!("{:?} and {:?}", z1.size(), z2.size())));
    }
    let n = z1.size()[0];
    if n < 2 {
        return Err(Error::file(input, "at least 2 samples", format!("{n}")));
    }
    let e = cfg.maximize.env_num;
    let init = match get("init") {
        Some(init) => {
            check("init", &init)?;
            if init.size() != [n, e] {
                return Err(Error::file(input, format!("`init` of shape [{n}, {e}] (N × maximize.env_num)"), format!("{:?}", init.size())));
            }
            init
        }
        None => {
            tch::manual_seed(crate::rng::derive(cfg.maximize.seed, "maximize-init", 0));
            Tensor::randn([n, e], (tch::Kind::Float, tch::Device::Cpu))
        }
    };
    crate::rng::reseed(cfg.maximize.seed, "maximize-order", 0);
    let pb = crate::progress::bar((cfg.maximize.max_epoch + 1) as u64, "maximize");
    let result = crate::train::maximize::maximize_offline(&z1, &z2, &init, &cfg.maximize, cfg.maximize_temperature(), |t, r| {
        crate::progress::line(&pb, format!("epoch {t}: risk {:.4} (contrastive {:.4}, penalty {:.6}, constraint {:.4})", r.total, r.contrastive, r.penalty, r.constraint));
        pb.inc(1);
    })?;
    pb.finish_and_clear();
    let risk: Vec<f64> = result.risks.iter().flat_map(|r| [r.total, r.contrastive, r.penalty, r.constraint]).collect();
    let risk = Tensor::from_slice(&risk).view([-1, 4]);
    Tensor::write_safetensors(&[("partition", &result.partition), ("risk", &risk)], output)
        .map_err(|e| Error::file(output, "a writable path for the output safetensors", e.to_string()))?;
    Ok(result)
}

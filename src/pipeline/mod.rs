//! The stages of a run wired together: load the data, train, evaluate, report.
//!
//! `ipirm run` (the README's main job) calls [`main_job`]: raw-pixel kNN and the kNN of the
//! encoder at initialisation as the two reference points, then training, the trained encoder's
//! kNN and the linear probe, so a results table can show the gain and where it stands.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::config::Config;
use crate::data::loader::RunData;
use crate::eval::{knn, linear, Accuracy};
use crate::store::Store;
use crate::train::ipirm::{self, PartitionRecord};
use crate::train::maximize::EpochRisk;
use crate::train::{EpochStats, Trainer};
use crate::{Error, Result};

pub mod stages;
use stages::{short, take, version, Ctx, Plan};

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
    /// The figures of every epoch (those of epochs before a resume point from the store).
    pub epochs: Vec<EpochStats>,
    /// IP-IRM: the partition of every maximize step, in order (empty for SimCLR).
    pub partitions: Vec<PartitionRecord>,
    /// Key of the final checkpoint.
    pub checkpoint: String,
}

/// Where a run can resume: the latest stored checkpoint whose partitions are all stored too.
fn resume_point(ctx: &Ctx, plan: &Plan) -> Result<Option<usize>> {
    for e in (0..plan.checkpoints.len()).rev() {
        if !ctx.store.contains(&plan.checkpoints[e].key)? {
            continue;
        }
        let mut ok = true;
        for p in plan.partitions.iter().filter(|p| p.after_epoch < e) {
            ok &= ctx.store.contains(&p.partition.key)?;
        }
        if ok {
            return Ok(Some(e));
        }
    }
    Ok(None)
}

fn partition_tensors(rec: &PartitionRecord) -> Vec<(String, Tensor)> {
    let risk: Vec<f64> = rec.risks.iter().flat_map(|r| [r.total, r.contrastive, r.penalty, r.constraint]).collect();
    [
        ("partition", rec.partition.shallow_clone()),
        ("last_partition", rec.last_partition.shallow_clone()),
        ("risk", Tensor::from_slice(&risk).view([-1, 4])),
        ("best_epoch", Tensor::from_slice(&[rec.best_epoch as i64])),
        ("after_epoch", Tensor::from_slice(&[rec.after_epoch as i64])),
    ]
    .into_iter()
    .map(|(n, t)| (n.to_string(), t))
    .collect()
}

/// A partition stored by [`train`], read back.
pub fn partition_from_tensors(mut named: Vec<(String, Tensor)>) -> Result<PartitionRecord> {
    let partition = take(&mut named, "partition")?;
    let risk = Vec::<Vec<f64>>::try_from(take(&mut named, "risk")?)?;
    let env_sizes = Vec::<i64>::try_from(partition.argmax(1, false).bincount::<Tensor>(None, partition.size()[1]))?;
    Ok(PartitionRecord {
        after_epoch: take(&mut named, "after_epoch")?.int64_value(&[0]) as usize,
        best_epoch: take(&mut named, "best_epoch")?.int64_value(&[0]) as usize,
        last_partition: take(&mut named, "last_partition")?,
        risks: risk.iter().map(|r| EpochRisk { total: r[0], contrastive: r[1], penalty: r[2], constraint: r[3] }).collect(),
        env_sizes,
        partition,
    })
}

/// Trains on `data.train` along `plan` (the stage keys of `ctx.cfg` on the dataset) with the
/// configured method through the store: resumes from the
/// latest stored checkpoint of this config (a finished run is entirely a cache hit), stores the
/// figures of every epoch, the features and partition of every maximize step, and a checkpoint
/// every `store.checkpoint_every` epochs, after the last epoch and wherever a maximize step runs.
/// IP-IRM runs a maximize step before epoch 1 and after every `ipirm.maximize_iter` epochs.
/// `on_epoch` is called after each epoch trained (with the trainer, so a caller can run the kNN
/// monitor), `on_partition` after each maximize step run or loaded.
pub fn train(
    ctx: &Ctx,
    data: &RunData,
    plan: &Plan,
    mut on_epoch: impl FnMut(&Trainer, &EpochStats) -> Result<()>,
    mut on_partition: impl FnMut(&PartitionRecord) -> Result<()>,
) -> Result<Trained> {
    let cfg = ctx.cfg;
    let images = &data.train.images;
    let epochs_total = cfg.train.epochs;
    let mut trainer = Trainer::new(cfg, ctx.device)?;
    // The latest stored checkpoint; one found damaged is dropped by `load_tensors`, and the
    // search goes on from what is left.
    let mut loaded = false;
    while let Some(e) = resume_point(ctx, plan)? {
        let Some(state) = ctx.load_tensors(&plan.checkpoints[e].key)? else { continue };
        trainer.load_state(&state)?;
        loaded = true;
        if e == epochs_total {
            eprintln!("training: cached, all {e} epochs ({})", short(&plan.checkpoints[e].key));
        } else if e > 0 {
            eprintln!("training: resuming from the stored checkpoint after epoch {e} ({})", short(&plan.checkpoints[e].key));
        }
        break;
    }
    if !loaded {
        ctx.store.put_tensors(&ctx.planned(&plan.checkpoints[0])?, &named_refs(&trainer.state()))?;
    }

    let mut epochs = Vec::new();
    for (i, c) in plan.curves.iter().enumerate().take(trainer.epoch) {
        match ctx.load_record::<EpochStats>(&c.key)? {
            Some(s) => epochs.push(s),
            None => eprintln!("note: the figures of epoch {} are not in the store", i + 1),
        }
    }

    let mut partitions: Vec<PartitionRecord> = Vec::new();
    let mut maximize = |trainer: &Trainer, partitions: &mut Vec<PartitionRecord>| -> Result<()> {
        let step = partitions.len();
        let planned = &plan.partitions[step];
        let rec = match ctx.load_tensors(&planned.partition.key)? {
            Some(named) => partition_from_tensors(named)?,
            None => {
                let st = ctx.planned(&planned.partition)?;
                let views = match &planned.features {
                    None => None,
                    Some(fp) => Some(match ctx.load_tensors(&fp.key)? {
                        Some(mut f) => (take(&mut f, "z1")?.to_device(ctx.device), take(&mut f, "z2")?.to_device(ctx.device)),
                        None => {
                            let fst = ctx.planned(fp)?;
                            let (z1, z2) = ipirm::extract_view_pairs(trainer, images, step as u64);
                            ctx.store.put_tensors(&fst, &[("z1", &z1), ("z2", &z2)])?;
                            (z1, z2)
                        }
                    }),
                };
                let views = views.as_ref().map(|(a, b)| (a, b));
                let previous = partitions.last().map(|p| &p.partition);
                let rec = ipirm::learn_partition(trainer, images, views, previous, step as u64)?;
                ctx.store.put_tensors(&st, &named_refs(&partition_tensors(&rec)))?;
                rec
            }
        };
        on_partition(&rec)?;
        partitions.push(rec);
        Ok(())
    };
    // Partitions learned up to the resume point (and the one right at it, if it was stored).
    // (Those before it are stored: `resume_point` checked; the one right at it is loaded if
    // stored, else learned from the loaded checkpoint.)
    for _ in plan.partitions.iter().filter(|p| p.after_epoch <= trainer.epoch) {
        maximize(&trainer, &mut partitions)?;
    }

    let every = cfg.store.checkpoint_every.max(1);
    while trainer.epoch < epochs_total {
        let kept = ipirm::kept_partitions(&partitions, cfg, ctx.device);
        let curve = &plan.curves[trainer.epoch];
        let s = trainer.train_epoch(images, &kept)?;
        let e = trainer.epoch;
        ctx.store.put_record(&ctx.planned(curve)?, &s)?;
        let maximize_next = plan.partitions.iter().any(|p| p.after_epoch == e);
        if e % every == 0 || e == epochs_total || maximize_next {
            ctx.store.put_tensors(&ctx.planned(&plan.checkpoints[e])?, &named_refs(&trainer.state()))?;
        }
        on_epoch(&trainer, &s)?;
        epochs.push(s);
        if maximize_next {
            maximize(&trainer, &mut partitions)?;
        }
    }
    let checkpoint = plan.checkpoints[trainer.epoch].key.clone();
    Ok(Trained { trainer, epochs, partitions, checkpoint })
}

fn named_refs(named: &[(String, Tensor)]) -> Vec<(&str, &Tensor)> {
    named.iter().map(|(n, t)| (n.as_str(), t)).collect()
}

/// The dataset stage: a fingerprint of the three image sets (sha256 of their bytes and labels),
/// computed every run so changed files are noticed; its key covers the data config and the
/// fingerprint, so every later stage depends on the data's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetRecord {
    pub names: Vec<String>,
    pub counts: Vec<i64>,
    pub sha256: String,
}

pub fn dataset_stage(ctx: &Ctx, data: &RunData) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let sets = [&data.train, &data.bank, &data.test];
    for ds in sets {
        for t in [&ds.images, &ds.labels] {
            let cpu = t.to_device(Device::Cpu).contiguous();
            let n = cpu.numel() * cpu.kind().elt_size_in_bytes();
            let mut bytes = vec![0u8; n];
            cpu.f_copy_data_u8(&mut bytes, cpu.numel())?;
            h.update(&bytes);
        }
    }
    let rec = DatasetRecord {
        names: sets.iter().map(|d| d.name.clone()).collect(),
        counts: sets.iter().map(|d| d.len()).collect(),
        sha256: format!("{:x}", h.finalize()),
    };
    let st = ctx.stage("dataset", version::DATASET, &ctx.cfg.data, &[rec.sha256.clone()])?;
    let key = st.key().to_string();
    if ctx.load_record::<DatasetRecord>(&key)?.is_none() {
        ctx.store.put_record(&st, &rec)?;
    }
    Ok(key)
}

/// The README's main job: reference points, training, kNN, linear probe, every stage through
/// the store under a run named `name`.
pub fn main_job(cfg: &Config, device: Device, store: &Store, name: &str, out_dir: &Path) -> Result<Report> {
    let start = std::time::Instant::now();
    let run = store.start_run(name, cfg)?;
    let ctx = Ctx { store, run: run.id.clone(), device, cfg };
    eprintln!("run {} in store {}", run.id, store.root().display());
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
    let dataset_key = dataset_stage(&ctx, &data)?;
    let knn_sections = (&cfg.knn, &cfg.train);

    let st = ctx.stage("knn-pixels", version::PIXEL_KNN, &knn_sections, &[dataset_key.clone()])?;
    let raw_pixels_knn = ctx.cached_record(st, "kNN on raw pixels", || {
        let (pb, pt) = knn::pixel_features(&data.bank.images, &data.test.images);
        knn::knn_accuracy(&pb, &data.bank.labels, &pt, &data.test.labels, data.bank.num_classes, k, tau, kb)
    })?;
    eprintln!("kNN on raw pixels: top-1 {:.2}", raw_pixels_knn.top1);

    let plan = Plan::new(cfg, &dataset_key)?;
    let st = ctx.stage("knn", version::KNN, &knn_sections, &[plan.checkpoints[0].key.clone(), dataset_key.clone()])?;
    let init_knn = ctx.cached_record(st, "kNN of the encoder at initialisation", || {
        let init = Trainer::new(cfg, device)?;
        knn::evaluate(&init.model, &data.bank, &data.test, k, tau, kb)
    })?;
    eprintln!("kNN of the encoder at initialisation: top-1 {:.2}", init_knn.top1);

    let every = cfg.train.knn_every;
    let mut partitions = Vec::new();
    let on_epoch = |t: &Trainer, s: &EpochStats| {
        let mut line = format!(
            "epoch {}/{}: loss {:.4} (contrastive {:.4}, penalty {:.5} × {}), {:.0} img/s, {:.1} s",
            s.epoch, cfg.train.epochs, s.loss, s.contrastive, s.penalty, s.penalty_weight, s.images_per_sec, s.seconds
        );
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
    let Trained { trainer, epochs, checkpoint, .. } = train(&ctx, &data, &plan, on_epoch, on_partition)?;

    let st = ctx.stage("knn", version::KNN, &knn_sections, &[checkpoint.clone(), dataset_key.clone()])?;
    let trained_knn = ctx.cached_record(st, "kNN of the trained encoder", || knn::evaluate(&trainer.model, &data.bank, &data.test, k, tau, kb))?;
    eprintln!("kNN of the trained encoder: top-1 {:.2} top-5 {:.2}", trained_knn.top1, trained_knn.top5);
    let linear = if cfg.linear.epochs > 0 {
        let st = ctx.stage("linear", version::LINEAR, &(&cfg.linear, &cfg.model), &[checkpoint.clone(), dataset_key.clone()])?;
        let r = ctx.cached_record(st, "linear probe", || linear::linear_probe(&trainer.vs, &cfg.model, &cfg.linear, &data.bank, &data.test))?;
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
    let st = ctx.stage("report", version::REPORT, cfg, &[checkpoint.clone(), dataset_key])?;
    store.put_record(&st, &report)?;
    store.finish_run(&run.id)?;
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    trainer.vs.save(out_dir.join("model.safetensors"))?;
    write_json(&out_dir.join("report.json"), &report)?;
    std::fs::write(out_dir.join("config.toml"), cfg.to_toml()).map_err(|e| Error::io(out_dir.join("config.toml"), e))?;
    eprintln!("run {} finished; report, config and model also in {}", run.id, out_dir.display());
    Ok(report)
}

/// Writes `value` as pretty JSON.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("serialisable");
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

/// Default output folder of a run: `<store>/runs/<name>`.
pub fn default_out_dir(store: &Path, name: &str) -> PathBuf {
    store.join("runs").join(name)
}

/// `ipirm maximize`: one offline maximize step on features read from a safetensors file.
///
/// `input` holds float32 `z1` and `z2` (N×d, one row per sample, already L2-normalised),
/// optionally `init` (N×env_num float32 logits: the starting partition; without it the start is
/// N(0,1) drawn from `maximize.seed`) and optionally `order` (int64, K×N: row `t` a permutation of
/// `0..N`, the batch order of epoch `t`, e.g. recorded from a reference run; the run fails if it
/// reaches an epoch `t ≥ K`). Without `order` the batch order is the one the reference's shuffling
/// `DataLoader` draws when `torch.manual_seed(maximize.seed)` is called right before
/// `utils.auto_split_offline` ([`ReferenceShuffle`](crate::train::maximize::ReferenceShuffle)),
/// so such a reference run with the same `init` and settings is reproduced.
/// `output` receives `partition` (N×env_num logits, the best found) and `risk` (epochs×4
/// float64: total, contrastive, penalty, constraint per epoch run).
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
    let order: Box<dyn Fn(usize) -> Result<Tensor>> = match get("order") {
        Some(order) => {
            if order.kind() != tch::Kind::Int64 || order.dim() != 2 || order.size()[1] != n || order.size()[0] < 1 {
                return Err(Error::file(
                    input,
                    format!("`order` of dtype int64 and shape [epochs, {n}] (one permutation of 0..{n} per epoch)"),
                    format!("{:?} of shape {:?}", order.kind(), order.size()),
                ));
            }
            let rows = order.size()[0];
            let sorted = order.sort(1, false).0;
            if !sorted.equal(&Tensor::arange(n, (tch::Kind::Int64, Device::Cpu)).expand([rows, n], false)) {
                return Err(Error::file(input, format!("`order` rows that are permutations of 0..{n}"), "a row that is not"));
            }
            let input = input.to_path_buf();
            Box::new(move |t: usize| {
                if t as i64 >= rows {
                    return Err(Error::file(&input, format!("an `order` row for epoch {t}"), format!("{rows} rows")));
                }
                Ok(order.get(t as i64))
            })
        }
        None => {
            let shuffle = crate::train::maximize::ReferenceShuffle::new(cfg.maximize.seed, n, cfg.maximize.max_epoch + 1)?;
            Box::new(move |t: usize| shuffle.order(t))
        }
    };
    let pb = crate::progress::bar((cfg.maximize.max_epoch + 1) as u64, "maximize");
    let result = crate::train::maximize::maximize_offline_with_order(&z1, &z2, &init, &cfg.maximize, cfg.maximize_temperature(), order, |t, r| {
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

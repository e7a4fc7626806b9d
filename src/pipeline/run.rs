//! The jobs that train through the store: `ipirm run` (the README's main job, [`main_job`]:
//! raw-pixel kNN and the encoder at initialisation as reference points, training, the trained
//! encoder's kNN and linear probe) and `ipirm train` ([`train_job`]). Each is handed the data,
//! read by its caller before the store is opened (so that a run whose data cannot be read leaves
//! no store behind, and seeds share one read); it starts a run, stores its dataset stage and
//! plans every key before any work; progress goes to stderr.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::artifacts::{short, Ctx, DatasetRecord, MonitorPoint};
use super::branch::{check_branch, resolve_branch};
use super::model_file::save_model;
use super::output::write_json;
use super::report::{PartitionSummary, Report};
use super::stages::{self, Plan, Planned, StageKind};
use super::training::{train, Trained};
use crate::config::Config;
use crate::data::loader::RunData;
use crate::distributed::{self, Group};
use crate::eval::{knn, linear};
use crate::fit::Fitted;
use crate::store::Store;
use crate::train::ipirm::PartitionRecord;
use crate::train::{Checkpoint, EpochStats, Trainer};
use crate::{Error, Result};

/// A run started in the store with its data, its dataset stage stored and its plan made.
struct Started<'a> {
    ctx: Ctx<'a>,
    data: &'a RunData,
    dataset_key: String,
    plan: Plan,
    /// This process's group when it is rank 0 of a data-parallel run.
    group: Option<Arc<Group>>,
}

/// Starts a run named `name` of `cfg` (a copy of `fitted.cfg`, the config fitted to the
/// machine): resolves a branch (`ipirm.from_partition`) to a stored partition, records the run
/// (its config as fitted: the numerics actually used), fingerprints `data` (read by
/// `Config::load_training_data` from `fitted.cfg`) and plans.
fn start<'a>(
    cfg: &'a mut Config,
    fitted: &Fitted,
    store: &'a Store,
    name: &str,
    data: &'a RunData,
    group: Option<Arc<Group>>,
) -> Result<Started<'a>> {
    let as_given = cfg.clone();
    let device = fitted.device;
    eprintln!("numerics: {}", fitted.numerics.describe());
    let branch = match cfg.ipirm.from_partition.clone() {
        Some(spec) => {
            let b = resolve_branch(store, &spec)?;
            eprintln!(
                "branching from partition {} (learned after epoch {}, from checkpoint {})",
                short(&b.partition),
                b.after_epoch,
                short(&b.checkpoint)
            );
            cfg.ipirm.from_partition = Some(b.partition.clone());
            Some(b)
        }
        None => None,
    };
    let cfg: &'a Config = cfg;
    let sha256 = data.fingerprint()?;
    // As rank 0 of several: the other ranks must run the same job (crate::distributed::agree).
    if let Some(g) = &group {
        distributed::agree(g, &distributed::description(&as_given, &sha256, device, g)?)?;
    }
    // The branch and the plan are checked before the run is recorded: a refused branch left
    // an unfinished run under the name.
    let (dataset, dataset_record) = dataset_stage(cfg, data, &sha256)?;
    let dataset_key = dataset.key.clone();
    if let Some(b) = &branch {
        check_branch(store, cfg, b, &dataset_key, data.train.len())?;
    }
    if cfg.train.epochs >= 1000 {
        // About 0.1 ms an epoch: seconds before anything else shows for a long run.
        eprintln!("planning the keys of {} epochs…", cfg.train.epochs);
    }
    let plan = Plan::new(cfg, &dataset_key, branch.as_ref())?;
    let run = store.start_run(name, cfg)?;
    eprintln!("run {} in store {}", run.id, store.root().display());
    let ctx = Ctx {
        store,
        run: run.id,
        device,
        cfg,
    };
    eprintln!(
        "data: {} ({} images) for training, {} ({}) as kNN bank, {} ({}) as test",
        data.train.name,
        data.train.len(),
        data.bank.name,
        data.bank.len(),
        data.test.name,
        data.test.len()
    );
    if ctx.load_record::<DatasetRecord>(&dataset_key)?.is_none() {
        ctx.save_record(&dataset, &dataset_record)?;
    }
    Ok(Started {
        ctx,
        data,
        dataset_key,
        plan,
        group,
    })
}

/// Trains along the run's plan, printing each epoch and each maximize step's partition; every
/// `train.knn_every` epochs (not at the last, which the final evaluation covers) the kNN
/// monitor runs and is stored.
fn train_printing(s: &Started) -> Result<(Trained, Vec<PartitionSummary>)> {
    let (ctx, cfg, data) = (&s.ctx, s.ctx.cfg, s.data);
    let kp = knn::Knn::of(cfg);
    let every = cfg.train.knn_every;
    let mut partitions = Vec::new();
    let on_epoch = |t: &Trainer, e: &EpochStats| {
        let mut line = format!(
            "epoch {}/{}: loss {:.4} (contrastive {:.4}, penalty {:.5} × {}), {:.0} img/s, {:.1} s",
            e.epoch,
            cfg.train.epochs,
            e.loss,
            e.contrastive,
            e.penalty,
            e.penalty_weight,
            e.images_per_sec,
            e.seconds
        );
        if every > 0 && e.epoch.is_multiple_of(every) && e.epoch < cfg.train.epochs {
            let st = monitor_stage(
                cfg,
                &s.plan.checkpoint(e.epoch).key,
                &s.dataset_key,
                e.epoch,
            )?;
            let point = ctx.cached_record(&st, "kNN monitor", || {
                Ok(MonitorPoint {
                    epoch: e.epoch,
                    knn: knn::evaluate(&t.model, &data.bank, &data.test, &kp)?,
                })
            })?;
            line += &format!(
                ", kNN top-1 {:.2} top-5 {:.2}",
                point.knn.top1, point.knn.top5
            );
        }
        eprintln!("{line}");
        Ok(())
    };
    let on_partition = |p: &PartitionRecord| {
        let summary = PartitionSummary::new(p, &data.train.labels, data.train.num_classes);
        eprintln!("{}", summary.describe(cfg.data.dataset.class_names()));
        partitions.push(summary);
        Ok(())
    };
    let trained = train(ctx, data, &s.plan, on_epoch, on_partition, s.group.as_ref())?;
    // The monitor points of epochs before a resume point (those after it were attached as
    // they were computed or loaded). One never computed is computed from its epoch's stored
    // checkpoint, as a run that never stopped computed it: the old last epoch of an extended
    // run (the final evaluation stood for it then), or a kill between a checkpoint and its
    // monitor.
    let monitors = (s.plan.start() + 1..cfg.train.epochs)
        .filter(|e| every > 0 && e.is_multiple_of(every))
        .map(|e| {
            Ok((
                e,
                monitor_stage(cfg, &s.plan.checkpoint(e).key, &s.dataset_key, e)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let keys: Vec<&str> = monitors.iter().map(|(_, m)| m.key.as_str()).collect();
    let stored = ctx.attach_stored(&keys)?;
    let mut model: Option<Trainer> = None;
    for ((e, st), _) in monitors.iter().zip(stored).filter(|(_, stored)| !stored) {
        let Some(ckpt) = ctx.load::<Checkpoint>(&s.plan.checkpoint(*e).key)? else {
            continue;
        };
        let t = match &mut model {
            Some(t) => t,
            None => model.insert(Trainer::new(cfg, ctx.device)?),
        };
        t.restore(&ckpt)?;
        let point = ctx.cached_record(st, &format!("kNN monitor after epoch {e}"), || {
            Ok(MonitorPoint {
                epoch: *e,
                knn: knn::evaluate(&t.model, &data.bank, &data.test, &kp)?,
            })
        })?;
        eprintln!(
            "kNN monitor after epoch {e} (from its checkpoint): top-1 {:.2} top-5 {:.2}",
            point.knn.top1, point.knn.top5
        );
    }
    Ok((trained, partitions))
}

/// The kNN monitor's stage after `epoch` epochs.
fn monitor_stage(
    cfg: &Config,
    checkpoint: &str,
    dataset_key: &str,
    epoch: usize,
) -> Result<Planned> {
    Planned::new(
        StageKind::Monitor,
        &stages::monitor_params(cfg, epoch),
        vec![checkpoint.to_string(), dataset_key.to_string()],
    )
}

/// The README's main job: reference points (raw pixels, the encoder at initialisation),
/// training, the trained encoder's kNN and linear probe, every stage through the store under a
/// run named `name`; the report, config and model are also written to `out_dir`.
pub fn main_job(
    fitted: &Fitted,
    store: &Store,
    name: &str,
    out_dir: &Path,
    data: &RunData,
    group: Option<Arc<Group>>,
) -> Result<Report> {
    let begun = std::time::Instant::now();
    // The output folder first: a bad --out fails before any work.
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let mut cfg = fitted.cfg.clone();
    let s = start(&mut cfg, fitted, store, name, data, group)?;
    let (ctx, data, dataset_key) = (&s.ctx, s.data, &s.dataset_key);
    let cfg = ctx.cfg;
    let kp = knn::Knn::of(cfg);

    let pixels = Planned::new(
        StageKind::PixelKnn,
        &stages::knn_params(cfg),
        vec![dataset_key.clone()],
    )?;
    let raw_pixels_knn = ctx.cached_record(&pixels, "kNN on raw pixels", || {
        let (pb, pt) = knn::pixel_features(&data.bank.images, &data.test.images);
        knn::knn_accuracy(
            &pb,
            &data.bank.labels,
            &pt,
            &data.test.labels,
            data.bank.num_classes,
            &kp,
        )
    })?;
    eprintln!("kNN on raw pixels: top-1 {:.2}", raw_pixels_knn.top1);

    let init = Planned::new(StageKind::Checkpoint, &stages::init_params(cfg), Vec::new())?;
    let init_knn = ctx.cached_record(
        &knn_stage(cfg, &init.key, dataset_key)?,
        "kNN of the encoder at initialisation",
        || {
            knn::evaluate(
                &Trainer::new(cfg, fitted.device)?.model,
                &data.bank,
                &data.test,
                &kp,
            )
        },
    )?;
    eprintln!(
        "kNN of the encoder at initialisation: top-1 {:.2}",
        init_knn.top1
    );

    let (
        Trained {
            trainer,
            epochs,
            checkpoint,
            ..
        },
        partitions,
    ) = train_printing(&s)?;

    let trained_knn = ctx.cached_record(
        &knn_stage(cfg, &checkpoint, dataset_key)?,
        "kNN of the trained encoder",
        || knn::evaluate(&trainer.model, &data.bank, &data.test, &kp),
    )?;
    eprintln!(
        "kNN of the trained encoder: top-1 {:.2} top-5 {:.2}",
        trained_knn.top1, trained_knn.top5
    );
    let linear = if cfg.linear.epochs > 0 {
        let st = Planned::new(
            StageKind::Linear,
            &stages::linear_params(cfg),
            vec![checkpoint.clone(), dataset_key.clone()],
        )?;
        let r = ctx.cached_record(&st, "linear probe", || {
            linear::linear_probe(
                &trainer.vs,
                &cfg.model,
                trainer.model.numerics(),
                &cfg.linear,
                cfg.data.views(),
                &data.bank,
                &data.test,
            )
        })?;
        eprintln!(
            "linear probe ({}): top-1 {:.2} top-5 {:.2}",
            crate::progress::count(cfg.linear.epochs as u64, "epoch"),
            r.test.top1,
            r.test.top5
        );
        Some(r)
    } else {
        None
    };
    let report = Report {
        device: crate::device::describe(fitted.device),
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
        seconds: begun.elapsed().as_secs_f64(),
    };
    let st = Planned::new(
        StageKind::Report,
        &stages::report_params(cfg)?,
        vec![checkpoint.clone(), dataset_key.clone()],
    )?;
    ctx.save_record(&st, &report)?;
    store.finish_run(&ctx.run)?;
    save_model(&trainer.vs, &out_dir.join("model.safetensors"))?;
    write_json(&out_dir.join("report.json"), &report)?;
    std::fs::write(out_dir.join("config.toml"), cfg.to_toml())
        .map_err(|e| Error::io(out_dir.join("config.toml"), e))?;
    eprintln!(
        "run {} finished; report, config and model also in {}",
        ctx.run,
        out_dir.display()
    );
    Ok(report)
}

/// The kNN stage of the encoder of checkpoint `checkpoint`.
fn knn_stage(cfg: &Config, checkpoint: &str, dataset_key: &str) -> Result<Planned> {
    Planned::new(
        StageKind::Knn,
        &stages::encoder_knn_params(cfg),
        vec![checkpoint.to_string(), dataset_key.to_string()],
    )
}

/// What `ipirm train` produced.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub run: String,
    /// Key of the final checkpoint in the store.
    pub checkpoint: String,
    /// The final model's variables, also written to the output folder.
    pub model_file: PathBuf,
}

/// `ipirm train`: training alone, through the store; the final model and the config are also
/// written to `out_dir`. Refused under a name whose latest finished run is a main job's.
pub fn train_job(
    fitted: &Fitted,
    store: &Store,
    name: &str,
    out_dir: &Path,
    data: &RunData,
    group: Option<Arc<Group>>,
) -> Result<TrainOutcome> {
    check_training_name(store, name)?;
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let mut cfg = fitted.cfg.clone();
    let s = start(&mut cfg, fitted, store, name, data, group)?;
    let (trained, _) = train_printing(&s)?;
    store.finish_run(&s.ctx.run)?;
    let model_file = out_dir.join("model.safetensors");
    save_model(&trained.trainer.vs, &model_file)?;
    let toml = out_dir.join("config.toml");
    std::fs::write(&toml, s.ctx.cfg.to_toml()).map_err(|e| Error::io(toml, e))?;
    Ok(TrainOutcome {
        run: s.ctx.run.clone(),
        checkpoint: trained.checkpoint,
        model_file,
    })
}

/// A training-only run under the name of main-job runs would become that name's latest run:
/// `report`, `report --check` and `compare` would read its missing scores, `gc` would delete the
/// main job's evaluations, and its files would land beside the main job's report.json. Refused
/// when the name's latest finished run holds a report (the main job's last stage).
fn check_training_name(store: &Store, name: &str) -> Result<()> {
    let latest = store.latest_runs()?.into_iter();
    let Some(run) = latest.filter(|r| r.finished).find(|r| r.name == name) else {
        return Ok(());
    };
    for key in &run.artifacts {
        if (store.get_meta(key)?).is_some_and(|a| a.stage == StageKind::Report.name()) {
            return Err(Error::config(
                "--name",
                format!("`{name}` names runs of `ipirm run` (run {} with its kNN and linear scores); a training-only run under it would hide them from report and compare, and gc would delete them: give this one its own --name", run.id),
            ));
        }
    }
    Ok(())
}

/// The dataset stage, planned, and the record a run stores under it: a fingerprint of the three
/// image sets (sha256 of their bytes and labels), computed on every read of the data so changed
/// files are noticed; its key covers the data settings and the fingerprint, so every later
/// stage depends on the data's content.
pub fn dataset_stage(
    cfg: &Config,
    data: &RunData,
    sha256: &str,
) -> Result<(Planned, DatasetRecord)> {
    let sets = [&data.train, &data.bank, &data.test];
    let rec = DatasetRecord {
        names: sets.iter().map(|d| d.name.clone()).collect(),
        counts: sets.iter().map(|d| d.len()).collect(),
        sha256: sha256.to_string(),
    };
    let st = Planned::new(
        StageKind::Dataset,
        &stages::dataset_params(cfg),
        vec![rec.sha256.clone()],
    )?;
    Ok((st, rec))
}

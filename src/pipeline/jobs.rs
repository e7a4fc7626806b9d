//! The jobs the command line runs, one function each: `run` (the main job), `train`, `eval`
//! of a checkpoint file, the file-based `maximize`. Each returns a typed result; progress goes
//! to stderr.
use std::path::{Path, PathBuf};

use serde::Serialize;
use tch::{Device, Tensor};

use super::artifacts::{short, Ctx, DatasetRecord, MonitorPoint};
use super::report::{PartitionSummary, Report};
use super::stages::{self, Branch, Plan, Planned, StageKind};
use super::training::{train, Trained};
use crate::config::Config;
use crate::data::loader::RunData;
use crate::eval::{knn, linear, Accuracy};
use crate::store::{Found, Store};
use crate::train::ipirm::PartitionRecord;
use crate::train::{EpochStats, Trainer};
use crate::{Error, Result};

/// A run started in the store with its data read, its dataset stage stored and its plan made.
struct Started<'a> {
    ctx: Ctx<'a>,
    data: RunData,
    dataset_key: String,
    plan: Plan,
}

/// Starts a run named `name`: resolves the numerics for `device` (`train.precision`,
/// `channels_last`, `tf32`; [`crate::numerics`]) and a branch (`ipirm.from_partition`) to a
/// stored partition, records the run (with the resolved values in its config), reads the data
/// and plans: the stage keys hold the numerics actually used.
fn start<'a>(
    cfg: &'a mut Config,
    device: Device,
    store: &'a Store,
    name: &str,
) -> Result<Started<'a>> {
    let as_given = cfg.clone();
    let numerics = crate::numerics::resolve_config(cfg, device)?;
    eprintln!("numerics: {}", numerics.describe());
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
    let data = RunData::load_for_training(cfg, device)?;
    let sha256 = data.fingerprint()?;
    // As rank 0 of several: the other ranks must run the same job (crate::dist::agree).
    if let Some(g) = crate::dist::group() {
        crate::dist::agree(&g, &crate::dist::description(&as_given, &sha256, device)?)?;
    }
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
    let dataset_key = dataset_stage(&ctx, &data, &sha256)?;
    if let Some(b) = &branch {
        check_branch_data(&ctx, b, &dataset_key, data.train.len())?;
    }
    if cfg.train.epochs >= 1000 {
        // About 0.1 ms an epoch: seconds before anything else shows for a long run.
        eprintln!("planning the keys of {} epochs…", cfg.train.epochs);
    }
    let plan = Plan::new(cfg, &dataset_key, branch.as_ref())?;
    Ok(Started {
        ctx,
        data,
        dataset_key,
        plan,
    })
}

/// Trains along the run's plan, printing each epoch and each maximize step's partition; every
/// `train.knn_every` epochs (not at the last, which the final evaluation covers) the kNN
/// monitor runs and is stored.
fn train_printing(s: &Started) -> Result<(Trained, Vec<PartitionSummary>)> {
    let (ctx, cfg, data) = (&s.ctx, s.ctx.cfg, &s.data);
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
        eprintln!("{}", summary.describe());
        partitions.push(summary);
        Ok(())
    };
    let trained = train(ctx, data, &s.plan, on_epoch, on_partition)?;
    // The monitor points of epochs before a resume point (those after it were attached as
    // they were computed or loaded).
    let monitors = (s.plan.start() + 1..cfg.train.epochs)
        .filter(|e| every > 0 && e.is_multiple_of(every))
        .map(|e| monitor_stage(cfg, &s.plan.checkpoint(e).key, &s.dataset_key, e))
        .collect::<Result<Vec<_>>>()?;
    let keys: Vec<&str> = monitors.iter().map(|m| m.key.as_str()).collect();
    ctx.attach_stored(&keys)?;
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
    cfg: &Config,
    device: Device,
    store: &Store,
    name: &str,
    out_dir: &Path,
) -> Result<Report> {
    let begun = std::time::Instant::now();
    // The output folder first: a bad --out fails before any work.
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let mut cfg = cfg.clone();
    let s = start(&mut cfg, device, store, name)?;
    let (ctx, data, dataset_key) = (&s.ctx, &s.data, &s.dataset_key);
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
                &Trainer::new(cfg, device)?.model,
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
                &data.bank,
                &data.test,
            )
        })?;
        eprintln!(
            "linear probe ({} epochs): top-1 {:.2} top-5 {:.2}",
            cfg.linear.epochs, r.test.top1, r.test.top5
        );
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
/// written to `out_dir`.
pub fn train_job(
    cfg: &Config,
    device: Device,
    store: &Store,
    name: &str,
    out_dir: &Path,
) -> Result<TrainOutcome> {
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let mut cfg = cfg.clone();
    let s = start(&mut cfg, device, store, name)?;
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

/// Writes the variables of `vs` as safetensors in the default layout (what `vs.save` writes,
/// which refuses weights in channels_last layout).
fn save_model(vs: &tch::nn::VarStore, path: &Path) -> Result<()> {
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
    model.set_numerics(crate::numerics::Numerics::resolve(&cfg.train, device)?)?;
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

/// `ipirm eval knn`: the weighted kNN of a checkpoint file's encoder.
pub fn eval_knn(cfg: &Config, device: Device, checkpoint: &Path) -> Result<Accuracy> {
    let model = load_model(cfg, device, checkpoint)?.model;
    let data = RunData::load(cfg, device)?;
    knn::evaluate(&model, &data.bank, &data.test, &knn::Knn::of(cfg))
}

/// `ipirm eval linear`: the linear probe of a checkpoint file's encoder; with `linear.epochs=0`
/// and a checkpoint that carries a classifier (`linear.py`'s), that classifier scored as it is.
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
        &data.bank,
        &data.test,
    )
}

/// Resolves `--from-partition` (`ipirm.from_partition`): a partition's key (or a unique prefix
/// of at least 4 characters), or `RUN@EPOCH`, the partition a run (id or name) learned after
/// EPOCH training epochs.
pub fn resolve_branch(store: &Store, spec: &str) -> Result<Branch> {
    let flag = "ipirm.from_partition";
    let key = match spec.rsplit_once('@') {
        Some((run, epoch)) => {
            let epoch: usize = epoch.parse().map_err(|_| {
                Error::config(
                    flag,
                    format!("`{spec}`: expected KEY or RUN@EPOCH with EPOCH a number"),
                )
            })?;
            let run = store.resolve_run(run)?;
            let mut found = None;
            for key in &run.artifacts {
                let Some(a) = store.get_meta(key)? else {
                    continue;
                };
                if a.stage == StageKind::Partition.name()
                    && partition_epoch(store, key)? == Some(epoch)
                {
                    found = Some(key.clone());
                }
            }
            found.ok_or_else(|| {
                Error::config(
                    flag,
                    format!(
                        "run {} has no stored partition learned after epoch {epoch}",
                        run.id
                    ),
                )
            })?
        }
        None => match store.find(spec)? {
            Found::Artifact(a) if a.stage == StageKind::Partition.name() => a.key,
            Found::Artifact(a) => {
                return Err(Error::config(
                    flag,
                    format!("`{spec}` is a {} artifact, not a partition", a.stage),
                ))
            }
            Found::Run(r) => {
                return Err(Error::config(
                    flag,
                    format!(
                        "`{spec}` names run {}; give RUN@EPOCH to pick one of its partitions",
                        r.id
                    ),
                ))
            }
        },
    };
    let a = store
        .get_meta(&key)?
        .ok_or_else(|| Error::Store(format!("partition {key} left the store")))?;
    let checkpoint = a
        .inputs
        .first()
        .cloned()
        .ok_or_else(|| Error::Store(format!("partition {key} names no checkpoint")))?;
    let after_epoch = partition_epoch(store, &key)?.ok_or_else(|| {
        Error::Store(format!(
            "partition {key} does not say after which epoch it was learned"
        ))
    })?;
    if !store.contains(&checkpoint)? {
        return Err(Error::config(flag, format!("the checkpoint partition {} was learned from ({checkpoint}) is no longer in the store", short(&key))));
    }
    Ok(Branch {
        partition: key,
        checkpoint,
        after_epoch,
    })
}

/// Refuses a branch whose partition does not assign this run's training images: one row per
/// image is required. A partition learned on other images of the same count is allowed (the
/// branch's keys name it), with a note.
fn check_branch_data(ctx: &Ctx, b: &Branch, dataset_key: &str, images: i64) -> Result<()> {
    let flag = "ipirm.from_partition";
    let rec = ctx.load::<PartitionRecord>(&b.partition)?.ok_or_else(|| {
        Error::config(
            flag,
            format!(
                "partition {} is no longer in the store",
                short(&b.partition)
            ),
        )
    })?;
    let rows = rec.partition.size()[0];
    if rows != images {
        return Err(Error::config(
            flag,
            format!(
                "partition {} assigns {rows} training images, but this run trains on {images} (check data.train_limit and data.dataset)",
                short(&b.partition)
            ),
        ));
    }
    // Partitions stored before the dataset was among their inputs name none.
    let mut learned_on = None;
    for k in ctx
        .store
        .get_meta(&b.partition)?
        .map_or(vec![], |a| a.inputs)
    {
        if ctx
            .store
            .get_meta(&k)?
            .is_some_and(|a| a.stage == StageKind::Dataset.name())
        {
            learned_on = Some(k);
        }
    }
    if learned_on.is_some_and(|k| k != dataset_key) {
        eprintln!(
            "note: partition {} was learned on other data than this run's (same number of images)",
            short(&b.partition)
        );
    }
    Ok(())
}

/// After which epoch a stored partition was learned, from its header (or its tensors, for a
/// partition stored without metadata).
fn partition_epoch(store: &Store, key: &str) -> Result<Option<usize>> {
    if let Some(e) = store
        .tensor_meta(key)?
        .and_then(|m| m.get("after_epoch").and_then(|v| v.parse().ok()))
    {
        return Ok(Some(e));
    }
    Ok(store
        .get_tensors(key)?
        .and_then(|t| t.into_iter().find(|(n, _)| n == "after_epoch"))
        .map(|(_, t)| t.int64_value(&[0]) as usize))
}

/// The dataset stage: a fingerprint of the three image sets (sha256 of their bytes and labels),
/// computed every run so changed files are noticed; its key covers the data settings and the
/// fingerprint, so every later stage depends on the data's content.
pub fn dataset_stage(ctx: &Ctx, data: &RunData, sha256: &str) -> Result<String> {
    let sets = [&data.train, &data.bank, &data.test];
    let rec = DatasetRecord {
        names: sets.iter().map(|d| d.name.clone()).collect(),
        counts: sets.iter().map(|d| d.len()).collect(),
        sha256: sha256.to_string(),
    };
    let st = Planned::new(
        StageKind::Dataset,
        &stages::dataset_params(ctx.cfg),
        vec![rec.sha256.clone()],
    )?;
    if ctx.load_record::<DatasetRecord>(&st.key)?.is_none() {
        ctx.save_record(&st, &rec)?;
    }
    Ok(st.key)
}

/// Writes `value` as pretty JSON.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("serialisable");
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

/// Fails unless a file can be written at `path` (named by `flag` in the message): its folder
/// exists and takes new files, and `path` is not a folder. Checked before long work, so a typo
/// costs nothing. Leaves nothing behind.
pub fn check_output_file(path: &Path, flag: &str) -> Result<()> {
    if path.is_dir() {
        return Err(Error::file(
            path,
            format!("a file path for {flag}"),
            "a folder",
        ));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(Error::file(
            dir,
            format!("an existing folder for {flag} {}", path.display()),
            "no such folder",
        ));
    }
    let probe = dir.join(format!(".ipirm-write-probe-{}", std::process::id()));
    std::fs::File::create(&probe).map_err(|e| {
        Error::file(
            dir,
            format!("a writable folder for {flag} {}", path.display()),
            e.to_string(),
        )
    })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Default output folder of a run: `<store>/runs/<name>`.
pub fn default_out_dir(store: &Path, name: &str) -> PathBuf {
    store.join("runs").join(name)
}

/// `ipirm maximize`: one offline maximize step on features read from a safetensors file.
///
/// `input` holds float32 `z1` and `z2` (N×d, one row per sample, already L2-normalised),
/// optionally float32 `lam` with int64 `labels_aux` (N each: a MixUp step, `z1` the mixed view's
/// projections; see [`crate::train::maximize::maximize_offline_with_order`]), optionally `init` (N×env_num float32 logits: the starting partition; without it the start is
/// N(0,1) drawn from `maximize.seed`) and optionally `order` (int64, K×N: row `t` a permutation of
/// `0..N`, the batch order of epoch `t`, e.g. recorded from a reference run; the run fails if it
/// reaches an epoch `t ≥ K`). Without `order` the batch order is the one the reference's shuffling
/// `DataLoader` draws when `torch.manual_seed(maximize.seed)` is called right before
/// `utils.auto_split_offline` ([`ReferenceShuffle`](crate::train::maximize::ReferenceShuffle)),
/// so such a reference run with the same `init` and settings is reproduced.
/// `output` receives `partition` (N×env_num logits, the best found) and `risk` (epochs×4
/// float64: total, contrastive, penalty, constraint per epoch run).
pub fn maximize_file(
    input: &Path,
    output: &Path,
    cfg: &Config,
) -> Result<crate::train::maximize::MaximizeResult> {
    check_output_file(output, "--out")?;
    if same_file(input, output) {
        return Err(Error::file(
            output,
            "an --out path other than --features (the output would overwrite the input)",
            format!("the same file as {}", input.display()),
        ));
    }
    let named =
        tch::Tensor::read_safetensors(input).map_err(|e| match std::fs::metadata(input) {
            Err(io) => Error::io(input, io),
            Ok(_) => Error::file(
                input,
                "a safetensors file with float32 tensors z1, z2 (and optionally init)",
                e.to_string(),
            ),
        })?;
    let get = |name: &str| {
        named
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.shallow_clone())
    };
    let names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
    let bad = |what: String| Error::file(input, what, format!("tensors {names:?}"));
    let check = |name: &str, t: &Tensor| -> Result<()> {
        if t.kind() != tch::Kind::Float {
            return Err(Error::file(
                input,
                format!("`{name}` of dtype float32"),
                format!("{:?}", t.kind()),
            ));
        }
        if t.dim() != 2 {
            return Err(Error::file(
                input,
                format!("`{name}` with 2 dimensions (N×d)"),
                format!("shape {:?}", t.size()),
            ));
        }
        if t.isfinite().logical_not().any().int64_value(&[]) != 0 {
            return Err(Error::file(
                input,
                format!("`{name}` without NaN or infinite values"),
                "non-finite values".to_string(),
            ));
        }
        Ok(())
    };
    // The maximize step's logits are dot products of unit vectors; other scales overflow.
    let unit_rows = |name: &str, t: &Tensor| -> Result<()> {
        let dev = (t.norm_scalaropt_dim(2, [1], false) - 1.0).abs();
        let (worst, row) = (
            dev.max().double_value(&[]),
            dev.argmax(0, false).int64_value(&[]),
        );
        if worst > 1e-3 {
            let norm = t.get(row).norm().double_value(&[]);
            return Err(Error::file(
                input,
                format!("`{name}` with L2-normalised rows (norm 1 within 1e-3)"),
                format!("row {row} of norm {norm:e}"),
            ));
        }
        Ok(())
    };
    let z1 = get("z1").ok_or_else(|| bad("a tensor `z1` (N×d float32)".into()))?;
    let z2 = get("z2").ok_or_else(|| bad("a tensor `z2` (N×d float32)".into()))?;
    check("z1", &z1)?;
    check("z2", &z2)?;
    if z1.size() != z2.size() {
        return Err(Error::file(
            input,
            "`z1` and `z2` of the same shape",
            format!("{:?} and {:?}", z1.size(), z2.size()),
        ));
    }
    let n = z1.size()[0];
    if n < 2 || z1.size()[1] < 1 {
        return Err(Error::file(
            input,
            "`z1` and `z2` with at least 2 samples of at least 1 dimension",
            format!("shape {:?}", z1.size()),
        ));
    }
    unit_rows("z1", &z1)?;
    unit_rows("z2", &z2)?;
    let e = cfg.maximize.env_num;
    if e > n {
        return Err(Error::config(
            "maximize.env_num",
            format!(
                "{e} environments cannot be filled by the {n} samples of {}",
                input.display()
            ),
        ));
    }
    let init = match get("init") {
        Some(init) => {
            check("init", &init)?;
            if init.size() != [n, e] {
                return Err(Error::file(
                    input,
                    format!("`init` of shape [{n}, {e}] (N × maximize.env_num)"),
                    format!("{:?}", init.size()),
                ));
            }
            init
        }
        None => {
            tch::manual_seed(crate::rng::derive(cfg.maximize.seed, "maximize-init", 0));
            Tensor::randn([n, e], (tch::Kind::Float, tch::Device::Cpu))
        }
    };
    let mixup = file_mixup(input, get("lam"), get("labels_aux"), n)?;
    let order = file_order(input, get("order"), n, cfg)?;
    let pb = crate::progress::bar((cfg.maximize.max_epoch + 1) as u64, "maximize");
    let on_epoch = |t: usize, r: &crate::train::maximize::EpochRisk| {
        crate::progress::line(
            &pb,
            format!(
                "epoch {t}: risk {:.4} (contrastive {:.4}, penalty {:.6}, constraint {:.4})",
                r.total, r.contrastive, r.penalty, r.constraint
            ),
        );
        pb.inc(1);
    };
    let tau = cfg.maximize_temperature();
    let result = crate::train::maximize::maximize_offline_with_order(
        &z1,
        &z2,
        mixup.as_ref(),
        &init,
        &cfg.maximize,
        tau,
        order,
        on_epoch,
    )?;
    pb.finish_and_clear();
    crate::train::ipirm::check_finite(&result.risks, &result.partition, "the maximize step")?;
    let risk: Vec<f64> = result
        .risks
        .iter()
        .flat_map(|r| [r.total, r.contrastive, r.penalty, r.constraint])
        .collect();
    let risk = Tensor::from_slice(&risk).view([-1, 4]);
    Tensor::write_safetensors(&[("partition", &result.partition), ("risk", &risk)], output)
        .map_err(|e| {
            Error::file(
                output,
                "a writable path for the output safetensors",
                e.to_string(),
            )
        })?;
    Ok(result)
}

/// Whether `a` and `b` name the same file (`b` need not exist yet: its folder is resolved).
fn same_file(a: &Path, b: &Path) -> bool {
    let resolve = |p: &Path| match (p.parent(), p.file_name()) {
        (Some(d), Some(f)) => {
            let d = if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            };
            d.canonicalize().ok().map(|d| d.join(f))
        }
        _ => None,
    };
    match (a.canonicalize().ok(), resolve(b)) {
        (Some(a), Some(b)) => a == b || b.canonicalize().is_ok_and(|b| a == b),
        _ => false,
    }
}

/// The batch order of `ipirm maximize`: the file's `order` (checked: int64 `[epochs, n]`, each row
/// a permutation of `0..n`), else the reference's DataLoader shuffle after
/// `torch.manual_seed(maximize.seed)`.
fn file_order(
    input: &Path,
    order: Option<Tensor>,
    n: i64,
    cfg: &Config,
) -> Result<Box<dyn Fn(usize) -> Result<Tensor>>> {
    let Some(order) = order else {
        let shuffle = crate::train::maximize::ReferenceShuffle::new(
            cfg.maximize.seed,
            n,
            cfg.maximize.max_epoch + 1,
        )?;
        return Ok(Box::new(move |t: usize| shuffle.order(t)));
    };
    if order.kind() != tch::Kind::Int64
        || order.dim() != 2
        || order.size()[1] != n
        || order.size()[0] < 1
    {
        return Err(Error::file(
            input,
            format!("`order` of dtype int64 and shape [epochs, {n}] (one permutation of 0..{n} per epoch)"),
            format!("{:?} of shape {:?}", order.kind(), order.size()),
        ));
    }
    let rows = order.size()[0];
    let sorted = order.sort(1, false).0;
    if !sorted.equal(&Tensor::arange(n, (tch::Kind::Int64, Device::Cpu)).expand([rows, n], false)) {
        return Err(Error::file(
            input,
            format!("`order` rows that are permutations of 0..{n}"),
            "a row that is not",
        ));
    }
    let input = input.to_path_buf();
    Ok(Box::new(move |t: usize| {
        if t as i64 >= rows {
            return Err(Error::file(
                &input,
                format!("an `order` row for epoch {t}"),
                format!("{rows} rows"),
            ));
        }
        Ok(order.get(t as i64))
    }))
}

/// The MixUp inputs of `ipirm maximize`: float32 `lam` (N, each in [0.5, 1] as the reference
/// draws it) with int64 `labels_aux` (N, each the index of the sample it was mixed with: checked,
/// though the offline loss reads only λ), or neither.
fn file_mixup(
    input: &Path,
    lam: Option<Tensor>,
    aux: Option<Tensor>,
    n: i64,
) -> Result<Option<Tensor>> {
    let (lam, aux) = match (lam, aux) {
        (None, None) => return Ok(None),
        (Some(l), Some(a)) => (l, a),
        _ => {
            return Err(Error::file(
                input,
                "`lam` and `labels_aux` together (a MixUp maximize step) or neither",
                "only one of them",
            ))
        }
    };
    if lam.kind() != tch::Kind::Float || lam.size() != [n] {
        return Err(Error::file(
            input,
            format!("`lam` of dtype float32 and shape [{n}]"),
            format!("{:?} of shape {:?}", lam.kind(), lam.size()),
        ));
    }
    let (lo, hi) = (lam.min().double_value(&[]), lam.max().double_value(&[]));
    if !(lo >= 0.5 && hi <= 1.0) {
        return Err(Error::file(
            input,
            "`lam` values in [0.5, 1] (λ = max(λ, 1 − λ))",
            format!("values in [{lo}, {hi}]"),
        ));
    }
    if aux.kind() != tch::Kind::Int64 || aux.size() != [n] {
        return Err(Error::file(
            input,
            format!("`labels_aux` of dtype int64 and shape [{n}]"),
            format!("{:?} of shape {:?}", aux.kind(), aux.size()),
        ));
    }
    let (lo, hi) = (aux.min().int64_value(&[]), aux.max().int64_value(&[]));
    if lo < 0 || hi >= n {
        return Err(Error::file(
            input,
            format!("`labels_aux` indices in 0..{n}"),
            format!("indices in {lo}..={hi}"),
        ));
    }
    Ok(Some(lam))
}

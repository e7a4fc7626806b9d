//! Training through the store: resume from the last intact checkpoint, store every epoch's
//! figures, the features and partition of every maximize step, and checkpoints.
use std::sync::Arc;

use tch::Tensor;

use super::artifacts::{short, Ctx};
use super::stages::Plan;
use crate::data::loader::RunData;
use crate::distributed::Group;
use crate::train::ipirm::{self, Features, PartitionRecord};
use crate::train::{Checkpoint, EpochStats, Trainer};
use crate::{Error, Result};

/// What training produced.
pub struct Trained {
    pub trainer: Trainer,
    /// The figures of every epoch of the run (those before a resume point from the store).
    pub epochs: Vec<EpochStats>,
    /// IP-IRM: the partition of every maximize step, in order (empty for SimCLR).
    pub partitions: Vec<PartitionRecord>,
    /// Key of the final checkpoint.
    pub checkpoint: String,
}

/// Where a run can resume: the latest stored checkpoint whose earlier partitions are all stored
/// too (by the index and the blobs' sizes; the bytes are checked when loaded).
fn resume_point(ctx: &Ctx, plan: &Plan) -> Result<Option<usize>> {
    let epochs: Vec<usize> = (plan.start()..=plan.epochs()).collect();
    let keys: Vec<&str> = epochs
        .iter()
        .map(|&e| plan.checkpoint(e).key.as_str())
        .chain(plan.partitions.iter().map(|p| p.partition.key.as_str()))
        .collect();
    let stored = ctx.store.contains_each(&keys)?;
    let (checkpoints, partitions) = stored.split_at(epochs.len());
    // Every partition learned before epoch e is stored.
    let partitions_ok = |e: usize| {
        plan.partitions
            .iter()
            .zip(partitions)
            .all(|(p, &ok)| p.after_epoch >= e || ok)
    };
    Ok(epochs
        .iter()
        .zip(checkpoints)
        .rev()
        .find(|(&e, &stored)| stored && partitions_ok(e))
        .map(|(&e, _)| e))
}

/// The state to resume from: the latest checkpoint that loads intact, with every partition
/// learned before it, all hash-checked. A damaged one is dropped from the index (by
/// [`Ctx::load`]) and the search starts again, so it ends at an earlier checkpoint, from which
/// that artifact is recomputed from exactly its own inputs. `None`: start afresh.
fn resume(ctx: &Ctx, plan: &Plan) -> Result<Option<(Checkpoint, Vec<PartitionRecord>)>> {
    'search: while let Some(e) = resume_point(ctx, plan)? {
        let Some(ckpt) = ctx.load::<Checkpoint>(&plan.checkpoint(e).key)? else {
            continue;
        };
        let mut partitions = Vec::new();
        for p in plan.partitions.iter().filter(|p| p.after_epoch < e) {
            match ctx.load::<PartitionRecord>(&p.partition.key)? {
                Some(rec) => partitions.push(rec),
                None => continue 'search,
            }
        }
        if ckpt.epoch != e {
            return Err(Error::Store(format!(
                "checkpoint {} holds epoch {}, its key says {e}",
                plan.checkpoint(e).key,
                ckpt.epoch
            )));
        }
        return Ok(Some((ckpt, partitions)));
    }
    Ok(None)
}

/// Trains on `data.train` along `plan` with the configured method through the store: resumes
/// from the latest stored checkpoint of the plan (a finished run is entirely a cache hit; a
/// longer run continues a shorter one), stores the figures of every epoch, the features and
/// partition of every maximize step, and a checkpoint every `store.checkpoint_every` epochs,
/// after the last epoch and wherever a maximize step runs. `on_epoch` is called after each
/// epoch trained (with the trainer, so a caller can run the kNN monitor), `on_partition` after
/// each maximize step run or loaded.
pub fn train(
    ctx: &Ctx,
    data: &RunData,
    plan: &Plan,
    mut on_epoch: impl FnMut(&Trainer, &EpochStats) -> Result<()>,
    mut on_partition: impl FnMut(&PartitionRecord) -> Result<()>,
    group: Option<&Arc<Group>>,
) -> Result<Trained> {
    let cfg = ctx.cfg;
    let images = &data.train.images;
    // As rank 0 of a data-parallel run, the other ranks take part in every epoch and feature
    // extraction until training is over (crate::distributed).
    let mut trainer = match group {
        Some(g) => Trainer::with_group(cfg, ctx.device, g.clone())?,
        None => Trainer::new(cfg, ctx.device)?,
    };
    let mut partitions: Vec<PartitionRecord> = Vec::new();
    match resume(ctx, plan)? {
        Some((ckpt, loaded)) => {
            trainer.restore(&ckpt)?;
            partitions = loaded;
            let e = ckpt.epoch;
            // What the run stands on without loading it: the earlier checkpoints and the
            // features each earlier partition was learned from.
            let before: Vec<&str> = (plan.start()..e)
                .map(|e| plan.checkpoint(e).key.as_str())
                .chain(
                    plan.partitions
                        .iter()
                        .filter(|p| p.after_epoch <= e)
                        .filter_map(|p| p.features.as_ref().map(|f| f.key.as_str())),
                )
                .collect();
            ctx.attach_stored(&before)?;
            let key = short(&plan.checkpoint(e).key);
            if e == plan.epochs() {
                eprintln!("training: cached, all {e} epochs ({key})");
            } else if e > plan.start() {
                eprintln!("training: resuming from the stored checkpoint after epoch {e} ({key})");
            } else if e > 0 {
                eprintln!("training: starting from the checkpoint after epoch {e} ({key})");
            }
        }
        None if plan.checkpoint(plan.start()).computable() => {
            ctx.save(plan.checkpoint(plan.start()), &trainer.checkpoint())?;
        }
        None => {
            return Err(Error::Store(format!(
                "the checkpoint a branched run starts from ({}) is not in store {}",
                plan.checkpoint(plan.start()).key,
                ctx.store.root().display()
            )))
        }
    }
    for p in &partitions {
        on_partition(p)?;
    }

    let mut epochs = Vec::new();
    for e in plan.start() + 1..=trainer.epoch {
        match ctx.load_record::<EpochStats>(&plan.curve(e).key)? {
            Some(s) => epochs.push(s),
            None => eprintln!("note: the figures of epoch {e} are not in the store"),
        }
    }

    // The maximize step planned next, learned from `trainer`, which must be the checkpoint its
    // key names (the one after `after_epoch` epochs), or loaded when stored.
    let mut maximize = |trainer: &Trainer, partitions: &mut Vec<PartitionRecord>| -> Result<()> {
        let planned = &plan.partitions[partitions.len()];
        if planned.after_epoch != trainer.epoch {
            return Err(Error::Store(format!(
                "maximize step {} is keyed on the checkpoint after epoch {}, but the model is at epoch {}",
                planned.step, planned.after_epoch, trainer.epoch
            )));
        }
        let rec = match ctx.load::<PartitionRecord>(&planned.partition.key)? {
            Some(rec) => rec,
            None if !planned.partition.computable() => {
                return Err(Error::Store(format!(
                    "the partition a branched run starts from ({}) is not in the store",
                    planned.partition.key
                )));
            }
            None => {
                let views = match &planned.features {
                    None => None,
                    Some(fp) => Some(match ctx.load::<Features>(&fp.key)? {
                        Some(f) => Features {
                            z1: f.z1.to_device(ctx.device),
                            z2: f.z2.to_device(ctx.device),
                            mix: f
                                .mix
                                .map(|(l, a)| (l.to_device(ctx.device), a.to_device(ctx.device))),
                        },
                        None => {
                            let f =
                                ipirm::extract_view_pairs(trainer, images, planned.step as u64)?;
                            ctx.save(fp, &f)?;
                            f
                        }
                    }),
                };
                let previous = partitions.last().map(|p| &p.partition);
                let rec = ipirm::learn_partition(
                    trainer,
                    images,
                    views.as_ref(),
                    previous,
                    planned.step as u64,
                )?;
                ctx.save(&planned.partition, &rec)?;
                rec
            }
        };
        on_partition(&rec)?;
        partitions.push(rec);
        Ok(())
    };
    // The partition learned right at the resume point, if the plan has one there.
    if plan
        .partitions
        .get(partitions.len())
        .is_some_and(|p| p.after_epoch == trainer.epoch)
    {
        maximize(&trainer, &mut partitions)?;
    }

    let every = cfg.store.checkpoint_every.max(1);
    while trainer.epoch < plan.epochs() {
        let kept: Vec<Tensor> = ipirm::kept_partitions(&partitions, cfg, ctx.device);
        let s = trainer.train_epoch(images, &kept)?;
        let e = trainer.epoch;
        ctx.save_record(plan.curve(e), &s)?;
        let maximize_next = plan
            .partitions
            .get(partitions.len())
            .is_some_and(|p| p.after_epoch == e);
        if e % every == 0 || e == plan.epochs() || maximize_next {
            ctx.save(plan.checkpoint(e), &trainer.checkpoint())?;
        }
        on_epoch(&trainer, &s)?;
        epochs.push(s);
        if maximize_next {
            maximize(&trainer, &mut partitions)?;
        }
    }
    trainer.release_workers()?;
    let checkpoint = plan.checkpoint(trainer.epoch).key.clone();
    Ok(Trained {
        trainer,
        epochs,
        partitions,
        checkpoint,
    })
}
